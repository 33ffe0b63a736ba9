//! Awaitable twins of the manager proxies' calls.
//!
//! A proxy talks to its manager over one blocking connection per process
//! (a call writes a request and waits for the reply). [`AsyncProxy`] shares
//! a proxy between tasks and runs its quick calls in tokio's blocking pool,
//! on the same connection as the proxy's blocking calls, so that what a
//! manager ties to a connection (an `RLock` or `Condition` hold) is the
//! same for both. Waits go on a connection of their own: see
//! [`AsyncProxy`].

use super::lock::Hold;
use super::{SLICE, blocking_slices, unwrap_blocking};
use crate::error::{Error, Result};
use crate::manager::{
    BarrierProxy, BaseProxy, ConditionProxy, DictProxy, EventProxy, LockProxy, Proxy, QueueProxy,
    from_value,
};
use crate::pickle::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long after its deadline a timed wait gives up on a manager that
/// does not answer (and cancels its call).
const GRACE: Duration = Duration::from_millis(50);

/// A manager proxy with awaitable calls, shared by tasks (clones share
/// the proxy and its connection).
///
/// Wrap any typed proxy (`AsyncProxy::new(manager.dict()?)`); the blocking
/// methods stay reachable through `Deref`. Every proxy has the generic
/// [`call_async`](Self::call_async); the queue, dict and synchronization
/// proxies have typed twins.
///
/// # Waits: one call on a connection of their own
///
/// A queue `get`, an event or barrier `wait`, a `Lock` or semaphore
/// `acquire` may last. Each is **one** blocking call (with its deadline, if
/// any, sent to the manager), made from a thread of tokio's blocking pool
/// on a second connection of the `AsyncProxy`'s own (a proxy of the same
/// object, made at the first wait and kept), so an idle waiter makes no
/// calls at all and does not hold up the proxy's other calls. Per
/// `AsyncProxy` (clones included) one task at a time waits so, first come
/// first served; the others wait for their turn at no cost.
///
/// A dropped wait is cancelled by half-closing that connection (`shutdown`
/// for writing): the manager notices that its caller is gone at its next
/// look (a put or set wakes it, else it looks every 200 ms) and gives the
/// wait up, leaving the item in the queue or the lock free. The reply path
/// stays open, so what the manager had already handed out still arrives:
/// an item is kept for the next get, a lock is released. The next wait
/// opens a new connection; until the cancelled call has ended, it waits.
///
/// The calls tied to the proxy's connection (a managed `RLock`, a
/// `Condition`) stay on it, in calls of at most 100 ms.
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
    /// The turn to wait, with the waiting connection.
    waits: Arc<tokio::sync::Mutex<Waits>>,
}

/// What the waiting calls of an [`AsyncProxy`] share.
#[derive(Default)]
struct Waits {
    /// A proxy of the same object with a connection of its own, for the
    /// waiting calls; made at the first.
    waiter: Option<BaseProxy>,
    /// Queue items received for dropped gets, oldest first: the next gets
    /// return them before they ask the manager.
    stash: VecDeque<Value>,
}

impl<P> Drop for Inner<P> {
    fn drop(&mut self) {
        // No task waits (each holds the `Inner`), so the turn is free.
        let Ok(mut waits) = self.waits.try_lock() else {
            return;
        };
        if waits.stash.is_empty() {
            return;
        }
        // Items kept for gets that will never come go back to the queue
        // (at its back): nothing is lost.
        let Waits { waiter, stash } = std::mem::take(&mut *waits);
        let Some(waiter) = waiter else { return };
        super::lock::detached(move || {
            for v in stash {
                let put = waiter.call_method("put", vec![v, Value::Bool(true), Value::Float(5.0)]);
                if let Err(e) = put {
                    log::warn!("an item kept for a dropped get could not be put back: {e}");
                }
            }
        });
    }
}

/// Shared by a waiting call's future and its thread: whether the future
/// was dropped, and the connection's socket to half-close when it is.
#[derive(Default)]
struct Cancel {
    dropped: bool,
    socket: Option<OwnedFd>,
    shut: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Cancels the call of a dropped future.
struct OnDrop(Arc<Mutex<Cancel>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let mut c = lock(&self.0);
        c.dropped = true;
        if let Some(fd) = &c.socket {
            // The manager sees its caller gone and gives the wait up; the
            // reply (if one is on its way) can still be read.
            let _ = crate::sys::shutdown(fd.as_fd(), true);
            c.shut = true;
        }
    }
}

/// What a waiting call does with its result when its future is gone.
#[derive(Clone, Copy, PartialEq)]
enum Unclaimed {
    /// Keep it for the next get (a queue item).
    Stash,
    /// Drop it (an event's or a barrier's answer).
    Drop,
    /// Release what it took (a lock or semaphore acquire answering true).
    Release,
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
                waits: Arc::default(),
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
    /// Makes one waiting call, `method` with the arguments `args` makes
    /// of the time left until `deadline`, on the waiting connection (see
    /// the module docs). `None` when the deadline passed (with `GRACE` for
    /// the call) without an answer.
    async fn wait_call(
        &self,
        method: &'static str,
        args: fn(Option<Duration>) -> Vec<Value>,
        deadline: Option<Instant>,
        unclaimed: Unclaimed,
    ) -> Option<Result<Value>> {
        let turn = self.inner.waits.clone().lock_owned();
        let mut waits = match deadline {
            None => turn.await,
            Some(d) => tokio::time::timeout_at(d.into(), turn).await.ok()?,
        };
        if unclaimed == Unclaimed::Stash {
            if let Some(v) = waits.stash.pop_front() {
                return Some(Ok(v));
            }
        }
        let inner = self.inner.clone();
        let cancel = Arc::new(Mutex::new(Cancel::default()));
        let _on_drop = OnDrop(cancel.clone());
        let task = tokio::task::spawn_blocking(move || {
            let r = Self::call_waiting(&inner, &mut waits, &cancel, method, args, deadline);
            let inner = inner.clone();
            match r {
                Ok(v) if unclaimed == Unclaimed::Stash => {
                    // If the future is gone by now, the item goes to the
                    // stash before the turn passes on; the `Inner` lives
                    // until then, so that, dropped meanwhile, it still sees
                    // the item (and puts it back).
                    let alive = inner.clone();
                    Hold::new((Ok(v), waits), move |(r, mut w): (Result<Value>, _)| {
                        if let Ok(v) = r {
                            w.stash.push_back(v);
                        }
                        drop(w);
                        drop(alive);
                    })
                }
                Ok(Value::Bool(true)) if unclaimed == Unclaimed::Release => {
                    let back = inner.clone();
                    Hold::new(
                        (Ok(Value::Bool(true)), waits),
                        move |(_, w): (Result<Value>, _)| {
                            drop(w);
                            super::lock::detached(move || {
                                let _ = back.proxy.base().call_method("release", vec![]);
                            });
                        },
                    )
                }
                r => Hold::plain((r, waits)),
            }
        });
        let done = match deadline {
            None => task.await,
            Some(d) => tokio::time::timeout_at((d + GRACE).into(), task)
                .await
                .ok()?,
        };
        let (r, _turn) = unwrap_blocking(done).keep();
        Some(r)
    }

    /// The blocking part of [`wait_call`](Self::wait_call).
    fn call_waiting(
        inner: &Inner<P>,
        waits: &mut Waits,
        cancel: &Mutex<Cancel>,
        method: &str,
        args: fn(Option<Duration>) -> Vec<Value>,
        deadline: Option<Instant>,
    ) -> Result<Value> {
        let waiter = match waits.waiter.take() {
            Some(w) => w,
            None => inner.proxy.base().try_clone()?,
        };
        let socket = waiter.socket();
        let r = match socket {
            Err(e) => Err(e),
            Ok(fd) => {
                let go = {
                    let mut c = lock(cancel);
                    c.socket = Some(fd);
                    !c.dropped
                };
                let r = if go {
                    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    waiter.call_method(method, args(left))
                } else {
                    Err(Error::Empty)
                };
                let mut c = lock(cancel);
                c.socket = None;
                if c.shut {
                    // Half-closed: useless for another call.
                    waiter.disconnect();
                }
                r
            }
        };
        waits.waiter = Some(waiter);
        r
    }

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
    /// The get: `deadline` `None` waits as long as it takes.
    async fn get_until(&self, deadline: Option<Instant>) -> Result<T> {
        fn args(left: Option<Duration>) -> Vec<Value> {
            match left {
                None => vec![],
                Some(t) => vec![Value::Bool(true), Value::Float(t.as_secs_f64())],
            }
        }
        match self
            .wait_call("get", args, deadline, Unclaimed::Stash)
            .await
        {
            None => Err(Error::Empty),
            Some(r) => from_value(r?),
        }
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
    /// Waiting is one call on the `AsyncProxy`'s waiting connection (see
    /// [`AsyncProxy`]): an idle waiter makes no
    /// calls. Gets through one `AsyncProxy` (and its clones) take turns,
    /// first come first served.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping a pending `get_async` cancels its call (the
    /// manager gives the wait up within 200 ms, the item staying in the
    /// queue); an item the manager had already taken for it is **kept**
    /// and returned by the next get through this `AsyncProxy` (or one of
    /// its clones), before any item still in the queue, so the order is
    /// the queue's. If the `AsyncProxy` and all its clones are dropped
    /// first, kept items are put back at the queue's end. A get after a
    /// dropped one waits until the dropped call has ended.
    pub async fn get_async(&self) -> Result<T> {
        self.get_until(None).await
    }

    /// [`get_async`](Self::get_async) for at most `timeout`, which the
    /// manager is told: one call. Returns within 50 ms of the deadline
    /// whatever the manager does (a manager that has not answered by then
    /// has its call cancelled, as for a dropped get).
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
    /// when dropped.
    ///
    /// A `Lock` or semaphore is acquired in one call on the `AsyncProxy`'s
    /// waiting connection (see [`AsyncProxy`]), so an idle waiter
    /// makes no calls. An `RLock` belongs to the connection that took it,
    /// so it is acquired on the proxy's own connection, as by the blocking
    /// calls, in calls of at most 100 ms.
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
    /// Cancel safe: a dropped `acquire_async` never keeps the lock (its
    /// call is cancelled, and a lock it took all the same is released).
    pub async fn acquire_async(&self) -> Result<AsyncProxyGuard> {
        if self.base().token().typeid == "RLock" {
            let inner = self.inner.clone();
            blocking_slices(move || {
                let back = inner.clone();
                slice_taken(inner.proxy.acquire_timeout(SLICE), move || {
                    let _ = back.proxy.release();
                })
            })
            .await?
            .keep();
        } else {
            fn args(_: Option<Duration>) -> Vec<Value> {
                vec![]
            }
            let r = self
                .wait_call("acquire", args, None, Unclaimed::Release)
                .await
                .expect("no deadline");
            if !from_value::<bool>(r?)? {
                return Err(Error::Decode("acquire answered false".into()));
            }
        }
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
    /// Awaitable [`EventProxy::wait`]: one call on the `AsyncProxy`'s
    /// waiting connection (see [`AsyncProxy`]), so an idle waiter
    /// makes no calls.
    ///
    /// # Errors
    ///
    /// As [`EventProxy::wait`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits (a dropped wait's call is cancelled).
    pub async fn wait_async(&self) -> Result<()> {
        self.wait_until(None).await.map(|_| ())
    }

    /// Awaitable [`EventProxy::wait_timeout`]; true when set. The manager
    /// is told the timeout (one call); returns within 50 ms of it whatever
    /// the manager does.
    ///
    /// # Errors
    ///
    /// As [`EventProxy::wait_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_async_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_until(Instant::now().checked_add(timeout)).await
    }

    async fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        fn args(left: Option<Duration>) -> Vec<Value> {
            left.map(|t| vec![Value::Float(t.as_secs_f64())])
                .unwrap_or_default()
        }
        match self
            .wait_call("wait", args, deadline, Unclaimed::Drop)
            .await
        {
            None => Ok(false),
            Some(r) => from_value(r?),
        }
    }
}

/// One slice of a lock acquire made in slices: the lock taken (a hold that
/// calls `release` unless kept), not yet (`None`), or the call's error.
fn slice_taken(
    taken: Result<bool>,
    release: impl FnOnce() + Send + 'static,
) -> Option<Result<Hold<()>>> {
    match taken {
        Ok(true) => Some(Ok(Hold::new((), move |()| release()))),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    }
}

impl AsyncProxy<ConditionProxy> {
    /// Awaitable [`ConditionProxy::acquire`]: the lock is taken for the
    /// proxy's connection (which the condition's waits and notifies must
    /// use), in calls of at most 100 ms.
    ///
    /// # Errors
    ///
    /// As [`ConditionProxy::acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped `acquire_async` never keeps the lock (one its
    /// call took after the drop is released).
    pub async fn acquire_async(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking_slices(move || {
            let r = inner.proxy.base().call_method(
                "acquire",
                vec![Value::Bool(true), Value::Float(SLICE.as_secs_f64())],
            );
            let back = inner.clone();
            slice_taken(r.and_then(from_value::<bool>), move || {
                let _ = back.proxy.release();
            })
        })
        .await?
        .keep();
        Ok(())
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
    /// Not cancel safe. The condition's lock belongs to the proxy's
    /// connection, so the wait must be made on it, and the manager's wait
    /// ends only when notified, at its timeout, or when that connection
    /// closes (which would leave the lock to a connection that is gone).
    /// So a dropped wait goes on in the manager until it is notified or
    /// times out, and then the connection holds the lock again, as after a
    /// wait (asyncio's state after a cancelled wait); the proxy's next call
    /// (a `release`, say) waits until then. Give the wait a timeout where
    /// it may be dropped.
    pub async fn wait_async(&self, timeout: Option<Duration>) -> Result<bool> {
        self.run(move |c| match timeout {
            None => c.wait().map(|()| true),
            Some(t) => c.wait_timeout(t),
        })
        .await
    }
}

impl AsyncProxy<BarrierProxy> {
    /// Awaitable [`BarrierProxy::wait`] (with the barrier's default
    /// timeout); the arrival index. One call on the `AsyncProxy`'s waiting
    /// connection (see [`AsyncProxy`]).
    ///
    /// # Errors
    ///
    /// As [`BarrierProxy::wait`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in that nothing is left behind: dropping a pending wait
    /// cancels its call, and the manager then **breaks** the barrier (the
    /// other waiters get `BrokenBarrierError`), as when a waiter times out
    /// or its process dies; a party that left is not counted as arrived.
    pub async fn wait_async(&self) -> Result<usize> {
        fn args(_: Option<Duration>) -> Vec<Value> {
            vec![]
        }
        let r = self
            .wait_call("wait", args, None, Unclaimed::Drop)
            .await
            .expect("no deadline");
        from_value(r?)
    }
}
