//! Processes (Python's `multiprocessing.Process`), start methods and
//! contexts.

pub(crate) mod bootstrap;
pub(crate) mod child;
pub(crate) mod current;
pub(crate) mod forkserver;
pub(crate) mod limits;
mod target;

pub use current::{ParentProcess, ProcessInfo, current_process, parent_process};
pub use target::{Run, Target};

use crate::connection::Connection;
use crate::error::{Error, RemotePanic, Result, signal_name};
use crate::exclusive::Exclusive;
use crate::sys::{self, SocketKind, WaitStatus};
use bootstrap::{Entry, ForkBody, Header, WireOutcome};
use child::{ChildShared, Reaper};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a child process is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// A single-threaded server process, started once from this binary,
    /// forks each child. Safe in a multi-threaded parent and fast. The
    /// default.
    ForkServer,
    /// Re-executes this binary for each child (`posix_spawn` of
    /// `/proc/self/exe`). The cleanest child, the slowest start.
    Spawn,
    /// Forks the calling process. Fastest, and the only method that can run
    /// a capturing closure; refused when the process has several threads.
    /// The child inherits the parent's memory and *all* of its descriptors,
    /// as in Python: a pipe end the parent holds stays open in the child, so
    /// a peer waiting for end of stream also waits for forked children.
    Fork,
}

impl StartMethod {
    /// The method's name as Python spells it.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::ForkServer => "forkserver",
            StartMethod::Spawn => "spawn",
            StartMethod::Fork => "fork",
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

static DEFAULT_METHOD: Mutex<Option<StartMethod>> = Mutex::new(None);

/// The start method used when a process does not choose one.
///
/// # Examples
/// ```
/// assert_eq!(multiproc::get_start_method(), multiproc::StartMethod::ForkServer);
/// ```
pub fn get_start_method() -> StartMethod {
    DEFAULT_METHOD
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(StartMethod::ForkServer)
}

/// Sets the default start method, once (Python's `set_start_method`).
///
/// # Errors
/// [`Error::State`] if it was already set; use [`Context`]s to mix methods.
pub fn set_start_method(method: StartMethod) -> Result<()> {
    let mut m = DEFAULT_METHOD.lock().unwrap_or_else(|e| e.into_inner());
    if m.is_some() {
        return Err(Error::State("context has already been set"));
    }
    *m = Some(method);
    Ok(())
}

/// The start methods available here, the default first.
///
/// # Examples
/// ```
/// use multiproc::StartMethod::*;
/// assert_eq!(multiproc::get_all_start_methods(), [ForkServer, Spawn, Fork]);
/// ```
pub fn get_all_start_methods() -> Vec<StartMethod> {
    vec![
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ]
}

/// A start method to create processes with, so that one program can use
/// several (Python's `get_context`).
///
/// Its factories mirror Python's context: [`process`](Self::process) and
/// [`pool`](Self::pool) start their processes with the context's method;
/// [`queue`](Self::queue), [`lock`](Self::lock), [`value`](Self::value) and
/// the other shared objects do not depend on a start method (any child can
/// use them, however it was started) and are there so that code written
/// against a context reads as in Python.
///
/// # Examples
/// ```
/// use multiproc::{get_context, StartMethod};
///
/// fn double(x: u64) -> u64 { x * 2 }
///
/// let ctx = get_context(StartMethod::Spawn);
/// let mut p = ctx.process(double, (21,));
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.take_result()?, 42);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// The context of `method`.
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

impl Context {
    /// This context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process that runs `target(args...)` with this context's method.
    pub fn process<F, A, R>(&self, target: F, args: A) -> Process<R>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Process::new(target, args).start_method(self.method)
    }

    /// A process that runs a [`Run`] value with this context's method.
    ///
    /// # Examples
    /// See [`Process::from_run`].
    pub fn process_from_run<T: Run>(&self, value: T) -> Process<T::Output> {
        Process::from_run(value).start_method(self.method)
    }

    /// A pool of `processes` workers started with this context's method
    /// (Python's `ctx.Pool(n)`).
    ///
    /// # Errors
    /// As [`PoolBuilder::build`](crate::PoolBuilder::build).
    ///
    /// # Examples
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::get_context(multiproc::StartMethod::Spawn).pool(2)?;
    /// assert_eq!(pool.map(square, 1..=3)?, [1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pool(&self, processes: usize) -> Result<crate::Pool> {
        self.pool_builder().processes(processes).build()
    }

    /// A pool builder preset to this context's method, for the other
    /// options (initializer, `maxtasksperchild`, …).
    pub fn pool_builder(&self) -> crate::PoolBuilder {
        crate::Pool::builder().start_method(self.method)
    }

    /// A [`Pipe`](crate::Pipe) (Python's `ctx.Pipe()`); the start method
    /// does not matter to it.
    ///
    /// # Errors
    /// As [`Pipe::new`](crate::Pipe::new).
    pub fn pipe(&self) -> Result<(Connection, Connection)> {
        crate::Pipe::new()
    }

    /// A [`Queue`](crate::Queue) (Python's `ctx.Queue()`); the start
    /// method does not matter to it.
    ///
    /// # Errors
    /// As [`Queue::new`](crate::Queue::new).
    ///
    /// # Examples
    /// ```
    /// use multiproc::{get_context, StartMethod};
    /// let ctx = get_context(StartMethod::Spawn);
    /// let q = ctx.queue::<u32>()?;
    /// q.put(1)?;
    /// assert_eq!(q.get()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> Result<crate::Queue<T>> {
        crate::Queue::new()
    }

    /// A [`Queue`](crate::Queue) of at most `maxsize` items (Python's
    /// `ctx.Queue(maxsize)`).
    ///
    /// # Errors
    /// As [`Queue::with_maxsize`](crate::Queue::with_maxsize).
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<crate::Queue<T>> {
        crate::Queue::with_maxsize(maxsize)
    }

    /// A [`SimpleQueue`](crate::SimpleQueue) (Python's `ctx.SimpleQueue()`).
    ///
    /// # Errors
    /// As [`SimpleQueue::new`](crate::SimpleQueue::new).
    pub fn simple_queue<T: Serialize + DeserializeOwned>(&self) -> Result<crate::SimpleQueue<T>> {
        crate::SimpleQueue::new()
    }

    /// A [`JoinableQueue`](crate::JoinableQueue) (Python's
    /// `ctx.JoinableQueue()`).
    ///
    /// # Errors
    /// As [`JoinableQueue::new`](crate::JoinableQueue::new).
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
    ) -> Result<crate::JoinableQueue<T>> {
        crate::JoinableQueue::new()
    }

    /// A [`Lock`](crate::Lock) (Python's `ctx.Lock()`).
    ///
    /// # Errors
    /// As [`Lock::new`](crate::Lock::new).
    pub fn lock(&self) -> Result<crate::Lock> {
        crate::Lock::new()
    }

    /// An [`RLock`](crate::RLock) (Python's `ctx.RLock()`).
    ///
    /// # Errors
    /// As [`RLock::new`](crate::RLock::new).
    pub fn rlock(&self) -> Result<crate::RLock> {
        crate::RLock::new()
    }

    /// A [`Condition`](crate::Condition) with its own lock (Python's
    /// `ctx.Condition()`).
    ///
    /// # Errors
    /// As [`Condition::new`](crate::Condition::new).
    pub fn condition(&self) -> Result<crate::Condition> {
        crate::Condition::new()
    }

    /// A [`Semaphore`](crate::Semaphore) (Python's `ctx.Semaphore(value)`).
    ///
    /// # Errors
    /// As [`Semaphore::new`](crate::Semaphore::new).
    pub fn semaphore(&self, value: u32) -> Result<crate::Semaphore> {
        crate::Semaphore::new(value)
    }

    /// A [`BoundedSemaphore`](crate::BoundedSemaphore) (Python's
    /// `ctx.BoundedSemaphore(value)`).
    ///
    /// # Errors
    /// As [`BoundedSemaphore::new`](crate::BoundedSemaphore::new).
    pub fn bounded_semaphore(&self, value: u32) -> Result<crate::BoundedSemaphore> {
        crate::BoundedSemaphore::new(value)
    }

    /// An [`Event`](crate::Event) (Python's `ctx.Event()`).
    ///
    /// # Errors
    /// As [`Event::new`](crate::Event::new).
    pub fn event(&self) -> Result<crate::Event> {
        crate::Event::new()
    }

    /// A [`Barrier`](crate::Barrier) for `parties` (Python's
    /// `ctx.Barrier(parties)`).
    ///
    /// # Errors
    /// As [`Barrier::new`](crate::Barrier::new).
    pub fn barrier(&self, parties: u32) -> Result<crate::Barrier> {
        crate::Barrier::new(parties)
    }

    /// A [`Value`](crate::Value) with its lock (Python's
    /// `ctx.Value(typecode, value)`).
    ///
    /// # Errors
    /// As [`Value::new`](crate::Value::new).
    pub fn value<T: crate::ShmSafe>(&self, value: T) -> Result<crate::Value<T>> {
        crate::Value::new(value)
    }

    /// An [`Array`](crate::Array) of `len` zeroed elements with its lock
    /// (Python's `ctx.Array(typecode, size)`).
    ///
    /// # Errors
    /// As [`Array::new`](crate::Array::new).
    pub fn array<T: crate::ShmSafe>(&self, len: usize) -> Result<crate::Array<T>> {
        crate::Array::new(len)
    }

    /// A [`RawValue`](crate::RawValue) (Python's `ctx.RawValue(...)`).
    ///
    /// # Errors
    /// As [`RawValue::new`](crate::RawValue::new).
    pub fn raw_value<T: crate::ShmSafe>(&self, value: T) -> Result<crate::RawValue<T>> {
        crate::RawValue::new(value)
    }

    /// A [`RawArray`](crate::RawArray) of `len` zeroed elements (Python's
    /// `ctx.RawArray(typecode, size)`).
    ///
    /// # Errors
    /// As [`RawArray::new`](crate::RawArray::new).
    pub fn raw_array<T: crate::ShmSafe>(&self, len: usize) -> Result<crate::RawArray<T>> {
        crate::RawArray::new(len)
    }
}

/// The number of CPUs this process may run on (at least 1).
///
/// # Examples
/// ```
/// assert!(multiproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A running child, as listed by [`active_children`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveChild {
    /// Its pid.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// Whether it is daemonic.
    pub daemon: bool,
}

/// The children of this process that are still running; finished ones are
/// reaped as a side effect (Python's `active_children()`).
///
/// # Examples
/// ```
/// fn nap() { std::thread::sleep(std::time::Duration::from_millis(200)) }
///
/// let mut p = multiproc::Process::new(nap, ()).name("napper");
/// p.start()?;
/// let pid = p.pid().unwrap();
/// assert!(multiproc::active_children().iter().any(|c| c.pid == pid && c.name == "napper"));
/// p.join()?;
/// assert!(!multiproc::active_children().iter().any(|c| c.pid == pid));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn active_children() -> Vec<ActiveChild> {
    child::active()
        .into_iter()
        .map(|c| ActiveChild {
            pid: c.pid,
            name: c.name.clone(),
            daemon: c.daemon,
        })
        .collect()
}

/// Ends the current child process with `code`, unwinding its stack first
/// (destructors run), like Python's `sys.exit(code)` in a child. The parent
/// sees `exitcode() == Some(code)`.
///
/// Outside a child started by this crate it calls `std::process::exit`.
///
/// # Examples
/// ```
/// fn quit() { multiproc::exit(12) }
/// let mut p = multiproc::Process::new(quit, ());
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(12));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn exit(code: i32) -> ! {
    if current_process().start_method().is_none() {
        std::process::exit(code);
    }
    std::panic::resume_unwind(Box::new(bootstrap::ExitRequest(code)))
}

/// Erased arguments: anything that can be sent on a connection.
trait Payload: Send {
    fn send_on(&self, chan: &Connection) -> Result<()>;
}

impl<T: Serialize + Send> Payload for T {
    fn send_on(&self, chan: &Connection) -> Result<()> {
        chan.send(self)
    }
}

enum Job {
    Entry { offset: u64, args: Box<dyn Payload> },
    Closure(ForkBody),
}

enum Outcome<R> {
    Pending,
    Returned(R),
    Panicked(RemotePanic),
    Failed(Error),
    Nothing,
    Taken,
}

struct Started<R> {
    child: Arc<ChildShared>,
    chan: Option<Connection>,
    outcome: Outcome<R>,
    /// The limits the child runs under and the parent's end of its marker
    /// pipe (see [`limits`]).
    limits: Option<(limits::Limits, OwnedFd)>,
    /// The limit the child ran into, decided once it has been reaped.
    verdict: std::sync::OnceLock<Option<limits::Limit>>,
}

enum State<R> {
    New(Exclusive<Job>),
    Started(Box<Started<R>>),
    Closed,
}

/// A child process running a function (Python's `multiprocessing.Process`).
///
/// Build it from a `fn` item and its arguments (a tuple), or from a value
/// implementing [`Run`], configure it, then [`start`](Self::start) it. The
/// arguments are serialized and sent to the child, and may contain OS
/// handles ([`Handle`](crate::Handle), [`Connection`]). The target's return
/// value, or its panic with message and location, comes back to the parent.
///
/// Dropping a started `Process` does not stop the child: like Python, a
/// non-daemonic child is waited for when the program exits, and a daemonic
/// one is terminated then.
///
/// # Examples
/// ```
/// use multiproc::Process;
///
/// fn greet(name: String, times: u32) -> String {
///     format!("{} from pid {}", name.repeat(times as usize), std::process::id())
/// }
///
/// let mut p = Process::new(greet, ("hi".to_string(), 2)).name("greeter");
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// let text = p.take_result()?;
/// assert!(text.starts_with("hihi from pid "));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Process<R = ()> {
    name: String,
    identity: Vec<u32>,
    daemon: Option<bool>,
    method: Option<StartMethod>,
    limits: Option<limits::Limits>,
    state: State<R>,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::New(_) => "initial".to_string(),
            State::Started(s) => match s.child.try_status() {
                Ok(Some(st)) => format!("stopped exitcode={}", st.exitcode()),
                _ => format!("started pid={}", s.child.pid),
            },
            State::Closed => "closed".to_string(),
        };
        write!(f, "<Process name='{}' {}>", self.name, state)
    }
}

impl<R> Process<R>
where
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// A process that will run `target` with `args` (a tuple: `()`, `(x,)`,
    /// `(x, y)`, …). `target` must be a `fn` item or a capture-free closure;
    /// this is checked at compile time.
    pub fn new<F, A>(target: F, args: A) -> Self
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = target;
        target::assert_zero_sized::<F>();
        let entry: Entry = bootstrap::fn_entry::<F, A, R>;
        Self::with_job(Job::Entry {
            offset: bootstrap::entry_offset(entry),
            args: Box::new(args),
        })
    }

    /// A process that sends `value` to the child and calls its
    /// [`Run::run`] there, like subclassing Python's `Process`.
    pub fn from_run<T: Run<Output = R>>(value: T) -> Self {
        let entry: Entry = bootstrap::run_entry::<T>;
        Self::with_job(Job::Entry {
            offset: bootstrap::entry_offset(entry),
            args: Box::new(value),
        })
    }

    /// A process that runs a closure, which may capture anything. Only the
    /// [`StartMethod::Fork`] method can run it (the child is a copy of this
    /// process); it is selected here, and starting with another method is
    /// [`Error::ClosureNeedsFork`].
    ///
    /// # Examples
    /// ```
    /// let data = vec![1, 2, 3];
    /// # // Run in a single-threaded helper so that fork is allowed.
    /// # fn inner(data: Vec<i32>) -> i32 {
    /// let mut p = multiproc::Process::from_closure(move || data.iter().sum::<i32>());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// p.take_result().unwrap()
    /// # }
    /// # let mut outer = multiproc::Process::new(inner, (data,));
    /// # outer.start()?;
    /// # outer.join()?;
    /// # assert_eq!(outer.take_result()?, 6);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_closure<C>(body: C) -> Self
    where
        C: FnOnce() -> R + Send + 'static,
    {
        let body: ForkBody =
            Box::new(move |chan: &Connection| bootstrap::run_reporting(chan, body));
        Self::with_job(Job::Closure(body)).start_method(StartMethod::Fork)
    }

    fn with_job(job: Job) -> Self {
        let (identity, name) = current::next_child_identity();
        Process {
            name,
            identity,
            daemon: None,
            method: None,
            limits: None,
            state: State::New(Exclusive::new(job)),
            _result: PhantomData,
        }
    }
}

impl<R> Process<R> {
    /// Sets the name (default `Process-N`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets whether the child is daemonic (default: the same as this
    /// process). A daemonic child is terminated when this process exits,
    /// is killed if this process dies (even by SIGKILL), and may not start
    /// children of its own.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// Sets the start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Sets resource limits (memory, CPU time) that the child applies to
    /// itself before its target runs, with any start method. A child that
    /// runs past one ends, and [`take_result`](Self::take_result) returns
    /// [`Error::LimitExceeded`] naming the limit. See [`Limits`](crate::Limits).
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, Limit, Limits, Process};
    /// use std::time::Duration;
    ///
    /// fn spin() -> u64 {
    ///     let mut x = 0u64;
    ///     loop {
    ///         x = std::hint::black_box(x.wrapping_add(1));
    ///     }
    /// }
    ///
    /// let mut p = Process::new(spin, ()).limits(Limits::new().cpu_time(Duration::from_secs(1)));
    /// p.start()?;
    /// p.join()?;
    /// let err = p.take_result().unwrap_err();
    /// assert!(matches!(err, Error::LimitExceeded { limit: Limit::CpuTime(_), .. }));
    /// assert!(p.usage().unwrap().cpu_time >= Duration::from_secs(1));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn limits(mut self, limits: limits::Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// What the child used (CPU time, peak resident memory), once it has
    /// ended and been reaped ([`join`](Self::join), [`exitcode`](Self::exitcode)
    /// or [`is_alive`](Self::is_alive) seeing it gone); `None` before.
    ///
    /// # Examples
    /// See [`ResourceUsage`](crate::ResourceUsage).
    pub fn usage(&self) -> Option<limits::ResourceUsage> {
        let s = self.started().ok()?;
        s.child.try_status().ok().flatten()?;
        s.child.usage()
    }

    /// The limit set with [`limits`](Self::limits) that the child ran into,
    /// once it has ended; `None` while it runs or when it ended otherwise.
    pub fn limit_exceeded(&self) -> Option<limits::Limit> {
        let s = self.started().ok()?;
        let status = s.child.try_status().ok().flatten()?;
        let (l, marker) = s.limits.as_ref()?;
        *s.verdict
            .get_or_init(|| limits::verdict(l, marker, status, s.child.usage()))
    }

    /// Changes the name; allowed at any time, as in Python.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Changes the daemon flag.
    ///
    /// # Errors
    /// [`Error::State`] once the process has started.
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        if !matches!(self.state, State::New(_)) {
            return Err(Error::State("process has already started"));
        }
        self.daemon = Some(daemon);
        Ok(())
    }

    /// The process name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// Whether the process is (or will be) daemonic.
    pub fn is_daemon(&self) -> bool {
        self.daemon.unwrap_or_else(|| current_process().is_daemon())
    }

    /// The OS pid, once started.
    pub fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Started(s) => Some(s.child.pid),
            _ => None,
        }
    }

    /// The position of the child in the process tree (see
    /// [`ProcessInfo::identity`]).
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }

    fn started(&self) -> Result<&Started<R>> {
        match &self.state {
            State::Started(s) => Ok(s),
            State::New(_) => Err(Error::State("process has not been started")),
            State::Closed => Err(Error::State("process object is closed")),
        }
    }

    fn started_mut(&mut self) -> Result<&mut Started<R>> {
        match &mut self.state {
            State::Started(s) => Ok(s),
            State::New(_) => Err(Error::State("process has not been started")),
            State::Closed => Err(Error::State("process object is closed")),
        }
    }

    /// Whether the child is running. False before start and after exit.
    pub fn is_alive(&self) -> bool {
        match &self.state {
            State::Started(s) => matches!(s.child.try_status(), Ok(None)),
            _ => false,
        }
    }

    /// The exit code once the child has ended: its code, or minus the number
    /// of the signal that killed it (`-15` after [`terminate`](Self::terminate)).
    /// `None` while running or before start.
    pub fn exitcode(&self) -> Option<i32> {
        match &self.state {
            State::Started(s) => s
                .child
                .try_status()
                .ok()
                .flatten()
                .map(WaitStatus::exitcode),
            _ => None,
        }
    }

    /// A descriptor that becomes readable when the child ends (a pidfd);
    /// usable with `poll`/`epoll` or an async reactor.
    ///
    /// # Errors
    /// [`Error::State`] before start or after close.
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.started()?.child.sentinel())
    }

    /// Sends SIGTERM (Python's `terminate()`).
    ///
    /// # Errors
    /// [`Error::State`] before start or after close; OS errors.
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL.
    ///
    /// # Errors
    /// As for [`terminate`](Self::terminate).
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends SIGINT.
    ///
    /// # Errors
    /// As for [`terminate`](Self::terminate).
    pub fn interrupt(&self) -> Result<()> {
        self.signal(libc::SIGINT)
    }

    fn signal(&self, sig: i32) -> Result<()> {
        let s = self.started()?;
        log::debug!(
            "sending {} to {} (pid {})",
            signal_name(sig),
            self.name,
            s.child.pid
        );
        s.child.signal(sig)
    }

    /// Releases the process's resources. Later calls other than `close` and
    /// the name accessors fail; a second `close` does nothing.
    ///
    /// # Errors
    /// [`Error::State`] while the child is still running.
    pub fn close(&mut self) -> Result<()> {
        if let State::Started(_) = self.state {
            if self.is_alive() {
                return Err(Error::State(
                    "cannot close a process while it is still running; join or terminate it first",
                ));
            }
        }
        if let State::Started(s) = std::mem::replace(&mut self.state, State::Closed) {
            child::unregister(&s.child);
        }
        self.state = State::Closed;
        Ok(())
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Starts the child.
    ///
    /// # Errors
    /// [`Error::State`] when started twice or after close;
    /// [`Error::DaemonicChildren`] in a daemonic process;
    /// [`Error::ClosureNeedsFork`] / [`Error::ForkWithThreads`] for the fork
    /// method's rules; [`Error::Encode`] when the arguments cannot be
    /// serialized (no child is left behind); OS errors.
    pub fn start(&mut self) -> Result<()> {
        let job = match std::mem::replace(&mut self.state, State::Closed) {
            State::New(job) => job.into_inner(),
            other => {
                let closed = matches!(other, State::Closed);
                self.state = other;
                return Err(Error::State(if closed {
                    "process object is closed"
                } else {
                    "cannot start a process twice"
                }));
            }
        };
        match self.launch(job) {
            Ok(started) => {
                log::debug!(
                    "started {} (pid {}, {})",
                    self.name,
                    started.child.pid,
                    self.method.unwrap_or_else(get_start_method)
                );
                self.state = State::Started(Box::new(started));
                Ok(())
            }
            Err((job, e)) => {
                self.state = match job {
                    Some(job) => State::New(Exclusive::new(job)),
                    None => State::Closed,
                };
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn launch(&mut self, job: Job) -> std::result::Result<Started<R>, (Option<Job>, Error)> {
        if current_process().is_daemon() {
            return Err((Some(job), Error::DaemonicChildren));
        }
        let method = self.method.unwrap_or_else(get_start_method);
        let daemon = self.is_daemon();
        if matches!(job, Job::Closure(_)) && method != StartMethod::Fork {
            return Err((Some(job), Error::ClosureNeedsFork));
        }
        sys::ensure_load_hook_linked();
        let (here, there) = match sys::socketpair(SocketKind::Stream) {
            Ok(p) => p,
            Err(e) => return Err((Some(job), e.into())),
        };
        let entry = match &job {
            Job::Entry { offset, .. } => Some(*offset),
            Job::Closure(_) => None,
        };
        let (child_limits, marker) = match self.limits.as_ref().map(limits::Limits::arm) {
            Some(Ok(Some((c, m)))) => (Some(c), Some(m)),
            Some(Err(e)) => return Err((Some(job), e.into())),
            _ => (None, None),
        };
        let self_pidfd = match current::self_pidfd() {
            Ok(fd) => fd,
            Err(e) => return Err((Some(job), e)),
        };
        let chan = Connection::new(here, true, true);
        let (pid, pidfd, reaper, job) = match method {
            StartMethod::ForkServer => match forkserver::fork_child(there.as_fd()) {
                Ok(f) => (f.pid, f.pidfd, Reaper::ForkServer(f.status), Some(job)),
                Err(e) => return Err((Some(job), e)),
            },
            StartMethod::Spawn => {
                let argv0 = std::env::args_os().next().unwrap_or_default();
                let argv0 = std::ffi::CString::new(argv0.into_encoded_bytes())
                    .unwrap_or_else(|_| c"multiproc-child".into());
                let role = format!("child:{}", sys::getpid());
                let spawned = sys::spawn_self(&argv0, &[("MULTIPROC_ROLE", &role)], there.as_fd())
                    .and_then(|pid| Ok((pid, sys::pidfd_open(pid)?)));
                match spawned {
                    Ok((pid, pidfd)) => (pid, pidfd, Reaper::Direct, Some(job)),
                    Err(e) => return Err((Some(job), e.into())),
                }
            }
            StartMethod::Fork => match fork_now(there, job) {
                Ok((pid, pidfd, job)) => (pid, pidfd, Reaper::Direct, job),
                Err((job, e)) => return Err((job, e)),
            },
        };
        // Built after the launch so that a fork server started by it is
        // shared with the child too.
        let mut header = Header::new(
            entry,
            self.name.clone(),
            daemon,
            self.identity.clone(),
            method,
            self_pidfd,
            // Children of the fork server share it; spawned and forked
            // children start their own when they need one.
            (method == StartMethod::ForkServer)
                .then(forkserver::client_for_child)
                .flatten(),
        );
        header.limits = child_limits;
        let child = Arc::new(ChildShared::new(
            pid,
            self.name.clone(),
            daemon,
            pidfd,
            reaper,
        ));
        child::register(child.clone());
        let mut started = Started {
            child,
            chan: Some(chan),
            outcome: Outcome::Pending,
            limits: self.limits.clone().zip(marker),
            verdict: std::sync::OnceLock::new(),
        };
        // Hand the child its header and arguments. If this fails the child
        // is already running and will fail its bootstrap; join reports it.
        let chan = started.chan.as_ref().expect("set above");
        let sent = chan.send(&header).and_then(|_| match &job {
            Some(Job::Entry { args, .. }) => args.send_on(chan),
            _ => Ok(()),
        });
        drop(header);
        // The arguments (and any handles in them) are released now.
        drop(job);
        if let Err(e) = sent {
            if let Error::Encode(_) = e {
                let _ = started.child.signal(libc::SIGKILL);
                let _ = started.child.wait(None);
                child::unregister(&started.child);
                return Err((None, e));
            }
            started.outcome = Outcome::Failed(e);
        }
        Ok(started)
    }

    /// Waits for the child to end.
    ///
    /// # Errors
    /// [`Error::State`] before start or after close; OS errors.
    pub fn join(&mut self) -> Result<()> {
        self.join_until(None).map(|_| ())
    }

    /// Waits at most `timeout` for the child to end; `true` if it ended.
    /// `Duration::ZERO` checks without waiting.
    ///
    /// The wait keeps to `timeout` also while the child is sending its
    /// result: a result that has only partly arrived when the time is up
    /// stays buffered, and a later `join`/`join_timeout` goes on reading it.
    ///
    /// # Errors
    /// As for [`join`](Self::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.join_until(sys::deadline_after(timeout))
    }

    /// Waits until `deadline` at the latest for the child to end; `true` if
    /// it ended. A deadline in the past checks without waiting.
    ///
    /// # Errors
    /// As for [`join`](Self::join).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// fn nap() { std::thread::sleep(Duration::from_secs(30)) }
    ///
    /// let mut p = multiproc::Process::new(nap, ());
    /// p.start()?;
    /// assert!(!p.join_deadline(Instant::now() + Duration::from_millis(50))?);
    /// p.kill()?;
    /// assert!(p.join_deadline(Instant::now() + Duration::from_secs(30))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_deadline(&mut self, deadline: Instant) -> Result<bool> {
        self.join_until(Some(deadline))
    }

    fn join_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let s = self.started_mut()?;
        loop {
            let Some(chan) = &s.chan else {
                return match s.child.wait(deadline)? {
                    Some(_) => {
                        child::unregister(&s.child);
                        Ok(true)
                    }
                    None => Ok(false),
                };
            };
            // Collect the result while waiting, so that a child writing a
            // large result is never blocked by a parent waiting for its exit.
            let ready = sys::poll_readable(&[chan.as_fd(), s.child.sentinel()], deadline)?;
            if ready[0] {
                if !receive_outcome(s, deadline) {
                    return Ok(false);
                }
            } else if ready[1] {
                // Exited. Its channel may still be held open by a process it
                // forked; take what is there and stop listening.
                if chan.poll(Some(Duration::ZERO))? {
                    if !receive_outcome(s, deadline) {
                        return Ok(false);
                    }
                } else {
                    s.chan = None;
                    if matches!(s.outcome, Outcome::Pending) {
                        s.outcome = Outcome::Nothing;
                    }
                }
            } else {
                return Ok(false);
            }
        }
    }

    /// The target's result, once the child has been joined: its return
    /// value, taken out (a second call is an error).
    ///
    /// # Errors
    /// [`Error::Panicked`] with the child's panic message and location;
    /// [`Error::LimitExceeded`] when it ran past one of its
    /// [`limits`](Self::limits);
    /// [`Error::Killed`] naming the signal when the child was killed;
    /// [`Error::Exited`] when it exited without a result (e.g. through
    /// [`exit`]); [`Error::Bootstrap`] when it could not start;
    /// [`Error::State`] before the child was joined or when already taken.
    pub fn take_result(&mut self) -> Result<R> {
        if let Some(limit) = self.limit_exceeded() {
            let s = self.started_mut()?;
            if s.chan.is_none() && !matches!(s.outcome, Outcome::Taken) {
                s.outcome = Outcome::Taken;
                return Err(Error::LimitExceeded {
                    limit,
                    usage: s.child.usage(),
                });
            }
        }
        let s = self.started_mut()?;
        let status = match s.child.try_status()? {
            Some(st) if s.chan.is_none() => st,
            _ => return Err(Error::State("process has not been joined")),
        };
        match std::mem::replace(&mut s.outcome, Outcome::Taken) {
            Outcome::Returned(v) => Ok(v),
            Outcome::Panicked(p) => Err(Error::Panicked(p)),
            Outcome::Taken => Err(Error::State("the result was already taken")),
            Outcome::Failed(e) => match status {
                WaitStatus::Signaled(sig) => Err(Error::Killed(sig)),
                _ => Err(e),
            },
            Outcome::Pending | Outcome::Nothing => match status {
                WaitStatus::Signaled(sig) => Err(Error::Killed(sig)),
                WaitStatus::Exited(code) => Err(Error::Exited(code)),
            },
        }
    }
}

/// Reads the child's outcome, giving up at `deadline`: then the part read
/// so far stays in the channel for the next call, and the result is false.
fn receive_outcome<R: DeserializeOwned>(s: &mut Started<R>, deadline: Option<Instant>) -> bool {
    let chan = s.chan.as_ref().expect("channel present");
    let received = chan.recv_at::<WireOutcome<R>>(deadline);
    if matches!(received, Err(Error::Timeout)) {
        return false;
    }
    s.chan = None;
    s.outcome = match received {
        Ok(WireOutcome::Return(v)) => Outcome::Returned(v),
        Ok(WireOutcome::Panic(p)) => Outcome::Panicked(p),
        Ok(WireOutcome::Error(why)) => Outcome::Failed(Error::Bootstrap(why)),
        Err(Error::Eof) => Outcome::Nothing,
        Err(Error::Decode(why)) => {
            Outcome::Failed(Error::Decode(format!("cannot decode the result: {why}")))
        }
        Err(e) => Outcome::Failed(e),
    };
    true
}

#[allow(clippy::type_complexity)]
fn fork_now(
    there: OwnedFd,
    job: Job,
) -> std::result::Result<(u32, OwnedFd, Option<Job>), (Option<Job>, Error)> {
    // Fail closed: a process that cannot tell its thread count may have
    // other threads, so it does not fork.
    match sys::thread_count() {
        Ok(1) => {}
        Ok(threads) => return Err((Some(job), Error::ForkWithThreads { threads })),
        Err(e) => {
            let why = format!(
                "refusing to fork: cannot tell whether this process has other threads \
                 (/proc/self/task: {e}); use the forkserver or spawn start method"
            );
            return Err((Some(job), Error::Io(std::io::Error::new(e.kind(), why))));
        }
    }
    // SAFETY: the process has one thread (checked just above, and nothing
    // in this function starts one), so the child may run arbitrary code.
    #[allow(unsafe_code)]
    let forked = unsafe { sys::fork() };
    match forked {
        Ok(sys::Fork::Child) => {
            // A panic from here on must not unwind into the parent's frames
            // copied into this child: it aborts (`child_main` never returns).
            let _abort = bootstrap::AbortOnUnwind;
            bootstrap::forget_parent_channel_after_fork();
            let body = match job {
                Job::Closure(body) => Some(body),
                Job::Entry { .. } => None,
            };
            bootstrap::child_main(there, body)
        }
        Ok(sys::Fork::Parent(pid)) => match sys::pidfd_open(pid) {
            Ok(pidfd) => {
                drop(there);
                Ok((pid, pidfd, Some(job)))
            }
            Err(e) => Err((None, e.into())),
        },
        Err(e) => Err((Some(job), e.into())),
    }
}

/// A started-or-not process of any result type, for holding processes of
/// different `Process<R>` in one collection (Python's
/// `for p in procs: p.start()`).
///
/// Every [`Process<R>`] implements it; [`Process::erase`] boxes one. The
/// methods are those of [`Process`] that do not involve the result type;
/// to take a result, get the `Process<R>` back with
/// [`into_any`](ProcessHandle::into_any) and `downcast`.
///
/// # Examples
/// ```
/// use multiproc::{Process, ProcessHandle};
///
/// fn count(n: u32) -> u32 { n }
/// fn greet(who: String) -> String { format!("hello, {who}") }
/// fn quiet() {}
///
/// let mut procs: Vec<Box<dyn ProcessHandle>> = vec![
///     Process::new(count, (3,)).erase(),
///     Process::new(greet, ("world".to_string(),)).name("greeter").erase(),
///     Box::new(Process::new(quiet, ())),
/// ];
/// for p in &mut procs {
///     p.start()?;
/// }
/// for p in &mut procs {
///     p.join()?;
///     assert_eq!(p.exitcode(), Some(0));
/// }
/// // The result of one of them, by its type:
/// let greeter = procs.remove(1).into_any().downcast::<Process<String>>().unwrap();
/// assert_eq!(greeter.get_name(), "greeter");
/// let mut greeter = *greeter;
/// assert_eq!(greeter.take_result()?, "hello, world");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait ProcessHandle: Send + fmt::Debug {
    /// [`Process::start`].
    ///
    /// # Errors
    /// As [`Process::start`].
    fn start(&mut self) -> Result<()>;
    /// [`Process::join`].
    ///
    /// # Errors
    /// As [`Process::join`].
    fn join(&mut self) -> Result<()>;
    /// [`Process::join_timeout`].
    ///
    /// # Errors
    /// As [`Process::join`].
    fn join_timeout(&mut self, timeout: Duration) -> Result<bool>;
    /// [`Process::join_deadline`].
    ///
    /// # Errors
    /// As [`Process::join`].
    fn join_deadline(&mut self, deadline: Instant) -> Result<bool>;
    /// [`Process::terminate`].
    ///
    /// # Errors
    /// As [`Process::terminate`].
    fn terminate(&self) -> Result<()>;
    /// [`Process::kill`].
    ///
    /// # Errors
    /// As [`Process::terminate`].
    fn kill(&self) -> Result<()>;
    /// [`Process::interrupt`].
    ///
    /// # Errors
    /// As [`Process::terminate`].
    fn interrupt(&self) -> Result<()>;
    /// [`Process::close`].
    ///
    /// # Errors
    /// As [`Process::close`].
    fn close(&mut self) -> Result<()>;
    /// [`Process::pid`].
    fn pid(&self) -> Option<u32>;
    /// [`Process::exitcode`].
    fn exitcode(&self) -> Option<i32>;
    /// [`Process::is_alive`].
    fn is_alive(&self) -> bool;
    /// [`Process::is_daemon`].
    fn is_daemon(&self) -> bool;
    /// [`Process::get_name`].
    fn get_name(&self) -> &str;
    /// [`Process::sentinel`].
    ///
    /// # Errors
    /// As [`Process::sentinel`].
    fn sentinel(&self) -> Result<BorrowedFd<'_>>;
    /// The `Process<R>` itself, to `downcast` back to its type (and take
    /// its result).
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

impl<R> ProcessHandle for Process<R>
where
    R: DeserializeOwned + Send + 'static,
{
    fn start(&mut self) -> Result<()> {
        Process::start(self)
    }
    fn join(&mut self) -> Result<()> {
        Process::join(self)
    }
    fn join_timeout(&mut self, timeout: Duration) -> Result<bool> {
        Process::join_timeout(self, timeout)
    }
    fn join_deadline(&mut self, deadline: Instant) -> Result<bool> {
        Process::join_deadline(self, deadline)
    }
    fn terminate(&self) -> Result<()> {
        Process::terminate(self)
    }
    fn kill(&self) -> Result<()> {
        Process::kill(self)
    }
    fn interrupt(&self) -> Result<()> {
        Process::interrupt(self)
    }
    fn close(&mut self) -> Result<()> {
        Process::close(self)
    }
    fn pid(&self) -> Option<u32> {
        Process::pid(self)
    }
    fn exitcode(&self) -> Option<i32> {
        Process::exitcode(self)
    }
    fn is_alive(&self) -> bool {
        Process::is_alive(self)
    }
    fn is_daemon(&self) -> bool {
        Process::is_daemon(self)
    }
    fn get_name(&self) -> &str {
        Process::get_name(self)
    }
    fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        Process::sentinel(self)
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl<R> Process<R>
where
    R: DeserializeOwned + Send + 'static,
{
    /// This process as a [`ProcessHandle`] trait object, to keep with
    /// processes of other result types.
    ///
    /// # Examples
    /// See [`ProcessHandle`].
    pub fn erase(self) -> Box<dyn ProcessHandle> {
        Box::new(self)
    }
}
