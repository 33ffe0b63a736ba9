//! The manager server: accepts connections, runs the handshake, and serves
//! CPython's special methods and method calls, one thread per connection.

use super::fast;
use super::inbox;
use super::local;
use super::object::{Args, Call, Object};
use super::sockopt;
use super::special::{new_object, panic_fail, pin_nested, special};
use super::wire::{self, Fail};
use crate::connection::{Address, Client, Connection, Listener, ToAddress, auth};
use crate::error::{Error, Result};
use crate::pickle::Value;
use crate::sys;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Makes a new object for `create(typeid, *args, **kwds)`.
pub type Factory = dyn Fn(Args) -> std::result::Result<Arc<dyn Object>, Fail> + Send + Sync;

/// How long a peer may take over the authkey handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often references of dead local clients are looked for.
pub(super) const REAP_EVERY: Duration = Duration::from_millis(500);

pub(super) struct Entry {
    pub(super) obj: Arc<dyn Object>,
    pub(super) typeid: String,
    pub(super) exposed: Vec<String>,
    /// References per client process id (0: unknown, e.g. over TCP, or
    /// held by the server itself).
    pub(super) refs: HashMap<u32, usize>,
}

impl Entry {
    pub(super) fn total(&self) -> usize {
        self.refs.values().sum()
    }
}

pub(crate) struct State {
    pub(super) objects: Mutex<HashMap<String, Entry>>,
    pub(super) types: HashMap<String, Arc<Factory>>,
    pub(super) address: Address,
    authkey: Option<Vec<u8>>,
    pub(super) stop: AtomicBool,
    next_conn: AtomicU64,
    /// Counts removals from `objects` (under its lock), so that a
    /// connection's cached lookup knows when it may be stale.
    pub(super) removals: AtomicU64,
    /// Local client processes holding references, watched through pidfds.
    pub(super) watched: Mutex<HashMap<u32, OwnedFd>>,
    /// The reaper thread is started with the first watched client (a
    /// server no local client uses never starts it).
    pub(super) reaper: std::sync::Once,
    /// This state, for the reaper thread to hold.
    pub(super) me: std::sync::Weak<State>,
    /// The [`Stopper`]'s flag, which also ends the reaper.
    pub(super) outer_stop: Arc<AtomicBool>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A manager server that is bound but not yet serving (Python's
/// `BaseManager(...).get_server()`).
///
/// Register the type ids it serves, then call
/// [`serve_forever`](Self::serve_forever). [`Manager::start`](super::Manager::start)
/// runs one of these with all of Python's `SyncManager` types in a child
/// process; a remote manager runs one in any program.
///
/// # Examples
/// ```
/// use multiproc::manager::{self, Server};
///
/// let mut server = Server::bind("127.0.0.1:0", b"secret")?;
/// let queue = manager::objects::queue(0);
/// server.register_shared("get_queue", queue);
/// let address = server.address().clone();
/// let stop = server.stopper();
/// let t = std::thread::spawn(move || server.serve_forever());
///
/// let remote = manager::connect(&address, b"secret")?;
/// let q = remote.get::<manager::QueueProxy<String>>("get_queue")?;
/// q.put("hello".to_string())?;
/// assert_eq!(q.get()?, "hello");
/// stop.stop();
/// t.join().unwrap()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Server {
    listener: Listener,
    types: HashMap<String, Arc<Factory>>,
    authkey: Vec<u8>,
    stop: Arc<AtomicBool>,
    /// Readable (a message or its end) when the owner wants the server
    /// to stop: watched by the accept loop itself.
    stop_conn: Option<Connection>,
}

/// Stops a [`Server`] from another thread (or a signal-handling thread).
#[derive(Clone, Debug)]
pub struct Stopper {
    address: Address,
    stop: Arc<AtomicBool>,
}

impl Stopper {
    /// Makes [`Server::serve_forever`] return. Connections being served
    /// are left to finish by themselves.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = Client::connect_timeout(&self.address, None, Duration::from_secs(1));
    }
}

impl Server {
    /// Binds a server to `address` (TCP `host:port`, a Unix socket path, or
    /// `@name` for an abstract socket). Every connection must pass the
    /// authkey handshake with `authkey`. The socket is bound with
    /// `SO_REUSEADDR` (as std does), so a server can be started again on the
    /// same address right after the previous one shut down.
    ///
    /// # Errors
    /// [`Error::Address`] or [`Error::Io`] when the address cannot be bound.
    pub fn bind(address: impl ToAddress, authkey: &[u8]) -> Result<Server> {
        Ok(Self::on(Listener::bind(address, None)?, authkey))
    }

    /// A server on a listener bound elsewhere (with no handshake of its
    /// own: the server runs it).
    pub(crate) fn on(listener: Listener, authkey: &[u8]) -> Server {
        // What `__iter__` of a dict or set answers with (`#PROXY`).
        let mut types: HashMap<String, Arc<Factory>> = HashMap::new();
        types.insert(
            "Iterator".into(),
            Arc::new(|a: Args| {
                Ok(Arc::new(super::set::IterObj::new(a.args.first())?) as Arc<dyn Object>)
            }),
        );
        Server {
            listener,
            types,
            authkey: authkey.to_vec(),
            stop: Arc::new(AtomicBool::new(false)),
            stop_conn: None,
        }
    }

    /// Makes [`serve_forever`](Self::serve_forever) return once `conn` is
    /// readable (a message, or its end when the owner is gone), with no
    /// thread and no connection on the way out.
    pub(crate) fn stop_on(&mut self, conn: Connection) -> &mut Self {
        self.stop_conn = Some(conn);
        self
    }

    /// The bound address (with the real port for port `0`).
    pub fn address(&self) -> &Address {
        self.listener.address()
    }

    /// Registers `typeid`: each `create(typeid, ...)` calls `factory`
    /// (Python's `register(typeid, callable)`).
    pub fn register<F>(&mut self, typeid: &str, factory: F) -> &mut Self
    where
        F: Fn(Args) -> std::result::Result<Arc<dyn Object>, Fail> + Send + Sync + 'static,
    {
        self.types.insert(typeid.to_string(), Arc::new(factory));
        self
    }

    /// Registers `typeid` as one shared object: every `create(typeid)`
    /// returns the same object (Python's `register('get_queue', callable=lambda: q)`).
    pub fn register_shared(&mut self, typeid: &str, object: Arc<dyn Object>) -> &mut Self {
        self.register(typeid, move |_| Ok(object.clone()))
    }

    /// Registers every type id of Python's `SyncManager` (`dict`, `list`,
    /// `Queue`, `JoinableQueue`, `Value`, `Array`, `Namespace`, `Lock`,
    /// `RLock`, `Semaphore`, `BoundedSemaphore`, `Condition`, `Event`,
    /// `Barrier`, and Python 3.14's `set`).
    pub fn register_sync_types(&mut self) -> &mut Self {
        for (typeid, f) in super::objects::sync_types() {
            self.types.insert(typeid.to_string(), f);
        }
        self
    }

    /// A handle that stops [`serve_forever`](Self::serve_forever).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            address: self.address().clone(),
            stop: self.stop.clone(),
        }
    }

    /// Serves until a client calls `shutdown` or a [`Stopper`] stops it.
    /// Each connection is served by its own thread; a client that fails
    /// the handshake, sends garbage or an oversized frame, or dies mid-call
    /// loses only its own connection.
    ///
    /// # Errors
    /// [`Error::Io`] when accepting fails for a reason other than a bad
    /// peer (e.g. out of descriptors for a long time).
    pub fn serve_forever(self) -> Result<()> {
        let stop = self.stop;
        let state = Arc::new_cyclic(|me| State {
            objects: Mutex::new(HashMap::new()),
            types: self.types,
            address: self.listener.address().clone(),
            authkey: Some(self.authkey),
            stop: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            removals: AtomicU64::new(0),
            watched: Mutex::new(HashMap::new()),
            reaper: std::sync::Once::new(),
            me: me.clone(),
            outer_stop: stop.clone(),
        });
        let mut failures = 0u32;
        loop {
            if stop.load(Ordering::SeqCst) || state.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Some(owner) = &self.stop_conn {
                let fds = [self.listener.as_fd(), owner.as_fd()];
                match sys::poll_readable(&fds, None) {
                    Ok(ready) if ready[1] => return Ok(()),
                    Ok(ready) if !ready[0] => continue,
                    _ => {}
                }
            }
            let conn = match self.listener.accept() {
                Ok(c) => c,
                Err(Error::Io(e)) => {
                    failures += 1;
                    if failures > 1000 {
                        return Err(Error::Io(e));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(_) => continue,
            };
            failures = 0;
            if stop.load(Ordering::SeqCst) || state.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let st = state.clone();
            let stop2 = stop.clone();
            let spawned = std::thread::Builder::new()
                .name("manager-conn".into())
                .spawn(move || {
                    if handle(&st, conn) {
                        st.stop.store(true, Ordering::SeqCst);
                        stop2.store(true, Ordering::SeqCst);
                        let _ = Client::connect_timeout(&st.address, None, Duration::from_secs(1));
                    }
                });
            if spawned.is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

pub(super) fn traceback(msg: impl Into<String>) -> Fail {
    Fail::Traceback(msg.into())
}

/// A request `(ident, method, args, kwds)`; `ident` and `method` are in
/// the connection's [`Names`].
struct Request {
    has_ident: bool,
    /// Read by the one-pass reader: plain values only, so no proxy
    /// tokens inside to pin.
    plain: bool,
    /// The arguments held Python sets (now lists of their items): only an
    /// object that [takes sets](Object::takes_sets) accepts them.
    sets: bool,
    args: Args,
}

/// The ident and method of the request being served, kept between
/// requests so that reading them allocates nothing.
#[derive(Default)]
struct Names {
    ident: String,
    method: String,
    scratch: fast::Scratch,
}

fn parse_request(frame: &[u8], names: &mut Names) -> std::result::Result<Request, Fail> {
    // Plain values in one pass; anything else through the general reader.
    if let Some(head) = fast::decode_request(
        frame,
        &mut names.ident,
        &mut names.method,
        &mut names.scratch,
    ) {
        return Ok(Request {
            has_ident: head.has_ident,
            plain: true,
            sets: false,
            args: Args {
                args: head.args,
                kwds: head.kwds,
            },
        });
    }
    let v = fast::decode(frame).map_err(|e| {
        traceback(format!(
            "the request holds a value a multiproc manager cannot store (only None, bool, \
             int within 64 bits, float, str, bytes, list, tuple and dict are): {e}"
        ))
    })?;
    let bad = || traceback("bad request: expected (ident, methodname, args, kwds)");
    let Value::Tuple(t) = v else {
        return Err(bad());
    };
    let mut it = t.into_iter();
    let (Some(ident), Some(Value::Str(method)), Some(args), Some(kwds), None) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    let has_ident = match ident {
        Value::None => false,
        Value::Str(s) => {
            names.ident = s;
            true
        }
        _ => return Err(bad()),
    };
    names.method = method;
    let (Value::Tuple(args), Value::Dict(kwds)) = (args, kwds) else {
        return Err(bad());
    };
    let sets = args.iter().any(holds_set) || kwds.iter().any(|(_, v)| holds_set(v));
    Ok(Request {
        has_ident,
        plain: false,
        sets,
        args: Args {
            args: args.into_iter().map(wire::normalize).collect(),
            kwds: kwds
                .into_iter()
                .map(|(k, v)| (k, wire::normalize(v)))
                .collect(),
        },
    })
}

/// Serves one connection; true when it asked the server to shut down.
fn handle(state: &Arc<State>, conn: Connection) -> bool {
    conn.set_max_message_size(wire::MAX_FRAME);
    let tcp = sockopt::quickack(conn.as_fd());
    if let Some(key) = &state.authkey {
        let deadline = sys::deadline_after(HANDSHAKE_TIMEOUT);
        if auth::deliver_challenge_impl(&conn, key, deadline).is_err() {
            let _ = conn.send_bytes(&wire::reply(Err(traceback(
                "AuthenticationError: digest received was wrong",
            ))));
            return false;
        }
        if tcp {
            sockopt::quickack(conn.as_fd());
        }
        if auth::answer_challenge_impl(&conn, key, deadline).is_err() {
            return false;
        }
    }
    let pid = sockopt::peer_pid(conn.as_fd()).unwrap_or(0);
    let conn_id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let on = Serving {
        conn_id,
        pid,
        tcp,
        pipe: false,
    };
    match serve_requests(state, &conn, &on) {
        Served::Ended(shutdown) => shutdown,
        Served::Pipe(pipe) => {
            drop(conn);
            pipe.set_max_message_size(local::MAX_MESSAGE);
            let on = Serving { pipe: true, ..on };
            matches!(serve_requests(state, &pipe, &on), Served::Ended(true))
        }
    }
}

/// Who a connection serves.
struct Serving {
    conn_id: u64,
    /// The client's process (0: unknown).
    pid: u32,
    tcp: bool,
    /// A local client's pipe ([`local`]): frames travel as its messages.
    pipe: bool,
}

/// How [`serve_requests`] ended.
enum Served {
    /// The connection closed; true when it asked the server to shut down.
    Ended(bool),
    /// The client handed over a pipe to be served instead.
    Pipe(Connection),
}

/// Serves the requests of one connection.
fn serve_requests(state: &Arc<State>, conn: &Connection, on: &Serving) -> Served {
    let (conn_id, pid, tcp) = (on.conn_id, on.pid, on.tcp);
    let Ok(raw) = conn.as_fd().try_clone_to_owned() else {
        return Served::Ended(false);
    };
    let replies = std::cell::RefCell::new(Replies {
        raw: std::fs::File::from(raw),
        out: Vec::new(),
        pipe: on.pipe.then_some(conn),
    });
    let mut served = 0u64;
    let mut cache = Cached::default();
    let mut names = Names::default();
    let mut frames = local::Frames::default();
    loop {
        // Quick ACKs matter for the handshake and the first requests, which
        // a CPython client writes right behind its #WELCOME# (MANAGER-WIRE
        // §9); later replies carry the ACK themselves, so they are not
        // forced (an extra packet per call).
        if tcp && served < 2 {
            sockopt::quickack(conn.as_fd());
        }
        served += 1;
        let parsed = if on.pipe {
            frames.next(conn, |frame| parse_request(frame, &mut names))
        } else {
            conn.recv_with(|frame, _| Ok(parse_request(frame, &mut names)))
        };
        let Ok(parsed) = parsed else {
            return Served::Ended(false);
        };
        if parsed.as_ref().is_ok_and(|r| !r.has_ident)
            && names.method == local::METHOD
            && !tcp
            && !on.pipe
        {
            if replies.borrow_mut().flush().is_err() || conn.message_buffered() {
                return Served::Ended(false);
            }
            return match local::accept(conn, sys::deadline_after(HANDSHAKE_TIMEOUT)) {
                Ok(Some(pipe)) => Served::Pipe(pipe),
                Ok(None) => continue,
                Err(_) => Served::Ended(false),
            };
        }
        // Elsewhere than on a pipe (no handles can travel) the request goes
        // on as a call of a method that is not exposed: an error reply.
        if on.pipe && parsed.as_ref().is_ok_and(|r| r.has_ident) && names.method == inbox::METHOD {
            if replies.borrow_mut().flush().is_err()
                || give_inbox(state, &mut cache, &names.ident, conn).is_err()
            {
                return Served::Ended(false);
            }
            continue;
        }
        let mut proxy = None;
        let result = match parsed {
            // The frame was whole, so the stream is still in step: refuse
            // this request and go on serving the connection.
            Err(f) => Err(f),
            Ok(req) => match req.has_ident.then_some(names.ident.as_str()) {
                None => match names.method.as_str() {
                    "shutdown" => {
                        let mut r = replies.borrow_mut();
                        fast::reply(&mut r.out, Ok(Value::None));
                        let _ = r.flush();
                        return Served::Ended(true);
                    }
                    "accept_connection" => Ok(Value::None),
                    m => special(state, m, req.args, pid),
                },
                Some(ident) => {
                    let gone = || sockopt::peer_closed(conn.as_fd());
                    // Replies held back for pipelined requests go out before
                    // a call blocks.
                    let flush = || {
                        let _ = replies.borrow_mut().flush();
                    };
                    let call = Call {
                        conn_id,
                        gone: &gone,
                        flush: &flush,
                    };
                    let how = Decoded {
                        plain: req.plain,
                        sets: req.sets,
                    };
                    match dispatch(
                        state,
                        &mut cache,
                        ident,
                        &names.method,
                        req.args,
                        how,
                        &call,
                    ) {
                        Ok(Answer::Value(v)) => Ok(v),
                        Ok(Answer::Proxy { typeid, value }) => {
                            match new_object(state, typeid, vec![value], pid) {
                                Ok(p) => {
                                    proxy = Some(p);
                                    Ok(Value::None)
                                }
                                Err(f) => Err(f),
                            }
                        }
                        Err(f) => Err(f),
                    }
                }
            },
        };
        let mut r = replies.borrow_mut();
        match proxy {
            Some(p) => fast::proxy_reply(&mut r.out, &p),
            None => fast::reply(&mut r.out, result),
        }
        // While more requests are already buffered (a pipelining client),
        // replies are gathered and written together.
        let more = if on.pipe {
            frames.more()
        } else {
            conn.message_buffered()
        };
        if (!more || r.out.len() >= REPLY_BATCH) && r.flush().is_err() {
            return Served::Ended(false);
        }
    }
}

/// Answers a request for the put inbox of queue `ident` (see [`inbox`]) on
/// a local client's pipe: with the inbox, or `None` (not a queue of this
/// server without a `maxsize`).
///
/// # Errors
/// When the connection fails.
fn give_inbox(state: &State, cache: &mut Cached, ident: &str, pipe: &Connection) -> Result<()> {
    let obj = cache.lookup(state, ident).ok();
    let queue = obj
        .as_ref()
        .and_then(|o| o.as_any())
        .and_then(|a| a.downcast_ref::<super::sync_objects::QueueObj>());
    pipe.send(&queue.and_then(|q| q.inbox()).map(|i| i.ring()))
}

/// Replies not yet written, for pipelined requests.
struct Replies<'c> {
    raw: std::fs::File,
    /// Frames, each with its length in front.
    out: Vec<u8>,
    /// A local client's pipe: the gathered frames go as one message.
    pipe: Option<&'c Connection>,
}

/// Gathered replies are written once they reach this many bytes.
const REPLY_BATCH: usize = 64 << 10;

impl Replies<'_> {
    fn flush(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        if self.out.is_empty() {
            return Ok(());
        }
        let r = match self.pipe {
            Some(pipe) => pipe.send_bytes(&self.out).map_err(|e| match e {
                Error::Io(e) => e,
                e => std::io::Error::other(e.to_string()),
            }),
            None => (&self.raw).write_all(&self.out),
        };
        self.out.clear();
        if self.out.capacity() > 4 * REPLY_BATCH {
            self.out = Vec::new();
        }
        r
    }
}

/// How a request's arguments were read.
#[derive(Clone, Copy)]
struct Decoded {
    plain: bool,
    sets: bool,
}

/// Whether `v` holds a Python set or frozenset (as read from the wire,
/// before [`wire::normalize`] turns it into a list).
fn holds_set(v: &Value) -> bool {
    match v {
        Value::Object(o) => {
            matches!(
                o.callable.as_global(),
                Some(("builtins", "set" | "frozenset"))
            ) || o.args.iter().any(holds_set)
        }
        Value::List(items) | Value::Tuple(items) => items.iter().any(holds_set),
        Value::Dict(items) => items.iter().any(|(k, v)| holds_set(k) || holds_set(v)),
        _ => false,
    }
}

/// What a method call answers: a value, or a value to be served as a new
/// object of `typeid` (a `#PROXY` reply).
enum Answer {
    Value(Value),
    Proxy { typeid: &'static str, value: Value },
}

/// The object a connection called last, while no object has been removed
/// since (an id may be reused by a new object once the old one is gone).
#[derive(Default)]
struct Cached {
    ident: String,
    removals: u64,
    obj: Option<Arc<dyn Object>>,
}

impl Cached {
    fn lookup(&mut self, state: &State, ident: &str) -> std::result::Result<Arc<dyn Object>, Fail> {
        let removals = state.removals.load(Ordering::SeqCst);
        if let Some(obj) = &self.obj {
            if self.ident == ident && self.removals == removals {
                return Ok(obj.clone());
            }
        }
        let objects = lock(&state.objects);
        let obj = objects
            .get(ident)
            .ok_or_else(|| traceback(format!("KeyError: {ident:?} is not a live object")))?
            .obj
            .clone();
        // Read again under the lock: removals happen under it.
        self.removals = state.removals.load(Ordering::SeqCst);
        drop(objects);
        self.ident.clear();
        self.ident.push_str(ident);
        self.obj = Some(obj.clone());
        Ok(obj)
    }
}

fn dispatch(
    state: &State,
    cache: &mut Cached,
    ident: &str,
    method: &str,
    args: Args,
    how: Decoded,
    call: &Call<'_>,
) -> std::result::Result<Answer, Fail> {
    let obj = cache.lookup(state, ident)?;
    if how.sets && !obj.takes_sets() {
        return Err(traceback(
            "the request holds a set, which only a set can take (a multiproc manager stores \
             only None, bool, int within 64 bits, float, str, bytes, list, tuple and dict)",
        ));
    }
    let exposed = obj.exposed().contains(&method);
    if !exposed {
        return match method {
            "#GETVALUE" => Ok(Answer::Value(obj.value())),
            "__repr__" | "__str__" => Ok(Answer::Value(Value::Str(obj.repr()))),
            _ => Err(traceback(format!(
                "AttributeError: method {method:?} of {ident:?} is not exposed"
            ))),
        };
    }
    if !how.plain {
        args.args.iter().for_each(|a| pin_nested(state, a));
        args.kwds.iter().for_each(|(_, a)| pin_nested(state, a));
    }
    let value = catch_unwind(AssertUnwindSafe(|| obj.call(method, args, call)))
        .unwrap_or_else(|p| Err(panic_fail(&p)))?;
    Ok(match obj.method_to_typeid(method) {
        Some(typeid) => Answer::Proxy { typeid, value },
        None => Answer::Value(value),
    })
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", self.address())
            .field("types", &self.types.keys().collect::<Vec<_>>())
            .finish()
    }
}
