//! [`SimpleQueue`]: a [`Queue`] without item limit or non-blocking forms.

use super::{DEFAULT_RING_SIZE, KIND_SIMPLE, PutError, Queue};
use crate::connection::Waitable;
use crate::error::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// A simple unbounded queue (Python's `multiprocessing.SimpleQueue`):
/// `put`, `get`, `empty`, `close`.
///
/// It is a [`Queue`] without item limit or the non-blocking forms; it
/// shares the queue's guarantees. A `SimpleQueue` cannot be received as a
/// `Queue` or the other way round.
///
/// # Examples
/// ```
/// use multiproc::{Process, SimpleQueue};
///
/// fn double(rx: SimpleQueue<u64>, tx: SimpleQueue<u64>) {
///     while let Ok(n) = rx.get() {
///         if n == 0 {
///             break;
///         }
///         tx.put(n * 2).unwrap();
///     }
/// }
///
/// let (jobs, results) = (SimpleQueue::new()?, SimpleQueue::new()?);
/// let mut p = Process::new(double, (jobs.clone(), results.clone()));
/// p.start()?;
/// jobs.put(21)?;
/// assert_eq!(results.get()?, 42);
/// jobs.put(0)?;
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SimpleQueue<T>(Queue<T>);

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue(self.0.clone())
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.0).finish()
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue with a 4 MiB ring.
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::SimpleQueue::<String>::new()?;
    /// assert!(q.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Self> {
        Queue::create(0, DEFAULT_RING_SIZE, KIND_SIMPLE).map(SimpleQueue)
    }

    /// Puts `item`, waiting for room in the ring if it is full.
    ///
    /// # Errors
    /// As [`Queue::put`].
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::SimpleQueue::new()?;
    /// q.put(7i32)?;
    /// assert_eq!(q.get()?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.0.put(item)
    }

    /// Takes the next item, waiting as long as it takes.
    ///
    /// # Errors
    /// As [`Queue::get`].
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::SimpleQueue::new()?;
    /// q.put([1u8, 2])?;
    /// assert_eq!(q.get()?, [1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.0.get()
    }

    /// Takes the next item, waiting at most `timeout` (not in Python's
    /// `SimpleQueue`, but a program that must not hang needs it).
    ///
    /// # Timeouts
    /// As for [`Queue::get_timeout`]: returns by the deadline, and keeps a
    /// large item it had started for the next get.
    ///
    /// # Errors
    /// As [`Queue::get_timeout`].
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// assert!(q.get_timeout(std::time::Duration::ZERO).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.0.get_timeout(timeout)
    }
}

impl<T> SimpleQueue<T> {
    /// Whether the queue holds nothing.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::SimpleQueue::new()?;
    /// assert!(q.is_empty());
    /// q.put('x')?;
    /// assert!(!q.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Closes this handle (idempotent); see [`Queue::close`].
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// q.close();
    /// q.close();
    /// assert!(q.is_closed());
    /// assert!(q.get().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.0.close()
    }

    /// Whether this handle was closed.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize_wire(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize_wire(d, KIND_SIMPLE).map(SimpleQueue)
    }
}

impl<T> SimpleQueue<T> {
    /// See [`Queue::identity`].
    #[cfg(feature = "tokio")]
    pub(crate) fn identity(&self) -> usize {
        self.0.identity()
    }
}

impl<T> AsFd for SimpleQueue<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl<T> Waitable for SimpleQueue<T> {
    fn ready_without_polling(&self) -> bool {
        self.0.ready_without_polling()
    }
}
