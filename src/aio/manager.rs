//! Awaitable twins of the manager proxies' calls.
//!
//! A proxy talks to its manager over one blocking connection per process
//! (a call writes a request and waits for the reply). [`AsyncProxy`] shares
//! a proxy between tasks and runs its calls in tokio's blocking pool, on
//! the same connection as the proxy's blocking calls, so that what a
//! manager ties to a connection (an `RLock` or `Condition` hold) is the
//! same for both. Waits that may last (a queue `get`, a lock `acquire`, an
//! event `wait`) go in slices of 100 ms, between which a dropped future is
//! noticed.

use super::lock::Hold;
use super::{SLICE, blocking_slices, unwrap_blocking};
use crate::error::{Error, Result};
use crate::manager::{
    BarrierProxy, ConditionProxy, DictProxy, EventProxy, LockProxy, Proxy, QueueProxy,
};
use crate::pickle::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A manager proxy with awaitable calls, shared by tasks (clones share
/// the proxy and its connection).
///
/// Wrap any typed proxy (`AsyncProxy::new(manager.dict()?)`); the blocking
/// methods stay reachable through `Deref`. Every proxy has the generic
/// [`call_async`](Self::call_async); the queue, dict and synchronization
/// proxies have typed twins.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use multiproc::aio::AsyncProxy;
/// let m = multiproc::Manager::start()?;
/// let d = AsyncProxy::new(m.dict::<String, i64>()?);
/// d.set_async("a".to_string(), 1).await?;
/// assert_eq!(d.get_async("a".to_string()).await?, Some(1));
/// let q = AsyncProxy::new(m.queue::<u32>()?);
/// q.put_async(7).await?;
/// assert_eq!(q.get_async().await?, 7);
/// # Ok::<(), multiproc::Error>(())
/// # }).unwrap();
/// ```
pub struct AsyncProxy<P> {
    inner: Arc<Inner<P>>,
}

struct Inner<P> {
    proxy: P,
    /// Queue items a dropped `get_async` received after it was dropped:
    /// the next get returns them first, so that none is lost.
    stash: Mutex<VecDeque<Box<dyn Any + Send>>>,
}

impl<P> Clone for AsyncProxy<P> {
    fn clone(&self) -> Self {
        AsyncProxy {
            inner: self.inner.clone(),
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for AsyncProxy<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncProxy")
            .field(&self.inner.proxy)
            .finish()
    }
}

impl<P> std::ops::Deref for AsyncProxy<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.inner.proxy
    }
}

impl<P> From<P> for AsyncProxy<P> {
    fn from(proxy: P) -> Self {
        AsyncProxy::new(proxy)
    }
}

impl<P> AsyncProxy<P> {
    /// Wraps `proxy`.
    pub fn new(proxy: P) -> AsyncProxy<P> {
        AsyncProxy {
            inner: Arc::new(Inner {
                proxy,
                stash: Mutex::new(VecDeque::new()),
            }),
        }
    }
}

impl<P: Send + Sync + 'static> AsyncProxy<P> {
    /// Runs `f` on the proxy in tokio's blocking pool.
    async fn run<R: Send + 'static>(&self, f: impl FnOnce(&P) -> R + Send + 'static) -> R {
        let inner = self.inner.clone();
        unwrap_blocking(tokio::task::spawn_blocking(move || f(&inner.proxy)).await)
    }
}

impl<P: Proxy + Send + Sync + 'static> AsyncProxy<P> {
    /// Awaitable [`BaseProxy::call_method`](crate::manager::BaseProxy::call_method):
    /// calls `method` with plain arguments.
    ///
    /// # Errors
    ///
    /// As [`call_method`](crate::manager::BaseProxy::call_method).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may still be made.
    pub async fn call_async(&self, method: &str, args: Vec<Value>) -> Result<Value> {
        let method = method.to_string();
        self.run(move |p| p.base().call_method(&method, args)).await
    }
}

impl<K, V> AsyncProxy<DictProxy<K, V>>
where
    K: Serialize + DeserializeOwned + Send + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    /// Awaitable [`DictProxy::get`].
    ///
    /// # Errors
    ///
    /// As [`DictProxy::get`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn get_async(&self, key: K) -> Result<Option<V>> {
        self.run(move |d| d.get(&key)).await
    }

    /// Awaitable [`DictProxy::set`].
    ///
    /// # Errors
    ///
    /// As [`DictProxy::set`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped `set_async` may still set the value.
    pub async fn set_async(&self, key: K, value: V) -> Result<()> {
        self.run(move |d| d.set(key, value)).await
    }

    /// Awaitable [`DictProxy::del`].
    ///
    /// # Errors
    ///
    /// As [`DictProxy::del`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`set_async`](Self::set_async).
    pub async fn del_async(&self, key: K) -> Result<bool> {
        self.run(move |d| d.del(&key)).await
    }

    /// Awaitable [`DictProxy::pop`].
    ///
    /// # Errors
    ///
    /// As [`DictProxy::pop`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped `pop_async` may still remove the value.
    pub async fn pop_async(&self, key: K) -> Result<Option<V>> {
        self.run(move |d| d.pop(&key)).await
    }

    /// Awaitable [`DictProxy::update`].
    ///
    /// # Errors
    ///
    /// As [`DictProxy::update`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`set_async`](Self::set_async).
    pub async fn update_async(&self, pairs: Vec<(K, V)>) -> Result<()> {
        self.run(move |d| d.update(pairs)).await
    }

    /// Awaitable [`DictProxy::len`].
    ///
    /// # Errors
    ///
    /// As [`DictProxy::len`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn len_async(&self) -> Result<usize> {
        self.run(|d| d.len()).await
    }

    /// Awaitable [`DictProxy::items`].
    ///
    /// # Errors
    ///
    /// As [`DictProxy::items`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn items_async(&self) -> Result<Vec<(K, V)>> {
        self.run(|d| d.items()).await
    }
}

impl<T> AsyncProxy<QueueProxy<T>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn unstash(inner: &Inner<QueueProxy<T>>) -> Option<T> {
        let mut stash = inner.stash.lock().unwrap_or_else(|e| e.into_inner());
        let v = stash.pop_front()?;
        // Only this type's gets stash into it.
        Some(
            *v.downcast::<T>()
                .expect("a stashed item of the queue's type"),
        )
    }

    /// The get loop: `deadline` `None` waits as long as it takes.
    async fn get_until(&self, deadline: Option<Instant>) -> Result<T> {
        if let Some(v) = Self::unstash(&self.inner) {
            return Ok(v);
        }
        let inner = self.inner.clone();
        let got = blocking_slices(move || {
            let mut slice = SLICE;
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(Instant::now()));
            }
            let r = match Self::unstash(&inner) {
                Some(v) => Ok(v),
                None => inner.proxy.get_timeout(slice),
            };
            match r {
                Ok(v) => {
                    let back = inner.clone();
                    Some(Ok(Hold::new(v, move |v| {
                        back.stash
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_front(Box::new(v));
                    })))
                }
                Err(Error::Empty) if deadline.is_none_or(|d| Instant::now() < d) => None,
                Err(e) => Some(Err(e)),
            }
        })
        .await?;
        Ok(got.keep())
    }

    /// Awaitable [`QueueProxy::get`].
    ///
    /// # Errors
    ///
    /// As [`QueueProxy::get`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item received after the future was dropped is kept
    /// in this `AsyncProxy` (shared by its clones) and returned by the next
    /// get through it, so none is lost while the `AsyncProxy` is used. (It
    /// may come after an item that a get started meanwhile received.)
    pub async fn get_async(&self) -> Result<T> {
        self.get_until(None).await
    }

    /// [`get_async`](Self::get_async) for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when the time ran out; otherwise as
    /// [`QueueProxy::get`].
    ///
    /// # Cancel safety
    ///
    /// As [`get_async`](Self::get_async).
    pub async fn get_async_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(Some(Instant::now() + timeout)).await
    }

    /// Awaitable [`QueueProxy::put`].
    ///
    /// # Errors
    ///
    /// As [`QueueProxy::put`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped `put_async` may still put the item.
    pub async fn put_async(&self, item: T) -> Result<()> {
        self.run(move |q| q.put(item)).await
    }

    /// Awaitable [`QueueProxy::qsize`].
    ///
    /// # Errors
    ///
    /// As [`QueueProxy::qsize`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn qsize_async(&self) -> Result<usize> {
        self.run(|q| q.qsize()).await
    }

    /// Awaitable [`QueueProxy::task_done`].
    ///
    /// # Errors
    ///
    /// As [`QueueProxy::task_done`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: it may still be counted.
    pub async fn task_done_async(&self) -> Result<()> {
        self.run(|q| q.task_done()).await
    }

    /// Awaitable [`QueueProxy::join`].
    ///
    /// # Errors
    ///
    /// As [`QueueProxy::join`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits (its thread waits on until the queue is
    /// joined).
    pub async fn join_async(&self) -> Result<()> {
        self.run(|q| q.join()).await
    }
}

impl AsyncProxy<LockProxy> {
    /// Awaitable [`LockProxy::acquire`] (a managed `Lock`, `RLock`,
    /// `Semaphore` or `BoundedSemaphore`), returning a guard that releases
    /// when dropped. The hold belongs to the proxy's connection, as for the
    /// blocking calls.
    ///
    /// # Errors
    ///
    /// As [`LockProxy::acquire`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped `acquire_async` never keeps the lock (one
    /// taken after the drop is released).
    pub async fn acquire_async(&self) -> Result<AsyncProxyGuard> {
        let inner = self.inner.clone();
        blocking_slices(move || match inner.proxy.acquire_timeout(SLICE) {
            Ok(true) => {
                let back = inner.clone();
                Some(Ok(Hold::new((), move |()| {
                    let _ = back.proxy.release();
                })))
            }
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        })
        .await?
        .keep();
        Ok(AsyncProxyGuard { lock: self.clone() })
    }
}

/// Holds a managed lock taken with [`AsyncProxy::acquire_async`]; releases
/// it when dropped (in tokio's blocking pool when there is a runtime).
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct AsyncProxyGuard {
    lock: AsyncProxy<LockProxy>,
}

impl Drop for AsyncProxyGuard {
    fn drop(&mut self) {
        let inner = self.lock.inner.clone();
        super::lock::detached(move || {
            let _ = inner.proxy.release();
        });
    }
}

impl AsyncProxy<EventProxy> {
    /// Awaitable [`EventProxy::wait`].
    ///
    /// # Errors
    ///
    /// As [`EventProxy::wait`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn wait_async(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking_slices(move || match inner.proxy.wait_timeout(SLICE) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        })
        .await
    }

    /// Awaitable [`EventProxy::wait_timeout`]; true when set.
    ///
    /// # Errors
    ///
    /// As [`EventProxy::wait_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_async_timeout(&self, timeout: Duration) -> Result<bool> {
        match tokio::time::timeout(timeout, self.wait_async()).await {
            Ok(r) => r.map(|()| true),
            Err(_) => Ok(false),
        }
    }
}

impl AsyncProxy<ConditionProxy> {
    /// Awaitable [`ConditionProxy::acquire`].
    ///
    /// # Errors
    ///
    /// As [`ConditionProxy::acquire`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped `acquire_async` may still take the lock
    /// for the proxy's connection; release it with
    /// [`ConditionProxy::release`].
    pub async fn acquire_async(&self) -> Result<()> {
        self.run(|c| c.acquire()).await
    }

    /// Awaitable [`ConditionProxy::wait_timeout`] (`None`: as long as it
    /// takes); true when notified.
    ///
    /// # Errors
    ///
    /// As [`ConditionProxy::wait`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped wait goes on in the manager until it is
    /// notified or times out, and then holds the lock again.
    pub async fn wait_async(&self, timeout: Option<Duration>) -> Result<bool> {
        self.run(move |c| match timeout {
            None => c.wait().map(|()| true),
            Some(t) => c.wait_timeout(t),
        })
        .await
    }
}

impl AsyncProxy<BarrierProxy> {
    /// Awaitable [`BarrierProxy::wait`]; the arrival index.
    ///
    /// # Errors
    ///
    /// As [`BarrierProxy::wait`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped wait still counts as arrived.
    pub async fn wait_async(&self) -> Result<usize> {
        self.run(|b| b.wait()).await
    }
}
