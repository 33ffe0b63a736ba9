//! Queues on Redis streams: one stream per queue, one consumer group, one
//! consumer per handle; see the module docs of [`crate::distributed`] for
//! the delivery guarantee.

use super::{BLOCK_SLICE, Backend, Conn, unique_id};
use crate::error::{Error, Result};
use crate::queue::PutError;
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The consumer group every handle of a queue reads through.
const GROUP: &str = "g";
/// The field holding an item's bytes.
const FIELD: &str = "d";
/// How often a blocked `put` on a full queue looks again.
const FULL_POLL: Duration = Duration::from_millis(10);

/// Adds `ARGV[2..]` as items unless that would take the stream past
/// `ARGV[1]` entries (0: unbounded). Returns how many were added (0 when
/// full).
const PUT_LUA: &str = r"
local n = #ARGV - 1
local max = tonumber(ARGV[1])
if max > 0 and redis.call('XLEN', KEYS[1]) + n > max then return 0 end
for i = 2, #ARGV do redis.call('XADD', KEYS[1], '*', 'd', ARGV[i]) end
return n
";

/// Renews the lease of the entries `ARGV[2..]` still pending for consumer
/// `ARGV[1]` (an entry already claimed by another consumer is left alone).
const RENEW_LUA: &str = r"
local n = 0
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'g', ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'g', ARGV[1], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
";

/// A queue shared through Redis, with the API of [`crate::Queue`].
///
/// Items are encoded with the crate's codec (serde); they cannot carry OS
/// handles. An item taken by `get` is acknowledged (removed from Redis) by
/// this handle's next `get`/`get_many` or when the handle is dropped; if the
/// process dies first, the item is delivered again after the backend's
/// lease (at-least-once delivery).
///
/// # Examples
/// ```no_run
/// let backend = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let q = backend.queue::<u64>("numbers")?;
/// q.put(7)?;
/// assert_eq!(q.get()?, 7);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisQueue<T> {
    core: Core,
    _t: PhantomData<fn(T) -> T>,
}

/// A [`RedisQueue`] whose items are acknowledged by
/// [`task_done`](RedisJoinableQueue::task_done), with
/// [`join`](RedisJoinableQueue::join), like [`crate::JoinableQueue`].
///
/// `task_done` acknowledges the oldest item that *this handle* took and has
/// not yet marked done (the item leaves Redis then); `join` waits until the
/// queue holds no item that is not done, whoever put or took it. An item
/// taken by a process that dies before `task_done` is delivered again.
///
/// # Examples
/// ```no_run
/// let backend = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let q = backend.joinable_queue::<String>("jobs")?;
/// q.put("job".to_string())?;
/// let job = q.get()?;
/// q.task_done()?;
/// q.join();
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisJoinableQueue<T> {
    core: Core,
    _t: PhantomData<fn(T) -> T>,
}

struct Core {
    stream: String,
    maxsize: usize,
    consumer: String,
    closed: AtomicBool,
    joinable: bool,
    lease: Duration,
    state: Mutex<State>,
    /// Ids taken from Redis and not yet acknowledged, oldest first; shared
    /// with the heartbeat thread.
    held: Arc<Mutex<VecDeque<String>>>,
    /// Dropping it stops the heartbeat thread.
    heartbeat: Mutex<Option<mpsc::Sender<()>>>,
    put_script: redis::Script,
}

struct State {
    conn: Conn,
    last_claim: Option<Instant>,
    claim_cursor: String,
}

impl Backend {
    /// Opens (creating when new) the queue `name` with no bound.
    ///
    /// # Errors
    /// As [`Backend::queue_with_maxsize`].
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.queue::<String>("greetings")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<RedisQueue<T>> {
        self.queue_with_maxsize(name, 0)
    }

    /// Opens the queue `name`, creating it with room for `maxsize` items
    /// (0: unbounded) when new. The first handle to create a queue fixes
    /// its bound; later handles take it from Redis.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Authentication`] when the server cannot be
    /// used.
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.queue_with_maxsize::<u8>("small", 2)?;
    /// assert_eq!(q.maxsize(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<RedisQueue<T>> {
        Ok(RedisQueue {
            core: Core::open(self, name, maxsize, false)?,
            _t: PhantomData,
        })
    }

    /// Opens (creating when new) the joinable queue `name`, unbounded.
    ///
    /// # Errors
    /// As [`Backend::queue_with_maxsize`].
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u32>("work")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<RedisJoinableQueue<T>> {
        self.joinable_queue_with_maxsize(name, 0)
    }

    /// [`joinable_queue`](Self::joinable_queue) with a bound, as
    /// [`queue_with_maxsize`](Self::queue_with_maxsize).
    ///
    /// # Errors
    /// As [`Backend::queue_with_maxsize`].
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue_with_maxsize::<u32>("work2", 100)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn joinable_queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<RedisJoinableQueue<T>> {
        Ok(RedisJoinableQueue {
            core: Core::open(self, name, maxsize, true)?,
            _t: PhantomData,
        })
    }
}

fn encode<T: Serialize>(item: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    crate::codec::encode_into(item, &mut buf, &mut fds)?;
    if !fds.is_empty() {
        return Err(Error::Encode(
            "an item of a Redis queue cannot carry OS handles".into(),
        ));
    }
    Ok(buf)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    crate::codec::decode(bytes, Vec::new())
}

/// One entry of a stream reply: its id and its payload (None when the entry
/// has no payload field, e.g. one planted by hand).
type Entry = (String, Option<Vec<u8>>);

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Entries of `[[id, [field, value, …]], …]`.
fn entries(v: &Value, out: &mut Vec<Entry>) {
    let Value::Array(list) = v else { return };
    for e in list {
        let Value::Array(pair) = e else { continue };
        let Some(id) = pair.first().and_then(text) else {
            continue;
        };
        let mut payload = None;
        if let Some(Value::Array(fields)) = pair.get(1) {
            for kv in fields.chunks(2) {
                if let [Value::BulkString(k), Value::BulkString(v)] = kv
                    && k == FIELD.as_bytes()
                {
                    payload = Some(v.clone());
                }
            }
        }
        out.push((id, payload));
    }
}

/// Entries of an `XREADGROUP` reply (nil, or `[[key, entries]]`; RESP3 maps
/// too).
fn read_reply(v: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    match v {
        Value::Array(keys) => {
            for k in keys {
                if let Value::Array(kv) = k
                    && let Some(list) = kv.get(1)
                {
                    entries(list, &mut out);
                }
            }
        }
        Value::Map(keys) => {
            for (_, list) in keys {
                entries(list, &mut out);
            }
        }
        _ => {}
    }
    out
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

impl Core {
    fn open(backend: &Backend, name: &str, maxsize: usize, joinable: bool) -> Result<Core> {
        let stream = backend.key("q", name);
        let meta = backend.key("qmeta", name);
        let mut conn = backend.conn();
        let stored: Option<usize> = conn.run(|c| {
            redis::pipe()
                .cmd("HSETNX")
                .arg(&meta)
                .arg("maxsize")
                .arg(maxsize)
                .ignore()
                .cmd("HGET")
                .arg(&meta)
                .arg("maxsize")
                .query::<(Option<usize>,)>(c)
                .map(|t| t.0)
        })?;
        let core = Core {
            stream,
            maxsize: stored.unwrap_or(maxsize),
            consumer: unique_id(),
            closed: AtomicBool::new(false),
            joinable,
            lease: backend.lease(),
            state: Mutex::new(State {
                conn,
                last_claim: None,
                claim_cursor: "0-0".into(),
            }),
            held: Arc::new(Mutex::new(VecDeque::new())),
            heartbeat: Mutex::new(None),
            put_script: redis::Script::new(PUT_LUA),
        };
        core.ensure_group(&mut core.state())?;
        Ok(core)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, VecDeque<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_group(&self, st: &mut State) -> Result<()> {
        let stream = &self.stream;
        st.conn.run(|c| {
            match redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query::<()>(c)
            {
                Err(e) if e.code() == Some("BUSYGROUP") || e.to_string().contains("BUSYGROUP") => {
                    Ok(())
                }
                other => other,
            }
        })
    }

    fn put_bytes(&self, items: &[Vec<u8>], deadline: Option<Instant>, wait: bool) -> Result<bool> {
        if self.maxsize > 0 && items.len() > self.maxsize {
            return Err(Error::InvalidArgument(format!(
                "{} items can never fit a queue of maxsize {}",
                items.len(),
                self.maxsize
            )));
        }
        loop {
            let added: usize = {
                let mut st = self.state();
                let mut inv = self.put_script.key(&self.stream);
                inv.arg(self.maxsize);
                for b in items {
                    inv.arg(b.as_slice());
                }
                st.conn.run(|c| inv.invoke(c))?
            };
            if added > 0 || items.is_empty() {
                return Ok(true);
            }
            if !wait || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            std::thread::sleep(FULL_POLL);
        }
    }

    fn start_heartbeat(&self) {
        let mut hb = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner());
        if hb.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let held = Arc::clone(&self.held);
        let mut conn = self.state().conn.backend().conn();
        let stream = self.stream.clone();
        let consumer = self.consumer.clone();
        let every = self.lease / 3;
        let spawned = std::thread::Builder::new()
            .name("multiproc-redis-lease".into())
            .spawn(move || {
                let script = redis::Script::new(RENEW_LUA);
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let ids: Vec<String> = held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .cloned()
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let mut inv = script.key(&stream);
                    inv.arg(&consumer);
                    for id in &ids {
                        inv.arg(id);
                    }
                    if let Err(e) = conn.run(|c| inv.invoke::<i64>(c)) {
                        log::warn!("could not renew the lease of queue items: {e}");
                    }
                }
            });
        match spawned {
            Ok(_) => *hb = Some(tx),
            Err(e) => log::warn!("could not start the lease thread of a Redis queue: {e}"),
        }
    }

    /// Acknowledges (and deletes) `ids`, in the pipeline `p`.
    fn add_ack(&self, p: &mut redis::Pipeline, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        p.cmd("XACK").arg(&self.stream).arg(GROUP).arg(ids).ignore();
        p.cmd("XDEL").arg(&self.stream).arg(ids).ignore();
    }

    /// Takes up to `max` entries, waiting until `deadline` (None: forever;
    /// `nowait`: not at all) for the first.
    fn take(&self, max: usize, deadline: Option<Instant>, nowait: bool) -> Result<Vec<Entry>> {
        self.start_heartbeat();
        let mut st = self.state();
        loop {
            // Entries of consumers that stopped renewing their lease.
            let due = st.last_claim.is_none_or(|t| t.elapsed() >= self.lease / 2);
            if due {
                let got = self.claim(&mut st, max)?;
                if !got.is_empty() {
                    return Ok(got);
                }
            }
            let block = if nowait {
                None
            } else {
                let left = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()),
                    None => BLOCK_SLICE,
                };
                Some(
                    left.min(BLOCK_SLICE)
                        .min(self.lease / 2)
                        .max(Duration::from_millis(1)),
                )
            };
            // A plain queue acknowledges what it handed out before.
            let acked: Vec<String> = if self.joinable {
                Vec::new()
            } else {
                self.held().iter().cloned().collect()
            };
            let mut p = redis::pipe();
            self.add_ack(&mut p, &acked);
            let cmd = p
                .cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(max);
            if let Some(b) = block {
                cmd.arg("BLOCK").arg(b.as_millis() as u64);
            }
            cmd.arg("STREAMS").arg(&self.stream).arg(">");
            let res = st.conn.run(|c| match p.query::<(Value,)>(c) {
                Err(e) if is_nogroup(&e) => Ok(None),
                other => other.map(Some),
            });
            let reply = match res? {
                Some((v,)) => v,
                None => {
                    // The group vanished (a server restarted without
                    // persistence): create it again and read once more.
                    self.ensure_group(&mut st)?;
                    continue;
                }
            };
            if !acked.is_empty() {
                self.held().drain(..acked.len());
            }
            let got = read_reply(&reply);
            if !got.is_empty() {
                self.held().extend(got.iter().map(|e| e.0.clone()));
                return Ok(got);
            }
            if nowait || deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Empty);
            }
            if st.last_claim.is_some_and(|t| t.elapsed() >= self.lease / 2) {
                continue;
            }
        }
    }

    /// Claims up to `max` entries idle for longer than the lease.
    fn claim(&self, st: &mut State, max: usize) -> Result<Vec<Entry>> {
        st.last_claim = Some(Instant::now());
        let cursor = st.claim_cursor.clone();
        let lease_ms = self.lease.as_millis() as u64;
        let reply = st.conn.run(|c| {
            match redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(lease_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(max.max(1))
                .query::<Value>(c)
            {
                Err(e) if is_nogroup(&e) => Ok(Value::Nil),
                other => other,
            }
        })?;
        let Value::Array(parts) = &reply else {
            return Ok(Vec::new());
        };
        st.claim_cursor = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
        let mut got = Vec::new();
        if let Some(list) = parts.get(1) {
            entries(list, &mut got);
        }
        if !got.is_empty() {
            // There may be more: look again on the next call.
            st.last_claim = None;
            log::info!(
                "queue {}: {} item(s) of a consumer that stopped are delivered again",
                self.stream,
                got.len()
            );
            let acked: Vec<String> = if self.joinable {
                Vec::new()
            } else {
                self.held().drain(..).collect()
            };
            if !acked.is_empty() {
                let mut p = redis::pipe();
                self.add_ack(&mut p, &acked);
                st.conn.run(|c| p.query::<()>(c))?;
            }
            self.held().extend(got.iter().map(|e| e.0.clone()));
        }
        Ok(got)
    }

    fn get_one<T: DeserializeOwned>(&self, deadline: Option<Instant>, nowait: bool) -> Result<T> {
        // `take(1, …)` yields at most one entry: a second one would be held
        // (and later acknowledged) without ever being handed out.
        let got = self.take(1, deadline, nowait)?;
        debug_assert!(got.len() <= 1);
        let (id, bytes) = got.into_iter().next().ok_or(Error::Empty)?;
        match bytes {
            Some(b) => decode(&b),
            None => Err(Error::Decode(format!("queue entry {id} has no item field"))),
        }
    }

    fn get_many<T: DeserializeOwned>(
        &self,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<T>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let got = self.take(max, deadline, false)?;
        let mut out = Vec::with_capacity(got.len());
        for (id, bytes) in got {
            match bytes.as_deref().map(decode) {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) => log::warn!("queue {}: entry {id} skipped: {e}", self.stream),
                None => log::warn!("queue {}: entry {id} has no item field", self.stream),
            }
        }
        Ok(out)
    }

    fn counts(&self) -> Result<(usize, usize)> {
        let mut st = self.state();
        let stream = &self.stream;
        let (len, pending): (usize, Value) = st.conn.run(|c| {
            redis::pipe()
                .cmd("XLEN")
                .arg(stream)
                .cmd("XPENDING")
                .arg(stream)
                .arg(GROUP)
                .query(c)
        })?;
        let pending = match pending {
            Value::Array(v) => match v.first() {
                Some(Value::Int(n)) => *n as usize,
                _ => 0,
            },
            _ => 0,
        };
        Ok((len, pending))
    }

    fn qsize(&self) -> usize {
        match self.counts() {
            Ok((len, pending)) => len.saturating_sub(pending),
            Err(e) => {
                log::warn!("qsize of {}: {e}", self.stream);
                0
            }
        }
    }

    fn is_full(&self) -> bool {
        self.maxsize > 0 && self.counts().is_ok_and(|(len, _)| len >= self.maxsize)
    }

    fn task_done(&self) -> Result<()> {
        let id = self.held().front().cloned().ok_or(Error::State(
            "task_done() called more times than this handle took items",
        ))?;
        let mut p = redis::pipe();
        self.add_ack(&mut p, std::slice::from_ref(&id));
        self.state().conn.run(|c| p.query::<()>(c))?;
        let mut held = self.held();
        if held.front() == Some(&id) {
            held.pop_front();
        }
        Ok(())
    }

    /// Stops renewing the oldest held item without acknowledging it: it
    /// is delivered again (to any handle) once its lease runs out.
    fn abandon(&self) {
        self.held().pop_front();
    }

    fn unfinished(&self) -> Result<usize> {
        let stream = &self.stream;
        self.state()
            .conn
            .run(|c| redis::cmd("XLEN").arg(stream).query::<usize>(c))
    }

    fn join_at(&self, deadline: Option<Instant>) -> bool {
        let mut pause = Duration::from_millis(1);
        loop {
            if matches!(self.unfinished(), Ok(0)) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let held: Vec<String> = self.held().drain(..).collect();
        if self.joinable && !held.is_empty() {
            // Not done: another consumer takes them after the lease.
            return;
        }
        let mut p = redis::pipe();
        self.add_ack(&mut p, &held);
        p.cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .ignore();
        let mut st = self.state();
        if let Err(e) = st.conn.run(|c| p.query::<()>(c)) {
            log::warn!(
                "could not acknowledge the last items of {}: {e}",
                self.stream
            );
        }
    }
}

macro_rules! queue_api {
    ($ty:ident, $ctor:literal) => {
        impl<T: Serialize + DeserializeOwned> $ty<T> {
            /// Puts `item`, waiting for room in a bounded queue.
            ///
            /// # Errors
            /// [`PutError::Closed`] after [`close`](Self::close),
            /// [`PutError::Failed`] when the item cannot be encoded or the
            /// server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc\")?;")]
            /// q.put(1)?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
                self.put_at(item, None, true)
            }

            /// Puts `item` if there is room now.
            ///
            /// # Errors
            /// [`PutError::Full`] when a bounded queue has no room; otherwise
            /// as [`put`](Self::put).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "_with_maxsize::<u8>(\"doc1\", 1)?;")]
            /// q.put_nowait(1)?;
            /// assert!(q.put_nowait(2).unwrap_err().is_full());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>> {
                self.put_at(item, None, false)
            }

            /// Puts `item`, waiting at most `timeout` for room.
            ///
            /// # Errors
            /// [`PutError::Full`] when the timeout passed; otherwise as
            /// [`put`](Self::put).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc2\")?;")]
            /// q.put_timeout(1, std::time::Duration::from_secs(1))?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_timeout(
                &self,
                item: T,
                timeout: Duration,
            ) -> std::result::Result<(), PutError<T>> {
                self.put_at(item, Some(Instant::now() + timeout), true)
            }

            fn put_at(
                &self,
                item: T,
                deadline: Option<Instant>,
                wait: bool,
            ) -> std::result::Result<(), PutError<T>> {
                if self.core.closed.load(Ordering::Relaxed) {
                    return Err(PutError::Closed(item));
                }
                let bytes = match encode(&item) {
                    Ok(b) => b,
                    Err(e) => return Err(PutError::Failed(item, e)),
                };
                match self.core.put_bytes(&[bytes], deadline, wait) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(PutError::Full(item)),
                    Err(e) => Err(PutError::Failed(item, e)),
                }
            }

            /// Puts every item of `items` in one round trip, in order; in a
            /// bounded queue all of them or (waiting for room) none.
            ///
            /// # Errors
            /// [`Error::Closed`] after [`close`](Self::close),
            /// [`Error::InvalidArgument`] for more items than `maxsize`,
            /// [`Error::Encode`] for an item that cannot be encoded (nothing
            /// is put), [`Error::Io`] when the server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u32>(\"doc3\")?;")]
            /// q.put_many(&[1, 2, 3])?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_many(&self, items: &[T]) -> Result<()> {
                if self.core.closed.load(Ordering::Relaxed) {
                    return Err(Error::Closed);
                }
                let bytes = items.iter().map(encode).collect::<Result<Vec<_>>>()?;
                self.core.put_bytes(&bytes, None, true).map(|_| ())
            }

            /// Takes the next item, waiting as long as it takes.
            ///
            /// # Errors
            /// [`Error::Decode`] for an item that is not a `T` (it counts as
            /// taken), [`Error::Io`] when the server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc4\")?;")]
            /// q.put(5)?;
            /// assert_eq!(q.get()?, 5);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get(&self) -> Result<T> {
                self.core.get_one(None, false)
            }

            /// Takes the next item if there is one now.
            ///
            /// # Errors
            /// [`Error::Empty`] when there is none; otherwise as
            /// [`get`](Self::get).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc5\")?;")]
            /// assert!(matches!(q.get_nowait(), Err(multiproc::Error::Empty)));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_nowait(&self) -> Result<T> {
                self.core.get_one(None, true)
            }

            /// Takes the next item, waiting at most `timeout`.
            ///
            /// # Errors
            /// [`Error::Empty`] when the timeout passed; otherwise as
            /// [`get`](Self::get).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc6\")?;")]
            /// let r = q.get_timeout(std::time::Duration::from_millis(10));
            /// assert!(matches!(r, Err(multiproc::Error::Empty)));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
                self.core.get_one(Some(Instant::now() + timeout), false)
            }

            /// Takes the next item, waiting until `deadline` at the latest.
            ///
            /// # Errors
            /// As [`get_timeout`](Self::get_timeout).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc7\")?;")]
            /// let soon = std::time::Instant::now() + std::time::Duration::from_millis(10);
            /// assert!(q.get_deadline(soon).is_err());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_deadline(&self, deadline: Instant) -> Result<T> {
                self.core.get_one(Some(deadline), false)
            }

            /// Takes up to `max` items in one round trip, waiting at most
            /// `timeout` for the first. Entries that do not decode as `T`
            /// are taken, logged and left out.
            ///
            /// # Errors
            /// [`Error::Empty`] when no item came before the timeout,
            /// [`Error::Io`] when the server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc8\")?;")]
            /// q.put_many(&[1, 2, 3])?;
            /// let got = q.get_many(10, std::time::Duration::from_secs(1))?;
            /// assert_eq!(got, [1, 2, 3]);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_many(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
                self.core.get_many(max, Some(Instant::now() + timeout))
            }

            /// Items waiting to be taken (not counting taken ones that are
            /// not yet acknowledged); 0 when the server cannot be reached.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc9\")?;")]
            /// q.put(1)?;
            /// assert_eq!(q.qsize(), 1);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn qsize(&self) -> usize {
                self.core.qsize()
            }

            /// True when no item waits to be taken.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc10\")?;")]
            /// assert!(q.is_empty());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_empty(&self) -> bool {
                self.core.qsize() == 0
            }

            /// True when a bounded queue holds `maxsize` items (taken but
            /// unacknowledged ones count).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "_with_maxsize::<u8>(\"doc11\", 1)?;")]
            /// q.put(1)?;
            /// assert!(q.is_full());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_full(&self) -> bool {
                self.core.is_full()
            }

            /// The bound (0: unbounded).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc12\")?;")]
            /// assert_eq!(q.maxsize(), 0);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn maxsize(&self) -> usize {
                self.core.maxsize
            }

            /// Closes this handle for putting (like Python's
            /// `Queue.close`): later puts through it fail with `Closed`.
            /// Other handles are not affected; getting still works.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc13\")?;")]
            /// q.close();
            /// assert!(q.is_closed());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn close(&self) {
                self.core.closed.store(true, Ordering::Relaxed);
            }

            /// True after [`close`](Self::close).
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc14\")?;")]
            /// assert!(!q.is_closed());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_closed(&self) -> bool {
                self.core.closed.load(Ordering::Relaxed)
            }

            /// This handle's consumer name in the queue's consumer group.
            ///
            /// # Examples
            /// ```no_run
            /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
            #[doc = concat!("let q = b.", $ctor, "::<u8>(\"doc15\")?;")]
            /// assert!(q.consumer().contains(&std::process::id().to_string()));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn consumer(&self) -> &str {
                &self.core.consumer
            }
        }
    };
}

queue_api!(RedisQueue, "queue");
queue_api!(RedisJoinableQueue, "joinable_queue");

impl<T: Serialize + DeserializeOwned> RedisJoinableQueue<T> {
    /// Marks the oldest item this handle took and has not marked done as
    /// done: it is acknowledged and leaves Redis.
    ///
    /// # Errors
    /// [`Error::State`] when this handle holds no such item,
    /// [`Error::Io`] when the server cannot be reached (the item stays
    /// held; call again).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u8>("td")?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        self.core.task_done()
    }

    /// Gives up the oldest item this handle took, without marking it done:
    /// it is delivered again after the lease.
    pub(crate) fn abandon(&self) {
        self.core.abandon();
    }

    /// Waits until every item put has been marked done (by any handle).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u8>("join")?;
    /// q.join();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) {
        self.core.join_at(None);
    }

    /// Waits at most `timeout` for [`join`](Self::join); true when every
    /// item was done.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u8>("join2")?;
    /// q.put(1)?;
    /// assert!(!q.join_timeout(std::time::Duration::from_millis(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.core.join_at(Some(Instant::now() + timeout))
    }

    /// Items put and not yet marked done.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let q = b.joinable_queue::<u8>("uf")?;
    /// assert_eq!(q.unfinished_tasks()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> Result<usize> {
        self.core.unfinished()
    }
}
