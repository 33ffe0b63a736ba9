//! The two socket options the manager needs that std does not offer.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// Re-arms `TCP_QUICKACK` on a TCP socket so the next segment is
/// acknowledged at once (MANAGER-WIRE.md §9: without it an unmodified
/// CPython client waits ~40 ms per connection for a delayed ACK). Linux
/// clears the flag by itself, so it is set again before each read that
/// matters. Not a TCP socket (or any failure): nothing happens.
pub(crate) fn quickack(fd: BorrowedFd<'_>) {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is a borrowed, open descriptor; the option value points
    // to a live c_int whose size is passed. A socket of another kind just
    // fails with an error code, which is ignored.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
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
