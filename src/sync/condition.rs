//! `Condition`: a condition variable shared between processes.
//!
//! State (the counters change only under the condition's lock):
//!
//! | field | meaning |
//! | --- | --- |
//! | `seq` | futex word, bumped by every notify that wakes somebody |
//! | `waiters` | waiters not yet chosen by a notify |
//! | `signals` | notifications handed out and not yet consumed |
//!
//! `notify(n)` moves `k = min(n, waiters)` from `waiters` to `signals`,
//! bumps `seq` and wakes `k` sleepers. A waiter that comes back (woken, by
//! timeout, or because `seq` moved before it slept) retakes the lock and
//! consumes a signal if there is one; otherwise it sleeps again or, past its
//! deadline, leaves and decrements `waiters`. So exactly `k` waiters return
//! `true` per notify, and no notification is lost to a waiter that timed
//! out. A waiter whose process dies leaves its count behind; later notifies
//! then hand one signal to nobody, which at worst makes a later wait return
//! early: never a hang.
#![allow(unsafe_code)]

use super::lock::Lock;
use super::rlock::RLock;
use super::{LockError, LockResult};
use crate::error::Result;
use crate::mem::robust_lock::Acquired;
use crate::mem::segment::{Shared, shm_layout};
use crate::sys;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
#[derive(Default)]
pub(crate) struct CondState {
    pub(crate) seq: AtomicU32,
    pub(crate) waiters: AtomicU32,
    pub(crate) signals: AtomicU32,
}

impl CondState {
    /// Chooses up to `n` waiters (the lock held); returns how many.
    pub(crate) fn notify(&self, n: u32) -> u32 {
        let waiters = self.waiters.load(Ordering::Relaxed);
        let k = waiters.min(n);
        if k > 0 {
            self.waiters.store(waiters - k, Ordering::Relaxed);
            let s = self.signals.load(Ordering::Relaxed);
            self.signals.store(s.saturating_add(k), Ordering::Relaxed);
            self.seq.fetch_add(1, Ordering::Release);
            sys::futex_wake(&self.seq, k);
        }
        k
    }

    /// After a wake-up, the lock taken again: takes a signal meant for a
    /// waiter (`Some(true)`), or gives up the wait once `deadline` has
    /// passed (`Some(false)`, no longer counted as a waiter), or says to
    /// wait again (`None`).
    pub(crate) fn settle(&self, deadline: Option<Instant>) -> Option<bool> {
        let signals = self.signals.load(Ordering::Relaxed);
        if signals > 0 {
            self.signals.store(signals - 1, Ordering::Relaxed);
            return Some(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let w = self.waiters.load(Ordering::Relaxed);
            self.waiters.store(w.saturating_sub(1), Ordering::Relaxed);
            return Some(false);
        }
        None
    }
}

/// The lock under a [`Condition`], for the async twins.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) enum CondLockRef<'a> {
    Lock(&'a Lock),
    RLock(&'a RLock),
}

// SAFETY: `#[repr(C)]`, atomics only (all bit patterns valid), align 4.
shm_layout!(unsafe impl CondState => Condition);

/// The lock under a condition.
#[derive(Clone, Serialize, Deserialize)]
enum CondLock {
    Lock(Lock),
    RLock(RLock),
}

/// A condition variable shared between processes (Python's
/// `multiprocessing.Condition`), with its own lock ([`RLock`] by default).
///
/// [`acquire`](Self::acquire) returns a [`ConditionGuard`], through which
/// one waits and notifies; notifying requires holding the lock, which the
/// guard proves.
///
/// # Examples
/// ```
/// use multiproc::{Condition, Process, Value};
///
/// fn bump(cond: Condition, v: Value<u32>) {
///     let g = cond.acquire().unwrap();
///     v.set(v.get() + 1);
///     g.notify_all();
/// }
///
/// let cond = Condition::new()?;
/// let v = Value::new(0u32)?;
/// let mut g = cond.acquire().unwrap();
/// let mut p = Process::new(bump, (cond.clone(), v.clone()));
/// p.start()?;
/// assert!(g.wait_for(|| v.get() == 1, None).unwrap());
/// drop(g);
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    lock: CondLock,
    shm: Shared<CondState>,
}

impl Condition {
    fn with(lock: CondLock) -> Result<Condition> {
        Ok(Condition {
            lock,
            shm: Shared::create(0, 0, |_| {})?,
        })
    }

    /// A condition with a new [`RLock`].
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    pub fn new() -> Result<Condition> {
        Condition::with(CondLock::RLock(RLock::new()?))
    }

    /// A condition over an existing [`Lock`].
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    ///
    /// # Examples
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let cond = multiproc::Condition::with_lock(lock.clone())?;
    /// let _g = cond.acquire().unwrap();
    /// assert!(lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Condition::with(CondLock::Lock(lock))
    }

    /// A condition over an existing [`RLock`].
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    pub fn with_rlock(lock: RLock) -> Result<Condition> {
        Condition::with(CondLock::RLock(lock))
    }

    fn guard(&self) -> ConditionGuard<'_> {
        ConditionGuard {
            cond: self,
            _not_send: PhantomData,
        }
    }

    fn outcome(
        &self,
        r: std::result::Result<Acquired, LockError<()>>,
    ) -> LockResult<ConditionGuard<'_>> {
        match r {
            Ok(Acquired::Clean) => Ok(self.guard()),
            Ok(Acquired::OwnerDied) => Err(LockError::OwnerDied(self.guard())),
            Err(LockError::Timeout) => Err(LockError::Timeout),
            Err(_) => Err(LockError::WouldBlock),
        }
    }

    fn take(
        &self,
        deadline: Option<Instant>,
        block: bool,
    ) -> std::result::Result<Acquired, LockError<()>> {
        let none = if block {
            LockError::Timeout
        } else {
            LockError::WouldBlock
        };
        match &self.lock {
            CondLock::Lock(l) => {
                let raw = &l.shm_state().raw;
                let a = if block {
                    raw.lock(deadline)
                } else {
                    raw.try_lock()
                };
                a.ok_or(none)
            }
            CondLock::RLock(r) => r.state().acquire_until(deadline, block).map_err(|_| none),
        }
    }

    /// Acquires the lock.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = cond.acquire();` drops it at once (`_` binds
    /// nothing): write `let _guard = cond.acquire()` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (holding the guard) when the previous holder
    /// died while holding the lock.
    pub fn acquire(&self) -> LockResult<ConditionGuard<'_>> {
        self.outcome(self.take(None, true))
    }

    /// Acquires the lock if it is free.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = cond.try_acquire();` drops it at once (`_` binds
    /// nothing): write `let _guard = cond.try_acquire()` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when it is held; [`LockError::OwnerDied`]
    /// as for [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// use multiproc::LockError;
    /// let cond = multiproc::Condition::new()?;
    /// let _g = cond.acquire().unwrap();
    /// let other = cond.clone();
    /// let busy = std::thread::spawn(move || matches!(other.try_acquire(), Err(LockError::WouldBlock)));
    /// assert!(busy.join().unwrap());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> LockResult<ConditionGuard<'_>> {
        self.outcome(self.take(None, false))
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = cond.acquire_timeout(t);` drops it at once (`_` binds
    /// nothing): write `let _guard = cond.acquire_timeout(t)` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::Timeout`], or as [`acquire`](Self::acquire).
    pub fn acquire_timeout(&self, timeout: Duration) -> LockResult<ConditionGuard<'_>> {
        self.outcome(self.take(sys::deadline_after(timeout), true))
    }

    /// Acquires the lock, waiting until `deadline` at the latest.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = cond.acquire_deadline(d);` drops it at once (`_` binds
    /// nothing): write `let _guard = cond.acquire_deadline(d)` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::Timeout`], or as [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.acquire_deadline(Instant::now() + Duration::from_secs(1)).unwrap();
    /// drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_deadline(&self, deadline: Instant) -> LockResult<ConditionGuard<'_>> {
        self.outcome(self.take(Some(deadline), true))
    }

    fn release_all(&self) -> u32 {
        match &self.lock {
            CondLock::Lock(l) => {
                l.shm_state().raw.unlock();
                1
            }
            CondLock::RLock(r) => r.state().release_all(),
        }
    }

    fn reacquire(&self, count: u32) -> Acquired {
        match &self.lock {
            CondLock::Lock(l) => l.shm_state().raw.lock(None).unwrap_or(Acquired::Clean),
            CondLock::RLock(r) => r.state().reacquire(count),
        }
    }

    fn release_one(&self) {
        match &self.lock {
            CondLock::Lock(l) => l.shm_state().raw.unlock(),
            CondLock::RLock(r) => {
                r.state().release_one();
            }
        }
    }

    pub(crate) fn state(&self) -> &CondState {
        self.shm.get()
    }

    /// The lock under the condition.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn lock_ref(&self) -> CondLockRef<'_> {
        match &self.lock {
            CondLock::Lock(l) => CondLockRef::Lock(l),
            CondLock::RLock(r) => CondLockRef::RLock(r),
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        write!(
            f,
            "<Condition(waiters={}, signals={})>",
            st.waiters.load(Ordering::Relaxed),
            st.signals.load(Ordering::Relaxed)
        )
    }
}

/// The lock of a [`Condition`], held; waits and notifies go through it.
/// Released when dropped. Stays on the thread that acquired it.
#[must_use = "the lock is released when the guard is dropped; `let _ = ...` drops it at once, bind it to a named variable such as `_guard`"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    _not_send: PhantomData<*const ()>,
}

impl ConditionGuard<'_> {
    fn wait_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> std::result::Result<bool, LockError<()>> {
        let c = self.cond;
        let st = c.state();
        st.waiters.fetch_add(1, Ordering::Relaxed);
        let mut died = false;
        let woken = loop {
            let seq = st.seq.load(Ordering::Acquire);
            let count = c.release_all();
            sys::futex_wait(&st.seq, seq, deadline);
            died |= c.reacquire(count) == Acquired::OwnerDied;
            if let Some(woken) = st.settle(deadline) {
                break woken;
            }
        };
        if died {
            Err(LockError::OwnerDied(()))
        } else {
            Ok(woken)
        }
    }

    /// Releases the lock, sleeps until notified, and takes the lock again.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] when, while this thread slept, a holder of
    /// the lock died; the lock is held again all the same.
    pub fn wait(&mut self) -> std::result::Result<(), LockError<()>> {
        self.wait_until(None).map(|_| ())
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; `true` if notified,
    /// `false` on timeout.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let mut g = cond.acquire().unwrap();
    /// assert!(!g.wait_timeout(Duration::from_millis(10)).unwrap());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::result::Result<bool, LockError<()>> {
        self.wait_until(sys::deadline_after(timeout))
    }

    /// Like [`wait`](Self::wait), until `deadline` at the latest; `true` if
    /// notified, `false` when the deadline passed.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// let cond = multiproc::Condition::new()?;
    /// let mut g = cond.acquire().unwrap();
    /// assert!(!g.wait_deadline(Instant::now() + Duration::from_millis(10)).unwrap());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline(&mut self, deadline: Instant) -> std::result::Result<bool, LockError<()>> {
        self.wait_until(Some(deadline))
    }

    /// Waits until `predicate` is true, for at most `timeout` (`None`:
    /// forever); returns the last value of the predicate.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let mut g = cond.acquire().unwrap();
    /// assert!(!g.wait_for(|| false, Some(Duration::from_millis(10))).unwrap());
    /// assert!(g.wait_for(|| true, None).unwrap());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> std::result::Result<bool, LockError<()>> {
        let end = timeout.and_then(sys::deadline_after);
        let mut died = false;
        loop {
            if predicate() {
                break;
            }
            if end.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let r = self.wait_until(end);
            died |= r.is_err();
        }
        if died {
            Err(LockError::OwnerDied(()))
        } else {
            Ok(predicate())
        }
    }

    /// Wakes up to `n` waiters (in any process); returns how many were
    /// chosen.
    ///
    /// # Examples
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.acquire().unwrap();
    /// assert_eq!(g.notify(1), 0); // nobody waits
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify(&self, n: u32) -> u32 {
        self.cond.state().notify(n)
    }

    /// Wakes every waiter; returns how many there were.
    pub fn notify_all(&self) -> u32 {
        self.notify(u32::MAX)
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        self.cond.release_one();
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}
