//! The shape of `concurrent.futures.ProcessPoolExecutor`, over [`Pool`].

use super::{AsyncResult, IMap, Pool, PoolBuilder};
use crate::error::{Error, Result};
use crate::process::Target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// A process pool with the interface of Python's
/// `concurrent.futures.ProcessPoolExecutor`: [`submit`](Self::submit)
/// returns a [`TaskFuture`], [`map`](Self::map) a lazy iterator,
/// [`shutdown`](Self::shutdown) stops it; [`futures::wait`](crate::futures::wait)
/// and [`futures::as_completed`](crate::futures::as_completed) wait on
/// several futures.
///
/// Unlike Python's, a worker that dies does not break the executor: only
/// the future of the task it was running fails ([`Error::WorkerLost`]), and
/// later submissions work.
///
/// Dropping the executor is [`shutdown`](Self::shutdown): queued work
/// finishes.
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
/// ex.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Executor {
    pool: Pool,
}

/// How [`Executor::shutdown_with`] stops the executor (the arguments of
/// Python's `shutdown(wait=True, cancel_futures=False)`, with the same
/// defaults).
///
/// # Examples
/// ```
/// use multiproc::{Executor, Shutdown};
/// let ex = Executor::new(1)?;
/// ex.shutdown_with(Shutdown { cancel_futures: true, ..Shutdown::default() })?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shutdown {
    /// Return only once the remaining tasks have finished and the workers
    /// have exited (default `true`).
    pub wait: bool,
    /// Cancel the tasks no worker has taken yet; their futures fail with
    /// [`Error::Cancelled`] (default `false`).
    pub cancel_futures: bool,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            wait: true,
            cancel_futures: false,
        }
    }
}

/// The pending result of [`Executor::submit`] (Python's
/// `concurrent.futures.Future`; named so that it does not collide with
/// [`std::future::Future`]).
///
/// The waiting operations come in crossbeam's forms: `result` / `wait`
/// block, `try_result` does not, `*_timeout` waits at most a duration and
/// `*_deadline` until an instant.
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
/// assert!(f.exception().is_none());
/// assert_eq!(f.result()?, 100);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[doc(alias = "Future")]
#[derive(Debug)]
pub struct TaskFuture<R> {
    pub(crate) inner: AsyncResult<R>,
}

impl<R> TaskFuture<R> {
    /// What the task used, once it has finished: see
    /// [`AsyncResult::usage`].
    ///
    /// # Examples
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let ex = multiproc::Executor::new(1)?;
    /// let f = ex.submit(square, (9,))?;
    /// f.wait();
    /// assert!(f.usage().is_some());
    /// assert_eq!(f.result()?, 81);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn usage(&self) -> Option<crate::ResourceUsage> {
        self.inner.usage()
    }

    /// Waits for the result and takes it.
    ///
    /// # Errors
    /// The task's error, as for [`AsyncResult::get`]; [`Error::Cancelled`]
    /// after a successful [`cancel`](Self::cancel); [`Error::State`] when
    /// the result was already taken by a `result_*` method.
    pub fn result(self) -> Result<R> {
        self.inner.get()
    }

    /// Takes the result if the task has finished, without waiting.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it has not (the future stays usable);
    /// otherwise as for [`result`](Self::result).
    pub fn try_result(&self) -> Result<R> {
        self.inner.try_get()
    }

    /// Waits at most `timeout` for the result and takes it.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it is not ready in time (the future stays
    /// usable); otherwise as for [`result`](Self::result).
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        self.inner.get_timeout(timeout)
    }

    /// Waits until `deadline` at the latest for the result and takes it.
    ///
    /// # Errors
    /// As for [`result_timeout`](Self::result_timeout).
    pub fn result_deadline(&self, deadline: Instant) -> Result<R> {
        self.inner.get_deadline(deadline)
    }

    /// Waits for the task to finish and returns a copy of its error, or
    /// `None` when it succeeded (Python's `exception()`). A cancelled task
    /// gives [`Error::Cancelled`]. After the result was taken, a failed
    /// task gives [`Error::State`].
    ///
    /// # Examples
    /// ```
    /// fn boom() { panic!("boom") }
    /// let ex = multiproc::Executor::new(1)?;
    /// let f = ex.submit(boom, ())?;
    /// assert_eq!(f.exception().unwrap().panic().unwrap().message, "boom");
    /// assert!(f.result().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn exception(&self) -> Option<Error> {
        self.inner.error(None).unwrap_or(None)
    }

    /// [`exception`](Self::exception), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the task has not finished in time.
    pub fn exception_timeout(&self, timeout: Duration) -> Result<Option<Error>> {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.inner.error(Some(d)),
            None => self.inner.error(None),
        }
    }

    /// Waits until the task has finished (or was cancelled).
    pub fn wait(&self) {
        self.inner.wait()
    }

    /// Waits at most `timeout` for the task to finish; `true` if it did.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.inner.wait_timeout(timeout)
    }

    /// Waits until `deadline` at the latest for the task to finish; `true`
    /// if it did.
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.inner.wait_deadline(deadline)
    }

    /// Whether the task has finished (or was cancelled).
    pub fn done(&self) -> bool {
        self.inner.ready()
    }

    /// Whether a worker has taken the task and it has not finished: it can
    /// no longer be cancelled (Python's `running()`; a task handed to a
    /// worker that is still finishing an earlier one counts as running).
    pub fn running(&self) -> bool {
        self.inner.running()
    }

    /// Whether the task was cancelled.
    pub fn cancelled(&self) -> bool {
        self.inner.slot.cancelled()
    }

    /// Cancels the task if no worker has taken it yet; `true` if cancelled.
    pub fn cancel(&self) -> bool {
        self.inner.cancel()
    }

    /// Calls `f` once with the outcome when the task finishes (Python's
    /// `add_done_callback`, which passes the future; here `f` gets the
    /// result or the error by reference). It runs on the pool's supervisor
    /// thread, before waiters are woken, so keep it short; when the task has
    /// already finished it runs at once on this thread. Callbacks run in the
    /// order they were added. A callback that panics is caught and logged;
    /// the pool goes on. After the result was taken, `f` gets
    /// [`Error::State`].
    ///
    /// # Examples
    /// ```
    /// use std::sync::mpsc;
    /// fn double(x: u32) -> u32 { 2 * x }
    /// let ex = multiproc::Executor::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// let f = ex.submit(double, (21,))?;
    /// f.add_done_callback(move |r| tx.send(*r.unwrap()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), 42);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn add_done_callback<F>(&self, f: F)
    where
        F: FnOnce(std::result::Result<&R, &Error>) + Send + 'static,
    {
        self.inner.slot.add_done_callback(Box::new(f))
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

    /// An executor with [`Pool::default_size`] workers (Python's
    /// `ProcessPoolExecutor()`; `MULTIPROC_PROCESSES` overrides the CPU
    /// count).
    ///
    /// # Errors
    /// As for [`Pool::with_default_size`].
    ///
    /// # Examples
    /// ```
    /// let ex = multiproc::Executor::with_default_size()?;
    /// assert_eq!(ex.pool().processes(), multiproc::Pool::default_size()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_default_size() -> Result<Executor> {
        Executor::from_builder(Pool::builder())
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
    pub fn submit<F, A, R>(&self, f: F, args: A) -> Result<TaskFuture<R>>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Ok(TaskFuture {
            inner: self.pool.apply_async(f, args)?,
        })
    }

    /// Applies `f` to every item lazily, results in order (Python's
    /// `Executor.map` with a bounded buffer). See
    /// [`map_timeout`](Self::map_timeout) for Python's `timeout`, and
    /// `IMap::progress` (feature `progress`) for a progress bar.
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

    /// [`map`](Self::map) with Python's `timeout`: counted from this call,
    /// for the whole iteration. A result not ready by then yields
    /// [`Error::Timeout`], the items no worker has taken are cancelled and
    /// the iteration ends (see [`IMap::timeout`]).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let ex = multiproc::Executor::new(2)?;
    /// let got: Vec<_> = ex.map_timeout(nap, [1, 2], Duration::from_secs(60)).collect::<Result<_, _>>()?;
    /// assert_eq!(got, [1, 2]);
    /// let mut late = ex.map_timeout(nap, [30_000], Duration::from_millis(100));
    /// assert!(late.next().unwrap().unwrap_err().is_timeout());
    /// assert!(late.next().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_timeout<F, T, R, I>(&self, f: F, items: I, timeout: Duration) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.pool.imap(f, items).timeout(timeout)
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

    /// Stops accepting work and waits until the queued tasks have finished
    /// and the workers have exited (Python's `shutdown()`; see
    /// [`shutdown_with`](Self::shutdown_with) for its arguments).
    ///
    /// # Errors
    /// [`Error::State`] if the pool's supervisor failed.
    ///
    /// # Examples
    /// ```
    /// fn one() -> u8 { 1 }
    /// let ex = multiproc::Executor::new(1)?;
    /// let f = ex.submit(one, ())?;
    /// ex.shutdown()?;
    /// assert_eq!(f.result()?, 1);
    /// assert!(ex.submit(one, ()).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn shutdown(&self) -> Result<()> {
        self.shutdown_with(Shutdown::default())
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
    /// use multiproc::{Error, Executor, Shutdown};
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// let ex = Executor::new(1)?;
    /// let running = ex.submit(nap, (200,))?;
    /// let queued: Vec<_> = (0..5).map(|_| ex.submit(nap, (200,))).collect::<Result<_, _>>()?;
    /// std::thread::sleep(std::time::Duration::from_millis(50));
    /// ex.shutdown_with(Shutdown { wait: true, cancel_futures: true })?;
    /// assert!(running.result().is_ok());
    /// assert!(queued.into_iter().any(|f| matches!(f.result(), Err(Error::Cancelled))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn shutdown_with(&self, how: Shutdown) -> Result<()> {
        if how.cancel_futures {
            for job in self.pool.shared.drain_pending() {
                job.sink.deliver(job.index, Err(Error::Cancelled));
            }
        }
        self.pool.close();
        if how.wait { self.pool.join() } else { Ok(()) }
    }

    /// Stops the workers (SIGTERM, then SIGKILL after a second) and shuts
    /// the executor down; unfinished futures fail with
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

    /// Kills the workers at once with SIGKILL and shuts the executor down;
    /// unfinished futures fail with [`Error::PoolTerminated`] (Python
    /// 3.14's `kill_workers`).
    ///
    /// # Examples
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_secs(30)) }
    /// let ex = multiproc::Executor::new(1)?;
    /// let f = ex.submit(nap, ())?;
    /// ex.kill_workers();
    /// assert!(matches!(f.result(), Err(multiproc::Error::PoolTerminated)));
    /// assert!(ex.submit(nap, ()).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn kill_workers(&self) {
        self.pool.kill();
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
