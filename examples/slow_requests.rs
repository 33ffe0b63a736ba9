//! Seed program 1: three processes, each doing a slow request (seed 000).
//!
//! Run it with `cargo run --release --example slow_requests`; the program itself is in
//! `examples/seeds/slow_requests.rs`, shared with the `tour` example.

#[path = "seeds/slow_requests.rs"]
mod slow_requests;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    slow_requests::run(false)
}
