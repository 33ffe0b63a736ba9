//! The shared state and the byte ring behind every queue, and the put/get
//! protocol on them. See the module docs of `queue` and `docs/design.md`
//! (section "Queues") for the protocol; the comments here argue the details.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::shm::segment::{Shared, ShmLayout};
use crate::sync::raw::{self, Acquired, RawLock, SLICE};
use crate::sync::shim::{self, futex_wait, futex_wake_all};
use crate::sync::shim::{AtomicU32, AtomicU64, Ordering, fence};
use crate::sys;
use std::collections::VecDeque;
use std::ffi::CStr;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Instant;

/// Size of a record header: chunk length (`u32`), flags and descriptor
/// count (`u32`), item sequence number (`u64`), item total length (`u64`).
pub(crate) const HDR: u64 = 24;
/// The record starts an item.
const F_FIRST: u32 = 1;
/// The record ends an item.
const F_LAST: u32 = 2;
/// The item has descriptors on the queue's socket.
const F_FDS: u32 = 4;
/// Smallest ring accepted.
pub(crate) const MIN_RING: u64 = 64;
/// Largest ring accepted (chunk lengths are `u32`).
pub(crate) const MAX_RING: u64 = 1 << 30;
/// Largest number of descriptors in one item.
pub(crate) const MAX_ITEM_FDS: usize = 16 * sys::MAX_FDS_PER_MSG;
/// Capacity reserved up front for a streamed item, whatever its header claims.
const MAX_RESERVE: u64 = 256 << 20;
/// Busy-wait rounds (spin, then yield) before sleeping on a futex.
#[cfg(not(all(loom, test)))]
const SPIN_ROUNDS: u32 = 40;
#[cfg(not(all(loom, test)))]
const YIELD_ROUNDS: u32 = 60;
// Under the model checker: one yield, then straight to the futex protocol
// (which is what the models check; more rounds only multiply the states).
#[cfg(all(loom, test))]
const SPIN_ROUNDS: u32 = 0;
#[cfg(all(loom, test))]
const YIELD_ROUNDS: u32 = 1;

/// The shared state of a queue, one segment per queue. Cache-line groups:
/// configuration, producers, consumers, data futex, space futex, others.
#[repr(C)]
#[cfg_attr(all(loom, test), derive(Default))]
pub(crate) struct QueueState {
    /// Ring size in bytes (multiple of 8), fixed at creation.
    cap: AtomicU64,
    /// Most items in the queue; 0 for no limit. Fixed at creation.
    maxsize: AtomicU64,
    /// 1 for a `JoinableQueue` (puts count unfinished tasks).
    joinable: AtomicU64,
    _c: [u64; 5],

    /// Serializes producers; the holder owns `tail` and `next_seq`.
    put_lock: RawLock,
    /// Bytes ever published (Release after the bytes are written).
    tail: AtomicU64,
    /// Items whose first record was published.
    items_in: AtomicU64,
    /// Sequence number of the next item.
    next_seq: AtomicU64,
    _p: [u64; 3],

    /// Serializes consumers; the holder owns `head` and `fd_claim`.
    get_lock: RawLock,
    /// Bytes ever consumed (Release after the bytes are copied out).
    head: AtomicU64,
    /// Items whose first record was taken.
    items_out: AtomicU64,
    /// 1 + the sequence number of the last item whose descriptors a
    /// consumer started to take from the socket.
    fd_claim: AtomicU64,
    _g: [u64; 3],

    /// Bumped when data is published and a consumer may sleep.
    data_seq: AtomicU32,
    get_waiters: AtomicU32,
    _d: [u64; 7],

    /// Bumped when space or an item slot frees and a producer may sleep.
    space_seq: AtomicU32,
    put_waiters: AtomicU32,
    _s: [u64; 7],

    /// `JoinableQueue`: items put and not yet marked done.
    unfinished: AtomicU64,
    join_seq: AtomicU32,
    join_waiters: AtomicU32,
    /// Set by `wait` before it polls the eventfd; a producer that clears it
    /// signals the eventfd.
    armed: AtomicU32,
    _pad: u32,
}

// SAFETY: `#[repr(C)]`, atomics and plain integers only (every bit pattern
// is valid, all zeros is an empty unlocked queue), align 8; the integer
// padding is never written after creation. (In loom model builds the
// atomics are the model checker's and no segment is ever made: the models
// keep the state in ordinary memory, see `ring_loom.rs`.)
unsafe impl ShmLayout for QueueState {
    const KIND: u32 = 16;
    const NAME: &'static CStr = c"multiproc-queue";
}

#[cfg(not(all(loom, test)))]
const _: () = assert!(std::mem::size_of::<QueueState>() == 6 * 64 - 40);

/// Why a put did not happen.
pub(crate) enum PutFail {
    /// No room (or item slot) before the deadline.
    Full,
    /// Anything else.
    Err(Error),
}

/// Why a get returned no item.
pub(crate) enum GetFail {
    /// Nothing arrived before the deadline.
    Empty,
    /// Anything else; the item concerned (if any) was consumed.
    Err(Error),
}

fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Releases a lock when dropped.
struct Held<'a>(&'a RawLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// Takes `lock`, spinning and yielding briefly before sleeping (the holder
/// usually releases within a microsecond).
fn take(lock: &RawLock, deadline: Option<Instant>) -> Option<Held<'_>> {
    if lock.try_lock_fast() {
        return Some(Held(lock));
    }
    for round in 0..SPIN_ROUNDS + YIELD_ROUNDS {
        if !lock.is_locked() && lock.try_lock_fast() {
            return Some(Held(lock));
        }
        backoff(round);
    }
    if expired(deadline) {
        // A no-wait call still rides out a short hold (above), but not a
        // holder that waits for room or data; a dead holder is taken over.
        return lock.try_lock().map(|_| Held(lock));
    }
    match lock.lock(deadline)? {
        Acquired::Clean => {}
        // The state is consistent at every instant a holder can die (see the
        // module docs), so there is nothing to repair.
        Acquired::OwnerDied => log::debug!("queue lock taken over from a dead process"),
    }
    Some(Held(lock))
}

fn backoff(round: u32) {
    if round < SPIN_ROUNDS {
        for _ in 0..16 {
            shim::spin_loop();
        }
    } else {
        shim::yield_now();
    }
}

/// Waits a little for `ready`: a spin or yield while `round` is small, then
/// a futex sleep on `word` of at most one [`SLICE`] (and not past `until`).
/// The caller re-checks its condition after each call.
fn pause(
    word: &AtomicU32,
    waiters: &AtomicU32,
    ready: impl Fn() -> bool,
    until: Option<Instant>,
    round: &mut u32,
) {
    if *round < SPIN_ROUNDS + YIELD_ROUNDS {
        backoff(*round);
        *round += 1;
        return;
    }
    waiters.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let seq = word.load(Ordering::Acquire);
    if !ready() {
        let slice = Instant::now() + SLICE;
        let until = match until {
            Some(d) if d < slice => d,
            _ => slice,
        };
        futex_wait(word, seq, Some(until));
    }
    waiters.fetch_sub(1, Ordering::SeqCst);
}

/// The deadline for one wait on the consumer lock while this process holds
/// it: at most a slice, see [`Core::take_get`]. (Under the model checker no
/// get has a deadline, so nothing is ever parked: wait as asked.)
#[cfg(not(all(loom, test)))]
fn park_slice(deadline: Option<Instant>) -> Option<Instant> {
    let slice = Instant::now() + SLICE;
    Some(deadline.map_or(slice, |d| d.min(slice)))
}

#[cfg(all(loom, test))]
fn park_slice(deadline: Option<Instant>) -> Option<Instant> {
    deadline
}

/// Wakes the sleepers on `word` if there may be any. Called after the
/// state they wait for was published; the SeqCst fence pairs with the one in
/// [`pause`] so that either the sleeper sees the new state or we see it.
#[inline]
fn notify(word: &AtomicU32, waiters: &AtomicU32) {
    fence(Ordering::SeqCst);
    if waiters.load(Ordering::Relaxed) != 0 {
        word.fetch_add(1, Ordering::Release);
        futex_wake_all(word);
    }
}

/// Where a queue's state and ring bytes live: the queue's shared segment,
/// or, in loom models, memory the model checker watches (`ring_loom.rs`).
/// The protocol in [`Core`] is written once against this; for the segment
/// every method inlines to what a direct use of the mapping would be.
///
/// # Safety
/// `ring_len` is never more than the bytes the implementation can read and
/// write at ring offsets `0..ring_len`, for as long as the value lives.
pub(crate) unsafe trait RingMem {
    /// The queue's shared state.
    fn state(&self) -> &QueueState;
    /// How many ring bytes there are (at least the ring size).
    fn ring_len(&self) -> usize;
    /// Copies `data` to ring offset `off`.
    ///
    /// # Safety
    /// `off + data.len() <= ring_len()`, and the protocol gives the range
    /// to the caller alone (nobody reads or writes it meanwhile).
    unsafe fn write(&self, off: usize, data: &[u8]);
    /// Copies the ring bytes at `off` into `out`.
    ///
    /// # Safety
    /// `off + out.len() <= ring_len()`, and nobody writes the range
    /// meanwhile (the protocol).
    unsafe fn read(&self, off: usize, out: &mut [u8]);
    /// The ring bytes at `off..off + n`, or `None` when this memory cannot
    /// lend them (the caller then copies).
    ///
    /// # Safety
    /// `off + n <= ring_len()`, and nobody writes the range while the slice
    /// lives (the protocol).
    unsafe fn slice(&self, off: usize, n: usize) -> Option<&[u8]>;
    /// The ring bytes at `off..off + n` to write in place, or `None` when
    /// this memory cannot lend them (the caller then copies).
    ///
    /// # Safety
    /// `off + n <= ring_len()`, and nobody else reads or writes the range
    /// while the slice lives (the protocol).
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, off: usize, n: usize) -> Option<&mut [u8]>;
}

// SAFETY: `tail()` is the mapping's tail, `len` bytes that live as long as
// the handle (the handle keeps the mapping).
unsafe impl RingMem for Shared<QueueState> {
    #[inline]
    fn state(&self) -> &QueueState {
        self.get()
    }

    #[inline]
    fn ring_len(&self) -> usize {
        self.tail().1
    }

    #[inline]
    unsafe fn write(&self, off: usize, data: &[u8]) {
        let (base, len) = self.tail();
        debug_assert!(off + data.len() <= len);
        // SAFETY: the caller keeps `off + data.len()` within the tail, which
        // the handle keeps mapped; the source is the caller's buffer, not
        // the mapping. Concurrency: the caller owns the range (protocol).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(off), data.len()) }
    }

    #[inline]
    unsafe fn read(&self, off: usize, out: &mut [u8]) {
        let (base, len) = self.tail();
        debug_assert!(off + out.len() <= len);
        // SAFETY: as in `write`; the destination is the caller's buffer,
        // and nobody writes the range meanwhile (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(base.add(off), out.as_mut_ptr(), out.len()) }
    }

    #[inline]
    unsafe fn slice(&self, off: usize, n: usize) -> Option<&[u8]> {
        let (base, len) = self.tail();
        debug_assert!(off + n <= len);
        // SAFETY: the range is inside the mapping, which outlives `&self`.
        // Nobody writes it while the slice lives (the caller's contract); a
        // process breaking the protocol could change the bytes under us,
        // which makes them wrong but not out of bounds (the decoder checks
        // everything it reads).
        Some(unsafe { std::slice::from_raw_parts(base.add(off), n) })
    }

    #[inline]
    unsafe fn slice_mut(&self, off: usize, n: usize) -> Option<&mut [u8]> {
        let (base, len) = self.tail();
        debug_assert!(off + n <= len);
        // SAFETY: the range is inside the mapping, which outlives `&self`;
        // the caller owns it alone while the slice lives (its contract), so
        // no other reference to these bytes exists.
        Some(unsafe { std::slice::from_raw_parts_mut(base.add(off), n) })
    }
}

/// One process's view of a queue: the mapped segment and the descriptors
/// every holder keeps.
pub(crate) struct Core<M: RingMem = Shared<QueueState>> {
    mem: M,
    /// Ring size, read once and checked (never re-read from shared memory).
    cap: u64,
    maxsize: u64,
    joinable: bool,
    /// `SOCK_SEQPACKET` pair: producers send descriptors on `fd_tx`,
    /// consumers receive them on `fd_rx`.
    fd_tx: OwnedFd,
    fd_rx: OwnedFd,
    /// Readable when a producer published an item after `wait` armed it.
    notify: OwnedFd,
    /// The last `head` this process's producers saw (never ahead of the
    /// real one, which only grows): room is computed from it first, so a
    /// producer reads the consumers' cache line only when it seems full.
    head_seen: AtomicU64,
    /// The last `tail` this process's consumers saw, likewise.
    tail_seen: AtomicU64,
    /// A streamed item a get through this view had started when its
    /// deadline passed, kept with the consumer lock (still held by this
    /// process) for the next get through this view; see [`Core::get`].
    /// Locked only to put an item in or take it out (no waiting inside).
    parked: Mutex<Option<Parked>>,
    /// Whether `parked` may hold an item (looked at before the mutex).
    has_parked: std::sync::atomic::AtomicBool,
}

/// A streamed item waiting in [`Core::parked`].
struct Parked {
    item: Partial,
    /// This process as the consumer lock's owner ([`raw::me`]) when the
    /// item was parked: a forked child's copy of the view is not the owner.
    owner: u64,
}

/// A streamed item being assembled by a consumer.
struct Partial {
    seq: u64,
    total: u64,
    buf: Vec<u8>,
    fds: Result<Vec<OwnedFd>>,
}

impl Core {
    pub(crate) fn create(ring: u64, maxsize: u64, joinable: bool, tag: u64) -> Result<Core> {
        if !(MIN_RING..=MAX_RING).contains(&ring) {
            return Err(Error::InvalidArgument(format!(
                "queue ring size must be between {MIN_RING} and {MAX_RING} bytes, not {ring}"
            )));
        }
        let cap = pad8(ring);
        let shm = Shared::create(cap as usize, tag, |s: &QueueState| {
            s.cap.store(cap, Ordering::Relaxed);
            s.maxsize.store(maxsize, Ordering::Relaxed);
            s.joinable.store(u64::from(joinable), Ordering::Relaxed);
        })?;
        let (fd_tx, fd_rx) = sys::socketpair(sys::SocketKind::SeqPacket)?;
        let notify = sys::eventfd()?;
        Core::attach(shm, fd_tx, fd_rx, notify).map_err(|e| Error::Io(std::io::Error::other(e)))
    }

    /// Builds a view of a received segment, checking what it says about
    /// itself.
    pub(crate) fn attach(
        shm: Shared<QueueState>,
        fd_tx: OwnedFd,
        fd_rx: OwnedFd,
        notify: OwnedFd,
    ) -> std::result::Result<Core, String> {
        Core::from_parts(shm, fd_tx, fd_rx, notify)
    }

    pub(crate) fn shm(&self) -> &Shared<QueueState> {
        &self.mem
    }

    pub(crate) fn same(&self, other: &Core) -> bool {
        self.mem.same(&other.mem)
    }
}

impl<M: RingMem> Core<M> {
    /// Builds a view of the queue in `mem`, checking what it says about
    /// itself.
    fn from_parts(
        mem: M,
        fd_tx: OwnedFd,
        fd_rx: OwnedFd,
        notify: OwnedFd,
    ) -> std::result::Result<Core<M>, String> {
        let s = mem.state();
        let cap = s.cap.load(Ordering::Relaxed);
        let len = mem.ring_len();
        if !(MIN_RING..=MAX_RING).contains(&cap) || cap % 8 != 0 || cap > len as u64 {
            return Err(format!("queue segment has an invalid ring size {cap}"));
        }
        if !sys::is_socket(fd_tx.as_fd()) || !sys::is_socket(fd_rx.as_fd()) {
            return Err("queue descriptor channel is not a socket".into());
        }
        Ok(Core {
            cap,
            maxsize: s.maxsize.load(Ordering::Relaxed),
            joinable: s.joinable.load(Ordering::Relaxed) != 0,
            head_seen: AtomicU64::new(s.head.load(Ordering::Acquire)),
            tail_seen: AtomicU64::new(s.head.load(Ordering::Acquire)),
            mem,
            fd_tx,
            fd_rx,
            notify,
            parked: Mutex::new(None),
            has_parked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    #[inline]
    fn st(&self) -> &QueueState {
        self.mem.state()
    }

    pub(crate) fn fds(&self) -> [BorrowedFd<'_>; 3] {
        [self.fd_tx.as_fd(), self.fd_rx.as_fd(), self.notify.as_fd()]
    }

    pub(crate) fn notify_fd(&self) -> BorrowedFd<'_> {
        self.notify.as_fd()
    }

    pub(crate) fn ring_size(&self) -> u64 {
        self.cap
    }

    pub(crate) fn maxsize(&self) -> u64 {
        self.maxsize
    }

    /// Copies `data` into the ring at stream position `pos`, wrapping.
    ///
    /// Only the holder of the put lock calls this, for bytes between `tail`
    /// and `head + cap`, which no consumer reads until `tail` is published
    /// past them.
    fn write_at(&self, pos: u64, data: &[u8]) {
        debug_assert!(self.cap as usize <= self.mem.ring_len() && data.len() as u64 <= self.cap);
        let off = (pos % self.cap) as usize;
        let (first, second) = data.split_at(data.len().min(self.cap as usize - off));
        // SAFETY: `off + first.len() <= cap <= ring_len` (checked when the
        // view was built) and `second.len() <= cap` (callers never write
        // more than the ring holds). Concurrency: the protocol gives this
        // range to the put-lock holder alone (see above).
        unsafe {
            self.mem.write(off, first);
            self.mem.write(0, second);
        }
    }

    /// Copies bytes out of the ring from stream position `pos`, wrapping.
    ///
    /// Only the holder of the get lock calls this, for bytes between `head`
    /// and `tail`, which no producer writes until `head` is published past
    /// them.
    fn read_at(&self, pos: u64, out: &mut [u8]) {
        debug_assert!(self.cap as usize <= self.mem.ring_len() && out.len() as u64 <= self.cap);
        let off = (pos % self.cap) as usize;
        let n = out.len().min(self.cap as usize - off);
        let (first, second) = out.split_at_mut(n);
        // SAFETY: as in `write_at`, both ranges are inside the ring; the
        // protocol keeps producers off this range until `head` moves past
        // it.
        unsafe {
            self.mem.read(off, first);
            self.mem.read(0, second);
        }
    }

    /// The ring bytes at `pos..pos + n` when they do not wrap, as a slice
    /// that lives until `head` is published past them (the caller holds the
    /// get lock and publishes `head` only after it stopped using the slice).
    fn slice_at(&self, pos: u64, n: u64) -> Option<&[u8]> {
        let off = pos % self.cap;
        if off + n > self.cap {
            return None;
        }
        // SAFETY: `off + n <= cap <= ring_len`. No producer writes the range
        // while the caller holds the get lock and has not advanced `head`
        // (the protocol).
        unsafe { self.mem.slice(off as usize, n as usize) }
    }

    fn write_header(&self, pos: u64, len: u64, flags: u32, nfds: usize, seq: u64, total: u64) {
        let mut h = [0u8; HDR as usize];
        h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        h[4..8].copy_from_slice(&(flags | ((nfds as u32) << 8)).to_le_bytes());
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..24].copy_from_slice(&total.to_le_bytes());
        self.write_at(pos, &h);
    }

    /// Items in the queue (items started minus items taken).
    pub(crate) fn qsize(&self) -> u64 {
        let s = self.st();
        // Read `out` first: `in` only grows, so the difference is never
        // below the truth at some instant between the two loads.
        let out = s.items_out.load(Ordering::Acquire);
        let inn = s.items_in.load(Ordering::Acquire);
        inn.saturating_sub(out)
    }

    /// Whether no bytes are waiting.
    pub(crate) fn is_empty(&self) -> bool {
        let s = self.st();
        s.head.load(Ordering::Acquire) == s.tail.load(Ordering::Acquire)
    }

    /// Whether a put without waiting would fail now: `maxsize` items are
    /// queued, or (unbounded) the ring has no room for a small record.
    pub(crate) fn is_full(&self) -> bool {
        if self.maxsize > 0 {
            return self.qsize() >= self.maxsize;
        }
        let s = self.st();
        let used = s
            .tail
            .load(Ordering::Acquire)
            .wrapping_sub(s.head.load(Ordering::Acquire));
        self.cap.saturating_sub(used) < HDR + 8
    }

    fn free_space(&self) -> u64 {
        let s = self.st();
        let head = s.head.load(Ordering::Acquire);
        // Release: a thread of this process that uses the cached value
        // acquires what the consumer released with `head`.
        self.head_seen.fetch_max(head, Ordering::Release);
        let used = s.tail.load(Ordering::Relaxed).wrapping_sub(head);
        self.cap.saturating_sub(used)
    }

    /// Waits (holding the put lock) until `need` bytes are free; returns
    /// the free space.
    fn wait_space(
        &self,
        need: u64,
        deadline: Option<Instant>,
    ) -> std::result::Result<u64, PutFail> {
        let s = self.st();
        let used = s
            .tail
            .load(Ordering::Relaxed)
            .wrapping_sub(self.head_seen.load(Ordering::Acquire));
        if used <= self.cap && self.cap - used >= need {
            return Ok(self.cap - used);
        }
        let mut round = 0;
        loop {
            let free = self.free_space();
            if free >= need {
                return Ok(free);
            }
            if expired(deadline) {
                return Err(PutFail::Full);
            }
            pause(
                &s.space_seq,
                &s.put_waiters,
                || self.free_space() >= need,
                deadline,
                &mut round,
            );
        }
    }

    /// Waits (holding the put lock) until fewer than `maxsize` items are
    /// queued.
    fn wait_slot(&self, deadline: Option<Instant>) -> std::result::Result<(), PutFail> {
        let s = self.st();
        let mut round = 0;
        while self.qsize() >= self.maxsize {
            if expired(deadline) {
                return Err(PutFail::Full);
            }
            pause(
                &s.space_seq,
                &s.put_waiters,
                || self.qsize() < self.maxsize,
                deadline,
                &mut round,
            );
        }
        Ok(())
    }

    /// After a record was published.
    #[inline]
    fn published(&self) {
        let s = self.st();
        notify(&s.data_seq, &s.get_waiters);
        if s.armed.load(Ordering::Relaxed) != 0 && s.armed.swap(0, Ordering::AcqRel) != 0 {
            if let Err(e) = sys::eventfd_signal(self.notify.as_fd()) {
                log::warn!("cannot signal queue readiness: {e}");
            }
        }
    }

    /// Counts a task for a joinable queue (before its item is published).
    fn task_added(&self) {
        if self.joinable {
            self.st().unfinished.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Uncounts the task of an item withdrawn mid-stream (counted by
    /// [`task_added`](Self::task_added), never to be delivered).
    #[cold]
    fn task_withdrawn(&self) {
        if self.joinable {
            let s = self.st();
            if s.unfinished.fetch_sub(1, Ordering::AcqRel) == 1 {
                notify(&s.join_seq, &s.join_waiters);
            }
        }
    }

    /// Puts one encoded item. `deadline`: `None` waits as long as it takes;
    /// a past instant does not wait. An item larger than the ring streams;
    /// when the deadline passes in the middle, the item is withdrawn (see
    /// the comment there) and the put fails with [`PutFail::Full`]; a
    /// no-wait put of such an item fails at once.
    pub(crate) fn put(
        &self,
        bytes: &[u8],
        fds: &[OwnedFd],
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutFail> {
        if fds.len() > MAX_ITEM_FDS {
            return Err(PutFail::Err(Error::InvalidArgument(format!(
                "an item may carry at most {MAX_ITEM_FDS} handles, not {}",
                fds.len()
            ))));
        }
        let len = bytes.len() as u64;
        let s = self.st();
        let _held = take(&s.put_lock, deadline).ok_or(PutFail::Full)?;
        if self.maxsize > 0 {
            self.wait_slot(deadline)?;
        }
        let seq = s.next_seq.load(Ordering::Relaxed);
        s.next_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        let fds_flag = if fds.is_empty() { 0 } else { F_FDS };
        let rec = HDR + pad8(len);
        if rec <= self.cap {
            self.wait_space(rec, deadline)?;
            self.send_fds(seq, fds).map_err(PutFail::Err)?;
            let t = s.tail.load(Ordering::Relaxed);
            self.write_header(t, len, F_FIRST | F_LAST | fds_flag, fds.len(), seq, len);
            self.write_at(t + HDR, bytes);
            self.task_added();
            s.tail.store(t + rec, Ordering::Release);
            s.items_in.fetch_add(1, Ordering::Release);
            self.published();
            return Ok(());
        }
        // Stream the item in chunks while consumers drain it. Wait for a
        // quarter of the ring at a time, so that chunks stay large.
        let want = pad8((self.cap / 4).max(HDR + 8));
        if expired(deadline) {
            // An item larger than the ring cannot go in without waiting for
            // a consumer: a no-wait put fails before publishing anything.
            return Err(PutFail::Full);
        }
        let mut off = 0u64;
        while off < len || off == 0 {
            let free = match self.wait_space(want, deadline) {
                Ok(free) => free,
                Err(PutFail::Full) if off > 0 => {
                    // The deadline passed mid-item: withdraw the item. The
                    // put lock is released on return with nothing published
                    // past the last chunk, which consumers read as an item
                    // whose producer is gone (as if it had died): they drop
                    // the part they took, or skip it. The caller gets the
                    // item back, so its task is not counted either.
                    self.task_withdrawn();
                    log::debug!("queue put timed out mid-item: item withdrawn");
                    return Err(PutFail::Full);
                }
                Err(e) => return Err(e),
            };
            if off == 0 {
                self.send_fds(seq, fds).map_err(PutFail::Err)?;
                self.task_added();
            }
            let room = (free - HDR) & !7;
            let chunk = (len - off).min(room);
            let mut flags = fds_flag;
            if off == 0 {
                flags |= F_FIRST;
            }
            if off + chunk == len {
                flags |= F_LAST;
            }
            let t = s.tail.load(Ordering::Relaxed);
            self.write_header(t, chunk, flags, fds.len(), seq, len);
            self.write_at(t + HDR, &bytes[off as usize..(off + chunk) as usize]);
            s.tail.store(t + HDR + pad8(chunk), Ordering::Release);
            if off == 0 {
                s.items_in.fetch_add(1, Ordering::Release);
            }
            self.published();
            off += chunk;
            if flags & F_LAST != 0 {
                break;
            }
        }
        Ok(())
    }

    /// Puts one item of known encoded size `len` that fits the ring,
    /// encoding it with `encode` while holding the put lock: straight into
    /// the ring when the space does not wrap (one copy of the data instead
    /// of two), else through `scratch`. `encode` returns the item's handles.
    pub(crate) fn put_sized(
        &self,
        len: u64,
        deadline: Option<Instant>,
        scratch: &mut Vec<u8>,
        encode: &mut dyn FnMut(&mut [u8]) -> Result<Vec<OwnedFd>>,
    ) -> std::result::Result<(), PutFail> {
        let rec = HDR + pad8(len);
        debug_assert!(rec <= self.cap);
        let s = self.st();
        let _held = take(&s.put_lock, deadline).ok_or(PutFail::Full)?;
        if self.maxsize > 0 {
            self.wait_slot(deadline)?;
        }
        self.wait_space(rec, deadline)?;
        let t = s.tail.load(Ordering::Relaxed);
        let start = (t + HDR) % self.cap;
        let direct = if start + len <= self.cap {
            // SAFETY: `start + len <= cap <= ring_len`. The range lies
            // between `tail` and `head + cap` (room was checked above), which
            // only the put-lock holder (us) touches until `tail` is published
            // past it; no other reference to it exists.
            unsafe { self.mem.slice_mut(start as usize, len as usize) }
        } else {
            None
        };
        let fds = if let Some(dst) = direct {
            encode(dst).map_err(PutFail::Err)?
        } else {
            scratch.clear();
            scratch.resize(len as usize, 0);
            let fds = encode(scratch).map_err(PutFail::Err)?;
            self.write_at(t + HDR, scratch);
            fds
        };
        if fds.len() > MAX_ITEM_FDS {
            return Err(PutFail::Err(Error::InvalidArgument(format!(
                "an item may carry at most {MAX_ITEM_FDS} handles, not {}",
                fds.len()
            ))));
        }
        let seq = s.next_seq.load(Ordering::Relaxed);
        s.next_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        self.send_fds(seq, &fds).map_err(PutFail::Err)?;
        let flags = F_FIRST | F_LAST | if fds.is_empty() { 0 } else { F_FDS };
        self.write_header(t, len, flags, fds.len(), seq, len);
        self.task_added();
        s.tail.store(t + rec, Ordering::Release);
        s.items_in.fetch_add(1, Ordering::Release);
        self.published();
        Ok(())
    }

    /// Sends an item's descriptors, tagged with its sequence number, in
    /// batches the kernel accepts.
    fn send_fds(&self, seq: u64, fds: &[OwnedFd]) -> Result<()> {
        for (i, batch) in fds.chunks(sys::MAX_FDS_PER_MSG).enumerate() {
            let mut tag = [0u8; 16];
            tag[..8].copy_from_slice(&seq.to_le_bytes());
            tag[8..].copy_from_slice(&(i as u64).to_le_bytes());
            let borrowed: Vec<BorrowedFd<'_>> = batch.iter().map(AsFd::as_fd).collect();
            sys::send_msg(self.fd_tx.as_fd(), &[IoSlice::new(&tag)], &borrowed)?;
        }
        Ok(())
    }

    /// Takes the descriptors of item `seq` from the socket (holding the get
    /// lock). Messages of earlier items (whose producer or consumer died)
    /// are discarded. An item whose descriptors are not there — a consumer
    /// died after claiming them — is an error for that item only.
    fn take_fds(&self, seq: u64, n: usize) -> Result<Vec<OwnedFd>> {
        let s = self.st();
        let lost = || {
            Error::Decode(format!(
                "the {n} handle(s) of this queue item were lost (a process died while receiving them)"
            ))
        };
        if s.fd_claim.load(Ordering::Relaxed) == seq.wrapping_add(1) {
            return Err(lost());
        }
        s.fd_claim.store(seq.wrapping_add(1), Ordering::Relaxed);
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let mut tag = [0u8; 16];
            let mut q = VecDeque::new();
            match sys::recv_msg_into(self.fd_rx.as_fd(), &mut tag, &mut q, true) {
                Ok(16) => {
                    let s = u64::from_le_bytes(tag[..8].try_into().expect("8 bytes"));
                    if s == seq {
                        got.extend(q);
                    } else if seq.wrapping_sub(s) < u64::MAX / 2 {
                        // An earlier item's: left over, drop it.
                        continue;
                    } else {
                        return Err(lost());
                    }
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(lost()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    }

    /// Takes the consumer lock for a get, or the item a get through this
    /// view parked with it (see [`get`](Self::get)).
    fn take_get(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<(Held<'_>, Option<Partial>), GetFail> {
        let s = self.st();
        // The lock free: nothing is parked (a parked item keeps it held).
        if s.get_lock.try_lock_fast() {
            return Ok((Held(&s.get_lock), None));
        }
        loop {
            if let Some(p) = self.unpark() {
                return Ok((Held(&s.get_lock), Some(p)));
            }
            // While this process holds the lock, a get through this view
            // may park an item, which no unlock announces: wait a slice at
            // a time and look again.
            let until = if s.get_lock.held_by_me() {
                park_slice(deadline)
            } else {
                deadline
            };
            if let Some(held) = take(&s.get_lock, until) {
                return Ok((held, None));
            }
            if expired(deadline) {
                return Err(GetFail::Empty);
            }
        }
    }

    /// The item parked by a get through this view, if any; the caller then
    /// holds the consumer lock.
    fn unpark(&self) -> Option<Partial> {
        if !self.has_parked.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut slot = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        self.has_parked
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let p = slot.take()?;
        if p.owner != raw::me() {
            // A copy inherited through fork: the lock is the parent's.
            return None;
        }
        Some(p.item)
    }

    /// Parks a streamed item whose get's deadline passed, with the consumer
    /// lock `held`, for the next get through this view.
    #[cold]
    fn park(&self, item: Partial, held: Held<'_>) {
        let mut slot = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(Parked {
            item,
            owner: raw::me(),
        });
        self.has_parked
            .store(true, std::sync::atomic::Ordering::Release);
        // The lock stays held for the parked item until a get resumes it
        // or this view is dropped.
        std::mem::forget(held);
    }

    /// Gets one item and decodes it with `decode` (while holding the get
    /// lock, straight from the ring when the record does not wrap).
    ///
    /// An item larger than the ring streams. When the deadline passes in
    /// the middle of one, this returns [`GetFail::Empty`] and parks the part
    /// taken in this view, which keeps the consumer lock: the next get
    /// through this view (any thread) resumes the item, other consumers
    /// wait for the lock (within their deadlines). Dropping the view with an
    /// item parked drops the item and releases the lock, as a consumer that
    /// dies mid-item would (the next consumer skips the rest of the item).
    pub(crate) fn get<T>(
        &self,
        deadline: Option<Instant>,
        decode: impl Fn(&[u8], Vec<OwnedFd>) -> Result<T>,
    ) -> std::result::Result<T, GetFail> {
        let s = self.st();
        let (held, mut partial) = self.take_get(deadline)?;
        let mut round = 0;
        let mut check_at = Instant::now() + SLICE;
        loop {
            let h = s.head.load(Ordering::Relaxed);
            let mut t = self.tail_seen.load(Ordering::Acquire);
            if t.wrapping_sub(h) == 0 || t.wrapping_sub(h) > self.cap {
                t = s.tail.load(Ordering::Acquire);
                // Release: see `free_space`.
                self.tail_seen.fetch_max(t, Ordering::Release);
            }
            if t == h {
                if partial.is_some() {
                    // Mid-item: a producer that died, or withdrew the item
                    // (its put's deadline passed), must not keep us here.
                    let late = expired(deadline);
                    if late || Instant::now() >= check_at {
                        check_at = Instant::now() + SLICE;
                        if self.producer_gone(h) {
                            log::debug!("discarding a partial queue item: its producer left");
                            partial = None;
                            round = 0;
                            continue;
                        }
                    }
                    if late {
                        // Chunks taken cannot be put back: keep them, and
                        // the lock, for the next get through this view.
                        self.park(partial.take().expect("checked"), held);
                        return Err(GetFail::Empty);
                    }
                } else if expired(deadline) {
                    return Err(GetFail::Empty);
                }
                pause(
                    &s.data_seq,
                    &s.get_waiters,
                    || s.tail.load(Ordering::Acquire) != h,
                    deadline,
                    &mut round,
                );
                continue;
            }
            round = 0;
            let avail = t.wrapping_sub(h);
            let mut hb = [0u8; HDR as usize];
            if avail > self.cap || avail < HDR {
                return Err(self.corrupt(t));
            }
            self.read_at(h, &mut hb);
            let clen = u64::from(u32::from_le_bytes(hb[0..4].try_into().expect("4")));
            let word = u32::from_le_bytes(hb[4..8].try_into().expect("4"));
            let seq = u64::from_le_bytes(hb[8..16].try_into().expect("8"));
            let total = u64::from_le_bytes(hb[16..24].try_into().expect("8"));
            let (flags, nfds) = (word & 0xff, (word >> 8) as usize);
            let rec = HDR + pad8(clen);
            if rec > avail || nfds > MAX_ITEM_FDS || clen > total {
                return Err(self.corrupt(t));
            }
            let first = flags & F_FIRST != 0;
            let last = flags & F_LAST != 0;
            let fds_of = |n: usize| {
                if flags & F_FDS != 0 {
                    self.take_fds(seq, n)
                } else {
                    Ok(Vec::new())
                }
            };
            if first && last {
                if partial.take().is_some() {
                    log::debug!("discarding a partial queue item: its producer died");
                }
                let out = fds_of(nfds).and_then(|fds| match self.slice_at(h + HDR, clen) {
                    Some(bytes) => decode(bytes, fds),
                    None => {
                        let mut v = vec![0u8; clen as usize];
                        self.read_at(h + HDR, &mut v);
                        decode(&v, fds)
                    }
                });
                self.consumed(h + rec, true);
                return out.map_err(GetFail::Err);
            }
            if first {
                if partial.is_some() {
                    log::debug!("discarding a partial queue item: its producer died");
                }
                let mut buf = Vec::with_capacity(total.min(MAX_RESERVE) as usize);
                self.append(&mut buf, h + HDR, clen);
                partial = Some(Partial {
                    seq,
                    total,
                    buf,
                    fds: fds_of(nfds),
                });
                self.consumed(h + rec, true);
                continue;
            }
            let mine = partial
                .as_ref()
                .is_some_and(|p| p.seq == seq && p.total == total);
            if !mine {
                // A chunk of an item whose start was taken by a consumer
                // that died, or whose producer died: skip it.
                self.consumed(h + rec, false);
                continue;
            }
            let p = partial.as_mut().expect("checked");
            if p.buf.len() as u64 + clen > p.total || (last && p.buf.len() as u64 + clen != p.total)
            {
                partial = None;
                self.consumed(h + rec, false);
                continue;
            }
            self.append(&mut p.buf, h + HDR, clen);
            self.consumed(h + rec, false);
            if last {
                let p = partial.take().expect("checked");
                return p
                    .fds
                    .and_then(|fds| decode(&p.buf, fds))
                    .map_err(GetFail::Err);
            }
        }
    }

    fn append(&self, buf: &mut Vec<u8>, pos: u64, n: u64) {
        let old = buf.len();
        buf.resize(old + n as usize, 0);
        self.read_at(pos, &mut buf[old..]);
    }

    /// Publishes `head` (after the bytes before it were copied out).
    #[inline]
    fn consumed(&self, new_head: u64, item_taken: bool) {
        let s = self.st();
        if item_taken {
            // Before `head`: a consumer dying between the two makes `qsize`
            // low by one, never high (which could block a bounded queue).
            s.items_out.fetch_add(1, Ordering::Release);
        }
        s.head.store(new_head, Ordering::Release);
        notify(&s.space_seq, &s.put_waiters);
    }

    /// A process broke the ring's format: drop everything published and
    /// report it.
    #[cold]
    fn corrupt(&self, tail: u64) -> GetFail {
        let s = self.st();
        s.items_out
            .store(s.items_in.load(Ordering::Acquire), Ordering::Release);
        s.head.store(tail, Ordering::Release);
        notify(&s.space_seq, &s.put_waiters);
        GetFail::Err(Error::BadFrame(
            "queue ring holds a malformed record; queued items were discarded".into(),
        ))
    }

    /// Mid-item with nothing published past `h`: whether the item's producer
    /// is gone (the put lock is free, or its holder is dead, and still no
    /// data came): it died, or its deadline passed and it withdrew the item.
    fn producer_gone(&self, h: u64) -> bool {
        let s = self.st();
        if s.put_lock.try_lock().is_none() {
            return false;
        }
        let _held = Held(&s.put_lock);
        s.tail.load(Ordering::Acquire) == h
    }

    /// `wait` support: resets the eventfd and arms it; true when an item is
    /// (probably) there already.
    pub(crate) fn arm(&self) -> bool {
        let s = self.st();
        let _ = sys::eventfd_drain(self.notify.as_fd());
        s.armed.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        !self.is_empty()
    }

    /// `JoinableQueue::task_done`.
    pub(crate) fn task_done(&self) -> Result<()> {
        let s = self.st();
        let mut cur = s.unfinished.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(Error::State(
                    "task_done() called more times than items were put",
                ));
            }
            match s
                .unfinished
                .compare_exchange(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur == 1 {
            notify(&s.join_seq, &s.join_waiters);
        }
        Ok(())
    }

    /// Tasks not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        self.st().unfinished.load(Ordering::Acquire)
    }

    /// `JoinableQueue::join`: false when `deadline` passed first.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let s = self.st();
        let mut round = 0;
        while s.unfinished.load(Ordering::Acquire) != 0 {
            if expired(deadline) {
                return false;
            }
            pause(
                &s.join_seq,
                &s.join_waiters,
                || s.unfinished.load(Ordering::Acquire) == 0,
                deadline,
                &mut round,
            );
        }
        true
    }
}

impl<M: RingMem> Drop for Core<M> {
    fn drop(&mut self) {
        let slot = self.parked.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = slot.take() {
            // Like a consumer that dies mid-item: the item is lost, and the
            // next consumer skips its rest. (Not the lock of a parent this
            // process was forked from, though.)
            log::debug!("queue handle dropped in the middle of an item: item dropped");
            if p.owner == raw::me() {
                self.mem.state().get_lock.unlock_if_owner(p.owner);
            }
        }
    }
}

#[cfg(all(test, loom))]
#[path = "ring_loom.rs"]
mod loom_tests;

#[cfg(all(test, not(loom)))]
#[path = "ring_tests.rs"]
mod tests;
