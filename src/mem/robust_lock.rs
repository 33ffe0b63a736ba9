//! The futex lock every cross-process lock is built on, with owner-death
//! detection.
//!
//! ## The state word
//!
//! `state` is a 64-bit atomic holding the owner's identity, so that taking
//! the lock and saying who took it is one atomic step (nothing to publish
//! afterwards, nothing for a dying owner to leave half done):
//!
//! | bits | meaning |
//! | --- | --- |
//! | 0..=21 | owner pid (never 0 while locked; pids are below 2^22) |
//! | 22 | `WAITERS`: somebody may be sleeping on `wake` |
//! | 23..=63 | owner start time (clock ticks since boot, 41 bits; 0 if unknown) |
//!
//! | state | meaning |
//! | --- | --- |
//! | `0` | unlocked |
//! | `owner` | locked by `owner`, nobody asleep |
//! | `owner \| WAITERS` | locked by `owner`, waiters may sleep on `wake` |
//!
//! Transitions: `lock` is a CAS `0 → me` (fast path) or, after waiting,
//! `0 → me | WAITERS` (there may be other sleepers); a waiter sets
//! `WAITERS` before sleeping; `unlock` swaps in `0` and, if `WAITERS` was
//! set, bumps `wake` and wakes one sleeper. A waiter whose owner is dead
//! CASes `dead | bits → me | WAITERS` and reports [`Acquired::OwnerDied`].
//! Pid plus start time never names two processes, so that CAS cannot
//! succeed against a live owner that happens to reuse the pid (no ABA).
//!
//! ## Waiting
//!
//! Sleepers wait on the separate 32-bit futex `wake` (a sequence number,
//! since futexes are 32-bit), in slices of [`SLICE`]: after each slice
//! without a wake they check whether the owner still runs (pidfd plus start
//! time, see `sys::is_alive`). So an owner killed by SIGKILL is detected
//! within one slice; an owner that dies while waiters sleep needs no help
//! from the kernel.
//!
//! Limits: pids are compared as numbers, so all processes using a lock
//! must share a pid namespace (as processes started by this crate do).
//! Without a readable `/proc` the start time is 0 and only the pid is
//! checked: a dead owner whose pid was reused then looks alive, which errs
//! on the side of waiting, never of handing the lock to two owners.
//!
//! ## Memory ordering
//!
//! `lock` acquires, `unlock` releases on `state`; what the owner wrote
//! under the lock is visible to the next owner, in any process. The sleeper
//! reads `wake` (Acquire) before re-reading `state`, and the unlocker
//! writes `state` before bumping `wake`, so a sleeper either sees the
//! unlock or sleeps on a `wake` value the unlocker will change; the futex
//! call itself checks the value atomically with going to sleep.
//!
//! ## Async later
//!
//! A future async acquire can sleep on the same `wake` word through a
//! helper that uses `futex_waitv`, or register an eventfd beside the word;
//! nothing in the layout has to change.

use super::shim::{self as sys, AtomicU32, AtomicU64, Ordering};
use crate::sys::Ident;
use std::time::{Duration, Instant};

const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;
const WAITERS: u64 = 1 << PID_BITS;
const START_SHIFT: u32 = PID_BITS + 1;
const OWNER_MASK: u64 = !WAITERS;

/// How long a sleeper waits before checking whether the owner still runs.
#[cfg(not(all(loom, test)))]
pub(crate) const SLICE: Duration = Duration::from_millis(100);
/// Under the model checker a slice ends when the model says (see
/// `sync/shim.rs`), and every check that a slice passed succeeds, so that
/// no decision depends on real time.
#[cfg(all(loom, test))]
pub(crate) const SLICE: Duration = Duration::ZERO;

/// How a lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Normally.
    Clean,
    /// From an owner that died holding it.
    OwnerDied,
}

/// The shared state of a lock.
#[repr(C)]
#[derive(Default)]
pub(crate) struct RawLock {
    state: AtomicU64,
    wake: AtomicU32,
    _pad: u32,
}

/// This process as a lock owner.
#[inline]
pub(crate) fn me() -> u64 {
    let Ident { pid, start } = sys::self_ident();
    (start << START_SHIFT) | u64::from(pid)
}

fn owner_of(state: u64) -> Ident {
    Ident {
        pid: (state & PID_MASK) as u32,
        start: state >> START_SHIFT,
    }
}

impl RawLock {
    /// Takes the lock if it is free.
    #[inline]
    pub(crate) fn try_lock_fast(&self) -> bool {
        self.state
            .compare_exchange(0, me(), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock if it is free, or if its owner is dead.
    pub(crate) fn try_lock(&self) -> Option<Acquired> {
        self.try_lock_noting().map(|(a, _)| a)
    }

    /// [`try_lock`](Self::try_lock), also returning the dead owner's word
    /// (0 for a clean acquire).
    pub(crate) fn try_lock_noting(&self) -> Option<(Acquired, u64)> {
        if self.try_lock_fast() {
            return Some((Acquired::Clean, 0));
        }
        let s = self.state.load(Ordering::Relaxed);
        if s == 0 {
            return self.try_lock_fast().then_some((Acquired::Clean, 0));
        }
        self.try_recover_noting(s)
            .map(|dead| (Acquired::OwnerDied, dead))
    }

    /// Takes the lock, waiting until `deadline` (`None`: forever). `None`
    /// when the deadline passed first.
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Option<Acquired> {
        if self.try_lock_fast() {
            return Some(Acquired::Clean);
        }
        self.lock_slow(deadline)
    }

    /// If the owner recorded in `seen` is dead, takes the lock over and
    /// returns the dead owner's word.
    fn try_recover_noting(&self, seen: u64) -> Option<u64> {
        if sys::is_alive(owner_of(seen)) {
            return None;
        }
        // Keep WAITERS: others may be asleep behind the dead owner.
        let new = me() | WAITERS;
        self.state
            .compare_exchange(seen, new, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| seen & OWNER_MASK)
    }

    /// [`lock`](Self::lock), also returning, for a lock taken over from a
    /// dead owner, that owner's word (for
    /// [`restore_dead`](Self::restore_dead); 0 for a clean acquire).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn lock_noting(&self, deadline: Option<Instant>) -> Option<(Acquired, u64)> {
        if self.try_lock_fast() {
            return Some((Acquired::Clean, 0));
        }
        self.lock_slow_noting(deadline)
    }

    /// Gives back a lock this process took over from the dead owner `dead`
    /// (as [`lock_noting`](Self::lock_noting) reported it) without having
    /// used it: the lock is marked as held by `dead` again, so that the
    /// next acquirer takes it over and learns that its owner died (within
    /// one [`SLICE`] for a sleeper). An async acquire that took a dead
    /// owner's lock after its future was dropped gives it back this way,
    /// so that the news is not lost.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn restore_dead(&self, dead: u64) {
        debug_assert!(dead != 0 && dead & WAITERS == 0);
        self.state.store(dead | WAITERS, Ordering::Release);
        self.wake_one();
    }

    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> Option<Acquired> {
        self.lock_slow_noting(deadline).map(|(a, _)| a)
    }

    #[cold]
    fn lock_slow_noting(&self, deadline: Option<Instant>) -> Option<(Acquired, u64)> {
        // No spinning: with two processes hammering one lock, a spinning
        // waiter turns every release into a cross-CPU hand-over, while a
        // sleeping one lets the owner run a batch of critical sections with
        // a hot cache (the behaviour of glibc's mutex; measured both ways in
        // benches/sync.rs).
        let me = me();
        let mut check_at = Instant::now() + SLICE;
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s == 0 {
                match self.state.compare_exchange(
                    0,
                    me | WAITERS,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some((Acquired::Clean, 0)),
                    Err(_) => continue,
                }
            }
            if s & WAITERS == 0
                && self
                    .state
                    .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let seq = self.wake.load(Ordering::Acquire);
            if self.state.load(Ordering::Acquire) != s | WAITERS {
                continue;
            }
            let until = match deadline {
                Some(d) if d < check_at => d,
                _ => check_at,
            };
            let woken = sys::futex_wait(&self.wake, seq, Some(until));
            if woken && deadline.is_none() {
                continue;
            }
            let now = Instant::now();
            if woken && deadline.is_some_and(|d| now < d) {
                continue;
            }
            if now >= check_at {
                let s = self.state.load(Ordering::Relaxed);
                if s != 0 {
                    if let Some(dead) = self.try_recover_noting(s) {
                        return Some((Acquired::OwnerDied, dead));
                    }
                }
                check_at = now + SLICE;
            }
            if deadline.is_some_and(|d| now >= d) {
                // One last try, so that a zero timeout still takes a free lock.
                let last = self.try_lock_noting();
                if last.is_none() && woken {
                    self.pass_on_wake();
                }
                return last;
            }
        }
    }

    /// A sleeper that was woken but leaves without the lock (its deadline
    /// passed) makes sure the wake is not lost for the other sleepers: the
    /// next unlock must wake one again, or, if the lock is free now, one is
    /// woken at once.
    #[cold]
    fn pass_on_wake(&self) {
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s == 0 {
                self.wake_one();
                return;
            }
            if s & WAITERS != 0
                || self
                    .state
                    .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
    }

    /// Releases the lock (whoever holds it).
    #[inline]
    pub(crate) fn unlock(&self) {
        let s = self.state.swap(0, Ordering::Release);
        if s & WAITERS != 0 {
            self.wake_one();
        }
    }

    #[cold]
    fn wake_one(&self) {
        self.wake.fetch_add(1, Ordering::Release);
        sys::futex_wake(&self.wake, 1);
    }

    /// Whether the lock is held.
    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != 0
    }

    /// The owner's pid, if locked.
    pub(crate) fn owner_pid(&self) -> Option<u32> {
        let s = self.state.load(Ordering::Relaxed);
        (s != 0).then_some((s & PID_MASK) as u32)
    }

    /// Whether this process holds the lock.
    pub(crate) fn held_by_me(&self) -> bool {
        self.state.load(Ordering::Relaxed) & OWNER_MASK == me()
    }

    /// The holder (as [`me`] gave it), or 0 when free.
    pub(crate) fn owner(&self) -> u64 {
        self.state.load(Ordering::Relaxed) & OWNER_MASK
    }

    /// Releases the lock if `owner` (as [`owner`](Self::owner) gave it)
    /// still holds it.
    pub(crate) fn unlock_if_owner(&self, owner: u64) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        while s != 0 && s & OWNER_MASK == owner {
            match self
                .state
                .compare_exchange(s, 0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    if s & WAITERS != 0 {
                        self.wake_one();
                    }
                    return true;
                }
                Err(now) => s = now,
            }
        }
        false
    }
}

#[cfg(all(test, loom))]
#[path = "robust_lock_loom.rs"]
mod loom_tests;

#[cfg(all(test, not(loom)))]
#[path = "robust_lock_tests.rs"]
mod tests;
