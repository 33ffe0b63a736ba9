//! The slot: a one-message mailbox per direction of a [`Pipe`](super::Pipe),
//! used only while a receiver spins, as a rendezvous.
//!
//! A round trip over the socket costs a `sendmsg` and a `recvmsg` per side
//! even when the receiver spins (see the `spin` module). A small message
//! handed over through memory while the receiver spins costs neither: the
//! receiver polls a word, the sender writes the message next to it.
//!
//! # Layout
//!
//! `Pipe::new()` and `Pipe::one_way()` create one memory file of two pages,
//! sealed against resizing and mapped by each end. Page `d` is direction
//! `d` (end 0 of a pair sends on page 0 and receives on page 1; end 1 the
//! reverse). A page holds a 64-bit state word at offset 0, the length of
//! the message at offset 8, and the message (a whole frame, header
//! included, at most [`CAPACITY`] bytes) from offset 64. An end that
//! travels to another process carries the memory file with it (two
//! descriptors per end). Connections made by a `Listener` or a `Client`
//! have no slot, nor has a pipe whose memory file could not be made (no
//! descriptor or memory left): it works the same over its socket.
//!
//! The state word holds a `kind` (IDLE, SPINNING, WRITING, FULL, TAKING),
//! the pid of whoever set that kind, `inflight` (socket sends under way),
//! `seq` (socket sends finished, mod 2^19), `dirty` (a socket send
//! finished since a receiver last found the socket empty), a generation
//! (counted up by each WRITING) and `off` (the slot is no longer used:
//! `inflight` overflowed).
//!
//! # Protocol
//!
//! *Receiver* (a receive at a message boundary with nothing buffered, while
//! the spin is on): unless the word shows no socket send under way and not
//! `dirty` (the socket is then still empty: no system call), read the
//! socket without blocking (bytes: take them, done, `dirty` stays set);
//! then CAS the word it read to SPINNING with `dirty` cleared (any change
//! in between, such as a socket send finishing, fails the CAS: start
//! over).
//! Then spin on the word without system calls: FULL → CAS it to TAKING,
//! copy the message out, store IDLE; `dirty` → leave (CAS back to IDLE)
//! and read the socket. When the spin budget runs out, CAS SPINNING back to
//! IDLE (a message found FULL then is taken; one being written is waited
//! for a few microseconds) and block on the socket as without a slot.
//! SPINNING is never left behind by a live receiver: every way out of the
//! spin goes through that CAS.
//!
//! *Sender* (a message that fits, without handles, while the sender's own
//! spin is on): if the word is SPINNING with no `inflight`, no `dirty` and
//! not `off`, CAS it to WRITING (own pid, next generation), copy the frame
//! in, CAS WRITING to FULL (release), then spin until the word moved on
//! from that FULL (a receiver took it). That is a rendezvous: a later send
//! of this thread is ordered after it. If it is not taken within
//! [`RENDEZVOUS`] (the receiver was preempted or killed), CAS FULL to IDLE
//! (which also counts a socket send in `inflight`) and send it on the
//! socket: no message is lost, and a send waits no longer than that.
//! Every other send (too big, with handles, nobody spinning) counts itself
//! in `inflight` (one CAS), writes the socket, then takes itself out of
//! `inflight`, counts up `seq` and sets `dirty` (one CAS).
//!
//! *Order*: a sender uses the slot only when the word shows SPINNING with
//! no socket send in flight and none finished since a receiver found the
//! socket empty; so every message sent earlier on the socket is already in
//! that receiver's hands. `dirty` is a flag, not a difference of
//! counters, so a receiver that keeps finding bytes on the socket (a
//! sender faster than it) never takes the socket for empty however many
//! sends it reads; `seq` only makes a send that finishes between a
//! receiver's read of the word and its CAS fail that CAS, and does not
//! wrap within that window (the socket's buffer holds far fewer than 2^19
//! messages). A sender preempted between writing and publishing while
//! 1,024 other messages of its own process pass through the slot could
//! be fooled by the generation. A receiver that sees `dirty` reads the
//! socket first. Messages of one thread keep their order whatever
//! way each travels (socket, slot, handles, large).
//!
//! *Dead parties*: a receiver killed while SPINNING leaves a stale word;
//! the next sender writes, waits [`RENDEZVOUS`], reclaims the message and
//! leaves IDLE behind (a new receiver may also overwrite SPINNING). A
//! message left WRITING by a writer that died is dropped (its `send` never
//! returned) and the word reset, once the writer's pid is dead (a zombie
//! counts as dead); a word left TAKING by a dead receiver is reset the same
//! way (that receiver had the message, as with a socket). A sender killed
//! during a socket send leaves `inflight` counted for good: the slot is
//! then not used again in that direction, the socket carries everything.
//! Pids are those of one pid namespace (true for every start method).
//!
//! *Memory safety*: the message bytes are written only by the party that
//! moved the word to WRITING and read only by the one that moved it from
//! FULL to TAKING; both moves are CASes on the same word, FULL is published
//! with release and taken with acquire, and nobody can move the word to
//! WRITING again before the taker stored IDLE and a receiver SPINNING. A
//! WRITING word is reset only when its writer is dead.

#![allow(unsafe_code)]

use super::frame::HEADER;
use crate::codec::le;
use crate::error::{Error, Result};
use crate::sys;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One direction: a page.
const PAGE: usize = 4096;
/// The memory file: two directions.
const FILE_LEN: usize = 2 * PAGE;
/// Where the message starts in a page.
const PAYLOAD_AT: usize = 64;
/// The largest frame (header included) that travels through the slot.
pub(super) const CAPACITY: usize = PAGE - PAYLOAD_AT;
/// How long a sender waits for a receiver to take its message before it
/// takes it back and sends it on the socket.
pub(super) const RENDEZVOUS: Duration = Duration::from_micros(30);
/// How long a receiver whose spin ended waits for a message being written
/// to it.
const WRITE_WAIT: Duration = Duration::from_micros(20);
/// A spinning receiver asks the socket whether it is readable (bytes of a
/// send still under way, or a hang-up) once in this many tries.
const SOCKET_EVERY: u32 = 32;

const KIND: u64 = 0b111;
const IDLE: u64 = 0;
const SPINNING: u64 = 1;
const WRITING: u64 = 2;
const FULL: u64 = 3;
const TAKING: u64 = 4;
const OFF: u64 = 1 << 3;
const INFLIGHT_SHIFT: u32 = 4;
const INFLIGHT_ONE: u64 = 1 << INFLIGHT_SHIFT;
const INFLIGHT: u64 = ((1 << 8) - 1) << INFLIGHT_SHIFT;
/// Set by every socket send that finishes, cleared by a receiver that
/// found the socket empty when it starts to spin.
const DIRTY: u64 = 1 << 12;
/// Socket sends finished (mod 2^19).
const SEQ_SHIFT: u32 = 13;
const SEQ: u64 = ((1 << 19) - 1) << SEQ_SHIFT;
const GEN_SHIFT: u32 = 32;
const GEN: u64 = ((1 << 10) - 1) << GEN_SHIFT;
/// Pids are below 2^22 (`PID_MAX_LIMIT`).
const PID_SHIFT: u32 = 42;
const PID: u64 = !0 << PID_SHIFT;

fn kind(w: u64) -> u64 {
    w & KIND
}

/// Whether a socket send finished since a receiver last found the socket
/// empty.
fn dirty(w: u64) -> bool {
    w & DIRTY != 0
}

/// `w` marked drained: no socket send finished since.
fn drained(w: u64) -> u64 {
    w & !DIRTY
}

fn pid(w: u64) -> u32 {
    (w >> PID_SHIFT) as u32
}

/// `w` with its kind and pid replaced.
fn with_kind(w: u64, k: u64, who: u32) -> u64 {
    (w & !(KIND | PID)) | k | (u64::from(who) << PID_SHIFT)
}

/// `w` with one more socket send in flight, or `off` when the count is
/// full; and whether it was counted.
fn plus_inflight(w: u64) -> (u64, bool) {
    if w & OFF != 0 {
        (w, false)
    } else if w & INFLIGHT == INFLIGHT {
        (w | OFF, false)
    } else {
        (w + INFLIGHT_ONE, true)
    }
}

/// This process's pid (cached).
fn me() -> u32 {
    sys::self_ident().pid
}

/// Whether the process `pid` is gone (a zombie counts as gone).
fn dead(pid: u32) -> bool {
    pid != 0 && !sys::is_alive(sys::Ident { pid, start: 0 })
}

/// The shared memory file and its mapping.
struct Shared {
    fd: OwnedFd,
    map: sys::Mapping,
}

/// One end's view of a pipe's slot: it sends on page `side` and receives on
/// the other.
#[derive(Clone)]
pub(super) struct SlotEnd {
    shared: Arc<Shared>,
    side: u8,
}

/// One direction of the slot.
struct Dir<'a> {
    word: &'a AtomicU64,
    len: &'a AtomicU64,
    payload: *mut u8,
}

impl SlotEnd {
    /// A new slot for a pair of ends: `(end 0, end 1)`.
    pub(super) fn pair() -> io::Result<(SlotEnd, SlotEnd)> {
        const NAME: &CStr = c"multiproc-pipe-slot";
        let fd = sys::memfd_create_sealable(NAME, FILE_LEN)?;
        sys::seal_size(fd.as_fd())?;
        let map = sys::Mapping::new(fd.as_fd(), FILE_LEN, true)?;
        let shared = Arc::new(Shared { fd, map });
        Ok((
            SlotEnd {
                shared: shared.clone(),
                side: 0,
            },
            SlotEnd { shared, side: 1 },
        ))
    }

    /// An end received from another process: checks the file (a memory
    /// file of the right size, sealed against resizing) and maps it.
    pub(super) fn from_fd(fd: OwnedFd, side: u8) -> io::Result<SlotEnd> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        if side > 1 {
            return Err(bad(format!("pipe slot side {side}")));
        }
        let len = sys::size_sealed_len(fd.as_fd())?;
        if len != FILE_LEN {
            return Err(bad(format!("pipe slot of {len} bytes, not {FILE_LEN}")));
        }
        let map = sys::Mapping::new(fd.as_fd(), FILE_LEN, true)?;
        Ok(SlotEnd {
            shared: Arc::new(Shared { fd, map }),
            side,
        })
    }

    /// The memory file (to send this end to another process).
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.shared.fd.as_fd()
    }

    /// Which page this end sends on.
    pub(super) fn side(&self) -> u8 {
        self.side
    }

    fn dir(&self, page: u8) -> Dir<'_> {
        let base = self
            .shared
            .map
            .as_ptr()
            .wrapping_add(usize::from(page) * PAGE);
        // SAFETY: the mapping is FILE_LEN bytes long, page aligned, and
        // lives as long as `self.shared` (borrowed for 'a); `page` is 0 or
        // 1, so the two words at `base` and `base + 8` lie inside it, are
        // 8-aligned and are only ever accessed atomically, by every party
        // (this module is the only code that touches the mapping). The file
        // is sealed against shrinking, so the pages stay backed.
        unsafe {
            Dir {
                word: AtomicU64::from_ptr(base.cast()),
                len: AtomicU64::from_ptr(base.add(8).cast()),
                payload: base.add(PAYLOAD_AT),
            }
        }
    }

    /// A receiver on this end's incoming direction.
    pub(super) fn receiver(&self) -> Rx<'_> {
        Rx {
            dir: self.dir(1 - self.side),
            armed: false,
            me: me(),
            tries: 0,
        }
    }

    /// Tries to hand the frame made of `parts` (`total` bytes, at most
    /// [`CAPACITY`]) to a spinning receiver. `Ok(None)`: it was taken.
    /// Otherwise the caller sends it on the socket, holding the returned
    /// guard meanwhile (it counts the send in `inflight`).
    pub(super) fn try_put(&self, parts: &[&[u8]], total: usize) -> SocketSend<'_> {
        let dir = self.dir(self.side);
        let w = dir.word.load(Ordering::Relaxed);
        if total > CAPACITY || kind(w) != SPINNING || dirty(w) || w & (OFF | INFLIGHT) != 0 {
            return SocketSend::Socket(self.socket_send());
        }
        let me = me();
        let generation = (w & GEN).wrapping_add(1 << GEN_SHIFT) & GEN;
        let writing = with_kind((w & !GEN) | generation, WRITING, me);
        if dir
            .word
            .compare_exchange(w, writing, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return SocketSend::Socket(self.socket_send());
        }
        let mut at = 0;
        for p in parts {
            // SAFETY: the word is WRITING with our pid and generation, set
            // by the CAS above from SPINNING: no other party writes or reads
            // the payload until we publish FULL (see the module docs), and
            // `at + p.len() <= total <= CAPACITY` keeps the copy inside the
            // page. `p` is ordinary memory of this process, disjoint from
            // the mapping.
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), dir.payload.add(at), p.len()) };
            at += p.len();
        }
        dir.len.store(total as u64, Ordering::Relaxed);
        let mine = |x: u64| x & (KIND | PID | GEN) == with_kind(generation, FULL, me);
        // Publish: WRITING -> FULL, unless a receiver reset the word
        // (which it does only to a dead writer, so this cannot fail while
        // we live; stay safe anyway).
        let mut x = dir.word.load(Ordering::Relaxed);
        loop {
            if x & (KIND | PID | GEN) != with_kind(generation, WRITING, me) {
                return SocketSend::Socket(self.socket_send());
            }
            match dir.word.compare_exchange_weak(
                x,
                with_kind(x, FULL, me),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => x = now,
            }
        }
        // The rendezvous: wait until a receiver moved the word on.
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            let x = dir.word.load(Ordering::Acquire);
            if !mine(x) {
                return SocketSend::Taken;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins % 64 == 0 && started.elapsed() >= RENDEZVOUS {
                break;
            }
        }
        // Not taken in time: take it back, counting the socket send.
        let mut x = dir.word.load(Ordering::Relaxed);
        loop {
            if !mine(x) {
                return SocketSend::Taken;
            }
            let (next, counted) = plus_inflight(with_kind(x, IDLE, 0));
            match dir
                .word
                .compare_exchange_weak(x, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return SocketSend::Socket(SocketGuard {
                        word: dir.word,
                        counted,
                    });
                }
                Err(now) => x = now,
            }
        }
    }

    /// Counts a socket send in this end's outgoing direction.
    pub(super) fn socket_send(&self) -> SocketGuard<'_> {
        let word = self.dir(self.side).word;
        let mut counted = false;
        let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            let (next, c) = plus_inflight(w);
            counted = c;
            Some(next)
        });
        SocketGuard { word, counted }
    }
}

/// What became of a send offered to the slot.
pub(super) enum SocketSend<'a> {
    /// A receiver took the message.
    Taken,
    /// Send it on the socket while holding this.
    Socket(SocketGuard<'a>),
}

/// A socket send counted in `inflight`: dropping it (after the send, also a
/// failed one) takes it out and sets `dirty`.
pub(super) struct SocketGuard<'a> {
    word: &'a AtomicU64,
    counted: bool,
}

impl Drop for SocketGuard<'_> {
    fn drop(&mut self) {
        let counted = self.counted;
        // Release: a receiver that sees `dirty` (acquire) and then reads
        // the socket finds these bytes.
        let _ = self
            .word
            .fetch_update(Ordering::Release, Ordering::Relaxed, |w| {
                let w = if counted && w & INFLIGHT != 0 {
                    w - INFLIGHT_ONE
                } else {
                    w
                };
                Some((w & !SEQ) | ((w & SEQ).wrapping_add(1 << SEQ_SHIFT) & SEQ) | DIRTY)
            });
    }
}

/// What a receiver's spin on the slot found.
pub(super) enum Got {
    /// A whole frame of this many bytes, copied to the start of the buffer.
    Frame(usize),
    /// This many bytes read from the socket (0: end of stream).
    Socket(usize),
    /// A socket send finished: read the socket.
    Dirty,
}

/// A receiver spinning on its incoming direction (see the module docs).
/// Dropping it leaves SPINNING if it still holds it.
pub(super) struct Rx<'a> {
    dir: Dir<'a>,
    armed: bool,
    me: u32,
    tries: u32,
}

impl Rx<'_> {
    /// One try of the spin: `Some` when the receive should stop spinning.
    /// `recv` reads the socket without blocking into the buffer it is
    /// given, `readable` tells whether the socket has bytes or hung up;
    /// `buf` receives a frame from the slot.
    pub(super) fn attempt(
        &mut self,
        buf: &mut [u8],
        recv: &mut impl FnMut(&mut [u8]) -> io::Result<usize>,
        readable: &mut impl FnMut() -> io::Result<bool>,
    ) -> io::Result<Option<Result<Got>>> {
        let w = self.dir.word.load(Ordering::Acquire);
        if self.armed {
            self.tries = self.tries.wrapping_add(1);
            let leave = dirty(w) || (self.tries % SOCKET_EVERY == 0 && readable()?);
            return Ok(match kind(w) {
                FULL => self.take(w, buf),
                // A socket send finished, or one under way already put
                // bytes there, or the peer hung up: read the socket.
                SPINNING if leave => match self.disarm(buf) {
                    Some(frame) => Some(frame),
                    None => Some(Ok(Got::Dirty)),
                },
                SPINNING | WRITING => None,
                _ => {
                    // Another receiver moved the word on: arm again.
                    self.armed = false;
                    None
                }
            });
        }
        match kind(w) {
            FULL => return Ok(self.take(w, buf)),
            WRITING | TAKING => return Ok(None),
            _ => {}
        }
        // No socket send finished or under way since a receiver found the
        // socket empty: it still is, spin at once. Otherwise drain first.
        if w & (OFF | INFLIGHT) != 0 || dirty(w) {
            match recv(buf) {
                Ok(n) => return Ok(Some(Ok(Got::Socket(n)))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // Any send finishing since `w` was read changes `SEQ` (or
        // `INFLIGHT`) and fails this CAS.
        if w & OFF == 0
            && self
                .dir
                .word
                .compare_exchange(
                    w,
                    drained(with_kind(w, SPINNING, self.me)),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.armed = true;
        }
        Ok(None)
    }

    /// Takes the FULL message seen in `w` into `buf`; `None` when another
    /// party moved the word first.
    fn take(&mut self, mut w: u64, buf: &mut [u8]) -> Option<Result<Got>> {
        loop {
            if kind(w) != FULL {
                self.armed = false;
                return None;
            }
            match self.dir.word.compare_exchange_weak(
                w,
                with_kind(w, TAKING, self.me),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        self.armed = false;
        let len = self.dir.len.load(Ordering::Relaxed);
        let out = match usize::try_from(len) {
            Ok(n) if (HEADER..=CAPACITY.min(buf.len())).contains(&n) => {
                // SAFETY: the word is TAKING with our pid, moved there by
                // the CAS above from FULL (acquire, pairing with the
                // writer's release of FULL): the writer finished and nobody
                // writes the payload until we store IDLE (see the module
                // docs). `n <= CAPACITY` keeps the copy inside the page and
                // `n <= buf.len()` inside `buf`, which is this process's
                // own memory.
                unsafe { std::ptr::copy_nonoverlapping(self.dir.payload, buf.as_mut_ptr(), n) };
                check_frame(&buf[..n]).map(|()| Got::Frame(n))
            }
            _ => Err(Error::BadFrame(format!("pipe slot message of {len} bytes"))),
        };
        let _ = self
            .dir
            .word
            .fetch_update(Ordering::Release, Ordering::Relaxed, |x| {
                Some(with_kind(x, IDLE, 0))
            });
        Some(out)
    }

    /// Leaves SPINNING (the spin is over). A message found FULL then is
    /// taken into `buf`; one being written to us is waited for a little.
    pub(super) fn disarm(&mut self, buf: &mut [u8]) -> Option<Result<Got>> {
        let mut waited: Option<Instant> = None;
        loop {
            let w = self.dir.word.load(Ordering::Acquire);
            match kind(w) {
                SPINNING if self.armed => {
                    if pid(w) != self.me {
                        // Another receiver spins now.
                        self.armed = false;
                        return None;
                    }
                    if self
                        .dir
                        .word
                        .compare_exchange_weak(
                            w,
                            with_kind(w, IDLE, 0),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        self.armed = false;
                        return None;
                    }
                }
                FULL => return self.take(w, buf),
                WRITING if self.armed => {
                    let t = *waited.get_or_insert_with(Instant::now);
                    if t.elapsed() >= WRITE_WAIT {
                        // Not ours any more: its writer publishes it and
                        // takes it back to the socket, or it is dead.
                        self.armed = false;
                        self.reset_if_dead(w);
                        return None;
                    }
                    std::hint::spin_loop();
                }
                WRITING | TAKING => {
                    self.armed = false;
                    self.reset_if_dead(w);
                    return None;
                }
                _ => {
                    self.armed = false;
                    return None;
                }
            }
        }
    }

    /// Resets a WRITING or TAKING word whose owner is dead.
    fn reset_if_dead(&self, w: u64) {
        if matches!(kind(w), WRITING | TAKING) && dead(pid(w)) {
            let _ = self.dir.word.compare_exchange(
                w,
                with_kind(w, IDLE, 0),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

impl Drop for Rx<'_> {
    fn drop(&mut self) {
        if self.armed {
            let me = self.me;
            let _ = self
                .dir
                .word
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    (kind(w) == SPINNING && pid(w) == me).then(|| with_kind(w, IDLE, 0))
                });
        }
    }
}

/// Checks a frame taken from the slot: a native header announcing exactly
/// the bytes that follow and no descriptors.
fn check_frame(b: &[u8]) -> Result<()> {
    let len = le::u64_at(b, 0);
    let nfds = le::u32_at(b, 8);
    if len != (b.len() - HEADER) as u64 || nfds != 0 {
        return Err(Error::BadFrame(format!(
            "pipe slot frame announces {len} bytes and {nfds} descriptors in {} bytes",
            b.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn would_block(_: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn never() -> io::Result<bool> {
        Ok(false)
    }

    /// A receiver of `b` that found nothing and now spins (SPINNING).
    fn spinning<'a>(b: &'a SlotEnd, buf: &mut [u8]) -> Rx<'a> {
        let mut rx = b.receiver();
        assert!(
            rx.attempt(buf, &mut would_block, &mut never)
                .unwrap()
                .is_none()
        );
        rx
    }

    #[test]
    fn nobody_spinning_means_the_socket() {
        let (a, _b) = SlotEnd::pair().unwrap();
        let f = frame(b"hi");
        assert!(matches!(a.try_put(&[&f], f.len()), SocketSend::Socket(_)));
        // The finished socket send left `dirty` behind.
        assert!(dirty(a.dir(0).word.load(Ordering::Relaxed)));
    }

    #[test]
    fn any_number_of_socket_sends_leaves_the_socket_dirty() {
        // A receiver that keeps reading bytes never clears `dirty`; the
        // sends it has not read yet must keep the sender off the slot
        // whatever their number (a counter compared modulo its width
        // would read clean again after a full turn).
        let (a, b) = SlotEnd::pair().unwrap();
        let mut buf = vec![0u8; 4096];
        drop(spinning(&b, &mut buf));
        for n in 1..=(1 << 11) {
            drop(a.socket_send());
            assert!(dirty(a.dir(0).word.load(Ordering::Relaxed)), "after {n}");
        }
    }

    #[test]
    fn a_spinning_receiver_takes_the_message() {
        let (a, b) = SlotEnd::pair().unwrap();
        let mut buf = vec![0u8; 4096];
        let mut rx = spinning(&b, &mut buf);
        assert!(rx.armed);
        let f = frame(b"hello");
        std::thread::scope(|s| {
            // On a loaded machine the receiver may miss a rendezvous: the
            // sender then takes the message back (and the receiver sees
            // `dirty`); offer it again until it is taken.
            let t = s.spawn(|| {
                (0..5_000).any(|_| {
                    let taken =
                        matches!(a.try_put(&[&f[..4], &f[4..]], f.len()), SocketSend::Taken);
                    if !taken {
                        // Let the receiver see `dirty` and spin again.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    taken
                })
            });
            let got = loop {
                match rx.attempt(&mut buf, &mut would_block, &mut never).unwrap() {
                    Some(Ok(Got::Dirty)) | None => {}
                    Some(g) => break g.unwrap(),
                }
            };
            assert!(matches!(got, Got::Frame(n) if buf[..n] == f[..]));
            assert!(t.join().unwrap());
        });
        assert_eq!(kind(b.dir(0).word.load(Ordering::Relaxed)), IDLE);
    }

    #[test]
    fn an_untaken_message_goes_back_to_the_socket() {
        let (a, b) = SlotEnd::pair().unwrap();
        let mut buf = vec![0u8; 4096];
        let rx = spinning(&b, &mut buf);
        std::mem::forget(rx); // a receiver that stopped spinning for good
        let f = frame(b"x");
        assert!(matches!(a.try_put(&[&f], f.len()), SocketSend::Socket(_)));
        let w = a.dir(0).word.load(Ordering::Relaxed);
        assert_eq!(kind(w), IDLE);
        assert_eq!(w & INFLIGHT, 0);
        assert!(dirty(w));
    }

    #[test]
    fn dirty_sends_the_receiver_to_the_socket_and_never_leaves_spinning() {
        let (a, b) = SlotEnd::pair().unwrap();
        let mut buf = vec![0u8; 4096];
        let mut rx = spinning(&b, &mut buf);
        drop(a.socket_send());
        let got = rx
            .attempt(&mut buf, &mut would_block, &mut never)
            .unwrap()
            .unwrap();
        assert!(matches!(got, Ok(Got::Dirty)));
        assert_eq!(kind(a.dir(0).word.load(Ordering::Relaxed)), IDLE);
        // A spinning receiver dropped leaves IDLE.
        let rx = spinning(&b, &mut buf);
        assert!(rx.armed);
        drop(rx);
        assert_eq!(kind(a.dir(0).word.load(Ordering::Relaxed)), IDLE);
    }

    #[test]
    fn a_bad_length_is_an_error_not_a_copy() {
        let (_a, b) = SlotEnd::pair().unwrap();
        let d = b.dir(0);
        d.len.store(1 << 40, Ordering::Relaxed);
        d.word.store(with_kind(0, FULL, 1), Ordering::Relaxed);
        let mut rx = b.receiver();
        let mut buf = vec![0u8; 4096];
        let got = rx
            .attempt(&mut buf, &mut would_block, &mut never)
            .unwrap()
            .unwrap();
        assert!(matches!(got, Err(Error::BadFrame(_))));
        assert_eq!(kind(d.word.load(Ordering::Relaxed)), IDLE);
    }
}
