//! [`PoolBuilder`]: a pool's settings, and starting its workers and
//! supervisor.

use super::Pool;
use super::backlog::{Queue, Shared, State};
use super::supervisor::{self, InitFn, Supervisor, WorkerSpec};
use super::worker::{self, TaskEntry, task_entry_offset};
use crate::codec;
use crate::connection::Pipe;
use crate::error::{Error, Result};
use crate::process::{StartMethod, Target, get_start_method};
use crate::shm::RawArray;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
pub(super) const PROCESSES_VAR: &str = "MULTIPROC_PROCESSES";

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
