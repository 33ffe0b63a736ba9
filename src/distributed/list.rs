//! The lists under the public distributed queues (the "reliable queue"
//! pattern): one Redis list of waiting items per queue, one processing
//! list per consumer handle holding what it took and has not
//! acknowledged, a set of consumer names with one lease key each (renewed
//! by a heartbeat thread), and a claim script that gives a dead
//! consumer's processing list back. See the module docs of
//! [`crate::distributed`] for the delivery guarantee.
//!
//! Keys, under `<prefix>:lq:<name>` (the main list itself):
//! `…:meta` (a hash: the bound, and whether items are counted),
//! `…:proc:<consumer>` (processing lists, the oldest taken item at the
//! right), `…:consumers` (a set), `…:lease:<consumer>` (`SET … PX`),
//! `…:count` (items put and not acknowledged; bounded and joinable queues
//! only), `…:wake` and `…:room:wake` (wake streams of `join` and of puts
//! waiting for room, see `wake.rs`).

use super::stream::decode;
use super::wake::{LAST_ID_LUA, NOTIFY_LUA, Waiters};
use super::{BLOCK_SLICE, Backend, Conn, unique_id};
use crate::error::{Error, Result};
use redis::Value;
use serde::de::DeserializeOwned;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most items one `LPUSH` carries (bigger batches are split, in the
/// same round trip).
const PUSH_CHUNK: usize = 1000;

/// Lua: `ack(proc, count, join_wake, room_wake, n, bounded)`:
/// acknowledges the `n` oldest items of the processing list `proc` (the
/// ones at its right: those a handle knows it holds), takes as many as
/// were there off the counter `count`, and wakes the joiners when nothing
/// is left unacknowledged and, in a bounded queue, the puts waiting for
/// room. Counts what is really removed, so an item that a claim already
/// gave back (its consumer stalled past the lease) is not counted twice.
/// Returns how many were acknowledged.
const ACK_FN_LUA: &str = r"
local function ack(proc, count, join_wake, room_wake, n, bounded)
  local r = redis.call('RPOP', proc, n)
  local k = 0
  if r then k = #r end
  if k > 0 then
    local left = redis.call('DECRBY', count, k)
    if left <= 0 then
      if left < 0 then redis.call('SET', count, 0) end
      notify(join_wake)
    end
    if bounded then notify(room_wake) end
  end
  return k
end
";

/// Acknowledges for a counted queue: `KEYS` = processing list, counter,
/// join wake, room wake; `ARGV[1]` = how many, `ARGV[2]` = `1` for a
/// bounded queue.
const ACK_LUA: &str = r"
return ack(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]), ARGV[2] == '1')
";

/// A batched take: acknowledges the `ARGV[2]` items the handle took before
/// (none when `0`; `ARGV[3]`: `1` for a counted queue, which goes through
/// `ack`; `ARGV[4]`: `1` for a bounded one), then moves up to `ARGV[1]`
/// items from the taking end of the main list to the processing list
/// (oldest at its right, as `BLMOVE … RIGHT LEFT` leaves them) and returns
/// them, oldest first. `KEYS` = main list, processing list, counter, join
/// wake, room wake, consumer set, lease key; with `ARGV[5]` (the lease in
/// ms) the consumer `ARGV[6]` registers first.
const TAKE_LUA: &str = r"
if ARGV[5] then
  redis.call('SADD', KEYS[6], ARGV[6])
  redis.call('SET', KEYS[7], 1, 'PX', ARGV[5])
end
local held = tonumber(ARGV[2])
if held > 0 then
  if ARGV[3] == '1' then
    ack(KEYS[2], KEYS[3], KEYS[4], KEYS[5], held, ARGV[4] == '1')
  else
    redis.call('RPOP', KEYS[2], held)
  end
end
local r = redis.call('LMPOP', 1, KEYS[1], 'RIGHT', 'COUNT', ARGV[1])
if not r then return {} end
local items = r[2]
for i = 1, #items, 1000 do
  redis.call('LPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
return items
";

/// Gives back what the processing list `KEYS[1]` holds beyond the
/// `ARGV[1]` items at its right that its handle knows it holds (items a
/// take moved there whose reply was lost, or everything when `ARGV[1]` is
/// 0): they go to the taking end of the main list `KEYS[2]`, the oldest
/// rightmost. Returns how many.
const RETURN_LUA: &str = r"
local extra = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
for i = 1, extra do redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') end
return math.max(extra, 0)
";

/// Puts `ARGV[2..]` on the main list `KEYS[1]` unless that would take the
/// counter `KEYS[2]` past `ARGV[1]` unacknowledged items. Returns
/// `{added, room}`: how many were added (0 when full) and, when full, the
/// last id of the room wake stream `KEYS[3]` (read in the same script, so
/// that an acknowledgement after this check wakes the putter's `XREAD`
/// from that id at once).
const PUT_LUA: &str = r"
local n = #ARGV - 1
local max = tonumber(ARGV[1])
local have = tonumber(redis.call('GET', KEYS[2]) or '0')
if have + n > max then return {0, last_id(KEYS[3])} end
redis.call('INCRBY', KEYS[2], n)
for i = 2, #ARGV, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return {n, ''}
";

/// The claim: every consumer in the set `KEYS[2]` whose lease key is gone
/// has its processing list moved back to the taking end of the main list
/// `KEYS[1]` (the oldest it took ends rightmost: it is taken first), then
/// leaves the set. `ARGV[1]` is the queue's key, the stem of the
/// consumers' keys. Returns how many items came back.
const CLAIM_LUA: &str = r"
local back = 0
for _, c in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[1] .. ':lease:' .. c) == 0 then
    local proc = ARGV[1] .. ':proc:' .. c
    local items = redis.call('LRANGE', proc, 0, -1)
    for i = 1, #items, 1000 do
      redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
    end
    back = back + #items
    redis.call('DEL', proc)
    redis.call('SREM', KEYS[2], c)
  end
end
return back
";

/// `join`: `{unacknowledged items, last id of the wake stream KEYS[2]}`.
const JOIN_LUA: &str = r"
return {tonumber(redis.call('GET', KEYS[1]) or '0'), last_id(KEYS[2])}
";

pub(crate) struct Core {
    /// The main list (also the stem of the other keys).
    main: String,
    proc_key: String,
    consumers: String,
    lease_key: String,
    count: String,
    pub(crate) maxsize: usize,
    /// Whether the queue keeps the counter (bounded or joinable queues).
    counted: bool,
    pub(crate) consumer: String,
    pub(crate) closed: AtomicBool,
    joinable: bool,
    lease: Duration,
    state: Mutex<State>,
    /// Dropping the sender stops the heartbeat thread.
    heartbeat: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    put_script: redis::Script,
    take_script: redis::Script,
    ack_script: redis::Script,
    /// [`ACK_LUA`] with its helpers, sent with `EVAL` in pipelines (where a
    /// script missing from the server's cache could not be loaded on the
    /// fly).
    ack_lua: String,
    claim_script: redis::Script,
    return_script: redis::Script,
    join_script: redis::Script,
    /// Wakes `join` when the counter reaches 0.
    waiters: Waiters,
    /// Wakes a `put` waiting for room in a bounded queue.
    room: Waiters,
}

struct State {
    conn: Conn,
    last_claim: Option<Instant>,
    /// The set member and the lease key were written (on this
    /// connection, since it last failed).
    registered: bool,
    /// This handle has registered at least once (its drop cleans up).
    ever: bool,
    /// Items this handle took and has not acknowledged: the oldest
    /// `held` of its processing list.
    held: usize,
    /// A take failed after it may have moved items to the processing
    /// list: the next take gives back any beyond `held` first.
    unsure: bool,
}

impl State {
    /// Runs `f` on the connection; a failure also forgets the
    /// registration (the connection, or the server, may be new next time,
    /// and the next take registers again).
    fn run<R>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R> {
        let r = self.conn.run(f);
        if r.is_err() {
            self.registered = false;
        }
        r
    }
}

impl Core {
    pub(crate) fn open(
        backend: &Backend,
        name: &str,
        maxsize: usize,
        joinable: bool,
    ) -> Result<Core> {
        let main = backend.key("lq", name);
        let meta = format!("{main}:meta");
        let mut conn = backend.conn();
        let counted = maxsize > 0 || joinable;
        let (stored, stored_counted): (Option<usize>, Option<u8>) = conn.run(|c| {
            redis::pipe()
                .cmd("HSETNX")
                .arg(&meta)
                .arg("maxsize")
                .arg(maxsize)
                .ignore()
                .cmd("HSETNX")
                .arg(&meta)
                .arg("counted")
                .arg(u8::from(counted))
                .ignore()
                .cmd("HMGET")
                .arg(&meta)
                .arg("maxsize")
                .arg("counted")
                .query::<((Option<usize>, Option<u8>),)>(c)
                .map(|t| t.0)
        })?;
        let maxsize = stored.unwrap_or(maxsize);
        let counted = stored_counted.map_or(counted, |c| c != 0) || maxsize > 0;
        if joinable && !counted {
            return Err(Error::InvalidArgument(format!(
                "queue {name} was created as a plain unbounded queue, which does not \
                 count unfinished items; open it with `queue`, or use another name \
                 for a joinable queue"
            )));
        }
        let consumer = unique_id();
        let helpers = format!("{NOTIFY_LUA}{LAST_ID_LUA}{ACK_FN_LUA}");
        Ok(Core {
            proc_key: format!("{main}:proc:{consumer}"),
            consumers: format!("{main}:consumers"),
            lease_key: format!("{main}:lease:{consumer}"),
            count: format!("{main}:count"),
            maxsize,
            counted,
            consumer,
            closed: AtomicBool::new(false),
            joinable,
            lease: backend.lease(),
            state: Mutex::new(State {
                conn,
                last_claim: None,
                registered: false,
                ever: false,
                held: 0,
                unsure: false,
            }),
            heartbeat: Mutex::new(None),
            put_script: redis::Script::new(&format!("{helpers}{PUT_LUA}")),
            take_script: redis::Script::new(&format!("{helpers}{TAKE_LUA}")),
            ack_script: redis::Script::new(&format!("{helpers}{ACK_LUA}")),
            ack_lua: format!("{helpers}{ACK_LUA}"),
            claim_script: redis::Script::new(CLAIM_LUA),
            return_script: redis::Script::new(RETURN_LUA),
            join_script: redis::Script::new(&format!("{helpers}{JOIN_LUA}")),
            waiters: Waiters::new(backend, &main),
            room: Waiters::new(backend, &format!("{main}:room")),
            main,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the encoded `items` (in order; all or none), waiting for room
    /// in a bounded queue until `deadline` when `wait`. False when a
    /// bounded queue had no room in time.
    pub(crate) fn put_bytes(
        &self,
        items: &[Vec<u8>],
        deadline: Option<Instant>,
        wait: bool,
    ) -> Result<bool> {
        if self.maxsize > 0 && items.len() > self.maxsize {
            return Err(Error::InvalidArgument(format!(
                "{} items can never fit a queue of maxsize {}",
                items.len(),
                self.maxsize
            )));
        }
        if items.is_empty() {
            return Ok(true);
        }
        if self.maxsize == 0 {
            // Unbounded: LPUSHes in one pipeline (one LPUSH unless the
            // batch is huge); with the counter when there is one, in a
            // transaction (a connection lost half-way must not leave the
            // counter counting items that never came).
            let mut p = redis::pipe();
            if self.counted {
                p.atomic()
                    .cmd("INCRBY")
                    .arg(&self.count)
                    .arg(items.len())
                    .ignore();
            }
            for chunk in items.chunks(PUSH_CHUNK) {
                let cmd = p.cmd("LPUSH").arg(&self.main);
                for b in chunk {
                    cmd.arg(b.as_slice());
                }
                cmd.ignore();
            }
            self.state().run(|c| p.query::<()>(c))?;
            return Ok(true);
        }
        loop {
            let (added, seen): (usize, String) = {
                let mut st = self.state();
                let mut inv = self.put_script.key(&self.main);
                inv.key(&self.count).key(self.room.key()).arg(self.maxsize);
                for b in items {
                    inv.arg(b.as_slice());
                }
                st.run(|c| inv.invoke(c))?
            };
            if added > 0 {
                return Ok(true);
            }
            if !wait || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            // Full: block until an acknowledgement appends to the room
            // stream after `seen`, the deadline, or BLOCK_SLICE (then look
            // again: a server that went away is noticed).
            self.room.wait(&seen, None, deadline)?;
        }
    }

    /// Starts the thread that renews this handle's lease (and its
    /// membership of the consumer set) every third of the lease, until the
    /// handle is dropped.
    fn start_heartbeat(&self, backend: &Backend) {
        let mut hb = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner());
        if hb.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let mut conn = backend.conn();
        let (lease_key, consumers, consumer) = (
            self.lease_key.clone(),
            self.consumers.clone(),
            self.consumer.clone(),
        );
        let lease_ms = self.lease.as_millis() as u64;
        let every = self.lease / 3;
        let spawned = std::thread::Builder::new()
            .name("multiproc-redis-lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    // Re-adding the name heals a server that restarted
                    // without persistence (or a claim after a stall).
                    let r = conn.run(|c| {
                        redis::pipe()
                            .cmd("SET")
                            .arg(&lease_key)
                            .arg(1)
                            .arg("PX")
                            .arg(lease_ms)
                            .ignore()
                            .cmd("SADD")
                            .arg(&consumers)
                            .arg(&consumer)
                            .ignore()
                            .query::<()>(c)
                    });
                    if let Err(e) = r {
                        log::warn!("could not renew the lease of a queue consumer: {e}");
                    }
                }
            });
        match spawned {
            Ok(t) => *hb = Some((tx, t)),
            Err(e) => log::warn!("could not start the lease thread of a Redis queue: {e}"),
        }
    }

    /// Adds the registration of this consumer (set member, lease key) to
    /// `p` when it is not known to be there.
    fn add_register(&self, st: &State, p: &mut redis::Pipeline) {
        if st.registered {
            return;
        }
        p.cmd("SADD")
            .arg(&self.consumers)
            .arg(&self.consumer)
            .ignore()
            .cmd("SET")
            .arg(&self.lease_key)
            .arg(1)
            .arg("PX")
            .arg(self.lease.as_millis() as u64)
            .ignore();
    }

    /// Adds the acknowledgement of the `n` items this handle holds (the
    /// oldest of its processing list) to `p`.
    fn add_ack(&self, n: usize, p: &mut redis::Pipeline) {
        if n == 0 {
            return;
        }
        if self.counted {
            p.cmd("EVAL")
                .arg(&self.ack_lua)
                .arg(4)
                .arg(&self.proc_key)
                .arg(&self.count)
                .arg(self.waiters.key())
                .arg(self.room.key())
                .arg(n)
                .arg(u8::from(self.maxsize > 0))
                .ignore();
        } else if n == 1 {
            // A get after a get: the cheapest form (no array reply).
            p.cmd("RPOP").arg(&self.proc_key).ignore();
        } else {
            p.cmd("RPOP").arg(&self.proc_key).arg(n).ignore();
        }
    }

    /// What a plain queue's handle acknowledges before it takes again:
    /// everything it holds (a joinable queue's handle, nothing).
    fn to_ack(&self, st: &State) -> usize {
        if self.joinable { 0 } else { st.held }
    }

    /// Notes a take that failed: unless the server was not reached at
    /// all, it may have run (its reply lost), so the next take first gives
    /// back whatever is in the processing list beyond what this handle
    /// knows it holds. A plain handle cannot know whether the
    /// acknowledgement that went with the take ran either: it assumes so,
    /// and gives back everything (an item it held may be delivered again,
    /// none is lost). Returns `e`.
    fn failed_take(&self, st: &mut State, e: Error) -> Error {
        let refused =
            matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
        if !refused {
            st.unsure = true;
            if !self.joinable {
                st.held = 0;
            }
        }
        e
    }

    /// After a take whose reply was lost: gives back what it may have
    /// moved to the processing list (anything beyond what this handle
    /// knows it holds).
    fn recover(&self, st: &mut State) -> Result<()> {
        if !st.unsure {
            return Ok(());
        }
        let mut inv = self.return_script.key(&self.proc_key);
        inv.key(&self.main).arg(st.held);
        let back: i64 = st.run(|c| inv.invoke(c))?;
        if back > 0 {
            log::info!(
                "queue {}: {back} item(s) taken by a call that failed are given back",
                self.main
            );
        }
        st.unsure = false;
        Ok(())
    }

    /// Gives the items of consumers whose lease ran out back to the main
    /// list, when the last look is half a lease old.
    fn claim_if_due(&self, st: &mut State) -> Result<()> {
        if st.last_claim.is_some_and(|t| t.elapsed() < self.lease / 2) {
            return Ok(());
        }
        st.last_claim = Some(Instant::now());
        let mut inv = self.claim_script.key(&self.main);
        inv.key(&self.consumers).arg(&self.main);
        let back: i64 = st.run(|c| inv.invoke(c))?;
        if back > 0 {
            log::info!(
                "queue {}: {back} item(s) of a consumer that stopped are delivered again",
                self.main
            );
        }
        Ok(())
    }

    /// Takes one item, waiting until `deadline` (None: forever; `nowait`:
    /// not at all).
    fn take_one(&self, deadline: Option<Instant>, nowait: bool) -> Result<Vec<u8>> {
        let mut st = self.state();
        loop {
            self.recover(&mut st)?;
            self.claim_if_due(&mut st)?;
            let mut p = redis::pipe();
            self.add_register(&st, &mut p);
            let acked = self.to_ack(&st);
            self.add_ack(acked, &mut p);
            if nowait {
                p.cmd("LMOVE")
                    .arg(&self.main)
                    .arg(&self.proc_key)
                    .arg("RIGHT")
                    .arg("LEFT");
            } else {
                let left = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()),
                    None => BLOCK_SLICE,
                };
                // In slices: a dead server is noticed, and the claim runs
                // every half lease.
                let block = left
                    .min(BLOCK_SLICE)
                    .min(self.lease / 2)
                    .max(Duration::from_millis(1));
                p.cmd("BLMOVE")
                    .arg(&self.main)
                    .arg(&self.proc_key)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .arg(format!("{:.3}", block.as_secs_f64()));
            }
            let got = match st.run(|c| p.query::<(Option<Vec<u8>>,)>(c)) {
                Ok((got,)) => got,
                Err(e) => return Err(self.failed_take(&mut st, e)),
            };
            self.registered(&mut st);
            st.held -= acked;
            if let Some(item) = got {
                st.held += 1;
                return Ok(item);
            }
            if nowait || deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Empty);
            }
        }
    }

    /// Notes a successful round trip that registered this consumer.
    fn registered(&self, st: &mut State) {
        if !st.registered {
            st.registered = true;
            st.ever = true;
            let backend = st.conn.backend().clone();
            self.start_heartbeat(&backend);
        }
    }

    /// Takes up to `max` items that are there now, in one round trip (a
    /// script); empty when there are none.
    fn take_now(&self, max: usize) -> Result<Vec<Vec<u8>>> {
        let mut st = self.state();
        self.recover(&mut st)?;
        self.claim_if_due(&mut st)?;
        let acked = self.to_ack(&st);
        let mut inv = self.take_script.key(&self.main);
        inv.key(&self.proc_key)
            .key(&self.count)
            .key(self.waiters.key())
            .key(self.room.key())
            .key(&self.consumers)
            .key(&self.lease_key)
            .arg(max)
            .arg(acked)
            .arg(u8::from(self.counted))
            .arg(u8::from(self.maxsize > 0));
        if !st.registered {
            inv.arg(self.lease.as_millis() as u64).arg(&self.consumer);
        }
        let got = match st.run(|c| inv.invoke::<Value>(c)) {
            Ok(v) => v,
            Err(e) => return Err(self.failed_take(&mut st, e)),
        };
        self.registered(&mut st);
        st.held -= acked;
        let Value::Array(items) = got else {
            return Ok(Vec::new());
        };
        let items: Vec<Vec<u8>> = items
            .into_iter()
            .filter_map(|v| match v {
                Value::BulkString(b) => Some(b),
                _ => None,
            })
            .collect();
        st.held += items.len();
        Ok(items)
    }

    pub(crate) fn get_one<T: DeserializeOwned>(
        &self,
        deadline: Option<Instant>,
        nowait: bool,
    ) -> Result<T> {
        decode(&self.take_one(deadline, nowait)?)
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
        // queue goes the blocking way for the first item.
        let mut got = self.take_now(max)?;
        if got.is_empty() {
            got.push(self.take_one(deadline, false)?);
        }
        let mut out = Vec::with_capacity(got.len());
        for bytes in got {
            match decode(&bytes) {
                Ok(v) => out.push(v),
                Err(e) => log::warn!("queue {}: an item was skipped: {e}", self.main),
            }
        }
        Ok(out)
    }

    pub(crate) fn qsize(&self) -> usize {
        let key = &self.main;
        match self
            .state()
            .conn
            .run(|c| redis::cmd("LLEN").arg(key).query::<usize>(c))
        {
            Ok(n) => n,
            Err(e) => {
                log::warn!("qsize of {}: {e}", self.main);
                0
            }
        }
    }

    /// Items put and not acknowledged (a counted queue's counter).
    pub(crate) fn unfinished(&self) -> Result<usize> {
        let key = &self.count;
        let n: Option<i64> = self
            .state()
            .conn
            .run(|c| redis::cmd("GET").arg(key).query(c))?;
        Ok(n.unwrap_or(0).max(0) as usize)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.maxsize > 0 && self.unfinished().is_ok_and(|n| n >= self.maxsize)
    }

    pub(crate) fn task_done(&self) -> Result<()> {
        let mut st = self.state();
        if st.held == 0 {
            return Err(Error::State(
                "task_done() called more times than this handle took items",
            ));
        }
        let mut inv = self.ack_script.key(&self.proc_key);
        inv.key(&self.count)
            .key(self.waiters.key())
            .key(self.room.key())
            .arg(1)
            .arg(u8::from(self.maxsize > 0));
        st.run(|c| inv.invoke::<i64>(c))?;
        st.held -= 1;
        Ok(())
    }

    pub(crate) fn join_at(&self, deadline: Option<Instant>) -> bool {
        loop {
            let mut inv = self.join_script.key(&self.count);
            inv.key(self.waiters.key());
            let got = self.state().run(|c| inv.invoke::<(i64, String)>(c));
            let seen = match got {
                Ok((n, _)) if n <= 0 => return true,
                Ok((_, seen)) => seen,
                Err(e) => {
                    log::warn!("join of {}: {e}", self.main);
                    "0-0".to_string()
                }
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            // Woken by the acknowledgement that empties the queue; a failed
            // server is retried once per BLOCK_SLICE.
            if let Err(e) = self.waiters.wait(&seen, None, deadline) {
                log::warn!("join of {}: {e}", self.main);
                std::thread::sleep(BLOCK_SLICE.min(
                    deadline.map_or(BLOCK_SLICE, |d| d.saturating_duration_since(Instant::now())),
                ));
            }
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let hb = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((tx, thread)) = hb {
            // Stopped (and waited for) first, so that no renewal lands
            // after the lease key is deleted below.
            drop(tx);
            let _ = thread.join();
        }
        let mut st = self.state();
        if !st.ever && !st.unsure {
            return;
        }
        let mut p = redis::pipe();
        if self.joinable && st.held > 0 {
            // Not done: the lease goes now, and the next claim (by any
            // handle) gives the items back.
            p.cmd("DEL").arg(&self.lease_key).ignore();
        } else {
            // Acknowledged: what this handle holds. Given back: anything
            // else in its processing list (a take whose reply was lost).
            let held = self.to_ack(&st);
            self.add_ack(held, &mut p);
            p.cmd("EVAL")
                .arg(RETURN_LUA)
                .arg(2)
                .arg(&self.proc_key)
                .arg(&self.main)
                .arg(0)
                .ignore()
                .cmd("SREM")
                .arg(&self.consumers)
                .arg(&self.consumer)
                .ignore()
                .cmd("DEL")
                .arg(&self.lease_key)
                .ignore();
        }
        if let Err(e) = st.conn.run(|c| p.query::<()>(c)) {
            log::warn!("could not acknowledge the last items of {}: {e}", self.main);
        }
    }
}
