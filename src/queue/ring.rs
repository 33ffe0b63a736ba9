//! The shared state and the byte ring behind every queue, and the put/get
//! protocol on them. See the module docs of `queue` and `docs/design.md`
//! (section "Queues") for the protocol; the comments here argue the details.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::mem::robust_lock::{self as raw, Acquired, RawLock, SLICE};
use crate::mem::segment::{Shared, shm_layout};
use crate::mem::shim::{self, futex_wait, futex_wake_all};
use crate::mem::shim::{AtomicU32, AtomicU64, Ordering, fence};
use crate::sys;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Instant;

mod fds;
mod get;
mod layout;
mod put;

use layout::*;
pub(crate) use layout::{HDR, MAX_ITEM_FDS, MAX_RING, MIN_RING, QueueState, RingMem};

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
