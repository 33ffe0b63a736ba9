//! Queues between processes: [`Queue`], [`SimpleQueue`] and
//! [`JoinableQueue`] (Python's `multiprocessing.Queue`, `SimpleQueue` and
//! `JoinableQueue`).
//!
//! # How a queue works
//!
//! A queue is an anonymous shared-memory segment (a `memfd`) holding a
//! small state block and a **byte ring** (4 MiB by default,
//! [`Queue::with_config`] to change it), plus a `SOCK_SEQPACKET` socket pair
//! for OS handles and an `eventfd` for [`wait`](crate::connection::wait).
//! Every holder of the queue, in any process, maps the same segment and
//! keeps all these descriptors.
//!
//! An item is encoded with the crate's codec and written into the ring as
//! one record (a 24-byte header, then the bytes). Producers are serialized
//! by a producer lock, consumers by a consumer lock; both are the crate's
//! robust futex locks, so a holder that dies (even by `SIGKILL`) is
//! detected and the lock taken over. The producer publishes the ring's
//! `tail` with a release store only after the whole record is written; the
//! consumer reads up to `tail` and publishes `head` only after the record
//! was copied out (or decoded in place). No system call happens on the way
//! unless a peer sleeps: a side that finds the ring empty (or full) spins
//! briefly, then sleeps on a futex and says so in a waiter counter, and the
//! other side wakes it only when that counter is non-zero.
//!
//! An item larger than the ring **streams** through it: the producer holds
//! its lock for the whole item and writes chunks marked first / middle /
//! last as space frees, while a consumer holding its lock assembles them.
//! So items from 0 bytes to hundreds of MiB work with any ring size.
//!
//! Handles inside items ([`Handle`], a
//! [`Connection`](crate::Connection), another queue) travel as `SCM_RIGHTS`
//! messages on the queue's socket, tagged with the item's sequence number,
//! sent before the item is published; the consumer takes them when it
//! takes the item. Items without handles never touch the socket.
//!
//! # Sizes and blocking
//!
//! * [`Queue::with_maxsize(n)`](Queue::with_maxsize) bounds the number of
//!   items: `put` waits while `n` items are queued.
//! * [`Queue::new`] is *unbounded* in items, but not in memory: items wait in
//!   the ring, and when the ring is full `put` blocks until a consumer makes
//!   room (Python's queue would buffer without limit in the putting
//!   process's memory instead, through its feeder thread). There is no
//!   feeder thread and no per-process buffer: `put` returns once the item is
//!   in shared memory.
//! * Every `_timeout`, `_deadline` and `_nowait` form returns by its
//!   deadline, whatever the other processes do, also in the middle of an
//!   item larger than the ring (see [Timeouts](#timeouts)).
//!
//! # Timeouts
//!
//! An item that fits the ring goes in or out whole, so a timed `put` or
//! `get` either happens or fails with nothing changed. An item larger than
//! the ring streams, and its other side may stall halfway (stopped,
//! swapped out, busy). A timed call still returns at its deadline:
//!
//! * **`get`**: it fails with [`Error::Empty`] and *keeps* the part of the
//!   item it took, in this process's queue object shared by all its clones
//!   (not in handles received separately), together with the consumer
//!   lock. The next `get` of any form on it, from any thread, resumes the
//!   item where it stopped; nothing is lost or duplicated. Meanwhile other
//!   consumers wait for the consumer lock (timed ones fail at their
//!   deadline). If this process drops its last handle first, or dies, the
//!   item is lost as with a consumer killed mid-item, and the other
//!   consumers go on with the next item.
//! * **`put`**: it fails with [`PutError::Full`] and gives the item back:
//!   the item is *withdrawn*. The part already in the ring is dropped by
//!   the consumer that reads it (the same path as a producer killed
//!   mid-item), so the item is never delivered, torn or twice — putting it
//!   again is safe. For a [`JoinableQueue`] it does not count as a task.
//!   `put_nowait` of an item larger than the ring fails at once (it could
//!   only go in while a consumer drains it).
//!
//! Untimed `put` and `get` wait as long as it takes, as before.
//!
//! Naming: Python's `put`/`put_nowait`/`get`/`get_nowait`, plus
//! `_timeout(Duration)` and `_deadline(Instant)` forms, as for the crate's
//! locks. A failed put gives the item back in [`PutError`].
//!
//! # Delivery guarantees
//!
//! * When `put` returns `Ok`, the item is in the shared segment. It stays
//!   there until a consumer takes it, as long as any process holds the queue
//!   — whether or not the putting process still runs. It is never dropped
//!   while a consumer is alive.
//! * A program that exits with items still queued exits at once: nothing is
//!   flushed, because nothing is buffered (no feeder thread to join).
//! * Items from one producer arrive in the order they were put (FIFO per
//!   producer; the ring is one FIFO, so also across producers in the order
//!   their puts took the producer lock). Each item is received at most once.
//! * A producer killed during `put` leaves either nothing or a whole item:
//!   a record is published only when complete, and the chunks of a streamed
//!   item whose producer died are discarded by the consumer (it sees the
//!   next item's first chunk, or finds the producer lock free or its holder
//!   dead).
//! * A consumer killed during `get` loses at most the item it was taking;
//!   the next consumer takes the consumer lock over within about 100 ms and
//!   goes on with the next item (it skips the chunks left of a streamed item
//!   the dead consumer had started).
//! * An item whose handles were lost (a consumer died after taking them) is
//!   an error for that item ([`Error::Decode`]); the queue goes on.
//! * A waiting `get` or `put` never waits forever on a dead peer: the locks
//!   detect dead holders, and a consumer in the middle of a streamed item
//!   checks the producer every 100 ms (and drops the item if the producer
//!   died or withdrew it).
//! * A timed `get` or `put` returns by its deadline, also mid-item; see
//!   [Timeouts](#timeouts) for what happens to the item.
//!
//! # Waiting with `connection::wait`, and async later
//!
//! A queue is [`Waitable`]: `wait` arms the queue's `eventfd` in the shared
//! state, and the next producer to publish an item signals it. Ready means
//! "an item may be there": with several consumers another one may take it
//! first, so use `get_nowait` (or a timeout) after `wait`.
//!
//! An async `get`/`put` can use the same mechanism without busy polling:
//! arm, register the `eventfd` with the reactor, and retry the non-blocking
//! form when it becomes readable (the producer's side already signals it);
//! for `put` on a full ring the consumer side would signal a second armed
//! flag the same way. Nothing in the layout has to change.

mod encode;
mod error;
mod joinable;
mod ring;
mod simple;

pub use error::PutError;
pub use joinable::JoinableQueue;
pub use simple::SimpleQueue;

use crate::Handle;
use crate::codec;
use crate::connection::Waitable;
use crate::error::{Error, Result};
use crate::mem::segment::{self, Shared};
use crate::sys;
use ring::{Core, GetFail, PutFail};
use serde::de::DeserializeOwned;
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Default size of a queue's ring: 4 MiB.
pub const DEFAULT_RING_SIZE: usize = 4 << 20;

/// The tag of a queue segment of `T` items: the item type's tag and which
/// queue kind it is, so that a `SimpleQueue` is never received as a `Queue`.
fn type_tag<T>(kind: u64) -> u64 {
    segment::type_tag::<T>() ^ kind.rotate_left(56)
}

const KIND_QUEUE: u64 = 1;
const KIND_SIMPLE: u64 = 2;
const KIND_JOINABLE: u64 = 3;

/// A multi-producer, multi-consumer FIFO queue between processes (Python's
/// `multiprocessing.Queue`).
///
/// Items are any serde type; handles inside them travel too. Clones are
/// handles to the same queue; a queue travels in [`Process`](crate::Process)
/// arguments and inside messages on connections and other queues. See the
/// [module docs](crate::queue) for how it works and what it guarantees.
///
/// # Examples
/// ```
/// use multiproc::{Process, Queue};
///
/// fn produce(q: Queue<String>) {
///     for i in 0..3 {
///         q.put(format!("item {i}")).unwrap();
///     }
/// }
///
/// let q = Queue::new()?;
/// let mut p = Process::new(produce, (q.clone(),));
/// p.start()?;
/// for i in 0..3 {
///     assert_eq!(q.get()?, format!("item {i}"));
/// }
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Queue<T> {
    core: Arc<Core>,
    closed: AtomicBool,
    kind: u64,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    /// Another handle to the same queue (not closed, whatever this one is).
    fn clone(&self) -> Self {
        Queue {
            core: self.core.clone(),
            closed: AtomicBool::new(false),
            kind: self.kind,
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.core.qsize())
            .field("maxsize", &self.core.maxsize())
            .field("ring_size", &self.core.ring_size())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A new queue with no item limit and a 4 MiB ring (see the [module
    /// docs](crate::queue#sizes-and-blocking) for what unbounded means).
    ///
    /// # Errors
    /// When the shared memory, socket pair or eventfd cannot be created.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(vec![1u8, 2, 3])?;
    /// assert_eq!(q.get()?, vec![1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Self> {
        Self::with_config(0, DEFAULT_RING_SIZE)
    }

    /// A new queue holding at most `maxsize` items (`0`: no limit, as in
    /// Python).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::with_maxsize(2)?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert!(q.is_full());
    /// assert!(q.put_nowait(3).unwrap_err().is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Self::with_config(maxsize, DEFAULT_RING_SIZE)
    }

    /// A new queue holding at most `maxsize` items (`0`: no limit) in a ring
    /// of `ring_bytes` bytes (rounded up to a multiple of 8). Items larger
    /// than the ring still work: they stream through it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `ring_bytes` is below 64 or above 1
    /// GiB; otherwise as [`new`](Self::new).
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::<Vec<u8>>::with_config(0, 4096)?;
    /// std::thread::scope(|s| {
    ///     // Larger than the ring: streamed while the consumer drains it.
    ///     s.spawn(|| q.put(vec![7u8; 100_000]).unwrap());
    ///     assert_eq!(q.get().unwrap().len(), 100_000);
    /// });
    /// assert!(multiproc::Queue::<u8>::with_config(0, 10).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_config(maxsize: usize, ring_bytes: usize) -> Result<Self> {
        Self::create(maxsize, ring_bytes, KIND_QUEUE)
    }

    fn create(maxsize: usize, ring_bytes: usize, kind: u64) -> Result<Self> {
        let core = Core::create(
            ring_bytes as u64,
            maxsize as u64,
            kind == KIND_JOINABLE,
            type_tag::<T>(kind),
        )?;
        Ok(Queue {
            core: Arc::new(core),
            closed: AtomicBool::new(false),
            kind,
            _items: PhantomData,
        })
    }

    fn put_at(&self, item: T, deadline: Option<Instant>) -> std::result::Result<(), PutError<T>> {
        if self.is_closed() {
            return Err(PutError::Closed(item));
        }
        match self.put_encoded(&item, deadline) {
            Ok(()) => Ok(()),
            Err(PutFail::Full) => Err(PutError::Full(item)),
            Err(PutFail::Err(e)) => Err(PutError::Failed(item, e)),
        }
    }

    /// Puts `item`, waiting as long as it takes for room.
    ///
    /// # Errors
    /// [`PutError::Closed`] after [`close`](Self::close);
    /// [`PutError::Failed`] when the item cannot be encoded (e.g. a handle
    /// that cannot be duplicated) or its handles cannot be sent. The item
    /// comes back in the error.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(("answer".to_string(), 42))?;
    /// assert_eq!(q.get()?, ("answer".to_string(), 42));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_at(item, None)
    }

    /// Puts `item` if there is room now (Python's `put_nowait`, or
    /// `put(item, block=False)`).
    ///
    /// An item larger than the ring is always refused: it could only go in
    /// while a consumer drains it.
    ///
    /// # Errors
    /// [`PutError::Full`] when there is no room; otherwise as
    /// [`put`](Self::put).
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.put_nowait('a')?;
    /// assert_eq!(q.put_nowait('b').unwrap_err().into_inner(), 'b');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_at(item, Some(Instant::now()))
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Timeouts
    /// Returns by the deadline whatever the consumers do. An item larger
    /// than the ring that had started to stream when the time ran out is
    /// withdrawn: consumers drop the part in the ring, and the item comes
    /// back in [`PutError::Full`], never delivered (see the [module
    /// docs](crate::queue#timeouts)).
    ///
    /// # Errors
    /// [`PutError::Full`] when the timeout passed; otherwise as
    /// [`put`](Self::put).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.put(1)?;
    /// assert!(q.put_timeout(2, Duration::from_millis(10)).unwrap_err().is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.put_at(item, sys::deadline_after(timeout))
    }

    /// Puts `item`, waiting until `deadline` at the latest for room.
    ///
    /// # Timeouts
    /// As for [`put_timeout`](Self::put_timeout).
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// let q = multiproc::Queue::new()?;
    /// q.put_deadline(5u8, Instant::now() + Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_deadline(&self, item: T, deadline: Instant) -> std::result::Result<(), PutError<T>> {
        self.put_at(item, Some(deadline))
    }

    /// Puts a copy of `*item`, waiting as long as it takes for room: for
    /// large items the caller keeps (no clone needed, the item is encoded
    /// straight from the reference).
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close); [`Error::Encode`] or
    /// an I/O error as for [`put`](Self::put).
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// let big = vec![0u8; 1 << 20];
    /// q.put_ref(&big)?;
    /// assert_eq!(q.get()?.len(), big.len());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_ref(&self, item: &T) -> Result<()> {
        match self.put_encoded(item, None) {
            Ok(()) => Ok(()),
            Err(PutFail::Full) => Err(Error::Full),
            Err(PutFail::Err(e)) => Err(e),
        }
    }

    fn get_at(&self, deadline: Option<Instant>) -> Result<T> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.core
            .get(deadline, |bytes, fds| codec::decode(bytes, fds))
            .map_err(|e| match e {
                GetFail::Empty => Error::Empty,
                GetFail::Err(e) => e,
            })
    }

    /// Takes the next item, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close); [`Error::Decode`]
    /// when the item does not decode as a `T` or its handles were lost (the
    /// item is consumed); [`Error::BadFrame`] when a process wrote garbage
    /// into the queue's memory.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(1.5f64)?;
    /// assert_eq!(q.get()?, 1.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_at(None)
    }

    /// Takes the next item if there is one now (Python's `get_nowait`).
    ///
    /// # Timeouts
    /// As for [`get_timeout`](Self::get_timeout): the part of a large item
    /// taken so far is kept for the next get.
    ///
    /// # Errors
    /// [`Error::Empty`] when there is none; otherwise as [`get`](Self::get).
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::<u32>::new()?;
    /// assert!(matches!(q.get_nowait(), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_nowait(&self) -> Result<T> {
        self.get_at(Some(Instant::now()))
    }

    /// Takes the next item, waiting at most `timeout`.
    ///
    /// # Timeouts
    /// Returns by the deadline whatever the producers do. In the middle of
    /// an item larger than the ring, [`Error::Empty`] keeps the part taken
    /// so far (and the consumer lock) in this queue object, shared with its
    /// clones: the next get on it, from any thread, resumes the item, and
    /// other consumers wait until then. Dropping the last handle first
    /// loses the item, as a consumer killed mid-item does (see the [module
    /// docs](crate::queue#timeouts)).
    ///
    /// # Errors
    /// [`Error::Empty`] when the timeout passed; otherwise as
    /// [`get`](Self::get).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<u32>::new()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_at(sys::deadline_after(timeout))
    }

    /// Takes the next item, waiting until `deadline` at the latest.
    ///
    /// # Timeouts
    /// As for [`get_timeout`](Self::get_timeout).
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// let q = multiproc::Queue::new()?;
    /// q.put(3u8)?;
    /// assert_eq!(q.get_deadline(Instant::now() + Duration::from_secs(1))?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_deadline(&self, deadline: Instant) -> Result<T> {
        self.get_at(Some(deadline))
    }
}

impl<T> Queue<T> {
    /// The number of items in the queue. Approximate while other processes
    /// put and get (as in Python).
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert_eq!(q.qsize(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn qsize(&self) -> usize {
        self.core.qsize() as usize
    }

    /// Whether the queue holds nothing (approximate while others work).
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// assert!(q.is_empty());
    /// q.put(())?;
    /// assert!(!q.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.core.is_empty()
    }

    /// Whether a `put_nowait` would fail now: `maxsize` items are queued,
    /// or (no item limit) the ring has no room even for a small item.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// assert!(!q.is_full());
    /// q.put(0)?;
    /// assert!(q.is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "full")]
    pub fn is_full(&self) -> bool {
        self.core.is_full()
    }

    /// The item limit given at creation (`0`: none).
    ///
    /// # Examples
    /// ```
    /// assert_eq!(multiproc::Queue::<u8>::with_maxsize(5)?.maxsize(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxsize(&self) -> usize {
        self.core.maxsize() as usize
    }

    /// The ring size in bytes.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert_eq!(q.ring_size(), multiproc::queue::DEFAULT_RING_SIZE);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn ring_size(&self) -> usize {
        self.core.ring_size() as usize
    }

    /// Closes this handle: later `put` and `get` on it fail with
    /// [`Error::Closed`] / [`PutError::Closed`] (Python's `close()`, which
    /// also only concerns the calling process's object). Other handles —
    /// clones, and the queue in other processes — are not affected, and
    /// items already put stay queued. Idempotent.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// let other = q.clone();
    /// q.close();
    /// q.close();
    /// assert!(matches!(q.get_nowait(), Err(multiproc::Error::Closed)));
    /// other.put(1)?;
    /// assert_eq!(other.get()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether [`close`](Self::close) was called on this handle.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(!q.is_closed());
    /// q.close();
    /// assert!(q.is_closed() && !q.clone().is_closed());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether `self` and `other` are handles to the same queue in this
    /// process.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.same_as(&q.clone()));
    /// assert!(!q.same_as(&multiproc::Queue::new()?));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn same_as(&self, other: &Queue<T>) -> bool {
        self.core.same(&other.core)
    }

    fn serialize_wire<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        struct Fd<'a>(BorrowedFd<'a>);
        impl Serialize for Fd<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                crate::handle::serialize(&self.0, s)
            }
        }
        let mut t = s.serialize_tuple(4)?;
        t.serialize_element(self.core.shm())?;
        for fd in self.core.fds() {
            t.serialize_element(&Fd(fd))?;
        }
        t.end()
    }

    fn deserialize_wire<'de, D: Deserializer<'de>>(
        d: D,
        kind: u64,
    ) -> std::result::Result<Self, D::Error> {
        type H = Handle<OwnedFd>;
        let (seg, tx, rx, notify): (H, H, H, H) = Deserialize::deserialize(d)?;
        let shm = Shared::from_fd(seg.0, type_tag::<T>(kind)).map_err(codec::de_error)?;
        let core = Core::attach(shm, tx.0, rx.0, notify.0).map_err(codec::de_error)?;
        Ok(Queue {
            core: Arc::new(core),
            closed: AtomicBool::new(false),
            kind,
            _items: PhantomData,
        })
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.serialize_wire(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize_wire(d, KIND_QUEUE)
    }
}

impl<T> Queue<T> {
    /// This handle's shared core, as an address (clones share it): keys the
    /// per-process waiter turn of `get_async`.
    #[cfg(feature = "tokio")]
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.core) as usize
    }
}

impl<T> AsFd for Queue<T> {
    /// The queue's readiness `eventfd` (see [`Waitable`]); not for reading
    /// items.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core.notify_fd()
    }
}

impl<T> Waitable for Queue<T> {
    /// Arms the queue's readiness signal, and reports whether an item is
    /// there already.
    fn ready_without_polling(&self) -> bool {
        self.core.arm()
    }
}
