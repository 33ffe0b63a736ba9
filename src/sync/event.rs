//! `Event`: a flag processes can wait for.
//!
//! `flag` is the futex word: `UNSET`, `SET`, or `UNSET_WAITING` (unset, and
//! somebody may sleep on it), so that `set` makes a system call only when
//! somebody waits.
#![allow(unsafe_code)]

use crate::error::Result;
use crate::mem::segment::{Shared, segment_serde, shm_layout};
use crate::sys;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const UNSET: u32 = 0;
const SET: u32 = 1;
const UNSET_WAITING: u32 = 2;
/// Spin iterations before sleeping (about a microsecond).
const SPIN: u32 = 100;

#[repr(C)]
#[derive(Default)]
pub(crate) struct EventState {
    flag: AtomicU32,
}

// SAFETY: `#[repr(C)]`, one atomic (all bit patterns valid), align 4.
shm_layout!(unsafe impl EventState => Event);

/// A flag shared between processes that they can wait for (Python's
/// `multiprocessing.Event`).
///
/// # Examples
/// ```
/// use multiproc::{Event, Process};
///
/// fn go(e: Event) { e.set() }
///
/// let e = Event::new()?;
/// assert!(!e.is_set());
/// let mut p = Process::new(go, (e.clone(),));
/// p.start()?;
/// e.wait();
/// assert!(e.is_set());
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    shm: Shared<EventState>,
}

impl Event {
    /// A new event, not set.
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    pub fn new() -> Result<Event> {
        Ok(Event {
            shm: Shared::create(0, 0, |_| {})?,
        })
    }

    /// Where the event lives in this process: the key of the async
    /// twins' per-process waiter turn.
    #[cfg(feature = "tokio")]
    pub(crate) fn identity(&self) -> usize {
        self.shm.get() as *const EventState as usize
    }

    fn flag(&self) -> &AtomicU32 {
        &self.shm.get().flag
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::Acquire) == SET
    }

    /// Sets the flag and wakes every waiter, in every process.
    #[inline]
    pub fn set(&self) {
        if self.flag().swap(SET, Ordering::Release) == UNSET_WAITING {
            sys::futex_wake_all(self.flag());
        }
    }

    /// Clears the flag.
    ///
    /// # Examples
    /// ```
    /// let e = multiproc::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) {
        let _ = self
            .flag()
            .compare_exchange(SET, UNSET, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let flag = self.flag();
        // A short spin first: a setter running on another CPU is often
        // about to set it, and a waiter that has not announced itself
        // spares the setter its wake-up call.
        for _ in 0..SPIN {
            if flag.load(Ordering::Acquire) == SET {
                return true;
            }
            std::hint::spin_loop();
        }
        loop {
            match flag.load(Ordering::Acquire) {
                SET => return true,
                // Announce a sleeper; if the flag moved meanwhile, look again.
                UNSET
                    if flag
                        .compare_exchange(
                            UNSET,
                            UNSET_WAITING,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_err() =>
                {
                    continue;
                }
                _ => {}
            }
            if !sys::futex_wait(flag, UNSET_WAITING, deadline) {
                return flag.load(Ordering::Acquire) == SET;
            }
        }
    }

    /// Waits until the flag is set; returns at once if it is.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `timeout` for the flag; `true` if it is set.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let e = multiproc::Event::new()?;
    /// assert!(!e.wait_timeout(Duration::ZERO));
    /// e.set();
    /// assert!(e.wait_timeout(Duration::from_secs(1)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(sys::deadline_after(timeout))
    }

    /// Waits until `deadline` at the latest; `true` if the flag is set.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// let e = multiproc::Event::new()?;
    /// assert!(!e.wait_deadline(Instant::now() + Duration::from_millis(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.wait_until(Some(deadline))
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Event {}>", if self.is_set() { "set" } else { "unset" })
    }
}

segment_serde!(Event);
