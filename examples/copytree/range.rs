//! Copying and verifying a byte range of a file: small files through a
//! buffer, larger ones by the kernel or from a mapping of the source.

use super::{CHUNK, Copied, Offload, PIECE, WINDOW};
use memmap2::{Mmap, MmapOptions};
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

thread_local! {
    /// The copy buffer of this worker for small files, kept between tasks.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn changed_size(size: u64, now: u64) -> String {
    format!("the source changed size during the copy ({size} bytes, then {now}); copy again")
}

/// A small file: read whole, written, read back and compared.
pub(super) fn copy_small(mut from: &File, mut to: &File, size: u64) -> Result<u64, String> {
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
pub(super) fn copy_range(
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

/// What [`copy_range_with`] does with its range.
#[derive(Clone, Copy)]
pub(super) enum Way {
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

pub(super) fn copy_range_with(
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
