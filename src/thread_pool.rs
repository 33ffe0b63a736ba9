//! [`ThreadPool`]: Python's `multiprocessing.pool.ThreadPool`, the pool API
//! over threads of this process.

use crate::error::{Error, RemotePanic, Result};
use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(PartialEq, Eq, Clone, Copy)]
enum Run {
    Open,
    Closed,
    Terminated,
}

struct Queue {
    jobs: VecDeque<Job>,
    run: Run,
}

struct Inner {
    queue: Mutex<Queue>,
    cv: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pool of threads with the API of [`Pool`](crate::Pool) (Python's
/// `multiprocessing.pool.ThreadPool`).
///
/// Tasks are closures and may capture anything `Send + 'static` (an
/// `Arc`, a connection, a runtime handle): nothing is serialized and no
/// process is started. A panic in a task fails that task only
/// ([`Error::Panicked`]); the thread goes on with the next one.
///
/// Threads cannot be killed: [`terminate`](Self::terminate) drops the tasks
/// not yet started (their results fail with [`Error::PoolTerminated`]) and
/// lets the running ones finish.
///
/// # Examples
///
/// ```
/// use multiproc::ThreadPool;
/// use std::sync::Arc;
///
/// let pool = ThreadPool::new(3)?;
/// let offset = Arc::new(10);
/// let o = offset.clone();
/// assert_eq!(pool.map(move |n: u32| n + *o, 0..4)?, vec![10, 11, 12, 13]);
/// let r = pool.apply_async(move || *offset * 2)?;
/// assert_eq!(r.get()?, 20);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ThreadPool {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    size: usize,
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.size)
            .finish()
    }
}

fn panicked(p: Box<dyn std::any::Any + Send>) -> Error {
    let message = if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    let process = std::thread::current()
        .name()
        .unwrap_or("a thread pool thread")
        .to_string();
    Error::Panicked(RemotePanic {
        message,
        location: None,
        process,
    })
}

fn worker(inner: Arc<Inner>) {
    loop {
        let job = {
            let mut q = inner.lock();
            loop {
                if q.run == Run::Terminated {
                    return;
                }
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.run == Run::Closed {
                    return;
                }
                q = inner.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        job();
    }
}

impl ThreadPool {
    /// A pool of `threads` threads.
    ///
    /// # Errors
    ///
    /// [`Error::State`] for 0 threads; the OS error when a thread cannot be
    /// started.
    pub fn new(threads: usize) -> Result<ThreadPool> {
        if threads == 0 {
            return Err(Error::State("a thread pool needs at least one thread"));
        }
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                run: Run::Open,
            }),
            cv: Condvar::new(),
        });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let shared = inner.clone();
            let h = std::thread::Builder::new()
                .name(format!("ThreadPool-{i}"))
                .spawn(move || worker(shared));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let pool = ThreadPool {
                        inner,
                        threads: Mutex::new(handles),
                        size: i,
                    };
                    pool.terminate();
                    return Err(Error::Io(e));
                }
            }
        }
        Ok(ThreadPool {
            inner,
            threads: Mutex::new(handles),
            size: threads,
        })
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.size
    }

    fn submit(&self, job: Job) -> Result<()> {
        let mut q = self.inner.lock();
        if q.run != Run::Open {
            return Err(Error::State("the thread pool is closed"));
        }
        q.jobs.push_back(job);
        drop(q);
        self.inner.cv.notify_one();
        Ok(())
    }

    /// Runs `f` on a pool thread and waits for its result (Python's
    /// `apply`).
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] when `f` panicked, [`Error::State`] when the pool
    /// is closed, [`Error::PoolTerminated`].
    pub fn apply<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.apply_async(f)?.get()
    }

    /// Queues `f` and returns a handle to its result (Python's
    /// `apply_async`).
    ///
    /// # Errors
    ///
    /// [`Error::State`] when the pool is closed or terminated.
    pub fn apply_async<F, R>(&self, f: F) -> Result<ThreadResult<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let result = ThreadResult::new();
        let slot = Fill(Some(result.slot.clone()));
        self.submit(Box::new(move || {
            let mut slot = slot;
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(panicked);
            slot.set(r);
        }))?;
        Ok(result)
    }

    /// Runs `f` on every item on the pool's threads; the results in input
    /// order (Python's `map`).
    ///
    /// # Errors
    ///
    /// The first failed item's error in input order, as
    /// [`Error::Task`]` { index, source }`; [`Error::State`] when closed.
    pub fn map<F, T, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Send + 'static,
        R: Send + 'static,
    {
        self.imap(f, items)?.collect()
    }

    /// [`map`](Self::map) for functions of several arguments, each item a
    /// tuple of them (Python's `starmap`).
    ///
    /// # Errors
    ///
    /// As for [`map`](Self::map).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// let sums = pool.starmap(|a: i32, b: i32| a + b, vec![(1, 2), (3, 4)])?;
    /// assert_eq!(sums, vec![3, 7]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: StarFn<A, Output = R> + Send + Sync + 'static,
        I: IntoIterator<Item = A>,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.map(move |a| f.call(a), items)
    }

    fn spread<F, T, R, I>(&self, f: F, items: I) -> Result<ThreadIMap<R>>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Send + 'static,
        R: Send + 'static,
    {
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        let items: Vec<T> = items.into_iter().collect();
        let total = items.len();
        let mut q = self.inner.lock();
        if q.run != Run::Open {
            return Err(Error::State("the thread pool is closed"));
        }
        for (i, item) in items.into_iter().enumerate() {
            let (f, tx) = (f.clone(), tx.clone());
            q.jobs.push_back(Box::new(move || {
                let r = catch_unwind(AssertUnwindSafe(|| f(item))).map_err(panicked);
                let _ = tx.send((i, r));
            }));
        }
        drop(q);
        self.inner.cv.notify_all();
        Ok(ThreadIMap {
            rx,
            ordered: true,
            next: 0,
            total,
            early: Default::default(),
        })
    }

    /// Like [`map`](Self::map), but yields the results one by one, in input
    /// order, as they become available (Python's `imap`).
    ///
    /// # Errors
    ///
    /// [`Error::State`] when the pool is closed; each item yields its own
    /// result, a failure as [`Error::Task`]. Items dropped by
    /// [`terminate`](Self::terminate) yield [`Error::PoolTerminated`].
    pub fn imap<F, T, R, I>(&self, f: F, items: I) -> Result<ThreadIMap<R>>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Send + 'static,
        R: Send + 'static,
    {
        self.spread(f, items)
    }

    /// Like [`imap`](Self::imap), in completion order (Python's
    /// `imap_unordered`).
    ///
    /// # Errors
    ///
    /// As for [`imap`](Self::imap).
    pub fn imap_unordered<F, T, R, I>(&self, f: F, items: I) -> Result<ThreadIMap<R>>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Send + 'static,
        R: Send + 'static,
    {
        let mut it = self.spread(f, items)?;
        it.ordered = false;
        Ok(it)
    }

    /// Accepts no more tasks; the threads exit once the queued ones are
    /// done (Python's `close`).
    pub fn close(&self) {
        let mut q = self.inner.lock();
        if q.run == Run::Open {
            q.run = Run::Closed;
        }
        drop(q);
        self.inner.cv.notify_all();
    }

    /// Drops the tasks not yet started (their results fail with
    /// [`Error::PoolTerminated`]) and lets the threads exit after their
    /// current task (Python's `terminate`; a thread cannot be killed).
    pub fn terminate(&self) {
        let dropped = {
            let mut q = self.inner.lock();
            q.run = Run::Terminated;
            std::mem::take(&mut q.jobs)
        };
        self.inner.cv.notify_all();
        drop(dropped);
    }

    /// Waits for the threads to exit (Python's `join`).
    ///
    /// # Errors
    ///
    /// [`Error::State`] when the pool was neither closed nor terminated.
    pub fn join(&self) -> Result<()> {
        if self.inner.lock().run == Run::Open {
            return Err(Error::State("join() on a thread pool that is not closed"));
        }
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
        Ok(())
    }
}

impl Drop for ThreadPool {
    /// Terminates the pool (as Python's `with ThreadPool() as p:` does on
    /// exit) and waits for the running tasks.
    fn drop(&mut self) {
        self.terminate();
        let _ = self.join();
    }
}

/// Fills a result slot; one dropped unfilled (its task dropped by
/// `terminate`) fills it with `PoolTerminated`.
struct Fill<T>(Option<Arc<ResultSlot<T>>>);

impl<T> Fill<T> {
    fn set(&mut self, r: Result<T>) {
        if let Some(s) = self.0.take() {
            *s.lock() = Some(r);
            s.cv.notify_all();
        }
    }
}

impl<T> Drop for Fill<T> {
    fn drop(&mut self) {
        self.set(Err(Error::PoolTerminated));
    }
}

struct ResultSlot<T> {
    value: Mutex<Option<Result<T>>>,
    cv: Condvar,
    taken: std::sync::atomic::AtomicBool,
}

impl<T> ResultSlot<T> {
    fn lock(&self) -> MutexGuard<'_, Option<Result<T>>> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The result of [`ThreadPool::apply_async`] (Python's `AsyncResult`).
pub struct ThreadResult<T> {
    slot: Arc<ResultSlot<T>>,
}

impl<T> fmt::Debug for ThreadResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<ThreadResult ready={}>", self.ready())
    }
}

impl<T> ThreadResult<T> {
    fn new() -> Self {
        ThreadResult {
            slot: Arc::new(ResultSlot {
                value: Mutex::new(None),
                cv: Condvar::new(),
                taken: false.into(),
            }),
        }
    }

    fn take(&self, deadline: Option<Instant>) -> Result<T> {
        use std::sync::atomic::Ordering;
        let mut v = self.slot.lock();
        loop {
            if let Some(r) = v.take() {
                self.slot.taken.store(true, Ordering::Release);
                return r;
            }
            if self.slot.taken.load(Ordering::Acquire) {
                return Err(Error::State("the result was already taken"));
            }
            match deadline {
                None => v = self.slot.cv.wait(v).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout);
                    }
                    v = self
                        .slot
                        .cv
                        .wait_timeout(v, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Waits for the result and takes it.
    ///
    /// # Errors
    ///
    /// The task's [`Error::Panicked`], or [`Error::PoolTerminated`] when the
    /// task was dropped by [`ThreadPool::terminate`].
    pub fn get(self) -> Result<T> {
        self.take(None)
    }

    /// Waits at most `timeout` for the result and takes it.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when it is not ready in time (the result stays);
    /// [`Error::State`] when already taken; otherwise as for
    /// [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.take(Some(Instant::now() + timeout))
    }

    /// Waits at most `timeout` for the task to finish; true when it has.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut v = self.slot.lock();
        while v.is_none() && !self.slot.taken.load(std::sync::atomic::Ordering::Acquire) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            v = self
                .slot
                .cv
                .wait_timeout(v, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits for the task to finish.
    pub fn wait(&self) {
        let mut v = self.slot.lock();
        while v.is_none() && !self.slot.taken.load(std::sync::atomic::Ordering::Acquire) {
            v = self.slot.cv.wait(v).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether the task has finished.
    pub fn ready(&self) -> bool {
        self.slot.lock().is_some() || self.slot.taken.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the task finished without failing.
    ///
    /// # Errors
    ///
    /// [`Error::State`] when it has not finished (Python raises
    /// `ValueError`) or the result was taken.
    pub fn successful(&self) -> Result<bool> {
        match &*self.slot.lock() {
            Some(r) => Ok(r.is_ok()),
            None => Err(Error::State("the result is not ready")),
        }
    }
}

/// The results of [`ThreadPool::imap`] and
/// [`imap_unordered`](ThreadPool::imap_unordered).
pub struct ThreadIMap<R> {
    rx: mpsc::Receiver<(usize, Result<R>)>,
    ordered: bool,
    next: usize,
    total: usize,
    early: std::collections::HashMap<usize, Result<R>>,
}

impl<R> fmt::Debug for ThreadIMap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadIMap")
            .field("ordered", &self.ordered)
            .finish()
    }
}

impl<R> Iterator for ThreadIMap<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        let wrap = |i: usize, r: Result<R>| {
            r.map_err(|e| Error::Task {
                index: i,
                source: Box::new(e),
            })
        };
        if self.next >= self.total {
            return None;
        }
        if !self.ordered {
            self.next += 1;
            return Some(match self.rx.recv() {
                Ok((i, r)) => wrap(i, r),
                // Every sender is gone: the rest was dropped by `terminate`.
                Err(_) => Err(Error::PoolTerminated),
            });
        }
        loop {
            if let Some(r) = self.early.remove(&self.next) {
                self.next += 1;
                return Some(wrap(self.next - 1, r));
            }
            match self.rx.recv() {
                Ok((i, r)) => {
                    self.early.insert(i, r);
                }
                // Every sender is gone: this item was dropped by `terminate`.
                Err(_) => {
                    self.next += 1;
                    return Some(wrap(self.next - 1, Err(Error::PoolTerminated)));
                }
            }
        }
    }
}

/// A function of several arguments called with them as one tuple, for
/// [`ThreadPool::starmap`] (implemented for closures of up to six
/// arguments).
pub trait StarFn<Args> {
    /// What the function returns.
    type Output;
    /// Calls the function with the tuple's fields as arguments.
    fn call(&self, args: Args) -> Self::Output;
}

macro_rules! impl_star {
    ($($a:ident),*) => {
        impl<Func, Ret, $($a),*> StarFn<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Ret,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn call(&self, args: ($($a,)*)) -> Ret {
                let ($($a,)*) = args;
                self($($a),*)
            }
        }
    };
}

impl_star!(A1);
impl_star!(A1, A2);
impl_star!(A1, A2, A3);
impl_star!(A1, A2, A3, A4);
impl_star!(A1, A2, A3, A4, A5);
impl_star!(A1, A2, A3, A4, A5, A6);
