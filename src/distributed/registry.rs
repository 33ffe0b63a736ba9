//! Entry points and the registry of a program's pool workers; see
//! [`RedisPool`](super::RedisPool) for the pool itself.

use super::Backend;
use super::worker::{Worker, encode};
use crate::error::Result;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The command-line flag that makes a program a worker.
pub const WORKER_FLAG: &str = "--multiproc-worker";
/// The environment variable that makes a program a worker (its value is
/// the Redis URL).
pub const WORKER_ENV: &str = "MULTIPROC_WORKER";
/// Optional: the pool a worker serves (default `"default"`).
pub const POOL_ENV: &str = "MULTIPROC_POOL";
/// Optional: the worker's task lease in milliseconds.
pub const LEASE_ENV: &str = "MULTIPROC_LEASE_MS";

type Handler = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync>;

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
    /// The handler of the entry point `name`.
    pub(crate) fn handler(&self, name: &str) -> Option<Handler> {
        self.entries.get(name).cloned()
    }

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
