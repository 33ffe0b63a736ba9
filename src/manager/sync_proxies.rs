//! Typed proxies for the queue and synchronization objects.

use super::proxies::{Proxy, proxy_type};
use super::proxy::{BaseProxy, arg};
use crate::error::Result;
use crate::pickle::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

fn secs(d: Duration) -> Value {
    Value::Float(d.as_secs_f64())
}

proxy_type!(
    /// A managed queue of `T` (Python's `Manager().Queue()` and
    /// `JoinableQueue()`): any process holding the proxy may put and get.
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<String>()?;
    /// q.put("job".to_string())?;
    /// assert_eq!(q.get()?, "job");
    /// assert!(matches!(q.get_nowait(), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    QueueProxy<T>, "Queue"
);

/// A managed `JoinableQueue` is a [`QueueProxy`] made by
/// [`Manager::joinable_queue`](super::RemoteManager::joinable_queue).
pub type JoinableQueueProxy<T = Value> = QueueProxy<T>;

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// `q.put(item)`: waits while the queue is full.
    ///
    /// On a queue without a `maxsize`, from a proxy on a local pipe to this
    /// crate's server, a small plain item goes through the queue's put inbox in
    /// shared memory instead of a round trip (see [Queue puts without a
    /// round trip](super#queue-puts-without-a-round-trip)); every later call
    /// sees it all the same.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn put(&self, item: T) -> Result<()> {
        let item = arg(&item)?;
        if self.base().inbox_put(&item)? {
            return Ok(());
        }
        self.base().call("put", vec![item])
    }

    /// `q.put(item, timeout=t)`.
    ///
    /// # Errors
    /// [`Error::Full`](crate::Error::Full) when still full after `timeout`.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        let item = arg(&item)?;
        if self.base().inbox_put(&item)? {
            return Ok(());
        }
        self.base()
            .call("put", vec![item, Value::Bool(true), secs(timeout)])
    }

    /// `q.put_nowait(item)`.
    ///
    /// # Errors
    /// [`Error::Full`](crate::Error::Full) when full.
    pub fn put_nowait(&self, item: T) -> Result<()> {
        let item = arg(&item)?;
        if self.base().inbox_put(&item)? {
            return Ok(());
        }
        self.base().call("put_nowait", vec![item])
    }

    /// Puts many items with the requests in flight together
    /// ([`BaseProxy::call_pipelined`]): one round trip per batch of calls.
    ///
    /// # Errors
    /// The first error of any put (the others still happened).
    pub fn put_many(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let mut calls = Vec::new();
        for i in items {
            let i = arg(&i)?;
            // Once one item has gone as a call, the rest follow it, in order.
            if calls.is_empty() && self.base().inbox_put(&i)? {
                continue;
            }
            calls.push(("put", vec![i]));
        }
        if calls.is_empty() {
            return Ok(());
        }
        for r in self.base().call_pipelined(calls)? {
            r?;
        }
        Ok(())
    }

    /// Gets `n` items (waiting for each) with the requests in flight
    /// together.
    ///
    /// # Errors
    /// The first error of any get; the items got are then lost to this
    /// caller, so use it where an error ends the work anyway.
    pub fn get_many(&self, n: usize) -> Result<Vec<T>> {
        self.base()
            .call_pipelined((0..n).map(|_| ("get", vec![])))?
            .into_iter()
            .map(|r| r.and_then(super::from_value))
            .collect()
    }

    /// `q.get()`: waits for an item.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`] (a manager that dies while this waits
    /// gives [`Error::Eof`](crate::Error::Eof) at once).
    pub fn get(&self) -> Result<T> {
        self.base().call("get", vec![])
    }

    /// `q.get(timeout=t)`.
    ///
    /// # Errors
    /// [`Error::Empty`](crate::Error::Empty) when nothing came within `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.base()
            .call("get", vec![Value::Bool(true), secs(timeout)])
    }

    /// `q.get_nowait()`.
    ///
    /// # Errors
    /// [`Error::Empty`](crate::Error::Empty) when empty.
    pub fn get_nowait(&self) -> Result<T> {
        self.base().call("get_nowait", vec![])
    }

    /// `q.qsize()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn qsize(&self) -> Result<usize> {
        self.base().call("qsize", vec![])
    }

    /// `q.empty()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn empty(&self) -> Result<bool> {
        self.base().call("empty", vec![])
    }

    /// `q.full()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn full(&self) -> Result<bool> {
        self.base().call("full", vec![])
    }

    /// `q.task_done()`.
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) `ValueError` when called more often than items were put.
    pub fn task_done(&self) -> Result<()> {
        self.base().call("task_done", vec![])
    }

    /// `q.join()`: waits until every item put has been marked done.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn join(&self) -> Result<()> {
        self.base().call("join", vec![])
    }
}

proxy_type!(
    /// A managed `Lock`, `RLock`, `Semaphore` or `BoundedSemaphore`
    /// (Python's `AcquirerProxy`). An `RLock` is owned by the proxy's
    /// connection, so a clone (its own connection) is another owner.
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let lock = m.lock()?;
    /// {
    ///     let _held = lock.lock()?;
    ///     assert!(!lock.clone().try_acquire()?);
    /// }
    /// assert!(lock.try_acquire()?);
    /// lock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    LockProxy, "Lock"
);

/// Held while a [`LockProxy`] is acquired through [`LockProxy::lock`];
/// releases on drop.
#[derive(Debug)]
pub struct LockProxyGuard<'a> {
    lock: &'a LockProxy,
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

impl LockProxy {
    /// `acquire()`: waits for the lock.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn acquire(&self) -> Result<()> {
        self.base().call::<bool>("acquire", vec![]).map(drop)
    }

    /// `acquire(False)`: true when taken.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn try_acquire(&self) -> Result<bool> {
        self.base().call("acquire", vec![Value::Bool(false)])
    }

    /// `acquire(timeout=t)`: true when taken.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.base()
            .call("acquire", vec![Value::Bool(true), secs(timeout)])
    }

    /// `release()`.
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) `RuntimeError` when not held (or, for an `RLock`,
    /// held by another owner); `ValueError` for a `BoundedSemaphore`
    /// released too often.
    pub fn release(&self) -> Result<()> {
        self.base().call("release", vec![])
    }

    /// `with lock:` — acquires and returns a guard that releases on drop.
    ///
    /// # Errors
    /// As for [`acquire`](Self::acquire).
    pub fn lock(&self) -> Result<LockProxyGuard<'_>> {
        self.acquire()?;
        Ok(LockProxyGuard { lock: self })
    }
}

proxy_type!(
    /// A managed `Event` (Python's `EventProxy`).
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let e = m.event()?;
    /// assert!(!e.wait_timeout(std::time::Duration::from_millis(10))?);
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    EventProxy, "Event"
);

impl EventProxy {
    /// `e.set()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn set(&self) -> Result<()> {
        self.base().call("set", vec![])
    }

    /// `e.clear()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn clear(&self) -> Result<()> {
        self.base().call("clear", vec![])
    }

    /// `e.is_set()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn is_set(&self) -> Result<bool> {
        self.base().call("is_set", vec![])
    }

    /// `e.wait()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn wait(&self) -> Result<()> {
        self.base().call::<bool>("wait", vec![]).map(drop)
    }

    /// `e.wait(timeout)`: true when set.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.base().call("wait", vec![secs(timeout)])
    }
}

proxy_type!(
    /// A managed `Condition` (over an `RLock` owned by this proxy's
    /// connection).
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let c = m.condition()?;
    /// c.acquire()?;
    /// assert!(!c.wait_timeout(std::time::Duration::from_millis(10))?);
    /// c.notify_all()?;
    /// c.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ConditionProxy, "Condition"
);

impl ConditionProxy {
    /// `c.acquire()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn acquire(&self) -> Result<()> {
        self.base().call::<bool>("acquire", vec![]).map(drop)
    }

    /// `c.release()`.
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) `RuntimeError` when not held by this proxy.
    pub fn release(&self) -> Result<()> {
        self.base().call("release", vec![])
    }

    /// `c.wait()`: releases, waits for a notify, re-acquires.
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) `RuntimeError` when not held by this proxy.
    pub fn wait(&self) -> Result<()> {
        self.base().call::<bool>("wait", vec![]).map(drop)
    }

    /// `c.wait(timeout)`: true when notified.
    ///
    /// # Errors
    /// As for [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.base().call("wait", vec![secs(timeout)])
    }

    /// `c.wait_for(predicate, timeout)`, evaluated here between waits.
    ///
    /// # Errors
    /// As for [`wait`](Self::wait).
    pub fn wait_for(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        while !predicate() {
            match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    self.wait_timeout(left)?;
                }
                None => self.wait()?,
            }
        }
        Ok(true)
    }

    /// `c.notify(n)`.
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) `RuntimeError` when not held by this proxy.
    pub fn notify(&self, n: usize) -> Result<()> {
        self.base().call("notify", vec![Value::Int(n as i64)])
    }

    /// `c.notify_all()`.
    ///
    /// # Errors
    /// As for [`notify`](Self::notify).
    pub fn notify_all(&self) -> Result<()> {
        self.base().call("notify_all", vec![])
    }
}

proxy_type!(
    /// A managed `Barrier` (Python's `BarrierProxy`).
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let b = m.barrier(1)?;
    /// assert_eq!(b.wait()?, 0);
    /// assert_eq!(b.parties()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    BarrierProxy, "Barrier"
);

impl BarrierProxy {
    /// `b.wait()`: the arrival index (0 for the last to arrive… as Python:
    /// `parties - 1` for the first).
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) with kind `BrokenBarrierError` when the barrier is
    /// or becomes broken.
    pub fn wait(&self) -> Result<usize> {
        self.base().call("wait", vec![])
    }

    /// `b.wait(timeout)`; a timeout breaks the barrier.
    ///
    /// # Errors
    /// As for [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.base().call("wait", vec![secs(timeout)])
    }

    /// `b.abort()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn abort(&self) -> Result<()> {
        self.base().call("abort", vec![])
    }

    /// `b.reset()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn reset(&self) -> Result<()> {
        self.base().call("reset", vec![])
    }

    /// `b.parties`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn parties(&self) -> Result<usize> {
        self.base()
            .call("__getattribute__", vec![Value::from("parties")])
    }

    /// `b.n_waiting`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn n_waiting(&self) -> Result<usize> {
        self.base()
            .call("__getattribute__", vec![Value::from("n_waiting")])
    }

    /// `b.broken`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn broken(&self) -> Result<bool> {
        self.base()
            .call("__getattribute__", vec![Value::from("broken")])
    }
}
