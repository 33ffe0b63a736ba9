//! Locks, semaphores, events and barriers in Redis.
//!
//! A lock or a semaphore permit is a *lease*: it expires unless its holder
//! renews it, which a thread of the holding process does every third of the
//! backend's lease ([`Backend::with_lease`]). A holder that dies stops
//! renewing, and its lock or permit comes free after the lease. The next
//! acquirer of a lock whose holder died (did not release) gets
//! [`LockError::OwnerDied`], as with the local [`crate::Lock`].
//! Releasing is token-checked (a Lua script): a holder whose lease was lost
//! cannot release somebody else's lock.
//!
//! A blocked acquire does not poll: it blocks on the object's wake stream
//! (see `wake.rs`), which a release appends to, for at most the time left
//! on the holder's lease (after which a dead holder's lock is free).

use super::wake::{LAST_ID_LUA, NOTIFY_LUA, Waiters, add_notify, int, text};
use super::{Backend, Conn, unique_id};
use crate::error::{Error, Result};
use crate::sync::{LockError, LockResult};
use redis::Value;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `KEYS[1]` lock, `KEYS[2]` its "held" marker, `KEYS[3]` its wake
/// stream; `ARGV[1]` token, `ARGV[2]` lease in ms. `{1}`: taken; `{2}`:
/// taken from a holder that never released (it died); `{0, pttl, wake id}`:
/// held by another, whose lease runs out in `pttl` ms at the latest.
const LOCK_ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1]), last_id(KEYS[3])}
end
local died = redis.call('EXISTS', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
if died == 1 then return {2} end
return {1}
";

/// Renews (`ARGV[2]` ms) the lock `KEYS[1]` if `ARGV[1]` still holds it.
const LOCK_RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Releases the lock `KEYS[1]` (and marker `KEYS[2]`) if `ARGV[1]` holds
/// it, and wakes its waiters (wake stream `KEYS[3]`).
const LOCK_RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  notify(KEYS[3])
  return 1
end
return 0
";

/// Semaphore: `KEYS[1]` sorted set of permit tokens scored by expiry (ms),
/// `KEYS[2]` its wake stream; `ARGV[1]` token, `ARGV[2]` lease ms,
/// `ARGV[3]` value. `{1}`: taken; `{0, ms, wake id}`: none free, and the
/// first permit's lease runs out in `ms`.
const SEM_ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return {1}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local ms = -1
if first[2] then ms = math.max(0, tonumber(first[2]) - now) end
return {0, ms, last_id(KEYS[2])}
";

/// Renews the permits `ARGV[2..]` still present in `KEYS[1]` by `ARGV[1]` ms.
const SEM_RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return 1
";

/// A script with the wake helpers (`last_id`, `notify`) in front of `body`.
pub(crate) fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LAST_ID_LUA}{NOTIFY_LUA}{body}"))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A thread that runs `renew` every `every` until dropped.
pub(crate) struct Renewer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Renewer {
    pub(crate) fn start(every: Duration, mut renew: impl FnMut() + Send + 'static) -> Renewer {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("multiproc-redis-lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    renew();
                }
            })
            .map_err(|e| log::warn!("could not start a lease thread: {e}"))
            .ok();
        Renewer {
            stop: Some(tx),
            thread,
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A lock shared through Redis, like [`crate::Lock`], held under a lease.
///
/// # Examples
/// ```no_run
/// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let lock = b.lock("accounts")?;
/// let guard = match lock.acquire()? {
///     Ok(g) => g,
///     Err(e) => e.into_guard().expect("the previous holder died; state may need repair"),
/// };
/// drop(guard); // released
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisLock {
    backend: Backend,
    key: String,
    marker: String,
    conn: Mutex<Conn>,
    acquire: redis::Script,
    waiters: Waiters,
}

/// Holds a [`RedisLock`] (and renews its lease) until dropped.
pub struct RedisLockGuard<'a> {
    lock: &'a RedisLock,
    token: String,
    renewer: Option<Renewer>,
}

impl std::fmt::Debug for RedisLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLockGuard")
            .field("lock", &self.lock.key)
            .finish()
    }
}

impl Backend {
    /// Opens the lock `name`.
    ///
    /// # Errors
    /// None today (the server is first used by an acquire); the `Result`
    /// leaves room for checks.
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let lock = b.lock("l")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self, name: &str) -> Result<RedisLock> {
        let key = self.key("lock", name);
        Ok(RedisLock {
            backend: self.clone(),
            waiters: Waiters::new(self, &key),
            marker: self.key("lockheld", name),
            key,
            conn: Mutex::new(self.conn()),
            acquire: script(LOCK_ACQUIRE),
        })
    }

    /// Opens the semaphore `name` with `value` permits (the first opener
    /// fixes the value).
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let s = b.semaphore("slots", 2)?;
    /// assert!(s.try_acquire()?);
    /// s.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn semaphore(&self, name: &str, value: u32) -> Result<RedisSemaphore> {
        let meta = self.key("semmeta", name);
        let mut conn = self.conn();
        let value: u32 = conn.run(|c| {
            redis::pipe()
                .cmd("SETNX")
                .arg(&meta)
                .arg(value)
                .ignore()
                .cmd("GET")
                .arg(&meta)
                .query::<(u32,)>(c)
                .map(|t| t.0)
        })?;
        let key = self.key("sem", name);
        Ok(RedisSemaphore {
            backend: self.clone(),
            waiters: Waiters::new(self, &key),
            key,
            value,
            conn: Mutex::new(conn),
            tokens: Arc::new(Mutex::new(Vec::new())),
            renewer: Mutex::new(None),
            acquire: script(SEM_ACQUIRE),
        })
    }
}

impl RedisLock {
    /// Takes the lock, waiting as long as it takes. The inner result is the
    /// local lock's: `Err(LockError::OwnerDied(guard))` when the previous
    /// holder died without releasing (its lease ran out); the caller holds
    /// the lock then too.
    ///
    /// # Errors
    /// The outer `Err`: [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let lock = b.lock("doc")?;
    /// let g = lock.acquire()?.expect("no holder died");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<LockResult<RedisLockGuard<'_>>> {
        self.acquire_at(None, true)
    }

    /// Takes the lock if it is free now; `Err(LockError::WouldBlock)` if
    /// not.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let lock = b.lock("doc2")?;
    /// let g = lock.try_acquire()?.expect("free");
    /// assert!(lock.try_acquire()?.is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<LockResult<RedisLockGuard<'_>>> {
        self.acquire_at(None, false)
    }

    /// Takes the lock, waiting at most `timeout`;
    /// `Err(LockError::Timeout)` if it stayed held.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let lock = b.lock("doc3")?;
    /// let g = lock.acquire_timeout(std::time::Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockResult<RedisLockGuard<'_>>> {
        self.acquire_at(Some(Instant::now() + timeout), true)
    }

    fn acquire_at(
        &self,
        deadline: Option<Instant>,
        wait: bool,
    ) -> Result<LockResult<RedisLockGuard<'_>>> {
        let token = unique_id();
        let lease = self.backend.lease();
        loop {
            let mut inv = self.acquire.key(&self.key);
            inv.key(&self.marker)
                .key(self.waiters.key())
                .arg(&token)
                .arg(lease.as_millis() as u64);
            let got: Vec<Value> = lock(&self.conn).run(|c| inv.invoke(c))?;
            match got.first().map(int) {
                Some(1) => return Ok(Ok(self.guard(token))),
                Some(2) => return Ok(Err(LockError::OwnerDied(self.guard(token)))),
                _ => {}
            }
            if !wait {
                return Ok(Err(LockError::WouldBlock));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Err(LockError::Timeout));
            }
            // Held: block until a release wakes us, or until the holder's
            // lease may have run out (a holder that died releases nothing).
            let pttl = got.get(1).map(int).unwrap_or(-1);
            let seen = got.get(2).map(text).unwrap_or_else(|| "0-0".into());
            let until = u64::try_from(pttl)
                .ok()
                .map(|ms| Duration::from_millis(ms + 1));
            self.waiters.wait(&seen, until, deadline)?;
        }
    }

    fn guard(&self, token: String) -> RedisLockGuard<'_> {
        let mut conn = self.backend.conn();
        let (key, tok) = (self.key.clone(), token.clone());
        let lease_ms = self.backend.lease().as_millis() as u64;
        let script = redis::Script::new(LOCK_RENEW);
        let renewer = Renewer::start(self.backend.lease() / 3, move || {
            match conn.run(|c| script.key(&key).arg(&tok).arg(lease_ms).invoke::<i64>(c)) {
                Ok(0) => log::error!("lock {key}: lease lost (expired before renewal)"),
                Ok(_) => {}
                Err(e) => log::warn!("lock {key}: could not renew the lease: {e}"),
            }
        });
        RedisLockGuard {
            lock: self,
            token,
            renewer: Some(renewer),
        }
    }

    /// True when somebody holds the lock now.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let lock = b.lock("doc4")?;
    /// assert!(!lock.is_locked()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_locked(&self) -> Result<bool> {
        let key = &self.key;
        lock(&self.conn).run(|c| redis::cmd("EXISTS").arg(key).query::<bool>(c))
    }
}

impl RedisLockGuard<'_> {
    /// Releases the lock now, reporting a lost lease.
    ///
    /// # Errors
    /// [`Error::State`] when the lease had run out (another process may
    /// have taken the lock meanwhile), [`Error::Io`] when the server cannot
    /// be reached (the lock then frees itself after the lease).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let lock = b.lock("doc5")?;
    /// lock.acquire()?.expect("free").release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        let Some(r) = self.renewer.take() else {
            return Ok(());
        };
        drop(r);
        let release = script(LOCK_RELEASE);
        let mut inv = release.key(&self.lock.key);
        inv.key(&self.lock.marker)
            .key(self.lock.waiters.key())
            .arg(&self.token);
        let n: i64 = lock(&self.lock.conn).run(|c| inv.invoke(c))?;
        if n == 0 {
            return Err(Error::State(
                "the lock's lease ran out before release; it may be held by another process",
            ));
        }
        Ok(())
    }
}

impl Drop for RedisLockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            log::warn!("releasing lock {}: {e}", self.lock.key);
        }
    }
}

/// A counting semaphore shared through Redis, like [`crate::Semaphore`];
/// each permit is a lease, so permits of a dead holder come back.
pub struct RedisSemaphore {
    backend: Backend,
    key: String,
    waiters: Waiters,
    value: u32,
    conn: Mutex<Conn>,
    tokens: Arc<Mutex<Vec<String>>>,
    renewer: Mutex<Option<Renewer>>,
    acquire: redis::Script,
}

impl RedisSemaphore {
    /// Takes a permit, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::Io`] when the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let s = b.semaphore("doc", 1)?;
    /// s.acquire()?;
    /// s.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_at(None, true).map(|_| ())
    }

    /// Takes a permit if one is free now.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let s = b.semaphore("doc2", 1)?;
    /// assert!(s.try_acquire()?);
    /// assert!(!s.try_acquire()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_at(None, false)
    }

    /// Takes a permit, waiting at most `timeout`; false if none came.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let s = b.semaphore("doc3", 1)?;
    /// assert!(s.acquire_timeout(std::time::Duration::from_secs(1))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.acquire_at(Some(Instant::now() + timeout), true)
    }

    fn acquire_at(&self, deadline: Option<Instant>, wait: bool) -> Result<bool> {
        let token = unique_id();
        let lease_ms = self.backend.lease().as_millis() as u64;
        loop {
            let mut inv = self.acquire.key(&self.key);
            inv.key(self.waiters.key())
                .arg(&token)
                .arg(lease_ms)
                .arg(self.value);
            let got: Vec<Value> = lock(&self.conn).run(|c| inv.invoke(c))?;
            if got.first().map(int) == Some(1) {
                lock(&self.tokens).push(token);
                self.start_renewer();
                return Ok(true);
            }
            if !wait || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            // None free: block until a release wakes us, or until the
            // first permit's lease may have run out.
            let ms = got.get(1).map(int).unwrap_or(-1);
            let seen = got.get(2).map(text).unwrap_or_else(|| "0-0".into());
            let until = u64::try_from(ms)
                .ok()
                .map(|ms| Duration::from_millis(ms + 1));
            self.waiters.wait(&seen, until, deadline)?;
        }
    }

    fn start_renewer(&self) {
        let mut r = lock(&self.renewer);
        if r.is_some() {
            return;
        }
        let tokens = Arc::clone(&self.tokens);
        let mut conn = self.backend.conn();
        let key = self.key.clone();
        let lease_ms = self.backend.lease().as_millis() as u64;
        let script = redis::Script::new(SEM_RENEW);
        *r = Some(Renewer::start(self.backend.lease() / 3, move || {
            let held = lock(&tokens).clone();
            if held.is_empty() {
                return;
            }
            let mut inv = script.key(&key);
            inv.arg(lease_ms);
            for t in &held {
                inv.arg(t);
            }
            if let Err(e) = conn.run(|c| inv.invoke::<i64>(c)) {
                log::warn!("semaphore {key}: could not renew: {e}");
            }
        }));
    }

    /// Gives back a permit this handle took.
    ///
    /// # Errors
    /// [`Error::State`] when this handle holds no permit, [`Error::Io`]
    /// when the server cannot be reached (the permit then comes back after
    /// the lease).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let s = b.semaphore("doc4", 1)?;
    /// assert!(s.release().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        let token = lock(&self.tokens).pop().ok_or(Error::State(
            "release() without a permit held by this handle",
        ))?;
        let mut p = redis::pipe();
        p.cmd("ZREM").arg(&self.key).arg(&token).ignore();
        add_notify(&mut p, self.waiters.key());
        lock(&self.conn).run(|c| p.query::<()>(c))
    }

    /// The number of permits.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.semaphore("doc5", 3)?.value(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn value(&self) -> u32 {
        self.value
    }
}

impl Drop for RedisSemaphore {
    fn drop(&mut self) {
        lock(&self.renewer).take();
        while lock(&self.tokens).last().is_some() {
            if self.release().is_err() {
                break;
            }
        }
    }
}
