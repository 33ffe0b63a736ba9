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
//! * A task started `max_attempts` times (default 3) without a result — it
//!   kills its worker each time — goes to the dead-letter list
//!   `<prefix>:pool:<name>:dead` and the caller gets
//!   [`Error::DeadLetter`] naming it.
//! * A per-task timeout ([`RedisPool::with_task_timeout`]) bounds the
//!   caller's wait ([`Error::TaskTimeout`]); a worker does not start a task
//!   whose deadline passed (deadlines are wall-clock times: keep the
//!   machines' clocks in sync). A task already running is not interrupted.
//! * A panic in a task is [`Error::Panicked`] for that task; the worker
//!   goes on.
//! * [`RedisPool::size`] counts the workers whose heartbeat is fresh.

use super::sync::Renewer;
use super::{Backend, Conn, RedisJoinableQueue, RedisQueue, unique_id};
use crate::error::{Error, RemotePanic, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The command-line flag that makes a program a worker.
pub const WORKER_FLAG: &str = "--multiproc-worker";
/// The environment variable that makes a program a worker (its value is
/// the Redis URL).
pub const WORKER_ENV: &str = "MULTIPROC_WORKER";
/// Optional: the pool a worker serves (default `"default"`).
pub const POOL_ENV: &str = "MULTIPROC_POOL";
/// Optional: the worker's task lease in milliseconds.
pub const LEASE_ENV: &str = "MULTIPROC_LEASE_MS";

/// Registers a worker's liveness: `KEYS[1]` zset, `ARGV[1]` id,
/// `ARGV[2]` lease ms.
const ALIVE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
";

/// Counts live workers.
const SIZE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
";

type Handler = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync>;
/// Results of a batch: (input index, encoded outcome).
type Batch = mpsc::Receiver<(usize, Result<Vec<u8>>)>;

/// A function workers can run, by name: `fn(A) -> R` with serde `A` and
/// `R` (use a tuple for several arguments). Made with
/// [`entry_point!`](crate::entry_point).
///
/// # Examples
/// ```
/// fn add(pair: (u32, u32)) -> u32 { pair.0 + pair.1 }
/// let add = multiproc::entry_point!(add);
/// assert_eq!(add.name(), "add");
/// ```
pub struct EntryPoint<A, R> {
    name: &'static str,
    f: fn(A) -> R,
}

impl<A, R> Clone for EntryPoint<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, R> Copy for EntryPoint<A, R> {}

impl<A, R> EntryPoint<A, R> {
    /// The entry point `f` under `name` (what
    /// [`entry_point!`](crate::entry_point) calls).
    ///
    /// # Examples
    /// ```
    /// fn neg(x: i8) -> i8 { -x }
    /// let e = multiproc::distributed::EntryPoint::new("neg", neg);
    /// assert_eq!(e.name(), "neg");
    /// ```
    pub fn new(name: &'static str, f: fn(A) -> R) -> Self {
        EntryPoint { name, f }
    }

    /// The name tasks use.
    ///
    /// # Examples
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// assert_eq!(multiproc::entry_point!(id).name(), "id");
    /// ```
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// An [`EntryPoint`] for the function `f`, named after it.
///
/// # Examples
/// ```
/// fn square(x: u64) -> u64 { x * x }
/// let square = multiproc::entry_point!(square);
/// assert_eq!(square.name(), "square");
/// ```
#[macro_export]
macro_rules! entry_point {
    ($f:path) => {
        $crate::distributed::EntryPoint::new(stringify!($f), $f)
    };
}

/// The entry points a program offers, and its schema identity.
///
/// # Examples
/// ```
/// use multiproc::distributed::Registry;
/// fn square(x: u64) -> u64 { x * x }
/// let r = Registry::new().with(&multiproc::entry_point!(square));
/// assert!(r.contains("square"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    entries: HashMap<&'static str, Handler>,
    signatures: BTreeMap<&'static str, String>,
    version: String,
}

impl Registry {
    /// An empty registry.
    ///
    /// # Examples
    /// ```
    /// assert!(!multiproc::distributed::Registry::new().contains("x"));
    /// ```
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds `entry`.
    ///
    /// # Examples
    /// ```
    /// fn f(x: u8) -> u8 { x }
    /// let r = multiproc::distributed::Registry::new().with(&multiproc::entry_point!(f));
    /// assert!(r.contains("f"));
    /// ```
    pub fn with<A, R>(mut self, entry: &EntryPoint<A, R>) -> Registry
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        let f = entry.f;
        let handler: Handler = Arc::new(move |bytes: &[u8]| {
            let arg: A = crate::codec::decode(bytes, Vec::new())?;
            let out = f(arg);
            encode(&out)
        });
        self.entries.insert(entry.name, handler);
        self.signatures.insert(
            entry.name,
            format!(
                "{}->{}",
                std::any::type_name::<A>(),
                std::any::type_name::<R>()
            ),
        );
        self
    }

    /// Adds an application version to the schema: workers of another
    /// version refuse this program's tasks and the other way round.
    ///
    /// # Examples
    /// ```
    /// let a = multiproc::distributed::Registry::new().version("1");
    /// let b = multiproc::distributed::Registry::new().version("2");
    /// assert_ne!(a.schema(), b.schema());
    /// ```
    pub fn version(mut self, version: &str) -> Registry {
        self.version = version.to_string();
        self
    }

    /// True when an entry point of that name is registered.
    ///
    /// # Examples
    /// ```
    /// assert!(!multiproc::distributed::Registry::new().contains("nope"));
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The schema hash: entry names and types, crate version, application
    /// version (FNV-1a, stable across builds of the same source).
    ///
    /// # Examples
    /// ```
    /// fn f(x: u8) -> u8 { x }
    /// fn g(x: u16) -> u16 { x }
    /// let a = multiproc::distributed::Registry::new().with(&multiproc::entry_point!(f));
    /// let b = a.clone().with(&multiproc::entry_point!(g));
    /// assert_ne!(a.schema(), b.schema());
    /// ```
    pub fn schema(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |s: &str| {
            for b in s.bytes().chain([0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(env!("CARGO_PKG_VERSION"));
        eat(&self.version);
        for (name, sig) in &self.signatures {
            eat(name);
            eat(sig);
        }
        h
    }

    /// Serves tasks when this program was started as a worker
    /// (`prog --multiproc-worker URL`, or `MULTIPROC_WORKER=URL`), and then
    /// exits; returns at once otherwise. Call it first thing in `main`.
    /// `MULTIPROC_POOL` names the pool (default `"default"`),
    /// `MULTIPROC_LEASE_MS` the task lease.
    ///
    /// # Panics
    /// Never; a worker that cannot serve prints why and exits with code 2.
    ///
    /// # Examples
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// let registry = multiproc::distributed::Registry::new()
    ///     .with(&multiproc::entry_point!(square));
    /// registry.serve_if_worker();
    /// ```
    pub fn serve_if_worker(&self) {
        let mut args = std::env::args().skip(1);
        let mut url = None;
        while let Some(a) = args.next() {
            if a == WORKER_FLAG {
                url = args.next();
                break;
            }
            if let Some(u) = a.strip_prefix("--multiproc-worker=") {
                url = Some(u.to_string());
                break;
            }
        }
        let url = url.or_else(|| std::env::var(WORKER_ENV).ok().filter(|u| !u.is_empty()));
        let Some(url) = url else { return };
        let pool = std::env::var(POOL_ENV).unwrap_or_else(|_| "default".into());
        let backend = Backend::connect(&url).map(|b| match std::env::var(LEASE_ENV) {
            Ok(ms) => match ms.parse::<u64>() {
                Ok(ms) => b.with_lease(Duration::from_millis(ms)),
                Err(_) => b,
            },
            Err(_) => b,
        });
        let res = backend.and_then(|b| self.serve(&b, &pool));
        match res {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("multiproc worker: {e}");
                std::process::exit(2);
            }
        }
    }

    /// Serves tasks of the pool `pool` on `backend` until the server cannot
    /// be reached for a minute.
    ///
    /// # Errors
    /// The server's error after a minute without it.
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// multiproc::distributed::Registry::new().serve(&b, "default")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn serve(&self, backend: &Backend, pool: &str) -> Result<()> {
        Worker::new(self, backend, pool)?.run()
    }
}

fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    crate::codec::encode_into(v, &mut buf, &mut fds)?;
    if !fds.is_empty() {
        return Err(Error::Encode(
            "a distributed task cannot carry OS handles".into(),
        ));
    }
    Ok(buf)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
struct TaskMsg {
    id: String,
    caller: String,
    entry: String,
    schema: u64,
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
    /// Wall-clock deadline (ms since the epoch) and the timeout it came from.
    deadline: Option<(u64, Duration)>,
    max_attempts: u32,
}

#[derive(Serialize, Deserialize)]
struct ResultMsg {
    id: String,
    outcome: std::result::Result<serde_bytes::ByteBuf, Error>,
}

fn keys(b: &Backend, pool: &str) -> (String, String, String, String) {
    (
        format!("pool:{pool}:tasks"),
        b.key("pool", &format!("{pool}:workers")),
        b.key("pool", &format!("{pool}:attempts")),
        b.key("pool", &format!("{pool}:dead")),
    )
}

struct Worker<'a> {
    registry: &'a Registry,
    backend: Backend,
    pool: String,
    id: String,
    schema: u64,
    tasks: RedisJoinableQueue<TaskMsg>,
    conn: Conn,
    results: HashMap<String, RedisQueue<ResultMsg>>,
    attempts_key: String,
    dead_key: String,
    _alive: Renewer,
}

impl<'a> Worker<'a> {
    fn new(registry: &'a Registry, backend: &Backend, pool: &str) -> Result<Worker<'a>> {
        let (tasks_name, workers_key, attempts_key, dead_key) = keys(backend, pool);
        let tasks = backend.joinable_queue::<TaskMsg>(&tasks_name)?;
        let id = unique_id();
        let mut conn = backend.conn();
        let lease_ms = backend.lease().as_millis() as u64;
        let alive = redis::Script::new(ALIVE_LUA);
        let beat = |conn: &mut Conn| {
            conn.run(|c| {
                alive
                    .key(&workers_key)
                    .arg(&id)
                    .arg(lease_ms)
                    .invoke::<i64>(c)
            })
        };
        beat(&mut conn)?;
        let mut beat_conn = backend.conn();
        let (wk, wid, alive2) = (
            workers_key.clone(),
            id.clone(),
            redis::Script::new(ALIVE_LUA),
        );
        let renewer = Renewer::start(backend.lease() / 3, move || {
            if let Err(e) =
                beat_conn.run(|c| alive2.key(&wk).arg(&wid).arg(lease_ms).invoke::<i64>(c))
            {
                log::warn!("worker heartbeat: {e}");
            }
        });
        log::info!("worker {id} serves pool '{pool}' at {}", backend.url());
        Ok(Worker {
            registry,
            backend: backend.clone(),
            pool: pool.to_string(),
            id,
            schema: registry.schema(),
            tasks,
            conn,
            results: HashMap::new(),
            attempts_key,
            dead_key,
            _alive: renewer,
        })
    }

    fn run(mut self) -> Result<()> {
        let mut failing_since: Option<Instant> = None;
        loop {
            let task = match self.tasks.get_timeout(Duration::from_secs(5)) {
                Ok(t) => t,
                Err(Error::Empty) => continue,
                Err(Error::Decode(e)) => {
                    log::warn!(
                        "worker {}: dropped a task that does not decode: {e}",
                        self.id
                    );
                    let _ = self.tasks.task_done();
                    continue;
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(60) {
                        return Err(e);
                    }
                    log::warn!("worker {}: {e}", self.id);
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            failing_since = None;
            if let Err(e) = self.handle(task) {
                // Redis failed somewhere between taking the task and
                // acknowledging it: let it go (not done), so that it is
                // delivered again after the lease, to this worker or
                // another; a result already sent makes a duplicate that the
                // caller drops.
                log::warn!("worker {}: {e}; the task will be delivered again", self.id);
                self.tasks.abandon();
            }
        }
    }

    fn handle(&mut self, task: TaskMsg) -> Result<()> {
        let (ak, tid) = (&self.attempts_key, &task.id);
        let attempts: u32 = self.conn.run(|c| {
            redis::pipe()
                .cmd("HINCRBY")
                .arg(ak)
                .arg(tid)
                .arg(1)
                .cmd("EXPIRE")
                .arg(ak)
                .arg(86_400)
                .ignore()
                .query::<(u32,)>(c)
                .map(|t| t.0)
        })?;
        let outcome = if attempts > task.max_attempts.max(1) {
            let name = format!("{} (entry point '{}')", task.id, task.entry);
            log::error!(
                "worker {}: task {name} moved to the dead-letter list",
                self.id
            );
            let (dk, entry) = (
                &self.dead_key,
                encode(&(&task.id, &task.entry, attempts - 1))?,
            );
            self.conn
                .run(|c| redis::cmd("RPUSH").arg(dk).arg(entry).query::<()>(c))?;
            Err(Error::DeadLetter {
                task: name,
                attempts: attempts - 1,
            })
        } else if task.schema != self.schema || !self.registry.contains(&task.entry) {
            Err(Error::InvalidArgument(format!(
                "worker {} cannot run task {} (entry point '{}'): the worker's build has schema {:016x}{}, the task's caller {:016x}; run workers of the same build",
                self.id,
                task.id,
                task.entry,
                self.schema,
                if self.registry.contains(&task.entry) {
                    ""
                } else {
                    " and no such entry point"
                },
                task.schema
            )))
        } else if task.deadline.is_some_and(|(d, _)| now_ms() > d) {
            Err(Error::TaskTimeout(
                task.deadline.map(|d| d.1).unwrap_or_default(),
            ))
        } else {
            let handler = Arc::clone(&self.registry.entries[task.entry.as_str()]);
            match panic::catch_unwind(AssertUnwindSafe(|| handler(&task.args))) {
                Ok(r) => r,
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "Box<dyn Any>".into());
                    Err(Error::Panicked(RemotePanic {
                        message,
                        location: None,
                        process: format!("worker {}", self.id),
                    }))
                }
            }
        };
        let msg = ResultMsg {
            id: task.id.clone(),
            outcome: outcome.map(serde_bytes::ByteBuf::from),
        };
        if !self.results.contains_key(&task.caller) {
            let q = self
                .backend
                .queue::<ResultMsg>(&format!("pool:{}:results:{}", self.pool, task.caller))?;
            self.results.insert(task.caller.clone(), q);
        }
        // Result first, then the acknowledgement: a worker that dies in
        // between makes a duplicate, which the caller drops.
        self.results[&task.caller].put(msg).map_err(Error::from)?;
        let (ak, tid) = (&self.attempts_key, &task.id);
        self.conn
            .run(|c| redis::cmd("HDEL").arg(ak).arg(tid).query::<()>(c))?;
        self.tasks.task_done()
    }
}

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
    tasks: RedisQueue<TaskMsg>,
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
        let results = backend.queue::<ResultMsg>(&results_name)?;
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
            tasks: backend.queue::<TaskMsg>(&tasks_name)?,
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
        let task = self.make_task(entry.name, &arg)?;
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
        let (n, rx) = self.start_many(entry.name, items)?;
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
        let (n, rx) = self.start_many(entry.name, items)?;
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

fn collect(results: RedisQueue<ResultMsg>, shared: Arc<Shared>) {
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
