//! Unix-domain socket pairs and SCM_RIGHTS descriptor passing.
#![allow(unsafe_code)]

use super::cvt_r;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors the kernel accepts in one `SCM_RIGHTS` message
/// (`SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MSG: usize = 253;

/// The kind of a socket pair.
#[derive(Clone, Copy)]
pub(crate) enum SocketKind {
    /// A byte stream (`SOCK_STREAM`).
    Stream,
    /// Atomic, boundary-keeping messages (`SOCK_SEQPACKET`).
    SeqPacket,
}

/// A connected pair of close-on-exec Unix sockets.
///
/// # References
/// socketpair(2), unix(7)
pub(crate) fn socketpair(kind: SocketKind) -> io::Result<(OwnedFd, OwnedFd)> {
    let ty = match kind {
        SocketKind::Stream => libc::SOCK_STREAM,
        SocketKind::SeqPacket => libc::SOCK_SEQPACKET,
    };
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    cvt_r(|| unsafe {
        libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    })?;
    // SAFETY: socketpair succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Shuts down the writing or reading half of a socket.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, write: bool) -> io::Result<()> {
    let how = if write { libc::SHUT_WR } else { libc::SHUT_RD };
    // SAFETY: shutdown on a borrowed fd; errors are reported through errno.
    cvt_r(|| unsafe { libc::shutdown(fd.as_raw_fd(), how) })?;
    Ok(())
}

/// Space for a control message carrying `n` descriptors.
fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((n * mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `bufs` with `fds` attached (at most [`MAX_FDS_PER_MSG`]).
/// Returns the number of bytes sent, which may be short on a stream socket.
/// `SIGPIPE` is never raised: a closed peer is `EPIPE`.
///
/// # References
/// sendmsg(2), unix(7) (`SCM_RIGHTS`)
pub(crate) fn send_msg(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    assert!(fds.len() <= MAX_FDS_PER_MSG, "too many fds in one message");
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; cmsg_space(fds.len()).div_ceil(8)];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len()) as _;
        // SAFETY: msg_control points at a zeroed, aligned buffer of
        // msg_controllen bytes, large enough for one cmsghdr carrying
        // `fds.len()` ints (CMSG_SPACE above), so CMSG_FIRSTHDR is non-null
        // and CMSG_DATA has room for the copy.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * mem::size_of::<RawFd>()) as u32) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points at live iovecs (IoSlice is ABI-compatible with
    // iovec) and a live control buffer for the duration of the call.
    let n = cvt_r(|| unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })?;
    Ok(n as usize)
}

/// Receives into `buf`; descriptors that arrive are appended to `fds`
/// (close-on-exec). Returns the number of bytes read; 0 means end of stream.
///
/// # References
/// recvmsg(2), unix(7) (`SCM_RIGHTS`, `MSG_CMSG_CLOEXEC`)
pub(crate) fn recv_msg(
    sock: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let space = cmsg_space(MAX_FDS_PER_MSG);
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: `msg` describes `buf` and `control`, both live and writable for
    // the call; the kernel writes at most their stated lengths and only
    // writes initialised bytes.
    let n = cvt_r(|| unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) })?;
    // SAFETY: after a successful recvmsg the kernel has filled msg_control
    // with msg_controllen bytes of well-formed cmsghdrs; we walk them with the
    // CMSG_* macros and read each SCM_RIGHTS payload, whose descriptors were
    // installed in our table for us to own.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / mem::size_of::<RawFd>() {
                    fds.push_back(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "descriptors were lost in transit (MSG_CTRUNC)",
        ));
    }
    Ok(n as usize)
}

/// Sets the kernel send and receive buffer sizes of a socket (best effort).
pub(crate) fn set_buffer_sizes(fd: BorrowedFd<'_>, bytes: i32) {
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads one c_int from a live local.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                mem::size_of::<i32>() as u32,
            );
        }
    }
}

/// Whether `fd` is a socket.
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: an all-zero stat is valid; fstat fills it for a borrowed fd.
    unsafe {
        let mut st: libc::stat = mem::zeroed();
        libc::fstat(fd.as_raw_fd(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    }
}
