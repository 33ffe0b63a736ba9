//! The folder-copy tool: copies a directory tree with a pool of worker
//! processes, one progress bar, every file verified.
//!
//! The parent walks the source, creates the directories and symbolic links,
//! and hands the regular files to the pool in batches. Small files are read
//! into a buffer, written, then read back and compared. Larger files are
//! mapped into memory a window at a time: the window of the source is
//! written to the copy straight from the mapping, then the same window of
//! the copy is mapped and compared byte for byte with the source, so the
//! bytes are copied once and compared once, never staged in a buffer.
//! Files above the part size are split into parts that several workers copy
//! and verify at once; the parent creates such a copy at its full length
//! first and sets its mode and times when the last part has been verified.
//!
//! Where the filesystem can, the bytes of a large file do not pass through
//! the workers at all: the copy is a clone of the source (`FICLONE`: xfs,
//! btrfs), made by the parent for a file copied in parts, or the kernel
//! copies them (`copy_file_range`, which clones where it can). The copy is
//! verified all the same. Each range the kernel copied is read back and
//! compared byte for byte with the source. A clone is verified by its
//! block map: after the clone, both files' maps (`FIEMAP`, written out
//! first) must report the same physical extents for every byte range,
//! marked shared on the copy, and none whose address means nothing
//! (unknown, delayed, encoded, inline, unaligned); same device, same
//! length. Where the maps do not prove that the copy shares the source's
//! blocks, or with `CloneCheck::Bytes` (`--verify-bytes`), the clone is
//! read back and compared byte for byte like any copy. Wherever the kernel
//! cannot (another filesystem, `EXDEV`, `EOPNOTSUPP`, `EINVAL`, `ENOSYS`, a
//! copy that stops short), the rest of the range takes the path above.
//!
//! Every failure — an unreadable or special source file, a full disk, a
//! source that changes size during the copy, a worker that died — is
//! reported with its path, the unfinished copy is removed, and the exit code
//! is 1: a copy is either complete and verified, or says exactly what is
//! missing.

use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

// The tool's parts, beside it (the tests include this file by its path).
#[path = "attrs.rs"]
mod attrs;
#[path = "clone.rs"]
mod clone;
#[path = "range.rs"]
mod range;
#[path = "tree.rs"]
mod tree;

use attrs::keep_attributes;
pub use clone::clone;
use clone::verify_clone;
pub use range::reserve;
use range::{copy_range, copy_small};
pub use tree::copy_tree;
// The tests call these directly.
#[allow(unused_imports)]
pub use {
    clone::{maps_share, shares_blocks},
    range::copy_range_buffered,
};

/// Files up to this size are copied through a buffer, larger ones through
/// memory mappings.
const SMALL: u64 = 1 << 20;
/// The largest window of a file mapped at once.
const WINDOW: u64 = 64 << 20;
/// Bytes written, read back and compared at a time: small enough that the
/// read-back finds them in the CPU's cache.
const PIECE: usize = 256 << 10;
/// The default part size: files larger than this are split.
pub const PART: u64 = 64 << 20;
/// Bytes handed to one `copy_file_range` call and then read back and
/// compared, while the source is still in the CPU's cache.
pub const CHUNK: u64 = 1 << 20;

/// Whether the kernel may clone or copy the bytes of large files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Offload {
    /// Clone (`FICLONE`) or copy in the kernel (`copy_file_range`) where
    /// the filesystems can, the rest through user space (the default).
    Auto,
    /// Every byte through user space (`--no-offload`).
    Off,
    /// A test hook: as `Auto` without the clone, but each range stops
    /// using `copy_file_range` after this many bytes, as after a short copy,
    /// and the rest of it takes the user-space path.
    StopAfter(u64),
}

/// How the copy of a file that the kernel cloned is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloneCheck {
    /// By the block maps of the source and the copy (`FIEMAP`): the copy
    /// must be on the source's device, of its length, and report the
    /// source's own physical extents for every byte range, marked shared,
    /// with no extent whose physical address means nothing. This checks
    /// the filesystem's bookkeeping, not the bytes. A range whose maps do
    /// not prove it is read back and compared byte for byte (the default).
    BlockMap,
    /// Always read back and compared byte for byte (`--verify-bytes`).
    Bytes,
}

/// The bytes of a copy by the way they travelled. All of them were
/// verified: read back from the copy and compared with the source, or, for
/// `mapped` bytes of a clone, found to share the source's blocks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copied {
    /// Shared with the source by a clone (`FICLONE`).
    pub cloned: u64,
    /// Of `cloned`, the bytes verified by the block maps rather than read
    /// back (see [`CloneCheck::BlockMap`]).
    pub mapped: u64,
    /// Copied by the kernel (`copy_file_range`, which clones on the
    /// filesystems that can).
    pub kernel: u64,
    /// Written from this process's memory.
    pub user: u64,
}

impl Copied {
    /// All the bytes.
    pub fn total(&self) -> u64 {
        self.cloned + self.kernel + self.user
    }

    fn add(&mut self, other: Copied) {
        self.cloned += other.cloned;
        self.mapped += other.mapped;
        self.kernel += other.kernel;
        self.user += other.user;
    }
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub jobs: usize,
    pub progress: bool,
    /// Files larger than this are copied in parts of this size by several
    /// workers at once (a multiple of the page size).
    pub part_size: u64,
    /// Whether the kernel may clone or copy large files.
    pub offload: Offload,
    /// How clones are verified.
    pub clone_check: CloneCheck,
}

/// What a copy did.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub bytes: u64,
    pub dirs: usize,
    pub links: usize,
    pub errors: Vec<String>,
    /// The bytes of the files copied, by the way they travelled.
    pub copied: Copied,
}

const USAGE: &str =
    "usage: copytree [-j N] [--no-progress] [--no-offload] [--verify-bytes] SOURCE DEST

Copies the directory tree SOURCE to DEST (created if missing) with N worker
processes (default: the number of CPUs), keeping permissions,
modification times and extended attributes, and verifies every copied file
byte for byte. Exits
with 1 and lists every file that could not be copied or verified.

Large files are cloned (FICLONE) or copied by the kernel (copy_file_range)
where the filesystem can; --no-offload copies every byte through the
workers instead. What the kernel copied is verified like the others. A
clone is verified by the block maps (FIEMAP) of the source and the copy:
they must report the same physical extents, shared, for every byte range;
where they do not, the clone is compared byte for byte. --verify-bytes
compares every clone byte for byte (reading it back from the disk).";

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Options, String> {
    let mut jobs = multiproc::cpu_count();
    let mut progress = true;
    let mut offload = Offload::Auto;
    let mut clone_check = CloneCheck::BlockMap;
    let mut paths = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-h") | Some("--help") => return Err(USAGE.to_string()),
            Some("-j") | Some("--jobs") => {
                let n = args.next().ok_or("-j needs a number")?;
                jobs = n
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .ok_or("-j needs a positive number")?;
            }
            Some("--no-progress") => progress = false,
            Some("--no-offload") => offload = Offload::Off,
            Some("--verify-bytes") => clone_check = CloneCheck::Bytes,
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s}\n\n{USAGE}"));
            }
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let [source, dest]: [PathBuf; 2] = paths
        .try_into()
        .map_err(|_| format!("expected SOURCE and DEST\n\n{USAGE}"))?;
    Ok(Options {
        source,
        dest,
        jobs,
        progress,
        part_size: PART,
        offload,
        clone_check,
    })
}

/// One unit of work for a worker. Errors are reported without the path,
/// which the parent adds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// A whole file: create the copy, copy, verify, keep mode and times.
    File {
        src: PathBuf,
        dst: PathBuf,
        offload: Offload,
        clone_check: CloneCheck,
    },
    /// Bytes `offset..offset + len` of a file of `size` bytes whose copy
    /// the parent has already created at its full length, or cloned
    /// (`cloned`: the part is only verified, the way it says).
    Part {
        src: PathBuf,
        dst: PathBuf,
        offset: u64,
        len: u64,
        size: u64,
        offload: Offload,
        cloned: Option<CloneCheck>,
    },
}

/// The task: runs a batch of jobs, one result each (the bytes copied, or
/// what went wrong).
pub fn copy_batch(jobs: Vec<Job>) -> Vec<Result<Copied, String>> {
    jobs.into_iter()
        .map(|job| match job {
            Job::File {
                src,
                dst,
                offload,
                clone_check,
            } => copy_file(&src, &dst, offload, clone_check),
            Job::Part {
                src,
                dst,
                offset,
                len,
                size,
                offload,
                cloned,
            } => copy_part(&src, &dst, offset, len, size, offload, cloned),
        })
        .collect()
}

/// Opens a source file, refusing anything but a regular file (opening a
/// FIFO would wait for a writer, so the type is checked first).
fn open_source(src: &Path) -> Result<(File, fs::Metadata), String> {
    let fail = |what: &str, e: io::Error| format!("{what}: {e}");
    let meta = fs::symlink_metadata(src).map_err(|e| fail("cannot read metadata", e))?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file (type {:?}); not copied",
            meta.file_type()
        ));
    }
    let file = File::open(src).map_err(|e| fail("cannot open", e))?;
    let meta = file
        .metadata()
        .map_err(|e| fail("cannot read metadata", e))?;
    Ok((file, meta))
}

/// Copies one whole file, keeps its mode and times, verifies it. A large
/// file is cloned or copied by the kernel where `offload` and the
/// filesystems allow; a clone is verified as `clone_check` says.
pub fn copy_file(
    src: &Path,
    dst: &Path,
    offload: Offload,
    clone_check: CloneCheck,
) -> Result<Copied, String> {
    let (from, meta) = open_source(src)?;
    let to = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .map_err(|e| format!("cannot create the copy: {e}"))?;
    let size = meta.len();
    let copied = if size <= SMALL {
        copy_small(&from, &to, size).map(|user| Copied {
            user,
            ..Copied::default()
        })
    } else if offload == Offload::Auto && clone(&from, &to) {
        verify_clone(&from, &to, 0, size, size, clone_check)
    } else {
        reserve(&to, size)
            .map_err(|e| format!("cannot reserve space for the copy: {e}"))
            .and_then(|()| copy_range(&from, &to, 0, size, size, offload))
    }
    .and_then(|n| keep_attributes(&from, &to, &meta).map(|()| n));
    copied.inspect_err(|_| {
        // Leave no partial file that could pass for a copy.
        let _ = fs::remove_file(dst);
    })
}

/// Copies one part of a large file into its copy, which the parent made;
/// or, if the parent `cloned` the file, verifies the part of the clone the
/// way `cloned` says.
pub fn copy_part(
    src: &Path,
    dst: &Path,
    offset: u64,
    len: u64,
    size: u64,
    offload: Offload,
    cloned: Option<CloneCheck>,
) -> Result<Copied, String> {
    let (from, _) = open_source(src)?;
    let to = File::options()
        .read(true)
        .write(true)
        .open(dst)
        .map_err(|e| format!("cannot open the copy: {e}"))?;
    if let Some(check) = cloned {
        verify_clone(&from, &to, offset, len, size, check)
    } else {
        copy_range(&from, &to, offset, len, size, offload)
    }
}

/// Runs the tool; returns the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return 2;
        }
    };
    let started = std::time::Instant::now();
    let report = copy_tree(&opts);
    for e in &report.errors {
        eprintln!("copytree: error: {e}");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "copytree: {} files ({:.1} MiB), {} directories, {} links in {:.2} s ({:.1} MiB/s), {} errors",
        report.files,
        report.bytes as f64 / (1 << 20) as f64,
        report.dirs,
        report.links,
        secs,
        report.bytes as f64 / (1 << 20) as f64 / secs.max(1e-9),
        report.errors.len()
    );
    let mib = |n: u64| n as f64 / (1 << 20) as f64;
    eprintln!(
        "copytree: of these, {:.1} MiB cloned, {:.1} MiB copied by the kernel, {:.1} MiB by the workers; {:.1} MiB of the clones verified by their block maps, the rest read back and compared",
        mib(report.copied.cloned),
        mib(report.copied.kernel),
        mib(report.copied.user),
        mib(report.copied.mapped)
    );
    if report.errors.is_empty() {
        0
    } else {
        eprintln!(
            "copytree: the copy of {} is INCOMPLETE: {} problem(s) above",
            opts.source.display(),
            report.errors.len()
        );
        1
    }
}
