//! The two socket options the manager needs that std does not offer.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// Re-arms `TCP_QUICKACK` on a TCP socket so the next segment is
/// acknowledged at once (MANAGER-WIRE.md §9: without it an unmodified
/// CPython client waits ~40 ms per connection for a delayed ACK). Linux
/// clears the flag by itself, so it is set again before each read that
/// matters. Returns false when the socket is not TCP (nothing happens).
pub(crate) fn quickack(fd: BorrowedFd<'_>) -> bool {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is a borrowed, open descriptor; the option value points
    // to a live c_int whose size is passed. A socket of another kind just
    // fails with an error code, which is ignored.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// The process id of the peer of a Unix socket (`SO_PEERCRED`), or `None`
/// for a TCP socket or on failure.
pub(crate) fn peer_pid(fd: BorrowedFd<'_>) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is a borrowed open descriptor; `cred` is a live, writable
    // ucred and `len` holds its exact size, as getsockopt(2) requires.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// True when the peer of a connected socket has closed it or died
/// (`POLLRDHUP`/`POLLHUP`/`POLLERR`), whether or not requests it sent
/// earlier are still waiting to be read (pipelined calls).
pub(crate) fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `p` is one live, exclusively borrowed pollfd for a borrowed
    // open descriptor; the timeout 0 makes the call return at once.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
