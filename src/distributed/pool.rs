//! A pool whose workers are the same program on any machine that reaches
//! the Redis server.
//!
//! # Entry points, not code addresses
//! A task names an [`EntryPoint`] by its *name* (made with
//! [`entry_point!`](crate::entry_point)); its argument and result are serde
//! data in the crate's codec. A worker looks the name up in its
//! [`Registry`] and refuses a task whose registry *schema* (a hash of every
//! entry's name, argument type and result type, the crate version and an
//! optional application version) differs from its own: the caller gets an
//! [`Error::InvalidArgument`] naming both. Nothing read from Redis is ever
//! run as code, so a message planted in Redis can only be a task that
//! fails (unlike pickle-based brokers).
//!
//! # Workers: one line in `main`
//! ```no_run
//! use multiproc::distributed::Registry;
//! fn square(x: u64) -> u64 { x * x }
//! fn main() {
//!     let square = multiproc::entry_point!(square);
//!     let registry = Registry::new().with(&square);
//!     registry.serve_if_worker(); // the one line: `myapp --multiproc-worker redis://…`
//!     // … the program's own work, e.g. a RedisPool submitting `square`.
//! }
//! ```
//! [`Registry::serve_if_worker`] returns at once in a normal run; started
//! as `myapp --multiproc-worker URL` (or with `MULTIPROC_WORKER=URL` in the
//! environment) the program serves tasks from that Redis until it is
//! killed, and never returns. Workers are registered in `main` (not by the
//! crate's load-time hook) because the entry points exist only once `main`
//! has built the registry.
//!
//! # Guarantees and failure model
//! * Tasks are delivered **at least once**: a worker takes a task from a
//!   Redis stream and acknowledges it only after its result is sent; a
//!   worker that dies (SIGKILL, machine lost) stops renewing its lease, and
//!   after the lease ([`Backend::with_lease`], default 10 s) the task is
//!   delivered to another worker.
//! * Results are **exactly once** at the caller: every task has an id, and
//!   the caller keeps the first result for an id and drops the others.
//! * A task delivered `max_attempts` times (default 3) without a result —
//!   it kills its worker each time — goes to the dead-letter list
//!   `<prefix>:pool:<name>:dead` and the caller gets
//!   [`Error::DeadLetter`] naming it. A worker takes fast tasks in batches
//!   (up to 64; one at a time once tasks take a millisecond or more), so a
//!   task that kills its worker can take the not-yet-started rest of its
//!   batch with it once: those are delivered again one at a time, and
//!   count that delivery. With `max_attempts` 1 they would be
//!   dead-lettered with it; use 2 or more.
//!
//! # Round trips
//! A worker reads a batch of tasks in one `XREADGROUP … COUNT`, runs them,
//! and sends every result (an `XADD` to the caller's result stream) with
//! the acknowledgement of the batch (`XACK`, trimming the stream now and
//! then) in one pipeline; a
//! batch that runs longer than 2 ms sends what is done so far before the
//! next task. A first delivery costs no attempt counter; only a
//! redelivered task is counted (`HINCRBY`). The caller sends tasks in
//! pipelines of up to 1,000 and collects results in reads of up to 512.
//! * A per-task timeout ([`RedisPool::with_task_timeout`]) bounds the
//!   caller's wait ([`Error::TaskTimeout`]); a worker does not start a task
//!   whose deadline passed (deadlines are wall-clock times: keep the
//!   machines' clocks in sync). A task already running is not interrupted.
//! * A panic in a task is [`Error::Panicked`] for that task; the worker
//!   goes on.
//! * [`RedisPool::size`] counts the workers whose heartbeat is fresh.

use super::registry::{EntryPoint, Registry};
use super::stream::StreamQueue;
use super::worker::{ResultMsg, TaskMsg, encode, keys, now_ms};
use super::{Backend, Conn, unique_id};
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counts live workers.
const SIZE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
";

/// Results of a batch: (input index, encoded outcome).
type Batch = mpsc::Receiver<(usize, Result<Vec<u8>>)>;

enum Slot {
    One(mpsc::Sender<Result<Vec<u8>>>),
    Many(usize, mpsc::Sender<(usize, Result<Vec<u8>>)>),
}

struct Shared {
    pending: Mutex<HashMap<String, Slot>>,
    duplicates: AtomicU64,
    stop: AtomicBool,
}

/// The caller's side of a distributed pool, with the local [`crate::Pool`]
/// shape: [`apply`](Self::apply), [`apply_async`](Self::apply_async),
/// [`submit`](Self::submit), [`map`](Self::map), [`imap`](Self::imap),
/// [`imap_unordered`](Self::imap_unordered).
///
/// # Entry points, not code addresses
/// A task names an [`EntryPoint`] by its *name* (made with
/// [`entry_point!`](crate::entry_point)); its argument and result are serde
/// data in the crate's codec. A worker looks the name up in its
/// [`Registry`] and refuses a task whose registry *schema* (a hash of every
/// entry's name, argument type and result type, the crate version and an
/// optional application version) differs from its own: the caller gets an
/// [`Error::InvalidArgument`] naming both. Nothing read from Redis is ever
/// run as code, so a message planted in Redis can only be a task that
/// fails (unlike pickle-based brokers).
///
/// # Workers: one line in `main`
/// ```no_run
/// use multiproc::distributed::Registry;
/// fn square(x: u64) -> u64 { x * x }
/// fn main() {
///     let square = multiproc::entry_point!(square);
///     let registry = Registry::new().with(&square);
///     registry.serve_if_worker(); // the one line: `myapp --multiproc-worker redis://…`
///     // … the program's own work, e.g. a RedisPool submitting `square`.
/// }
/// ```
/// [`Registry::serve_if_worker`] returns at once in a normal run; started
/// as `myapp --multiproc-worker URL` (or with `MULTIPROC_WORKER=URL` in the
/// environment) the program serves tasks from that Redis until it is
/// killed, and never returns. Workers are registered in `main` (not by the
/// crate's load-time hook) because the entry points exist only once `main`
/// has built the registry.
///
/// # Guarantees and failure model
/// * Tasks are delivered **at least once**: a worker takes a task from a
///   Redis stream and acknowledges it only after its result is sent; a
///   worker that dies (SIGKILL, machine lost) stops renewing its lease, and
///   after the lease ([`Backend::with_lease`], default 10 s) the task is
///   delivered to another worker.
/// * Results are **exactly once** at the caller: every task has an id, and
///   the caller keeps the first result for an id and drops the others.
/// * A task started `max_attempts` times (default 3) without a result — it
///   kills its worker each time — goes to the dead-letter list
///   `<prefix>:pool:<name>:dead` and the caller gets
///   [`Error::DeadLetter`] naming it.
/// * A per-task timeout ([`RedisPool::with_task_timeout`]) bounds the
///   caller's wait ([`Error::TaskTimeout`]); a worker does not start a task
///   whose deadline passed (deadlines are wall-clock times: keep the
///   machines' clocks in sync). A task already running is not interrupted.
/// * A panic in a task is [`Error::Panicked`] for that task; the worker
///   goes on.
/// * [`RedisPool::size`] counts the workers whose heartbeat is fresh.
///
/// # Examples
/// ```no_run
/// use multiproc::distributed::{Backend, RedisPool, Registry};
/// fn square(x: u64) -> u64 { x * x }
/// let square = multiproc::entry_point!(square);
/// let registry = Registry::new().with(&square);
/// registry.serve_if_worker();
/// let backend = Backend::connect("redis://127.0.0.1:6379")?;
/// let pool = RedisPool::new(&backend, "default", &registry)?;
/// assert_eq!(pool.apply(&square, 7)?, 49);
/// assert_eq!(pool.map(&square, vec![1, 2, 3])?, [1, 4, 9]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisPool {
    backend: Backend,
    caller: String,
    schema: u64,
    tasks: StreamQueue<TaskMsg>,
    conn: Mutex<Conn>,
    workers_key: String,
    shared: Arc<Shared>,
    next: AtomicU64,
    task_timeout: Option<Duration>,
    max_attempts: u32,
    collector: Option<JoinHandle<()>>,
    results_key: String,
}

impl RedisPool {
    /// The caller's side of the pool `pool`; tasks carry `registry`'s
    /// schema.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Authentication`] when the server cannot be
    /// used.
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let pool = RedisPool::new(&b, "default", &Registry::new())?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(backend: &Backend, pool: &str, registry: &Registry) -> Result<RedisPool> {
        let (tasks_name, workers_key, _, _) = keys(backend, pool);
        let caller = unique_id();
        let results_name = format!("pool:{pool}:results:{caller}");
        let results = StreamQueue::<ResultMsg>::open(backend, &results_name, false)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            duplicates: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = Arc::clone(&shared);
        let collector = std::thread::Builder::new()
            .name("multiproc-redis-results".into())
            .spawn(move || collect(results, sh))
            .map_err(Error::Io)?;
        Ok(RedisPool {
            backend: backend.clone(),
            caller,
            schema: registry.schema(),
            tasks: StreamQueue::open(backend, &tasks_name, false)?,
            conn: Mutex::new(backend.conn()),
            workers_key,
            shared,
            next: AtomicU64::new(0),
            task_timeout: None,
            max_attempts: 3,
            collector: Some(collector),
            results_key: backend.key("q", &results_name),
        })
    }

    /// Gives every task at most `timeout` (see the module docs).
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let pool = RedisPool::new(&b, "default", &Registry::new())?
    ///     .with_task_timeout(std::time::Duration::from_secs(30));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_task_timeout(mut self, timeout: Duration) -> RedisPool {
        self.task_timeout = Some(timeout);
        self
    }

    /// How many times a task may be started before it goes to the
    /// dead-letter list (default 3).
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let pool = RedisPool::new(&b, "default", &Registry::new())?.with_max_attempts(5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_max_attempts(mut self, attempts: u32) -> RedisPool {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The number of live workers (fresh heartbeat).
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let pool = RedisPool::new(&b, "default", &Registry::new())?;
    /// println!("{} workers", pool.size()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn size(&self) -> Result<usize> {
        let script = redis::Script::new(SIZE_LUA);
        let key = &self.workers_key;
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .run(|c| script.key(key).invoke(c))
    }

    /// Results that arrived twice (a task re-delivered after its worker
    /// died after sending) and were dropped.
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let pool = RedisPool::new(&b, "default", &Registry::new())?;
    /// assert_eq!(pool.duplicates_dropped(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn duplicates_dropped(&self) -> u64 {
        self.shared.duplicates.load(Ordering::Relaxed)
    }

    fn make_task<A: Serialize>(&self, entry: &str, arg: &A) -> Result<TaskMsg> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(TaskMsg {
            id: format!("{}/{n}", self.caller),
            caller: self.caller.clone(),
            entry: entry.to_string(),
            schema: self.schema,
            args: encode(arg)?,
            deadline: self
                .task_timeout
                .map(|t| (now_ms() + t.as_millis() as u64, t)),
            max_attempts: self.max_attempts,
        })
    }

    fn send(&self, tasks: Vec<(TaskMsg, Slot)>) -> Result<Vec<String>> {
        let ids: Vec<String> = tasks.iter().map(|t| t.0.id.clone()).collect();
        let mut msgs = Vec::with_capacity(tasks.len());
        {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (t, slot) in tasks {
                p.insert(t.id.clone(), slot);
                msgs.push(t);
            }
        }
        for chunk in msgs.chunks(1000) {
            if let Err(e) = self.tasks.put_many(chunk) {
                let mut p = self
                    .shared
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for id in &ids {
                    p.remove(id);
                }
                return Err(e);
            }
        }
        Ok(ids)
    }

    /// Submits one task; its result comes through the returned handle.
    ///
    /// # Errors
    /// [`Error::Encode`] for an argument that cannot be encoded,
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// let r = pool.apply_async(&square, 3)?;
    /// assert_eq!(r.get()?, 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async<A: Serialize, R: DeserializeOwned>(
        &self,
        entry: &EntryPoint<A, R>,
        arg: A,
    ) -> Result<RedisAsyncResult<R>> {
        let task = self.make_task(entry.name(), &arg)?;
        let (tx, rx) = mpsc::channel();
        let id = self.send(vec![(task, Slot::One(tx))])?.remove(0);
        Ok(RedisAsyncResult {
            id,
            rx,
            timeout: self.task_timeout,
            _t: PhantomData,
        })
    }

    /// [`apply_async`](Self::apply_async) under the executor's name.
    ///
    /// # Errors
    /// As [`apply_async`](Self::apply_async).
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// assert_eq!(pool.submit(&square, 4)?.get()?, 16);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn submit<A: Serialize, R: DeserializeOwned>(
        &self,
        entry: &EntryPoint<A, R>,
        arg: A,
    ) -> Result<RedisAsyncResult<R>> {
        self.apply_async(entry, arg)
    }

    /// Runs one task and waits for its result.
    ///
    /// # Errors
    /// The task's error: [`Error::Panicked`], [`Error::DeadLetter`],
    /// [`Error::TaskTimeout`], [`Error::InvalidArgument`] from a worker of
    /// another build, [`Error::Decode`]; [`Error::Io`] when the server
    /// cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// assert_eq!(pool.apply(&square, 5)?, 25);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply<A: Serialize, R: DeserializeOwned>(
        &self,
        entry: &EntryPoint<A, R>,
        arg: A,
    ) -> Result<R> {
        self.apply_async(entry, arg)?.get()
    }

    fn start_many<A: Serialize>(
        &self,
        entry: &str,
        items: impl IntoIterator<Item = A>,
    ) -> Result<(usize, Batch)> {
        let (tx, rx) = mpsc::channel();
        let mut tasks = Vec::new();
        for (i, a) in items.into_iter().enumerate() {
            let t = self.make_task(entry, &a)?;
            tasks.push((t, Slot::Many(i, tx.clone())));
        }
        let n = tasks.len();
        self.send(tasks)?;
        Ok((n, rx))
    }

    fn wait_many(&self, rx: &Batch, deadline: Option<Instant>) -> Result<(usize, Result<Vec<u8>>)> {
        match deadline {
            Some(d) => rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .map_err(|_| Error::TaskTimeout(self.task_timeout.unwrap_or_default())),
            None => rx.recv().map_err(|_| Error::PoolTerminated),
        }
    }

    /// Runs `entry` on every item and returns the results in order.
    ///
    /// # Errors
    /// The first failed item's error as [`Error::Task`] with its index;
    /// otherwise as [`apply`](Self::apply).
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// assert_eq!(pool.map(&square, 1..4)?, [1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<A: Serialize, R: DeserializeOwned>(
        &self,
        entry: &EntryPoint<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>> {
        self.imap(entry, items)?.collect()
    }

    /// Like [`map`](Self::map), yielding results in input order as they
    /// become available.
    ///
    /// # Errors
    /// Submission errors here; each item's error in the iterator as
    /// [`Error::Task`].
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// let v: Vec<u64> = pool.imap(&square, 1..4)?.collect::<Result<_, _>>()?;
    /// assert_eq!(v, [1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<'p, A: Serialize, R: DeserializeOwned + 'p>(
        &'p self,
        entry: &EntryPoint<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<impl Iterator<Item = Result<R>> + 'p> {
        let (n, rx) = self.start_many(entry.name(), items)?;
        let deadline = self.task_timeout.map(|t| Instant::now() + t);
        let mut early: HashMap<usize, Result<Vec<u8>>> = HashMap::new();
        let mut next = 0usize;
        Ok(std::iter::from_fn(move || {
            if next >= n {
                return None;
            }
            let i = next;
            next += 1;
            let raw = loop {
                if let Some(r) = early.remove(&i) {
                    break r;
                }
                match self.wait_many(&rx, deadline) {
                    Ok((j, r)) if j == i => break r,
                    Ok((j, r)) => {
                        early.insert(j, r);
                    }
                    Err(e) => break Err(e),
                }
            };
            Some(finish(i, raw))
        }))
    }

    /// Like [`imap`](Self::imap), yielding results in completion order.
    ///
    /// # Errors
    /// As [`imap`](Self::imap).
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// let mut v: Vec<u64> = pool.imap_unordered(&square, 1..4)?.collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, [1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<'p, A: Serialize, R: DeserializeOwned + 'p>(
        &'p self,
        entry: &EntryPoint<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<impl Iterator<Item = Result<R>> + 'p> {
        let (n, rx) = self.start_many(entry.name(), items)?;
        let deadline = self.task_timeout.map(|t| Instant::now() + t);
        let mut left = n;
        Ok(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            Some(match self.wait_many(&rx, deadline) {
                Ok((i, r)) => finish(i, r),
                Err(e) => Err(e),
            })
        }))
    }

    /// The caller id that names this pool handle's tasks.
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let pool = RedisPool::new(&b, "default", &Registry::new())?;
    /// assert!(!pool.caller().is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn caller(&self) -> &str {
        &self.caller
    }
}

fn finish<R: DeserializeOwned>(index: usize, raw: Result<Vec<u8>>) -> Result<R> {
    raw.and_then(|b| crate::codec::decode(&b, Vec::new()))
        .map_err(|e| Error::Task {
            index,
            source: Box::new(e),
        })
}

fn collect(results: StreamQueue<ResultMsg>, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let batch = match results.get_many(512, Duration::from_millis(300)) {
            Ok(b) => b,
            Err(Error::Empty) => continue,
            Err(e) => {
                log::warn!("distributed pool results: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        for r in batch {
            let outcome = r.outcome.map(|b| b.into_vec());
            match pending.remove(&r.id) {
                Some(Slot::One(tx)) => {
                    let _ = tx.send(outcome);
                }
                Some(Slot::Many(i, tx)) => {
                    let _ = tx.send((i, outcome));
                }
                None => {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Drop for RedisPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.collector.take() {
            let _ = t.join();
        }
        let key = &self.results_key;
        let _ = self
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .run(|c| redis::cmd("DEL").arg(key).query::<()>(c));
        let _ = &self.backend;
    }
}

/// The pending result of one task of a [`RedisPool`].
pub struct RedisAsyncResult<R> {
    id: String,
    rx: mpsc::Receiver<Result<Vec<u8>>>,
    timeout: Option<Duration>,
    _t: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> RedisAsyncResult<R> {
    /// Waits for the result (at most the pool's task timeout).
    ///
    /// # Errors
    /// As [`RedisPool::apply`].
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// assert_eq!(pool.apply_async(&square, 2)?.get()?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(self) -> Result<R> {
        match self.timeout {
            Some(t) => self.get_timeout(t),
            None => {
                let raw = self.rx.recv().map_err(|_| Error::PoolTerminated)?;
                raw.and_then(|b| crate::codec::decode(&b, Vec::new()))
            }
        }
    }

    /// Waits at most `timeout`.
    ///
    /// # Errors
    /// [`Error::TaskTimeout`] when the timeout passed; otherwise as
    /// [`RedisPool::apply`].
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// let r = pool.apply_async(&square, 2)?;
    /// assert_eq!(r.get_timeout(std::time::Duration::from_secs(10))?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(self, timeout: Duration) -> Result<R> {
        let raw = self.rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => Error::TaskTimeout(timeout),
            mpsc::RecvTimeoutError::Disconnected => Error::PoolTerminated,
        })?;
        raw.and_then(|b| crate::codec::decode(&b, Vec::new()))
    }

    /// The task's id (as named in errors and the dead-letter list).
    ///
    /// # Examples
    /// ```no_run
    /// # use multiproc::distributed::*;
    /// fn square(x: u64) -> u64 { x * x }
    /// # let b = Backend::connect("redis://127.0.0.1:6379")?;
    /// let square = multiproc::entry_point!(square);
    /// let pool = RedisPool::new(&b, "default", &Registry::new().with(&square))?;
    /// assert!(pool.apply_async(&square, 2)?.task_id().contains('/'));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_id(&self) -> &str {
        &self.id
    }
}
