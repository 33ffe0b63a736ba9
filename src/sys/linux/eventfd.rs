//! Event counters (`eventfd`): a descriptor that becomes readable when
//! another process signals it, for waiting on shared-memory objects with
//! `poll` together with sockets and pidfds.
#![allow(unsafe_code)]

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A new close-on-exec, non-blocking eventfd with counter 0.
///
/// # References
/// eventfd(2)
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments; the kernel returns a new descriptor.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` is a fresh descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to the counter (readable from then on). A counter at its maximum
/// (`EAGAIN`) is already readable, so that is not an error.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a borrowed descriptor.
    let r = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    match cvt(r as isize) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Resets the counter to 0 (not readable any more). Never blocks.
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64 from a borrowed
    // descriptor; a non-blocking eventfd with counter 0 fails with EAGAIN.
    let r = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    match cvt(r as isize) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => Ok(()),
        Err(e) => Err(e),
    }
}
