//! [`IMap`]: the lazy iterator of the map family, which keeps a window of
//! chunks in flight and yields results in order or as they come.

use super::backlog::Task;
use super::results::{self, IterSink, Sink};
use super::{Pool, encode_chunk};
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

type ChunkSource = Box<dyn FnMut(usize) -> Option<Result<(Vec<u8>, Vec<OwnedFd>)>>>;

/// The iterator of [`Pool::imap`], [`Pool::imap_unordered`] and
/// [`Executor::map`](crate::Executor::map): yields each result (or the error of its task, as
/// [`Error::Task`] naming the input item).
///
/// [`timeout`](Self::timeout) / [`deadline`](Self::deadline) bound the
/// whole iteration; with the `progress` feature,
/// `progress` shows a progress bar.
///
/// # Examples
/// ```
/// fn len(s: String) -> usize { s.len() }
/// let pool = multiproc::Pool::new(2)?;
/// let words = ["a", "bb", "ccc"].map(String::from);
/// let mut it = pool.imap(len, words);
/// assert_eq!(it.next().unwrap()?, 1);
/// assert_eq!(it.collect::<Result<Vec<_>, _>>()?, [2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct IMap<'p, R> {
    pool: &'p Pool,
    entry: u64,
    source: ChunkSource,
    chunksize: usize,
    sink: Arc<IterSink<R>>,
    submitted: usize,
    consumed: usize,
    exhausted: bool,
    ordered: bool,
    window: usize,
    current: std::vec::IntoIter<R>,
    deadline: Option<Instant>,
    /// The number of input items, when the input knew it.
    len: Option<usize>,
    timed_out: bool,
}

impl<R> std::fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<IMap submitted={} consumed={}>",
            self.submitted, self.consumed
        )
    }
}

impl<'p, R: DeserializeOwned + Send + 'static> IMap<'p, R> {
    pub(super) fn new<A, I>(
        pool: &'p Pool,
        entry: u64,
        mut items: I,
        chunksize: usize,
        ordered: bool,
    ) -> Self
    where
        A: Serialize + 'static,
        I: Iterator<Item = A> + 'static,
    {
        let len = match items.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let source: ChunkSource = Box::new(move |n| {
            let chunk: Vec<A> = items.by_ref().take(n).collect();
            if chunk.is_empty() {
                None
            } else {
                // An error names the item by its position in the chunk;
                // `top_up` makes it the position in the input.
                Some(encode_chunk(&chunk, 0))
            }
        });
        let window = (pool.processes * if chunksize == 1 { 32 } else { 4 }).max(2);
        IMap {
            pool,
            entry,
            source,
            chunksize,
            sink: Arc::new(IterSink::new(chunksize)),
            submitted: 0,
            consumed: 0,
            exhausted: false,
            ordered,
            window,
            current: Vec::new().into_iter(),
            deadline: None,
            len,
            timed_out: false,
        }
    }

    /// Bounds the whole iteration: once `timeout` (counted from this call)
    /// has passed, a result that is not ready yields one
    /// [`Error::Timeout`], the items not yet handed to a worker are
    /// cancelled, and the iteration ends (Python's `Executor.map(...,
    /// timeout=)`). Results that are ready are still yielded before that.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = multiproc::Pool::new(1)?;
    /// let mut it = pool.imap(nap, [0, 10_000]).timeout(Duration::from_secs(2));
    /// assert_eq!(it.next().unwrap()?, 0);
    /// assert!(it.next().unwrap().unwrap_err().is_timeout());
    /// assert!(it.next().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.deadline(d),
            None => self,
        }
    }

    /// Like [`timeout`](Self::timeout), with the end as an instant.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The number of input items, when the input's `size_hint` gave it
    /// exactly (a range, a `Vec`, an array, …); `None` otherwise.
    ///
    /// # Examples
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.imap(id, 0..10).input_len(), Some(10));
    /// assert_eq!(pool.imap(id, (0..10).filter(|x| x % 2 == 0)).input_len(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn input_len(&self) -> Option<usize> {
        self.len
    }

    fn top_up(&mut self) {
        let mut tasks: Vec<Task> = Vec::new();
        while !self.exhausted && self.submitted - self.consumed < self.window {
            let index = self.submitted;
            match (self.source)(self.chunksize) {
                None => self.exhausted = true,
                Some(Ok((payload, fds))) => {
                    tasks.push((
                        self.entry,
                        payload,
                        fds,
                        self.sink.clone() as Arc<dyn Sink>,
                        index,
                    ));
                    self.submitted += 1;
                }
                Some(Err(e)) => {
                    let e = match e {
                        Error::Task { index: bad, source } => Error::Task {
                            index: index * self.chunksize + bad,
                            source,
                        },
                        other => other,
                    };
                    self.sink.put(index, Err(e));
                    self.submitted += 1;
                }
            }
        }
        if !tasks.is_empty() {
            let indices: Vec<usize> = tasks.iter().map(|t| t.4).collect();
            if let Err(e) = self.pool.shared.submit(tasks) {
                for i in indices {
                    self.sink.put(i, Err(clone_error(&e)));
                }
                self.exhausted = true;
            }
        }
    }

    /// The deadline passed: nothing more is read or queued, and the tasks
    /// still queued are cancelled.
    fn expire(&mut self) {
        self.timed_out = true;
        self.exhausted = true;
        let sink = self.sink.clone() as Arc<dyn Sink>;
        drop(self.pool.shared.remove_pending_of(&sink));
    }
}

fn clone_error(e: &Error) -> Error {
    results::copy_error(e)
}

impl<R: DeserializeOwned + Send + 'static> Iterator for IMap<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(v) = self.current.next() {
                return Some(Ok(v));
            }
            if self.timed_out {
                return None;
            }
            if self.chunksize == 0 {
                if self.exhausted {
                    return None;
                }
                self.exhausted = true;
                return Some(Err(Error::InvalidArgument(
                    "chunksize must be at least 1".into(),
                )));
            }
            self.top_up();
            if self.consumed == self.submitted {
                return None;
            }
            let want = if self.ordered {
                Some(self.consumed)
            } else {
                None
            };
            let Some(chunk) = self.sink.take(want, self.deadline) else {
                self.expire();
                return Some(Err(Error::Timeout));
            };
            self.consumed += 1;
            match chunk {
                Ok(v) => self.current = v.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.len {
            Some(n) if !self.timed_out && self.chunksize > 0 => {
                let yielded = (self.consumed * self.chunksize).min(n);
                let left = n - yielded + self.current.len();
                (0, Some(left))
            }
            _ => (0, None),
        }
    }
}
