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

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use memmap2::{Mmap, MmapOptions};
use multiproc::Pool;
use multiproc::fiemap::Extent;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::{self, File, FileTimes};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

thread_local! {
    /// The copy buffer of this worker for small files, kept between tasks.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
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

/// Makes `to` a clone of `from` (`FICLONE`: the copy shares the source's
/// blocks); false where the filesystem cannot (ext4, tmpfs, two
/// filesystems, ...), and the file is then copied byte by byte. A clone
/// is verified by its block map or byte for byte ([`CloneCheck`]).
pub fn clone(from: &File, to: &File) -> bool {
    rustix::fs::ioctl_ficlone(to, from).is_ok()
}

/// Sets the extended attributes of `from` and the mode and times of `meta`
/// on the open copy.
fn keep_attributes(from: &File, to: &File, meta: &fs::Metadata) -> Result<(), String> {
    // Before the mode: a read-only mode would refuse them.
    copy_xattrs(from, to).map_err(|e| format!("cannot read extended attributes: {e}"))?;
    let times = FileTimes::new()
        .set_modified(
            meta.modified()
                .map_err(|e| format!("no modification time: {e}"))?,
        )
        .set_accessed(
            meta.accessed()
                .map_err(|e| format!("no access time: {e}"))?,
        );
    to.set_times(times)
        .and_then(|()| to.set_permissions(meta.permissions()))
        .map_err(|e| format!("cannot set the copy's mode and times: {e}"))
}

/// Calls `get(buf)` (a `*listxattr`/`*getxattr` call) with a buffer large
/// enough for its answer; returns the bytes it wrote.
fn sized(
    buf: &mut Vec<u8>,
    mut get: impl FnMut(*mut libc::c_void, usize) -> libc::ssize_t,
) -> io::Result<usize> {
    loop {
        let n = get(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
        // It grew between the two calls: ask for the size, then retry.
        let need = get(std::ptr::null_mut(), 0);
        if need < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.resize((need as usize).max(buf.len() * 2), 0);
    }
}

/// Copies the extended attributes of `from` to `to` (user attributes,
/// SELinux labels, file capabilities, ACLs), as `cp -a` does. As with
/// `cp -a`, an attribute the copy's filesystem or this user cannot set is
/// skipped without a word; failing to read the source's is an error.
fn copy_xattrs(from: &File, to: &File) -> io::Result<()> {
    let (src, dst) = (from.as_raw_fd(), to.as_raw_fd());
    let mut names = vec![0u8; 256];
    // SAFETY: `flistxattr` writes at most `len` bytes to `p`, which points
    // into `names`, whose length `sized` passes as `len` (or is given a null
    // pointer and 0, to ask for the size); `src` is an open descriptor.
    let listed = sized(&mut names, |p, len| unsafe {
        libc::flistxattr(src, p.cast(), len)
    });
    let n = match listed {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut value = vec![0u8; 256];
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::ffi::CString::new(name) else {
            continue;
        };
        // SAFETY: as above, for `fgetxattr` writing into `value`; `name` is
        // a NUL-terminated string that outlives the call.
        let got = sized(&mut value, |p, len| unsafe {
            libc::fgetxattr(src, name.as_ptr(), p, len)
        });
        let len = match got {
            Ok(len) => len,
            // Removed meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: `fsetxattr` reads `len` bytes from `value`, which holds at
        // least that many; `name` is NUL-terminated; `dst` is open. Its
        // failure is ignored on purpose (see above).
        unsafe {
            libc::fsetxattr(dst, name.as_ptr(), value.as_ptr().cast(), len, 0);
        }
    }
    Ok(())
}

fn changed_size(size: u64, now: u64) -> String {
    format!("the source changed size during the copy ({size} bytes, then {now}); copy again")
}

/// A small file: read whole, written, read back and compared.
fn copy_small(mut from: &File, mut to: &File, size: u64) -> Result<u64, String> {
    let size = size as usize;
    BUF.with(|buf| {
        let buf = &mut *buf.borrow_mut();
        // Room for the source, one byte more (a file that grew shows up
        // as a full buffer), and the copy read back.
        let room = 2 * (size + 1);
        if buf.len() < room {
            buf.resize(room, 0);
        }
        let (data, back) = buf.split_at_mut(size + 1);
        let got = read_full(&mut from, data).map_err(|e| format!("cannot read: {e}"))?;
        if got != size {
            return Err(changed_size(size as u64, got as u64));
        }
        to.write_all(&data[..size])
            .map_err(|e| format!("cannot write the copy: {e}"))?;
        let mut at = 0;
        while at < back.len() {
            match to.read_at(&mut back[at..], at as u64) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot verify the copy: {e}")),
            }
        }
        if at != size || data[..size] != back[..size] {
            return Err(format!(
                "verification failed: source {size} bytes, copy {at} bytes{}",
                if at == size { ", contents differ" } else { "" }
            ));
        }
        Ok(size as u64)
    })
}

/// Reads until `buf` is full or the end of the file; returns the count.
fn read_full(from: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match from.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Maps `len` bytes of `file` (a source, or a copy to verify) at `offset`,
/// read-only, with the pages mapped up front rather than one fault at a
/// time.
fn map(file: &File, offset: u64, len: u64) -> io::Result<Mmap> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    // SAFETY: a read-only shared mapping of a regular file. Another process
    // may still write or truncate the file while it is mapped (and the
    // kernel writes other parts of a copy). A write only changes bytes
    // that we pass to `write` or compare (every bit pattern
    // is a valid `u8`, and a change shows up as a failed comparison, which
    // is reported). A truncation makes the pages beyond the new end raise
    // SIGBUS, which ends this worker process only: the pool fails this
    // task with the signal named, the parent removes the unfinished copy,
    // and a new worker takes over the remaining tasks.
    unsafe {
        MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)
    }
}

/// Gives the copy its full length with its blocks allocated: a full disk
/// fails here, before any byte is written, and the writes that follow are
/// cheaper. On tmpfs, where allocating means clearing memory pages that the
/// copy then overwrites, and where the filesystem cannot allocate ahead,
/// only the length is set.
pub fn reserve(to: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size).map_err(io::Error::other)?;
    let fd = to.as_raw_fd();
    // SAFETY: `fs` is a plain C struct for which all zeroes is a valid
    // value; `fstatfs` writes into it and reads nothing through the
    // pointer. The descriptor is borrowed from an open `File`.
    let on_tmpfs = unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::fstatfs(fd, &mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
    };
    if on_tmpfs {
        return to.set_len(size);
    }
    // SAFETY: `fallocate` takes no pointers; the descriptor is borrowed from
    // an open `File` for the duration of the call.
    if unsafe { libc::fallocate(fd, 0, 0, len) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => to.set_len(size),
        _ => Err(e),
    }
}

/// Copies bytes `offset..offset + len` of a file of `size` bytes. Where
/// `offload` and the filesystems allow, the kernel copies them
/// (`copy_file_range`) a chunk at a time, and each chunk is read back and
/// compared with the source while that is still in the CPU's cache. The
/// rest (all of it where the kernel cannot) goes through this process: a
/// window of the source is mapped, and piece by piece written to the copy,
/// read back while it is still in the CPU's cache, and compared. On a
/// filesystem that cannot map files, the pieces are read into a buffer
/// instead.
fn copy_range(
    from: &File,
    to: &File,
    offset: u64,
    len: u64,
    size: u64,
    offload: Offload,
) -> Result<Copied, String> {
    copy_range_with(from, to, offset, len, size, true, Way::Copy(offload))
}

/// [`copy_range`] without mappings and without the kernel's copy: every
/// piece is read into a buffer (the path taken where the filesystem cannot
/// map files).
#[allow(dead_code)] // the tool reaches it through `copy_range`; the tests call it directly
pub fn copy_range_buffered(
    from: &File,
    to: &File,
    offset: u64,
    len: u64,
    size: u64,
) -> Result<u64, String> {
    copy_range_with(from, to, offset, len, size, false, Way::Copy(Offload::Off)).map(|c| c.total())
}

/// Verifies bytes `offset..offset + len` of `to`, a clone of `from` (a file
/// of `size` bytes): by the block maps where `check` allows and they prove
/// that the copy shares the source's blocks ([`shares_blocks`]), else by
/// reading them back and comparing them with the source.
fn verify_clone(
    from: &File,
    to: &File,
    offset: u64,
    len: u64,
    size: u64,
    check: CloneCheck,
) -> Result<Copied, String> {
    if check == CloneCheck::BlockMap && shares_blocks(from, to, offset, len, size) {
        return Ok(Copied {
            cloned: len,
            mapped: len,
            ..Copied::default()
        });
    }
    copy_range_with(from, to, offset, len, size, true, Way::Cloned)
}

/// Extent flags that make a physical address meaningless for a
/// comparison: unknown or not yet allocated, encoded (compressed,
/// encrypted), inline in metadata, packed with other tails, unaligned.
const MEANINGLESS: u32 = Extent::UNKNOWN
    | Extent::DELALLOC
    | Extent::ENCODED
    | Extent::DATA_ENCRYPTED
    | Extent::NOT_ALIGNED
    | Extent::DATA_INLINE
    | Extent::DATA_TAIL;

/// Whether bytes `offset..offset + len` of `to` are stored in the very
/// blocks of the same bytes of `from` (a file of `size` bytes): both on one
/// device and of length `size`, and their block maps, written out first
/// (`FIEMAP_FLAG_SYNC`), agree as [`maps_share`] says. False whenever that
/// cannot be shown (no block map on this filesystem, an error, a
/// difference): the caller then compares the bytes.
pub fn shares_blocks(from: &File, to: &File, offset: u64, len: u64, size: u64) -> bool {
    let (Ok(a), Ok(b)) = (from.metadata(), to.metadata()) else {
        return false;
    };
    if a.dev() != b.dev() || a.len() != size || b.len() != size {
        return false;
    }
    let map = |f: &File| multiproc::fiemap::extents(f, offset, len, true);
    match (map(from), map(to)) {
        (Ok(src), Ok(dst)) => maps_share(&src, &dst, offset, len),
        _ => false,
    }
}

/// Whether two block maps prove that bytes `offset..offset + len` of the
/// second file are stored in the same blocks as those of the first: cut
/// to the range and with adjacent extents joined where they continue each
/// other, both maps list the same extents (same offset, physical address,
/// length, and unwritten or not) and the same holes, every extent of the
/// second is marked shared, and no extent has a flag that makes its
/// address meaningless ([`MEANINGLESS`]).
pub fn maps_share(src: &[Extent], dst: &[Extent], offset: u64, len: u64) -> bool {
    let end = offset.saturating_add(len);
    match (runs(src, offset, end, false), runs(dst, offset, end, true)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The extents of `map` within `offset..end`, cut to it, as
/// (offset, physical address, length, unwritten), adjacent ones joined
/// where they continue each other. `None` if one has a meaningless
/// address, is not `shared` where that is required, or the map is out of
/// order.
fn runs(map: &[Extent], offset: u64, end: u64, shared: bool) -> Option<Vec<(u64, u64, u64, bool)>> {
    let mut out: Vec<(u64, u64, u64, bool)> = Vec::new();
    let mut seen = offset;
    for e in map {
        let (s, t) = (
            e.logical.max(offset),
            e.logical.saturating_add(e.length).min(end),
        );
        if s >= t {
            continue;
        }
        if s < seen || e.has(MEANINGLESS) || (shared && !e.has(Extent::SHARED)) {
            return None;
        }
        seen = t;
        let physical = e.physical.checked_add(s - e.logical)?;
        let unwritten = e.has(Extent::UNWRITTEN);
        match out.last_mut() {
            Some(last)
                if last.0 + last.2 == s
                    && last.1.checked_add(last.2) == Some(physical)
                    && last.3 == unwritten =>
            {
                last.2 += t - s
            }
            _ => out.push((s, physical, t - s, unwritten)),
        }
    }
    Some(out)
}

/// What [`copy_range_with`] does with its range.
#[derive(Clone, Copy)]
enum Way {
    /// Copies it, the kernel first where `Offload` allows.
    Copy(Offload),
    /// The copy is a clone: only verifies it.
    Cloned,
}

/// Copies up to `len` bytes at `at` from `from` to the same offset of `to`
/// in the kernel; returns how many it copied, 0 where it cannot: a copy
/// across filesystems (`EXDEV`), a filesystem or kernel without it
/// (`EOPNOTSUPP`, `ENOSYS`, `EINVAL`), a call a sandbox refuses (`EPERM`),
/// or the source's end. Other errors (a full disk, an I/O error) are errors.
fn kernel_copy(from: &File, to: &File, at: u64, len: u64) -> io::Result<u64> {
    use rustix::io::Errno;
    let (mut off_in, mut off_out) = (at, at);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    loop {
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), len) {
            Ok(n) => return Ok(n as u64),
            Err(Errno::INTR) => {}
            Err(
                Errno::XDEV
                | Errno::OPNOTSUPP
                | Errno::INVAL
                | Errno::NOSYS
                | Errno::PERM
                | Errno::BADF
                | Errno::TXTBSY
                | Errno::OVERFLOW
                | Errno::ISDIR,
            ) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The source's bytes `at..at + k`: from `mapped`, the mapping of the
/// source from offset `start`, or read from `from` into `data`.
fn source_piece<'a>(
    mapped: Option<&'a Mmap>,
    start: u64,
    from: &File,
    data: &'a mut [u8],
    at: u64,
    k: usize,
) -> io::Result<&'a [u8]> {
    match mapped {
        Some(m) => {
            let i = (at - start) as usize;
            Ok(&m[i..i + k])
        }
        None => {
            from.read_exact_at(&mut data[..k], at)?;
            Ok(&data[..k])
        }
    }
}

fn copy_range_with(
    from: &File,
    to: &File,
    offset: u64,
    len: u64,
    size: u64,
    mut mapped: bool,
    way: Way,
) -> Result<Copied, String> {
    let size_now = || {
        from.metadata()
            .map(|m| m.len())
            .map_err(|e| format!("cannot read metadata: {e}"))
    };
    let now = size_now()?;
    if now != size {
        return Err(changed_size(size, now));
    }
    // A source cut short under a mapping makes `write` fail with EFAULT:
    // name the cause rather than the symptom.
    let failed = |what: &str, e: io::Error| match size_now() {
        Ok(now) if now != size => changed_size(size, now),
        _ => format!("{what}: {e}"),
    };
    // Reads the copy's bytes at `at` back and compares them with `piece`.
    let check = |piece: &[u8], back: &mut [u8], at: u64| {
        let back = &mut back[..piece.len()];
        to.read_exact_at(back, at)
            .map_err(|e| failed("cannot verify the copy", e))?;
        if piece != back {
            return Err(format!(
                "verification failed: bytes {at}..{} of the copy differ",
                at + piece.len() as u64
            ));
        }
        Ok(())
    };
    // Bytes the kernel may still copy.
    let mut kernel_left = match way {
        Way::Copy(Offload::Auto) => u64::MAX,
        Way::Copy(Offload::StopAfter(n)) => n,
        Way::Copy(Offload::Off) | Way::Cloned => 0,
    };
    let mut copied = Copied::default();
    BUF.with(|buf| {
        let buf = &mut *buf.borrow_mut();
        if buf.len() < 2 * PIECE {
            buf.resize(2 * PIECE, 0);
        }
        let (data, back) = buf.split_at_mut(PIECE);
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let (start, stop) = (at, at + WINDOW.min(end - at));
            let mut source = None;
            if mapped {
                match map(from, at, stop - at) {
                    Ok(m) => source = Some(m),
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) => mapped = false,
                    Err(e) => return Err(format!("cannot map the source: {e}")),
                }
            }
            while at < stop {
                // Bytes the kernel has put in place at `at`: a chunk of the
                // clone, or what it copied now.
                let placed = match way {
                    // The clone's pages come from the disk, not the CPU's
                    // cache: compared a window at a time, for long reads.
                    Way::Cloned => stop - at,
                    Way::Copy(_) if kernel_left > 0 => {
                        let want = CHUNK.min(stop - at).min(kernel_left);
                        let n = kernel_copy(from, to, at, want)
                            .map_err(|e| failed("cannot copy", e))?;
                        // Stopped short or cannot: the rest of the range
                        // goes the user-space way.
                        kernel_left = if n == 0 { 0 } else { kernel_left - n };
                        n
                    }
                    Way::Copy(_) => 0,
                };
                if placed > 0 {
                    let placed_end = at + placed;
                    // Compared in place where both can be mapped: no bytes
                    // copied into a buffer to read the copy back.
                    let copy = source.as_ref().and_then(|_| map(to, at, placed).ok());
                    if let (Some(source), Some(copy)) = (&source, &copy) {
                        let i = (at - start) as usize;
                        let theirs = &source[i..i + placed as usize];
                        if theirs != &copy[..] {
                            let (p, _) = theirs
                                .chunks(PIECE)
                                .zip(copy.chunks(PIECE))
                                .enumerate()
                                .find(|(_, (a, b))| a != b)
                                .unwrap_or((0, (&[], &[])));
                            let from = at + (p * PIECE) as u64;
                            return Err(format!(
                                "verification failed: bytes {from}..{} of the copy differ",
                                (from + PIECE as u64).min(placed_end)
                            ));
                        }
                        at = placed_end;
                    }
                    while at < placed_end {
                        let k = PIECE.min((placed_end - at) as usize);
                        let piece = source_piece(source.as_ref(), start, from, data, at, k)
                            .map_err(|e| failed("cannot read", e))?;
                        check(piece, back, at)?;
                        at += k as u64;
                    }
                    match way {
                        Way::Cloned => copied.cloned += placed,
                        Way::Copy(_) => copied.kernel += placed,
                    }
                    continue;
                }
                let k = PIECE.min((stop - at) as usize);
                let piece = source_piece(source.as_ref(), start, from, data, at, k)
                    .map_err(|e| failed("cannot read", e))?;
                to.write_all_at(piece, at)
                    .map_err(|e| failed("cannot write the copy", e))?;
                check(piece, back, at)?;
                copied.user += k as u64;
                at += k as u64;
            }
        }
        Ok(())
    })?;
    let now = size_now()?;
    if now != size {
        return Err(changed_size(size, now));
    }
    Ok(copied)
}

struct Plan {
    files: Vec<(PathBuf, PathBuf, u64)>,
    /// Each directory: its copy, the source, and the source's metadata.
    dirs: Vec<(PathBuf, PathBuf, fs::Metadata)>,
}

/// Walks `src`, creating directories and symbolic links under `dst` and
/// listing the files to copy.
fn plan(src: &Path, dst: &Path, plan: &mut Plan, report: &mut Report) {
    let meta = match fs::metadata(src) {
        Ok(m) => m,
        Err(e) => return report.errors.push(format!("{}: {e}", src.display())),
    };
    if let Err(e) = fs::create_dir_all(dst) {
        return report
            .errors
            .push(format!("{}: cannot create directory: {e}", dst.display()));
    }
    report.dirs += 1;
    plan.dirs.push((dst.to_path_buf(), src.to_path_buf(), meta));
    let entries = match fs::read_dir(src) {
        Ok(it) => it,
        Err(e) => return report.errors.push(format!("{}: {e}", src.display())),
    };
    let mut entries: Vec<_> = entries
        .filter_map(|e| match e {
            Ok(e) => Some(e),
            Err(err) => {
                report.errors.push(format!("{}: {err}", src.display()));
                None
            }
        })
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                report.errors.push(format!("{}: {e}", from.display()));
                continue;
            }
        };
        if ft.is_dir() {
            self::plan(&from, &to, plan, report);
        } else if ft.is_symlink() {
            let made = fs::read_link(&from).and_then(|target| {
                let _ = fs::remove_file(&to);
                std::os::unix::fs::symlink(target, &to)
            });
            match made {
                Ok(()) => report.links += 1,
                Err(e) => report
                    .errors
                    .push(format!("{}: cannot copy link: {e}", from.display())),
            }
        } else {
            // Regular files, and special files the worker will refuse with
            // a clear message.
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            plan.files.push((from, to, size));
        }
    }
}

/// A file being copied, as the parent tracks it.
struct Tracked {
    src: PathBuf,
    dst: PathBuf,
    size: u64,
    /// Parts not yet verified (1 for a file copied whole).
    parts_left: usize,
    /// The source's metadata, for a file split into parts (the parent sets
    /// the copy's mode and times when the last part is in).
    meta: Option<fs::Metadata>,
    /// The parent cloned the file: its parts are only verified.
    cloned: bool,
    /// The bytes of its jobs so far.
    copied: Copied,
    failed: bool,
}

/// A batch of jobs for one task, and per job the index of its file and the
/// bytes it covers.
type Batch = (Vec<Job>, Vec<(usize, u64)>);

/// Splits the files into jobs and the jobs into batches: each part of a
/// large file is a batch of its own (they come first: they take longest),
/// small files travel several to a batch. A file split into parts that the
/// parent cloned and whose clone its block map proves (`CloneCheck::BlockMap`)
/// needs no job: its index goes to `verified`.
fn batches(
    files: &mut [Tracked],
    part_size: u64,
    jobs: usize,
    offload: Offload,
    clone_check: CloneCheck,
    report: &mut Report,
    verified: &mut Vec<usize>,
) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut whole = Vec::new();
    let mut split = Vec::new();
    for (i, f) in files.iter_mut().enumerate() {
        if f.size <= part_size {
            whole.push(i);
            continue;
        }
        // The copy is made at its full length here so that the parts can be
        // written into it in any order; or made a clone of the source, which
        // the parts then verify.
        let made = fs::symlink_metadata(&f.src).and_then(|meta| {
            let to = File::create(&f.dst)?;
            // (A source that cannot be opened is not cloned; its parts say why.)
            let from = File::open(&f.src).ok().filter(|_| offload == Offload::Auto);
            let cloned = from.as_ref().is_some_and(|from| clone(from, &to));
            if !cloned {
                reserve(&to, f.size)?;
            }
            // The whole clone proved by its map here: no worker reads it.
            let mapped = cloned
                && clone_check == CloneCheck::BlockMap
                && from
                    .as_ref()
                    .is_some_and(|from| shares_blocks(from, &to, 0, f.size, f.size));
            Ok((meta, cloned, mapped))
        });
        match made {
            Ok((meta, cloned, mapped)) => {
                f.meta = Some(meta);
                f.cloned = cloned;
                if mapped {
                    verified.push(i);
                    continue;
                }
            }
            Err(e) => {
                f.failed = true;
                report
                    .errors
                    .push(format!("{}: cannot create the copy: {e}", f.src.display()));
                let _ = fs::remove_file(&f.dst);
                continue;
            }
        }
        let parts = f.size.div_ceil(part_size);
        f.parts_left = parts as usize;
        split.push((0..parts).map(move |p| (i, p * part_size)));
    }
    // Parts in turn from each large file: workers running at the same time
    // then write different files, and do not wait for each other on one
    // file's write lock.
    while !split.is_empty() {
        split.retain_mut(|parts| match parts.next() {
            Some((i, offset)) => {
                let f = &files[i];
                let len = part_size.min(f.size - offset);
                out.push((
                    vec![Job::Part {
                        src: f.src.clone(),
                        dst: f.dst.clone(),
                        offset,
                        len,
                        size: f.size,
                        offload,
                        cloned: f.cloned.then_some(clone_check),
                    }],
                    vec![(i, len)],
                ));
                true
            }
            None => false,
        });
    }
    // Enough batches to keep every worker busy to the end, at most 16
    // files or 8 MiB in one.
    let per_batch = (whole.len() / (jobs * 8)).clamp(1, 16);
    let mut batch = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for i in whole {
        let f = &files[i];
        if !batch.0.is_empty() && (batch.0.len() == per_batch || bytes + f.size > 8 << 20) {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += f.size;
        batch.0.push(Job::File {
            src: f.src.clone(),
            dst: f.dst.clone(),
            offload,
            clone_check,
        });
        batch.1.push((i, f.size));
    }
    if !batch.0.is_empty() {
        out.push(batch);
    }
    out
}

/// Records the result of one job of file `f`; returns whether the file is
/// finished (all its parts in). A failed file's copy is removed; a file
/// copied in parts gets its mode and times when the last part is in.
fn finish(f: &mut Tracked, res: Result<Copied, String>, report: &mut Report) -> bool {
    match res {
        Ok(copied) => f.copied.add(copied),
        Err(why) if !f.failed => {
            f.failed = true;
            report.errors.push(format!("{}: {why}", f.src.display()));
            let _ = fs::remove_file(&f.dst);
        }
        Err(_) => {}
    }
    f.parts_left -= 1;
    if f.parts_left > 0 {
        return false;
    }
    if !f.failed {
        if let Some(meta) = &f.meta {
            let kept = File::open(&f.src)
                .map_err(|e| format!("cannot open: {e}"))
                .and_then(|from| {
                    let to = File::options()
                        .write(true)
                        .open(&f.dst)
                        .map_err(|e| format!("cannot open the copy: {e}"))?;
                    keep_attributes(&from, &to, meta)
                });
            if let Err(e) = kept {
                f.failed = true;
                report.errors.push(format!("{}: {e}", f.src.display()));
                let _ = fs::remove_file(&f.dst);
                return true;
            }
        }
        report.files += 1;
        report.bytes += f.size;
        report.copied.add(f.copied);
    }
    true
}

/// Copies the tree as `opts` says; the report lists every failure.
pub fn copy_tree(opts: &Options) -> Report {
    let mut report = Report::default();
    let mut p = Plan {
        files: Vec::new(),
        dirs: Vec::new(),
    };
    if !opts.source.is_dir() {
        report
            .errors
            .push(format!("{}: not a directory", opts.source.display()));
        return report;
    }
    plan(&opts.source, &opts.dest, &mut p, &mut report);
    let total_bytes: u64 = p.files.iter().map(|f| f.2).sum();
    let bar = ProgressBar::with_draw_target(
        Some(total_bytes),
        if opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let nfiles = p.files.len();
    let mut files: Vec<Tracked> = p
        .files
        .into_iter()
        .map(|(src, dst, size)| Tracked {
            src,
            dst,
            size,
            parts_left: 1,
            meta: None,
            cloned: false,
            copied: Copied::default(),
            failed: false,
        })
        .collect();
    let part_size = opts.part_size.max(SMALL);
    let mut verified = Vec::new();
    let batches = batches(
        &mut files,
        part_size,
        opts.jobs,
        opts.offload,
        opts.clone_check,
        &mut report,
        &mut verified,
    );
    let mut done = 0;
    for f in files.iter().filter(|f| f.failed) {
        done += 1;
        bar.inc(f.size);
    }
    for i in verified {
        let size = files[i].size;
        let copied = Copied {
            cloned: size,
            mapped: size,
            ..Copied::default()
        };
        bar.inc(size);
        finish(&mut files[i], Ok(copied), &mut report);
        done += 1;
    }
    let (jobs, owners): (Vec<_>, Vec<_>) = batches.into_iter().unzip();
    // No pool when there is nothing left for workers (every file a clone
    // that its map proved).
    let pool = match (!jobs.is_empty()).then(|| Pool::new(opts.jobs)) {
        None => None,
        Some(Ok(pool)) => Some(pool),
        Some(Err(e)) => {
            report
                .errors
                .push(format!("cannot start the worker pool: {e}"));
            // Leave nothing that could pass for a copy.
            for &(i, _) in owners.iter().flatten() {
                let _ = fs::remove_file(&files[i].dst);
            }
            return report;
        }
    };
    let mut owners = owners.into_iter();
    let results = pool.as_ref().map(|pool| pool.imap(copy_batch, jobs));
    for res in results.into_iter().flatten() {
        let owner = owners.next().expect("one owner list per batch");
        let results: Vec<Result<Copied, String>> = match res {
            Ok(results) if results.len() == owner.len() => results,
            Ok(results) => vec![
                Err(format!(
                    "the worker answered {} results for {} files",
                    results.len(),
                    owner.len()
                ));
                owner.len()
            ],
            // The whole batch failed (e.g. its worker died).
            Err(e) => {
                // A worker reading a mapping past the end of a file that
                // was cut short meanwhile dies of SIGBUS.
                let hint = if e.signal() == Some(libc::SIGBUS) {
                    " (a source file was probably cut short during the copy)"
                } else {
                    ""
                };
                vec![Err(format!("not copied: {e}{hint}")); owner.len()]
            }
        };
        for ((i, bytes), res) in owner.into_iter().zip(results) {
            bar.inc(bytes);
            if finish(&mut files[i], res, &mut report) {
                done += 1;
                if done % 64 == 0 || done == nfiles {
                    bar.set_message(format!("{done}/{nfiles} files"));
                }
            }
        }
    }
    if let Some(pool) = pool {
        pool.close();
        let _ = pool.join();
    }
    // Directory times last: creating entries changed them.
    for (dir, src, meta) in p.dirs.iter().rev() {
        let kept = File::open(dir).and_then(|copy| {
            copy_xattrs(&File::open(src)?, &copy)?;
            fs::set_permissions(dir, meta.permissions())?;
            copy.set_times(FileTimes::new().set_modified(meta.modified()?))
        });
        if let Err(e) = kept {
            report.errors.push(format!(
                "{}: cannot keep directory attributes: {e}",
                dir.display()
            ));
        }
    }
    bar.finish_with_message(format!("{done}/{nfiles} files"));
    report
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
