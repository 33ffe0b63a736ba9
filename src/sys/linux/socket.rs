//! Unix-domain socket pairs and SCM_RIGHTS descriptor passing.
#![allow(unsafe_code)]

use super::retry;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, Shutdown, SocketFlags, SocketType,
};
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Most descriptors the kernel accepts in one `SCM_RIGHTS` message
/// (`SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MSG: usize = 253;

/// Bytes of control buffer that hold [`MAX_FDS_PER_MSG`] descriptors,
/// alignment padding included.
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MSG));

/// Most iovecs one `sendmsg` takes (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

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
        SocketKind::Stream => SocketType::STREAM,
        SocketKind::SeqPacket => SocketType::SEQPACKET,
    };
    retry(|| rustix::net::socketpair(AddressFamily::UNIX, ty, SocketFlags::CLOEXEC, None))
}

/// Shuts down the writing or reading half of a socket.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, write: bool) -> io::Result<()> {
    let how = if write {
        Shutdown::Write
    } else {
        Shutdown::Read
    };
    retry(|| rustix::net::shutdown(fd, how))
}

/// Sends `bufs` with `fds` attached (at most [`MAX_FDS_PER_MSG`]).
/// Returns the number of bytes sent, which may be short on a stream socket.
/// `SIGPIPE` is never raised: a closed peer is `EPIPE`. Allocates nothing.
///
/// # References
/// sendmsg(2), unix(7) (`SCM_RIGHTS`)
pub(crate) fn send_msg<F: AsFd>(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[F],
) -> io::Result<usize> {
    assert!(fds.len() <= MAX_FDS_PER_MSG, "too many fds in one message");
    let bufs = &bufs[..bufs.len().min(MAX_IOV)];
    if fds.is_empty() {
        return retry(|| {
            rustix::net::sendmsg(
                sock,
                bufs,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        });
    }
    // The descriptors as one slice, on the stack; the unused tail holds
    // copies of `sock` that are never sent.
    let mut borrowed = [sock; MAX_FDS_PER_MSG];
    for (slot, fd) in borrowed.iter_mut().zip(fds) {
        *slot = fd.as_fd();
    }
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let pushed = control.push(SendAncillaryMessage::ScmRights(&borrowed[..fds.len()]));
    assert!(pushed, "control buffer too small");
    retry(|| rustix::net::sendmsg(sock, bufs, &mut control, SendFlags::NOSIGNAL))
}

/// Receives into `buf`, which may be uninitialised, without ancillary
/// data: descriptors attached to these bytes are closed by the kernel.
/// Returns the number of bytes read (initialised at the front of `buf`);
/// 0 means end of stream.
///
/// # Errors
/// The socket's error.
///
/// # References
/// recv(2)
pub(crate) fn recv_uninit(
    sock: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    nonblocking: bool,
) -> io::Result<usize> {
    let flags = if nonblocking {
        RecvFlags::DONTWAIT
    } else {
        RecvFlags::empty()
    };
    retry(|| rustix::net::recv(sock, &mut *buf, flags).map(|((got, _), _)| got.len()))
}

/// Receives into `buf`; descriptors that arrive are appended to `fds`
/// (close-on-exec). Returns the number of bytes read; 0 means end of stream.
///
/// # Errors
/// The socket's error, or an error when the kernel dropped descriptors for
/// lack of control space (`MSG_CTRUNC`); those that did arrive are in `fds`.
///
/// # References
/// recvmsg(2), unix(7) (`SCM_RIGHTS`, `MSG_CMSG_CLOEXEC`)
pub(crate) fn recv_msg_into(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    recv_msg_flags(sock, buf, fds, flags)
}

/// [`recv_msg_into`], blocking, but the descriptors that arrive are not
/// close-on-exec: each takes the lowest free number, in the order sent.
/// Only for a single-threaded process laying out the descriptors it is to
/// keep across `exec` (another thread's `exec` could inherit them).
///
/// # Errors
/// As [`recv_msg_into`].
pub(crate) fn recv_msg_inheritable(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    recv_msg_flags(sock, buf, fds, RecvFlags::empty())
}

fn recv_msg_flags(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    flags: RecvFlags,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = retry(|| {
        rustix::net::recvmsg(sock, &mut [IoSliceMut::new(&mut *buf)], &mut control, flags)
    })?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "descriptors were lost in transit (MSG_CTRUNC)",
        ));
    }
    Ok(msg.bytes)
}

/// Whether `fd` is a socket.
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket
    })
}
