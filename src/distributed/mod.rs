//! The same queues and locks across machines, kept in Redis (feature
//! `redis`).
//!
//! A [`Backend`] is opened from a URL and hands out objects with the local
//! API: [`Backend::queue`] and [`Backend::joinable_queue`] give a
//! [`RedisQueue`] and a [`RedisJoinableQueue`] with `put`/`get` (blocking,
//! `_timeout`, `_nowait`), `qsize`/`is_empty`/`is_full`, `close`,
//! `task_done`/`join` and the batched `put_many`/`get_many`. Processes on any
//! machine that open the same name on the same Redis share the object.
//!
//! Also here: [`RedisLock`] (a lease renewed while the holder lives;
//! [`LockError::OwnerDied`](crate::LockError::OwnerDied) for the next
//! acquirer when the holder died), [`RedisSemaphore`], [`RedisEvent`],
//! [`RedisBarrier`]; Manager-style [`RedisDict`], [`RedisList`],
//! [`RedisValue`] and [`RedisNamespace`]; and [`RedisPool`], a pool whose
//! workers are the same program on other machines, running registered
//! [`EntryPoint`]s (see [`RedisPool`] and [`Registry`] for the worker line
//! in `main`, the at-least-once delivery of tasks, exactly-once results,
//! the dead-letter list and timeouts).
//!
//! # Running workers on other machines
//! Build the program once, copy it to each machine, and start it there as
//! `myapp --multiproc-worker redis://user:password@redis-host:6379/0` (or
//! with `MULTIPROC_WORKER=` that URL); the program must call
//! [`Registry::serve_if_worker`] first thing in `main`. Workers and callers
//! must be the same build (the registry schema is checked on every task),
//! and their clocks should be in sync when tasks have timeouts. Redis must
//! be reachable from every machine; use a password (ACL user) and, across
//! untrusted networks, TLS (`rediss://`, below).
//!
//! # URLs
//! `redis://[user:password@]host:port/db`, `rediss://…` (the same over
//! TLS), `unix:///path/to/socket` (with `?pass=…` for a password). The
//! password never appears in an error or a log line: errors name the server
//! as `redis://user:***@host:port/db`.
//!
//! # TLS
//! `rediss://` URLs connect through rustls (with the `ring` provider). The
//! server certificate is checked against the **system's roots** (the
//! `rustls-native-certs` loader: `/etc/ssl/certs` on Debian, or the files
//! named by `SSL_CERT_FILE`/`SSL_CERT_DIR`), not a root list built into the
//! program: a private CA added to the machine's store with
//! `update-ca-certificates` is trusted like a public one, and an
//! operator's policy applies. To trust a private CA for this program only,
//! point [`CA_ENV`] (`MULTIPROC_REDIS_CA=/path/ca.pem`) at its PEM file (it
//! then replaces the system roots; workers read the same variable) or call
//! [`Backend::open_with_ca`]. The certificate must name the host of the
//! URL (DNS name or IP address). A Redis server started with
//! `--tls-port 6380 --port 0 --tls-cert-file … --tls-key-file …
//! --tls-ca-cert-file … --tls-auth-clients no` accepts such clients (Debian's
//! `redis-server` is built with TLS).
//!
//! # Client
//! This module uses the `redis` crate's **blocking** connections
//! (`redis::Connection`), one per object, not its tokio connection manager.
//! The local API is blocking (a `get` parks the calling thread), so a
//! blocking client maps onto it one to one: a blocking `get` is one
//! `BLMOVE` on the object's own connection, with no runtime to
//! start inside a library call and no runtime to share with a caller that
//! may run its own. Each object reconnects by itself: a call that meets a
//! dropped connection returns an [`Error::Io`] naming the
//! server (and the cause), drops the connection, and the next call connects
//! again.
//!
//! # Delivery guarantee
//! A queue is a Redis list of waiting items, and every consumer handle has
//! a *processing list* of its own (the "reliable queue" pattern): a `get`
//! moves the item from the queue's list into the handle's processing list
//! in one atomic command (`BLMOVE`), and it leaves Redis only when it is
//! acknowledged: `task_done` for a [`RedisJoinableQueue`]; for a
//! [`RedisQueue`] the next `get` or `get_many`, or dropping the handle.
//! An item is therefore **delivered at least once**. Each handle that has
//! taken something is a member of the queue's consumer set and keeps a
//! lease key there (`SET … PX`, the backend's lease,
//! [`Backend::with_lease`]), renewed by a heartbeat thread every third of
//! the lease while the handle lives. Once per half lease a `get` (of any
//! handle) runs a claim script: a consumer whose lease key is gone (no
//! heartbeat for a lease: it died, or stalled that long) has its processing
//! list moved back to the taking end of the queue, the oldest it took
//! first, and leaves the set. So the items of a dead consumer are
//! delivered again, to the next `get` of any handle, about a lease after
//! it died; a consumer that stops for longer than the lease without dying
//! may see its items delivered a second time elsewhere (and its
//! `task_done` calls then acknowledge the oldest items it holds *now*).
//! A plain handle that is dropped acknowledges what it took and leaves the
//! set; a joinable handle dropped with items not marked done deletes its
//! lease key, so they come back at the next claim, without waiting for the
//! lease. A take whose reply is lost (the connection dropped during the
//! call) may have run on the server: the handle's next take first gives
//! back what its processing list holds beyond what it knows it took (and,
//! for a plain handle, the items it held too, since it cannot know whether
//! their acknowledgement ran: they may come again, none is lost).
//!
//! `qsize` is the length of the queue's list (items waiting, not the ones
//! taken). Bounded and joinable queues also keep a counter of items put
//! and not acknowledged, for `is_full`, `unfinished_tasks` and `join`
//! (taken, unacknowledged items count as in the queue); a plain unbounded
//! queue keeps no counter and pays nothing for it. Whether a queue counts
//! is fixed when it is created (with its bound), so a joinable handle
//! cannot open a queue that was created as a plain unbounded one.
//!
//! The distributed pool's task and result queues are Redis streams read
//! through a consumer group instead (see [`RedisPool`]): there a
//! redelivered task must be recognised as one, to count the attempts
//! behind the dead-letter list.
//!
//! # Round trips
//! What each queue operation costs, in round trips to the server (a
//! pipeline or a script is one):
//!
//! | operation | round trips |
//! |---|---|
//! | `put` (plain, unbounded) | 1 (`LPUSH`) |
//! | `put` (joinable, unbounded) | 1 (`INCRBY` of the counter and `LPUSH`, a `MULTI`…`EXEC` transaction in one pipeline) |
//! | `put`, `put_nowait` (bounded) | 1 (a script: the bound check on the counter, `LPUSH`, `INCRBY`; or the room wake id) |
//! | `put_many` of n items | 1 (one `LPUSH` of all of them, split every 1,000 in the same pipeline; a script when bounded) |
//! | `get`, `get_nowait` | 1 (for a [`RedisQueue`], `RPOP` of what the handle took before from its processing list — a script when the queue counts, which also takes them off the counter and wakes the puts waiting for room — then `BLMOVE`, or `LMOVE` for `get_nowait`, in one pipeline; the first take of a handle registers it in the same pipeline) |
//! | `get_many` | 1 when items are there (one script: the acknowledgement as above, then `LMPOP` of up to n items pushed onto the processing list and returned); 2 when the queue is empty (then the blocking `get` for the first item) |
//! | `task_done` | 1 (a script: `RPOP` of the oldest item the handle took, `DECR` of the counter, the wake-ups) |
//! | `qsize`, `is_empty` | 1 (`LLEN`) |
//! | `is_full`, `unfinished_tasks` | 1 (`GET` of the counter) |
//!
//! So one `put` then one `get` is two round trips. Besides: once per half
//! lease a `get` first runs the claim script (one round trip, a few
//! commands per consumer of the queue). A `get` with nothing to take
//! blocks on the server (`BLMOVE`, in slices of at most one second, and of
//! at most half the lease so the claim runs in time); a `put` that waits
//! for room in a full bounded queue blocks too: the bound check reads the
//! last id of the queue's *room* wake stream in the same script, then the
//! put waits in `XREAD BLOCK` from that id; every acknowledgement in a
//! bounded queue (the `get` after, `get_many`, `task_done`, dropping a
//! handle) appends to that stream in the same script, so a waiting put
//! wakes as soon as there is room and costs two round trips per second
//! while there is none. `join` waits the same way on the queue's own wake
//! stream, appended to when the counter reaches zero.
//!
//! Measured against a raw `PING` (`benches/redis.rs`, Redis 7.0, five
//! runs on a busy two-core machine where the `PING` itself took 22–38 µs),
//! a put → get costs about 2.4 `PING`s (1.6–3.2; 60–81 µs), within the
//! spread of the bench's `raw_list_put_get` row (0.8–1.17 times it in the
//! same runs), which sends list commands of the same kind on a raw
//! connection: the floor of this design. The list commands cost the
//! server about 1 µs each (`INFO commandstats`); what is left above two
//! `PING`s is the scheduling of client and server and the client's work on
//! a pipeline of two commands. The `raw_stream_put_get` row sends the
//! commands of the stream design the queues had before (`XADD`; `XACK` and
//! `XREADGROUP`): a put → get on lists took 0.63–0.86 of it in every run,
//! the server spending 10–15 µs in `XREADGROUP` alone (the consumer
//! group's bookkeeping: the pending list, the lag). A batch of 1,000
//! (`put_many` then `get_many`) moves 620,000–950,000 items a second
//! (120,000–175,000 on streams): one `LPUSH` of all the items, one script
//! whose `LMPOP` and `LPUSH` cost the server well under a microsecond an
//! item, and the client's decoding of a flat list of items.
//!
//! # Persistence
//! "No acknowledged item is lost" across a restart of Redis itself needs
//! the server to persist every write before it answers:
//! `appendonly yes` and `appendfsync always`. With the default
//! `appendfsync everysec` up to one second of writes may be lost when the
//! machine (not only the server process) fails. With no persistence a
//! restart empties every queue; the handles reconnect, register again
//! (their heartbeat re-adds them to the consumer set) and go on.
//!
//! # Security
//! Items are serde data in the crate's binary codec; nothing read from
//! Redis names code to run, so a message planted in Redis can at worst be
//! an item that fails to decode: that `get` returns
//! [`Error::Decode`] for that item (which counts as
//! taken) and the next `get` goes on with the next item.
#![allow(clippy::module_name_repetitions)]

mod list;
mod pool;
mod queue;
mod registry;
mod signal;
mod state;
mod stream;
mod sync;
mod wake;
mod worker;

pub use pool::{RedisAsyncResult, RedisPool};
pub use queue::{RedisJoinableQueue, RedisQueue};
pub use registry::{EntryPoint, LEASE_ENV, POOL_ENV, Registry, WORKER_ENV, WORKER_FLAG};
pub use signal::{RedisBarrier, RedisEvent};
pub use state::{RedisDict, RedisList, RedisNamespace, RedisValue};
pub use sync::{RedisLock, RedisLockGuard, RedisSemaphore};

use crate::error::{Error, Result};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The default lease of an item taken from a queue (see
/// [`Backend::with_lease`]).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The environment variable naming a PEM file of CA certificates that
/// [`Backend::open`] trusts for `rediss://` URLs instead of the system's
/// roots (see [`Backend::open_with_ca`]).
pub const CA_ENV: &str = "MULTIPROC_REDIS_CA";

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest single blocking read; longer waits are done in slices so a
/// dead server is noticed.
pub(crate) const BLOCK_SLICE: Duration = Duration::from_millis(1000);

/// A Redis server and a key prefix, from which queues and locks are opened.
///
/// Cloning is cheap; clones share the configuration (each object opened
/// from it has its own connection).
///
/// # Examples
/// ```no_run
/// let backend = multiproc::distributed::Backend::connect("redis://:secret@127.0.0.1:6379/0")?;
/// let q = backend.queue::<String>("jobs")?;
/// q.put("hello".to_string())?;
/// assert_eq!(q.get()?, "hello");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// The URL with its password replaced by `***`.
    shown: String,
    /// The password, to scrub from server and client messages.
    secret: Option<String>,
    prefix: String,
    lease: Duration,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("url", &self.inner.shown)
            .field("prefix", &self.inner.prefix)
            .field("lease", &self.inner.lease)
            .finish()
    }
}

impl Backend {
    /// Opens the server at `url` and checks that it answers (and accepts
    /// the credentials) with a `PING`.
    ///
    /// # Errors
    /// [`Error::Address`] for a URL the client cannot parse,
    /// [`Error::Authentication`] when the server refuses the credentials,
    /// [`Error::Io`] when it cannot be reached. No message contains the
    /// password.
    ///
    /// # Examples
    /// ```no_run
    /// let backend = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(url: &str) -> Result<Backend> {
        let backend = Backend::open(url)?;
        let mut conn = backend.conn();
        conn.run(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(backend)
    }

    /// [`connect`](Self::connect) without the `PING`: the first use of an
    /// object connects.
    ///
    /// # Errors
    /// [`Error::Address`] for a URL the client cannot parse.
    ///
    /// # Examples
    /// ```
    /// let b = multiproc::distributed::Backend::open("redis://user:pw@127.0.0.1:1/0")?;
    /// assert!(!format!("{b:?}").contains("pw"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open(url: &str) -> Result<Backend> {
        if url.starts_with("rediss://")
            && let Some(path) = std::env::var_os(CA_ENV).filter(|p| !p.is_empty())
        {
            let pem = std::fs::read(&path).map_err(|e| {
                Error::Address(format!(
                    "{CA_ENV}={}: cannot read the CA file: {e}",
                    std::path::Path::new(&path).display()
                ))
            })?;
            return Backend::open_with_ca(url, &pem);
        }
        Backend::build(url, |u| redis::Client::open(nodelay(u)?))
    }

    /// [`open`](Self::open) for a `rediss://` URL whose server certificate
    /// is checked against the CA certificates in `ca_pem` (PEM, one or
    /// more) instead of the system's roots: the way to trust a private CA
    /// from code (from the environment, see [`CA_ENV`]).
    ///
    /// # Errors
    /// [`Error::Address`] for a URL the client cannot parse, a URL that is
    /// not `rediss://`, or `ca_pem` without a usable certificate.
    ///
    /// # Examples
    /// ```no_run
    /// let pem = std::fs::read("/etc/redis/ca.pem")?;
    /// let b = multiproc::distributed::Backend::open_with_ca("rediss://:pw@redis.lan:6380/0", &pem)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_with_ca(url: &str, ca_pem: &[u8]) -> Result<Backend> {
        if !url.starts_with("rediss://") {
            return Err(Error::Address(format!(
                "{}: a CA certificate applies to rediss:// URLs only",
                redact(url).0
            )));
        }
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Address(format!("{}: bad CA PEM: {e}", redact(url).0)))?;
        if certs.is_empty() {
            return Err(Error::Address(format!(
                "{}: the CA PEM holds no certificate",
                redact(url).0
            )));
        }
        Backend::build(url, |u| {
            redis::Client::build_with_tls(
                nodelay(u)?,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca_pem.to_vec()),
                },
            )
        })
    }

    fn build(
        url: &str,
        make: impl FnOnce(&str) -> redis::RedisResult<redis::Client>,
    ) -> Result<Backend> {
        let (shown, secret) = redact(url);
        let client = make(url).map_err(|e| {
            Error::Address(format!(
                "{shown}: {}",
                scrub(&e.to_string(), secret.as_deref())
            ))
        })?;
        Ok(Backend {
            inner: Arc::new(Inner {
                client,
                shown,
                secret,
                prefix: "multiproc".to_string(),
                lease: DEFAULT_LEASE,
            }),
        })
    }

    /// The same server with every key under `prefix` (default
    /// `"multiproc"`), so that separate applications or test runs on one
    /// server do not meet.
    ///
    /// # Examples
    /// ```
    /// let b = multiproc::distributed::Backend::open("redis://127.0.0.1:1")?.with_prefix("app1");
    /// assert_eq!(b.prefix(), "app1");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_prefix(&self, prefix: &str) -> Backend {
        self.with(|i| i.prefix = prefix.to_string())
    }

    /// The same server with another lease for taken queue items (default
    /// [`DEFAULT_LEASE`]): an item whose consumer sent no heartbeat for this
    /// long is delivered again. Every handle of one queue should use the
    /// same lease.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::distributed::Backend::open("redis://127.0.0.1:1")?
    ///     .with_lease(Duration::from_secs(2));
    /// assert_eq!(b.lease(), Duration::from_secs(2));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lease(&self, lease: Duration) -> Backend {
        self.with(|i| i.lease = lease.max(Duration::from_millis(100)))
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) -> Backend {
        let mut inner = Inner {
            client: self.inner.client.clone(),
            shown: self.inner.shown.clone(),
            secret: self.inner.secret.clone(),
            prefix: self.inner.prefix.clone(),
            lease: self.inner.lease,
        };
        f(&mut inner);
        Backend {
            inner: Arc::new(inner),
        }
    }

    /// The key prefix.
    ///
    /// # Examples
    /// ```
    /// let b = multiproc::distributed::Backend::open("redis://127.0.0.1:1")?;
    /// assert_eq!(b.prefix(), "multiproc");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The lease of taken queue items.
    ///
    /// # Examples
    /// ```
    /// let b = multiproc::distributed::Backend::open("redis://127.0.0.1:1")?;
    /// assert_eq!(b.lease(), multiproc::distributed::DEFAULT_LEASE);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// The URL with the password replaced by `***`.
    ///
    /// # Examples
    /// ```
    /// let b = multiproc::distributed::Backend::open("redis://u:hunter2@127.0.0.1:6379/0")?;
    /// assert_eq!(b.url(), "redis://u:***@127.0.0.1:6379/0");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn url(&self) -> &str {
        &self.inner.shown
    }

    /// A Redis key under the prefix.
    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.inner.prefix)
    }

    /// A new, not yet connected, connection.
    pub(crate) fn conn(&self) -> Conn {
        Conn {
            backend: self.clone(),
            con: None,
        }
    }

    /// Turns a client error into this crate's, without the password.
    pub(crate) fn error(&self, e: &redis::RedisError) -> Error {
        let msg = scrub(&e.to_string(), self.inner.secret.as_deref());
        let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
            || msg.contains("WRONGPASS")
            || msg.contains("NOAUTH")
            || msg.contains("invalid password")
            || msg.contains("invalid username-password");
        if auth {
            return Error::Authentication(format!("redis at {}: {msg}", self.inner.shown));
        }
        let kind = if e.is_connection_refusal() {
            io::ErrorKind::ConnectionRefused
        } else if e.is_timeout() {
            io::ErrorKind::TimedOut
        } else if e.is_connection_dropped() {
            io::ErrorKind::ConnectionReset
        } else {
            io::ErrorKind::Other
        };
        Error::Io(io::Error::new(
            kind,
            format!("redis at {}: {msg}", self.inner.shown),
        ))
    }
}

/// One connection that reconnects on the next call after a failure.
pub(crate) struct Conn {
    backend: Backend,
    con: Option<redis::Connection>,
}

impl Conn {
    /// Runs `f` on the connection (connecting first when needed). A
    /// failure of the connection itself drops it, so the next call
    /// connects again.
    pub(crate) fn run<R>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R> {
        let b = &self.backend;
        if self.con.is_none() {
            let con = b
                .inner
                .client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(|e| b.error(&e))?;
            // A blocking read waits at most BLOCK_SLICE on the server; the
            // socket timeout only catches a server that stopped answering.
            con.set_read_timeout(Some(BLOCK_SLICE + Duration::from_secs(10)))
                .map_err(|e| b.error(&e))?;
            self.con = Some(con);
        }
        let con = self.con.as_mut().expect("connected above");
        match f(con) {
            Ok(r) => Ok(r),
            Err(e) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                {
                    self.con = None;
                }
                Err(b.error(&e))
            }
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }
}

/// The connection info of `url`, with `TCP_NODELAY`: a request is one
/// write, and waiting for the peer's acknowledgement of an earlier segment
/// (Nagle) only delays it.
fn nodelay(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

/// The URL as shown in messages (password replaced by `***`) and the
/// password itself.
fn redact(url: &str) -> (String, Option<String>) {
    let mut secret = None;
    let mut shown = url.to_string();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            let userinfo = &rest[..at];
            let (user, pass) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if let Some(p) = pass.filter(|p| !p.is_empty()) {
                secret = Some(p.to_string());
                shown = format!("{}{user}:***@{}", &url[..scheme_end + 3], &rest[at + 1..]);
            }
        }
    }
    // unix:///path?pass=secret (and `password=` in some spellings).
    for key in ["pass=", "password="] {
        if let Some(pos) = shown.find(key) {
            let start = pos + key.len();
            let end = shown[start..]
                .find('&')
                .map(|e| start + e)
                .unwrap_or(shown.len());
            if end > start {
                secret.get_or_insert_with(|| shown[start..end].to_string());
                shown.replace_range(start..end, "***");
            }
        }
    }
    (shown, secret)
}

/// `msg` with every occurrence of the password replaced.
fn scrub(msg: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => msg.replace(s, "***"),
        _ => msg.to_string(),
    }
}

/// A unique name for one consumer or lock holder: host, pid and random bits.
pub(crate) fn unique_id() -> String {
    let mut bytes = [0u8; 8];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (t.as_nanos() as u64).to_ne_bytes();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!(
        "{host}-{}-{:016x}",
        std::process::id(),
        u64::from_ne_bytes(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(
            redact("redis://u:pw@h:1/2"),
            ("redis://u:***@h:1/2".to_string(), Some("pw".to_string()))
        );
        assert_eq!(
            redact("redis://:pw@h:1"),
            ("redis://:***@h:1".to_string(), Some("pw".to_string()))
        );
        assert_eq!(redact("redis://h:1/0"), ("redis://h:1/0".to_string(), None));
        assert_eq!(
            redact("unix:///tmp/r.sock?db=1&pass=xyz"),
            (
                "unix:///tmp/r.sock?db=1&pass=***".to_string(),
                Some("xyz".to_string())
            )
        );
        assert_eq!(scrub("bad xyz here", Some("xyz")), "bad *** here");
    }
}
