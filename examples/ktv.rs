//! Seed program 9: a KTV with 4 rooms guarded by a Semaphore, 12 people (seed 001).
//!
//! Run it with `cargo run --release --example ktv`; the program itself is in
//! `examples/seeds/ktv.rs`, shared with the `tour` example.

#[path = "seeds/ktv.rs"]
mod ktv;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ktv::run(false)
}
