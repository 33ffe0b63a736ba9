//! [`PutError`]: why a put did not happen, with the item given back.

use crate::error::Error;
use std::fmt;

/// Why a put did not happen. Every variant gives the item back.
///
/// Converts into [`Error`] ([`Error::Full`], [`Error::Closed`], or the
/// underlying error) for `?` in functions returning [`crate::Result`].
///
/// # Examples
/// ```
/// use multiproc::{PutError, Queue};
///
/// let q = Queue::with_maxsize(1)?;
/// q.put_nowait(1u32)?;
/// match q.put_nowait(2) {
///     Err(PutError::Full(item)) => assert_eq!(item, 2),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
#[non_exhaustive]
pub enum PutError<T> {
    /// No room before the timeout (or at once for `put_nowait`): Python's
    /// `queue.Full`.
    Full(T),
    /// This handle was closed with [`Queue::close`](crate::Queue::close).
    Closed(T),
    /// The item could not be encoded, or an OS call failed.
    Failed(T, Error),
}

impl<T> PutError<T> {
    /// The item that was not put.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.put(1u8)?;
    /// assert_eq!(q.put_nowait(2).unwrap_err().into_inner(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t) | PutError::Closed(t) | PutError::Failed(t, _) => t,
        }
    }

    /// True for [`PutError::Full`].
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::<u8>::with_maxsize(1)?;
    /// q.close();
    /// assert!(!q.put(1).unwrap_err().is_full()); // closed, not full
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::Failed(_, e) => write!(f, "cannot put the item: {e}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Error {
        match e {
            PutError::Full(_) => Error::Full,
            PutError::Closed(_) => Error::Closed,
            PutError::Failed(_, e) => e,
        }
    }
}
