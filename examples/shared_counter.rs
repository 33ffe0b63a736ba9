//! A shared counter in a Value and an Array filled by children.
//!
//! Run it with `cargo run --release --example shared_counter`; the program itself is in
//! `examples/seeds/shared_counter.rs`, shared with the `tour` example.

#[path = "seeds/shared_counter.rs"]
mod shared_counter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shared_counter::run(false)
}
