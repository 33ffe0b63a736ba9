//! Seed program 5: daemon processes: a `Run` struct as a daemon, the daemon cut off
//! when the main code ends, and a daemon that may not start children (seed 001).
//!
//! Run it with `cargo run --release --example daemons`; the program itself is in
//! `examples/seeds/daemons.rs`, shared with the `tour` example.

#[path = "seeds/daemons.rs"]
mod daemons;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    daemons::run(false)
}
