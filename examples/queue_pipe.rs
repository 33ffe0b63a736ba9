//! Seed program 13: a queue between writer and reader processes, a Pipe
//! both ways, and the Queue API's edge cases (seed 003).
//!
//! Run it with `cargo run --release --example queue_pipe`; the program itself
//! is in `examples/seeds/queue_pipe.rs`, shared with the `tour` example.

#[path = "seeds/queue_pipe.rs"]
mod queue_pipe;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    queue_pipe::run(false)
}
