//! Connections and pipes (Python's `multiprocessing.connection`).
//!
//! A [`Connection`] is one end of a Unix stream socket that carries framed
//! messages. Every message is one frame: a 12-byte header (payload length as
//! a little-endian `u64`, then the number of attached descriptors as a `u32`)
//! followed by the payload. Descriptors travel as `SCM_RIGHTS` data attached
//! to the frame's first bytes. Frames are never merged or split: one `send`
//! is exactly one `recv`.
//!
//! Connections made by a [`Listener`] or a [`Client`] speak Python's wire
//! format instead (see [`Listener`]): a 4-byte big-endian signed
//! length, or `-1` and an 8-byte big-endian length for messages over
//! `0x7fff_ffff` bytes, then the payload. They carry no descriptors.
//!
//! Receives with a time limit (`recv_timeout`, `recv_deadline`,
//! `recv_bytes_timeout`, `recv_bytes_deadline`) keep to it whatever the
//! peer does, also when it stops in the middle of a message. The part of a
//! message read by then is kept in the connection, and the next receive
//! goes on from there: a timeout never loses data or the place in the
//! stream. [`Connection::poll`] and [`wait`] keep to their timeouts too,
//! also while another thread is receiving on the same end.
//!
//! A receive (or [`Connection::poll`]) that finds nothing to read first
//! spins for a short, adaptive time, asking the socket again without
//! blocking, and only then sleeps in the kernel. A peer that answers
//! within the spin (another process busy on another CPU) then costs no
//! kernel wake-up on either side, which is most of a round trip's time on
//! a virtual machine. The spin is at most [`DEFAULT_SPIN`] (50 µs) per
//! receive, shrinks while spins keep failing (so an idle or overloaded
//! waiter soon stops spinning), counts against timeouts and deadlines, and
//! is off on a machine with one CPU. [`Connection::set_spin`] changes it
//! for one end, `MULTIPROC_CONNECTION_SPIN_US` (microseconds, `0` for off)
//! for every connection of a process. [`wait`] does not spin.
//!
//! The two ends of a [`Pipe`] also share a small memory file (two pages,
//! sealed against resizing; an end that travels to another process carries
//! it, so such an end holds two descriptors). While a receive spins, a
//! small message without handles (at most 4,032 bytes of frame) is handed
//! over through it instead of the socket: the receiver polls a word, the
//! sender writes the message next to it and waits until the receiver has
//! taken it (at most 30 µs; otherwise it takes it back and uses the
//! socket). Nobody makes a system call then. Every other message, and
//! every message while nobody spins, goes on the socket as before; the
//! order of one sender's messages is kept whichever way each travels.
//! Connections of a [`Listener`] or [`Client`] have no such file. Spinning
//! off (see [`Connection::set_spin`]) turns it off too.
//!
//! A large message without handles (a payload of 64 KiB up to
//! [`SPILL_MIN`](crate::SPILL_MIN)) sent on a connection between this
//! crate's processes (a [`Pipe`], the channels of processes) goes through
//! a shared buffer of the sending end instead of the socket's bytes: the
//! sender copies it once into memory that is already mapped and faulted
//! in, and sends on the socket only a small envelope carrying the buffer's
//! descriptor; the receiver copies it once out (straight into the buffer
//! of [`Connection::recv_bytes_into`]) and hands the buffer back. Each
//! sending end keeps a few such buffers (memory files, sealed against
//! resizing), reused from message to message; when none is free, the
//! message goes on the socket as before, so a send never waits for one.
//! Order with every other message is kept. A stream of 1 MiB messages
//! into a reused buffer then runs at 1.3-1.7x a raw socketpair's speed.
//! `Listener`/`Client` connections never do this.
//!
//! Received values are decoded within a nesting limit
//! ([`Connection::set_max_decode_depth`]), so that a hostile message cannot
//! overflow the receiver's stack.
//!
//! [`wait`] waits on several connections, listeners and process sentinels at
//! once (Python's `multiprocessing.connection.wait`).

pub(crate) mod auth;
mod bulk;
mod frame;
mod listener;
mod slot;
mod spin;
mod wait;
mod wire;

pub use auth::{
    answer_challenge, answer_challenge_deadline, deliver_challenge, deliver_challenge_deadline,
};
pub use listener::{Address, Client, DEFAULT_HANDSHAKE_TIMEOUT, Listener, ToAddress};
pub use spin::DEFAULT_SPIN;
pub(crate) use spin::prime as prime_spin;
pub use wait::{Waitable, wait};

pub(crate) use frame::MAX_FDS;

use crate::codec;
use crate::error::{Error, Result};
use crate::sys;
use frame::{Frame, HEADER, Payload, READ_BUF, Reader, write_header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use slot::SlotEnd;
use spin::Spin;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// Default limit on one message's payload.
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;
/// How often [`Connection::poll`] looks at the read buffer again while
/// another thread is receiving.
const BUSY_SLICE: Duration = Duration::from_millis(10);

struct Writer {
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// How messages are delimited on the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This crate's own frames: 12-byte little-endian header with a
    /// descriptor count; descriptors ride as `SCM_RIGHTS`.
    Native,
    /// Python's `multiprocessing.connection` frames: `!i` length, or `-1`
    /// then a `!Q` length; no descriptors.
    Python,
}

/// One end of a [`Pipe`], or of a connection accepted from a listener.
///
/// `send`/`recv` move typed values (serde); `send_bytes`/`recv_bytes` move
/// raw byte messages. Values may hold OS handles ([`Handle`](crate::Handle),
/// other `Connection`s), which are passed to the peer process.
///
/// A `Connection` is `Send + Sync`: one thread may send while another
/// receives. Concurrent senders (or receivers) are serialized, so messages
/// never interleave.
///
/// # Examples
/// ```
/// let (left, right) = multiproc::Pipe::new()?;
/// left.send(&("hello", 42u32))?;
/// let (word, n): (String, u32) = right.recv()?;
/// assert_eq!((word.as_str(), n), ("hello", 42));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Connection {
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    /// Shared with the handles made by [`try_clone`](Self::try_clone).
    reader: Arc<Mutex<Reader>>,
    /// Shared with the handles made by [`try_clone`](Self::try_clone).
    writer: Arc<Mutex<Writer>>,
    max_message: AtomicU64,
    max_depth: AtomicU32,
    framing: Framing,
    spin: Spin,
    /// The pipe's slot (see the `slot` module); `None` for connections
    /// not made by [`Pipe`].
    slot: Option<SlotEnd>,
    /// This end's shared buffers for large messages (see the `bulk`
    /// module); `None` with Python framing.
    bulk: Option<bulk::Outbox>,
}

/// Creates pairs of connected [`Connection`]s (Python's `Pipe()`).
///
/// # Examples
/// ```
/// use multiproc::Pipe;
///
/// let (reader, writer) = Pipe::one_way()?;
/// writer.send_bytes(b"ping")?;
/// assert_eq!(reader.recv_bytes()?, b"ping");
/// assert!(reader.send_bytes(b"no").is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Pipe;

impl Pipe {
    /// A duplex pipe: both ends can send and receive (`Pipe(duplex=True)`).
    ///
    /// # Errors
    /// When the OS cannot create a socket pair (e.g. out of descriptors).
    // Python's spelling: `Pipe()` returns the two ends, not a `Pipe`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Result<(Connection, Connection)> {
        let (a, b) = sys::socketpair(sys::SocketKind::Stream)?;
        // Without a slot (no descriptor or memory left for it) the pipe
        // works the same, over the socket only.
        let (sa, sb) = SlotEnd::pair().ok().unzip();
        Ok((
            Connection::new(a, true, true).with_slot(sa),
            Connection::new(b, true, true).with_slot(sb),
        ))
    }

    /// A one-way pipe: returns `(reader, writer)` (`Pipe(duplex=False)`).
    ///
    /// # Errors
    /// When the OS cannot create a socket pair.
    pub fn one_way() -> Result<(Connection, Connection)> {
        let (r, w) = sys::socketpair(sys::SocketKind::Stream)?;
        sys::shutdown(r.as_fd(), true)?;
        sys::shutdown(w.as_fd(), false)?;
        // The writer sends on page 0, which the reader (end 1) receives on.
        let (sw, sr) = SlotEnd::pair().ok().unzip();
        Ok((
            Connection::new(r, true, false).with_slot(sr),
            Connection::new(w, false, true).with_slot(sw),
        ))
    }
}

impl Connection {
    pub(crate) fn new(fd: OwnedFd, readable: bool, writable: bool) -> Self {
        Self::with_framing(fd, readable, writable, Framing::Native)
    }

    pub(crate) fn with_framing(
        fd: OwnedFd,
        readable: bool,
        writable: bool,
        framing: Framing,
    ) -> Self {
        Connection {
            fd,
            readable,
            writable,
            reader: Arc::new(Mutex::new(Reader::new())),
            writer: Arc::new(Mutex::new(Writer {
                buf: Vec::new(),
                fds: Vec::new(),
            })),
            max_message: AtomicU64::new(DEFAULT_MAX_MESSAGE),
            max_depth: AtomicU32::new(codec::max_decode_depth()),
            framing,
            spin: Spin::new(),
            slot: None,
            bulk: (framing == Framing::Native).then(bulk::Outbox::new),
        }
    }

    fn with_slot(mut self, slot: Option<SlotEnd>) -> Self {
        self.slot = slot;
        self
    }

    /// Wraps a connected Unix stream socket.
    ///
    /// # Errors
    /// When `fd` is not a socket.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        if !sys::is_socket(fd.as_fd()) {
            return Err(Error::Io(std::io::Error::other(
                "descriptor is not a socket",
            )));
        }
        Ok(Connection::new(fd, true, true))
    }

    /// A second handle to the same end (the descriptor is duplicated), for
    /// example to give one end to several children. In this process the
    /// two handles share their send and receive state: messages sent
    /// through either never interleave, and bytes one has already read
    /// from the socket are seen by the other.
    ///
    /// Once a handle travels to another process, that process sends on its
    /// own. Small messages, and those that go through the pipe's slot, a
    /// shared buffer (see the module docs) or a spilled memory file, are
    /// one socket write and never interleave with another process's; a
    /// large message written to the socket in pieces (one carrying
    /// handles, or any when no shared buffer is free) can. Processes that
    /// send such messages on one end at the same time should hold a
    /// [`Lock`](crate::Lock) around their sends, as in Python.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// let a2 = a.try_clone()?;
    /// a2.send(&1u8)?;
    /// assert_eq!(b.recv::<u8>()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Connection> {
        let mut c = Connection::with_framing(
            self.fd.try_clone()?,
            self.readable,
            self.writable,
            self.framing,
        );
        c.reader = Arc::clone(&self.reader);
        c.writer = Arc::clone(&self.writer);
        c.slot = self.slot.clone();
        c.set_max_message_size(self.max_message_size());
        c.set_max_decode_depth(self.max_decode_depth());
        c.set_spin(self.spin());
        Ok(c)
    }

    /// Whether this end may receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end may send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Sets the largest payload this end accepts; a larger incoming frame is
    /// [`Error::MessageTooLarge`] and leaves the connection unusable.
    /// The default is [`DEFAULT_MAX_MESSAGE`] (1 GiB).
    pub fn set_max_message_size(&self, bytes: u64) {
        self.max_message.store(bytes, Ordering::Relaxed);
    }

    /// The largest payload this end accepts.
    pub fn max_message_size(&self) -> u64 {
        self.max_message.load(Ordering::Relaxed)
    }

    /// Sets how deeply a value received on this end may nest; a deeper one
    /// is [`Error::Decode`] (the message is consumed, the connection stays
    /// usable). The default is the process-wide setting when the connection
    /// was made ([`max_decode_depth`](crate::max_decode_depth), normally
    /// [`DEFAULT_MAX_DECODE_DEPTH`](crate::DEFAULT_MAX_DECODE_DEPTH));
    /// see [`set_max_decode_depth`](crate::set_max_decode_depth) for what
    /// a level is. The limit belongs to this end: it does not travel when the
    /// connection is sent to another process.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, Pipe};
    ///
    /// let (a, b) = Pipe::new()?;
    /// b.set_max_decode_depth(2);
    /// a.send(&Some(Some(Some(1u8))))?;
    /// assert!(matches!(b.recv::<Option<Option<Option<u8>>>>(), Err(Error::Decode(_))));
    /// a.send(&Some(Some(1u8)))?;
    /// assert_eq!(b.recv::<Option<Option<u8>>>()?, Some(Some(1)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set_max_decode_depth(&self, levels: u32) {
        self.max_depth.store(levels, Ordering::Relaxed);
    }

    /// How deeply a value received on this end may nest (see
    /// [`set_max_decode_depth`](Self::set_max_decode_depth)).
    pub fn max_decode_depth(&self) -> u32 {
        self.max_depth.load(Ordering::Relaxed)
    }

    /// Sets how long a receive (or [`poll`](Self::poll)) on this end keeps
    /// asking an empty socket without blocking before it sleeps;
    /// `Duration::ZERO` turns this off.
    ///
    /// While a receiver spins, it is not waiting in the kernel, so the
    /// peer's send has nobody to wake: between two busy processes a round
    /// trip then costs a few system calls instead of two kernel wake-ups.
    /// The spin adapts: it halves after each spin that found nothing, stops
    /// below an eighth of this limit (then one blocking receive in 32 still
    /// spins for the whole limit), and goes back to the whole limit after a
    /// spin that succeeds; so a receiver spends at most this much CPU per receive, and
    /// next to nothing while it mostly waits. A spin counts against the receive's timeout or
    /// deadline. On a machine with one CPU nobody spins.
    ///
    /// The default is [`DEFAULT_SPIN`] (50 µs), or the whole number of
    /// microseconds in the environment variable
    /// `MULTIPROC_CONNECTION_SPIN_US` (read once per process; `0` turns
    /// spinning off). The setting belongs to this end: it is copied by
    /// [`try_clone`](Self::try_clone) but does not travel when the
    /// connection is sent to another process.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::new()?;
    /// b.set_spin(Duration::ZERO); // always block at once
    /// a.send(&1u8)?;
    /// assert_eq!(b.recv::<u8>()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set_spin(&self, limit: Duration) {
        self.spin.set_limit(limit);
    }

    /// The longest spin of a receive on this end (see
    /// [`set_spin`](Self::set_spin)); zero when it never spins.
    pub fn spin(&self) -> Duration {
        self.spin.limit()
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        if !self.writable {
            return Err(Error::WrongDirection("read-only"));
        }
        Ok(self.writer.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the read side, waiting no longer than `deadline` for another
    /// thread that is receiving on this end.
    fn lock_reader(&self, deadline: Option<Instant>) -> Result<MutexGuard<'_, Reader>> {
        if !self.readable {
            return Err(Error::WrongDirection("write-only"));
        }
        let Some(deadline) = deadline else {
            return Ok(self.reader.lock().unwrap_or_else(|e| e.into_inner()));
        };
        loop {
            match self.reader.try_lock() {
                Ok(r) => return Ok(r),
                Err(TryLockError::Poisoned(e)) => return Ok(e.into_inner()),
                Err(TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Timeout);
                    }
                    std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
                }
            }
        }
    }

    /// Sends a value as one message.
    ///
    /// Handles inside the value are duplicated and passed along; the
    /// caller's copies stay open. `Ok` means the message was handed to the
    /// kernel (or, through a [`Pipe`]'s slot, to a receiver that was
    /// spinning), not that the peer has read it. From
    /// [`SPILL_MIN`](crate::SPILL_MIN) bytes of encoding on, the message
    /// travels in a sealed memory file instead of the socket's bytes.
    ///
    /// # Errors
    /// [`Error::Encode`] if serialization fails (nothing is sent);
    /// [`Error::Io`] with `BrokenPipe` when the peer is gone;
    /// [`Error::WrongDirection`] on the reading end of a one-way pipe.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut w = self.lock_writer()?;
        let Writer { buf, fds } = &mut *w;
        buf.clear();
        fds.clear();
        buf.extend_from_slice(&[0u8; HEADER]);
        let res = match self.framing {
            Framing::Python => codec::encode_into(value, buf, fds),
            _ => codec::encode_message(value, buf, fds),
        };
        if let Err(e) = res {
            fds.clear();
            return Err(e);
        }
        let len = (buf.len() - HEADER) as u64;
        if fds.len() > MAX_FDS {
            fds.clear();
            return Err(Error::Encode(format!(
                "a message can carry at most {MAX_FDS} handles"
            )));
        }
        if self.framing == Framing::Python && !fds.is_empty() {
            fds.clear();
            return Err(Error::Encode(
                "handles cannot travel over a Listener/Client connection".into(),
            ));
        }
        let header: &mut [u8; HEADER] = (&mut buf[..HEADER]).try_into().expect("header slot");
        let at = write_header(self.framing, header, len, fds.len());
        let res = self.send_frame(&[&buf[at..]], fds);
        fds.clear();
        if buf.capacity() > 4 * READ_BUF {
            *buf = Vec::new();
        }
        res
    }

    /// Sends raw bytes as one message.
    ///
    /// # Errors
    /// As for [`send`](Self::send).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        let _w = self.lock_writer()?;
        let mut header = [0u8; HEADER];
        let at = write_header(self.framing, &mut header, bytes.len() as u64, 0);
        self.send_frame(&[&header[at..], bytes], &[] as &[OwnedFd])
    }

    /// Receives one value, blocking until it arrives.
    ///
    /// # Errors
    /// [`Error::Eof`] when the peer closed its end; [`Error::Truncated`] when
    /// it died mid-message; [`Error::Decode`] when the bytes are not a `T`
    /// (the message is consumed); [`Error::MessageTooLarge`] or
    /// [`Error::BadFrame`] for a frame that breaks the protocol.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_at(None)
    }

    /// Like [`recv`](Self::recv) but gives up with [`Error::Timeout`] once
    /// `timeout` has passed, also in the middle of a message.
    ///
    /// A message that has only partly arrived when the time is up is not
    /// lost: the bytes read so far stay in this end's buffer and the next
    /// receive (of any kind, with or without a timeout) goes on from there,
    /// so the stream never loses its place.
    ///
    /// # Errors
    /// As for [`recv`](Self::recv), plus [`Error::Timeout`].
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, Pipe};
    /// use std::time::Duration;
    ///
    /// let (a, b) = Pipe::new()?;
    /// assert!(matches!(b.recv_timeout::<u8>(Duration::from_millis(10)), Err(Error::Timeout)));
    /// a.send(&7u8)?;
    /// assert_eq!(b.recv_timeout::<u8>(Duration::from_secs(5))?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.recv_at(sys::deadline_after(timeout))
    }

    /// Like [`recv_timeout`](Self::recv_timeout) with a point in time:
    /// gives up with [`Error::Timeout`] once `deadline` has passed (a
    /// deadline already past still takes a message that is ready).
    ///
    /// # Errors
    /// As for [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send(&"hi")?;
    /// let s: String = b.recv_deadline(Instant::now() + Duration::from_secs(5))?;
    /// assert_eq!(s, "hi");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_deadline<T: DeserializeOwned>(&self, deadline: Instant) -> Result<T> {
        self.recv_at(Some(deadline))
    }

    /// Receives a value, giving up at `deadline` (`None`: never).
    pub(crate) fn recv_at<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T> {
        let depth = self.max_decode_depth();
        let max = self.max_message_size();
        self.with_frame(deadline, |p, fds| {
            codec::decode_message(p.as_slice(), fds, depth, max)
        })
    }

    /// Receives one raw message.
    ///
    /// # Errors
    /// As for [`recv`](Self::recv), except that any bytes decode.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.with_frame(None, |b, _| Ok(b.into_vec()))
    }

    /// Like [`recv_bytes`](Self::recv_bytes), giving up with
    /// [`Error::Timeout`] once `timeout` has passed, also in the middle of a
    /// message (which the next receive then finishes; see
    /// [`recv_timeout`](Self::recv_timeout)).
    ///
    /// # Errors
    /// As for [`recv_timeout`](Self::recv_timeout).
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.with_frame(sys::deadline_after(timeout), |b, _| Ok(b.into_vec()))
    }

    /// Like [`recv_bytes_timeout`](Self::recv_bytes_timeout) with a point
    /// in time.
    ///
    /// # Errors
    /// As for [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"hi")?;
    /// let soon = Instant::now() + Duration::from_secs(5);
    /// assert_eq!(b.recv_bytes_deadline(soon)?, b"hi");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes_deadline(&self, deadline: Instant) -> Result<Vec<u8>> {
        self.with_frame(Some(deadline), |b, _| Ok(b.into_vec()))
    }

    /// Receives one raw message into `buf`, returning its length.
    ///
    /// # Errors
    /// [`Error::BufferTooShort`] carrying the whole message when it does not
    /// fit; otherwise as for [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let capacity = buf.len();
        let max = self.max_message.load(Ordering::Relaxed);
        // A message that fits lands in `buf` (a large one straight from the
        // socket); one that does not comes back whole in the error.
        self.with_frame_opts(None, max, Some(buf), |p, _| match p {
            Payload::InDest(n) => Ok(n),
            p => Err(Error::BufferTooShort {
                message: p.into_vec(),
                capacity,
            }),
        })
    }

    /// Whether a message (or end of stream) is ready to be received, waiting
    /// up to `timeout` (`None` waits forever, `Some(ZERO)` does not wait).
    ///
    /// `poll` keeps to its timeout also while another thread is receiving
    /// on this end (that thread owns the read buffer meanwhile; `poll` then
    /// watches the socket and looks at the buffer again every few
    /// milliseconds).
    ///
    /// # Errors
    /// [`Error::WrongDirection`] on a write-only end; OS errors.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.and_then(sys::deadline_after);
        loop {
            match self.has_buffered_message()? {
                Some(true) => return Ok(true),
                Some(false) => return Ok(self.wait_readable(deadline)?),
                None => {
                    let slice = Instant::now() + BUSY_SLICE;
                    let until = deadline.map_or(slice, |d| d.min(slice));
                    if sys::wait_readable(self.fd.as_fd(), Some(until))? {
                        return Ok(true);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Waits until the socket is readable or `deadline` passes, spinning
    /// first like a receive does (see [`set_spin`](Self::set_spin)).
    fn wait_readable(&self, deadline: Option<Instant>) -> std::io::Result<bool> {
        let fd = self.fd.as_fd();
        let spun = self
            .spin
            .run(deadline, || Ok(sys::readable_now(fd)?.then_some(())))?;
        Ok(spun.is_some() || sys::wait_readable(fd, deadline)?)
    }

    /// Whether a whole message (or an earlier protocol error) already sits in
    /// this end's read buffer, so that a receive will not touch the socket;
    /// `None` when another thread holds the buffer (it is receiving).
    fn has_buffered_message(&self) -> Result<Option<bool>> {
        if !self.readable {
            return Err(Error::WrongDirection("write-only"));
        }
        let r = match self.reader.try_lock() {
            Ok(r) => r,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        Ok(Some(r.broken.is_some() || r.has_whole_frame(self.framing)))
    }

    /// True when a whole message is already buffered in this process, so
    /// that the next receive needs no system call (or reports an error);
    /// false while another thread is receiving.
    pub(crate) fn message_buffered(&self) -> bool {
        self.has_buffered_message()
            .map(|whole| whole.unwrap_or(false))
            .unwrap_or(true)
    }

    /// Receives one raw message of at most `max` bytes, giving up at
    /// `deadline`. Used by the authentication
    /// handshake, where the peer is not trusted yet.
    pub(crate) fn recv_bytes_strict(&self, max: u64, deadline: Option<Instant>) -> Result<Vec<u8>> {
        self.with_frame_opts(deadline, max, None, |b, _| Ok(b.into_vec()))
    }

    /// Sends one frame made of `parts` with `fds` attached (native framing
    /// only). Used by the pool, which encodes its messages itself.
    pub(crate) fn send_parts(&self, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> Result<()> {
        let _w = self.lock_writer()?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if fds.len() > MAX_FDS {
            return Err(Error::Encode(format!(
                "a message can carry at most {MAX_FDS} handles"
            )));
        }
        let mut header = [0u8; HEADER];
        let at = write_header(self.framing, &mut header, len as u64, fds.len());
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&header[at..]);
        all.extend(parts.iter().filter(|p| !p.is_empty()));
        self.send_frame(&all, fds)
    }

    /// Receives one frame and hands its payload and descriptors to `f`.
    pub(crate) fn recv_with<R>(
        &self,
        f: impl FnOnce(&[u8], Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        self.with_frame(None, |p, fds| f(p.as_slice(), fds))
    }

    /// Closes the connection. Dropping it does the same.
    pub fn close(self) {}

    /// Receives one frame and hands its payload and descriptors to `f`,
    /// giving up at `deadline` (`None`: never).
    fn with_frame<R>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        let max = self.max_message.load(Ordering::Relaxed);
        self.with_frame_opts(deadline, max, None, f)
    }

    /// [`with_frame`](Self::with_frame) with an explicit size limit and an
    /// optional destination for the payload.
    fn with_frame_opts<R>(
        &self,
        deadline: Option<Instant>,
        max: u64,
        dest: Option<&mut [u8]>,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        let mut r = self.lock_reader(deadline)?;
        if let Some(why) = &r.broken {
            return Err(Error::BadFrame(format!(
                "connection unusable after an earlier error: {why}"
            )));
        }
        let mut dest = dest;
        let res = frame::read_frame(
            self.fd.as_fd(),
            &mut r,
            self.framing,
            deadline,
            &self.spin,
            self.slot.as_ref(),
            max,
            dest.as_deref_mut(),
        );
        if self.framing == Framing::Python {
            // Python peers never send descriptors; drop any that arrived.
            r.fds.clear();
        }
        match res {
            Ok(Frame::Buffered { hdr, len, nfds }) => {
                let fds = r.take_fds(nfds)?;
                let out = f(Payload::Borrowed(r.buffered(hdr, len)).into_dest(dest), fds);
                r.consume(hdr, len);
                out
            }
            Ok(Frame::Owned { payload, nfds }) => {
                let fds = r.take_fds(nfds)?;
                f(Payload::Owned(payload).into_dest(dest), fds)
            }
            Ok(Frame::Direct { len, nfds }) => {
                let fds = r.take_fds(nfds)?;
                f(Payload::InDest(len), fds)
            }
            Err(e) => {
                if matches!(e, Error::MessageTooLarge { .. } | Error::BadFrame(_)) {
                    r.broken = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_raw_fd())
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("framing", &self.framing)
            .finish()
    }
}
