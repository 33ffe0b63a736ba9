//! The map family of [`Pool`]: `map`, `starmap`, `imap` and their
//! chunked, asynchronous and unordered forms.

use super::backlog::{State, Task};
use super::imap::IMap;
use super::results::{self, MapSink, Sink, Slot};
use super::worker::{self, TaskEntry, task_entry_offset};
use super::{AsyncResult, Pool, check_chunksize, encode_chunk};
use crate::error::{Error, Result};
use crate::process::Target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

impl Pool {
    pub(super) fn map_tasks<F, A, R>(
        &self,
        args: Vec<A>,
        chunksize: Option<usize>,
        on_ok: Option<results::OnOk<Vec<R>>>,
        on_err: Option<results::OnErr>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_tasks_measured::<F, A, R>(args, chunksize, on_ok, on_err, true)
    }

    /// [`map_tasks`](Self::map_tasks); `usage` says whether the caller
    /// will see the tasks' resource use (a plain `map` returns only the
    /// list, so its workers need not measure it).
    fn map_tasks_measured<F, A, R>(
        &self,
        args: Vec<A>,
        chunksize: Option<usize>,
        on_ok: Option<results::OnOk<Vec<R>>>,
        on_err: Option<results::OnErr>,
        usage: bool,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, Output = R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let chunksize = match chunksize {
            Some(c) => check_chunksize(c)?,
            None => args.len().div_ceil(self.processes * 4).max(1),
        };
        let slot = Arc::new(Slot::new(on_ok, on_err));
        if args.is_empty() {
            self.check_running()?;
            slot.set(Ok(Vec::new()));
            return Ok(AsyncResult {
                slot,
                ids: Vec::new(),
                shared: self.shared.clone(),
            });
        }
        let entry = task_entry_offset(worker::chunk_entry::<F, A, R> as TaskEntry);
        let chunks = args.len().div_ceil(chunksize);
        let sink: Arc<dyn Sink> = Arc::new(MapSink::new(chunks, chunksize, slot.clone(), usage));
        let mut tasks: Vec<Task> = Vec::with_capacity(chunks);
        for (i, chunk) in args.chunks(chunksize).enumerate() {
            let (payload, fds) = encode_chunk(chunk, i * chunksize)?;
            tasks.push((entry, payload, fds, sink.clone(), i));
        }
        let ids = self.shared.submit(tasks)?;
        Ok(AsyncResult {
            slot,
            ids,
            shared: self.shared.clone(),
        })
    }

    fn check_running(&self) -> Result<()> {
        let q = self.shared.lock();
        if let Some(why) = &q.broken {
            return Err(Error::PoolBroken(why.clone()));
        }
        if q.state != State::Running {
            return Err(Error::State(
                "the pool is not running (closed or terminated)",
            ));
        }
        Ok(())
    }

    /// Applies `f` to every item and returns the results in order. The
    /// items are cut into chunks of about `len / (4 * processes)`; each
    /// chunk is one task.
    ///
    /// # Errors
    /// [`Error::State`] after close or terminate; otherwise the first error
    /// of any item, as [`Error::Task`] with the item's index in the input
    /// and the task's own error inside: [`Error::Encode`] when an item
    /// cannot be encoded (nothing is queued), [`Error::Panicked`],
    /// [`Error::WorkerLost`], [`Error::TaskTimeout`], … Match on
    /// [`Error::root`] to look at the task's error whichever item it was.
    /// Errors of the pool as a whole ([`Error::PoolTerminated`],
    /// [`Error::PoolBroken`]) are not wrapped.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Error;
    /// fn square(x: i64) -> i64 { x * x }
    /// fn inverse(x: i64) -> i64 { 100 / x }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.map(square, 0..10)?, (0..10).map(|x| x * x).collect::<Vec<_>>());
    /// assert!(pool.map(square, Vec::new())?.is_empty());
    ///
    /// let err = pool.map(inverse, [5, 4, 0, 2]).unwrap_err();
    /// assert!(matches!(&err, Error::Task { index: 2, source } if source.panic().is_some()));
    /// assert!(matches!(err.root(), Error::Panicked(_)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<F, T, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let args: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.map_tasks_measured::<F, (T,), R>(args, None, None, None, false)?
            .get()
    }

    /// [`map`](Self::map) with an explicit chunk size.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a chunk size of 0; otherwise as for
    /// [`map`](Self::map).
    ///
    /// # Examples
    /// ```
    /// fn inc(x: u32) -> u32 { x + 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(inc, 0..100, 20)?, (1..=100).collect::<Vec<_>>());
    /// assert!(pool.map_chunked(inc, 0..3, 0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_chunked<F, T, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let args: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.map_tasks_measured::<F, (T,), R>(args, Some(chunksize), None, None, false)?
            .get()
    }

    /// Queues a [`map`](Self::map) and returns a handle to the whole list.
    ///
    /// # Errors
    /// As for [`map`](Self::map), except that task errors come from the
    /// handle.
    ///
    /// # Examples
    /// ```
    /// fn neg(x: i32) -> i32 { -x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let r = pool.map_async(neg, [1, 2, 3])?;
    /// assert_eq!(r.get()?, [-1, -2, -3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<F, T, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let args: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.map_tasks::<F, (T,), R>(args, None, None, None)
    }

    /// [`map_async`](Self::map_async) with a chunk size (`None`: the
    /// default) and callbacks: `on_ok` gets the whole list once, `on_err`
    /// the first error.
    ///
    /// # Errors
    /// As for [`map_chunked`](Self::map_chunked).
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// fn inc(x: u8) -> u8 { x + 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// let r = pool.map_async_with(inc, [1, 2], Some(1), move |v| s.lock().unwrap().extend_from_slice(v), |_| ())?;
    /// r.wait();
    /// assert_eq!(*seen.lock().unwrap(), [2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async_with<F, T, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
        on_ok: impl FnOnce(&Vec<R>) + Send + 'static,
        on_err: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let args: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.map_tasks::<F, (T,), R>(
            args,
            chunksize,
            Some(Box::new(on_ok)),
            Some(Box::new(on_err)),
        )
    }

    /// Like [`map`](Self::map) for functions of several arguments: each
    /// item is an argument tuple (Python's `starmap`).
    ///
    /// # Errors
    /// As for [`map`](Self::map).
    ///
    /// # Examples
    /// ```
    /// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap(pow, [(2, 3), (3, 2)])?, [8, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Target<A, Output = R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async(f, items, None)?.get()
    }

    /// [`starmap`](Self::starmap) with `chunksize` items per task (instead
    /// of about `len / (4 * processes)`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a chunk size of 0; otherwise as for
    /// [`map`](Self::map).
    ///
    /// # Examples
    /// ```
    /// fn sub(a: i32, b: i32) -> i32 { a - b }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap_chunked(sub, [(5, 1), (9, 2), (1, 1)], 2)?, [4, 7, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_chunked<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Target<A, Output = R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async(f, items, Some(chunksize))?.get()
    }

    /// Queues a [`starmap`](Self::starmap) (chunk size `None`: the default).
    ///
    /// # Errors
    /// As for [`map_async`](Self::map_async).
    ///
    /// # Examples
    /// ```
    /// fn mul(a: i32, b: i32) -> i32 { a * b }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap_async(mul, [(2, 3), (4, 5)], Some(1))?.get()?, [6, 20]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Target<A, Output = R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.map_tasks::<F, A, R>(items.into_iter().collect(), chunksize, None, None)
    }

    /// A lazy, ordered [`map`](Self::map): the input is read as results are
    /// consumed, with a bounded number of tasks in flight; each item is one
    /// task. Yields `Err` for an item whose task failed, and goes on.
    ///
    /// # Examples
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// // An endless input: only what is consumed (plus a bounded window) is read.
    /// let first: Vec<u64> = pool.imap(square, 0..).take(5).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4, 9, 16]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<F, T, R, I>(&self, f: F, items: I) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_chunked(f, items, 1)
    }

    /// [`imap`](Self::imap) with `chunksize` items per task; a failed chunk
    /// yields one `Err`. A chunk size of 0 yields one
    /// [`Error::InvalidArgument`].
    ///
    /// # Examples
    /// ```
    /// fn inc(x: u32) -> u32 { x + 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// let v: Vec<u32> = pool.imap_chunked(inc, 0..100, 10).collect::<Result<_, _>>()?;
    /// assert_eq!(v, (1..=100).collect::<Vec<_>>());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_chunked<F, T, R, I>(&self, f: F, items: I, chunksize: usize) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_with(f, items, chunksize, true)
    }

    /// Like [`imap`](Self::imap), yielding results as they finish.
    ///
    /// # Examples
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let mut v: Vec<u64> = pool.imap_unordered(square, 0..10).collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, (0..10).map(|x| x * x).collect::<Vec<_>>());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<F, T, R, I>(&self, f: F, items: I) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_unordered_chunked(f, items, 1)
    }

    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` items per
    /// task.
    ///
    /// # Examples
    /// ```
    /// fn twice(x: u32) -> u32 { 2 * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let sum: u32 = pool.imap_unordered_chunked(twice, 0..100, 7).map(|r| r.unwrap()).sum();
    /// assert_eq!(sum, 9900);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered_chunked<F, T, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_with(f, items, chunksize, false)
    }

    /// The imap family: `f` over `items`, `chunksize` items per task, in
    /// input order or as they finish.
    fn imap_with<F, T, R, I>(&self, f: F, items: I, chunksize: usize, ordered: bool) -> IMap<'_, R>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'static,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let entry = task_entry_offset(worker::chunk_entry::<F, (T,), R> as TaskEntry);
        IMap::new(
            self,
            entry,
            items.into_iter().map(|x| (x,)),
            chunksize,
            ordered,
        )
    }
}
