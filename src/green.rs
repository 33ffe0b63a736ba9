//! Coroutines in the shape of Python's `gevent`, on tokio (feature `tokio`).
//!
//! A greenlet here is a tokio task with a handle that behaves like gevent's:
//! it can be joined without consuming its result, asked whether it is
//! [`ready`](Greenlet::ready) or [`successful`](Greenlet::successful),
//! [`kill`](Greenlet::kill)ed at its next await point, and waited for in
//! groups with [`joinall`]. [`Group`] and [`Pool`] track many greenlets
//! (a pool bounds how many run at once). Everything is a thin layer over
//! tokio: tasks come from [`tokio::spawn`] and [`tokio::task::JoinSet`],
//! time from [`tokio::time`], the pool's bound from
//! [`tokio::sync::Semaphore`].
//!
//! ```
//! use multiproc::green;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let a = green::spawn(async { green::sleep(Duration::from_millis(20)).await; 1 });
//! let b = green::spawn(async { 2 });
//! let done = green::joinall(&[&a, &b], None, false, None).await?;
//! assert_eq!(done.len(), 2);
//! assert_eq!(a.get().await? + b.get().await?, 3);
//! # Ok::<(), green::GreenletError>(())
//! # }).unwrap();
//! ```
//!
//! # From gevent to Rust
//!
//! | gevent | `multiproc::green` |
//! |---|---|
//! | `gevent.spawn(f, *args)` | [`spawn`]`(async move { f(args).await })` |
//! | `gevent.spawn_later(seconds, f)` | [`spawn_later`]`(Duration, future)` |
//! | `g.join(timeout)`, `g.get(timeout)` | [`Greenlet::join`]`(Option<Duration>).await`, [`Greenlet::get`]`.await` (with [`with_timeout`] for a timeout) |
//! | `g.kill(block=True)`, `g.ready()`, `g.successful()`, `g.dead`, `g.exception` | [`Greenlet::kill`]`.await`, [`Greenlet::ready`], [`Greenlet::successful`], [`Greenlet::ready`], [`Greenlet::exception`] |
//! | `gevent.joinall(greenlets, timeout, raise_error, count)` | [`joinall`]`(&[&g, ...], timeout, raise_error, count).await` |
//! | `gevent.killall(greenlets)` | [`killall`]`(&[&g, ...]).await` |
//! | `gevent.sleep(seconds)`, `gevent.sleep(0)` | [`sleep`]`(Duration).await` (zero yields to the other coroutines) |
//! | `gevent.Timeout(seconds)`, `with Timeout(s):` | [`Timeout::start_new`]`(d)`, [`Timeout::run`]`(future).await` |
//! | `gevent.with_timeout(seconds, f)` | [`with_timeout`]`(d, future).await` |
//! | `gevent.pool.Pool(size)`, `gevent.pool.Group()` | [`Pool::new`]`(size)`, [`Group::new`]`()` |
//! | `pool.spawn`, `map`, `imap_unordered`, `join`, `kill`, `free_count` | [`Group::spawn`], [`Group::map`], [`Group::imap_unordered`], [`Group::join`], [`Group::kill`], [`Group::free_count`] (a [`Pool`] derefs to its [`Group`]) |
//! | `gevent.queue.Queue`, `gevent.lock`, `gevent.event` (within one thread) | [`tokio::sync`] (`mpsc`, `Mutex`, `Notify`, `Semaphore`) |
//! | a `multiprocessing.Queue` read from greenlets | [`Queue::get_async`](crate::Queue::get_async) and the other awaitable twins |
//!
//! # No `monkey.patch_all`
//!
//! gevent makes blocking calls cooperative by replacing the standard
//! library at run time (`monkey.patch_all()`). Rust has no analogue and
//! needs none: a coroutine never calls a blocking function. Use the
//! awaitable twin of the operation (`get_async`, `join_async`, …; tokio's
//! own `net`, `time` and `sync`), or move a blocking call off the runtime
//! with [`tokio::task::spawn_blocking`]. A blocking call made directly in a
//! coroutine stalls every coroutine of its runtime thread — the same freeze
//! an unpatched call causes under gevent.
//!
//! # Failure
//!
//! A greenlet *fails* when its future panics (the panic is caught and kept
//! as [`GreenletError::Panicked`]) or when it is killed
//! ([`GreenletError::Killed`]). A future that returns a `Result` succeeds
//! as a greenlet whatever the `Result` holds; the caller reads it with
//! [`get`](Greenlet::get).
//!
//! Every function here must run inside a tokio runtime (current-thread or
//! multi-thread); they panic otherwise, as [`tokio::spawn`] does.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

pub use tokio::time::error::Elapsed;

/// Why a greenlet has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GreenletError {
    /// Its future panicked; the panic message.
    Panicked(String),
    /// It was killed ([`Greenlet::kill`], [`killall`], [`Group::kill`])
    /// before it finished.
    Killed,
    /// The value was already taken by an earlier [`Greenlet::get`].
    Taken,
    /// [`joinall`] with a timeout: the time ran out first.
    Timeout,
}

impl fmt::Display for GreenletError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GreenletError::Panicked(m) => write!(f, "greenlet panicked: {m}"),
            GreenletError::Killed => f.write_str("greenlet was killed"),
            GreenletError::Taken => f.write_str("greenlet value already taken"),
            GreenletError::Timeout => f.write_str("timed out waiting for greenlets"),
        }
    }
}

impl std::error::Error for GreenletError {}

enum State<T> {
    Running,
    Done(Result<T, GreenletError>),
    Taken,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    done: watch::Sender<bool>,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, r: Result<T, GreenletError>) {
        let mut s = self.lock();
        if matches!(*s, State::Running) {
            *s = State::Done(r);
        }
        drop(s);
        self.done.send_replace(true);
    }
}

/// Records `Killed` when the task's future is dropped before it finished
/// (an abort drops it at its current await point).
struct Finisher<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Drop for Finisher<T> {
    fn drop(&mut self) {
        self.slot.finish(Err(GreenletError::Killed));
    }
}

/// Polls a future, turning a panic into an `Err` with its message.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(panic_message(&p))),
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// A handle to a spawned coroutine (gevent's `Greenlet`).
///
/// Dropping the handle does not stop the coroutine (use
/// [`kill`](Greenlet::kill)). Cloning gives another handle to the same
/// coroutine.
pub struct Greenlet<T> {
    slot: Arc<Slot<T>>,
    abort: AbortHandle,
}

impl<T> Clone for Greenlet<T> {
    fn clone(&self) -> Self {
        Greenlet {
            slot: self.slot.clone(),
            abort: self.abort.clone(),
        }
    }
}

impl<T> fmt::Debug for Greenlet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Greenlet")
            .field("ready", &self.ready())
            .finish()
    }
}

/// Wraps `fut` so that its outcome lands in a new slot; returns the task
/// body and the slot.
fn wrap<F>(
    fut: F,
) -> (
    impl Future<Output = ()> + Send + 'static,
    Arc<Slot<F::Output>>,
)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (done, _) = watch::channel(false);
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Running),
        done,
    });
    let finisher = Finisher { slot: slot.clone() };
    let body = async move {
        let r = CatchUnwind(Box::pin(fut)).await;
        finisher.slot.finish(r.map_err(GreenletError::Panicked));
        drop(finisher);
    };
    (body, slot)
}

/// Starts a coroutine on the current runtime (gevent's `spawn`).
///
/// # Panics
///
/// Outside a tokio runtime.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let g = multiproc::green::spawn(async { 6 * 7 });
/// assert_eq!(g.get().await, Ok(42));
/// # });
/// ```
pub fn spawn<F>(fut: F) -> Greenlet<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (body, slot) = wrap(fut);
    let abort = tokio::spawn(body).abort_handle();
    Greenlet { slot, abort }
}

/// Starts a coroutine after `delay` (gevent's `spawn_later`); killing it
/// before then means it never starts.
///
/// # Panics
///
/// Outside a tokio runtime.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let g = multiproc::green::spawn_later(Duration::from_millis(10), async { "late" });
/// assert!(!g.ready());
/// assert_eq!(g.get().await, Ok("late"));
/// # });
/// ```
pub fn spawn_later<F>(delay: Duration, fut: F) -> Greenlet<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn(async move {
        tokio::time::sleep(delay).await;
        fut.await
    })
}

impl<T> Greenlet<T> {
    /// Whether the coroutine has finished: returned, panicked or was
    /// killed (gevent's `ready()` and `dead`).
    pub fn ready(&self) -> bool {
        *self.slot.done.borrow()
    }

    /// Whether it finished without panicking or being killed (an already
    /// taken value counts as success).
    pub fn successful(&self) -> bool {
        matches!(*self.slot.lock(), State::Done(Ok(_)) | State::Taken)
    }

    /// Why it failed, once it has (gevent's `exception`); `None` while it
    /// runs or when it succeeded.
    pub fn exception(&self) -> Option<GreenletError> {
        match &*self.slot.lock() {
            State::Done(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    /// Waits until the coroutine finishes, for at most `timeout` (`None`:
    /// as long as it takes); true when it has. The value stays for
    /// [`get`](Greenlet::get).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn join(&self, timeout: Option<Duration>) -> bool {
        let mut rx = self.slot.done.subscribe();
        let wait = async move {
            let _ = rx.wait_for(|d| *d).await;
        };
        match timeout {
            None => {
                wait.await;
                true
            }
            Some(t) => tokio::time::timeout(t, wait).await.is_ok(),
        }
    }

    /// Waits for the coroutine and takes its value.
    ///
    /// # Errors
    ///
    /// [`GreenletError::Panicked`], [`GreenletError::Killed`], or
    /// [`GreenletError::Taken`] when an earlier `get` took the value.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the value is taken only in the poll that returns it.
    pub async fn get(&self) -> Result<T, GreenletError> {
        self.join(None).await;
        let mut s = self.slot.lock();
        match std::mem::replace(&mut *s, State::Taken) {
            State::Done(Ok(v)) => Ok(v),
            State::Done(Err(e)) => {
                *s = State::Done(Err(e.clone()));
                Err(e)
            }
            State::Taken => Err(GreenletError::Taken),
            State::Running => unreachable!("joined greenlet is running"),
        }
    }

    /// Stops the coroutine at its next await point (its future is dropped
    /// there, running its destructors) and waits until it is gone
    /// (gevent's `kill(block=True)`). A coroutine that already finished
    /// keeps its outcome.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the kill is requested before the first await.
    pub async fn kill(&self) {
        self.abort.abort();
        self.join(None).await;
    }
}

/// Waits for greenlets (gevent's `joinall`): until all are done, `count`
/// of them are done, `timeout` passes, or — with `raise_error` — one fails.
///
/// Returns the indices (into `greenlets`) of those done, in the order they
/// finished (those already done first).
///
/// # Errors
///
/// With `raise_error`, the failure of the first failed greenlet found. A
/// timeout is not an error: fewer indices come back.
///
/// # Cancel safety
///
/// Cancel safe: it only waits.
///
/// # Examples
///
/// ```
/// use multiproc::green;
/// use std::time::Duration;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let fast = green::spawn(async { 1 });
/// let slow = green::spawn(async { green::sleep(Duration::from_secs(60)).await; 2 });
/// let done = green::joinall(&[&fast, &slow], Some(Duration::from_millis(50)), false, None).await;
/// assert_eq!(done, Ok(vec![0]));
/// green::killall(&[&slow]).await;
/// # });
/// ```
pub async fn joinall<T>(
    greenlets: &[&Greenlet<T>],
    timeout: Option<Duration>,
    raise_error: bool,
    count: Option<usize>,
) -> Result<Vec<usize>, GreenletError> {
    let want = count.unwrap_or(greenlets.len()).min(greenlets.len());
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut done = Vec::new();
    let mut waiters = JoinSet::new();
    for (i, g) in greenlets.iter().enumerate() {
        if g.ready() {
            done.push(i);
        } else {
            let mut rx = g.slot.done.subscribe();
            waiters.spawn(async move {
                let _ = rx.wait_for(|d| *d).await;
                i
            });
        }
    }
    let check = |i: usize| -> Result<(), GreenletError> {
        match greenlets[i].exception() {
            Some(e) if raise_error => Err(e),
            _ => Ok(()),
        }
    };
    for &i in &done {
        check(i)?;
    }
    while done.len() < want {
        let next = match deadline {
            None => waiters.join_next().await,
            Some(d) => match tokio::time::timeout_at(d, waiters.join_next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
        };
        match next {
            Some(Ok(i)) => {
                done.push(i);
                check(i)?;
            }
            Some(Err(_)) => {}
            None => break,
        }
    }
    Ok(done)
}

/// Kills greenlets (gevent's `killall`) and waits until all are gone.
///
/// # Cancel safety
///
/// Cancel safe: every kill is requested before the first await.
pub async fn killall<T>(greenlets: &[&Greenlet<T>]) {
    for g in greenlets {
        g.abort.abort();
    }
    for g in greenlets {
        g.join(None).await;
    }
}

/// Suspends this coroutine for `duration` (gevent's `sleep`); zero yields
/// to the other coroutines of the runtime once, as `gevent.sleep(0)`.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// multiproc::green::sleep(std::time::Duration::ZERO).await;
/// # });
/// ```
pub async fn sleep(duration: Duration) {
    if duration.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(duration).await;
    }
}

/// A deadline shared by several operations (gevent's `Timeout`): started
/// once, every [`run`](Timeout::run) under it gives up at the same instant.
///
/// # Examples
///
/// ```
/// use multiproc::green::{self, Timeout};
/// use std::time::Duration;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let t = Timeout::start_new(Duration::from_millis(30));
/// assert_eq!(t.run(async { 1 }).await, Ok(1));
/// assert!(t.run(green::sleep(Duration::from_secs(60))).await.is_err());
/// # });
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    deadline: Instant,
}

impl Timeout {
    /// Starts a timeout of `duration` from now.
    pub fn start_new(duration: Duration) -> Timeout {
        Timeout {
            deadline: Instant::now() + duration,
        }
    }

    /// When it expires.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs `fut` until it completes or the timeout expires; on expiry the
    /// future is dropped at its current await point.
    ///
    /// # Errors
    ///
    /// [`Elapsed`] when the timeout expired first.
    pub async fn run<F: Future>(&self, fut: F) -> Result<F::Output, Elapsed> {
        tokio::time::timeout_at(self.deadline, fut).await
    }
}

/// Runs `fut` for at most `duration` (gevent's `with_timeout`).
///
/// # Errors
///
/// [`Elapsed`] when the time ran out first (the future is dropped).
///
/// # Examples
///
/// ```
/// use multiproc::green;
/// use std::time::Duration;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let r = green::with_timeout(Duration::from_millis(10), green::sleep(Duration::from_secs(9))).await;
/// assert!(r.is_err());
/// # });
/// ```
pub async fn with_timeout<F: Future>(duration: Duration, fut: F) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(duration, fut).await
}

struct GroupInner {
    set: Mutex<JoinSet<()>>,
    /// Members started and not yet gone, so `join` can wait.
    live: Arc<watch::Sender<u64>>,
}

/// An unbounded set of greenlets (gevent's `pool.Group`), over a
/// [`JoinSet`]. Clones share the set.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let group = multiproc::green::Group::new();
/// let squares = group.map(|n: u64| async move { n * n }, 1..=4).await;
/// assert_eq!(squares, Ok(vec![1, 4, 9, 16]));
/// # });
/// ```
#[derive(Clone)]
pub struct Group {
    inner: Arc<GroupInner>,
    permits: Option<Arc<Semaphore>>,
    size: usize,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group").field("len", &self.len()).finish()
    }
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        Group {
            inner: Arc::new(GroupInner {
                set: Mutex::new(JoinSet::new()),
                live: Arc::new(watch::channel(0).0),
            }),
            permits: None,
            size: usize::MAX,
        }
    }

    fn set(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.inner.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Greenlets of the group that have not finished.
    pub fn len(&self) -> usize {
        *self.inner.live.borrow() as usize
    }

    /// Whether no greenlet of the group is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free slots: for a [`Pool`] the greenlets it can start without
    /// waiting, for a group `usize::MAX`.
    pub fn free_count(&self) -> usize {
        match &self.permits {
            Some(p) => p.available_permits(),
            None => usize::MAX,
        }
    }

    fn spawn_with<F>(&self, permit: Option<OwnedSemaphorePermit>, fut: F) -> Greenlet<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (body, slot) = wrap(fut);
        struct Bump(Arc<watch::Sender<u64>>, Option<OwnedSemaphorePermit>);
        impl Drop for Bump {
            fn drop(&mut self) {
                drop(self.1.take());
                self.0.send_modify(|n| *n -= 1);
            }
        }
        self.inner.live.send_modify(|n| *n += 1);
        // Made outside the task body so that a task killed before its
        // first poll still counts itself out.
        let bump = Bump(self.inner.live.clone(), permit);
        let body = async move {
            let _bump = bump;
            body.await;
        };
        let mut set = self.set();
        while set.try_join_next().is_some() {}
        let abort = set.spawn(body);
        Greenlet { slot, abort }
    }

    /// Starts a greenlet in the group. On a [`Pool`] this waits for a free
    /// slot first.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting for a slot, nothing starts.
    pub async fn spawn<F>(&self, fut: F) -> Greenlet<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let permit = match &self.permits {
            Some(p) => Some(
                p.clone()
                    .acquire_owned()
                    .await
                    .expect("pool semaphore is never closed"),
            ),
            None => None,
        };
        self.spawn_with(permit, fut)
    }

    /// Runs `f` on every item in greenlets of the group and returns the
    /// results in input order (gevent's `map`).
    ///
    /// # Errors
    ///
    /// The first failure, in input order (the other greenlets run to the
    /// end).
    pub async fn map<I, F, Fut>(&self, f: F, items: I) -> Result<Vec<Fut::Output>, GreenletError>
    where
        I: IntoIterator,
        F: Fn(I::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let mut handles = Vec::new();
        for item in items {
            handles.push(self.spawn(f(item)).await);
        }
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.get().await?);
        }
        Ok(out)
    }

    /// Runs `f` on every item in greenlets of the group and yields the
    /// results as they finish (gevent's `imap_unordered`). Items are
    /// started from a feeder task, so a [`Pool`] bounds how many run.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn imap_unordered<I, F, Fut>(&self, f: F, items: I) -> ImapUnordered<Fut::Output>
    where
        I: IntoIterator + Send + 'static,
        I::IntoIter: Send,
        I::Item: Send,
        F: Fn(I::Item) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let group = self.clone();
        let feeder = spawn(async move {
            for item in items {
                let tx = tx.clone();
                let fut = f(item);
                group
                    .spawn(async move {
                        let r = CatchUnwind(Box::pin(fut)).await;
                        let _ = tx.send(r.map_err(GreenletError::Panicked));
                    })
                    .await;
            }
        });
        ImapUnordered {
            rx,
            _feeder: feeder,
        }
    }

    /// Waits until every greenlet of the group has finished, for at most
    /// `timeout`; true when the group is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn join(&self, timeout: Option<Duration>) -> bool {
        let mut rx = self.inner.live.subscribe();
        let wait = async move {
            let _ = rx.wait_for(|n| *n == 0).await;
        };
        match timeout {
            None => {
                wait.await;
                true
            }
            Some(t) => tokio::time::timeout(t, wait).await.is_ok(),
        }
    }

    /// Kills every greenlet of the group and waits until they are gone.
    pub async fn kill(&self) {
        self.set().abort_all();
        self.join(None).await;
    }
}

/// The results of [`Group::imap_unordered`], in completion order.
#[derive(Debug)]
pub struct ImapUnordered<T> {
    rx: mpsc::UnboundedReceiver<Result<T, GreenletError>>,
    _feeder: Greenlet<()>,
}

impl<T> ImapUnordered<T> {
    /// The next result to finish; `None` after the last.
    ///
    /// # Errors
    ///
    /// [`GreenletError::Panicked`] for an item whose future panicked.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no result is lost.
    pub async fn next(&mut self) -> Option<Result<T, GreenletError>> {
        self.rx.recv().await
    }
}

/// A group that runs at most `size` greenlets at once (gevent's
/// `pool.Pool`); [`spawn`](Group::spawn) waits for a free slot. It derefs
/// to [`Group`] for `spawn`, `map`, `imap_unordered`, `join`, `kill` and
/// `free_count`.
///
/// # Examples
///
/// ```
/// use multiproc::green::Pool;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let pool = Pool::new(2);
/// assert_eq!(pool.free_count(), 2);
/// let g = pool.spawn(async { 1 }).await;
/// assert_eq!(g.get().await, Ok(1));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Pool(Group);

impl Pool {
    /// A pool of `size` slots.
    ///
    /// # Panics
    ///
    /// When `size` is 0.
    pub fn new(size: usize) -> Pool {
        assert!(size > 0, "a green pool needs at least one slot");
        let mut g = Group::new();
        g.permits = Some(Arc::new(Semaphore::new(size)));
        g.size = size;
        Pool(g)
    }

    /// The number of slots.
    pub fn size(&self) -> usize {
        self.0.size
    }
}

impl std::ops::Deref for Pool {
    type Target = Group;
    fn deref(&self) -> &Group {
        &self.0
    }
}
