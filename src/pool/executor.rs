//! The shape of `concurrent.futures.ProcessPoolExecutor`, over [`Pool`].

use super::{AsyncResult, IMap, Pool, PoolBuilder};
use crate::error::{Error, Result};
use crate::process::Target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A process pool with the interface of Python's
/// `concurrent.futures.ProcessPoolExecutor`: [`submit`](Self::submit)
/// returns a [`Future`], [`map`](Self::map) a lazy iterator,
/// [`shutdown`](Self::shutdown) stops it.
///
/// Unlike Python's, a worker that dies does not break the executor: only
/// the future of the task it was running fails ([`Error::WorkerLost`]), and
/// later submissions work.
///
/// Dropping the executor is `shutdown(true, false)`: queued work finishes.
///
/// # Examples
/// ```
/// use multiproc::Executor;
///
/// fn cube(x: i64) -> i64 { x * x * x }
///
/// let ex = Executor::new(2)?;
/// let fut = ex.submit(cube, (3,))?;
/// assert_eq!(fut.result()?, 27);
/// let all: Vec<i64> = ex.map(cube, 1..=3).collect::<Result<_, _>>()?;
/// assert_eq!(all, [1, 8, 27]);
/// ex.shutdown(true, false)?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Executor {
    pool: Pool,
}

/// The pending result of [`Executor::submit`] (Python's `Future`).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// let ex = multiproc::Executor::new(1)?;
/// let f = ex.submit(nap, (100,))?;
/// assert!(!f.done());
/// assert!(f.result_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
/// assert!(f.wait_timeout(Duration::from_secs(10)));
/// assert_eq!(f.result()?, 100);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Future<R> {
    inner: AsyncResult<R>,
}

impl<R> Future<R> {
    /// Waits for the result and takes it.
    ///
    /// # Errors
    /// The task's error, as for [`AsyncResult::get`]; [`Error::Cancelled`]
    /// after a successful [`cancel`](Self::cancel).
    pub fn result(self) -> Result<R> {
        self.inner.get()
    }

    /// Waits at most `timeout` for the result and takes it.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it is not ready in time (the future stays
    /// usable); otherwise as for [`result`](Self::result).
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        self.inner.get_timeout(timeout)
    }

    /// Whether the task has finished (or was cancelled).
    pub fn done(&self) -> bool {
        self.inner.ready()
    }

    /// Waits at most `timeout` for the task to finish; `true` if it did.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.inner.wait_timeout(timeout)
    }

    /// Cancels the task if no worker has taken it yet; `true` if cancelled.
    pub fn cancel(&self) -> bool {
        self.inner.cancel()
    }
}

impl Executor {
    /// An executor with `max_workers` worker processes.
    ///
    /// # Errors
    /// As for [`PoolBuilder::build`].
    pub fn new(max_workers: usize) -> Result<Executor> {
        Executor::from_builder(Pool::builder().processes(max_workers))
    }

    /// An executor over a pool configured with a [`PoolBuilder`] (start
    /// method, initializer, `maxtasksperchild` as Python's
    /// `max_tasks_per_child`, task timeout).
    ///
    /// # Errors
    /// As for [`PoolBuilder::build`].
    ///
    /// # Examples
    /// ```
    /// fn pid() -> u32 { std::process::id() }
    /// let ex = multiproc::Executor::from_builder(
    ///     multiproc::Pool::builder().processes(1).maxtasksperchild(1),
    /// )?;
    /// let a = ex.submit(pid, ())?.result()?;
    /// let b = ex.submit(pid, ())?.result()?;
    /// assert_ne!(a, b);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_builder(builder: PoolBuilder) -> Result<Executor> {
        Ok(Executor {
            pool: builder.build()?,
        })
    }

    /// Queues `f(args...)`.
    ///
    /// # Examples
    /// ```
    /// fn add(a: u8, b: u8) -> u8 { a + b }
    /// let ex = multiproc::Executor::new(1)?;
    /// assert_eq!(ex.submit(add, (1, 2))?.result()?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::State`] after [`shutdown`](Self::shutdown); [`Error::Encode`]
    /// when the arguments cannot be encoded.
    pub fn submit<F, A, R>(&self, f: F, args: A) -> Result<Future<R>>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Ok(Future {
            inner: self.pool.apply_async(f, args)?,
        })
    }

    /// Applies `f` to every item lazily, results in order (Python's
    /// `Executor.map` with a bounded buffer).
    pub fn map<F, T, R, I>(&self, f: F, items: I) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.pool.imap(f, items)
    }

    /// Like [`map`](Self::map) with `chunksize` items per task.
    ///
    /// # Examples
    /// ```
    /// fn neg(x: i8) -> i8 { -x }
    /// let ex = multiproc::Executor::new(2)?;
    /// let v: Vec<i8> = ex.map_chunked(neg, 0..5, 2).collect::<Result<_, _>>()?;
    /// assert_eq!(v, [0, -1, -2, -3, -4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_chunked<F, T, R, I>(&self, f: F, items: I, chunksize: usize) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.pool.imap_chunked(f, items, chunksize)
    }

    /// Stops accepting work. With `cancel_futures`, tasks not yet taken by
    /// a worker are cancelled ([`Error::Cancelled`]). With `wait`, returns
    /// once the remaining tasks have finished and the workers have exited.
    ///
    /// # Errors
    /// [`Error::State`] if the pool's supervisor failed.
    ///
    /// # Examples
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// let ex = multiproc::Executor::new(1)?;
    /// let running = ex.submit(nap, (200,))?;
    /// let queued: Vec<_> = (0..5).map(|_| ex.submit(nap, (200,))).collect::<Result<_, _>>()?;
    /// std::thread::sleep(std::time::Duration::from_millis(50));
    /// ex.shutdown(true, true)?;
    /// assert!(running.result().is_ok());
    /// assert!(queued.into_iter().any(|f| matches!(f.result(), Err(multiproc::Error::Cancelled))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) -> Result<()> {
        if cancel_futures {
            for job in self.pool.shared.drain_pending() {
                job.sink.deliver(job.index, Err(Error::Cancelled));
            }
        }
        self.pool.close();
        if wait { self.pool.join() } else { Ok(()) }
    }

    /// Kills the workers at once; unfinished futures fail with
    /// [`Error::PoolTerminated`] (Python 3.14's `terminate_workers`).
    ///
    /// # Examples
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_secs(30)) }
    /// let ex = multiproc::Executor::new(1)?;
    /// let f = ex.submit(nap, ())?;
    /// ex.terminate_workers();
    /// assert!(matches!(f.result(), Err(multiproc::Error::PoolTerminated)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate_workers(&self) {
        self.pool.terminate();
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.shutdown(true, false);
    }
}
