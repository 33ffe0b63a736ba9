//! File-descriptor utilities: polling, duplication, closing ranges.
#![allow(unsafe_code)]

use super::{cvt, cvt_r};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Milliseconds to pass to `poll(2)` for a deadline: -1 for none, rounded up
/// so that a wait never ends before its deadline.
fn poll_timeout(deadline: Option<Instant>) -> i32 {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                0
            } else {
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        }
    }
}

/// Waits until at least one of `fds` is readable (or hung up), or until
/// `deadline`. Returns one flag per fd. Retries on `EINTR` with the time left.
///
/// # References
/// poll(2)
pub(crate) fn poll_readable(
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let timeout = poll_timeout(deadline);
        // SAFETY: `pfds` is a valid, exclusively borrowed array of `pfds.len()`
        // pollfd structs; every fd in it is borrowed for this call.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        match cvt(r) {
            Ok(0) if timeout != 0 && deadline.is_some_and(|d| Instant::now() < d) => continue,
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Waits until `fd` is readable or `deadline` passes; `true` if readable.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    Ok(poll_readable(&[fd], deadline)?[0])
}

/// Deadline `timeout` from now; `None` when it does not fit (wait forever).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// `dup2(fd, target)` without close-on-exec on the result.
pub(crate) fn dup2(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes plain integers; an invalid fd is reported as EBADF.
    cvt_r(|| unsafe { libc::dup2(fd, target) })?;
    Ok(())
}

/// Closes every fd numbered `first` or above.
pub(crate) fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; callers use it in a fresh
    // child where no live Rust object owns an fd at or above `first`.
    cvt(unsafe { libc::close_range(first, u32::MAX, 0) })?;
    Ok(())
}

/// Takes ownership of a raw fd that the caller owns.
///
/// # Safety
/// `fd` must be open and owned by nobody else.
pub(crate) unsafe fn owned_from_raw(fd: RawFd) -> OwnedFd {
    // SAFETY: forwarded to the caller's obligation.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Checks that `fd` is an open descriptor.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the fd's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Duplicates `fd` to the lowest free number `>= min`, close-on-exec.
pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> io::Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor; `fd` is only read.
    cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

/// Borrows standard stream `fd` (0, 1 or 2) if it is open.
pub(crate) fn stdio(fd: RawFd) -> Option<BorrowedFd<'static>> {
    assert!((0..=2).contains(&fd));
    // SAFETY: 0..=2 are the process's standard streams, which this crate
    // never closes; the borrow is used only for the duration of a send.
    is_open(fd).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
}

/// A close-on-exec pipe: `(read end, write end)`.
///
/// # References
/// pipe2(2)
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
