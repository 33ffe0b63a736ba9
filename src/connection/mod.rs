//! Connections and pipes (Python's `multiprocessing.connection`).
//!
//! A [`Connection`] is one end of a Unix stream socket that carries framed
//! messages. Every message is one frame: a 12-byte header (payload length as
//! a little-endian `u64`, then the number of attached descriptors as a `u32`)
//! followed by the payload. Descriptors travel as `SCM_RIGHTS` data attached
//! to the frame's first bytes. Frames are never merged or split: one `send`
//! is exactly one `recv`.

use crate::codec;
use crate::error::{Error, Result};
use crate::sys;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::mem::MaybeUninit;
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
/// left.send(&("hello", 42))?;
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
        write_header(&mut buf[..HEADER], len, fds.len());
        let res = send_frame(self.fd.as_fd(), &[&buf[..]], fds);
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
        write_header(&mut header, bytes.len() as u64, 0);
        send_frame(self.fd.as_fd(), &[&header, bytes], &[])
    }

    /// Receives one value, blocking until it arrives.
    ///
    /// # Errors
    /// [`Error::Eof`] when the peer closed its end; [`Error::Truncated`] when
    /// it died mid-message; [`Error::Decode`] when the bytes are not a `T`
    /// (the message is consumed); [`Error::MessageTooLarge`] or
    /// [`Error::BadFrame`] for a frame that breaks the protocol.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.with_frame(None, codec::decode)
    }

    /// Like [`recv`](Self::recv) but gives up with [`Error::Timeout`] if no
    /// message starts arriving within `timeout`. A message that has started
    /// arriving is always read to its end.
    ///
    /// # Errors
    /// As for [`recv`](Self::recv), plus [`Error::Timeout`].
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.with_frame(Some(sys::deadline_after(timeout)), codec::decode)
    }

    /// Receives one raw message.
    ///
    /// # Errors
    /// As for [`recv`](Self::recv), except that any bytes decode.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.with_frame(None, |b, _| Ok(b.to_vec()))
    }

    /// Like [`recv_bytes`](Self::recv_bytes) with a timeout.
    ///
    /// # Errors
    /// As for [`recv_timeout`](Self::recv_timeout).
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.with_frame(Some(sys::deadline_after(timeout)), |b, _| Ok(b.to_vec()))
    }

    /// Receives one raw message into `buf`, returning its length.
    ///
    /// # Errors
    /// [`Error::BufferTooShort`] carrying the whole message when it does not
    /// fit; otherwise as for [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.with_frame(None, |b, _| {
            if b.len() > buf.len() {
                return Err(Error::BufferTooShort {
                    message: b.to_vec(),
                    capacity: buf.len(),
                });
            }
            buf[..b.len()].copy_from_slice(b);
            Ok(b.len())
        })
    }

    /// Whether a message (or end of stream) is ready to be received, waiting
    /// up to `timeout` (`None` waits forever, `Some(ZERO)` does not wait).
    ///
    /// # Errors
    /// [`Error::WrongDirection`] on a write-only end; OS errors.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let r = self.lock_reader()?;
        if r.end > r.start || r.broken.is_some() {
            return Ok(true);
        }
        drop(r);
        Ok(sys::wait_readable(
            self.fd.as_fd(),
            timeout.and_then(sys::deadline_after),
        )?)
    }

    /// Closes the connection. Dropping it does the same.
    pub fn close(self) {}

    /// Receives one frame and hands its payload and descriptors to `f`.
    fn with_frame<R>(
        &self,
        deadline: Option<Option<Instant>>,
        f: impl FnOnce(&[u8], Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        let mut r = self.lock_reader()?;
        if let Some(why) = &r.broken {
            return Err(Error::BadFrame(format!(
                "connection unusable after an earlier error: {why}"
            )));
        }
        let max = self.max_message.load(Ordering::Relaxed);
        let res = read_frame(self.fd.as_fd(), &mut r, deadline, max);
        match res {
            Ok(Frame::Buffered { len, nfds }) => {
                let fds = take_fds(&mut r, nfds)?;
                let start = r.start + HEADER;
                let out = f(&r.buf[start..start + len], fds);
                r.start = start + len;
                if r.start == r.end {
                    r.start = 0;
                    r.end = 0;
                }
                out
            }
            Ok(Frame::Owned { payload, nfds }) => {
                let fds = take_fds(&mut r, nfds)?;
                f(&payload, fds)
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

enum Frame {
    Buffered { len: usize, nfds: usize },
    Owned { payload: Vec<u8>, nfds: usize },
}

fn write_header(h: &mut [u8], len: u64, nfds: usize) {
    h[..8].copy_from_slice(&len.to_le_bytes());
    h[8..12].copy_from_slice(&(nfds as u32).to_le_bytes());
}

/// Reads more bytes into the buffer. Returns false at end of stream.
fn fill(fd: BorrowedFd<'_>, r: &mut Reader) -> Result<bool> {
    if r.start > 0 && r.end == r.buf.len() {
        r.buf.copy_within(r.start..r.end, 0);
        r.end -= r.start;
        r.start = 0;
    }
    let end = r.end;
    let Reader { buf, fds, .. } = r;
    let n = sys::recv_msg(fd, as_uninit(&mut buf[end..]), fds, false)?;
    r.end += n;
    Ok(n > 0)
}

fn as_uninit(b: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: MaybeUninit<u8> has the layout of u8, and the callee (recvmsg)
    // only ever writes initialised bytes, so the slice stays initialised.
    #[allow(unsafe_code)]
    unsafe {
        &mut *(b as *mut [u8] as *mut [MaybeUninit<u8>])
    }
}

fn read_frame(
    fd: BorrowedFd<'_>,
    r: &mut Reader,
    deadline: Option<Option<Instant>>,
    max: u64,
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
    while r.end - r.start < HEADER {
        if !fill(fd, r)? {
            return Err(if r.end == r.start {
                Error::Eof
            } else {
                Error::Truncated
            });
        }
    }
    let h = &r.buf[r.start..r.start + HEADER];
    let len = u64::from_le_bytes(h[..8].try_into().unwrap());
    let nfds = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
    if len > max {
        return Err(Error::MessageTooLarge { size: len, max });
    }
    if nfds > MAX_FDS {
        return Err(Error::BadFrame(format!(
            "frame announces {nfds} descriptors (limit {MAX_FDS})"
        )));
    }
    let total = HEADER as u64 + len;
    if total <= r.buf.len() as u64 {
        let total = total as usize;
        if r.start + total > r.buf.len() {
            r.buf.copy_within(r.start..r.end, 0);
            r.end -= r.start;
            r.start = 0;
        }
        while r.end - r.start < total {
            if !fill(fd, r)? {
                return Err(Error::Truncated);
            }
        }
        return Ok(Frame::Buffered {
            len: len as usize,
            nfds,
        });
    }
    // A large frame: everything buffered belongs to it. Read the rest
    // straight into the payload vector.
    let len = usize::try_from(len).map_err(|_| Error::MessageTooLarge { size: len, max })?;
    let mut payload: Vec<u8> = Vec::with_capacity(len.min(EAGER_ALLOC as usize));
    payload.extend_from_slice(&r.buf[r.start + HEADER..r.end]);
    r.start = 0;
    r.end = 0;
    while payload.len() < len {
        if payload.capacity() == payload.len() {
            let grow = payload.len().min(len - payload.len());
            payload.reserve_exact(grow);
        }
        let want = (payload.capacity() - payload.len()).min(len - payload.len());
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
/// in batches of at most `SCM_MAX_FD`.
fn send_frame(sock: BorrowedFd<'_>, parts: &[&[u8]], fds: &[OwnedFd]) -> Result<()> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut batches = borrowed.chunks(sys::MAX_FDS_PER_MSG);
    let mut part = 0;
    let mut offset = 0;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent_total = 0;
    while sent_total < total {
        let batch = batches.next().unwrap_or(&[]);
        let more_batches = batches.len() > 0;
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len());
        if more_batches {
            // One byte per batch so that each batch rides on its own bytes.
            slices.push(IoSlice::new(&parts[part][offset..offset + 1]));
        } else {
            slices.push(IoSlice::new(&parts[part][offset..]));
            for p in &parts[part + 1..] {
                slices.push(IoSlice::new(p));
            }
        }
        let mut n = sys::send_msg(sock, &slices, batch)?;
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
        while part < parts.len() && offset == parts[part].len() && sent_total < total {
            part += 1;
            offset = 0;
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
        }
        Wire {
            fd: self.fd.as_fd(),
            readable: self.readable,
            writable: self.writable,
            max: self.max_message_size(),
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
        }
        let w = Wire::deserialize(d)?;
        let c = Connection::new(w.fd, w.readable, w.writable);
        c.set_max_message_size(w.max);
        Ok(c)
    }
}
