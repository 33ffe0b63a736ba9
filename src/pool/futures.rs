//! Waiting on several futures at once, as in Python's
//! `concurrent.futures`: [`wait`] with a [`ReturnWhen`] condition, and
//! [`as_completed`].
//!
//! Both take anything that is [`Watchable`]: [`TaskFuture`]s (owned or by
//! reference) and the pool's [`AsyncResult`]s, so futures with different
//! result types can be waited on together through `&dyn Watchable`.
//!
//! # Examples
//! ```
//! use multiproc::futures::{ReturnWhen, as_completed, wait};
//! use std::time::Duration;
//!
//! fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
//!
//! let ex = multiproc::Executor::new(2)?;
//! let fs: Vec<_> = [300, 10].into_iter().map(|ms| ex.submit(nap, (ms,))).collect::<Result<_, _>>()?;
//!
//! // Python: done, not_done = wait(fs, return_when=FIRST_COMPLETED)
//! let w = wait(&fs, None, ReturnWhen::FirstCompleted);
//! assert!(!w.done.is_empty());
//!
//! // Python: for f in as_completed(fs): print(f.result())
//! let mut order = Vec::new();
//! for f in as_completed(fs, Some(Duration::from_secs(60))) {
//!     order.push(f?.result()?);
//! }
//! assert_eq!(order, [10, 300]);
//! # Ok::<(), multiproc::Error>(())
//! ```

use super::AsyncResult;
pub use super::executor::TaskFuture;
use super::results::Watch;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Registration with a [`wait`] or [`as_completed`] in progress (an
/// implementation detail of [`Watchable`]).
#[doc(hidden)]
#[derive(Clone)]
pub struct Watcher(Arc<Watch>);

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Something [`wait`] and [`as_completed`] can wait on: a [`TaskFuture`],
/// an [`AsyncResult`], or a reference to one. Sealed.
pub trait Watchable: sealed::Sealed {
    /// Whether it has finished (or was cancelled).
    fn is_done(&self) -> bool;
    /// Whether it finished with an error other than [`Error::Cancelled`].
    fn is_failed(&self) -> bool;
    #[doc(hidden)]
    fn register(&self, watcher: &Watcher, position: usize);
}

impl<R> sealed::Sealed for TaskFuture<R> {}
impl<R> Watchable for TaskFuture<R> {
    fn is_done(&self) -> bool {
        self.inner.slot.done()
    }
    fn is_failed(&self) -> bool {
        self.inner.slot.failed()
    }
    fn register(&self, watcher: &Watcher, position: usize) {
        self.inner.slot.watch(&watcher.0, position)
    }
}

impl<R> sealed::Sealed for AsyncResult<R> {}
impl<R> Watchable for AsyncResult<R> {
    fn is_done(&self) -> bool {
        self.slot.done()
    }
    fn is_failed(&self) -> bool {
        self.slot.failed()
    }
    fn register(&self, watcher: &Watcher, position: usize) {
        self.slot.watch(&watcher.0, position)
    }
}

impl<T: Watchable + ?Sized> sealed::Sealed for &T {}
impl<T: Watchable + ?Sized> Watchable for &T {
    fn is_done(&self) -> bool {
        (**self).is_done()
    }
    fn is_failed(&self) -> bool {
        (**self).is_failed()
    }
    fn register(&self, watcher: &Watcher, position: usize) {
        (**self).register(watcher, position)
    }
}

/// When [`wait`] returns (Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`,
/// `ALL_COMPLETED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReturnWhen {
    /// As soon as any future has finished or was cancelled.
    FirstCompleted,
    /// As soon as any future has failed (a cancelled one does not count);
    /// when none fails, once all have finished.
    FirstException,
    /// Once every future has finished or was cancelled.
    #[default]
    AllCompleted,
}

/// What [`wait`] returns: the futures that had finished (or were
/// cancelled) when it returned, and the others, each in input order
/// (Python's `(done, not_done)`).
#[derive(Debug)]
pub struct Waited<F> {
    /// The finished or cancelled futures.
    pub done: Vec<F>,
    /// The others.
    pub not_done: Vec<F>,
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Waits until `return_when` holds for `futures`, or until `timeout` has
/// passed (`None`: no limit), and splits them into done and not done
/// (Python's `concurrent.futures.wait`). A timeout is not an error: the
/// futures still running are in `not_done`. It takes futures by value or
/// by reference and hands them back.
///
/// # Examples
/// ```
/// use multiproc::futures::{ReturnWhen, wait};
/// use std::time::Duration;
///
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// fn boom() -> u64 { panic!("boom") }
///
/// let ex = multiproc::Executor::new(2)?;
/// let slow = ex.submit(nap, (30_000,))?;
/// let bad = ex.submit(boom, ())?;
/// let w = wait([&slow, &bad], Some(Duration::from_secs(60)), ReturnWhen::FirstException);
/// assert_eq!(w.done.len(), 1);
/// assert!(w.done[0].exception().is_some());
/// let w = wait([&slow], Some(Duration::from_millis(50)), ReturnWhen::AllCompleted);
/// assert_eq!(w.not_done.len(), 1);
/// ex.kill_workers();
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait<F, I>(futures: I, timeout: Option<Duration>, return_when: ReturnWhen) -> Waited<F>
where
    I: IntoIterator<Item = F>,
    F: Watchable,
{
    let futures: Vec<F> = futures.into_iter().collect();
    let deadline = deadline_of(timeout);
    let watcher = Watcher(Watch::new());
    for (i, f) in futures.iter().enumerate() {
        f.register(&watcher, i);
    }
    let mut finished = 0usize;
    let mut failed = false;
    while finished < futures.len() {
        let enough = match return_when {
            ReturnWhen::FirstCompleted => finished > 0,
            ReturnWhen::FirstException => failed,
            ReturnWhen::AllCompleted => false,
        };
        if enough {
            break;
        }
        let got = watcher.0.take(deadline);
        if got.is_empty() {
            break;
        }
        finished += got.len();
        failed = failed || got.iter().any(|&i| futures[i].is_failed());
    }
    let (done, not_done) = futures.into_iter().partition(|f| f.is_done());
    Waited { done, not_done }
}

/// The futures of `futures` one by one as they finish (or are cancelled);
/// those already finished first (Python's `concurrent.futures.as_completed`).
///
/// `timeout` (`None`: no limit) bounds the whole iteration, counted from
/// this call: when it passes with futures still running, the iterator
/// yields one [`Error::Timeout`] (Python's `TimeoutError`) and ends;
/// [`AsCompleted::into_pending`] gives back the futures it did not yield.
///
/// # Examples
/// ```
/// use multiproc::futures::as_completed;
/// use std::time::Duration;
///
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
///
/// let ex = multiproc::Executor::new(2)?;
/// let fs = vec![ex.submit(nap, (30_000,))?, ex.submit(nap, (1,))?];
/// let mut it = as_completed(fs, Some(Duration::from_secs(2)));
/// assert_eq!(it.next().unwrap()?.result()?, 1);
/// assert!(it.next().unwrap().unwrap_err().is_timeout());
/// assert!(it.next().is_none());
/// assert_eq!(it.into_pending().len(), 1);
/// ex.kill_workers();
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn as_completed<F, I>(futures: I, timeout: Option<Duration>) -> AsCompleted<F>
where
    I: IntoIterator<Item = F>,
    F: Watchable,
{
    let futures: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let watcher = Watcher(Watch::new());
    for (i, f) in futures.iter().enumerate() {
        if let Some(f) = f {
            f.register(&watcher, i);
        }
    }
    AsCompleted {
        left: futures.len(),
        futures,
        watcher,
        ready: VecDeque::new(),
        deadline: deadline_of(timeout),
        timed_out: false,
    }
}

/// The iterator of [`as_completed`].
#[derive(Debug)]
pub struct AsCompleted<F> {
    futures: Vec<Option<F>>,
    watcher: Watcher,
    ready: VecDeque<usize>,
    left: usize,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl<F> AsCompleted<F> {
    /// The futures not yielded yet, in input order.
    pub fn into_pending(self) -> Vec<F> {
        self.futures.into_iter().flatten().collect()
    }
}

impl<F: Watchable> Iterator for AsCompleted<F> {
    type Item = Result<F>;

    fn next(&mut self) -> Option<Result<F>> {
        if self.left == 0 || self.timed_out {
            return None;
        }
        loop {
            while let Some(i) = self.ready.pop_front() {
                if let Some(f) = self.futures[i].take() {
                    self.left -= 1;
                    return Some(Ok(f));
                }
            }
            let got = self.watcher.0.take(self.deadline);
            if got.is_empty() {
                self.timed_out = true;
                return Some(Err(Error::Timeout));
            }
            self.ready.extend(got);
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.timed_out {
            (0, Some(0))
        } else {
            (0, Some(self.left + 1))
        }
    }
}
