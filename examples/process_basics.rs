//! Seed program 12: `Process` with args and kwargs, exit codes (12, -15, a
//! panic), pid/ppid, and globals that are not shared (seed 003).
//!
//! Run it with `cargo run --release --example process_basics`; the program itself is in
//! `examples/seeds/process_basics.rs`, shared with the `tour` example.

#[path = "seeds/process_basics.rs"]
mod process_basics;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    process_basics::run(false)
}
