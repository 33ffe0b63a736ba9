//! File-descriptor utilities: polling, duplication, pipes.
#![allow(unsafe_code)]

use super::{is_open, retry};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The time left until `deadline` for `ppoll(2)`: `None` (wait forever)
/// when there is no deadline or it does not fit a timespec. The kernel
/// sleeps at least that long, so a wait never ends before its deadline.
fn poll_timeout(deadline: Option<Instant>) -> Option<Timespec> {
    let left = deadline?.saturating_duration_since(Instant::now());
    Timespec::try_from(left).ok()
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
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|&fd| PollFd::from_borrowed_fd(fd, PollFlags::IN))
        .collect();
    loop {
        let timeout = poll_timeout(deadline);
        match rustix::event::poll(&mut pfds, timeout.as_ref()) {
            Ok(0) if deadline.is_some_and(|d| Instant::now() < d) => continue,
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect())
}

/// Whether `fd` is readable (or hung up) right now, without waiting and
/// without allocating.
///
/// # References
/// poll(2)
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    let n = retry(|| rustix::event::poll(&mut pfd, Some(&Timespec::default())))?;
    Ok(n > 0 && !pfd[0].revents().is_empty())
}

/// Waits until `fd` is readable or `deadline` passes; `true` if readable.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    Ok(poll_readable(&[fd], deadline)?[0])
}

/// Deadline `timeout` from now; `None` when it does not fit (wait forever).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Takes ownership of a raw fd that the caller owns.
///
/// # Safety
/// `fd` must be open and owned by nobody else.
pub(crate) unsafe fn owned_from_raw(fd: RawFd) -> OwnedFd {
    // SAFETY: forwarded to the caller's obligation.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A close-on-exec duplicate of `fd` numbered `min` or above.
///
/// # References
/// fcntl(2) (`F_DUPFD_CLOEXEC`)
pub(crate) fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, min)?)
}

/// Borrows standard stream `fd` (0, 1 or 2) if it is open.
pub(crate) fn stdio(fd: RawFd) -> Option<BorrowedFd<'static>> {
    let stream = match fd {
        0 => rustix::stdio::stdin(),
        1 => rustix::stdio::stdout(),
        2 => rustix::stdio::stderr(),
        _ => panic!("stdio({fd}): not a standard stream"),
    };
    is_open(fd).then_some(stream)
}

/// Makes standard stream `target` (0, 1 or 2) a copy of `fd`, without
/// close-on-exec. The standard streams belong to the process as a whole (the
/// standard library assumes them open), so replacing one is safe.
///
/// # Errors
/// `EBADF` when `target` is not 0, 1 or 2.
///
/// # References
/// dup2(2)
pub(crate) fn dup2_stdio(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    match target {
        0 => retry(|| rustix::stdio::dup2_stdin(fd)),
        1 => retry(|| rustix::stdio::dup2_stdout(fd)),
        2 => retry(|| rustix::stdio::dup2_stderr(fd)),
        _ => Err(Errno::BADF.into()),
    }
}

/// A close-on-exec pipe: `(read end, write end)`.
///
/// # References
/// pipe2(2)
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn dup2_stdio_refuses_other_targets() {
        let (r, _w) = pipe().unwrap();
        let e = dup2_stdio(r.as_fd(), 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn poll_returns_by_its_deadline_and_sees_data() {
        let (r, w) = pipe().unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(50);
        assert_eq!(
            poll_readable(&[r.as_fd()], Some(deadline)).unwrap(),
            [false]
        );
        assert!(Instant::now() >= deadline);
        assert!(start.elapsed() < Duration::from_secs(5));
        rustix::io::write(&w, b"x").unwrap();
        assert!(wait_readable(r.as_fd(), None).unwrap());
        let fd = dup_above(r.as_fd(), 100).unwrap();
        assert!(std::os::fd::AsRawFd::as_raw_fd(&fd) >= 100);
        assert!(
            rustix::io::fcntl_getfd(&fd)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC)
        );
    }
}
