//! `Lock`: a non-recursive lock shared between processes.
#![allow(unsafe_code)]

use super::{LockError, LockResult};
use crate::error::{Error, Result};
use crate::mem::robust_lock::{Acquired, RawLock};
use crate::mem::segment::{Shared, segment_serde, shm_layout};
use crate::sys;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
#[derive(Default)]
pub(crate) struct LockState {
    pub(crate) raw: RawLock,
    /// The holder that gave up its guard with [`LockGuard::leak`] (its
    /// owner word), or 0: only such a hold may be ended by
    /// [`Lock::release`]. A hold by a live guard cannot be released under
    /// it, which is what lets `Value`/`Array` guards hand out `&mut`.
    leaked: AtomicU64,
}

// SAFETY: `#[repr(C)]`, atomics only (all bit patterns valid), align 8.
shm_layout!(unsafe impl LockState => Lock);

/// A lock shared between processes (Python's `multiprocessing.Lock`).
///
/// Acquiring returns a [`LockGuard`]; dropping the guard releases the lock.
/// The lock is held by a *process*: any thread of the holding process may
/// drop the guard. It is not recursive: acquiring it again from the same
/// process blocks (use [`RLock`](crate::RLock) for that).
///
/// Clones are handles to the same lock. A `Lock` travels in
/// [`Process`](crate::Process) arguments and [`Connection`](crate::Connection)
/// messages as a descriptor of its shared memory.
///
/// If the holder dies (even by `SIGKILL`), the next acquirer gets
/// [`LockError::OwnerDied`] with the guard within about 100 ms; after that
/// the lock is healthy again.
///
/// # Examples
/// ```
/// use multiproc::{Lock, Process};
///
/// fn work(lock: Lock) -> bool {
///     let _guard = lock.acquire().unwrap();
///     true
/// }
///
/// let lock = Lock::new()?;
/// let mut p = Process::new(work, (lock.clone(),));
/// p.start()?;
/// p.join()?;
/// assert!(p.take_result()?);
/// assert!(!lock.is_locked());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    shm: Shared<LockState>,
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    ///
    /// # Examples
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            shm: Shared::create(0, 0, |_| {})?,
        })
    }

    pub(crate) fn shm_state(&self) -> &LockState {
        self.shm.get()
    }

    #[inline]
    fn raw(&self) -> &RawLock {
        &self.shm.get().raw
    }

    pub(crate) fn outcome<'a>(
        &'a self,
        a: Option<Acquired>,
        none: LockError<LockGuard<'a>>,
    ) -> LockResult<LockGuard<'a>> {
        match a {
            Some(Acquired::Clean) => Ok(LockGuard { lock: self }),
            Some(Acquired::OwnerDied) => Err(LockError::OwnerDied(LockGuard { lock: self })),
            None => Err(none),
        }
    }

    /// Acquires the lock, waiting as long as it takes.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = lock.acquire();` drops it at once (`_` binds
    /// nothing): write `let _guard = lock.acquire()` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (holding the guard) when the previous holder
    /// died while holding the lock.
    ///
    /// # Examples
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// {
    ///     let _g = lock.acquire().unwrap();
    ///     assert!(lock.is_locked());
    /// }
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn acquire(&self) -> LockResult<LockGuard<'_>> {
        if self.raw().try_lock_fast() {
            return Ok(LockGuard { lock: self });
        }
        self.outcome(self.raw().lock(None), LockError::Timeout)
    }

    /// Acquires the lock if nobody holds it (or its holder is dead).
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = lock.try_acquire();` drops it at once (`_` binds
    /// nothing): write `let _guard = lock.try_acquire()` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when it is held; [`LockError::OwnerDied`]
    /// (holding the guard) when its holder had died.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Lock, LockError};
    /// let lock = Lock::new()?;
    /// let g = lock.try_acquire().unwrap();
    /// assert!(matches!(lock.try_acquire(), Err(LockError::WouldBlock)));
    /// drop(g);
    /// assert!(lock.try_acquire().is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> LockResult<LockGuard<'_>> {
        self.outcome(self.raw().try_lock(), LockError::WouldBlock)
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = lock.acquire_timeout(t);` drops it at once (`_` binds
    /// nothing): write `let _guard = lock.acquire_timeout(t)` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::Timeout`] when the time ran out; [`LockError::OwnerDied`]
    /// as for [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Lock, LockError};
    /// use std::time::Duration;
    /// let lock = Lock::new()?;
    /// let _g = lock.acquire().unwrap();
    /// let r = lock.acquire_timeout(Duration::from_millis(20));
    /// assert!(matches!(r, Err(LockError::Timeout)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> LockResult<LockGuard<'_>> {
        match sys::deadline_after(timeout) {
            Some(d) => self.acquire_deadline(d),
            None => self.acquire(),
        }
    }

    /// Acquires the lock, waiting until `deadline` at the latest.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = lock.acquire_deadline(d);` drops it at once (`_` binds
    /// nothing): write `let _guard = lock.acquire_deadline(d)` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// As [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// let lock = multiproc::Lock::new()?;
    /// let g = lock.acquire_deadline(Instant::now() + Duration::from_secs(1)).unwrap();
    /// drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_deadline(&self, deadline: Instant) -> LockResult<LockGuard<'_>> {
        self.outcome(self.raw().lock(Some(deadline)), LockError::Timeout)
    }

    /// Whether somebody holds the lock (Python's `locked()`).
    ///
    /// # Examples
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let g = lock.acquire().unwrap();
    /// assert!(lock.is_locked());
    /// drop(g);
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "locked")]
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// The pid of the process holding the lock, if any.
    ///
    /// # Examples
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// assert_eq!(lock.owner_pid(), None);
    /// let _g = lock.acquire().unwrap();
    /// assert_eq!(lock.owner_pid(), Some(std::process::id()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn owner_pid(&self) -> Option<u32> {
        self.raw().owner_pid()
    }

    /// Releases a lock whose guard was given up with
    /// [`LockGuard::leak`], from any process (Python's `release()`, which
    /// any process may call on a `Lock`).
    ///
    /// # Errors
    /// [`Error::State`] when the lock is not held, or is held by a guard
    /// that was not leaked (releasing it would break the guard's
    /// exclusivity, on which [`Value::lock`](crate::Value::lock) relies).
    ///
    /// # Examples
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// lock.acquire().unwrap().leak();
    /// assert!(lock.is_locked());
    /// lock.release()?;
    /// assert!(lock.release().is_err());
    /// let _g = lock.acquire().unwrap();
    /// assert!(lock.release().is_err()); // held by a guard
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        let owner = self.raw().owner();
        if owner == 0 {
            return Err(Error::State("release of an unlocked lock"));
        }
        // Claim the leaked hold (only one releaser can), then end it if its
        // holder still holds it (it may have died and been taken over by a
        // guard in the meantime).
        let st = self.shm.get();
        if st
            .leaked
            .compare_exchange(owner, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::State(
                "release of a lock held by a guard (only a leaked hold can be released)",
            ));
        }
        if !self.raw().unlock_if_owner(owner) {
            return Err(Error::State("release of an unlocked lock"));
        }
        Ok(())
    }

    /// Whether `self` and `other` are handles to the same lock in this
    /// process.
    ///
    /// # Examples
    /// ```
    /// let a = multiproc::Lock::new()?;
    /// assert!(a.same_as(&a.clone()));
    /// assert!(!a.same_as(&multiproc::Lock::new()?));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn same_as(&self, other: &Lock) -> bool {
        self.shm.same(&other.shm)
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.owner_pid() {
            None => write!(f, "<Lock(owner=None)>"),
            Some(pid) => write!(f, "<Lock(owner={pid})>"),
        }
    }
}

segment_serde!(Lock);

/// Holds a [`Lock`]; releases it when dropped.
///
/// # Examples
/// ```
/// let lock = multiproc::Lock::new()?;
/// let guard = lock.acquire().unwrap();
/// assert!(guard.lock().same_as(&lock));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped; `let _ = ...` drops it at once, bind it to a named variable such as `_guard`"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl LockGuard<'_> {
    /// Keeps the lock held without a guard; release it later with
    /// [`Lock::release`] (from this or another process).
    pub fn leak(self) {
        let st = self.lock.shm.get();
        st.leaked.store(st.raw.owner(), Ordering::Relaxed);
        std::mem::forget(self);
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw().unlock();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}
