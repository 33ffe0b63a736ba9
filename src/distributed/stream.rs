//! The streams under the distributed pool's task and result queues: one
//! Redis stream per queue, one consumer group, one consumer per handle,
//! leases renewed by a heartbeat thread, claims of a dead consumer's
//! entries (marked as such: the pool counts a task's attempts from them).
//! The public queues are on lists (`list.rs`).

use super::{BLOCK_SLICE, Backend, Conn, unique_id};
use crate::error::{Error, Result};
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The consumer group every handle of a queue reads through.
const GROUP: &str = "g";
/// The field holding an item's bytes.
const FIELD: &str = "d";
/// A plain queue trims acknowledged entries from its stream after this
/// many acknowledgements.
const TRIM_EVERY: usize = 64;

/// Lua: the state of the consumer group `g` of the stream `key`:
/// `waiting` (entries not yet delivered: the group's lag), `pending`
/// (delivered, not acknowledged), the oldest pending id and the last
/// delivered id. Acknowledged entries are trimmed from the head of the
/// stream (`trim`) rather than deleted one by one (`XDEL` costs about
/// 10 µs an entry on Redis 7.0), so the stream's length is not a count of
/// anything; these are.
const STATE_LUA: &str = r"
local function group_state(key)
  local waiting, last = nil, '0-0'
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      if g[2] == 'g' then
        for i = 1, #g, 2 do
          if g[i] == 'lag' then waiting = g[i + 1] end
          if g[i] == 'last-delivered-id' then last = g[i + 1] end
        end
      end
    end
  end
  local pending, oldest = 0, nil
  local p = redis.pcall('XPENDING', key, 'g')
  if type(p) == 'table' and not p.err then
    pending = p[1]
    oldest = p[2]
  end
  if not waiting then
    -- Lag unknown (entries were deleted by hand): count from the length.
    waiting = math.max(0, redis.call('XLEN', key) - pending)
  end
  return waiting, pending, oldest, last
end

local function trim(key)
  local waiting, pending, oldest, last = group_state(key)
  local minid = oldest
  if pending == 0 then
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    if not ms then return end
    minid = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
  end
  if minid then redis.call('XTRIM', key, 'MINID', minid) end
end
";

/// Acknowledges `ARGV[..]` in the stream `KEYS[1]` and trims what is done
/// from its head.
const ACK_LUA: &str = r"
for i = 1, #ARGV, 1000 do
  redis.call('XACK', KEYS[1], 'g', unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
trim(KEYS[1])
return 1
";

/// A batched read: acknowledges `ARGV[4..]` (what this handle took
/// before; trimming the stream when `ARGV[3]` is `1`), then takes up to `ARGV[2]`
/// new entries of the stream `KEYS[1]` for consumer `ARGV[1]`, without
/// blocking. Returns them flat, `{id, item, id, item, …}` (an entry
/// without an item field gives `false`, a nil): two values an entry to
/// decode instead of the five of an `XREADGROUP` reply, which is most of
/// a client's time on a batch. The entries are pending for this consumer
/// exactly as after `XREADGROUP` (the script runs it). An error of
/// `XREADGROUP` (`NOGROUP`) is returned as the script's error.
const READ_LUA: &str = r"
local n = #ARGV
if n >= 4 then
  for i = 4, n, 1000 do
    redis.call('XACK', KEYS[1], 'g', unpack(ARGV, i, math.min(i + 999, n)))
  end
  if ARGV[3] == '1' then trim(KEYS[1]) end
end
local r = redis.pcall('XREADGROUP', 'GROUP', 'g', ARGV[1], 'COUNT', ARGV[2],
  'STREAMS', KEYS[1], '>')
if type(r) == 'table' and r.err then return r end
local out = {}
if r then
  for _, e in ipairs(r[1][2]) do
    local item = false
    local f = e[2]
    for j = 1, #f - 1, 2 do
      if f[j] == 'd' then item = f[j + 1] end
    end
    out[#out + 1] = e[1]
    out[#out + 1] = item
  end
end
return out
";

/// `get_many` of at least this many items reads through [`READ_LUA`]
/// (below it, the script's own cost outweighs what it saves).
const SCRIPT_READ_MIN: usize = 32;

/// A script with the group-state helpers in front of `body`.
fn script(body: &str) -> String {
    format!("{STATE_LUA}{body}")
}

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

pub(crate) struct Core {
    pub(crate) stream: String,
    pub(crate) consumer: String,
    joinable: bool,
    lease: Duration,
    state: Mutex<State>,
    /// Ids taken from Redis and not yet acknowledged, oldest first; shared
    /// with the heartbeat thread.
    held: Arc<Mutex<VecDeque<String>>>,
    /// Dropping it stops the heartbeat thread.
    heartbeat: Mutex<Option<mpsc::Sender<()>>>,
    /// [`ACK_LUA`] with its helpers, sent with `EVAL` (it goes in
    /// pipelines, where a missing script could not be loaded on the fly).
    ack_lua: String,
    /// Items acknowledged since the stream was last trimmed.
    acked: AtomicUsize,
    /// [`READ_LUA`] with its helpers.
    read_script: redis::Script,
}

struct State {
    conn: Conn,
    last_claim: Option<Instant>,
    claim_cursor: String,
}

pub(crate) fn encode<T: Serialize>(item: &T) -> Result<Vec<u8>> {
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

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    crate::codec::decode(bytes, Vec::new())
}

/// One entry of a stream reply: its id and its payload (None when the entry
/// has no payload field, e.g. one planted by hand).
pub(crate) type Entry = (String, Option<Vec<u8>>);

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
    pub(crate) fn open(backend: &Backend, name: &str, joinable: bool) -> Result<Core> {
        let stream = backend.key("q", name);
        let conn = backend.conn();
        let core = Core {
            stream,
            consumer: unique_id(),
            joinable,
            lease: backend.lease(),
            state: Mutex::new(State {
                conn,
                last_claim: None,
                claim_cursor: "0-0".into(),
            }),
            held: Arc::new(Mutex::new(VecDeque::new())),
            heartbeat: Mutex::new(None),
            ack_lua: script(ACK_LUA),
            acked: AtomicUsize::new(0),
            read_script: redis::Script::new(&script(READ_LUA)),
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

    /// Adds `items` to the stream, in order, in one round trip.
    pub(crate) fn put_bytes(&self, items: &[Vec<u8>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        for b in items {
            p.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg(FIELD)
                .arg(b.as_slice())
                .ignore();
        }
        self.state().conn.run(|c| p.query::<()>(c))
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

    /// Acknowledges `ids` (and now and then trims what is done from the
    /// stream), in the pipeline `p`.
    pub(crate) fn add_ack(&self, p: &mut redis::Pipeline, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        // The stream is trimmed once per TRIM_EVERY acknowledged items
        // (the trim is a script that looks at the group; a lone XACK is
        // the cheapest acknowledgement).
        if !self.trim_due(ids.len()) {
            p.cmd("XACK").arg(&self.stream).arg(GROUP).arg(ids).ignore();
            return;
        }
        p.cmd("EVAL")
            .arg(&self.ack_lua)
            .arg(1)
            .arg(&self.stream)
            .arg(ids)
            .ignore();
    }

    /// Counts `n` more acknowledged items; true (and the count starts
    /// again) when the stream is due for a trim.
    fn trim_due(&self, n: usize) -> bool {
        let acked = self.acked.fetch_add(n, Ordering::Relaxed) + n;
        if acked < TRIM_EVERY {
            return false;
        }
        self.acked.store(0, Ordering::Relaxed);
        true
    }

    /// Runs `p` with the acknowledgement of `ids` (taken by this handle)
    /// after its commands, in one round trip; then this handle holds them
    /// no more. On an error the ids stay held (renewed), to be finished
    /// again or abandoned.
    pub(crate) fn finish(&self, mut p: redis::Pipeline, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.add_ack(&mut p, ids);
        self.state().conn.run(|c| p.query::<()>(c))?;
        self.held().retain(|h| !ids.contains(h));
        Ok(())
    }

    /// Stops renewing `ids` without acknowledging them: they are delivered
    /// again (to any handle) once their lease runs out.
    pub(crate) fn abandon_ids(&self, ids: &[String]) {
        self.held().retain(|h| !ids.contains(h));
    }

    /// Takes up to `max` entries, waiting until `deadline` (None: forever;
    /// `nowait`: not at all) for the first.
    pub(crate) fn take(
        &self,
        max: usize,
        deadline: Option<Instant>,
        nowait: bool,
    ) -> Result<Vec<Entry>> {
        self.take_marked(max, max, deadline, nowait).map(|t| t.0)
    }

    /// [`take`](Self::take), claiming at most `claim_max` entries of dead
    /// consumers at once; true with entries that were claimed (delivered
    /// before, to a consumer that stopped).
    pub(crate) fn take_marked(
        &self,
        max: usize,
        claim_max: usize,
        deadline: Option<Instant>,
        nowait: bool,
    ) -> Result<(Vec<Entry>, bool)> {
        self.start_heartbeat();
        let mut st = self.state();
        loop {
            // Entries of consumers that stopped renewing their lease.
            let due = st.last_claim.is_none_or(|t| t.elapsed() >= self.lease / 2);
            if due {
                let got = self.claim(&mut st, claim_max)?;
                if !got.is_empty() {
                    return Ok((got, true));
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
                return Ok((got, false));
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

    /// Takes up to `max` entries that are there now, through [`READ_LUA`]
    /// (acknowledging what a plain queue's handle took before in the same
    /// script). None when this is not the way to read: fewer than
    /// [`SCRIPT_READ_MIN`] wanted, or dead consumers' entries due for a
    /// claim ([`take`](Self::take) claims them first).
    fn take_now(&self, max: usize) -> Result<Option<Vec<Entry>>> {
        if max < SCRIPT_READ_MIN {
            return Ok(None);
        }
        self.start_heartbeat();
        let mut st = self.state();
        if st.last_claim.is_none_or(|t| t.elapsed() >= self.lease / 2) {
            return Ok(None);
        }
        let acked: Vec<String> = if self.joinable {
            Vec::new()
        } else {
            self.held().iter().cloned().collect()
        };
        let mut inv = self.read_script.key(&self.stream);
        let trim = !acked.is_empty() && self.trim_due(acked.len());
        inv.arg(&self.consumer)
            .arg(max)
            .arg(if trim { "1" } else { "0" })
            .arg(&acked);
        let reply = st.conn.run(|c| match inv.invoke::<Value>(c) {
            Err(e) if is_nogroup(&e) => Ok(None),
            other => other.map(Some),
        })?;
        let Some(reply) = reply else {
            // The group vanished (a server restarted without
            // persistence): create it again; `take` reads once more.
            self.ensure_group(&mut st)?;
            return Ok(None);
        };
        if !acked.is_empty() {
            self.held().drain(..acked.len());
        }
        let Value::Array(flat) = reply else {
            return Ok(Some(Vec::new()));
        };
        let mut got = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(id), Some(item)) = (it.next(), it.next()) {
            let id = match id {
                Value::BulkString(b) => String::from_utf8(b)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                Value::SimpleString(s) => s,
                _ => continue,
            };
            let item = match item {
                Value::BulkString(b) => Some(b),
                _ => None,
            };
            got.push((id, item));
        }
        self.held().extend(got.iter().map(|e| e.0.clone()));
        Ok(Some(got))
    }

    pub(crate) fn get_many<T: DeserializeOwned>(
        &self,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<T>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // Items that are there now come through one script; an empty
        // queue (or a claim that is due) goes the blocking way.
        let got = match self.take_now(max)? {
            Some(got) if !got.is_empty() => got,
            _ => self.take(max, deadline, false)?,
        };
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

/// A typed queue on a stream: the pool's task and result queues (the
/// public queues are on lists, `list.rs`). Its workers take through
/// [`core`](Self::core), whose redelivery marks feed the dead-letter count.
pub(crate) struct StreamQueue<T> {
    core: Core,
    _t: std::marker::PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> StreamQueue<T> {
    /// Opens (creating when new) the unbounded stream queue `name`; a
    /// joinable one is acknowledged through [`Core::finish`] only.
    pub(crate) fn open(backend: &Backend, name: &str, joinable: bool) -> Result<StreamQueue<T>> {
        Ok(StreamQueue {
            core: Core::open(backend, name, joinable)?,
            _t: std::marker::PhantomData,
        })
    }

    /// Puts every item of `items` in one round trip, in order.
    pub(crate) fn put_many(&self, items: &[T]) -> Result<()> {
        let bytes = items.iter().map(encode).collect::<Result<Vec<_>>>()?;
        self.core.put_bytes(&bytes)
    }

    /// Takes up to `max` items, waiting at most `timeout` for the first.
    pub(crate) fn get_many(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
        self.core.get_many(max, Some(Instant::now() + timeout))
    }

    /// The stream under the queue.
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }
}
