//! [`JoinableQueue`]: a [`Queue`] that counts unfinished tasks.

use super::{DEFAULT_RING_SIZE, KIND_JOINABLE, Queue};
use crate::connection::Waitable;
use crate::error::Result;
use crate::sys;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// A [`Queue`] that counts unfinished tasks (Python's
/// `multiprocessing.JoinableQueue`): every put adds one, every
/// [`task_done`](Self::task_done) removes one, and [`join`](Self::join)
/// waits until none is left.
///
/// All of [`Queue`]'s methods are available (through `Deref`); its puts
/// count tasks.
///
/// A task is counted before its item becomes visible, so `join` never
/// returns while an item is on its way. A producer killed in the few
/// instructions between counting and publishing leaves one task that is
/// never done (Python has the same window).
///
/// # Examples
/// ```
/// use multiproc::{JoinableQueue, Process};
///
/// fn worker(q: JoinableQueue<u32>) {
///     while let Ok(n) = q.get() {
///         let _ = n * n;
///         q.task_done().unwrap();
///     }
/// }
///
/// let q = JoinableQueue::new()?;
/// let mut p = Process::new(worker, (q.clone(),)).daemon(true);
/// p.start()?;
/// for n in 0..10 {
///     q.put(n)?;
/// }
/// q.join(); // all ten done
/// assert_eq!(q.unfinished_tasks(), 0);
/// p.terminate()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct JoinableQueue<T>(Queue<T>);

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue(self.0.clone())
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("queue", &self.0)
            .field("unfinished", &self.unfinished_tasks())
            .finish()
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.0
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A new joinable queue without item limit.
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.join(); // nothing to wait for
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Self> {
        Self::with_maxsize(0)
    }

    /// A new joinable queue holding at most `maxsize` items (`0`: no limit).
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::JoinableQueue::with_maxsize(1)?;
    /// q.put(1u8)?;
    /// assert!(q.is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Queue::create(maxsize, DEFAULT_RING_SIZE, KIND_JOINABLE).map(JoinableQueue)
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one task done (one item taken earlier has been processed).
    ///
    /// # Errors
    /// [`Error::State`](crate::Error::State) when called more times than items were put (Python's
    /// `ValueError`).
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1)?;
    /// let _ = q.get()?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        self.0.core.task_done()
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put("job".to_string())?;
    /// let job = q.get()?;
    /// assert_eq!(job, "job");
    /// q.task_done()?;
    /// q.join();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) {
        self.0.core.join(None);
    }

    /// Waits at most `timeout` until every item put has been marked done;
    /// `true` if they all were, `false` when the time ran out.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put('x')?;
    /// assert!(!q.join_timeout(Duration::from_millis(10)));
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.join_timeout(Duration::from_millis(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.0.core.join(sys::deadline_after(timeout))
    }

    /// Waits until `deadline` at the latest for every item put to be
    /// marked done; `true` if they all were, `false` when it passed.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put('x')?;
    /// assert!(!q.join_deadline(Instant::now() + Duration::from_millis(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_deadline(&self, deadline: Instant) -> bool {
        self.0.core.join(Some(deadline))
    }

    /// The number of tasks put and not yet marked done.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1u8)?;
    /// q.put(2)?;
    /// q.get()?;
    /// assert_eq!(q.unfinished_tasks(), 2); // taken is not done
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        self.0.core.unfinished() as usize
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize_wire(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize_wire(d, KIND_JOINABLE).map(JoinableQueue)
    }
}

impl<T> AsFd for JoinableQueue<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl<T> Waitable for JoinableQueue<T> {
    fn ready_without_polling(&self) -> bool {
        self.0.ready_without_polling()
    }
}
