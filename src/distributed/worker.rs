//! A pool worker: takes tasks from the pool's stream, runs registered
//! entry points, sends results back to each caller.

use super::registry::Registry;
use super::stream::{Entry, StreamQueue, decode};
use super::sync::Renewer;
use super::{Backend, Conn, unique_id};
use crate::error::{Error, RemotePanic, Result};
use serde::{Deserialize, Serialize};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Registers a worker's liveness: `KEYS[1]` zset, `ARGV[1]` id,
/// `ARGV[2]` lease ms.
const ALIVE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
";

/// The first batch a worker takes.
const START_PREFETCH: usize = 8;
/// The largest batch a worker takes at once.
const MAX_PREFETCH: usize = 64;
/// Tasks faster than this on average let the worker take bigger batches.
const FAST_TASK: Duration = Duration::from_millis(1);
/// Results and acknowledgements are sent at the latest this long after
/// the previous ones, when a batch runs longer.
const FLUSH_AFTER: Duration = Duration::from_millis(2);

pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    pub(crate) id: String,
    pub(crate) caller: String,
    pub(crate) entry: String,
    pub(crate) schema: u64,
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
    /// Wall-clock deadline (ms since the epoch) and the timeout it came from.
    pub(crate) deadline: Option<(u64, Duration)>,
    pub(crate) max_attempts: u32,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ResultMsg {
    pub(crate) id: String,
    pub(crate) outcome: std::result::Result<serde_bytes::ByteBuf, Error>,
}

pub(crate) fn keys(b: &Backend, pool: &str) -> (String, String, String, String) {
    (
        format!("pool:{pool}:tasks"),
        b.key("pool", &format!("{pool}:workers")),
        b.key("pool", &format!("{pool}:attempts")),
        b.key("pool", &format!("{pool}:dead")),
    )
}

pub(crate) struct Worker<'a> {
    registry: &'a Registry,
    backend: Backend,
    pool: String,
    id: String,
    schema: u64,
    tasks: StreamQueue<TaskMsg>,
    conn: Conn,
    attempts_key: String,
    dead_key: String,
    _alive: Renewer,
}

impl<'a> Worker<'a> {
    pub(crate) fn new(registry: &'a Registry, backend: &Backend, pool: &str) -> Result<Worker<'a>> {
        let (tasks_name, workers_key, attempts_key, dead_key) = keys(backend, pool);
        let tasks = StreamQueue::<TaskMsg>::open(backend, &tasks_name, true)?;
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
            attempts_key,
            dead_key,
            _alive: renewer,
        })
    }

    pub(crate) fn run(mut self) -> Result<()> {
        let mut failing_since: Option<Instant> = None;
        let mut prefetch = START_PREFETCH;
        loop {
            // Tasks of dead workers are claimed one at a time, so that a
            // task that kills its worker takes no other task down with it
            // more than once.
            let taken = self.tasks.core().take_marked(
                prefetch,
                1,
                Some(Instant::now() + Duration::from_secs(5)),
                false,
            );
            let (batch, claimed) = match taken {
                Ok(b) => b,
                Err(Error::Empty) => continue,
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
            let started = Instant::now();
            let n = batch.len();
            if let Err(e) = self.run_batch(batch, claimed) {
                // Redis failed somewhere between taking the tasks and
                // acknowledging them: let them go (not done), so that they
                // are delivered again after the lease, to this worker or
                // another; a result already sent makes a duplicate that the
                // caller drops.
                log::warn!(
                    "worker {}: {e}; unfinished tasks will be delivered again",
                    self.id
                );
            }
            // Fast tasks: take more at once (fewer round trips); slow
            // ones: one at a time (no task waits behind a slow one while
            // another worker idles).
            let per_task = started.elapsed() / n.max(1) as u32;
            prefetch = if per_task < FAST_TASK {
                (prefetch * 2).min(MAX_PREFETCH)
            } else {
                1
            };
        }
    }

    /// Runs a batch of taken entries in order. Results and
    /// acknowledgements go out together, in one round trip at the end, or
    /// as soon as [`FLUSH_AFTER`] has passed since the last one (so a slow
    /// task's result is not held back, and a worker that dies loses little).
    fn run_batch(&mut self, batch: Vec<Entry>, claimed: bool) -> Result<()> {
        let mut out = Outbox::default();
        let mut since = Instant::now();
        let mut left: Vec<String> = batch.iter().map(|e| e.0.clone()).collect();
        left.reverse();
        for (id, bytes) in batch {
            left.pop();
            let task = match bytes.as_deref().map(decode::<TaskMsg>) {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    log::warn!(
                        "worker {}: dropped task {id}: it does not decode: {e}",
                        self.id
                    );
                    out.ids.push(id);
                    continue;
                }
                None => {
                    log::warn!("worker {}: dropped task {id}: no payload", self.id);
                    out.ids.push(id);
                    continue;
                }
            };
            let msg = match self.handle(&task, claimed) {
                Ok(m) => m,
                Err(e) => {
                    let core = self.tasks.core();
                    core.abandon_ids(&out.ids);
                    core.abandon_ids(&[id]);
                    core.abandon_ids(&left);
                    return Err(e);
                }
            };
            let results = self
                .backend
                .key("q", &format!("pool:{}:results:{}", self.pool, task.caller));
            out.pipe
                .cmd("XADD")
                .arg(results)
                .arg("*")
                .arg("d")
                .arg(encode(&msg)?)
                .ignore();
            if claimed {
                out.pipe
                    .cmd("HDEL")
                    .arg(&self.attempts_key)
                    .arg(&task.id)
                    .ignore();
            }
            out.ids.push(id);
            if since.elapsed() >= FLUSH_AFTER && !left.is_empty() {
                // Result first, then the acknowledgement: a worker that
                // dies in between makes a duplicate, which the caller drops.
                let o = std::mem::take(&mut out);
                let core = self.tasks.core();
                if let Err(e) = core.finish(o.pipe, &o.ids) {
                    core.abandon_ids(&o.ids);
                    core.abandon_ids(&left);
                    return Err(e);
                }
                since = Instant::now();
            }
        }
        let core = self.tasks.core();
        if let Err(e) = core.finish(out.pipe, &out.ids) {
            core.abandon_ids(&out.ids);
            return Err(e);
        }
        Ok(())
    }

    /// Runs one task (or refuses it, or sends it to the dead-letter list);
    /// its result message.
    fn handle(&mut self, task: &TaskMsg, claimed: bool) -> Result<ResultMsg> {
        // Delivered before to a worker that stopped: count the attempt.
        // (A first delivery is attempt 1 and costs no round trip.)
        let attempts: u32 = if claimed {
            let (ak, tid) = (&self.attempts_key, &task.id);
            let crashed: u32 = self.conn.run(|c| {
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
            crashed + 1
        } else {
            1
        };
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
            let handler = self.registry.handler(&task.entry).expect("checked above");
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
        Ok(ResultMsg {
            id: task.id.clone(),
            outcome: outcome.map(serde_bytes::ByteBuf::from),
        })
    }
}

/// Results and acknowledgements not yet sent.
#[derive(Default)]
struct Outbox {
    pipe: redis::Pipeline,
    ids: Vec<String>,
}
