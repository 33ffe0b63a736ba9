//! Where task results go: [`AsyncResult`] for one value, and the sinks
//! that gather the chunks of the map family.

use super::backlog::Shared;
use crate::codec;
use crate::error::{Error, RemotePanic, Result};
use crate::process::limits::ResourceUsage;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// A finished task as the supervisor hands it over: the encoded result and
/// its handles, or the task's error.
pub(crate) type Outcome<'a> = Result<(&'a [u8], Vec<OwnedFd>)>;

/// Receives the outcome of tasks; `index` says which task of the sink.
pub(crate) trait Sink: Send + Sync {
    fn deliver(&self, index: usize, outcome: Outcome<'_>);

    /// What task `index` used; called before its [`deliver`](Self::deliver).
    fn record_usage(&self, index: usize, usage: ResourceUsage) {
        let _ = (index, usage);
    }

    /// Whether the caller can see what the tasks used (otherwise the
    /// workers do not measure it, unless a CPU limit per task needs it).
    fn wants_usage(&self) -> bool {
        false
    }
}

pub(crate) type OnOk<T> = Box<dyn FnOnce(&T) + Send>;
pub(crate) type OnErr = Box<dyn FnOnce(&Error) + Send>;
pub(crate) type OnDone<T> = Box<dyn FnOnce(std::result::Result<&T, &Error>) + Send>;

/// What a chunk task of the map family reports: the results of its items,
/// or the position in the chunk of the item that panicked and its panic.
pub(crate) type ChunkOut<R> = std::result::Result<Vec<R>, (u64, RemotePanic)>;

/// Waits once on `cv` (no longer than until `deadline`, if any) and says
/// whether the deadline had already passed, in which case it does not wait.
fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> (MutexGuard<'a, T>, bool) {
    let Some(d) = deadline else {
        return (cv.wait(guard).unwrap_or_else(|e| e.into_inner()), false);
    };
    let now = Instant::now();
    if now >= d {
        return (guard, true);
    }
    let guard = cv
        .wait_timeout(guard, d - now)
        .unwrap_or_else(|e| e.into_inner())
        .0;
    (guard, false)
}

/// Told the position it was registered with when a watched slot finishes
/// (for `futures::wait` and `futures::as_completed`).
pub(crate) struct Watch {
    done: Mutex<Vec<usize>>,
    cv: Condvar,
}

impl Watch {
    pub(crate) fn new() -> Arc<Watch> {
        Arc::new(Watch {
            done: Mutex::new(Vec::new()),
            cv: Condvar::new(),
        })
    }

    fn push(&self, pos: usize) {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pos);
        self.cv.notify_all();
    }

    /// Waits until at least one position is reported or `deadline` passes,
    /// and takes the reported positions (in completion order).
    pub(crate) fn take(&self, deadline: Option<Instant>) -> Vec<usize> {
        let mut st = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while st.is_empty() {
            let passed;
            (st, passed) = wait_until(&self.cv, st, deadline);
            if passed {
                break;
            }
        }
        std::mem::take(&mut *st)
    }
}

struct SlotState<T> {
    value: Option<Result<T>>,
    setting: bool,
    done: bool,
    taken: bool,
    /// The value is lent to a done callback added after completion.
    lent: bool,
    /// Finished with an error other than [`Error::Cancelled`].
    failed: bool,
    cancelled: bool,
    on_ok: Option<OnOk<T>>,
    on_err: Option<OnErr>,
    on_done: Vec<OnDone<T>>,
    watchers: Vec<(Weak<Watch>, usize)>,
    /// What the task (or, for a map, its tasks together) used.
    usage: Option<ResourceUsage>,
}

/// One value that will arrive, with optional callbacks.
pub(crate) struct Slot<T> {
    st: Mutex<SlotState<T>>,
    cv: Condvar,
}

fn run_callback(what: &str, body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        log::error!("a pool {what} callback panicked; the panic was caught and ignored");
    }
}

impl<T> Slot<T> {
    pub(crate) fn new(on_ok: Option<OnOk<T>>, on_err: Option<OnErr>) -> Self {
        Slot {
            st: Mutex::new(SlotState {
                value: None,
                setting: false,
                done: false,
                taken: false,
                lent: false,
                failed: false,
                cancelled: false,
                on_ok,
                on_err,
                on_done: Vec::new(),
                watchers: Vec::new(),
                usage: None,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds what one of its tasks used (CPU times add up, the peak is the
    /// largest).
    pub(crate) fn add_usage(&self, usage: ResourceUsage) {
        let mut st = self.lock();
        match &mut st.usage {
            Some(u) => u.merge(usage),
            None => st.usage = Some(usage),
        }
    }

    pub(crate) fn usage(&self) -> Option<ResourceUsage> {
        self.lock().usage
    }

    /// Sets the value once (later calls are ignored): runs the callbacks
    /// first, then wakes the waiters, as Python does for `AsyncResult`.
    pub(crate) fn set(&self, value: Result<T>) {
        let (on_ok, on_err, on_done) = {
            let mut st = self.lock();
            if st.setting {
                return;
            }
            st.setting = true;
            (
                st.on_ok.take(),
                st.on_err.take(),
                std::mem::take(&mut st.on_done),
            )
        };
        run_callback("result", || match &value {
            Ok(v) => {
                if let Some(cb) = on_ok {
                    cb(v)
                }
            }
            Err(e) => {
                if let Some(cb) = on_err {
                    cb(e)
                }
            }
        });
        for cb in on_done {
            run_callback("done", || cb(value.as_ref()));
        }
        let mut st = self.lock();
        st.cancelled = matches!(value, Err(Error::Cancelled));
        st.failed = value.is_err() && !st.cancelled;
        st.value = Some(value);
        st.done = true;
        let watchers = std::mem::take(&mut st.watchers);
        drop(st);
        self.cv.notify_all();
        for (w, pos) in watchers {
            if let Some(w) = w.upgrade() {
                w.push(pos);
            }
        }
    }

    /// Runs `cb` with the outcome once the slot is set: at once (on this
    /// thread) when it already is, otherwise on the thread that sets it.
    pub(crate) fn add_done_callback(&self, cb: OnDone<T>) {
        let mut st = self.lock();
        if !st.setting {
            st.on_done.push(cb);
            return;
        }
        while !st.done || st.lent {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let Some(value) = st.value.take() else {
            drop(st);
            let taken = Error::State("the result was already taken");
            run_callback("done", || cb(Err(&taken)));
            return;
        };
        st.lent = true;
        drop(st);
        run_callback("done", || cb(value.as_ref()));
        let mut st = self.lock();
        st.value = Some(value);
        st.lent = false;
        drop(st);
        self.cv.notify_all();
    }

    /// Reports `pos` to `watch` when the slot is set (at once if it is).
    pub(crate) fn watch(&self, watch: &Arc<Watch>, pos: usize) {
        let mut st = self.lock();
        if st.done {
            drop(st);
            watch.push(pos);
            return;
        }
        st.watchers.retain(|(w, _)| w.strong_count() > 0);
        st.watchers.push((Arc::downgrade(watch), pos));
    }

    fn wait_until(&self, deadline: Option<Instant>) -> MutexGuard<'_, SlotState<T>> {
        let mut st = self.lock();
        while !st.done || st.lent {
            let passed;
            (st, passed) = wait_until(&self.cv, st, deadline);
            if passed {
                break;
            }
        }
        st
    }

    fn take(&self, deadline: Option<Instant>) -> Result<T> {
        let mut st = self.wait_until(deadline);
        if !st.done || st.lent {
            return Err(Error::Timeout);
        }
        if st.taken {
            return Err(Error::State("the result was already taken"));
        }
        st.taken = true;
        st.value.take().expect("a finished slot holds its value")
    }

    /// Waits until the slot is set or `deadline` passes; `true` if set.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        self.wait_until(deadline).done
    }

    pub(crate) fn done(&self) -> bool {
        self.lock().done
    }

    pub(crate) fn failed(&self) -> bool {
        self.lock().failed
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// A copy of the error the slot was set to, once it is set.
    fn error(&self, deadline: Option<Instant>) -> Result<Option<Error>> {
        let st = self.wait_until(deadline);
        if !st.done || st.lent {
            return Err(Error::Timeout);
        }
        Ok(match &st.value {
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(copy_error(e)),
            None if st.failed || st.cancelled => Some(Error::State("the result was already taken")),
            None => None,
        })
    }
}

pub(crate) use crate::error::copy_error;

/// Names the input item an error of the map family belongs to. Errors of
/// the pool as a whole (terminated, broken, closed, cancelled) stay as they
/// are.
pub(crate) fn at_item(index: usize, e: Error) -> Error {
    match e {
        Error::Panicked(_)
        | Error::WorkerLost { .. }
        | Error::TaskTimeout(_)
        | Error::LimitExceeded { .. }
        | Error::Encode(_)
        | Error::Decode(_)
        | Error::Bootstrap(_) => Error::Task {
            index,
            source: Box::new(e),
        },
        other => other,
    }
}

impl<R: DeserializeOwned + Send> Sink for Slot<R> {
    fn deliver(&self, _index: usize, outcome: Outcome<'_>) {
        self.set(outcome.and_then(|(bytes, fds)| decode_result(bytes, fds)))
    }

    fn record_usage(&self, _index: usize, usage: ResourceUsage) {
        self.add_usage(usage);
    }

    fn wants_usage(&self) -> bool {
        true
    }
}

fn decode_result<R: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<R> {
    codec::decode(bytes, fds).map_err(|e| match e {
        Error::Decode(why) => Error::Decode(format!("cannot decode the task's result: {why}")),
        other => other,
    })
}

/// Decodes the outcome of chunk `chunk` of `chunksize` items: its results,
/// or the error named by the index of the item it belongs to (the item that
/// panicked, or the chunk's first item for a fault of the whole chunk).
fn decode_chunk<R: DeserializeOwned>(
    chunk: usize,
    chunksize: usize,
    outcome: Outcome<'_>,
) -> Result<Vec<R>> {
    let first = chunk.saturating_mul(chunksize);
    let out = outcome.and_then(|(b, fds)| decode_result::<ChunkOut<R>>(b, fds));
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err((k, p))) => Err(at_item(
            first.saturating_add(usize::try_from(k).unwrap_or(usize::MAX)),
            Error::Panicked(p),
        )),
        Err(e) => Err(at_item(first, e)),
    }
}

/// The result of a task submitted with [`Pool::apply_async`](super::Pool::apply_async)
/// or of a whole [`map_async`](super::Pool::map_async) (Python's
/// `AsyncResult`).
///
/// The waiting operations come in crossbeam's forms: `get` / `wait` block,
/// `try_get` does not, `*_timeout` waits at most a duration and
/// `*_deadline` until an instant.
///
/// # Examples
/// ```
/// fn add(a: i32, b: i32) -> i32 { a + b }
///
/// let pool = multiproc::Pool::new(2)?;
/// let r = pool.apply_async(add, (2, 3))?;
/// r.wait();
/// assert!(r.ready());
/// assert!(r.successful()?);
/// assert_eq!(r.get()?, 5);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsyncResult<T> {
    pub(crate) slot: Arc<Slot<T>>,
    pub(crate) ids: Vec<u64>,
    pub(crate) shared: Arc<Shared>,
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<AsyncResult ready={}>", self.ready())
    }
}

impl<T> AsyncResult<T> {
    /// Waits for the result and takes it.
    ///
    /// # Errors
    /// The task's error: [`Error::Panicked`] with the panic's message,
    /// [`Error::WorkerLost`] naming the signal or exit code of a worker that
    /// died running it, [`Error::TaskTimeout`], [`Error::Encode`] /
    /// [`Error::Decode`] for a result that could not travel,
    /// [`Error::PoolTerminated`], [`Error::Cancelled`]; [`Error::State`] when
    /// the result was already taken by [`get_timeout`](Self::get_timeout).
    /// For a whole `map_async`, a task's error is wrapped in
    /// [`Error::Task`] naming the input item it belongs to.
    pub fn get(self) -> Result<T> {
        self.slot.take(None)
    }

    /// Takes the result if it is ready, without waiting.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it is not ready (the result stays and can be
    /// waited for again); otherwise as for [`get`](Self::get).
    ///
    /// # Examples
    /// ```
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(nap, (200,))?;
    /// assert!(r.try_get().unwrap_err().is_timeout());
    /// r.wait();
    /// assert_eq!(r.try_get()?, 200);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.slot.take(Some(Instant::now()))
    }

    /// Waits at most `timeout` for the result and takes it.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it is not ready in time (the result stays and
    /// can be waited for again); otherwise as for [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.slot.take(Instant::now().checked_add(timeout))
    }

    /// Waits until `deadline` at the latest for the result and takes it.
    ///
    /// # Errors
    /// As for [`get_timeout`](Self::get_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// fn one() -> u8 { 1 }
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(one, ())?;
    /// assert_eq!(r.get_deadline(Instant::now() + Duration::from_secs(30))?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_deadline(&self, deadline: Instant) -> Result<T> {
        self.slot.take(Some(deadline))
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        self.slot.wait(None);
    }

    /// Waits at most `timeout`; `true` if the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Instant::now().checked_add(timeout))
    }

    /// Waits until `deadline` at the latest; `true` if the result is ready.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// fn nap() { std::thread::sleep(Duration::from_secs(5)) }
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(nap, ())?;
    /// assert!(!r.wait_deadline(Instant::now() + Duration::from_millis(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.slot.wait(Some(deadline))
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.slot.done()
    }

    /// What the task used, once it has finished (also when it failed):
    /// its CPU time (user + system) and the peak resident memory of its
    /// worker while it ran. For a whole `map_async`, the CPU times of its
    /// chunks added up and the largest peak. `None` before it finished, or
    /// when it never ran (cancelled, pool terminated).
    ///
    /// The worker's peak-memory mark is reset (Linux 4.0 and later) before
    /// a task whenever the task before it moved the mark, so the peak is
    /// the largest of what the worker held when the task started, what the
    /// task reached, and, after a run of tasks with the same peak, that
    /// peak. The CPU time includes the worker's own few microseconds of
    /// handling per task. A worker started with
    /// [`StartMethod::Spawn`](crate::StartMethod::Spawn) never reports less
    /// than the peak of the program it was started from, which the kernel
    /// counts for the new program. When the task's worker died (a limit,
    /// a signal), the figures are those of the worker's whole life.
    ///
    /// # Examples
    /// ```
    /// fn fill(mib: usize) -> usize {
    ///     let v = vec![1u8; mib << 20];
    ///     std::hint::black_box(v).len()
    /// }
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(fill, (64,))?;
    /// r.wait();
    /// let used = r.usage().expect("finished");
    /// assert!(used.peak_rss >= 64 << 20);
    /// assert_eq!(r.get()?, 64 << 20);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn usage(&self) -> Option<ResourceUsage> {
        if !self.slot.done() {
            return None;
        }
        self.slot.usage()
    }

    /// Whether the task finished without error (still answered after the
    /// value was taken).
    ///
    /// # Errors
    /// [`Error::State`] while it is not ready (Python's `ValueError`).
    pub fn successful(&self) -> Result<bool> {
        let st = self.slot.lock();
        if !st.done {
            return Err(Error::State("the result is not ready"));
        }
        Ok(!st.failed && !st.cancelled)
    }

    /// Cancels the task if it has not been handed to a worker yet; `true`
    /// when it was cancelled (its result is then [`Error::Cancelled`]).
    pub fn cancel(&self) -> bool {
        if self.ids.is_empty() {
            return false;
        }
        let removed = self.shared.remove_pending(&self.ids);
        if removed.is_empty() {
            return false;
        }
        self.slot.set(Err(Error::Cancelled));
        drop(removed);
        true
    }

    /// Whether every task of this result has been handed to a worker and
    /// the result is not ready yet (so it can no longer be cancelled).
    pub(crate) fn running(&self) -> bool {
        !self.slot.done() && !self.ids.is_empty() && !self.shared.any_pending(&self.ids)
    }

    /// Waits (until `deadline`) and copies the error, if any.
    pub(crate) fn error(&self, deadline: Option<Instant>) -> Result<Option<Error>> {
        self.slot.error(deadline)
    }
}

struct MapState<R> {
    chunks: Vec<Option<Vec<R>>>,
    remaining: usize,
    failed: bool,
}

/// Gathers the chunks of one `map_async` into its slot; the first error
/// fails the whole map at once.
pub(crate) struct MapSink<R> {
    st: Mutex<MapState<R>>,
    chunksize: usize,
    slot: Arc<Slot<Vec<R>>>,
    /// The caller holds the map's `AsyncResult` (not a plain `map`).
    usage: bool,
}

impl<R> MapSink<R> {
    pub(crate) fn new(
        chunks: usize,
        chunksize: usize,
        slot: Arc<Slot<Vec<R>>>,
        usage: bool,
    ) -> Self {
        MapSink {
            usage,
            st: Mutex::new(MapState {
                chunks: (0..chunks).map(|_| None).collect(),
                remaining: chunks,
                failed: false,
            }),
            chunksize,
            slot,
        }
    }
}

impl<R: DeserializeOwned + Send> Sink for MapSink<R> {
    fn record_usage(&self, _index: usize, usage: ResourceUsage) {
        self.slot.add_usage(usage);
    }

    fn wants_usage(&self) -> bool {
        self.usage
    }

    fn deliver(&self, index: usize, outcome: Outcome<'_>) {
        let value = decode_chunk::<R>(index, self.chunksize, outcome);
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Err(e) => {
                st.remaining -= 1;
                if !st.failed {
                    st.failed = true;
                    drop(st);
                    self.slot.set(Err(e));
                }
            }
            Ok(v) => {
                st.chunks[index] = Some(v);
                st.remaining -= 1;
                if st.remaining == 0 && !st.failed {
                    let all: Vec<R> = st.chunks.drain(..).flatten().flatten().collect();
                    drop(st);
                    self.slot.set(Ok(all));
                }
            }
        }
    }
}

struct IterState<R> {
    done: HashMap<usize, Result<Vec<R>>>,
    order: VecDeque<usize>,
}

/// Gathers the chunks of an `imap`, to be taken in order or as they come.
pub(crate) struct IterSink<R> {
    st: Mutex<IterState<R>>,
    cv: Condvar,
    chunksize: usize,
}

impl<R> IterSink<R> {
    pub(crate) fn new(chunksize: usize) -> Self {
        IterSink {
            st: Mutex::new(IterState {
                done: HashMap::new(),
                order: VecDeque::new(),
            }),
            cv: Condvar::new(),
            chunksize,
        }
    }

    pub(crate) fn put(&self, index: usize, value: Result<Vec<R>>) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.done.insert(index, value);
        st.order.push_back(index);
        drop(st);
        self.cv.notify_all();
    }

    /// Waits for chunk `index` (or, with `None`, for any chunk) until
    /// `deadline`; `None` when it passes first.
    pub(crate) fn take(
        &self,
        index: Option<usize>,
        deadline: Option<Instant>,
    ) -> Option<Result<Vec<R>>> {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let key = match index {
                Some(i) if st.done.contains_key(&i) => Some(i),
                Some(_) => None,
                None => st.order.front().copied(),
            };
            if let Some(k) = key {
                if let Some(pos) = st.order.iter().position(|&x| x == k) {
                    st.order.remove(pos);
                }
                return st.done.remove(&k);
            }
            let passed;
            (st, passed) = wait_until(&self.cv, st, deadline);
            if passed {
                return None;
            }
        }
    }
}

impl<R: DeserializeOwned + Send> Sink for IterSink<R> {
    fn deliver(&self, index: usize, outcome: Outcome<'_>) {
        let value = decode_chunk::<R>(index, self.chunksize, outcome);
        self.put(index, value);
    }
}
