//! `RLock`: a recursive lock shared between processes.
#![allow(unsafe_code)]

use super::{LockError, LockResult};
use crate::error::{Error, Result};
use crate::mem::robust_lock::{Acquired, RawLock};
use crate::mem::segment::{Shared, segment_serde, shm_layout};
use crate::sys;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The shared state. `owner_tid` and `count` are written only by the
/// holder (under `raw`); `owner_tid` is 0 while nobody holds it.
#[repr(C)]
#[derive(Default)]
pub(crate) struct RLockState {
    pub(crate) raw: RawLock,
    owner_tid: AtomicU32,
    count: AtomicU32,
}

// SAFETY: `#[repr(C)]`, atomics only (all bit patterns valid), align 8.
shm_layout!(unsafe impl RLockState => RLock);

impl RLockState {
    fn mine(&self) -> bool {
        self.raw.held_by_me() && self.owner_tid.load(Ordering::Relaxed) == sys::self_tid()
    }

    /// Takes the lock (or one more level of it) until `deadline`.
    pub(crate) fn acquire_until(
        &self,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<Acquired, bool> {
        if self.mine() {
            let c = self.count.load(Ordering::Relaxed);
            if c == u32::MAX {
                return Err(false);
            }
            self.count.store(c + 1, Ordering::Relaxed);
            return Ok(Acquired::Clean);
        }
        let a = if block {
            self.raw.lock(deadline)
        } else {
            self.raw.try_lock()
        };
        match a {
            Some(a) => {
                self.owner_tid.store(sys::self_tid(), Ordering::Relaxed);
                self.count.store(1, Ordering::Relaxed);
                Ok(a)
            }
            None => Err(true),
        }
    }

    /// Takes the lock for the async holder `tag` (an [`async_tag`], never
    /// a thread id), waiting until `deadline`, or only trying when `block`
    /// is false; also returns the dead owner's word (see
    /// `RawLock::lock_noting`). The hold is one level, not reentrant.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn acquire_tagged(
        &self,
        tag: u32,
        deadline: Option<Instant>,
        block: bool,
    ) -> Option<(Acquired, u64)> {
        let a = if block {
            self.raw.lock_noting(deadline)?
        } else {
            self.raw.try_lock_noting()?
        };
        self.owner_tid.store(tag, Ordering::Relaxed);
        self.count.store(1, Ordering::Relaxed);
        Some(a)
    }

    /// Ends the hold of the async holder `tag`; `false` if it does not
    /// hold the lock.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn release_tagged(&self, tag: u32) -> bool {
        if !self.raw.held_by_me() || self.owner_tid.load(Ordering::Relaxed) != tag {
            return false;
        }
        self.count.store(0, Ordering::Relaxed);
        self.owner_tid.store(0, Ordering::Relaxed);
        self.raw.unlock();
        true
    }

    /// Gives back the hold of `tag`, taken over from the dead owner `dead`,
    /// marked as held by that owner again (`RawLock::restore_dead`).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn restore_dead_tagged(&self, tag: u32, dead: u64) {
        if self.raw.held_by_me() && self.owner_tid.load(Ordering::Relaxed) == tag {
            self.count.store(0, Ordering::Relaxed);
            self.owner_tid.store(0, Ordering::Relaxed);
            self.raw.restore_dead(dead);
        }
    }

    /// Releases one level; `false` if this thread does not hold it.
    pub(crate) fn release_one(&self) -> bool {
        if !self.mine() {
            return false;
        }
        let c = self.count.load(Ordering::Relaxed);
        if c <= 1 {
            self.count.store(0, Ordering::Relaxed);
            self.owner_tid.store(0, Ordering::Relaxed);
            self.raw.unlock();
        } else {
            self.count.store(c - 1, Ordering::Relaxed);
        }
        true
    }

    /// Releases every level (for `Condition::wait`); returns the count.
    pub(crate) fn release_all(&self) -> u32 {
        let c = self.count.load(Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.owner_tid.store(0, Ordering::Relaxed);
        self.raw.unlock();
        c
    }

    /// Takes the lock again with `count` levels (after `release_all`).
    pub(crate) fn reacquire(&self, count: u32) -> Acquired {
        let a = self.raw.lock(None).unwrap_or(Acquired::Clean);
        self.owner_tid.store(sys::self_tid(), Ordering::Relaxed);
        self.count.store(count, Ordering::Relaxed);
        a
    }
}

/// A new name for an async holder of an [`RLock`]: bit 31 set, so it is
/// never a thread id (those are below 2^22), and never 0.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) fn async_tag() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    0x8000_0000 | (n & 0x7fff_ffff)
}

/// A recursive lock shared between processes (Python's
/// `multiprocessing.RLock`): the holding thread may acquire it again, and
/// must release it as many times.
///
/// Held by a *thread* of a process, so its guard cannot move to another
/// thread. A holder that dies gives the next acquirer
/// [`LockError::OwnerDied`], as for [`Lock`](crate::Lock).
///
/// # Examples
/// ```
/// let rlock = multiproc::RLock::new()?;
/// let a = rlock.acquire().unwrap();
/// let b = rlock.acquire().unwrap();
/// assert_eq!(rlock.count(), 2);
/// drop(b);
/// drop(a);
/// assert!(!rlock.is_locked());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    pub(crate) shm: Shared<RLockState>,
}

impl RLock {
    /// A new, unlocked recursive lock.
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    ///
    /// # Examples
    /// ```
    /// let r = multiproc::RLock::new()?;
    /// assert_eq!(r.count(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            shm: Shared::create(0, 0, |_| {})?,
        })
    }

    pub(crate) fn state(&self) -> &RLockState {
        self.shm.get()
    }

    fn outcome<'a>(
        &'a self,
        r: Result<Acquired, bool>,
        none: LockError<RLockGuard<'a>>,
    ) -> LockResult<RLockGuard<'a>> {
        let guard = || RLockGuard {
            lock: self,
            _not_send: PhantomData,
        };
        match r {
            Ok(Acquired::Clean) => Ok(guard()),
            Ok(Acquired::OwnerDied) => Err(LockError::OwnerDied(guard())),
            Err(true) => Err(none),
            // The recursion count is exhausted: it cannot be taken again.
            Err(false) => Err(LockError::WouldBlock),
        }
    }

    /// Acquires the lock (one more level if this thread holds it).
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = r.acquire();` drops it at once (`_` binds
    /// nothing): write `let _guard = r.acquire()` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (holding the guard) when the previous holder
    /// died while holding it; [`LockError::WouldBlock`] if this thread
    /// already holds it `u32::MAX` times.
    ///
    /// # Examples
    /// ```
    /// let r = multiproc::RLock::new()?;
    /// let _a = r.acquire().unwrap();
    /// let _b = r.acquire().unwrap();
    /// assert_eq!(r.count(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> LockResult<RLockGuard<'_>> {
        self.outcome(self.state().acquire_until(None, true), LockError::Timeout)
    }

    /// Acquires the lock if free, held by this thread, or left by a dead
    /// holder.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = r.try_acquire();` drops it at once (`_` binds
    /// nothing): write `let _guard = r.try_acquire()` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when another thread or process holds it;
    /// [`LockError::OwnerDied`] as for [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// use multiproc::{LockError, RLock};
    /// let r = RLock::new()?;
    /// let _g = r.acquire().unwrap();
    /// let other = r.clone();
    /// let t = std::thread::spawn(move || matches!(other.try_acquire(), Err(LockError::WouldBlock)));
    /// assert!(t.join().unwrap());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> LockResult<RLockGuard<'_>> {
        self.outcome(
            self.state().acquire_until(None, false),
            LockError::WouldBlock,
        )
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = r.acquire_timeout(t);` drops it at once (`_` binds
    /// nothing): write `let _guard = r.acquire_timeout(t)` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::Timeout`] when the time ran out; otherwise as
    /// [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let r = multiproc::RLock::new()?;
    /// let _g = r.acquire_timeout(Duration::from_millis(10)).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> LockResult<RLockGuard<'_>> {
        match sys::deadline_after(timeout) {
            Some(d) => self.outcome(
                self.state().acquire_until(Some(d), true),
                LockError::Timeout,
            ),
            None => self.acquire(),
        }
    }

    /// Acquires the lock, waiting until `deadline` at the latest.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = r.acquire_deadline(d);` drops it at once (`_` binds
    /// nothing): write `let _guard = r.acquire_deadline(d)` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// As [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// use multiproc::LockError;
    /// let r = multiproc::RLock::new()?;
    /// let _g = r.acquire().unwrap();
    /// let other = r.clone();
    /// let t = std::thread::spawn(move || {
    ///     let d = Instant::now() + Duration::from_millis(20);
    ///     matches!(other.acquire_deadline(d), Err(LockError::Timeout))
    /// });
    /// assert!(t.join().unwrap());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_deadline(&self, deadline: Instant) -> LockResult<RLockGuard<'_>> {
        self.outcome(
            self.state().acquire_until(Some(deadline), true),
            LockError::Timeout,
        )
    }

    /// Whether any thread of any process holds the lock.
    #[doc(alias = "locked")]
    pub fn is_locked(&self) -> bool {
        self.state().raw.is_locked()
    }

    /// How many times the calling thread holds the lock (0 if it does not).
    pub fn count(&self) -> u32 {
        let s = self.state();
        if s.mine() {
            s.count.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// The pid of the holding process, if any.
    ///
    /// # Examples
    /// ```
    /// let r = multiproc::RLock::new()?;
    /// let _g = r.acquire().unwrap();
    /// assert_eq!(r.owner_pid(), Some(std::process::id()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn owner_pid(&self) -> Option<u32> {
        self.state().raw.owner_pid()
    }

    /// Releases one level held through [`RLockGuard::leak`] (Python's
    /// `release()`).
    ///
    /// # Errors
    /// [`Error::State`] when the calling thread does not hold the lock.
    ///
    /// # Examples
    /// ```
    /// let r = multiproc::RLock::new()?;
    /// r.acquire().unwrap().leak();
    /// r.release()?;
    /// assert!(r.release().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        if self.state().release_one() {
            Ok(())
        } else {
            Err(Error::State("cannot release un-acquired lock"))
        }
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.owner_pid() {
            None => write!(f, "<RLock(None, 0)>"),
            Some(pid) => {
                let tid = self.state().owner_tid.load(Ordering::Relaxed);
                let count = self.state().count.load(Ordering::Relaxed);
                write!(f, "<RLock({pid}|{tid}, {count})>")
            }
        }
    }
}

segment_serde!(RLock);

/// Holds one level of an [`RLock`]; releases it when dropped. Stays on the
/// thread that acquired it.
#[must_use = "the lock is released when the guard is dropped; `let _ = ...` drops it at once, bind it to a named variable such as `_guard`"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Keeps this level held without a guard; release it later with
    /// [`RLock::release`] from the same thread.
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.state().release_one();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}
