//! Seed program 6: a daemon reporting "alive" to a monitor while the application
//! works, and stopping with it (seed 001).
//!
//! Run it with `cargo run --release --example heartbeat`; the program itself is in
//! `examples/seeds/heartbeat.rs`, shared with the `tour` example.

#[path = "seeds/heartbeat.rs"]
mod heartbeat;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    heartbeat::run(false)
}
