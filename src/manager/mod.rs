//! Managers (Python's `multiprocessing.managers`): shared containers and
//! synchronization objects living in a server process, used from any
//! process through proxies — locally, remotely over TCP or Unix sockets,
//! and from Python.
//!
//! * [`Manager::start`] starts a server process (Python's `Manager()` /
//!   `SyncManager`) and creates objects in it: [`dict`](RemoteManager::dict),
//!   [`list`](RemoteManager::list), [`queue`](RemoteManager::queue),
//!   [`value`](RemoteManager::value), [`namespace`](RemoteManager::namespace),
//!   [`lock`](RemoteManager::lock), [`event`](RemoteManager::event), Python 3.14's
//!   [`set`](RemoteManager::set), … Each returns a
//!   typed proxy ([`DictProxy`], [`QueueProxy`], [`SetProxy`], …) that can be sent to other
//!   processes (in `Process` arguments, queue items, pool tasks, or inside
//!   another managed container).
//! * [`Server`] serves objects under registered names on any address with
//!   an authkey; [`connect`] reaches it (or a Python manager) from another
//!   program (Python's `BaseManager(address, authkey)`, `register`,
//!   `connect`).
//!
//! # Wire compatibility with Python
//!
//! The server speaks CPython's manager protocol (pickled
//! `(ident, method, args, kwds)` requests over `multiprocessing.connection`
//! frames with the authkey handshake), and values are stored as plain Python
//! values ([`Value`]: `None`, `bool`, `int`, `float`, `str`, `bytes`, `list`,
//! `tuple`, `dict`). So an unmodified Python program can use the same queue
//! or dict:
//!
//! ```python
//! from multiprocessing.managers import BaseManager
//! BaseManager.register('get_queue'); BaseManager.register('get_dict')
//! m = BaseManager(address=('127.0.0.1', 50000), authkey=b'secret'); m.connect()
//! q = m.get_queue(); q.put([1, 'two']); d = m.get_dict(); d['a'] = 1
//! ```
//!
//! and [`connect`] reaches a Python `SyncManager` or `BaseManager` server.
//!
//! A method whose result is itself served as an object answers with a
//! proxy (Python's `#PROXY` reply): `__iter__` of a `dict` or `set` gives
//! an `Iterator` in the server, so a Python client can write `for k in d`
//! (with `SyncManager`'s registry, or after
//! `register('Iterator', proxytype=IteratorProxy, create_method=False)` on
//! a plain `BaseManager`). On our side [`DictProxy::iter`] and
//! [`SetProxy::iter`] return an [`IteratorProxy`], and
//! [`BaseProxy::call_proxy`] adopts any such reply, from our server or
//! Python's.
//! Rust values become plain values through serde ([`to_value`]): structs
//! become dicts of their fields, enums a variant name or `{name: data}`.
//! A Python value with no plain form (a set, a class instance) is refused
//! with an error on the Rust side, never a crash.
//!
//! # References and cleanup
//!
//! As in Python, each proxy holds one reference to its object; the server
//! drops an object when the last reference is released (`decref` when a
//! proxy is dropped). Unlike Python, references taken by a local client
//! (over a Unix socket) are recorded with the client's process id, and the
//! server drops all references of a process that has died (checked every
//! half second), so a proxy in a killed process does not keep its object
//! alive forever. References over TCP cannot be tied to a process and last
//! until released. A proxy stored inside a managed container pins its
//! object for the life of the server.
//!
//! # Faults
//!
//! The server serves each connection on its own thread. A client that
//! fails the handshake, sends garbage or a frame over 256 MiB, or dies in
//! the middle of a call loses only its own connection; a blocking call
//! (`get`, `acquire`, `wait`) of a client that died is abandoned (a queue
//! item is not handed to a dead client). When the manager dies, calls in
//! progress and later calls fail at once with [`Error::Eof`] or
//! [`Error::Io`] (the socket is gone) instead of hanging.
//!
//! Method calls are blocking; the shape of the proxies (one connection,
//! one request at a time) leaves room for `*_async` twins.
//!
//! # Batches
//!
//! Each call is one round trip. To make many calls at the cost of a few,
//! put their requests in flight together: [`BaseProxy::call_pipelined`],
//! [`DictProxy::get_many`], [`DictProxy::set_many`],
//! [`QueueProxy::put_many`], [`QueueProxy::get_many`] write up to 128
//! requests at once, and the server answers them with one write; or use a
//! method that takes many items at once ([`DictProxy::update`],
//! [`ListProxy::extend`]).
//!
//! # Local clients on a pipe
//!
//! A proxy of this crate that reaches this crate's server over a Unix
//! socket (every proxy of [`Manager::start`]) trades that connection, right
//! after the authkey handshake, for one end of a [`Pipe`]: a
//! socket pair plus a shared-memory slot through which small messages pass
//! while the receiver spins (see [`connection`](crate::connection)). The
//! manager protocol's frames then travel as the pipe's messages, so a call
//! costs a few microseconds instead of two socket wake-ups. A Python server
//! refuses the request; the proxy then connects again and stays on the
//! socket, as it does over TCP. The server's end of a pipe is served like
//! any connection: a client that dies closes it, and calls of a server that
//! died fail at once.
//!
//! # Queue puts without a round trip
//!
//! A `put` on a managed queue without a `maxsize`, from a Rust proxy on a
//! local pipe (above), does not wait for the server: it writes the
//! item into the queue's *put inbox*, a ring in shared memory that only
//! the server reads (one `poll` to check that the server is still there,
//! no other system call while the server is awake). Every call the server
//! serves on that queue — `get`, `qsize`, `join`, from any client, Rust or
//! Python, local or remote — first moves what waits in the inbox to the end
//! of the queue, and a server thread moves items as they come so that a
//! waiting `get` wakes. So once `put` returns, the item is seen by every
//! later call, in FIFO order, exactly as if `put` had been a call; a
//! producer and a consumer process pay one round trip per item between
//! them instead of two.
//!
//! A `put` still makes the call when the item holds a proxy or pickles to
//! over 64 KiB, when the 1 MiB inbox is full (the server then moves the
//! inbox's items first, so order holds), for a queue with a `maxsize` (a
//! `put` may have to wait), over TCP, and against a server that is not this
//! crate's (a Python one). A `put` after the manager died fails like any
//! call; one that wrote its item just before the manager died returned as
//! a call served just before would have, and the item is lost with the
//! manager. Many proxies of one queue in one process share one inbox (four
//! descriptors); a server gives at most 64 queues an inbox (each has a
//! thread and four descriptors there), and a process holds at most 64:
//! puts on the others make the call.

mod custom;
mod dict;
mod fast;
mod inbox;
mod local;
mod object;
pub mod objects;
mod proxies;
mod proxy;
mod server;
mod set;
mod set_proxy;
mod sockopt;
mod special;
mod sync_objects;
mod sync_proxies;
mod value;
mod wire;

pub use custom::Registry;
#[doc(hidden)]
pub use custom::outcome;
pub use object::{Args, Call, Object};
pub use proxies::{ArrayProxy, DictProxy, ListProxy, NamespaceProxy, Proxy, ValueProxy};
pub use proxy::BaseProxy;
#[doc(hidden)]
pub use serde as __serde;
pub use server::{Factory, Server, Stopper};
pub use set_proxy::{IteratorProxy, SetProxy};
pub use sync_proxies::{
    BarrierProxy, ConditionProxy, EventProxy, JoinableQueueProxy, LockProxy, LockProxyGuard,
    QueueProxy,
};
pub use value::{from_value, to_value};
pub use wire::{Fail, Token};

use crate::codec::Handle;
use crate::connection::{Address, Connection, Listener, Pipe, ToAddress};
use crate::error::{Error, Result};
use crate::pickle::Value;
use crate::process::{Process, StartMethod};
use serde::Serialize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A connection to a manager server: creates objects in it and hands out
/// proxies (Python's `BaseManager` after `connect()`). [`connect`] makes
/// one; a [`Manager`] is one too (it derefs to it). It can be sent to other
/// processes (it carries the authkey).
#[derive(Clone)]
pub struct RemoteManager {
    address: Address,
    authkey: Vec<u8>,
}

/// Connects to the manager at `address` (TCP `host:port`, a Unix socket
/// path, or `@name`) with `authkey` — a server of this crate or a Python
/// `BaseManager`/`SyncManager` — and checks that it answers (Python's
/// `BaseManager(address, authkey).connect()`).
///
/// # Errors
/// [`Error::Address`], [`Error::Io`] when nothing listens there,
/// [`Error::Authentication`] for a wrong authkey, [`Error::Timeout`] when
/// connecting takes over 30 s.
///
/// # Examples
/// See [`Server`].
pub fn connect(address: impl ToAddress, authkey: &[u8]) -> Result<RemoteManager> {
    let m = RemoteManager {
        address: address.to_address()?,
        authkey: authkey.to_vec(),
    };
    m.ping()?;
    Ok(m)
}

impl RemoteManager {
    /// The manager's address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Asks the server to answer (`dummy`).
    ///
    /// # Errors
    /// As for [`connect`].
    pub fn ping(&self) -> Result<()> {
        wire::special(&self.address, &self.authkey, "dummy", vec![]).map(drop)
    }

    /// Creates an object of a registered type id with plain arguments and
    /// returns an untyped proxy (Python's generated `manager.typeid(*args)`).
    ///
    /// # Errors
    /// [`Error::Remote`] when the type id is unknown or its constructor
    /// fails; as for [`connect`].
    pub fn create(&self, typeid: &str, args: Vec<Value>) -> Result<BaseProxy> {
        let mut all = vec![Value::from(typeid)];
        all.extend(args);
        let reply = wire::special(&self.address, &self.authkey, "create", all)?;
        let Value::Tuple(t) = reply else {
            return Err(Error::Decode("bad create reply".into()));
        };
        let Some(Value::Str(id)) = t.into_iter().next() else {
            return Err(Error::Decode("bad create reply".into()));
        };
        let token = Token {
            typeid: typeid.to_string(),
            address: self.address.clone(),
            id,
        };
        Ok(BaseProxy::owned(token, self.authkey.clone()))
    }

    /// Like [`create`](Self::create), with no arguments and a typed proxy:
    /// the registered names of a remote manager, e.g.
    /// `get::<QueueProxy<String>>("get_queue")`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn get<P: Proxy>(&self, typeid: &str) -> Result<P> {
        self.create(typeid, vec![]).map(P::from_base)
    }

    /// How many objects the server holds (`number_of_objects`).
    ///
    /// # Errors
    /// As for [`connect`].
    pub fn number_of_objects(&self) -> Result<usize> {
        value::from_value(wire::special(
            &self.address,
            &self.authkey,
            "number_of_objects",
            vec![],
        )?)
    }

    /// Creates an object of the proxy's type id ([`Proxy::TYPEID`]) with
    /// plain arguments, e.g. a custom type of
    /// [`managed_type!`](crate::managed_type).
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn new_proxy<P: Proxy>(&self, args: Vec<Value>) -> Result<P> {
        self.create(P::TYPEID, args).map(P::from_base)
    }

    fn make<P: Proxy>(&self, typeid: &str, args: Vec<Value>) -> Result<P> {
        self.create(typeid, args).map(P::from_base)
    }

    /// A new empty `dict` in the manager.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>> {
        self.make("dict", vec![])
    }

    /// A new empty `list`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn list<T>(&self) -> Result<ListProxy<T>> {
        self.make("list", vec![])
    }

    /// A new unbounded `Queue`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn queue<T>(&self) -> Result<QueueProxy<T>> {
        self.make("Queue", vec![])
    }

    /// A new empty `set` (Python 3.14's `SyncManager.set()`).
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn set<T>(&self) -> Result<SetProxy<T>> {
        self.make("set", vec![])
    }

    /// A new `Queue(maxsize)`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn queue_with_maxsize<T>(&self, maxsize: usize) -> Result<QueueProxy<T>> {
        self.make("Queue", vec![Value::Int(maxsize as i64)])
    }

    /// A new `JoinableQueue`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn joinable_queue<T>(&self) -> Result<JoinableQueueProxy<T>> {
        self.make("JoinableQueue", vec![])
    }

    /// A new `Value` holding `initial` (the typecode is `"object"`).
    ///
    /// # Errors
    /// As for [`create`](Self::create), plus [`Error::Encode`].
    pub fn value<T: Serialize>(&self, initial: T) -> Result<ValueProxy<T>> {
        self.make("Value", vec![Value::from("object"), to_value(&initial)?])
    }

    /// A new `Array(typecode, items)`.
    ///
    /// # Errors
    /// As for [`value`](Self::value).
    pub fn array<T: Serialize>(&self, typecode: &str, items: Vec<T>) -> Result<ArrayProxy<T>> {
        self.make("Array", vec![Value::from(typecode), to_value(&items)?])
    }

    /// A new empty `Namespace`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn namespace(&self) -> Result<NamespaceProxy> {
        self.make("Namespace", vec![])
    }

    /// A new `Lock`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn lock(&self) -> Result<LockProxy> {
        self.make("Lock", vec![])
    }

    /// A new `RLock`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn rlock(&self) -> Result<LockProxy> {
        self.make("RLock", vec![])
    }

    /// A new `Semaphore(value)`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn semaphore(&self, value: usize) -> Result<LockProxy> {
        self.make("Semaphore", vec![Value::Int(value as i64)])
    }

    /// A new `BoundedSemaphore(value)`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn bounded_semaphore(&self, value: usize) -> Result<LockProxy> {
        self.make("BoundedSemaphore", vec![Value::Int(value as i64)])
    }

    /// A new `Condition` (with its own `RLock`).
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn condition(&self) -> Result<ConditionProxy> {
        self.make("Condition", vec![])
    }

    /// A new `Event`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn event(&self) -> Result<EventProxy> {
        self.make("Event", vec![])
    }

    /// A new `Barrier(parties)`.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
        self.make("Barrier", vec![Value::Int(parties as i64)])
    }

    /// Asks the server to shut down (Python's `shutdown` special method).
    ///
    /// # Errors
    /// As for [`connect`].
    pub fn shutdown_server(&self) -> Result<()> {
        match wire::special(&self.address, &self.authkey, "shutdown", vec![]) {
            Ok(_) | Err(Error::Eof) | Err(Error::Truncated) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Serialize for RemoteManager {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (
            self.address.to_string(),
            serde_bytes::Bytes::new(&self.authkey),
        )
            .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for RemoteManager {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (address, authkey): (String, serde_bytes::ByteBuf) =
            serde::Deserialize::deserialize(d)?;
        Ok(RemoteManager {
            address: address.parse().map_err(serde::de::Error::custom)?,
            authkey: authkey.into_vec(),
        })
    }
}

impl std::fmt::Debug for RemoteManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteManager")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// A manager server process of this program (Python's `Manager()`, a
/// started `SyncManager`), serving every `SyncManager` type.
///
/// It is a daemonic child started with the library's start methods (it
/// never runs `main`), so it dies with its owner even when the owner is
/// killed with SIGKILL. [`shutdown`](Self::shutdown) stops it; dropping
/// the `Manager` does the same. It listens on an abstract Unix socket with
/// a random authkey; its proxies carry both, so they work in any process
/// they are sent to.
///
/// # Examples
/// ```
/// use multiproc::{Manager, Process};
/// use multiproc::manager::{DictProxy, ListProxy};
///
/// fn fill(d: DictProxy<String, i32>, l: ListProxy<i32>) {
///     d.set("answer".into(), 42).unwrap();
///     l.extend([1, 2, 3]).unwrap();
/// }
///
/// let manager = Manager::start()?;
/// let d = manager.dict()?;
/// let l = manager.list()?;
/// let mut p = Process::new(fill, (d.clone(), l.clone()));
/// p.start()?;
/// p.join()?;
/// assert_eq!(d.get(&"answer".to_string())?, Some(42));
/// assert_eq!(l.to_vec()?, [1, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Manager {
    remote: RemoteManager,
    process: Option<Process<()>>,
    /// Tells the server to stop (a message, or the end of the stream).
    stop: Option<Connection>,
}

fn serve_manager<R: Registry>(
    address: String,
    authkey: Vec<u8>,
    socket: Handle<OwnedFd>,
    stop: Connection,
) {
    let Ok(address) = address.parse::<Address>() else {
        return;
    };
    // Each local client holds a pipe (two descriptors) per proxy, and each
    // queue inbox four: use what the hard limit allows.
    let _ = crate::sys::raise_open_files_limit();
    let mut server = Server::on(Listener::from_abstract(socket.0, address), &authkey);
    server.register_sync_types();
    R::register(&mut server);
    // The owner stops the server through a pipe rather than a `shutdown`
    // request: no connection and handshake on the way out, and the accept
    // loop watches it itself (no thread to wake).
    server.stop_on(stop);
    let _ = server.serve_forever();
}

static MANAGERS: AtomicU64 = AtomicU64::new(0);

impl Manager {
    /// Starts a manager process with the default start method.
    ///
    /// The owner binds the server's socket and hands it to the new process,
    /// so `start` returns as soon as that process is started, without
    /// waiting for it to serve: a call made meanwhile waits in the socket's
    /// listen queue until the server takes it. Should the server die, its
    /// socket dies with it, and calls fail at once (nothing else holds it).
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be bound, and the errors of
    /// [`Process::start`].
    pub fn start() -> Result<Manager> {
        Self::start_inner::<()>(None)
    }

    /// Starts a manager process that also serves the types `R` registers
    /// (Python's `BaseManager.register` before `start()`); see
    /// [`managed_type!`](crate::managed_type).
    ///
    /// # Errors
    /// As for [`start`](Self::start).
    pub fn start_with_types<R: Registry>() -> Result<Manager> {
        Self::start_inner::<R>(None)
    }

    /// Starts a manager process with the given start method.
    ///
    /// # Errors
    /// As for [`start`](Self::start).
    pub fn start_with(method: StartMethod) -> Result<Manager> {
        Self::start_inner::<()>(Some(method))
    }

    fn start_inner<R: Registry>(method: Option<StartMethod>) -> Result<Manager> {
        let mut key = [0u8; 32];
        crate::sys::random_bytes(&mut key)?;
        let mut tag = [0u8; 8];
        crate::sys::random_bytes(&mut tag)?;
        let address = format!(
            "@multiproc-manager-{}-{}-{}",
            std::process::id(),
            MANAGERS.fetch_add(1, Ordering::Relaxed),
            tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        // The owner binds the socket and hands it over: `start` need not
        // wait for the server to be ready (a call made before the server
        // accepts waits in the listen queue), and a bind error is the
        // owner's, at once.
        let listener = Listener::bind(address.as_str(), None)?;
        let socket = listener.as_fd().try_clone_to_owned()?;
        let (stop_there, stop) = Pipe::one_way()?;
        let mut p = Process::new(
            serve_manager::<R>,
            (address.clone(), key.to_vec(), Handle(socket), stop_there),
        )
        .name("SyncManager")
        .daemon(true);
        if let Some(m) = method {
            p = p.start_method(m);
        }
        p.start()?;
        // Only the server may hold the socket: if it dies, connecting must
        // fail rather than wait in a queue nobody reads.
        drop(listener);
        Ok(Manager {
            remote: RemoteManager {
                address: address.parse()?,
                authkey: key.to_vec(),
            },
            process: Some(p),
            stop: Some(stop),
        })
    }

    /// The server process's id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Stops the server and waits for its process (killing it if it does
    /// not exit within 5 s). Proxies fail afterwards. Calling it again does
    /// nothing.
    ///
    /// # Errors
    /// [`Error::Io`] when the process cannot be waited for.
    pub fn shutdown(&mut self) -> Result<()> {
        let Some(mut p) = self.process.take() else {
            return Ok(());
        };
        let stopped = self
            .stop
            .take()
            .is_some_and(|stop| stop.send_bytes(b"stop").is_ok());
        if !stopped {
            let _ = wire::special_timeout(
                &self.remote.address,
                &self.remote.authkey,
                "shutdown",
                vec![],
                Duration::from_secs(5),
            );
        }
        if !p.join_timeout(Duration::from_secs(5))? {
            let _ = p.kill();
            p.join()?;
        }
        Ok(())
    }
}

impl std::ops::Deref for Manager {
    type Target = RemoteManager;
    fn deref(&self) -> &RemoteManager {
        &self.remote
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.remote.address)
            .field("pid", &self.pid())
            .finish()
    }
}
