//! Seed program 2: three processes draining one queue of URLs served by a
//! local server (seed 000).
//!
//! Run it with `cargo run --release --example queue_urls`; the program itself
//! is in `examples/seeds/queue_urls.rs`, shared with the `tour` example.

#[path = "seeds/queue_urls.rs"]
mod queue_urls;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    queue_urls::run(false)
}
