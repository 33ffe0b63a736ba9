//! How a [`Connection`] writes a frame (socket or slot), and how it travels
//! to another process.

use super::bulk::Outbox;
use super::frame::send_frame;
use super::slot::{CAPACITY, SlotEnd, SocketSend};
use super::{Connection, Framing};
use crate::error::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

impl Connection {
    /// Writes a whole frame made of `parts` with `fds` attached: through
    /// the pipe's slot when a receiver spins and the frame is small and
    /// carries no descriptors (see the `slot` module), through a shared
    /// buffer when it is large, carries no descriptors and a buffer is free
    /// (see the `bulk` module), else on the socket.
    pub(super) fn send_frame(&self, parts: &[&[u8]], fds: &[impl AsFd]) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if let Some(outbox) = &self.bulk {
            if fds.is_empty() && Outbox::fits(total) && outbox.usable(self.fd.as_fd()) {
                let sent = outbox.send(parts, total, |envelope, fd| {
                    self.send_socket(envelope, &[fd], envelope.iter().map(|p| p.len()).sum())
                });
                if let Some(res) = sent {
                    return res;
                }
            }
        }
        self.send_socket(parts, fds, total)
    }

    /// [`send_frame`](Self::send_frame) without the shared buffers.
    fn send_socket(&self, parts: &[&[u8]], fds: &[impl AsFd], total: usize) -> Result<()> {
        let Some(slot) = &self.slot else {
            return send_frame(self.fd.as_fd(), parts, fds);
        };
        let offer = fds.is_empty() && total <= CAPACITY && !self.spin.limit().is_zero();
        let guard = if offer {
            match slot.try_put(parts, total) {
                SocketSend::Taken => return Ok(()),
                SocketSend::Socket(g) => g,
            }
        } else {
            slot.socket_send()
        };
        let res = send_frame(self.fd.as_fd(), parts, fds);
        drop(guard);
        res
    }
}

/// A `Connection` travels inside messages and process arguments: the peer
/// receives a working end of the same socket (and of the same slot, for a
/// [`Pipe`](super::Pipe) end: two descriptors). Bytes already buffered by
/// the sender's end do not travel, so send a connection before reading
/// from it.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Slot<'a> {
            #[serde(with = "crate::handle")]
            fd: BorrowedFd<'a>,
            side: u8,
        }
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(with = "crate::handle")]
            fd: BorrowedFd<'a>,
            readable: bool,
            writable: bool,
            max: u64,
            python: bool,
            slot: Option<Slot<'a>>,
        }
        Wire {
            fd: self.fd.as_fd(),
            readable: self.readable,
            writable: self.writable,
            max: self.max_message_size(),
            python: self.framing == Framing::Python,
            slot: self.slot.as_ref().map(|s| Slot {
                fd: s.fd(),
                side: s.side(),
            }),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Slot {
            #[serde(with = "crate::handle")]
            fd: OwnedFd,
            side: u8,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(with = "crate::handle")]
            fd: OwnedFd,
            readable: bool,
            writable: bool,
            max: u64,
            python: bool,
            slot: Option<Slot>,
        }
        let w = Wire::deserialize(d)?;
        let framing = if w.python {
            Framing::Python
        } else {
            Framing::Native
        };
        let mut c = Connection::with_framing(w.fd, w.readable, w.writable, framing);
        c.set_max_message_size(w.max);
        if let Some(slot) = w.slot {
            if framing == Framing::Python {
                return Err(serde::de::Error::custom(
                    "a Listener/Client connection has no pipe slot",
                ));
            }
            let end = SlotEnd::from_fd(slot.fd, slot.side)
                .map_err(|e| serde::de::Error::custom(format!("pipe slot: {e}")))?;
            c.slot = Some(end);
        }
        Ok(c)
    }
}
