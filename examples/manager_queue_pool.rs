//! A manager Queue shared by a writer and a reader task of a Pool.
//!
//! Run it with `cargo run --release --example manager_queue_pool`; the
//! program itself is in `examples/seeds/manager_queue_pool.rs`, shared with
//! the `tour` example.

#[path = "seeds/manager_queue_pool.rs"]
mod manager_queue_pool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    manager_queue_pool::run(false)
}
