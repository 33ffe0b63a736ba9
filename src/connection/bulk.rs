//! Bulk messages: a large frame through a reused shared buffer instead of
//! the socket's bytes.
//!
//! A stream socket copies a message twice in the kernel, in pieces of at
//! most a few dozen KiB, with a wake-up for each buffer's worth. A message
//! without handles whose payload is at least [`BULK_MIN`] bytes and below
//! [`SPILL_MIN`](crate::SPILL_MIN) instead costs one copy into memory that
//! is already mapped (and faulted in) on both sides, a small *envelope* on
//! the socket, and one copy out. Only connections with this crate's own
//! framing over a Unix socket use it (a [`Pipe`](super::Pipe) and the
//! channels of processes; never `Listener`/`Client`, whose peers speak
//! Python's format, nor a connection wrapped around a socket that cannot
//! carry descriptors).
//!
//! # Buffers
//!
//! Each sending end, in each process, keeps up to [`BUFFERS`] (four)
//! buffers, so that the sender fills one while the receiver empties
//! another. (With two, a sender that streams 1 MiB messages often found
//! none free and fell back to the socket: 1.28x a raw socketpair against
//! 1.61x with four, in the same conditions.) A buffer is an
//! anonymous memory file of `DATA_AT` bytes plus a power-of-two capacity,
//! sealed against growing, shrinking and further seals (so no mapping of
//! it can ever fault with `SIGBUS`), and mapped once. Its first cache line
//! holds a 64-bit state word: FREE, WRITING(pid), READY(generation) or
//! READING(pid) (the kind in the low two bits, the value above). A message
//! larger than every free buffer replaces one free buffer by a bigger one.
//! An end inherited through `fork` does not use its parent's buffers: the
//! child makes its own.
//!
//! # Protocol
//!
//! *Sender* (holding its end's send lock): pick a buffer that is FREE (or
//! WRITING/READING by a dead pid, which it resets to FREE), CAS FREE to
//! WRITING(own pid), copy the payload in, CAS WRITING to READY(next
//! generation) (release), and send the envelope: a frame whose header
//! carries the [`FLAG`] bit in its descriptor count, whose payload is the
//! generation and the length (16 bytes), and which carries the buffer's
//! descriptor. If no buffer is free, the message goes on the socket as any
//! other: a sender never waits for a buffer, so a slow, stopped or dead
//! receiver can hold it up no longer than the socket would. If the
//! envelope cannot be sent, the buffer goes back to FREE.
//!
//! *Receiver* (when it reads an envelope): look the descriptor up by
//! `(device, inode)` in a small cache of mappings of this end (mapping and
//! faulting a buffer in once, not per message); a new one must be a memory
//! file sealed against resizing, long enough for the length. CAS
//! READY(generation) to READING(own pid) (acquire), copy the payload into
//! private memory (the caller's buffer of `recv_bytes_into`, else a new
//! vector), then CAS READING(own pid) to FREE (release); the received
//! descriptor is closed (the cache holds the mapping, at most
//! `CACHE` of them). A word that is not READY with the envelope's
//! generation, or that changed while the receiver copied, makes that
//! message an [`Error::Decode`]; the stream stays usable. A mapping stays
//! cached after its sender dropped the buffer, until newer ones push it
//! out.
//!
//! *Order*: the envelope is an ordinary frame with a descriptor, sent
//! through the same path as every other socket send (see the `slot`
//! module), so it keeps its place among the sender's messages whichever
//! way each travels. Each envelope carries its own descriptor, so a
//! receiver needs no earlier message: ends that travel to other processes,
//! several senders and several receivers on one end just work.
//!
//! # Dead parties
//!
//! A receiver killed while READING leaves its pid in the word: the
//! sender, looking for a free buffer, finds that pid dead and resets the
//! word to FREE (that receiver had taken the message, as it would have
//! from a socket). A sender killed while WRITING, or after READY but
//! before its envelope, leaves a buffer of its own: no other process ever
//! writes to a sender's buffers, so nothing waits for it; the memory goes
//! with the last descriptor and mapping. A receiver that dies holding an
//! envelope it has read but not yet handled (in its read buffer) loses that
//! message, as it would lose socket bytes it had read; the buffer then
//! stays READY and the sender carries on with its other buffers, and when
//! all are held so, with the socket. (Reclaiming it is not possible: the
//! sender cannot tell such an envelope from one still in the socket, which
//! another receiver of the end may yet take.)
//!
//! # Safety
//!
//! The state word is only accessed atomically. The payload bytes are
//! written by the sender only while it holds the word in WRITING, and read
//! by a receiver only while it holds it in READING; both moves are CASes.
//! A hostile or broken peer may still write the buffer at any time, so no
//! reference into the shared bytes is ever made: they are copied with raw
//! pointer copies into private memory, which is then validated and
//! decoded. The files are sealed against resizing, and the length is
//! checked against the mapped size, so a copy never leaves the mapping.

#![allow(unsafe_code)]

use super::Framing;
use super::frame::{HEADER, write_header};
use crate::error::{Error, Result};
use crate::sys;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// From this payload size on (64 KiB), a message without handles on a
/// native connection goes through a shared buffer (below
/// [`SPILL_MIN`](crate::SPILL_MIN)).
///
/// Measured on 2 loaded cores, a stream of messages received with
/// `recv_bytes_into` (best of 5 runs, GB/s, socket against buffers): 32 KiB
/// 5.7-6.2 against 7.4, 64 KiB 5.7-6.0 against 11.7, 128 KiB 4.5 against
/// 12.5-16.2, 256 KiB 5.2 against 16.3-17.1, 1 MiB 5.7 against 18.5-19.9
/// (one run of each, disturbed by other load, gave 4-6 everywhere).
/// Below 64 KiB a frame also fits a receiver's read buffer (one system
/// call), and the gain is small.
pub(super) const BULK_MIN: usize = 64 << 10;
/// Payloads from this size on never use a buffer: `send` spills them, and
/// raw bytes this large go on the socket.
const BULK_END: usize = crate::codec::SPILL_MIN;
/// The bit in a native header's descriptor count that marks an envelope.
pub(super) const FLAG: usize = 1 << 31;
/// An envelope's payload: generation (`u64`), length (`u64`).
pub(super) const ENVELOPE: usize = 16;
/// Where a buffer's payload starts: after the state word's cache line.
const DATA_AT: usize = 64;
/// How many buffers a sending end keeps (see the module docs).
const BUFFERS: usize = 4;
/// How many mappings a receiving end keeps (the most recently used).
const CACHE: usize = 8;
/// The name the buffers carry in `/proc/<pid>/fd`.
const NAME: &std::ffi::CStr = c"multiproc-bulk";

const KIND: u64 = 0b11;
const FREE: u64 = 0;
const WRITING: u64 = 1;
const READY: u64 = 2;
const READING: u64 = 3;

fn word(kind: u64, value: u64) -> u64 {
    kind | (value << 2)
}

/// Whether the process `pid` is gone (a zombie counts as gone).
fn dead(pid: u64) -> bool {
    match u32::try_from(pid) {
        Ok(pid) => pid != 0 && !sys::is_alive(sys::Ident { pid, start: 0 }),
        Err(_) => true,
    }
}

fn me() -> u64 {
    u64::from(sys::self_ident().pid)
}

/// A memory file, sealed against resizing, mapped read-write.
struct Buffer {
    /// The sender's descriptor (a receiver keeps only the mapping).
    fd: Option<OwnedFd>,
    map: sys::Mapping,
}

impl Buffer {
    /// A new buffer for `cap` payload bytes, faulted in.
    fn new(cap: usize) -> std::io::Result<Buffer> {
        let fd = sys::memfd_create_sealable(NAME, DATA_AT + cap)?;
        sys::seal_size(fd.as_fd())?;
        let map = sys::Mapping::new(fd.as_fd(), DATA_AT + cap, true)?;
        Ok(Buffer { fd: Some(fd), map })
    }

    /// Maps a buffer received with an envelope: a memory file sealed
    /// against resizing (so the mapping cannot fault), at least one
    /// payload byte long. The descriptor is not kept.
    fn open(fd: BorrowedFd<'_>) -> std::io::Result<Buffer> {
        let len = sys::size_sealed_len(fd)?;
        if len <= DATA_AT {
            return Err(std::io::Error::other("shared buffer too small"));
        }
        // No sender makes a larger one; a hostile peer shall not make this
        // process map (and fault in) more.
        if len > DATA_AT + BULK_END {
            return Err(std::io::Error::other(format!(
                "shared buffer of {len} bytes is larger than any sender makes"
            )));
        }
        let map = sys::Mapping::new(fd, len, true)?;
        Ok(Buffer { fd: None, map })
    }

    fn cap(&self) -> usize {
        self.map.len() - DATA_AT
    }

    fn state(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page aligned, at least `DATA_AT` (64)
        // bytes long and lives as long as `self`; an `AtomicU64` is valid
        // for any bits, and the word is only ever accessed atomically (by
        // every party following the protocol; a hostile one can change its
        // value, never make it invalid).
        unsafe { &*self.map.as_ptr().cast::<AtomicU64>() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: `DATA_AT` is within the mapping (checked at creation).
        unsafe { self.map.as_ptr().add(DATA_AT) }
    }
}

/// A sending end's buffers (in this process).
pub(super) struct Outbox {
    inner: Mutex<Senders>,
    /// Whether the socket can carry descriptors (a Unix socket; a
    /// connection wrapped around another kind never uses buffers).
    unix: std::sync::OnceLock<bool>,
}

struct Senders {
    /// The process that made `bufs` (a forked child makes its own).
    pid: u64,
    next_gen: u64,
    bufs: Vec<Buffer>,
}

impl Outbox {
    pub(super) fn new() -> Outbox {
        Outbox {
            inner: Mutex::new(Senders {
                pid: 0,
                next_gen: 1,
                bufs: Vec::new(),
            }),
            unix: std::sync::OnceLock::new(),
        }
    }

    /// Whether `sock` is a Unix socket (asked once).
    pub(super) fn usable(&self, sock: BorrowedFd<'_>) -> bool {
        *self.unix.get_or_init(|| {
            rustix::net::getsockname(sock)
                .is_ok_and(|a| a.address_family() == rustix::net::AddressFamily::UNIX)
        })
    }

    /// Whether a frame of `total` bytes (header included) without
    /// descriptors may go through a buffer.
    pub(super) fn fits(total: usize) -> bool {
        (HEADER + BULK_MIN..HEADER + BULK_END).contains(&total)
    }

    /// Sends the frame made of `parts` (its first `HEADER` bytes are the
    /// header, `total` bytes in all) through a buffer: copies the payload
    /// in and has `send` write the envelope frame with the buffer's
    /// descriptor. `None` when no buffer is free (nothing was sent: use
    /// the socket).
    pub(super) fn send(
        &self,
        parts: &[&[u8]],
        total: usize,
        send: impl FnOnce(&[&[u8]], BorrowedFd<'_>) -> Result<()>,
    ) -> Option<Result<()>> {
        let len = total.checked_sub(HEADER)?;
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let pid = me();
        if s.pid != pid {
            // Inherited through fork: the parent keeps using these.
            s.bufs.clear();
            s.pid = pid;
        }
        let at = pick(&mut s, len, pid)?;
        let generation = s.next_gen;
        s.next_gen += 1;
        let buf = &s.bufs[at];
        let fd = buf.fd.as_ref()?;
        // Copy the payload: `parts` without the header's bytes.
        let mut skip = HEADER;
        let mut off = 0;
        for p in parts {
            let p = if skip >= p.len() {
                skip -= p.len();
                continue;
            } else {
                let rest = &p[skip..];
                skip = 0;
                rest
            };
            if off + p.len() > len {
                break;
            }
            // SAFETY: `off + p.len() <= len <= cap`, so the destination is
            // inside the mapping; it is shared memory, not a Rust object,
            // and this process holds it in WRITING (no party following the
            // protocol touches it); `p` is a private slice, not overlapping.
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), buf.data().add(off), p.len()) };
            off += p.len();
        }
        let ready = word(READY, generation);
        if off != len
            || buf
                .state()
                .compare_exchange(
                    word(WRITING, pid),
                    ready,
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            // Someone broke the protocol: give up on this buffer.
            s.bufs.swap_remove(at);
            return None;
        }
        let mut header = [0u8; HEADER];
        write_header(Framing::Native, &mut header, ENVELOPE as u64, FLAG | 1);
        let mut body = [0u8; ENVELOPE];
        body[..8].copy_from_slice(&generation.to_le_bytes());
        body[8..].copy_from_slice(&(len as u64).to_le_bytes());
        let res = send(&[&header, &body], fd.as_fd());
        if res.is_err() {
            let _ = buf.state().compare_exchange(
                ready,
                word(FREE, 0),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        Some(res)
    }
}

/// Picks a buffer of `s` for `len` bytes and moves it to WRITING(`pid`):
/// a free one big enough, else a free one replaced by a bigger one, else a
/// new one while there are fewer than [`BUFFERS`]. `None` when none is free
/// (or no memory file can be made).
fn pick(s: &mut Senders, len: usize, pid: u64) -> Option<usize> {
    let mut free_small = None;
    let mut chosen = None;
    // Look for a dead holder's buffer (a system call per buffer) only when
    // none is free and no new one may be made.
    for reclaim in [false, true] {
        if reclaim && (free_small.is_some() || s.bufs.len() < BUFFERS) {
            break;
        }
        for (i, b) in s.bufs.iter().enumerate() {
            let w = b.state().load(Ordering::Acquire);
            let free = match w & KIND {
                FREE => true,
                WRITING | READING if reclaim && dead(w >> 2) => b
                    .state()
                    .compare_exchange(w, word(FREE, 0), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok(),
                _ => false,
            };
            if free {
                if b.cap() >= len {
                    chosen = Some(i);
                    break;
                }
                free_small.get_or_insert(i);
            }
        }
        if chosen.is_some() {
            break;
        }
    }
    let at = match (chosen, free_small) {
        (Some(i), _) => i,
        (None, small) if small.is_some() || s.bufs.len() < BUFFERS => {
            let cap = len.max(BULK_MIN).next_power_of_two();
            let b = Buffer::new(cap).ok()?;
            match small {
                Some(i) => {
                    s.bufs[i] = b;
                    i
                }
                None => {
                    s.bufs.push(b);
                    s.bufs.len() - 1
                }
            }
        }
        _ => return None,
    };
    s.bufs[at]
        .state()
        .compare_exchange(
            word(FREE, 0),
            word(WRITING, pid),
            Ordering::Acquire,
            Ordering::Relaxed,
        )
        .is_ok()
        .then_some(at)
}

/// A receiving end's mappings of senders' buffers (in this process).
pub(super) struct Inbox {
    /// `(device, inode, buffer)`, oldest first.
    maps: Vec<(u64, u64, Buffer)>,
}

/// Where a received payload went.
pub(super) enum Taken {
    /// Into the caller's buffer: this many bytes.
    Dest(usize),
    Owned(Vec<u8>),
}

impl Inbox {
    pub(super) fn new() -> Inbox {
        Inbox { maps: Vec::new() }
    }

    /// Takes the payload an envelope names from the buffer `fd`: into
    /// `dest` when it fits, else into a new vector.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] beyond `max` (the buffer is handed back);
    /// [`Error::Decode`] when the
    /// descriptor is not a usable buffer, is too short, or its state is not
    /// the envelope's (stale, foreign, or changed while copying).
    pub(super) fn take(
        &mut self,
        fd: OwnedFd,
        envelope: &[u8],
        max: u64,
        dest: Option<&mut [u8]>,
    ) -> Result<Taken> {
        let bad = |why: String| Error::Decode(format!("bulk message refused: {why}"));
        let generation = crate::codec::le::u64_at(envelope, 0);
        let len = crate::codec::le::u64_at(envelope, 8);
        let (dev, ino) = sys::file_identity(fd.as_fd()).map_err(|e| bad(format!("fstat: {e}")))?;
        let at = match self.maps.iter().position(|m| m.0 == dev && m.1 == ino) {
            Some(at) => {
                // Most recently used last.
                let m = self.maps.remove(at);
                self.maps.push(m);
                self.maps.len() - 1
            }
            None => {
                let b = Buffer::open(fd.as_fd()).map_err(|e| bad(e.to_string()))?;
                if self.maps.len() >= CACHE {
                    self.maps.remove(0);
                }
                self.maps.push((dev, ino, b));
                self.maps.len() - 1
            }
        };
        let b = &self.maps[at].2;
        let len = match usize::try_from(len) {
            Ok(len) if len <= b.cap() => len,
            _ => {
                return Err(bad(format!(
                    "{len} bytes announced, the buffer holds {}",
                    b.cap()
                )));
            }
        };
        let pid = me();
        let reading = word(READING, pid);
        if let Err(w) = b.state().compare_exchange(
            word(READY, generation),
            reading,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            return Err(bad(format!(
                "buffer state {w:#x} is not the envelope's (generation {generation})"
            )));
        }
        if len as u64 > max {
            // Hand the buffer back: the sender may reuse it.
            b.state().store(word(FREE, 0), Ordering::Release);
            return Err(Error::MessageTooLarge {
                size: len as u64,
                max,
            });
        }
        let taken = match dest {
            Some(d) if d.len() >= len => {
                // SAFETY: `len <= cap`, so the source lies inside the
                // mapping; `d` is private memory of at least `len` bytes
                // that cannot overlap the mapping. The shared bytes are
                // copied as raw bytes, no reference to them is made.
                unsafe { std::ptr::copy_nonoverlapping(b.data(), d.as_mut_ptr(), len) };
                Taken::Dest(len)
            }
            _ => {
                let mut v: Vec<u8> = Vec::with_capacity(len);
                // SAFETY: as above, into `v`'s spare capacity (at least
                // `len` bytes); after the copy its first `len` bytes are
                // initialised.
                unsafe {
                    std::ptr::copy_nonoverlapping(b.data(), v.as_mut_ptr(), len);
                    v.set_len(len);
                }
                Taken::Owned(v)
            }
        };
        b.state()
            .compare_exchange(reading, word(FREE, 0), Ordering::Release, Ordering::Relaxed)
            .map_err(|w| bad(format!("buffer state changed to {w:#x} while it was read")))?;
        Ok(taken)
    }
}
