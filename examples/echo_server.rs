//! Seed program 7: a TCP server handing each accepted connection to a new
//! process, with its clients (seed 001).
//!
//! Run it with `cargo run --release --example echo_server`; the program itself is in
//! `examples/seeds/echo_server.rs`, shared with the `tour` example.

#[path = "seeds/echo_server.rs"]
mod echo_server;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    echo_server::run(false)
}
