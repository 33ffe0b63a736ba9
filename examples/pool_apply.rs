//! Seed program 11: `apply_async` versus `apply` ordering on a pool (seed 002).
//!
//! Run it with `cargo run --release --example pool_apply`; the program itself is in
//! `examples/seeds/pool_apply.rs`, shared with the `tour` example.

#[path = "seeds/pool_apply.rs"]
mod pool_apply;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    pool_apply::run(false)
}
