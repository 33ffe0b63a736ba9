//! Frames on the stream: headers, reading a frame (resumable after a
//! timeout) and writing one.
//!
//! A receive with a deadline waits for every read, not only the first, no
//! longer than its deadline. When the deadline passes in the middle of a
//! frame, nothing is lost: the bytes read so far stay in the [`Reader`] (a
//! frame that fits the read buffer stays in it; a larger one keeps its
//! partly filled payload in [`Reader::partial`]), and the next receive, with
//! or without a deadline, goes on from there.

use super::Framing;
use super::bulk::{self, Inbox, Taken};
use super::slot::{Got, SlotEnd};
use super::spin::Spin;
use crate::codec::le;
use crate::error::{Error, Result};
use crate::sys;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

pub(super) const HEADER: usize = 12;
/// Read buffer size; frames that fit are read with one syscall.
pub(super) const READ_BUF: usize = 64 * 1024;
/// The read buffer's size until a frame or a read needs more: one page,
/// so that a connection that only carries small messages (a child's
/// channel, most of all) never touches the other fifteen. It holds
/// whatever the pipe's slot carries.
const FIRST_BUF: usize = 4096;
/// Largest number of descriptors one message may carry: one batch of
/// `SCM_MAX_FD` per header byte.
pub(crate) const MAX_FDS: usize = HEADER * sys::MAX_FDS_PER_MSG;
/// A claimed length above this is not allocated up front but grown as the
/// bytes really arrive, so a lying header cannot force a huge allocation.
const EAGER_ALLOC: u64 = 64 << 20;

/// The receiving side's state, kept between receives.
pub(super) struct Reader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    pub(super) fds: VecDeque<OwnedFd>,
    /// A frame too large for `buf` whose payload is partly read: a receive
    /// whose deadline passed mid-frame leaves it for the next receive.
    partial: Option<Partial>,
    /// Set after a protocol error: the stream position is lost for good.
    pub(super) broken: Option<String>,
    /// Mappings of the shared buffers bulk messages arrive in.
    inbox: Inbox,
}

struct Partial {
    payload: Vec<u8>,
    len: usize,
    nfds: usize,
}

impl Reader {
    pub(super) fn new() -> Self {
        Reader {
            buf: vec![0u8; FIRST_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            partial: None,
            broken: None,
            inbox: Inbox::new(),
        }
    }

    /// Grows the read buffer to its full size, keeping the unread bytes
    /// (moved to its start).
    fn grow(&mut self) {
        let mut buf = vec![0u8; READ_BUF].into_boxed_slice();
        let unread = self.end - self.start;
        buf[..unread].copy_from_slice(&self.buf[self.start..self.end]);
        self.buf = buf;
        self.start = 0;
        self.end = unread;
    }

    /// Whether a whole frame (or a bad header) sits in the buffer, so that
    /// a receive will not touch the socket.
    pub(super) fn has_whole_frame(&self, framing: Framing) -> bool {
        if self.partial.is_some() {
            return false;
        }
        let avail = &self.buf[self.start..self.end];
        match parse_header(framing, avail) {
            Ok(Some((hdr, len, _))) => (avail.len() - hdr) as u64 >= len,
            Ok(None) => false,
            // A bad header is reported by the next receive at once.
            Err(_) => true,
        }
    }

    /// The payload of a [`Frame::Buffered`], which the next receive will
    /// not see again once [`consume`](Self::consume)d.
    pub(super) fn buffered(&self, hdr: usize, len: usize) -> &[u8] {
        &self.buf[self.start + hdr..self.start + hdr + len]
    }

    pub(super) fn consume(&mut self, hdr: usize, len: usize) {
        self.start += hdr + len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The `nfds` descriptors that came with the frame just read.
    pub(super) fn take_fds(&mut self, nfds: usize) -> Result<Vec<OwnedFd>> {
        if self.fds.len() < nfds {
            let why = format!(
                "frame announced {nfds} descriptors but {} arrived",
                self.fds.len()
            );
            self.broken = Some(why.clone());
            return Err(Error::BadFrame(why));
        }
        Ok(self.fds.drain(..nfds).collect())
    }
}

pub(super) enum Frame {
    /// In the read buffer: see [`Reader::buffered`].
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
    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
            Payload::InDest(_) => &[],
        }
    }

    pub(super) fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Borrowed(b) => b.to_vec(),
            Payload::Owned(v) => v,
            Payload::InDest(_) => Vec::new(),
        }
    }

    /// With a destination, a payload that fits is copied there.
    pub(super) fn into_dest<'a>(self, dest: Option<&mut [u8]>) -> Payload<'a>
    where
        Self: 'a,
    {
        match (self, dest) {
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
}

/// Writes the header of a frame of `len` payload bytes and `nfds`
/// descriptors so that it ends where `h` ends; returns where it starts.
pub(super) fn write_header(framing: Framing, h: &mut [u8; HEADER], len: u64, nfds: usize) -> usize {
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
            let len = le::u64_at(b, 0);
            let nfds = le::u32_at(b, 8) as usize;
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

/// One read from the socket, waiting no longer than `deadline` for bytes
/// to arrive ([`Error::Timeout`] then). `recv(nonblocking)` makes the read.
/// Returns 0 at end of stream.
///
/// An empty socket is first asked again without blocking for a while
/// (`spin`, see the `spin` module), within the deadline, and only then
/// waited on. Without `spin` it is asked once.
fn read_with(
    fd: BorrowedFd<'_>,
    deadline: Option<Instant>,
    spin: Option<&Spin>,
    mut recv: impl FnMut(bool) -> io::Result<usize>,
) -> Result<usize> {
    let mut attempt = || match recv(true) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        other => other.map(Some),
    };
    let spun = match spin {
        Some(spin) => spin.run(deadline, attempt)?,
        None => attempt()?,
    };
    if let Some(n) = spun {
        return Ok(n);
    }
    let Some(deadline) = deadline else {
        return Ok(recv(false)?);
    };
    loop {
        if !sys::wait_readable(fd, Some(deadline))? {
            return Err(Error::Timeout);
        }
        // Readable, yet another handle to the same socket may take the
        // bytes first: never block past the deadline.
        match recv(true) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Ok(other?),
        }
    }
}

/// [`read_with`] into `buf`.
fn read_some(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    deadline: Option<Instant>,
    spin: Option<&Spin>,
) -> Result<usize> {
    read_with(fd, deadline, spin, |nb| {
        sys::recv_msg_into(fd, buf, fds, nb)
    })
}

/// [`read_some`] into the free end of the read buffer (moving the
/// unread bytes to its start first when the free end is used up). Returns
/// false at end of stream.
fn fill(
    fd: BorrowedFd<'_>,
    r: &mut Reader,
    deadline: Option<Instant>,
    spin: Option<&Spin>,
) -> Result<bool> {
    if r.start > 0 && r.end == r.buf.len() {
        r.buf.copy_within(r.start..r.end, 0);
        r.end -= r.start;
        r.start = 0;
    }
    if r.end == r.buf.len() && r.buf.len() < READ_BUF {
        // Full from its start: the stream carries more than the first
        // buffer holds.
        r.grow();
    }
    let end = r.end;
    let Reader { buf, fds, .. } = r;
    let n = read_some(fd, &mut buf[end..], fds, deadline, spin)?;
    r.end += n;
    Ok(n > 0)
}

/// Fills the empty read buffer at a message boundary from the socket or,
/// while spinning, from the pipe's slot (see the `slot` module). Returns
/// false at end of stream.
fn fill_at_boundary(
    fd: BorrowedFd<'_>,
    r: &mut Reader,
    deadline: Option<Instant>,
    spin: &Spin,
    slot: &SlotEnd,
) -> Result<bool> {
    let mut rx = slot.receiver();
    let Reader { buf, fds, .. } = r;
    let mut recv = |b: &mut [u8]| sys::recv_msg_into(fd, b, fds, true);
    let mut readable = || sys::readable_now(fd);
    let got = match spin.run(deadline, || rx.attempt(buf, &mut recv, &mut readable))? {
        Some(got) => Some(got?),
        None => rx.disarm(buf).transpose()?,
    };
    drop(rx);
    match got {
        Some(Got::Frame(n) | Got::Socket(n)) => {
            r.end = n;
            Ok(n > 0)
        }
        // The spin is spent: ask the socket once more, then block.
        Some(Got::Dirty) | None => fill(fd, r, deadline, None),
    }
}

/// Reads the next frame, or goes on with the one an earlier receive left
/// unfinished. Every read waits no longer than `deadline`; when it passes,
/// the bytes read so far are kept in `r` for the next call. With a `slot`,
/// a small message may come through it instead of the socket.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_frame(
    fd: BorrowedFd<'_>,
    r: &mut Reader,
    framing: Framing,
    deadline: Option<Instant>,
    spin: &Spin,
    slot: Option<&SlotEnd>,
    max: u64,
    dest: Option<&mut [u8]>,
) -> Result<Frame> {
    if let Some(partial) = r.partial.take() {
        return finish_large(fd, r, partial, deadline, Some(spin));
    }
    if r.end == r.start {
        r.start = 0;
        r.end = 0;
        if let Some(slot) = slot.filter(|_| !spin.limit().is_zero()) {
            if !fill_at_boundary(fd, r, deadline, spin, slot)? {
                return Err(Error::Eof);
            }
        }
    }
    let (hdr, len, nfds) = loop {
        if let Some(h) = parse_header(framing, &r.buf[r.start..r.end])? {
            break h;
        }
        if !fill(fd, r, deadline, Some(spin))? {
            return Err(if r.end == r.start {
                Error::Eof
            } else {
                Error::Truncated
            });
        }
    };
    let is_bulk = nfds & bulk::FLAG != 0;
    if is_bulk {
        if nfds != bulk::FLAG | 1 || len != bulk::ENVELOPE as u64 {
            return Err(Error::BadFrame(format!(
                "malformed bulk envelope ({len} bytes, descriptor word {nfds:#x})"
            )));
        }
    } else if len > max {
        return Err(Error::MessageTooLarge { size: len, max });
    }
    let nfds = nfds & !bulk::FLAG;
    if nfds > MAX_FDS {
        return Err(Error::BadFrame(format!(
            "frame announces {nfds} descriptors (limit {MAX_FDS})"
        )));
    }
    let total = hdr as u64 + len;
    if total > r.buf.len() as u64 && total <= READ_BUF as u64 {
        r.grow();
    }
    if total <= r.buf.len() as u64 {
        let total = total as usize;
        if r.start + total > r.buf.len() {
            r.buf.copy_within(r.start..r.end, 0);
            r.end -= r.start;
            r.start = 0;
        }
        while r.end - r.start < total {
            if !fill(fd, r, deadline, Some(spin))? {
                return Err(Error::Truncated);
            }
        }
        if is_bulk {
            return take_bulk(r, hdr, max, dest);
        }
        return Ok(Frame::Buffered {
            hdr,
            len: len as usize,
            nfds,
        });
    }
    // A large frame: everything buffered belongs to it.
    let len = usize::try_from(len).map_err(|_| Error::MessageTooLarge { size: len, max })?;
    let buffered = &r.buf[r.start + hdr..r.end];
    if let Some(dest) = dest.filter(|d| d.len() >= len && deadline.is_none()) {
        // Straight into the caller's buffer. Without a deadline this read
        // ends only with the frame or an error, so nothing is left over.
        dest[..buffered.len()].copy_from_slice(buffered);
        let mut got = buffered.len();
        r.start = 0;
        r.end = 0;
        while got < len {
            let n = read_some(fd, &mut dest[got..len], &mut r.fds, None, Some(spin))?;
            if n == 0 {
                return Err(Error::Truncated);
            }
            got += n;
        }
        return Ok(Frame::Direct { len, nfds });
    }
    let mut payload: Vec<u8> = Vec::with_capacity(len.min(EAGER_ALLOC as usize));
    payload.extend_from_slice(buffered);
    r.start = 0;
    r.end = 0;
    finish_large(fd, r, Partial { payload, len, nfds }, deadline, Some(spin))
}

/// Takes the bulk message whose whole envelope frame (header of `hdr`
/// bytes, one descriptor) is at the start of the read buffer, consuming
/// it (see the `bulk` module).
fn take_bulk(r: &mut Reader, hdr: usize, max: u64, dest: Option<&mut [u8]>) -> Result<Frame> {
    let mut envelope = [0u8; bulk::ENVELOPE];
    envelope.copy_from_slice(r.buffered(hdr, bulk::ENVELOPE));
    r.consume(hdr, bulk::ENVELOPE);
    let fd = r.take_fds(1)?.pop().expect("one descriptor");
    Ok(match r.inbox.take(fd, &envelope, max, dest)? {
        Taken::Dest(len) => Frame::Direct { len, nfds: 0 },
        Taken::Owned(payload) => Frame::Owned { payload, nfds: 0 },
    })
}

/// Reads the rest of a large frame's payload; if `deadline` passes first,
/// leaves it in `r.partial`.
///
/// The payload is read with plain `recv` into the vector's uninitialised
/// spare capacity (no zero-filling). A frame's descriptors all ride on its
/// header bytes (one batch per byte, see [`send_frame`]), which were read
/// with `recvmsg`, so none belong to these bytes; any a peer attached here
/// anyway are closed by the kernel.
fn finish_large(
    fd: BorrowedFd<'_>,
    r: &mut Reader,
    mut p: Partial,
    deadline: Option<Instant>,
    spin: Option<&Spin>,
) -> Result<Frame> {
    while p.payload.len() < p.len {
        let left = p.len - p.payload.len();
        if p.payload.capacity() == p.payload.len() {
            // Grow by what has arrived so far (at most doubling), never to
            // the claimed length at once.
            p.payload.reserve_exact(p.payload.len().min(left).max(1));
        }
        let want = (p.payload.capacity() - p.payload.len()).min(left);
        let spare = &mut p.payload.spare_capacity_mut()[..want];
        match read_with(fd, deadline, spin, |nb| sys::recv_uninit(fd, spare, nb)) {
            Ok(0) => return Err(Error::Truncated),
            // SAFETY: recv initialised the first `n` spare bytes (n <= want).
            #[allow(unsafe_code)]
            Ok(n) => unsafe { p.payload.set_len(p.payload.len() + n) },
            Err(e) => {
                if e.is_timeout() {
                    r.partial = Some(p);
                }
                return Err(e);
            }
        }
    }
    Ok(Frame::Owned {
        payload: p.payload,
        nfds: p.nfds,
    })
}

/// Writes a whole frame made of `parts`, attaching `fds` to its first bytes
/// in batches of at most `SCM_MAX_FD`. Allocates nothing.
pub(super) fn send_frame(sock: BorrowedFd<'_>, parts: &[&[u8]], fds: &[impl AsFd]) -> Result<()> {
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
