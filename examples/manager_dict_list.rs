//! A child fills a Manager dict and list; the parent prints them.
//!
//! Run it with `cargo run --release --example manager_dict_list`; the
//! program itself is in `examples/seeds/manager_dict_list.rs`, shared with
//! the `tour` example.

#[path = "seeds/manager_dict_list.rs"]
mod manager_dict_list;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    manager_dict_list::run(false)
}
