//! Processes (Python's `multiprocessing.Process`) and start methods.

pub(crate) mod bootstrap;
pub(crate) mod child;
pub(crate) mod forkserver;
mod handle;
mod launch;
pub(crate) mod limits;
mod target;

pub use crate::runtime::current::{
    ParentProcess, ProcessInfo, StartMethod, current_process, parent_process,
};
pub use handle::ProcessHandle;
pub(crate) use target::zst_target;
pub use target::{Run, Target};

use crate::connection::Connection;
use crate::error::{Error, RemotePanic, Result, signal_name};
use crate::exclusive::Exclusive;
use crate::runtime::current;
use crate::runtime::panic::ExitRequest;
use crate::sys::{self, WaitStatus};
use bootstrap::{Entry, ForkBody, WireOutcome};
use child::ChildShared;
use launch::Job;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// [`Error::State`] if it was already set; use [`Context`](crate::Context)s to mix methods.
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
    std::panic::resume_unwind(Box::new(ExitRequest(code)))
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
    limits: Option<(limits::Limits, std::os::fd::OwnedFd)>,
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
