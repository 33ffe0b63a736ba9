//! Awaitable twins of the queue operations.

use super::{Readable, SLICE, blocking_slices, unwrap_blocking};
use crate::connection::Waitable;
use crate::error::{Error, Result};
use crate::queue::{JoinableQueue, PutError, Queue, SimpleQueue};
use crate::sys;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The `get` loop shared by the queue kinds: `try_get` is the non-blocking
/// form (`Err(Error::Empty)` when there is nothing), `waitable` the queue.
async fn get_loop<T, W: Waitable>(
    waitable: &W,
    key: usize,
    try_get: impl Fn() -> Result<T>,
) -> Result<T> {
    match try_get() {
        Err(Error::Empty) => {}
        other => return other,
    }
    // One waiter per queue and process watches the eventfd; the others
    // wait their turn (FIFO) at no cost. Without this every publish would
    // wake every waiting task of the process to race for one item.
    let turn = turn_for(key);
    let _turn = turn.lock().await;
    let mut reg: Option<Readable> = None;
    loop {
        match try_get() {
            Ok(v) => {
                if reg.is_some() && waitable.ready_without_polling() {
                    // We armed (and so drained the eventfd) on the way here;
                    // more is queued: pass the wake on to the other waiters.
                    let _ = sys::eventfd_signal(waitable.as_fd());
                }
                return Ok(v);
            }
            Err(Error::Empty) => {}
            Err(e) => return Err(e),
        }
        let r = match &reg {
            Some(r) => r,
            None => reg.insert(Readable::new(waitable.as_fd())?),
        };
        // Arm: drain the eventfd, set the armed flag, look again.
        if waitable.ready_without_polling() {
            continue;
        }
        r.wait().await?;
    }
}

/// The waiter turn of the queue whose core is at `key` in this process.
pub(super) fn turn_for(key: usize) -> Arc<tokio::sync::Mutex<()>> {
    static TURNS: Mutex<Option<HashMap<usize, Weak<tokio::sync::Mutex<()>>>>> = Mutex::new(None);
    let mut turns = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let turns = turns.get_or_insert_with(HashMap::new);
    if let Some(t) = turns.get(&key).and_then(Weak::upgrade) {
        return t;
    }
    turns.retain(|_, w| w.strong_count() > 0);
    let t = Arc::new(tokio::sync::Mutex::new(()));
    turns.insert(key, Arc::downgrade(&t));
    t
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Awaitable [`get`](Queue::get): takes the next item, letting the
    /// runtime run other tasks while the queue is empty.
    ///
    /// Waiting costs no CPU: the queue's `eventfd` is registered with the
    /// reactor and the next producer to publish signals it (see
    /// [`aio`](crate::aio)).
    ///
    /// # Errors
    ///
    /// As [`get`](Queue::get); [`Error::Io`] when the `eventfd` cannot be
    /// registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is taken only in the poll that returns it, so
    /// dropping a pending `get_async` (in `select!`, a timeout, a killed
    /// coroutine) never loses an item.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let q = multiproc::Queue::new()?;
    /// let q2 = q.clone();
    /// tokio::spawn(async move { q2.put_async(7u32).await });
    /// assert_eq!(q.get_async().await?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_async(&self) -> Result<T> {
        get_loop(self, self.identity(), || self.get_nowait()).await
    }

    /// [`get_async`](Self::get_async) that gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when the time ran out; otherwise as
    /// [`get_async`](Self::get_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`get_async`](Self::get_async).
    pub async fn get_async_timeout(&self, timeout: Duration) -> Result<T> {
        tokio::time::timeout(timeout, self.get_async())
            .await
            .unwrap_or(Err(Error::Empty))
    }

    /// [`get_async`](Self::get_async) that gives up at `deadline`.
    ///
    /// # Errors
    ///
    /// As [`get_async_timeout`](Self::get_async_timeout).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`get_async`](Self::get_async).
    pub async fn get_async_deadline(&self, deadline: Instant) -> Result<T> {
        tokio::time::timeout_at(deadline.into(), self.get_async())
            .await
            .unwrap_or(Err(Error::Empty))
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Queue<T> {
    /// Awaitable [`put`](Queue::put). Room in the ring is the common case
    /// and returns at once; a full queue is waited for on tokio's blocking
    /// pool in 100 ms slices (a full ring has no descriptor to watch yet).
    ///
    /// # Errors
    ///
    /// As [`put`](Queue::put).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Dropping a pending `put_async` either has put the item or drops it
    /// within 100 ms — never both, never twice (as a dropped
    /// `tokio::sync::mpsc::Sender::send`).
    pub async fn put_async(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_until(item, None).await
    }

    /// [`put_async`](Self::put_async) that gives up after `timeout`,
    /// handing the item back.
    ///
    /// # Errors
    ///
    /// [`PutError::Full`] with the item when the time ran out; otherwise
    /// as [`put`](Queue::put).
    ///
    /// # Cancel safety
    ///
    /// As [`put_async`](Self::put_async).
    pub async fn put_async_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutError<T>> {
        self.put_until(item, Some(Instant::now() + timeout)).await
    }

    async fn put_until(
        &self,
        item: T,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutError<T>> {
        let item = match self.put_nowait(item) {
            Err(e) if e.is_full() && deadline.is_none_or(|d| Instant::now() < d) => e.into_inner(),
            other => return other,
        };
        let q = self.clone();
        let mut item = Some(item);
        blocking_slices(move || {
            let it = item.take().expect("the item is put back after each slice");
            let until = Instant::now() + SLICE;
            let until = deadline.map_or(until, |d| d.min(until));
            match q.put_deadline(it, until) {
                Err(e) if e.is_full() => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Some(Err(e));
                    }
                    item = Some(e.into_inner());
                    None
                }
                other => Some(other),
            }
        })
        .await
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// Awaitable [`get`](SimpleQueue::get), as [`Queue::get_async`].
    ///
    /// # Errors
    ///
    /// As [`get`](SimpleQueue::get).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping a pending `get_async` never loses an item.
    pub async fn get_async(&self) -> Result<T> {
        get_loop(self, self.identity(), || self.get_timeout(Duration::ZERO)).await
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> SimpleQueue<T> {
    /// Awaitable [`put`](SimpleQueue::put): immediate unless the ring is
    /// full, then on tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// As [`put`](SimpleQueue::put).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe for a full ring: the item may still be put after the
    /// future was dropped (it is never lost while the queue is read).
    pub async fn put_async(&self, item: T) -> std::result::Result<(), PutError<T>> {
        let q = self.clone();
        unwrap_blocking(tokio::task::spawn_blocking(move || q.put(item)).await)
    }
}

impl<T> JoinableQueue<T> {
    /// Awaitable [`join`](JoinableQueue::join): waits until every item put
    /// was marked done, on tokio's blocking pool in 100 ms slices.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the blocking pool fails.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits; a dropped future frees its blocking
    /// thread within 100 ms.
    pub async fn join_async(&self) -> Result<()>
    where
        T: Send + 'static,
    {
        let q = self.clone();
        blocking_slices(move || q.join_timeout(SLICE).then_some(())).await;
        Ok(())
    }

    /// [`join_async`](Self::join_async) for at most `timeout`; true when
    /// every item was marked done.
    ///
    /// # Errors
    ///
    /// As [`join_async`](Self::join_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn join_async_timeout(&self, timeout: Duration) -> Result<bool>
    where
        T: Send + 'static,
    {
        match tokio::time::timeout(timeout, self.join_async()).await {
            Ok(r) => r.map(|()| true),
            Err(_) => Ok(false),
        }
    }
}
