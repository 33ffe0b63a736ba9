//! Seed program 10: a traffic light Event, cars and police cars (seed 001).
//! `--quick` (or `MULTIPROC_QUICK=1`) runs it ten times faster.
//!
//! Run it with `cargo run --release --example traffic_light`; the program itself is in
//! `examples/seeds/traffic_light.rs`, shared with the `tour` example.

#[path = "seeds/traffic_light.rs"]
mod traffic_light;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    traffic_light::run(
        std::env::args().any(|a| a == "--quick") || std::env::var_os("MULTIPROC_QUICK").is_some(),
    )
}
