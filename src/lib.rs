//! Python's `multiprocessing`, in Rust: child processes that run your
//! functions, pipes and queues between them, cross-process locks, events
//! and shared memory, and process pools — with the names and rules Python
//! users know, Rust's types and errors, and none of CPython's hangs.
//!
//! A child process is isolated: a crash, a leak or a runaway loop in it
//! cannot take the parent down, and it can be terminated or killed at any
//! time. Arguments and results travel by serde; OS handles (files, sockets,
//! connections) travel inside them.
//!
//! ```
//! use multiproc::{Pipe, Process};
//!
//! fn square_all(numbers: Vec<u64>) -> Vec<u64> {
//!     numbers.iter().map(|n| n * n).collect()
//! }
//!
//! // Run a function in a child process and get its result back.
//! let mut p = Process::new(square_all, (vec![1, 2, 3],));
//! p.start()?;
//! p.join()?;
//! assert_eq!(p.exitcode(), Some(0));
//! assert_eq!(p.take_result()?, vec![1, 4, 9]);
//!
//! // Talk to a child over a pipe.
//! fn shout(conn: multiproc::Connection) {
//!     while let Ok(line) = conn.recv::<String>() {
//!         conn.send(&line.to_uppercase()).unwrap();
//!     }
//! }
//! let (here, there) = Pipe::new()?;
//! let mut echo = Process::new(shout, (there,));
//! echo.start()?;
//! here.send("hello")?;
//! assert_eq!(here.recv::<String>()?, "HELLO");
//! drop(here); // end of stream: the child's loop ends
//! echo.join()?;
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! # From Python to Rust
//!
//! | Python `multiprocessing` | `multiproc` |
//! |---|---|
//! | `Process(target=f, args=(a, b), name=n, daemon=d)` | [`Process::new(f, (a, b))`](Process::new)`.name(n).daemon(d)` |
//! | subclass of `Process` overriding `run()` | a type implementing [`Run`], [`Process::from_run`] |
//! | `p.start()`, `p.join()`, `p.join(timeout)` | [`start`](Process::start), [`join`](Process::join), [`join_timeout`](Process::join_timeout), [`join_deadline`](Process::join_deadline) |
//! | `procs = [Process(...), ...]; for p in procs: p.start()` | `Vec<Box<dyn `[`ProcessHandle`]`>>` of [`Process::erase`]d processes of any result type |
//! | `p.name`, `p.daemon`, `p.authkey`, `p.ident` | [`get_name`](Process::get_name), [`is_daemon`](Process::is_daemon), [`current_process`]`().`[`authkey()`](ProcessInfo::authkey), [`pid`](Process::pid) |
//! | `p.is_alive()`, `p.pid`, `p.exitcode`, `p.sentinel` | [`is_alive`](Process::is_alive), [`pid`](Process::pid), [`exitcode`](Process::exitcode), [`sentinel`](Process::sentinel) |
//! | `p.terminate()`, `p.kill()`, `p.interrupt()`, `p.close()` | [`terminate`](Process::terminate), [`kill`](Process::kill), [`interrupt`](Process::interrupt), [`close`](Process::close) |
//! | the target's return value (lost in Python) | [`take_result`](Process::take_result) |
//! | an exception in the child (printed, exit code 1) | [`Error::Panicked`] with message and location |
//! | raising an exception meant for the parent | return a [`Result`]`<T>` (or any serde error type): [`Error`] travels between processes |
//! | `ProcessError`, `TimeoutError`, `AuthenticationError` | [`Error`], [`Error::Timeout`], [`Error::Authentication`] |
//! | `sys.exit(12)` in the child | [`exit(12)`](exit) |
//! | `current_process()`, `parent_process()` | [`current_process`], [`parent_process`] |
//! | `active_children()`, `cpu_count()` | [`active_children`], [`cpu_count`] |
//! | `get_context("spawn")`, `set_start_method(...)` | [`get_context`]`(`[`StartMethod::Spawn`]`)`, [`set_start_method`] |
//! | `ctx.Process`, `ctx.Pool`, `ctx.Queue`, `ctx.Lock`, `ctx.Value`, … | [`Context::process`], [`Context::pool`], [`Context::queue`], [`Context::lock`], [`Context::value`], … |
//! | `Pipe()`, `Pipe(duplex=False)` | [`Pipe::new`], [`Pipe::one_way`] |
//! | `conn.send(obj)`, `conn.recv()` | [`Connection::send`], [`Connection::recv`] (typed, serde) |
//! | `send_bytes`, `recv_bytes`, `recv_bytes_into`, `poll` | [`Connection::send_bytes`], [`Connection::recv_bytes`], [`Connection::recv_bytes_into`], [`Connection::poll`] |
//! | `EOFError`, `BufferTooShort` | [`Error::Eof`], [`Error::BufferTooShort`] |
//! | `multiprocessing.connection.wait` | [`connection::wait`] |
//! | `Listener`, `Client` (authkey) | [`Listener`], [`Client`] (same wire protocol) |
//! | `listener.last_accepted` | [`Listener::last_accepted`] |
//! | `connection.deliver_challenge`, `answer_challenge` | [`connection::deliver_challenge`], [`connection::answer_challenge`] (and `_deadline` forms), for any [`Connection`] |
//! | `Queue(maxsize)`, `put`, `get`, `put_nowait`, `get_nowait`, `qsize`, `empty`, `full`, `close` | [`Queue::with_maxsize`], [`Queue::put`], [`Queue::get`], [`Queue::put_nowait`], [`Queue::get_nowait`], [`Queue::qsize`], [`Queue::is_empty`], [`Queue::is_full`], [`Queue::close`] ([`Error::Empty`], [`PutError::Full`]) |
//! | `SimpleQueue`, `JoinableQueue` (`task_done`, `join`) | [`SimpleQueue`], [`JoinableQueue`] ([`task_done`](JoinableQueue::task_done), [`join`](JoinableQueue::join), [`join_timeout`](JoinableQueue::join_timeout)) |
//! | `reduction.send_handle` / pickled sockets | [`Handle`] inside any message or argument |
//! | `Pool(n, initializer, initargs, maxtasksperchild)` | [`Pool::new(n)`](Pool::new), [`Pool::builder`]`().initializer(f, args).maxtasksperchild(k)` |
//! | `Pool()` (CPU count) | [`Pool::with_default_size`], [`Pool::default_size`]; `MULTIPROC_PROCESSES=n` overrides the CPU count |
//! | `pool.apply`, `apply_async(f, args, callback, error_callback)` | [`Pool::apply`], [`Pool::apply_async`], [`Pool::apply_async_with`] |
//! | `map`, `map_async`, `imap`, `imap_unordered`, `starmap` (chunksize) | [`Pool::map`], [`Pool::map_async`], [`Pool::imap`], [`Pool::imap_unordered`], [`Pool::starmap`] (`*_chunked`) |
//! | an exception in `pool.map` (which item?) | [`Error::Task`]` { index, source }`; [`Error::root`] for the task's own error |
//! | `tqdm.contrib.concurrent.process_map(f, items)` | `pool.imap(f, items).progress()`, `Pool::map_progress` (feature `progress`) |
//! | `AsyncResult.get(timeout)`, `wait(timeout)`, `ready`, `successful` | [`AsyncResult::get`], [`get_timeout`](AsyncResult::get_timeout) / [`get_deadline`](AsyncResult::get_deadline) / [`try_get`](AsyncResult::try_get), [`wait`](AsyncResult::wait) (`_timeout`, `_deadline`), [`ready`](AsyncResult::ready), [`successful`](AsyncResult::successful) |
//! | `close`, `terminate`, `join`, `with Pool() as p` | [`Pool::close`], [`Pool::terminate`], [`Pool::join`], `Drop` |
//! | a killed worker: hangs forever / `BrokenProcessPool` | [`Error::WorkerLost`] for that task only; the worker is replaced |
//! | no resource limits in Python (`resource.setrlimit` by hand in an initializer; a task that hits one kills its worker) | [`Limits`] on [`Process::limits`] and [`PoolBuilder::worker_limits`] (memory per worker, CPU time per task): [`Error::LimitExceeded`] names the [`Limit`]; [`Process::usage`], [`AsyncResult::usage`], [`TaskFuture::usage`] report CPU time and peak RSS ([`ResourceUsage`]) |
//! | `multiprocessing.pool.ThreadPool(n)`: `apply`, `apply_async`, `map`, `imap`, `imap_unordered`, `starmap`, `close`, `join`, `terminate` | [`ThreadPool::new`]: [`apply`](ThreadPool::apply), [`apply_async`](ThreadPool::apply_async), [`map`](ThreadPool::map), [`imap`](ThreadPool::imap), [`imap_unordered`](ThreadPool::imap_unordered), [`starmap`](ThreadPool::starmap), [`close`](ThreadPool::close), [`join`](ThreadPool::join), [`terminate`](ThreadPool::terminate) (closures may capture) |
//! | `ProcessPoolExecutor(max_workers)`, `submit`, `map(timeout=)` | [`Executor::new`] / [`Executor::with_default_size`], [`Executor::submit`], [`Executor::map`], [`Executor::map_timeout`] |
//! | `shutdown(wait=True, cancel_futures=False)` | [`Executor::shutdown`], [`Executor::shutdown_with`]`(`[`Shutdown`]` { wait, cancel_futures })` |
//! | `terminate_workers()`, `kill_workers()` (3.14) | [`Executor::terminate_workers`], [`Executor::kill_workers`] |
//! | `Future`: `result(timeout)`, `exception(timeout)`, `done`, `running`, `cancel`, `cancelled`, `add_done_callback` | [`TaskFuture`]: [`result`](TaskFuture::result) (`_timeout`, `_deadline`, `try_`), [`exception`](TaskFuture::exception), [`done`](TaskFuture::done), [`running`](TaskFuture::running), [`cancel`](TaskFuture::cancel), [`cancelled`](TaskFuture::cancelled), [`add_done_callback`](TaskFuture::add_done_callback) |
//! | `concurrent.futures.wait(fs, timeout, return_when)`, `as_completed(fs, timeout)` | [`futures::wait`]`(fs, timeout, `[`futures::ReturnWhen`]`)`, [`futures::as_completed`] |
//! | `Lock()`, `RLock()`, `with lock:` | [`Lock`], [`RLock`]: `acquire()` returns a guard |
//! | `lock.acquire(False)`, `acquire(timeout=t)` | [`Lock::try_acquire`], [`Lock::acquire_timeout`], [`Lock::acquire_deadline`] |
//! | `lock.locked()`, `sem.get_value()` | [`Lock::is_locked`], [`Semaphore::value`] |
//! | a holder that died (Python hangs) | [`LockError::OwnerDied`], which hands over the guard |
//! | `Semaphore(n)`, `BoundedSemaphore(n)` | [`Semaphore`], [`BoundedSemaphore`] |
//! | `Condition()`, `wait`, `wait_for`, `notify(n)`, `notify_all` | [`Condition`], through its [`ConditionGuard`] |
//! | `Event()`: `set`, `clear`, `is_set`, `wait(timeout)` | [`Event`] |
//! | `Barrier(n, action, timeout)`, `wait(timeout)`, `broken`, `BrokenBarrierError` | [`Barrier`], [`Barrier::wait_timeout`], [`Barrier::is_broken`], [`BrokenBarrierError`] |
//! | `Value('i', 0)`, `Array('d', 10)`, `get_lock()`, `get_obj()` | [`Value<i32>`](Value), [`Array<f64>`](Array) |
//! | `RawValue`, `RawArray` | [`RawValue`], [`RawArray`] |
//! | `shared_memory.SharedMemory(name, create, size)` | [`SharedMemory::create`], [`SharedMemory::attach`] |
//! | `shared_memory.ShareableList(seq, name=...)` | [`ShareableList`] of [`Item`]s |
//! | `Manager()`, `with Manager() as m:`, `m.shutdown()` | [`Manager::start`], `Drop`, [`Manager::shutdown`] |
//! | `m.dict()`, `m.list()`, `m.Queue()`, `m.JoinableQueue()`, `m.Value(t, v)`, `m.Array(t, seq)`, `m.Namespace()` | [`dict`](manager::RemoteManager::dict), [`list`](manager::RemoteManager::list), [`queue`](manager::RemoteManager::queue), [`joinable_queue`](manager::RemoteManager::joinable_queue), [`value`](manager::RemoteManager::value), [`array`](manager::RemoteManager::array), [`namespace`](manager::RemoteManager::namespace): typed proxies ([`DictProxy<K, V>`](manager::DictProxy), [`ListProxy<T>`](manager::ListProxy), [`QueueProxy<T>`](manager::QueueProxy), …) |
//! | `m.Lock()`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Condition`, `Event`, `Barrier` | [`lock`](manager::RemoteManager::lock), [`rlock`](manager::RemoteManager::rlock), [`semaphore`](manager::RemoteManager::semaphore), [`bounded_semaphore`](manager::RemoteManager::bounded_semaphore), [`condition`](manager::RemoteManager::condition), [`event`](manager::RemoteManager::event), [`barrier`](manager::RemoteManager::barrier) |
//! | `m.set()` (3.14), `for k in d`, `iter(d)` | [`set`](manager::RemoteManager::set) ([`SetProxy<T>`](manager::SetProxy)), [`DictProxy::iter`](manager::DictProxy::iter) ([`IteratorProxy<T>`](manager::IteratorProxy)) |
//! | `BaseManager.register('Foo', Foo, exposed=...)` | [`managed_type!`], [`manager::Registry`], [`Manager::start_with_types`] |
//! | `BaseManager(address, authkey).get_server().serve_forever()`, `register('get_queue', callable=...)` | [`manager::Server::bind`], [`register_shared`](manager::Server::register_shared), [`serve_forever`](manager::Server::serve_forever) |
//! | `BaseManager(address, authkey).connect()`, `m.get_queue()` | [`manager::connect`], [`RemoteManager::get`](manager::RemoteManager::get) (also against a Python manager) |
//! | `RemoteError`, a method's exception | [`Error::Remote`] ([`Error::Empty`]/[`Error::Full`] for the queue's) |
//! | gevent: `spawn`, `joinall`, `killall`, `sleep`, `Timeout`, `pool.Pool`, `pool.Group` | `green` (feature `tokio`): `green::spawn`, `green::joinall`, `green::killall`, `green::sleep`, `green::Timeout`, `green::Pool`, `green::Group` |
//! | a blocking call inside a greenlet (`q.get()`, `conn.recv()`, `p.join()`, `r.get()`) | its awaitable twin (feature `tokio`): `Queue::get_async` / `put_async` (`_timeout`), `SimpleQueue::get_async`, `JoinableQueue::join_async`, `Connection::recv_async` / `send_async` (bytes forms), `Listener::accept_async`, `Client::connect_async`, `Process::join_async`, `Event::wait_async`, `Semaphore::acquire_async`, `Lock`/`RLock`/`Condition::acquire_async`, `AsyncConditionGuard::wait_async`, `Barrier::wait_async`, `aio::wait`, `aio::AsyncProxy` for manager proxies, `AsyncResult` and `TaskFuture` are `IntoFuture` (see the `aio` module) |
//! | `log_to_stderr(level)`, `get_logger()` | [`log_to_stderr`]`(log::LevelFilter::Info)`; the crate's records go through the [`log`] facade under targets starting with `multiproc` |
//!
//! ## Not available, and what to use instead
//!
//! | Python `multiprocessing` | why not here / what to use |
//! |---|---|
//! | `set_executable(path)` | not available: children are this same binary (spawn re-executes `/proc/self/exe`), since only it contains the target functions |
//! | `freeze_support()` | not needed: nothing has to be called in `main`; children never run `main` (see below) |
//! | `set_forkserver_preload(modules)` | not needed: the fork server is this binary with all its code already loaded; do one-time set-up in the target or a pool initializer |
//! | `allow_connection_pickling()` | not needed: a [`Connection`], socket or file travels inside any message or argument ([`Handle`]) |
//! | `reducer`, `reduction` (`ForkingPickler`, `register`, `send_handle`, `recv_handle`) | serde is the reduction: implement `Serialize`/`Deserialize`; handles travel as [`Handle`] |
//! | `Queue.join_thread()`, `Queue.cancel_join_thread()` | not needed: a queue has no feeder thread (a `put` that returned `Ok` is in shared memory), so there is nothing to join or cancel |
//! | `heap` (`BufferWrapper`, the arena allocator) | not needed: each [`Value`], [`Array`] or [`SharedMemory`] maps its own segment |
//! | `sharedctypes.synchronized(obj, lock)`, `copy(obj)` | [`Value::with_lock`], [`Array::with_lock`]; copy with [`RawValue::get`] / [`RawArray::to_vec`] into a new one |
//! | `multiprocessing.dummy` (the API over threads) | [`ThreadPool`] for the pool; otherwise [`std::thread`] and [`std::sync`] |
//! | `util.Finalize`, `util.register_after_fork` | not available: use `Drop`; a child runs only its target, so there is no state to fix up after fork |
//!
//! # Blocking calls, timeouts and names
//!
//! Every blocking operation comes in up to four forms, as in
//! crossbeam-channel: `op` (waits as long as it takes), `try_op` (never
//! waits), `op_timeout(Duration)` and `op_deadline(Instant)` (give up at
//! that time, whatever the peer does). What a timed form returns depends
//! on the kind of operation, one rule per kind:
//!
//! | kind | examples | result when the time runs out |
//! |---|---|---|
//! | **take** something: a lock guard, an item | [`Lock::acquire_timeout`], [`RLock::acquire_deadline`], [`Condition::acquire_deadline`], [`Queue::get_timeout`], [`Queue::put_timeout`] | an `Err` that says so and gives back what it must: [`LockError::Timeout`] (`try_`: [`LockError::WouldBlock`]), [`Error::Empty`], [`PutError::Full`] holding the item |
//! | **wait** for something to happen: an event, a notify, an exit, tasks done, a semaphore unit (which has no guard) | [`Event::wait_timeout`], [`ConditionGuard::wait_deadline`], [`Process::join_deadline`], [`JoinableQueue::join_deadline`], [`Semaphore::acquire_deadline`] | `false` (`true` when it happened), inside a `Result` only when the call can also fail for another reason |
//! | **meet**: a barrier | [`Barrier::wait_timeout`], [`Barrier::wait_deadline`] | [`BrokenBarrierError`], and the barrier is broken for every party, as in Python |
//!
//! Getters are named after what they return ([`Semaphore::value`],
//! [`Queue::qsize`], [`Process::pid`]) and predicates start with `is_`
//! ([`Queue::is_empty`], [`Queue::is_full`], [`Lock::is_locked`],
//! [`Barrier::is_broken`], [`Process::is_alive`]); Python's names
//! (`empty`, `full`, `locked`, `get_value`, `broken`) are search aliases in
//! these docs. The one exception is [`Process::get_name`], because
//! [`Process::name`] is the builder method that sets it.
//!
//! **Keep guards in named variables.** A lock is held as long as its guard
//! lives, and `let _ = lock.acquire();` drops the guard at once — the lock
//! is released before the next line. Write `let _guard = lock.acquire()?;`.
//! This holds for [`Lock`], [`RLock`], [`Condition`], [`Value::lock`] and
//! [`Array::lock`].
//!
//! # How children get their code
//!
//! A child is this same binary. With the default **forkserver** start
//! method a small server process, started once from this binary, forks
//! each child; with **spawn** each child re-executes the binary; with
//! **fork** the calling process forks directly. In the first two cases the
//! crate takes control of the new process *before `main`* (through a
//! load-time hook), so your `main` never runs in a child, nothing has to be
//! called at the start of `main`, and it all works in `cargo test`,
//! doctests and examples as it is. The target must be a `fn` item or a
//! closure that captures nothing (checked at compile time); what it needs
//! comes in its arguments. Only the fork method runs capturing closures
//! ([`Process::from_closure`]).
//!
//! # Guarantees
//!
//! * Every child is reaped; signals go through a pidfd, never to a recycled
//!   pid.
//! * Children started by forkserver or spawn inherit standard input, output
//!   and error and nothing else; handles they need come in their arguments.
//! * Daemonic children die with their parent, even when it is killed with
//!   SIGKILL; non-daemonic children are waited for at exit.
//! * Corrupt, truncated, oversized or too deeply nested messages are errors,
//!   never a crash, a hang or an allocation of the claimed size (see
//!   [`set_max_decode_depth`]).
//! * A process that dies holding a [`Lock`] or [`RLock`] does not deadlock
//!   the others: the next acquirer is told ([`LockError::OwnerDied`]) and
//!   holds the lock.
//! * A queue has no feeder thread: `put` returning `Ok` means the item is in
//!   shared memory, so a program exits with items still queued, and a
//!   producer or consumer killed mid-item never hands out a torn item.
//! * A pool worker that is killed, crashes or times out fails only the task
//!   it was running; it is replaced and the pool goes on.
//! * A panic in any child — a [`Process`] target or a pool task — is
//!   printed on the child's standard error as
//!   `process 'NAME' (pid N) panicked at FILE:LINE:COL:` and the message
//!   (with a backtrace under `RUST_BACKTRACE=1`), and reaches the parent as
//!   [`Error::Panicked`] with the message, location and process name.
//!
//! # Cargo features
//!
//! * `progress` — progress bars for the pool's map family
//!   (`IMap::progress`, `Pool::map_progress`) through `indicatif`.
//! * `tokio` — coroutines: the gevent-shaped `green` module and the
//!   awaitable twins of the blocking operations (`Queue::get_async`, …),
//!   on tokio. Enable with `multiproc = { version = "…", features = ["tokio"] }`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
pub mod aio;
mod boot;
mod codec;
pub mod connection;
mod context;
#[cfg(feature = "redis")]
pub mod distributed;
mod error;
mod exclusive;
pub mod fiemap;
#[cfg(feature = "tokio")]
pub mod green;
pub mod manager;
mod mem;
pub mod pickle;
mod pool;
mod process;
pub mod queue;
mod runtime;
mod shm;
mod sync;
mod sys;
mod thread_pool;
mod usage;

pub use codec::SPILL_MIN;
pub use codec::{DEFAULT_MAX_DECODE_DEPTH, Handle, handle, max_decode_depth, set_max_decode_depth};
pub use connection::{
    Address, Client, Connection, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_MESSAGE, Listener, Pipe,
    ToAddress, Waitable,
};
pub use context::{Context, get_context};
pub use error::{Error, RemotePanic, Result, signal_name};
pub use manager::Manager;
#[cfg(feature = "progress")]
pub use pool::Progress;
pub use pool::futures;
pub use pool::{AsyncResult, Executor, IMap, Pool, PoolBuilder, Shutdown, TaskFuture};
pub use process::forkserver::server_pid as forkserver_pid;
pub use process::forkserver::{set_spare as set_forkserver_spare, spare as forkserver_spare};
pub use process::limits::Limits;
pub use process::{
    ActiveChild, ParentProcess, Process, ProcessHandle, ProcessInfo, Run, StartMethod, Target,
    active_children, cpu_count, current_process, exit, get_all_start_methods, get_start_method,
    parent_process, set_start_method,
};
pub use queue::{JoinableQueue, PutError, Queue, SimpleQueue};
pub use runtime::logging::log_to_stderr;
pub use shm::{
    Array, ArrayGuard, Item, RawArray, RawValue, ShareableList, SharedMemory, ShmSafe, Value,
    ValueGuard,
};
pub use shm::{SharedBytes, SharedBytesMut, SharedSlice, SharedSliceMut};
pub use sync::{
    Barrier, BoundedSemaphore, BrokenBarrierError, Condition, ConditionGuard, Event, Lock,
    LockError, LockGuard, LockResult, RLock, RLockGuard, Semaphore,
};
pub use thread_pool::{StarFn, ThreadIMap, ThreadPool, ThreadResult};
pub use usage::{Limit, ResourceUsage};
