//! Local connections: a Rust client on the same machine trades its Unix
//! socket connection for one end of a [`Pipe`].
//!
//! A `Pipe` between two of this crate's processes carries small messages
//! through a shared-memory slot while its receiver spins (see
//! [`connection`](crate::connection)), so a call costs a few microseconds
//! instead of two socket wake-ups. After the authkey handshake on the
//! server's Unix socket, the client asks with the special request
//! `#multiproc_pipe`; this crate's server answers `None`, the client sends
//! one end of a new `Pipe` (its descriptors) in one raw message, and the
//! server answers on the socket whether it took it (`True`) or stays on the
//! socket (`False`). From then on both sides send the manager protocol's
//! length-prefixed frames as the pipe's messages, several frames to a
//! message where they go together (a batch of pipelined requests, the
//! replies gathered for them), as they would be one write on the socket. A Python server refuses the request (and
//! closes the connection, as it does after any special request but
//! `accept_connection`), so the client connects again and stays on the
//! socket; TCP connections never ask.

use super::fast;
use super::wire::{self, Reply};
use crate::codec;
use crate::connection::{Address, Connection, Pipe};
use crate::error::{Error, Result};
use crate::pickle::Value;
use std::collections::VecDeque;
use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

/// The special request that asks the server for a pipe.
pub(crate) const METHOD: &str = "#multiproc_pipe";

/// The largest message on a pipe: one frame of the largest size, with the
/// frames gathered before it.
pub(crate) const MAX_MESSAGE: u64 = wire::MAX_FRAME + (1 << 20);

/// The largest hand-over message (an encoded pipe end) a server reads.
const MAX_HANDOVER: usize = 4 << 10;

/// Writes all of `bytes` on `sock`.
fn write_raw(sock: BorrowedFd<'_>, bytes: &[u8]) -> Result<()> {
    std::fs::File::from(sock.try_clone_to_owned()?).write_all(bytes)?;
    Ok(())
}

/// Connects to the manager at `address`, on a pipe where the server can
/// take one. Returns the connection and whether it is a pipe (whose
/// messages are the frames' payloads, not length-prefixed frames).
///
/// # Errors
/// As for connecting: the server is gone, or the authkey is wrong.
pub(crate) fn connect(address: &Address, authkey: &[u8]) -> Result<(Connection, bool)> {
    let conn = wire::connect(address, authkey)?;
    if matches!(address, Address::Tcp(_)) {
        return Ok((conn, false));
    }
    let mut req = Vec::new();
    fast::request(&mut req, None, METHOD, &[], &[])?;
    write_raw(conn.as_fd(), &req)?;
    match conn.recv_with(|frame, _| wire::parse_reply_kind(frame)) {
        Ok(Reply::Return(Value::None)) => {}
        // Not this crate's server: it has closed the connection.
        Ok(_) | Err(Error::Remote { .. }) => return Ok((wire::connect(address, authkey)?, false)),
        Err(e) => return Err(e),
    }
    // An empty hand-over (no pipe could be made) keeps the socket.
    let pipe = Pipe::new().ok();
    let mut body = Vec::new();
    let mut fds = Vec::new();
    let mine = match pipe {
        Some((mine, theirs)) => match codec::encode_into(&theirs, &mut body, &mut fds) {
            Ok(()) => Some(mine),
            Err(_) => {
                body.clear();
                fds.clear();
                None
            }
        },
        None => None,
    };
    let mut msg = (body.len() as u32).to_le_bytes().to_vec();
    msg.extend_from_slice(&body);
    let sent = crate::sys::send_msg(conn.as_fd(), &[IoSlice::new(&msg)], &fds)?;
    write_raw(conn.as_fd(), &msg[sent..])?;
    drop(fds);
    let took = match conn.recv_with(|frame, _| wire::parse_reply_kind(frame))? {
        Reply::Return(Value::Bool(took)) => took,
        _ => false,
    };
    match mine {
        Some(pipe) if took => {
            pipe.set_max_message_size(MAX_MESSAGE);
            Ok((pipe, true))
        }
        _ => Ok((conn, false)),
    }
}

/// The server's side of [`METHOD`] on `conn` (a Unix socket connection,
/// in step, nothing buffered): answers it, reads the client's pipe end and
/// says whether it took it. `Ok(None)`: the client stays on the socket.
///
/// # Errors
/// When the socket fails or the client breaks the exchange (the
/// connection is then out of step and must be closed).
pub(crate) fn accept(conn: &Connection, deadline: Option<Instant>) -> Result<Option<Connection>> {
    let sock = conn.as_fd();
    let mut out = Vec::new();
    fast::reply(&mut out, Ok(Value::None));
    write_raw(sock, &out)?;
    let mut got = Vec::new();
    let mut fds = VecDeque::new();
    let mut buf = [0u8; 1024];
    let want = loop {
        if got.len() >= 4 {
            let len = u32::from_le_bytes(got[..4].try_into().expect("4 bytes")) as usize;
            if len > MAX_HANDOVER {
                return Err(Error::Decode("a pipe hand-over too large".into()));
            }
            if got.len() >= 4 + len {
                break 4 + len;
            }
        }
        if !crate::sys::wait_readable(sock, deadline)? {
            return Err(Error::Timeout);
        }
        let n = crate::sys::recv_msg_into(sock, &mut buf, &mut fds, false)?;
        if n == 0 {
            return Err(Error::Eof);
        }
        got.extend_from_slice(&buf[..n]);
    };
    if got.len() != want {
        return Err(Error::Decode(
            "a pipe hand-over followed by more bytes".into(),
        ));
    }
    let fds: Vec<OwnedFd> = fds.into_iter().collect();
    let pipe = if want > 4 {
        codec::decode::<Connection>(&got[4..], fds).ok()
    } else {
        None
    };
    out.clear();
    fast::reply(&mut out, Ok(Value::Bool(pipe.is_some())));
    write_raw(sock, &out)?;
    Ok(pipe)
}

/// The frames of the messages received on a pipe, one at a time.
#[derive(Default)]
pub(crate) struct Frames {
    buf: Vec<u8>,
    at: usize,
}

impl Frames {
    /// Whether frames of the last message are still to be read.
    pub(crate) fn more(&self) -> bool {
        self.at < self.buf.len()
    }

    /// Hands the next frame's payload to `f`, receiving a message from
    /// `pipe` when none is left.
    ///
    /// # Errors
    /// As for receiving on `pipe`; [`Error::Decode`] for a message that is
    /// not whole frames (the pipe is then out of step).
    pub(crate) fn next<R>(&mut self, pipe: &Connection, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        if !self.more() {
            self.buf = pipe.recv_bytes()?;
            self.at = 0;
        }
        let rest = &self.buf[self.at..];
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
        match len {
            Some(len) if len <= rest.len() - 4 => {
                let r = f(&rest[4..4 + len]);
                self.at += 4 + len;
                if !self.more() && self.buf.capacity() > 1 << 20 {
                    self.buf = Vec::new();
                    self.at = 0;
                }
                Ok(r)
            }
            _ => {
                self.buf.clear();
                self.at = 0;
                Err(Error::Decode(
                    "a pipe message that is not whole frames".into(),
                ))
            }
        }
    }
}
