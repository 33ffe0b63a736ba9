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
//! [`wait`] waits on several connections, listeners and process sentinels at
//! once (Python's `multiprocessing.connection.wait`).

pub(crate) mod auth;
mod listener;
mod wait;

pub use listener::{Address, Client, DEFAULT_HANDSHAKE_TIMEOUT, Listener, ToAddress};
pub use wait::{Waitable, wait};

use crate::codec;
use crate::error::{Error, Result};
use crate::sys;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const HEADER: usize = 12;
/// Read buffer size; frames that fit are read with one syscall.
const READ_BUF: usize = 64 * 1024;
/// Largest number of descriptors one message may carry: one batch of
/// `SCM_MAX_FD` per header byte.
pub(crate) const MAX_FDS: usize = HEADER * sys::MAX_FDS_PER_MSG;
/// Default limit on one message's payload.
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;
/// A claimed length above this is not allocated up front but grown as the
/// bytes really arrive, so a lying header cannot force a huge allocation.
const EAGER_ALLOC: u64 = 64 << 20;

struct Reader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
    /// Set after a protocol error: the stream position is lost for good.
    broken: Option<String>,
}

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
    reader: Mutex<Reader>,
    writer: Mutex<Writer>,
    max_message: AtomicU64,
    framing: Framing,
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
        Ok((
            Connection::new(a, true, true),
            Connection::new(b, true, true),
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
        Ok((
            Connection::new(r, true, false),
            Connection::new(w, false, true),
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
            reader: Mutex::new(Reader {
                buf: vec![0u8; READ_BUF].into_boxed_slice(),
                start: 0,
                end: 0,
                fds: VecDeque::new(),
                broken: None,
            }),
            writer: Mutex::new(Writer {
                buf: Vec::new(),
                fds: Vec::new(),
            }),
            max_message: AtomicU64::new(DEFAULT_MAX_MESSAGE),
            framing,
        }
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
    /// example to give one end to several children. Messages sent through
    /// either are never interleaved within a message, but bytes this handle
    /// has already buffered are not visible to the clone.
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
        let c = Connection::new(self.fd.try_clone()?, self.readable, self.writable);
        c.set_max_message_size(self.max_message_size());
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

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        if !self.writable {
            return Err(Error::WrongDirection("read-only"));
        }
        Ok(self.writer.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn lock_reader(&self) -> Result<MutexGuard<'_, Reader>> {
        if !self.readable {
            return Err(Error::WrongDirection("write-only"));
        }
        Ok(self.reader.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sends a value as one message.
    ///
    /// Handles inside the value are duplicated and passed along; the
    /// caller's copies stay open. `Ok` means the message was handed to the
    /// kernel, not that the peer has read it.
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
        let res = codec::encode_into(value, buf, fds);
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
        let res = send_frame(self.fd.as_fd(), &[&buf[at..]], fds);
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
        send_frame(self.fd.as_fd(), &[&header[at..], bytes], &[] as &[OwnedFd])
    }

    /// Receives one value, blocking until it arrives.
    ///
    /// # Errors
    /// [`Error::Eof`] when the peer closed its end; [`Error::Truncated`] when
    /// it died mid-message; [`Error::Decode`] when the bytes are not a `T`
    /// (the message is consumed); [`Error::MessageTooLarge`] or
    /// [`Error::BadFrame`] for a frame that breaks the protocol.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.with_frame(None, decode_payload)
    }

    /// Like [`recv`](Self::recv) but gives up with [`Error::Timeout`] if no
    /// message starts arriving within `timeout`. A message that has started
    /// arriving is always read to its end.
    ///
    /// # Errors
    /// As for [`recv`](Self::recv), plus [`Error::Timeout`].
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.with_frame(Some(sys::deadline_after(timeout)), decode_payload)
    }

    /// Receives one raw message.
    ///
    /// # Errors
    /// As for [`recv`](Self::recv), except that any bytes decode.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.with_frame(None, |b, _| Ok(b.into_vec()))
    }

    /// Like [`recv_bytes`](Self::recv_bytes) with a timeout.
    ///
    /// # Errors
    /// As for [`recv_timeout`](Self::recv_timeout).
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.with_frame(Some(sys::deadline_after(timeout)), |b, _| Ok(b.into_vec()))
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
        self.with_frame_opts(None, None, max, Some(buf), |p, _| match p {
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
    /// # Errors
    /// [`Error::WrongDirection`] on a write-only end; OS errors.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        if self.has_buffered_message()? {
            return Ok(true);
        }
        Ok(sys::wait_readable(
            self.fd.as_fd(),
            timeout.and_then(sys::deadline_after),
        )?)
    }

    /// Whether a whole message (or an earlier protocol error) already sits in
    /// this end's read buffer, so that a receive will not touch the socket.
    fn has_buffered_message(&self) -> Result<bool> {
        let r = self.lock_reader()?;
        if r.broken.is_some() {
            return Ok(true);
        }
        let avail = &r.buf[r.start..r.end];
        Ok(match parse_header(self.framing, avail) {
            Ok(Some((hdr, len, _))) => (avail.len() - hdr) as u64 >= len,
            Ok(None) => false,
            // A bad header is reported by the next receive at once.
            Err(_) => true,
        })
    }

    /// True when a whole message is already buffered in this process, so
    /// that the next receive needs no system call (or reports an error).
    pub(crate) fn message_buffered(&self) -> bool {
        self.has_buffered_message().unwrap_or(true)
    }

    /// Receives one raw message of at most `max` bytes; every read, not only
    /// the first, gives up at `deadline`. Used by the authentication
    /// handshake, where the peer is not trusted yet.
    pub(crate) fn recv_bytes_strict(&self, max: u64, deadline: Option<Instant>) -> Result<Vec<u8>> {
        self.with_frame_opts(Some(deadline), deadline, max, None, |b, _| Ok(b.into_vec()))
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
        send_frame(self.fd.as_fd(), &all, fds)
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

    /// Receives one frame and hands its payload and descriptors to `f`.
    fn with_frame<R>(
        &self,
        deadline: Option<Option<Instant>>,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        let max = self.max_message.load(Ordering::Relaxed);
        self.with_frame_opts(deadline, None, max, None, f)
    }

    /// [`with_frame`](Self::with_frame) with a deadline for every read
    /// (`strict`) and an explicit size limit.
    fn with_frame_opts<R>(
        &self,
        deadline: Option<Option<Instant>>,
        strict: Option<Instant>,
        max: u64,
        dest: Option<&mut [u8]>,
        f: impl FnOnce(Payload<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        let mut r = self.lock_reader()?;
        if let Some(why) = &r.broken {
            return Err(Error::BadFrame(format!(
                "connection unusable after an earlier error: {why}"
            )));
        }
        let mut dest = dest;
        let res = read_frame(
            self.fd.as_fd(),
            &mut r,
            self.framing,
            deadline,
            strict,
            max,
            dest.as_deref_mut(),
        );

        if self.framing == Framing::Python {
            // Python peers never send descriptors; drop any that arrived.
            r.fds.clear();
        }
        match res {
            Ok(Frame::Buffered { hdr, len, nfds }) => {
                let fds = take_fds(&mut r, nfds)?;
                let start = r.start + hdr;
                let out = f(
                    into_dest(Payload::Borrowed(&r.buf[start..start + len]), dest),
                    fds,
                );
                r.start = start + len;
                if r.start == r.end {
                    r.start = 0;
                    r.end = 0;
                }
                out
            }
            Ok(Frame::Owned { payload, nfds }) => {
                let fds = take_fds(&mut r, nfds)?;
                f(into_dest(Payload::Owned(payload), dest), fds)
            }
            Ok(Frame::Direct { len, nfds }) => {
                let fds = take_fds(&mut r, nfds)?;
                f(Payload::InDest(len), fds)
            }
            Err(e) => {
                // A timeout in the middle of a frame (strict mode) loses the
                // stream position just like a bad frame does.
                let mid_frame = strict.is_some() && e.is_timeout() && r.end > r.start;
                if mid_frame || matches!(e, Error::MessageTooLarge { .. } | Error::BadFrame(_)) {
                    r.broken = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

fn take_fds(r: &mut Reader, nfds: usize) -> Result<Vec<OwnedFd>> {
    if r.fds.len() < nfds {
        let why = format!(
            "frame announced {nfds} descriptors but {} arrived",
            r.fds.len()
        );
        r.broken = Some(why.clone());
        return Err(Error::BadFrame(why));
    }
    Ok(r.fds.drain(..nfds).collect())
}

/// With a destination, a payload that fits is copied there.
fn into_dest<'a>(p: Payload<'a>, dest: Option<&mut [u8]>) -> Payload<'a> {
    match (p, dest) {
        (Payload::Borrowed(b), Some(d)) if b.len() <= d.len() => {
            d[..b.len()].copy_from_slice(b);
            Payload::InDest(b.len())
        }
        (Payload::Owned(v), Some(d)) if v.len() <= d.len() => {
            d[..v.len()].copy_from_slice(&v);
            Payload::InDest(v.len())
        }
        (p, _) => p,
    }
}

enum Frame {
    Buffered {
        hdr: usize,
        len: usize,
        nfds: usize,
    },
    Owned {
        payload: Vec<u8>,
        nfds: usize,
    },
    /// Read into the caller's buffer.
    Direct {
        len: usize,
        nfds: usize,
    },
}

/// A received payload: in the read buffer, in its own vector, or already in
/// the buffer the caller supplied.
pub(crate) enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    InDest(usize),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
            Payload::InDest(_) => &[],
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Borrowed(b) => b.to_vec(),
            Payload::Owned(v) => v,
            Payload::InDest(_) => Vec::new(),
        }
    }
}

fn decode_payload<T: DeserializeOwned>(p: Payload<'_>, fds: Vec<OwnedFd>) -> Result<T> {
    codec::decode(p.as_slice(), fds)
}

/// Writes the header of a frame of `len` payload bytes and `nfds`
/// descriptors so that it ends where `h` ends; returns where it starts.
fn write_header(framing: Framing, h: &mut [u8; HEADER], len: u64, nfds: usize) -> usize {
    match framing {
        Framing::Native => {
            h[..8].copy_from_slice(&len.to_le_bytes());
            h[8..12].copy_from_slice(&(nfds as u32).to_le_bytes());
            0
        }
        Framing::Python => match i32::try_from(len) {
            Ok(n) => {
                h[8..12].copy_from_slice(&n.to_be_bytes());
                8
            }
            Err(_) => {
                h[..4].copy_from_slice(&(-1i32).to_be_bytes());
                h[4..12].copy_from_slice(&len.to_be_bytes());
                0
            }
        },
    }
}

/// Parses the frame header at the start of `b`: `(header length, payload
/// length, descriptor count)`, or `None` while more bytes are needed.
fn parse_header(framing: Framing, b: &[u8]) -> Result<Option<(usize, u64, usize)>> {
    match framing {
        Framing::Native => {
            if b.len() < HEADER {
                return Ok(None);
            }
            let len = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
            let nfds = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
            Ok(Some((HEADER, len, nfds)))
        }
        Framing::Python => {
            if b.len() < 4 {
                return Ok(None);
            }
            let n = i32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
            if n >= 0 {
                return Ok(Some((4, n as u64, 0)));
            }
            if n != -1 {
                return Err(Error::BadFrame(format!("negative message length {n}")));
            }
            if b.len() < 12 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(b[4..12].try_into().expect("8 bytes"));
            Ok(Some((12, len, 0)))
        }
    }
}

/// Reads more bytes into the buffer. Returns false at end of stream. With a
/// `strict` deadline, waits for the bytes no longer than that.
fn fill(fd: BorrowedFd<'_>, r: &mut Reader, strict: Option<Instant>) -> Result<bool> {
    if r.start > 0 && r.end == r.buf.len() {
        r.buf.copy_within(r.start..r.end, 0);
        r.end -= r.start;
        r.start = 0;
    }
    if let Some(deadline) = strict {
        if !sys::wait_readable(fd, Some(deadline))? {
            return Err(Error::Timeout);
        }
    }
    let end = r.end;
    let Reader { buf, fds, .. } = r;
    let n = sys::recv_msg_into(fd, &mut buf[end..], fds, false)?;
    r.end += n;
    Ok(n > 0)
}

fn read_frame(
    fd: BorrowedFd<'_>,
    r: &mut Reader,
    framing: Framing,
    deadline: Option<Option<Instant>>,
    strict: Option<Instant>,
    max: u64,
    dest: Option<&mut [u8]>,
) -> Result<Frame> {
    // Wait for the first byte within the deadline; once a frame has begun it
    // is read to its end.
    if r.end == r.start {
        r.start = 0;
        r.end = 0;
        if let Some(deadline) = deadline {
            if !sys::wait_readable(fd, deadline)? {
                return Err(Error::Timeout);
            }
        }
    }
    let (hdr, len, nfds) = loop {
        if let Some(h) = parse_header(framing, &r.buf[r.start..r.end])? {
            break h;
        }
        if !fill(fd, r, strict)? {
            return Err(if r.end == r.start {
                Error::Eof
            } else {
                Error::Truncated
            });
        }
    };
    if len > max {
        return Err(Error::MessageTooLarge { size: len, max });
    }
    if nfds > MAX_FDS {
        return Err(Error::BadFrame(format!(
            "frame announces {nfds} descriptors (limit {MAX_FDS})"
        )));
    }
    let total = hdr as u64 + len;
    if total <= r.buf.len() as u64 {
        let total = total as usize;
        if r.start + total > r.buf.len() {
            r.buf.copy_within(r.start..r.end, 0);
            r.end -= r.start;
            r.start = 0;
        }
        while r.end - r.start < total {
            if !fill(fd, r, strict)? {
                return Err(Error::Truncated);
            }
        }
        return Ok(Frame::Buffered {
            hdr,
            len: len as usize,
            nfds,
        });
    }
    // A large frame: everything buffered belongs to it. Read the rest
    // straight into the caller's buffer if it fits, else into the payload
    // vector.
    let len = usize::try_from(len).map_err(|_| Error::MessageTooLarge { size: len, max })?;
    if let Some(dest) = dest.filter(|d| d.len() >= len) {
        let buffered = r.end - (r.start + hdr);
        dest[..buffered].copy_from_slice(&r.buf[r.start + hdr..r.end]);
        r.start = 0;
        r.end = 0;
        let mut got = buffered;
        while got < len {
            if let Some(deadline) = strict {
                if !sys::wait_readable(fd, Some(deadline))? {
                    return Err(Error::Timeout);
                }
            }
            let n = sys::recv_msg_into(fd, &mut dest[got..len], &mut r.fds, false)?;
            if n == 0 {
                return Err(Error::Truncated);
            }
            got += n;
        }
        return Ok(Frame::Direct { len, nfds });
    }
    let mut payload: Vec<u8> = Vec::with_capacity(len.min(EAGER_ALLOC as usize));
    payload.extend_from_slice(&r.buf[r.start + hdr..r.end]);
    r.start = 0;
    r.end = 0;
    while payload.len() < len {
        if payload.capacity() == payload.len() {
            let grow = payload.len().min(len - payload.len());
            payload.reserve_exact(grow);
        }
        let want = (payload.capacity() - payload.len()).min(len - payload.len());
        if let Some(deadline) = strict {
            if !sys::wait_readable(fd, Some(deadline))? {
                return Err(Error::Timeout);
            }
        }
        let spare = &mut payload.spare_capacity_mut()[..want];
        let n = sys::recv_msg(fd, spare, &mut r.fds, false)?;
        if n == 0 {
            return Err(Error::Truncated);
        }
        // SAFETY: recvmsg initialised the first `n` spare bytes.
        #[allow(unsafe_code)]
        unsafe {
            payload.set_len(payload.len() + n);
        }
    }
    Ok(Frame::Owned { payload, nfds })
}

/// Writes a whole frame made of `parts`, attaching `fds` to its first bytes
/// in batches of at most `SCM_MAX_FD`. Allocates nothing.
fn send_frame(sock: BorrowedFd<'_>, parts: &[&[u8]], fds: &[impl AsFd]) -> Result<()> {
    const MAX_SLICES: usize = 8;
    let mut batches = fds.chunks(sys::MAX_FDS_PER_MSG);
    let mut part = 0;
    let mut offset = 0;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent_total = 0;
    while sent_total < total {
        // Skip parts already sent (and empty ones).
        while offset == parts[part].len() {
            part += 1;
            offset = 0;
        }
        let batch = batches.next().unwrap_or(&[]);
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = if batches.len() > 0 {
            // One byte per batch so that each batch rides on its own bytes.
            slices[0] = IoSlice::new(&parts[part][offset..offset + 1]);
            1
        } else {
            slices[0] = IoSlice::new(&parts[part][offset..]);
            let rest = parts[part + 1..].iter().take(MAX_SLICES - 1);
            let mut count = 1;
            for p in rest {
                slices[count] = IoSlice::new(p);
                count += 1;
            }
            count
        };
        let mut n = sys::send_msg(sock, &slices[..count], batch)?;
        sent_total += n;
        while n > 0 {
            let left = parts[part].len() - offset;
            if n >= left {
                n -= left;
                part += 1;
                offset = 0;
            } else {
                offset += n;
                n = 0;
            }
        }
    }
    Ok(())
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

/// A `Connection` travels inside messages and process arguments: the peer
/// receives a working end of the same socket. Bytes already buffered by the
/// sender's end do not travel, so send a connection before reading from it.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(with = "crate::handle")]
            fd: BorrowedFd<'a>,
            readable: bool,
            writable: bool,
            max: u64,
            python: bool,
        }
        Wire {
            fd: self.fd.as_fd(),
            readable: self.readable,
            writable: self.writable,
            max: self.max_message_size(),
            python: self.framing == Framing::Python,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(with = "crate::handle")]
            fd: OwnedFd,
            readable: bool,
            writable: bool,
            max: u64,
            python: bool,
        }
        let w = Wire::deserialize(d)?;
        let framing = if w.python {
            Framing::Python
        } else {
            Framing::Native
        };
        let c = Connection::with_framing(w.fd, w.readable, w.writable, framing);
        c.set_max_message_size(w.max);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_headers_round_trip() {
        for len in [0u64, 1, 0x7fff_ffff, 0x8000_0000, u64::MAX] {
            let mut h = [0u8; HEADER];
            let at = write_header(Framing::Python, &mut h, len, 0);
            let (hdr, got, nfds) = parse_header(Framing::Python, &h[at..]).unwrap().unwrap();
            assert_eq!((hdr, got, nfds), (HEADER - at, len, 0), "len {len}");
            // Shorter prefixes of the header ask for more bytes.
            for cut in 0..HEADER - at {
                assert!(
                    parse_header(Framing::Python, &h[at..at + cut])
                        .unwrap()
                        .is_none()
                );
            }
        }
        // Python's own bytes: struct.pack("!i", 5) and the -1 + "!Q" form.
        let mut h = [0u8; HEADER];
        assert_eq!(write_header(Framing::Python, &mut h, 5, 0), 8);
        assert_eq!(h[8..], [0, 0, 0, 5]);
        assert_eq!(write_header(Framing::Python, &mut h, 1 << 32, 0), 0);
        assert_eq!(h, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(parse_header(Framing::Python, &(-2i32).to_be_bytes()).is_err());
    }

    #[test]
    fn native_headers_are_unchanged() {
        let mut h = [0u8; HEADER];
        assert_eq!(write_header(Framing::Native, &mut h, 7, 2), 0);
        assert_eq!(h, [7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(
            parse_header(Framing::Native, &h).unwrap(),
            Some((HEADER, 7, 2))
        );
    }
}
