//! `Semaphore` and `BoundedSemaphore` shared between processes.
//!
//! `value` is the futex word: acquirers sleep on it while it is 0.
//! `sleepers` counts processes that may be asleep, so that `release` makes
//! a system call only when somebody waits.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::mem::segment::{Shared, shm_layout};
use crate::sys;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
#[derive(Default)]
pub(crate) struct SemState {
    value: AtomicU32,
    sleepers: AtomicU32,
    /// The bound of a `BoundedSemaphore`; 0 for a plain `Semaphore`.
    max: AtomicU32,
}

// SAFETY: `#[repr(C)]`, atomics only (all bit patterns valid), align 4.
shm_layout!(unsafe impl SemState => Semaphore);

impl SemState {
    fn try_acquire(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            match self
                .value
                .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    fn acquire(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.try_acquire() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            sys::futex_wait(&self.value, 0, deadline);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn release(&self, n: u32) -> Result<()> {
        let max = self.max.load(Ordering::Relaxed);
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            let new = v
                .checked_add(n)
                .filter(|&x| max == 0 || x <= max)
                .ok_or(Error::State("semaphore or lock released too many times"))?;
            match self
                .value
                .compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            sys::futex_wake(&self.value, n);
        }
        Ok(())
    }
}

macro_rules! semaphore_common {
    ($t:ident) => {
        impl $t {
            /// Takes one unit, waiting as long as it takes.
            ///
            /// # Examples
            /// ```
            /// let s = multiproc::Semaphore::new(1)?;
            /// s.acquire();
            /// assert_eq!(s.value(), 0);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire(&self) {
                self.shm.get().acquire(None);
            }

            /// Takes one unit if one is available now; `true` if taken.
            pub fn try_acquire(&self) -> bool {
                self.shm.get().try_acquire()
            }

            /// Takes one unit, waiting at most `timeout`; `true` if taken.
            ///
            /// A holder that died keeps its unit: a waiter with a timeout
            /// gives up after it rather than hanging.
            ///
            /// # Examples
            /// ```
            /// use std::time::Duration;
            /// let s = multiproc::Semaphore::new(0)?;
            /// assert!(!s.acquire_timeout(Duration::from_millis(10)));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.shm.get().acquire(sys::deadline_after(timeout))
            }

            /// Takes one unit, waiting until `deadline` at the latest;
            /// `true` if taken.
            ///
            /// # Examples
            /// ```
            /// use std::time::{Duration, Instant};
            /// let s = multiproc::Semaphore::new(1)?;
            /// let d = Instant::now() + Duration::from_millis(10);
            /// assert!(s.acquire_deadline(d));
            /// assert!(!s.acquire_deadline(d));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn acquire_deadline(&self, deadline: Instant) -> bool {
                self.shm.get().acquire(Some(deadline))
            }

            /// Where the semaphore lives in this process: the key of the
            /// async twins' per-process waiter turn.
            #[cfg(feature = "tokio")]
            pub(crate) fn identity(&self) -> usize {
                self.shm.get() as *const SemState as usize
            }

            /// The number of units available now (Python's `get_value()`).
            #[doc(alias = "get_value")]
            pub fn value(&self) -> u32 {
                self.shm.get().value.load(Ordering::Relaxed)
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.shm.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let shm: Shared<SemState> = Shared::deserialize(d)?;
                let bounded = shm.get().max.load(Ordering::Relaxed) != 0;
                if bounded != (stringify!($t) == "BoundedSemaphore") {
                    return Err(serde::de::Error::custom(concat!(
                        "received semaphore is not a ",
                        stringify!($t)
                    )));
                }
                Ok($t { shm })
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{}(value={})>", stringify!($t), self.value())
            }
        }
    };
}

/// A counting semaphore shared between processes (Python's
/// `multiprocessing.Semaphore`). Releasing beyond the initial value is
/// allowed.
///
/// # Examples
/// ```
/// use multiproc::{Process, Semaphore};
///
/// fn take(s: Semaphore) -> bool { s.try_acquire() }
///
/// let s = Semaphore::new(1)?;
/// let mut p = Process::new(take, (s.clone(),));
/// p.start()?;
/// p.join()?;
/// assert!(p.take_result()?);
/// assert_eq!(s.value(), 0);
/// s.release()?;
/// assert_eq!(s.value(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    shm: Shared<SemState>,
}

impl Semaphore {
    /// A semaphore with `value` units.
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            shm: Shared::create(0, 0, |s: &SemState| s.value.store(value, Ordering::Relaxed))?,
        })
    }

    /// Gives back one unit.
    ///
    /// # Errors
    /// [`Error::State`] if the value would overflow `u32`.
    pub fn release(&self) -> Result<()> {
        self.shm.get().release(1)
    }

    /// Gives back `n` units at once, waking up to `n` waiters.
    ///
    /// # Errors
    /// As [`release`](Self::release).
    ///
    /// # Examples
    /// ```
    /// let s = multiproc::Semaphore::new(0)?;
    /// s.release_n(3)?;
    /// assert_eq!(s.value(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release_n(&self, n: u32) -> Result<()> {
        self.shm.get().release(n)
    }
}

semaphore_common!(Semaphore);

/// A semaphore that refuses to be released above its initial value
/// (Python's `multiprocessing.BoundedSemaphore`).
///
/// # Examples
/// ```
/// let s = multiproc::BoundedSemaphore::new(2)?;
/// assert!(s.try_acquire());
/// s.release()?;
/// assert!(s.release().is_err());
/// assert_eq!(s.value(), 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    shm: Shared<SemState>,
}

impl BoundedSemaphore {
    /// A semaphore with `value` units, which is also its maximum.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a value of 0 (it could never be
    /// acquired); otherwise when the shared memory cannot be created.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        if value == 0 {
            return Err(Error::InvalidArgument(
                "a BoundedSemaphore needs a value of at least 1".into(),
            ));
        }
        Ok(BoundedSemaphore {
            shm: Shared::create(0, 0, |s: &SemState| {
                s.value.store(value, Ordering::Relaxed);
                s.max.store(value, Ordering::Relaxed);
            })?,
        })
    }

    /// Gives back one unit.
    ///
    /// # Errors
    /// [`Error::State`] when that would exceed the initial value.
    pub fn release(&self) -> Result<()> {
        self.shm.get().release(1)
    }
}

semaphore_common!(BoundedSemaphore);
