//! Synchronization between processes: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Event`] and [`Barrier`]
//! (Python's `multiprocessing.Lock`, …).
//!
//! Each primitive lives in its own anonymous shared segment (a `memfd`, see
//! `mem/segment.rs`) and sleeps on futexes without `FUTEX_PRIVATE_FLAG`, so
//! it works between any processes that hold it: pass it in
//! [`Process`](crate::Process) arguments or send it on a
//! [`Connection`](crate::Connection) and the receiver maps the same memory.
//! Cloning a primitive gives another handle to the same one (cheap, for
//! threads). Nothing is ever left behind in `/dev/shm`: the kernel frees a
//! segment when its last holder is gone, however it died.
//!
//! A [`Lock`] or [`RLock`] whose holder dies, even by `SIGKILL`, is handed
//! to the next acquirer with [`LockError::OwnerDied`], which carries the
//! guard (the lock is held) so that it can repair the protected state and go
//! on. See `mem/robust_lock.rs` for the state table and the waiting protocol.
//!
//! With the feature `tokio`, each primitive has awaitable twins (see the
//! `aio` module for how they wait).

mod barrier;
mod condition;
mod event;
mod lock;
mod rlock;
mod semaphore;

pub use barrier::{Barrier, BrokenBarrierError};
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};
#[cfg(feature = "tokio")]
pub(crate) use {barrier::Arrival, condition::CondLockRef, rlock::async_tag};

use std::fmt;

/// Why a lock was not simply acquired.
///
/// Like std's `PoisonError`, [`OwnerDied`](LockError::OwnerDied) carries the
/// guard: the caller holds the lock and may repair what the dead owner left
/// half done.
///
/// # Examples
/// ```
/// use multiproc::{Lock, LockError};
///
/// let lock = Lock::new()?;
/// let guard = match lock.acquire() {
///     Ok(g) => g,
///     // The previous holder died: we hold the lock, check the data.
///     Err(LockError::OwnerDied(g)) => g,
///     Err(e) => return Err(e.into()),
/// };
/// drop(guard);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum LockError<G> {
    /// The previous holder died while holding the lock; the lock is now
    /// held by the caller through the guard inside.
    OwnerDied(G),
    /// `try_acquire`: the lock is held by somebody else.
    WouldBlock,
    /// The timeout passed before the lock could be taken.
    Timeout,
}

/// The result of acquiring a lock.
pub type LockResult<G> = Result<G, LockError<G>>;

impl<G> LockError<G> {
    /// The guard, when the lock was taken from a dead owner.
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }

    /// True for [`LockError::OwnerDied`].
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// The same error without the guard (dropping it releases the lock).
    pub fn forget_guard(self) -> LockError<()> {
        match self {
            LockError::OwnerDied(_) => LockError::OwnerDied(()),
            LockError::WouldBlock => LockError::WouldBlock,
            LockError::Timeout => LockError::Timeout,
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::WouldBlock => f.write_str("WouldBlock"),
            LockError::Timeout => f.write_str("Timeout"),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockError::OwnerDied(_) => "the previous owner of the lock died while holding it",
            LockError::WouldBlock => "the lock is held by somebody else",
            LockError::Timeout => "timed out waiting for the lock",
        })
    }
}

impl<G> std::error::Error for LockError<G> {}

impl<G> From<LockError<G>> for crate::Error {
    fn from(e: LockError<G>) -> Self {
        match e {
            LockError::OwnerDied(_) => crate::Error::OwnerDied,
            LockError::WouldBlock => crate::Error::WouldBlock,
            LockError::Timeout => crate::Error::Timeout,
        }
    }
}
