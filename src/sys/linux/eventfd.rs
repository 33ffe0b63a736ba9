//! Event counters (`eventfd`): a descriptor that becomes readable when
//! another process signals it, for waiting on shared-memory objects with
//! `poll` together with sockets and pidfds.

use rustix::event::EventfdFlags;
use rustix::io::Errno;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// A new close-on-exec, non-blocking eventfd with counter 0.
///
/// # References
/// eventfd(2)
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Adds 1 to the counter (readable from then on). A counter at its maximum
/// (`EAGAIN`) is already readable, so that is not an error.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    match rustix::io::write(fd, &1u64.to_ne_bytes()) {
        Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Resets the counter to 0 (not readable any more). Never blocks: a
/// non-blocking eventfd with counter 0 fails with `EAGAIN`.
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut v = [0u8; 8];
    match rustix::io::read(fd, &mut v) {
        Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
