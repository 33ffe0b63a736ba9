//! Seed program 8: ticket buying on a JSON file by 100 processes, oversold
//! without a lock and exact with one (seed 001).
//!
//! Run it with `cargo run --release --example ticket`; the program itself is in
//! `examples/seeds/ticket.rs`, shared with the `tour` example.

#[path = "seeds/ticket.rs"]
mod ticket;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ticket::run(false)
}
