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

mod executor;
pub mod futures;
#[cfg(feature = "progress")]
mod progress;
pub(crate) mod results;
mod supervisor;
pub(crate) mod worker;

pub use executor::{Executor, Shutdown, TaskFuture};
#[cfg(feature = "progress")]
pub use progress::Progress;
pub use results::AsyncResult;

use crate::codec;
use crate::connection::{Connection, Pipe};
use crate::error::{Error, Result};
use crate::process::bootstrap::task_entry_offset;
use crate::process::{StartMethod, Target, cpu_count, get_start_method};
use crate::shm::RawArray;
use results::{IterSink, MapSink, Sink, Slot};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use supervisor::{InitFn, Supervisor, WorkerSpec};
use worker::TaskEntry;

/// A task waiting for, or held by, a worker.
pub(crate) struct Job {
    id: u64,
    entry: u64,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
    sink: Arc<dyn Sink>,
    index: usize,
    /// How many workers died after this task was sent to them but before
    /// they started it.
    unstarted_losses: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    Closed,
    Terminated,
}

pub(crate) struct Queue {
    pending: VecDeque<Job>,
    next_id: u64,
    state: State,
    broken: Option<String>,
    finished: bool,
}

/// What the pool's handles and its supervisor share.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    wake: Connection,
    woken: AtomicBool,
    pids: Mutex<Vec<u32>>,
    /// Terminate with SIGKILL at once rather than SIGTERM first.
    kill: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the supervisor; at most one wake-up is ever outstanding, so
    /// this never blocks.
    fn wake(&self) {
        if !self.woken.swap(true, Ordering::SeqCst) {
            let _ = self.wake.send_bytes(b"");
        }
    }

    fn submit(&self, tasks: Vec<Task>) -> Result<Vec<u64>> {
        let mut q = self.lock();
        if let Some(why) = &q.broken {
            return Err(Error::PoolBroken(why.clone()));
        }
        if q.state != State::Running {
            return Err(Error::State(
                "the pool is not running (closed or terminated)",
            ));
        }
        let mut ids = Vec::with_capacity(tasks.len());
        for (entry, payload, fds, sink, index) in tasks {
            let id = q.next_id;
            q.next_id += 1;
            ids.push(id);
            q.pending.push_back(Job {
                id,
                entry,
                payload,
                fds,
                sink,
                index,
                unstarted_losses: 0,
            });
        }
        drop(q);
        self.wake();
        Ok(ids)
    }

    /// Takes the tasks with these ids out of the queue, if still there.
    fn remove_pending(&self, ids: &[u64]) -> Vec<Job> {
        let mut q = self.lock();
        let mut out = Vec::new();
        let mut i = 0;
        while i < q.pending.len() {
            if ids.contains(&q.pending[i].id) {
                out.extend(q.pending.remove(i));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Whether any task with these ids is still queued.
    fn any_pending(&self, ids: &[u64]) -> bool {
        self.lock().pending.iter().any(|j| ids.contains(&j.id))
    }

    /// Takes the queued tasks of `sink` out of the queue.
    fn remove_pending_of(&self, sink: &Arc<dyn Sink>) -> Vec<Job> {
        let mut q = self.lock();
        let (mine, rest): (VecDeque<Job>, VecDeque<Job>) = q
            .pending
            .drain(..)
            .partition(|j| std::ptr::addr_eq(Arc::as_ptr(&j.sink), Arc::as_ptr(sink)));
        q.pending = rest;
        mine.into_iter().collect()
    }

    /// Takes every queued task out of the queue.
    fn drain_pending(&self) -> Vec<Job> {
        self.lock().pending.drain(..).collect()
    }
}

/// Configures and starts a [`Pool`].
///
/// # Examples
/// ```
/// use multiproc::{Pool, StartMethod};
/// use std::time::Duration;
///
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// static FACTOR: AtomicU64 = AtomicU64::new(1);
/// fn setup(factor: u64) { FACTOR.store(factor, Ordering::Relaxed) }
/// fn scale(x: u64) -> u64 { x * FACTOR.load(Ordering::Relaxed) }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .start_method(StartMethod::ForkServer)
///     .initializer(setup, (10,))
///     .maxtasksperchild(100)
///     .task_timeout(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(pool.map(scale, 1..=4)?, [10, 20, 30, 40]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    init: Option<InitFn>,
    max_tasks: Option<usize>,
    timeout: Option<Duration>,
    limits: Option<crate::Limits>,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("method", &self.method)
            .field("initializer", &self.init.is_some())
            .field("max_tasks", &self.max_tasks)
            .field("timeout", &self.timeout)
            .field("worker_limits", &self.limits)
            .finish()
    }
}

/// The environment variable that sets the default number of pool workers.
const PROCESSES_VAR: &str = "MULTIPROC_PROCESSES";

impl PoolBuilder {
    /// The number of worker processes (default: [`Pool::default_size`]).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// The start method of the workers (default: [`get_start_method`]).
    /// With [`StartMethod::Fork`] the first workers are forked from the
    /// calling process (which must be single-threaded) and replacements
    /// come from the fork server, since the pool's supervisor thread makes
    /// forking unsafe.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A function that each worker runs once with `args` before its first
    /// task. If it panics the pool is broken: every task fails with
    /// [`Error::PoolBroken`] carrying the panic message.
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: Target<A, Output = ()>,
        A: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let _ = f;
        let entry = task_entry_offset(worker::apply_entry::<F, A, ()> as TaskEntry);
        self.init = Some(Arc::new(move || {
            let mut buf = Vec::new();
            let mut fds = Vec::new();
            codec::encode_into(&args, &mut buf, &mut fds)?;
            Ok((entry, buf, fds))
        }));
        self
    }

    /// Replace each worker after it has run `n` tasks (a chunk of the map
    /// family counts as one). `0` is an error at [`build`](Self::build).
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// Fail any task (or map chunk) that runs longer than `timeout` with
    /// [`Error::TaskTimeout`]; its worker is killed and replaced.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Resource limits for each worker (see [`Limits`](crate::Limits)).
    ///
    /// The memory limit applies to each worker process as a whole (its
    /// address space, over its life); the CPU time limit applies to each
    /// task (or map chunk): before a task the worker sets its CPU limit to
    /// what it has used so far plus the limit. A task that runs past either
    /// fails with [`Error::LimitExceeded`] naming the limit (wrapped in
    /// [`Error::Task`] for the map family), its worker is replaced, and the
    /// pool goes on.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, Limit, Limits, Pool};
    ///
    /// /// Holds `blocks` blocks of 64 MiB at once.
    /// fn hog(blocks: usize) -> usize {
    ///     let held: Vec<Vec<u8>> = (0..blocks).map(|_| vec![1u8; 64 << 20]).collect();
    ///     std::hint::black_box(held).len()
    /// }
    ///
    /// let pool = Pool::builder()
    ///     .processes(1)
    ///     .worker_limits(Limits::new().memory(512 << 20))
    ///     .build()?;
    /// let err = pool.apply(hog, (100,)).unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { limit: Limit::Memory(_), .. }));
    /// // The worker was replaced; the next task runs.
    /// assert_eq!(pool.apply(hog, (1,))?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn worker_limits(mut self, limits: crate::Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Starts the workers and the pool's supervisor thread.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 processes or `maxtasksperchild(0)`,
    /// or, without [`processes`](Self::processes), for a bad
    /// `MULTIPROC_PROCESSES` (see [`Pool::default_size`]);
    /// any error starting a worker (the workers already started are killed
    /// and reaped, not leaked); [`Error::DaemonicChildren`] in a daemonic
    /// process.
    pub fn build(self) -> Result<Pool> {
        let n = match self.processes {
            Some(n) => n,
            None => Pool::default_size()?,
        };
        if n == 0 {
            return Err(Error::InvalidArgument(
                "the number of processes must be at least 1".into(),
            ));
        }
        if self.max_tasks == Some(0) {
            return Err(Error::InvalidArgument(
                "maxtasksperchild must be at least 1".into(),
            ));
        }
        let spec = WorkerSpec {
            method: self.method.unwrap_or_else(get_start_method),
            init: self.init,
            max_tasks: self.max_tasks,
            timeout: self.timeout,
            limits: self.limits.map(|mut l| {
                l.per_task = true;
                l
            }),
            started: RawArray::from_slice(&vec![supervisor::NOT_STARTED; n])?,
        };
        let mut workers = Vec::with_capacity(n);
        for slot in 0..n {
            match supervisor::start_worker(&spec, spec.method, slot) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    for w in workers {
                        w.kill_now();
                    }
                    return Err(e);
                }
            }
        }
        let (wake_rx, wake_tx) = Pipe::new()?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                next_id: 0,
                state: State::Running,
                broken: None,
                finished: false,
            }),
            wake: wake_tx,
            woken: AtomicBool::new(false),
            pids: Mutex::new(workers.iter().map(|w| w.pid()).collect()),
            kill: AtomicBool::new(false),
        });
        let sup = Supervisor {
            shared: shared.clone(),
            wake: wake_rx,
            workers,
            spec,
            next: 0,
        };
        let thread = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(move || sup.run())?;
        Ok(Pool {
            shared,
            thread: Mutex::new(Some(thread)),
            processes: n,
        })
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Functions given to it are `fn` items or capture-free closures, as for
/// [`Process::new`](crate::Process::new); arguments are tuples of serde
/// values and may carry handles ([`Connection`], [`Handle`](crate::Handle)).
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

type Task = (u64, Vec<u8>, Vec<OwnedFd>, Arc<dyn Sink>, usize);

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

    fn map_tasks<F, A, R>(
        &self,
        args: Vec<A>,
        chunksize: Option<usize>,
        on_ok: Option<results::OnOk<Vec<R>>>,
        on_err: Option<results::OnErr>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let chunksize = match chunksize {
            Some(c) => check_chunksize(c)?,
            None => args.len().div_ceil(self.processes * 4).max(1),
        };
        let slot = Arc::new(Slot::new(on_ok, on_err));
        if args.is_empty() {
            self.check_running()?;
            slot.set(Ok(Vec::new()));
            return Ok(AsyncResult {
                slot,
                ids: Vec::new(),
                shared: self.shared.clone(),
            });
        }
        let entry = task_entry_offset(worker::chunk_entry::<F, A, R> as TaskEntry);
        let chunks = args.len().div_ceil(chunksize);
        let sink: Arc<dyn Sink> = Arc::new(MapSink::new(chunks, chunksize, slot.clone()));
        let mut tasks: Vec<Task> = Vec::with_capacity(chunks);
        for (i, chunk) in args.chunks(chunksize).enumerate() {
            let (payload, fds) = encode_chunk(chunk, i * chunksize)?;
            tasks.push((entry, payload, fds, sink.clone(), i));
        }
        let ids = self.shared.submit(tasks)?;
        Ok(AsyncResult {
            slot,
            ids,
            shared: self.shared.clone(),
        })
    }

    fn check_running(&self) -> Result<()> {
        let q = self.shared.lock();
        if let Some(why) = &q.broken {
            return Err(Error::PoolBroken(why.clone()));
        }
        if q.state != State::Running {
            return Err(Error::State(
                "the pool is not running (closed or terminated)",
            ));
        }
        Ok(())
    }

    /// Applies `f` to every item and returns the results in order. The
    /// items are cut into chunks of about `len / (4 * processes)`; each
    /// chunk is one task.
    ///
    /// # Errors
    /// [`Error::State`] after close or terminate; otherwise the first error
    /// of any item, as [`Error::Task`] with the item's index in the input
    /// and the task's own error inside: [`Error::Encode`] when an item
    /// cannot be encoded (nothing is queued), [`Error::Panicked`],
    /// [`Error::WorkerLost`], [`Error::TaskTimeout`], … Match on
    /// [`Error::root`] to look at the task's error whichever item it was.
    /// Errors of the pool as a whole ([`Error::PoolTerminated`],
    /// [`Error::PoolBroken`]) are not wrapped.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Error;
    /// fn square(x: i64) -> i64 { x * x }
    /// fn inverse(x: i64) -> i64 { 100 / x }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.map(square, 0..10)?, (0..10).map(|x| x * x).collect::<Vec<_>>());
    /// assert!(pool.map(square, Vec::new())?.is_empty());
    ///
    /// let err = pool.map(inverse, [5, 4, 0, 2]).unwrap_err();
    /// assert!(matches!(&err, Error::Task { index: 2, source } if source.panic().is_some()));
    /// assert!(matches!(err.root(), Error::Panicked(_)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<F, T, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, items)?.get()
    }

    /// [`map`](Self::map) with an explicit chunk size.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a chunk size of 0; otherwise as for
    /// [`map`](Self::map).
    ///
    /// # Examples
    /// ```
    /// fn inc(x: u32) -> u32 { x + 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(inc, 0..100, 20)?, (1..=100).collect::<Vec<_>>());
    /// assert!(pool.map_chunked(inc, 0..3, 0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_chunked<F, T, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let args: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.map_tasks::<F, (T,), R>(args, Some(chunksize), None, None)?
            .get()
    }

    /// Queues a [`map`](Self::map) and returns a handle to the whole list.
    ///
    /// # Errors
    /// As for [`map`](Self::map), except that task errors come from the
    /// handle.
    ///
    /// # Examples
    /// ```
    /// fn neg(x: i32) -> i32 { -x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let r = pool.map_async(neg, [1, 2, 3])?;
    /// assert_eq!(r.get()?, [-1, -2, -3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<F, T, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let args: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.map_tasks::<F, (T,), R>(args, None, None, None)
    }

    /// [`map_async`](Self::map_async) with a chunk size (`None`: the
    /// default) and callbacks: `on_ok` gets the whole list once, `on_err`
    /// the first error.
    ///
    /// # Errors
    /// As for [`map_chunked`](Self::map_chunked).
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// fn inc(x: u8) -> u8 { x + 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// let r = pool.map_async_with(inc, [1, 2], Some(1), move |v| s.lock().unwrap().extend_from_slice(v), |_| ())?;
    /// r.wait();
    /// assert_eq!(*seen.lock().unwrap(), [2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async_with<F, T, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
        on_ok: impl FnOnce(&Vec<R>) + Send + 'static,
        on_err: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let args: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.map_tasks::<F, (T,), R>(
            args,
            chunksize,
            Some(Box::new(on_ok)),
            Some(Box::new(on_err)),
        )
    }

    /// Like [`map`](Self::map) for functions of several arguments: each
    /// item is an argument tuple (Python's `starmap`).
    ///
    /// # Errors
    /// As for [`map`](Self::map).
    ///
    /// # Examples
    /// ```
    /// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap(pow, [(2, 3), (3, 2)])?, [8, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Target<A, Output = R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async(f, items, None)?.get()
    }

    /// [`starmap`](Self::starmap) with `chunksize` items per task (instead
    /// of about `len / (4 * processes)`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a chunk size of 0; otherwise as for
    /// [`map`](Self::map).
    ///
    /// # Examples
    /// ```
    /// fn sub(a: i32, b: i32) -> i32 { a - b }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap_chunked(sub, [(5, 1), (9, 2), (1, 1)], 2)?, [4, 7, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_chunked<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Target<A, Output = R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async(f, items, Some(chunksize))?.get()
    }

    /// Queues a [`starmap`](Self::starmap) (chunk size `None`: the default).
    ///
    /// # Errors
    /// As for [`map_async`](Self::map_async).
    ///
    /// # Examples
    /// ```
    /// fn mul(a: i32, b: i32) -> i32 { a * b }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap_async(mul, [(2, 3), (4, 5)], Some(1))?.get()?, [6, 20]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, Output = R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.map_tasks::<F, A, R>(items.into_iter().collect(), chunksize, None, None)
    }

    /// A lazy, ordered [`map`](Self::map): the input is read as results are
    /// consumed, with a bounded number of tasks in flight; each item is one
    /// task. Yields `Err` for an item whose task failed, and goes on.
    ///
    /// # Examples
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// // An endless input: only what is consumed (plus a bounded window) is read.
    /// let first: Vec<u64> = pool.imap(square, 0..).take(5).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4, 9, 16]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<F, T, R, I>(&self, f: F, items: I) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_chunked(f, items, 1)
    }

    /// [`imap`](Self::imap) with `chunksize` items per task; a failed chunk
    /// yields one `Err`. A chunk size of 0 yields one
    /// [`Error::InvalidArgument`].
    ///
    /// # Examples
    /// ```
    /// fn inc(x: u32) -> u32 { x + 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// let v: Vec<u32> = pool.imap_chunked(inc, 0..100, 10).collect::<Result<_, _>>()?;
    /// assert_eq!(v, (1..=100).collect::<Vec<_>>());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_chunked<F, T, R, I>(&self, f: F, items: I, chunksize: usize) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_with(f, items, chunksize, true)
    }

    /// Like [`imap`](Self::imap), yielding results as they finish.
    ///
    /// # Examples
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let mut v: Vec<u64> = pool.imap_unordered(square, 0..10).collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, (0..10).map(|x| x * x).collect::<Vec<_>>());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<F, T, R, I>(&self, f: F, items: I) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_unordered_chunked(f, items, 1)
    }

    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` items per
    /// task.
    ///
    /// # Examples
    /// ```
    /// fn twice(x: u32) -> u32 { 2 * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let sum: u32 = pool.imap_unordered_chunked(twice, 0..100, 7).map(|r| r.unwrap()).sum();
    /// assert_eq!(sum, 9900);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered_chunked<F, T, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_with(f, items, chunksize, false)
    }

    /// The imap family: `f` over `items`, `chunksize` items per task, in
    /// input order or as they finish.
    fn imap_with<F, T, R, I>(&self, f: F, items: I, chunksize: usize, ordered: bool) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let entry = task_entry_offset(worker::chunk_entry::<F, (T,), R> as TaskEntry);
        IMap::new(
            self,
            entry,
            items.into_iter().map(|x| (x,)),
            chunksize,
            ordered,
        )
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

type ChunkSource = Box<dyn FnMut(usize) -> Option<Result<(Vec<u8>, Vec<OwnedFd>)>>>;

/// The iterator of [`Pool::imap`], [`Pool::imap_unordered`] and
/// [`Executor::map`]: yields each result (or the error of its task, as
/// [`Error::Task`] naming the input item).
///
/// [`timeout`](Self::timeout) / [`deadline`](Self::deadline) bound the
/// whole iteration; with the `progress` feature,
/// `progress` shows a progress bar.
///
/// # Examples
/// ```
/// fn len(s: String) -> usize { s.len() }
/// let pool = multiproc::Pool::new(2)?;
/// let words = ["a", "bb", "ccc"].map(String::from);
/// let mut it = pool.imap(len, words);
/// assert_eq!(it.next().unwrap()?, 1);
/// assert_eq!(it.collect::<Result<Vec<_>, _>>()?, [2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct IMap<'p, R> {
    pool: &'p Pool,
    entry: u64,
    source: ChunkSource,
    chunksize: usize,
    sink: Arc<IterSink<R>>,
    submitted: usize,
    consumed: usize,
    exhausted: bool,
    ordered: bool,
    window: usize,
    current: std::vec::IntoIter<R>,
    deadline: Option<Instant>,
    /// The number of input items, when the input knew it.
    len: Option<usize>,
    timed_out: bool,
}

impl<R> std::fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<IMap submitted={} consumed={}>",
            self.submitted, self.consumed
        )
    }
}

impl<'p, R: DeserializeOwned + Send + 'static> IMap<'p, R> {
    fn new<A, I>(pool: &'p Pool, entry: u64, mut items: I, chunksize: usize, ordered: bool) -> Self
    where
        A: Serialize + 'static,
        I: Iterator<Item = A> + 'static,
    {
        let len = match items.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let source: ChunkSource = Box::new(move |n| {
            let chunk: Vec<A> = items.by_ref().take(n).collect();
            if chunk.is_empty() {
                None
            } else {
                // An error names the item by its position in the chunk;
                // `top_up` makes it the position in the input.
                Some(encode_chunk(&chunk, 0))
            }
        });
        let window = (pool.processes * if chunksize == 1 { 32 } else { 4 }).max(2);
        IMap {
            pool,
            entry,
            source,
            chunksize,
            sink: Arc::new(IterSink::new(chunksize)),
            submitted: 0,
            consumed: 0,
            exhausted: false,
            ordered,
            window,
            current: Vec::new().into_iter(),
            deadline: None,
            len,
            timed_out: false,
        }
    }

    /// Bounds the whole iteration: once `timeout` (counted from this call)
    /// has passed, a result that is not ready yields one
    /// [`Error::Timeout`], the items not yet handed to a worker are
    /// cancelled, and the iteration ends (Python's `Executor.map(...,
    /// timeout=)`). Results that are ready are still yielded before that.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = multiproc::Pool::new(1)?;
    /// let mut it = pool.imap(nap, [0, 10_000]).timeout(Duration::from_secs(2));
    /// assert_eq!(it.next().unwrap()?, 0);
    /// assert!(it.next().unwrap().unwrap_err().is_timeout());
    /// assert!(it.next().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.deadline(d),
            None => self,
        }
    }

    /// Like [`timeout`](Self::timeout), with the end as an instant.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The number of input items, when the input's `size_hint` gave it
    /// exactly (a range, a `Vec`, an array, …); `None` otherwise.
    ///
    /// # Examples
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.imap(id, 0..10).input_len(), Some(10));
    /// assert_eq!(pool.imap(id, (0..10).filter(|x| x % 2 == 0)).input_len(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn input_len(&self) -> Option<usize> {
        self.len
    }

    fn top_up(&mut self) {
        let mut tasks: Vec<Task> = Vec::new();
        while !self.exhausted && self.submitted - self.consumed < self.window {
            let index = self.submitted;
            match (self.source)(self.chunksize) {
                None => self.exhausted = true,
                Some(Ok((payload, fds))) => {
                    tasks.push((
                        self.entry,
                        payload,
                        fds,
                        self.sink.clone() as Arc<dyn Sink>,
                        index,
                    ));
                    self.submitted += 1;
                }
                Some(Err(e)) => {
                    let e = match e {
                        Error::Task { index: bad, source } => Error::Task {
                            index: index * self.chunksize + bad,
                            source,
                        },
                        other => other,
                    };
                    self.sink.put(index, Err(e));
                    self.submitted += 1;
                }
            }
        }
        if !tasks.is_empty() {
            let indices: Vec<usize> = tasks.iter().map(|t| t.4).collect();
            if let Err(e) = self.pool.shared.submit(tasks) {
                for i in indices {
                    self.sink.put(i, Err(clone_error(&e)));
                }
                self.exhausted = true;
            }
        }
    }

    /// The deadline passed: nothing more is read or queued, and the tasks
    /// still queued are cancelled.
    fn expire(&mut self) {
        self.timed_out = true;
        self.exhausted = true;
        let sink = self.sink.clone() as Arc<dyn Sink>;
        drop(self.pool.shared.remove_pending_of(&sink));
    }
}

fn clone_error(e: &Error) -> Error {
    results::copy_error(e)
}

impl<R: DeserializeOwned + Send + 'static> Iterator for IMap<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(v) = self.current.next() {
                return Some(Ok(v));
            }
            if self.timed_out {
                return None;
            }
            if self.chunksize == 0 {
                if self.exhausted {
                    return None;
                }
                self.exhausted = true;
                return Some(Err(Error::InvalidArgument(
                    "chunksize must be at least 1".into(),
                )));
            }
            self.top_up();
            if self.consumed == self.submitted {
                return None;
            }
            let want = if self.ordered {
                Some(self.consumed)
            } else {
                None
            };
            let Some(chunk) = self.sink.take(want, self.deadline) else {
                self.expire();
                return Some(Err(Error::Timeout));
            };
            self.consumed += 1;
            match chunk {
                Ok(v) => self.current = v.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.len {
            Some(n) if !self.timed_out && self.chunksize > 0 => {
                let yielded = (self.consumed * self.chunksize).min(n);
                let left = n - yielded + self.current.len();
                (0, Some(left))
            }
            _ => (0, None),
        }
    }
}
