//! Contexts (Python's `get_context`): a start method, and factories for
//! every object of the crate. The top of the layers: it names processes,
//! pools, queues, locks and shared memory alike.

use crate::connection::{Connection, Pipe};
use crate::error::Result;
use crate::pool::{Pool, PoolBuilder};
use crate::process::{Process, Run, StartMethod, Target};
use crate::queue::{JoinableQueue, Queue, SimpleQueue};
use crate::shm::{Array, RawArray, RawValue, ShmSafe, Value};
use crate::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    pub fn pool(&self, processes: usize) -> Result<Pool> {
        self.pool_builder().processes(processes).build()
    }

    /// A pool builder preset to this context's method, for the other
    /// options (initializer, `maxtasksperchild`, …).
    pub fn pool_builder(&self) -> PoolBuilder {
        Pool::builder().start_method(self.method)
    }

    /// A [`Pipe`](crate::Pipe) (Python's `ctx.Pipe()`); the start method
    /// does not matter to it.
    ///
    /// # Errors
    /// As [`Pipe::new`](crate::Pipe::new).
    pub fn pipe(&self) -> Result<(Connection, Connection)> {
        Pipe::new()
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
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> Result<Queue<T>> {
        Queue::new()
    }

    /// A [`Queue`](crate::Queue) of at most `maxsize` items (Python's
    /// `ctx.Queue(maxsize)`).
    ///
    /// # Errors
    /// As [`Queue::with_maxsize`](crate::Queue::with_maxsize).
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<Queue<T>> {
        Queue::with_maxsize(maxsize)
    }

    /// A [`SimpleQueue`](crate::SimpleQueue) (Python's `ctx.SimpleQueue()`).
    ///
    /// # Errors
    /// As [`SimpleQueue::new`](crate::SimpleQueue::new).
    pub fn simple_queue<T: Serialize + DeserializeOwned>(&self) -> Result<SimpleQueue<T>> {
        SimpleQueue::new()
    }

    /// A [`JoinableQueue`](crate::JoinableQueue) (Python's
    /// `ctx.JoinableQueue()`).
    ///
    /// # Errors
    /// As [`JoinableQueue::new`](crate::JoinableQueue::new).
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(&self) -> Result<JoinableQueue<T>> {
        JoinableQueue::new()
    }

    /// A [`Lock`](crate::Lock) (Python's `ctx.Lock()`).
    ///
    /// # Errors
    /// As [`Lock::new`](crate::Lock::new).
    pub fn lock(&self) -> Result<Lock> {
        Lock::new()
    }

    /// An [`RLock`](crate::RLock) (Python's `ctx.RLock()`).
    ///
    /// # Errors
    /// As [`RLock::new`](crate::RLock::new).
    pub fn rlock(&self) -> Result<RLock> {
        RLock::new()
    }

    /// A [`Condition`](crate::Condition) with its own lock (Python's
    /// `ctx.Condition()`).
    ///
    /// # Errors
    /// As [`Condition::new`](crate::Condition::new).
    pub fn condition(&self) -> Result<Condition> {
        Condition::new()
    }

    /// A [`Semaphore`](crate::Semaphore) (Python's `ctx.Semaphore(value)`).
    ///
    /// # Errors
    /// As [`Semaphore::new`](crate::Semaphore::new).
    pub fn semaphore(&self, value: u32) -> Result<Semaphore> {
        Semaphore::new(value)
    }

    /// A [`BoundedSemaphore`](crate::BoundedSemaphore) (Python's
    /// `ctx.BoundedSemaphore(value)`).
    ///
    /// # Errors
    /// As [`BoundedSemaphore::new`](crate::BoundedSemaphore::new).
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphore> {
        BoundedSemaphore::new(value)
    }

    /// An [`Event`](crate::Event) (Python's `ctx.Event()`).
    ///
    /// # Errors
    /// As [`Event::new`](crate::Event::new).
    pub fn event(&self) -> Result<Event> {
        Event::new()
    }

    /// A [`Barrier`](crate::Barrier) for `parties` (Python's
    /// `ctx.Barrier(parties)`).
    ///
    /// # Errors
    /// As [`Barrier::new`](crate::Barrier::new).
    pub fn barrier(&self, parties: u32) -> Result<Barrier> {
        Barrier::new(parties)
    }

    /// A [`Value`](crate::Value) with its lock (Python's
    /// `ctx.Value(typecode, value)`).
    ///
    /// # Errors
    /// As [`Value::new`](crate::Value::new).
    pub fn value<T: ShmSafe>(&self, value: T) -> Result<Value<T>> {
        Value::new(value)
    }

    /// An [`Array`](crate::Array) of `len` zeroed elements with its lock
    /// (Python's `ctx.Array(typecode, size)`).
    ///
    /// # Errors
    /// As [`Array::new`](crate::Array::new).
    pub fn array<T: ShmSafe>(&self, len: usize) -> Result<Array<T>> {
        Array::new(len)
    }

    /// A [`RawValue`](crate::RawValue) (Python's `ctx.RawValue(...)`).
    ///
    /// # Errors
    /// As [`RawValue::new`](crate::RawValue::new).
    pub fn raw_value<T: ShmSafe>(&self, value: T) -> Result<RawValue<T>> {
        RawValue::new(value)
    }

    /// A [`RawArray`](crate::RawArray) of `len` zeroed elements (Python's
    /// `ctx.RawArray(typecode, size)`).
    ///
    /// # Errors
    /// As [`RawArray::new`](crate::RawArray::new).
    pub fn raw_array<T: ShmSafe>(&self, len: usize) -> Result<RawArray<T>> {
        RawArray::new(len)
    }
}
