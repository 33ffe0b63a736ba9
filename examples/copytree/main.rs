//! Seed program 15, the seeds' own application: copy a whole directory tree
//! with several worker processes and one progress bar.
//!
//! ```text
//! cargo run --release --example copytree -- [-j N] [--no-progress] [--no-offload] [--verify-bytes] SOURCE DEST
//! ```
//!
//! Permissions, modification times, extended attributes and symbolic links
//! are kept, every file is verified after the copy (read back and compared
//! byte for byte with its source, or a clone by its block map, below), and
//! any file that could not be copied or verified is listed (exit code 1).
//! Large files are split into parts that several workers copy at once:
//! cloned (`FICLONE`) or copied by the kernel (`copy_file_range`) where the
//! filesystem can, else from a memory mapping of the source; `--no-offload`
//! always takes the mapping. A clone is verified by the block maps
//! (`FIEMAP`) of the source and the copy, which must report the same
//! physical extents, shared, for every byte range; where they do not, and
//! always with `--verify-bytes`, it is read back and compared byte for byte.
//! The logic is in `tool.rs` and its parts beside it (`tree.rs`: the
//! parent's walk and scheduling; `range.rs`: copying and verifying bytes;
//! `clone.rs`; `attrs.rs`), which the tests use directly; `bench/copytree`
//! times it against `cp -a`.

mod tool;

fn main() {
    std::process::exit(tool::main_with_args(std::env::args_os().skip(1)))
}
