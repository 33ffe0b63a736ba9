//! Seed 000's gevent demo on `multiproc::green`: spawn, join, joinall and
//! sleep switching between coroutines.
//!
//! Run it with `cargo run --release --features tokio --example green_demo`;
//! the program itself is in `examples/seeds/green_demo.rs`, shared with the
//! `tour` example.

#[path = "seeds/green_demo.rs"]
mod green_demo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    green_demo::run(false)
}
