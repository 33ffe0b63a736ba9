//! Where task results go: [`AsyncResult`] for one value, and the sinks
//! that gather the chunks of the map family.

use super::Shared;
use crate::codec;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A finished task as the supervisor hands it over: the encoded result and
/// its handles, or the task's error.
pub(crate) type Outcome<'a> = Result<(&'a [u8], Vec<OwnedFd>)>;

/// Receives the outcome of tasks; `index` says which task of the sink.
pub(crate) trait Sink: Send + Sync {
    fn deliver(&self, index: usize, outcome: Outcome<'_>);
}

pub(crate) type OnOk<T> = Box<dyn FnOnce(&T) + Send>;
pub(crate) type OnErr = Box<dyn FnOnce(&Error) + Send>;

struct SlotState<T> {
    value: Option<Result<T>>,
    setting: bool,
    done: bool,
    taken: bool,
    on_ok: Option<OnOk<T>>,
    on_err: Option<OnErr>,
}

/// One value that will arrive, with optional callbacks.
pub(crate) struct Slot<T> {
    st: Mutex<SlotState<T>>,
    cv: Condvar,
}

impl<T> Slot<T> {
    pub(crate) fn new(on_ok: Option<OnOk<T>>, on_err: Option<OnErr>) -> Self {
        Slot {
            st: Mutex::new(SlotState {
                value: None,
                setting: false,
                done: false,
                taken: false,
                on_ok,
                on_err,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the value once (later calls are ignored): runs the callback
    /// first, then wakes the waiters, as Python does.
    pub(crate) fn set(&self, value: Result<T>) {
        let (on_ok, on_err) = {
            let mut st = self.lock();
            if st.setting {
                return;
            }
            st.setting = true;
            (st.on_ok.take(), st.on_err.take())
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &value {
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
        }));
        if run.is_err() {
            log::error!("a pool result callback panicked");
        }
        let mut st = self.lock();
        st.value = Some(value);
        st.done = true;
        drop(st);
        self.cv.notify_all();
    }

    fn wait_until(&self, deadline: Option<Instant>) -> MutexGuard<'_, SlotState<T>> {
        let mut st = self.lock();
        while !st.done {
            match deadline {
                None => st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    st = self
                        .cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        st
    }

    fn take(&self, deadline: Option<Instant>) -> Result<T> {
        let mut st = self.wait_until(deadline);
        if !st.done {
            return Err(Error::Timeout);
        }
        if st.taken {
            return Err(Error::State("the result was already taken"));
        }
        st.taken = true;
        st.value.take().expect("a finished slot holds its value")
    }
}

impl<R: DeserializeOwned + Send> Sink for Slot<R> {
    fn deliver(&self, _index: usize, outcome: Outcome<'_>) {
        self.set(outcome.and_then(|(bytes, fds)| decode_result(bytes, fds)))
    }
}

fn decode_result<R: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<R> {
    codec::decode(bytes, fds).map_err(|e| match e {
        Error::Decode(why) => Error::Decode(format!("cannot decode the task's result: {why}")),
        other => other,
    })
}

/// The result of a task submitted with [`Pool::apply_async`](super::Pool::apply_async)
/// or of a whole [`map_async`](super::Pool::map_async) (Python's
/// `AsyncResult`).
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
    pub fn get(self) -> Result<T> {
        self.slot.take(None)
    }

    /// Waits at most `timeout` for the result and takes it.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it is not ready in time (the result stays and
    /// can be waited for again); otherwise as for [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.slot.take(crate::sys::deadline_after(timeout))
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        drop(self.slot.wait_until(None));
    }

    /// Waits at most `timeout`; `true` if the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot
            .wait_until(crate::sys::deadline_after(timeout))
            .done
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.slot.lock().done
    }

    /// Whether the task finished without error.
    ///
    /// # Errors
    /// [`Error::State`] while it is not ready (Python's `ValueError`), or
    /// once the value was taken.
    pub fn successful(&self) -> Result<bool> {
        let st = self.slot.lock();
        match (&st.value, st.done) {
            (_, false) => Err(Error::State("the result is not ready")),
            (Some(v), true) => Ok(v.is_ok()),
            (None, true) => Err(Error::State("the result was already taken")),
        }
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
    slot: Arc<Slot<Vec<R>>>,
}

impl<R> MapSink<R> {
    pub(crate) fn new(chunks: usize, slot: Arc<Slot<Vec<R>>>) -> Self {
        MapSink {
            st: Mutex::new(MapState {
                chunks: (0..chunks).map(|_| None).collect(),
                remaining: chunks,
                failed: false,
            }),
            slot,
        }
    }
}

impl<R: DeserializeOwned + Send> Sink for MapSink<R> {
    fn deliver(&self, index: usize, outcome: Outcome<'_>) {
        let value = outcome.and_then(|(b, fds)| decode_result::<Vec<R>>(b, fds));
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
}

impl<R> IterSink<R> {
    pub(crate) fn new() -> Self {
        IterSink {
            st: Mutex::new(IterState {
                done: HashMap::new(),
                order: VecDeque::new(),
            }),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn put(&self, index: usize, value: Result<Vec<R>>) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.done.insert(index, value);
        st.order.push_back(index);
        drop(st);
        self.cv.notify_all();
    }

    /// Waits for chunk `index` (or, with `None`, for any chunk).
    pub(crate) fn take(&self, index: Option<usize>) -> Result<Vec<R>> {
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
                return st.done.remove(&k).expect("present");
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<R: DeserializeOwned + Send> Sink for IterSink<R> {
    fn deliver(&self, index: usize, outcome: Outcome<'_>) {
        let value = outcome.and_then(|(b, fds)| decode_result::<Vec<R>>(b, fds));
        self.put(index, value);
    }
}
