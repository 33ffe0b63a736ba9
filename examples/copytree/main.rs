//! Seed program 15, the seeds' own application: copy a whole directory tree
//! with several worker processes and one progress bar.
//!
//! ```text
//! cargo run --release --example copytree -- [-j N] [--no-progress] SOURCE DEST
//! ```
//!
//! Large files are copied by the kernel (`copy_file_range`), permissions and
//! modification times are kept, every file is verified after the copy
//! (size and a 64-bit hash), and any file that could not be copied or
//! verified is listed, with exit code 1. The logic is in `tool.rs`, which
//! the tests use directly.

mod tool;

fn main() {
    std::process::exit(tool::main_with_args(std::env::args_os().skip(1)))
}
