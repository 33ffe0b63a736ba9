//! Queues on Redis lists, with the local queue API; the list work is in
//! `list.rs`.

use super::Backend;
use super::list::Core;
use super::stream::encode;
use crate::error::{Error, Result};
use crate::queue::PutError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A queue shared through Redis, with the API of [`crate::Queue`].
///
/// Items are encoded with the crate's codec (serde); they cannot carry OS
/// handles. An item taken by `get` is acknowledged (removed from Redis) by
/// this handle's next `get`/`get_many` or when the handle is dropped; if the
/// process dies first, the item is delivered again after the backend's
/// lease (at-least-once delivery).
///
/// # Examples
/// ```no_run
/// let backend = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let q = backend.queue::<u64>("numbers")?;
/// q.put(7)?;
/// assert_eq!(q.get()?, 7);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisQueue<T> {
    core: Core,
    _t: PhantomData<fn(T) -> T>,
}

/// A [`RedisQueue`] whose items are acknowledged by
/// [`task_done`](RedisJoinableQueue::task_done), with
/// [`join`](RedisJoinableQueue::join), like [`crate::JoinableQueue`].
///
/// `task_done` acknowledges the oldest item that *this handle* took and has
/// not yet marked done (the item leaves Redis then); `join` waits until the
/// queue holds no item that is not done, whoever put or took it. An item
/// taken by a process that dies before `task_done` is delivered again.
///
/// # Examples
/// ```no_run
/// let backend = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let q = backend.joinable_queue::<String>("jobs")?;
/// q.put("job".to_string())?;
/// let job = q.get()?;
/// q.task_done()?;
/// q.join();
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisJoinableQueue<T> {
    core: Core,
    _t: PhantomData<fn(T) -> T>,
}

impl Backend {
    /// Opens (creating when new) the queue `name` with no bound.
    ///
    /// # Errors
    /// As [`Backend::queue_with_maxsize`].
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.queue::<String>("greetings")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<RedisQueue<T>> {
        self.queue_with_maxsize(name, 0)
    }

    /// Opens the queue `name`, creating it with room for `maxsize` items
    /// (0: unbounded) when new. The first handle to create a queue fixes
    /// its bound; later handles take it from Redis.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Authentication`] when the server cannot be
    /// used.
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.queue_with_maxsize::<u8>("small", 2)?;
    /// assert_eq!(q.maxsize(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<RedisQueue<T>> {
        Ok(RedisQueue {
            core: Core::open(self, name, maxsize, false)?,
            _t: PhantomData,
        })
    }

    /// Opens (creating when new) the joinable queue `name`, unbounded.
    ///
    /// # Errors
    /// As [`Backend::joinable_queue_with_maxsize`].
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u32>("work")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<RedisJoinableQueue<T>> {
        self.joinable_queue_with_maxsize(name, 0)
    }

    /// [`joinable_queue`](Self::joinable_queue) with a bound, as
    /// [`queue_with_maxsize`](Self::queue_with_maxsize).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the queue exists and was created
    /// as a plain unbounded queue (by [`queue`](Self::queue)), which keeps
    /// no count of unfinished items; otherwise as
    /// [`Backend::queue_with_maxsize`].
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue_with_maxsize::<u32>("work2", 100)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn joinable_queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<RedisJoinableQueue<T>> {
        Ok(RedisJoinableQueue {
            core: Core::open(self, name, maxsize, true)?,
            _t: PhantomData,
        })
    }
}

macro_rules! queue_api {
    ($ty:ident, $ctor:literal) => {
        impl<T: Serialize + DeserializeOwned> $ty<T> {
            /// Puts `item`, waiting for room in a bounded queue (blocked on
            /// the server: the acknowledgement that makes room wakes it).
            ///
            /// # Errors
            /// [`PutError::Closed`] after [`close`](Self::close),
            /// [`PutError::Failed`] when the item cannot be encoded or the
            /// server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc\")?;")]
            /// q.put(1)?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
                self.put_at(item, None, true)
            }

            /// Puts `item` if there is room now.
            ///
            /// # Errors
            /// [`PutError::Full`] when a bounded queue has no room; otherwise
            /// as [`put`](Self::put).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "_with_maxsize::<u8>(\"doc1\", 1)?;")]
            /// q.put_nowait(1)?;
            /// assert!(q.put_nowait(2).unwrap_err().is_full());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>> {
                self.put_at(item, None, false)
            }

            /// Puts `item`, waiting at most `timeout` for room.
            ///
            /// # Errors
            /// [`PutError::Full`] when the timeout passed; otherwise as
            /// [`put`](Self::put).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc2\")?;")]
            /// q.put_timeout(1, std::time::Duration::from_secs(1))?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_timeout(
                &self,
                item: T,
                timeout: Duration,
            ) -> std::result::Result<(), PutError<T>> {
                self.put_at(item, Some(Instant::now() + timeout), true)
            }

            fn put_at(
                &self,
                item: T,
                deadline: Option<Instant>,
                wait: bool,
            ) -> std::result::Result<(), PutError<T>> {
                if self.core.closed.load(Ordering::Relaxed) {
                    return Err(PutError::Closed(item));
                }
                let bytes = match encode(&item) {
                    Ok(b) => b,
                    Err(e) => return Err(PutError::Failed(item, e)),
                };
                match self.core.put_bytes(&[bytes], deadline, wait) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(PutError::Full(item)),
                    Err(e) => Err(PutError::Failed(item, e)),
                }
            }

            /// Puts every item of `items` in one round trip, in order; in a
            /// bounded queue all of them or (waiting for room) none.
            ///
            /// # Errors
            /// [`Error::Closed`] after [`close`](Self::close),
            /// [`Error::InvalidArgument`] for more items than `maxsize`,
            /// [`Error::Encode`] for an item that cannot be encoded (nothing
            /// is put), [`Error::Io`] when the server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u32>(\"doc3\")?;")]
            /// q.put_many(&[1, 2, 3])?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_many(&self, items: &[T]) -> Result<()> {
                if self.core.closed.load(Ordering::Relaxed) {
                    return Err(Error::Closed);
                }
                let bytes = items.iter().map(encode).collect::<Result<Vec<_>>>()?;
                self.core.put_bytes(&bytes, None, true).map(|_| ())
            }

            /// Takes the next item, waiting as long as it takes.
            ///
            /// # Errors
            /// [`Error::Decode`] for an item that is not a `T` (it counts as
            /// taken), [`Error::Io`] when the server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc4\")?;")]
            /// q.put(5)?;
            /// assert_eq!(q.get()?, 5);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get(&self) -> Result<T> {
                self.core.get_one(None, false)
            }

            /// Takes the next item if there is one now.
            ///
            /// # Errors
            /// [`Error::Empty`] when there is none; otherwise as
            /// [`get`](Self::get).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc5\")?;")]
            /// assert!(matches!(q.get_nowait(), Err(multiproc::Error::Empty)));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_nowait(&self) -> Result<T> {
                self.core.get_one(None, true)
            }

            /// Takes the next item, waiting at most `timeout`.
            ///
            /// # Errors
            /// [`Error::Empty`] when the timeout passed; otherwise as
            /// [`get`](Self::get).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc6\")?;")]
            /// let r = q.get_timeout(std::time::Duration::from_millis(10));
            /// assert!(matches!(r, Err(multiproc::Error::Empty)));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
                self.core.get_one(Some(Instant::now() + timeout), false)
            }

            /// Takes the next item, waiting until `deadline` at the latest.
            ///
            /// # Errors
            /// As [`get_timeout`](Self::get_timeout).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc7\")?;")]
            /// let soon = std::time::Instant::now() + std::time::Duration::from_millis(10);
            /// assert!(q.get_deadline(soon).is_err());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_deadline(&self, deadline: Instant) -> Result<T> {
                self.core.get_one(Some(deadline), false)
            }

            /// Takes up to `max` items in one round trip, waiting at most
            /// `timeout` for the first. Entries that do not decode as `T`
            /// are taken, logged and left out.
            ///
            /// # Errors
            /// [`Error::Empty`] when no item came before the timeout,
            /// [`Error::Io`] when the server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc8\")?;")]
            /// q.put_many(&[1, 2, 3])?;
            /// let got = q.get_many(10, std::time::Duration::from_secs(1))?;
            /// assert_eq!(got, [1, 2, 3]);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_many(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
                self.core.get_many(max, Some(Instant::now() + timeout))
            }

            /// Items waiting to be taken (not counting taken ones that are
            /// not yet acknowledged); 0 when the server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc9\")?;")]
            /// q.put(1)?;
            /// assert_eq!(q.qsize(), 1);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn qsize(&self) -> usize {
                self.core.qsize()
            }

            /// True when no item waits to be taken.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc10\")?;")]
            /// assert!(q.is_empty());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_empty(&self) -> bool {
                self.core.qsize() == 0
            }

            /// True when a bounded queue holds `maxsize` items (taken but
            /// unacknowledged ones count).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "_with_maxsize::<u8>(\"doc11\", 1)?;")]
            /// q.put(1)?;
            /// assert!(q.is_full());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_full(&self) -> bool {
                self.core.is_full()
            }

            /// The bound (0: unbounded).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc12\")?;")]
            /// assert_eq!(q.maxsize(), 0);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn maxsize(&self) -> usize {
                self.core.maxsize
            }

            /// Closes this handle for putting (like Python's
            /// `Queue.close`): later puts through it fail with `Closed`.
            /// Other handles are not affected; getting still works.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc13\")?;")]
            /// q.close();
            /// assert!(q.is_closed());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn close(&self) {
                self.core.closed.store(true, Ordering::Relaxed);
            }

            /// True after [`close`](Self::close).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc14\")?;")]
            /// assert!(!q.is_closed());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_closed(&self) -> bool {
                self.core.closed.load(Ordering::Relaxed)
            }

            /// This handle's consumer name (it names the handle's
            /// processing list and lease in Redis).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc15\")?;")]
            /// assert!(q.consumer().contains(&std::process::id().to_string()));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn consumer(&self) -> &str {
                &self.core.consumer
            }
        }
    };
}

queue_api!(RedisQueue, "queue");
queue_api!(RedisJoinableQueue, "joinable_queue");

impl<T: Serialize + DeserializeOwned> RedisJoinableQueue<T> {
    /// Marks the oldest item this handle took and has not marked done as
    /// done: it is acknowledged and leaves Redis.
    ///
    /// # Errors
    /// [`Error::State`] when this handle holds no such item,
    /// [`Error::Io`] when the server cannot be reached (the item stays
    /// held; call again).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u8>("td")?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        self.core.task_done()
    }

    /// Waits until every item put has been marked done (by any handle).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u8>("join")?;
    /// q.join();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) {
        self.core.join_at(None);
    }

    /// Waits at most `timeout` for [`join`](Self::join); true when every
    /// item was done.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u8>("join2")?;
    /// q.put(1)?;
    /// assert!(!q.join_timeout(std::time::Duration::from_millis(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.core.join_at(Some(Instant::now() + timeout))
    }

    /// Items put and not yet marked done.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u8>("uf")?;
    /// assert_eq!(q.unfinished_tasks()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> Result<usize> {
        self.core.unfinished()
    }
}
