//! Process pools (Python's `multiprocessing.Pool`) and an executor in the
//! shape of `concurrent.futures.ProcessPoolExecutor`.
//!
//! A pool keeps a fixed number of worker processes. A supervisor thread
//! hands them tasks over one channel per worker, several at a time when
//! tasks are quick, and knows at every moment which worker holds which
//! task. So a worker that is killed, crashes or exits fails only the task
//! it was running — with [`Error::WorkerLost`] naming the signal or exit
//! code; a worker killed between tasks fails none — the tasks queued behind
//! it are handed to other workers, a new
//! worker takes its place, and the pool goes on. Nothing hangs: a panic is
//! an error for its task, a per-task timeout kills and replaces the worker,
//! and arguments or results that cannot be encoded or decoded are errors
//! for their task.

mod backlog;
mod builder;
mod executor;
pub mod futures;
mod imap;
mod map;
#[cfg(feature = "progress")]
mod progress;
pub(crate) mod results;
mod supervisor;
pub(crate) mod worker;

pub use builder::PoolBuilder;
pub use executor::{Executor, Shutdown, TaskFuture};
pub use imap::IMap;
#[cfg(feature = "progress")]
pub use progress::Progress;
pub use results::AsyncResult;

use crate::codec;
use crate::error::{Error, Result};
use crate::process::{Target, cpu_count};
use backlog::{Shared, State};
use builder::PROCESSES_VAR;
use results::{Sink, Slot};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use worker::{TaskEntry, task_entry_offset};

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Functions given to it are `fn` items or capture-free closures, as for
/// [`Process::new`](crate::Process::new); arguments are tuples of serde
/// values and may carry handles ([`Connection`](crate::Connection), [`Handle`](crate::Handle)).
///
/// Faults stay with their task: a worker killed or crashed while running a
/// task fails that task with [`Error::WorkerLost`] (the signal or exit code
/// is in the error), the worker is replaced, and every other task
/// completes; tasks the dead worker had been handed but not started run on
/// other workers. A panic is [`Error::Panicked`] for its task.
///
/// Dropping the pool terminates it (like leaving Python's `with Pool()`):
/// workers are stopped and reaped and unfinished tasks fail with
/// [`Error::PoolTerminated`]. Call [`close`](Self::close) and
/// [`join`](Self::join) to let queued work finish first.
///
/// # Examples
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.apply(add, (2, 3))?, 5);
/// assert_eq!(pool.map(square, 0..5)?, [0, 1, 4, 9, 16]);
/// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
/// let lazy: Vec<u64> = pool.imap(square, 0..3).collect::<Result<_, _>>()?;
/// assert_eq!(lazy, [0, 1, 4]);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock().state;
        write!(f, "<Pool processes={} state={state:?}>", self.processes)
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    codec::encode_into(value, &mut buf, &mut fds).map_err(|e| match e {
        Error::Encode(why) => Error::Encode(format!("cannot encode the task's arguments: {why}")),
        other => other,
    })?;
    Ok((buf, fds))
}

/// Encodes a chunk of the map family whose first item is input item
/// `first`; an error names the item that could not be encoded.
fn encode_chunk<A: Serialize>(chunk: &[A], first: usize) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    encode(chunk).map_err(|e| {
        let bad = chunk.iter().position(|a| encode(a).is_err()).unwrap_or(0);
        results::at_item(first + bad, e)
    })
}

fn check_chunksize(chunksize: usize) -> Result<usize> {
    if chunksize == 0 {
        return Err(Error::InvalidArgument(
            "chunksize must be at least 1".into(),
        ));
    }
    Ok(chunksize)
}

impl Pool {
    /// A pool of `processes` workers with the default settings.
    ///
    /// # Errors
    /// As for [`PoolBuilder::build`].
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::new(3)?;
    /// assert_eq!(pool.processes(), 3);
    /// assert!(multiproc::Pool::new(0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A pool of [`default_size`](Self::default_size) workers (Python's
    /// `Pool()`).
    ///
    /// # Errors
    /// As for [`PoolBuilder::build`], including a bad `MULTIPROC_PROCESSES`.
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::with_default_size()?;
    /// assert_eq!(pool.processes(), multiproc::Pool::default_size()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_default_size() -> Result<Pool> {
        Pool::builder().build()
    }

    /// The number of workers a pool gets when none is given: the
    /// `MULTIPROC_PROCESSES` environment variable when it is set (like
    /// rayon's `RAYON_NUM_THREADS`), otherwise [`cpu_count`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the variable and its value when
    /// `MULTIPROC_PROCESSES` is set but is not a whole number of at least 1
    /// (a bad value is an error, not silently ignored).
    ///
    /// # Examples
    /// ```
    /// let n = multiproc::Pool::default_size()?;
    /// if std::env::var_os("MULTIPROC_PROCESSES").is_none() {
    ///     assert_eq!(n, multiproc::cpu_count());
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn default_size() -> Result<usize> {
        match std::env::var_os(PROCESSES_VAR) {
            None => Ok(cpu_count()),
            Some(v) => match v.to_str().map(|s| s.trim().parse::<usize>()) {
                Some(Ok(n)) if n >= 1 => Ok(n),
                _ => Err(Error::InvalidArgument(format!(
                    "{PROCESSES_VAR}={v:?}: expected a whole number of processes, at least 1"
                ))),
            },
        }
    }

    /// A builder for a pool with an initializer, start method, maximum tasks
    /// per worker or task timeout.
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::builder().processes(2).maxtasksperchild(50).build()?;
    /// assert_eq!(pool.processes(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(multiproc::Pool::new(2)?.processes(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the current workers (they change when workers are
    /// replaced).
    ///
    /// # Examples
    /// ```
    /// fn pid() -> u32 { std::process::id() }
    /// let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.worker_pids(), [pool.apply(pid, ())?]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared
            .pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn submit_one<F, A, R>(
        &self,
        args: &A,
        on_ok: Option<results::OnOk<R>>,
        on_err: Option<results::OnErr>,
    ) -> Result<AsyncResult<R>>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let entry = task_entry_offset(worker::apply_entry::<F, A, R> as TaskEntry);
        let (payload, fds) = encode(args)?;
        let slot = Arc::new(Slot::new(on_ok, on_err));
        let ids = self.shared.submit(vec![(
            entry,
            payload,
            fds,
            slot.clone() as Arc<dyn Sink>,
            0,
        )])?;
        Ok(AsyncResult {
            slot,
            ids,
            shared: self.shared.clone(),
        })
    }

    /// Runs `f(args...)` in a worker and waits for the result.
    ///
    /// # Errors
    /// [`Error::State`] after [`close`](Self::close) or
    /// [`terminate`](Self::terminate); [`Error::Encode`] when the arguments
    /// cannot be encoded; otherwise the task's error, as for
    /// [`AsyncResult::get`].
    ///
    /// # Examples
    /// ```
    /// fn pid_and(x: u32) -> (u32, u32) { (std::process::id(), x) }
    /// let pool = multiproc::Pool::new(1)?;
    /// let (pid, x) = pool.apply(pid_and, (7,))?;
    /// assert_eq!(x, 7);
    /// assert_ne!(pid, std::process::id());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.submit_one::<F, A, R>(&args, None, None)?.get()
    }

    /// Queues `f(args...)` and returns at once with a handle to its result.
    ///
    /// # Errors
    /// [`Error::State`] after close or terminate; [`Error::Encode`] when the
    /// arguments cannot be encoded (nothing is queued). Errors of the task
    /// itself come from the handle.
    ///
    /// # Examples
    /// ```
    /// fn slow_double(x: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(50)); x * 2 }
    /// let pool = multiproc::Pool::new(2)?;
    /// let handles: Vec<_> = (0..4).map(|i| pool.apply_async(slow_double, (i,))).collect::<Result<_, _>>()?;
    /// let results: Vec<u64> = handles.into_iter().map(|h| h.get()).collect::<Result<_, _>>()?;
    /// assert_eq!(results, [0, 2, 4, 6]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<AsyncResult<R>>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.submit_one::<F, A, R>(&args, None, None)
    }

    /// Like [`apply_async`](Self::apply_async), calling `on_ok` with the
    /// result or `on_err` with the error when the task ends (Python's
    /// `callback` and `error_callback`). Callbacks run on the pool's
    /// supervisor thread before the result becomes ready; keep them short.
    ///
    /// # Errors
    /// As for [`apply_async`](Self::apply_async).
    ///
    /// # Examples
    /// ```
    /// use std::sync::mpsc;
    /// fn half(x: u32) -> u32 { assert!(x % 2 == 0, "odd input"); x / 2 }
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// let tx2 = tx.clone();
    /// pool.apply_async_with(half, (8,), move |v| tx.send(format!("ok {v}")).unwrap(),
    ///     |e| panic!("{e}"))?.wait();
    /// pool.apply_async_with(half, (3,), |_| panic!("no"),
    ///     move |e| tx2.send(format!("err {}", e.panic().unwrap().message)).unwrap())?.wait();
    /// assert_eq!(rx.recv().unwrap(), "ok 4");
    /// assert_eq!(rx.recv().unwrap(), "err odd input");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async_with<F, A, R>(
        &self,
        f: F,
        args: A,
        on_ok: impl FnOnce(&R) + Send + 'static,
        on_err: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<R>>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.submit_one::<F, A, R>(&args, Some(Box::new(on_ok)), Some(Box::new(on_err)))
    }

    /// Accepts no more tasks; the queued ones still run. Then
    /// [`join`](Self::join) waits for them and for the workers to exit.
    ///
    /// # Examples
    /// ```
    /// fn one() -> u8 { 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// let r = pool.apply_async(one, ())?;
    /// pool.close();
    /// assert!(pool.apply(one, ()).is_err());
    /// pool.join()?;
    /// assert_eq!(r.get()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        let mut q = self.shared.lock();
        if q.state == State::Running {
            q.state = State::Closed;
        }
        drop(q);
        self.shared.wake();
    }

    /// Stops the workers at once (SIGTERM, then SIGKILL after a second);
    /// unfinished tasks fail with [`Error::PoolTerminated`].
    ///
    /// # Examples
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_secs(30)) }
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(nap, ())?;
    /// pool.terminate();
    /// pool.join()?;
    /// assert!(matches!(r.get(), Err(multiproc::Error::PoolTerminated)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate(&self) {
        self.shared.lock().state = State::Terminated;
        self.shared.wake();
    }

    /// [`terminate`](Self::terminate) with SIGKILL at once.
    fn kill(&self) {
        self.shared.kill.store(true, Ordering::SeqCst);
        self.terminate();
    }

    /// Waits until the pool has finished: after [`close`](Self::close), when
    /// every task has run and the workers have exited; after
    /// [`terminate`](Self::terminate), when the workers are gone.
    ///
    /// # Errors
    /// [`Error::State`] while the pool is still running (call `close` or
    /// `terminate` first).
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::new(1)?;
    /// assert!(pool.join().is_err());
    /// pool.close();
    /// pool.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        if self.shared.lock().state == State::Running {
            return Err(Error::State(
                "the pool is still running; close or terminate it first",
            ));
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                return Err(Error::State("the pool's supervisor thread panicked"));
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let running = self
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if running {
            if !self.shared.lock().finished {
                self.terminate();
            }
            let _ = self.join();
        }
    }
}
