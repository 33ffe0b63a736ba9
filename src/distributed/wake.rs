//! Server-side wake-ups for waits on locks, semaphores, events, barriers
//! and joinable queues.
//!
//! Every object that can be waited on has a small stream, its *wake
//! stream* (`<key>:wake`, trimmed to a few entries). Whatever may end a
//! wait (a release, `set`, the last party of a barrier, `task_done` that
//! empties a queue, an acknowledgement that makes room in a bounded queue,
//! on that queue's separate room stream) appends an entry to it. A waiter checks the object and
//! reads the wake stream's last id in the same script (atomically), then
//! blocks in `XREAD BLOCK … STREAMS <wake> <that id>` on a connection of
//! its own: a change after the check appends a later entry and ends the
//! block at once, and every waiter of the object wakes (a stream read is a
//! broadcast, unlike a list pop). So a wait costs no round trips while
//! nothing happens; it checks again only when woken, when a lease it waits
//! out may have run down, or after [`BLOCK_SLICE`] (to notice a server that
//! went away).

use super::{BLOCK_SLICE, Backend, Conn};
use crate::error::Result;
use redis::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many entries a wake stream keeps.
const KEEP: usize = 8;

/// Lua: the last id of the wake stream `KEYS[n]` ("0-0" when empty), for a
/// script that checks an object and returns it with the outcome.
pub(crate) const LAST_ID_LUA: &str = r"
local function last_id(key)
  local r = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if r[1] then return r[1][1] end
  return '0-0'
end
";

/// Lua: appends a wake entry to `key`.
pub(crate) const NOTIFY_LUA: &str = r"
local function notify(key)
  redis.call('XADD', key, 'MAXLEN', '8', '*', 'w', '1')
end
";

/// The wake stream of the object whose key is `key`.
pub(crate) fn wake_key(key: &str) -> String {
    format!("{key}:wake")
}

/// Adds "wake everybody waiting on `wake`" to the pipeline `p`.
pub(crate) fn add_notify(p: &mut redis::Pipeline, wake: &str) {
    p.cmd("XADD")
        .arg(wake)
        .arg("MAXLEN")
        .arg(KEEP)
        .arg("*")
        .arg("w")
        .arg(1)
        .ignore();
}

/// Connections to block on, one per concurrent waiter of an object, kept
/// apart from the object's own connection so that a waiting thread never
/// holds up a release or a `set` by another thread of the same process.
pub(crate) struct Waiters {
    backend: Backend,
    wake: String,
    idle: Mutex<Vec<Conn>>,
}

impl Waiters {
    pub(crate) fn new(backend: &Backend, key: &str) -> Waiters {
        Waiters {
            backend: backend.clone(),
            wake: wake_key(key),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The wake stream's key.
    pub(crate) fn key(&self) -> &str {
        &self.wake
    }

    /// Blocks until an entry later than `seen` is on the wake stream, or
    /// for `at_most` (capped by `deadline` and [`BLOCK_SLICE`]), whichever
    /// comes first. Returns at once when the cap is already zero.
    pub(crate) fn wait(
        &self,
        seen: &str,
        at_most: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut block = at_most.unwrap_or(BLOCK_SLICE).min(BLOCK_SLICE);
        if let Some(d) = deadline {
            block = block.min(d.saturating_duration_since(Instant::now()));
        }
        if block.is_zero() {
            return Ok(());
        }
        let mut conn = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| self.backend.conn());
        let wake = &self.wake;
        let res = conn.run(|c| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                // BLOCK 0 would wait forever.
                .arg((block.as_millis() as u64).max(1))
                .arg("STREAMS")
                .arg(wake)
                .arg(seen)
                .query::<Value>(c)
        });
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        res.map(|_| ())
    }
}

/// The text of a bulk or simple string reply.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

/// The integer of an integer (or numeric string) reply.
pub(crate) fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => text(other).parse().unwrap_or(0),
    }
}
