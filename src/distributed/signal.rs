//! Events and barriers in Redis. Waits block on the object's wake stream
//! (see `wake.rs`): `set`, the last party of a barrier, `abort` and `reset`
//! append to it and every waiter wakes; nothing polls.

use super::sync::{lock, script};
use super::wake::{Waiters, add_notify, int, text};
use super::{Backend, Conn};
use crate::error::{Error, Result};
use crate::sync::BrokenBarrierError;
use redis::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `KEYS[1]` event, `KEYS[2]` its wake stream: `{1}` when set, else
/// `{0, wake id}`.
const EVENT_CHECK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {1} end
return {0, last_id(KEYS[2])}
";

/// Barrier: `KEYS[1]` hash {n, gen, broken, resets}, `KEYS[2]` its wake
/// stream; `ARGV[1]` parties. Returns `{index, generation, resets, wake
/// id}` (`{-1}` when broken); the last arrival resets the count, advances
/// the generation and wakes the others.
const BARRIER_ARRIVE: &str = r"
if redis.call('HGET', KEYS[1], 'broken') == '1' then return {-1} end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
local resets = tonumber(redis.call('HGET', KEYS[1], 'resets') or '0')
local seen = last_id(KEYS[2])
if n >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'n', 0)
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
  notify(KEYS[2])
end
return {tonumber(ARGV[1]) - n, gen, resets, seen}
";

/// `{generation, broken, resets, wake id}` of the barrier `KEYS[1]`.
const BARRIER_CHECK: &str = r"
local v = redis.call('HMGET', KEYS[1], 'gen', 'broken', 'resets')
return {tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0'), last_id(KEYS[2])}
";

impl Backend {
    /// Opens the event `name`, like [`crate::Event`].
    ///
    /// # Errors
    /// None today; the `Result` leaves room for checks.
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let e = b.event("ready")?;
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn event(&self, name: &str) -> Result<RedisEvent> {
        let key = self.key("event", name);
        Ok(RedisEvent {
            waiters: Waiters::new(self, &key),
            check: script(EVENT_CHECK),
            key,
            conn: Mutex::new(self.conn()),
        })
    }

    /// Opens the barrier `name` for `parties` processes, like
    /// [`crate::Barrier`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero parties.
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let barrier = b.barrier("start", 1)?;
    /// barrier.wait()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn barrier(&self, name: &str, parties: usize) -> Result<RedisBarrier> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one party".into(),
            ));
        }
        let key = self.key("barrier", name);
        Ok(RedisBarrier {
            waiters: Waiters::new(self, &key),
            arrive: script(BARRIER_ARRIVE),
            check: script(BARRIER_CHECK),
            key,
            parties,
            conn: Mutex::new(self.conn()),
        })
    }
}

/// An event shared through Redis, like [`crate::Event`].
pub struct RedisEvent {
    key: String,
    conn: Mutex<Conn>,
    waiters: Waiters,
    check: redis::Script,
}

impl RedisEvent {
    /// Sets the flag; waiters return.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.event("e")?.set()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self) -> Result<()> {
        let mut p = redis::pipe();
        p.cmd("SET").arg(&self.key).arg(1).ignore();
        add_notify(&mut p, self.waiters.key());
        lock(&self.conn).run(|c| p.query::<()>(c))
    }

    /// Clears the flag.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.event("e2")?.clear()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        let key = &self.key;
        lock(&self.conn).run(|c| redis::cmd("DEL").arg(key).query::<()>(c))
    }

    /// True when the flag is set.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(!b.event("e3")?.is_set()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_set(&self) -> Result<bool> {
        let key = &self.key;
        lock(&self.conn).run(|c| redis::cmd("EXISTS").arg(key).query::<bool>(c))
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let e = b.event("e4")?;
    /// e.set()?;
    /// e.wait()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_at(None).map(|_| ())
    }

    /// Waits at most `timeout`; true when the flag was set.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(!b.event("e5")?.wait_timeout(std::time::Duration::from_millis(10))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_at(Some(Instant::now() + timeout))
    }

    fn wait_at(&self, deadline: Option<Instant>) -> Result<bool> {
        loop {
            let mut inv = self.check.key(&self.key);
            inv.key(self.waiters.key());
            let got: Vec<Value> = lock(&self.conn).run(|c| inv.invoke(c))?;
            if got.first().map(int) == Some(1) {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            let seen = got.get(1).map(text).unwrap_or_else(|| "0-0".into());
            self.waiters.wait(&seen, None, deadline)?;
        }
    }
}

/// A barrier shared through Redis, like [`crate::Barrier`].
pub struct RedisBarrier {
    key: String,
    parties: usize,
    conn: Mutex<Conn>,
    waiters: Waiters,
    arrive: redis::Script,
    check: redis::Script,
}

impl RedisBarrier {
    /// Waits until `parties` processes have called `wait`; returns this
    /// caller's index (0 for the last to arrive … parties-1 for the first).
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached, a
    /// [`BrokenBarrierError`] (as [`Error::State`]) after
    /// [`abort`](Self::abort).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.barrier("one", 1)?.wait()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<usize> {
        self.wait_at(None)
    }

    /// [`wait`](Self::wait), at most `timeout`; the timeout breaks the
    /// barrier for everybody (as in Python).
    ///
    /// # Errors
    /// As [`wait`](Self::wait); [`Error::Timeout`] when the timeout passed.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let r = b.barrier("two", 2)?.wait_timeout(std::time::Duration::from_millis(10));
    /// assert!(r.is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_at(Some(Instant::now() + timeout))
    }

    fn wait_at(&self, deadline: Option<Instant>) -> Result<usize> {
        let mut inv = self.arrive.key(&self.key);
        inv.key(self.waiters.key()).arg(self.parties);
        let got: Vec<Value> = lock(&self.conn).run(|c| inv.invoke(c))?;
        let index = got.first().map(int).unwrap_or(-1);
        if index < 0 {
            return Err(BrokenBarrierError.into());
        }
        if index == 0 {
            return Ok(0);
        }
        let generation = got.get(1).map(int).unwrap_or(0);
        let resets = got.get(2).map(int).unwrap_or(0);
        let mut seen = got.get(3).map(text).unwrap_or_else(|| "0-0".into());
        loop {
            // Block until the last party, an abort or a reset wakes us.
            self.waiters.wait(&seen, None, deadline)?;
            let mut inv = self.check.key(&self.key);
            inv.key(self.waiters.key());
            let now: Vec<Value> = lock(&self.conn).run(|c| inv.invoke(c))?;
            if now.first().map(int).unwrap_or(0) != generation {
                return Ok(index as usize);
            }
            if now.get(1).map(int) == Some(1) || now.get(2).map(int).unwrap_or(0) != resets {
                return Err(BrokenBarrierError.into());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.abort()?;
                return Err(Error::Timeout);
            }
            seen = now.get(3).map(text).unwrap_or_else(|| "0-0".into());
        }
    }

    /// Breaks the barrier: waiters and later callers get a
    /// [`BrokenBarrierError`] until [`reset`](Self::reset).
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let bar = b.barrier("three", 2)?;
    /// bar.abort()?;
    /// assert!(bar.wait().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn abort(&self) -> Result<()> {
        let mut p = redis::pipe();
        p.cmd("HSET").arg(&self.key).arg("broken").arg(1).ignore();
        add_notify(&mut p, self.waiters.key());
        lock(&self.conn).run(|c| p.query::<()>(c))
    }

    /// Makes a broken barrier usable again, with nobody waiting: parties
    /// waiting now get a [`BrokenBarrierError`], as in Python.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.barrier("four", 2)?.reset()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HSET")
            .arg(&self.key)
            .arg("broken")
            .arg(0)
            .arg("n")
            .arg(0)
            .ignore()
            .cmd("HINCRBY")
            .arg(&self.key)
            .arg("resets")
            .arg(1)
            .ignore();
        add_notify(&mut p, self.waiters.key());
        lock(&self.conn).run(|c| p.query::<()>(c))
    }

    /// The number of parties.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.barrier("five", 3)?.parties(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parties(&self) -> usize {
        self.parties
    }
}
