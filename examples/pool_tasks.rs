//! Seed program 3: a pool of 3 processes running 10 tasks of random
//! duration (seeds 000, 003).
//!
//! Run it with `cargo run --release --example pool_tasks`; the program itself is in
//! `examples/seeds/pool_tasks.rs`, shared with the `tour` example.

#[path = "seeds/pool_tasks.rs"]
mod pool_tasks;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    pool_tasks::run(false)
}
