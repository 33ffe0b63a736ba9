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
//! | `p.start()`, `p.join()`, `p.join(timeout)` | [`start`](Process::start), [`join`](Process::join), [`join_timeout`](Process::join_timeout) |
//! | `p.is_alive()`, `p.pid`, `p.exitcode`, `p.sentinel` | [`is_alive`](Process::is_alive), [`pid`](Process::pid), [`exitcode`](Process::exitcode), [`sentinel`](Process::sentinel) |
//! | `p.terminate()`, `p.kill()`, `p.interrupt()`, `p.close()` | [`terminate`](Process::terminate), [`kill`](Process::kill), [`interrupt`](Process::interrupt), [`close`](Process::close) |
//! | the target's return value (lost in Python) | [`take_result`](Process::take_result) |
//! | an exception in the child (printed, exit code 1) | [`Error::Panicked`] with message and location |
//! | `sys.exit(12)` in the child | [`exit(12)`](exit) |
//! | `current_process()`, `parent_process()` | [`current_process`], [`parent_process`] |
//! | `active_children()`, `cpu_count()` | [`active_children`], [`cpu_count`] |
//! | `get_context("spawn")`, `set_start_method(...)` | [`get_context`]`(`[`StartMethod::Spawn`]`)`, [`set_start_method`] |
//! | `Pipe()`, `Pipe(duplex=False)` | [`Pipe::new`], [`Pipe::one_way`] |
//! | `conn.send(obj)`, `conn.recv()` | [`Connection::send`], [`Connection::recv`] (typed, serde) |
//! | `send_bytes`, `recv_bytes`, `recv_bytes_into`, `poll` | [`Connection::send_bytes`], [`Connection::recv_bytes`], [`Connection::recv_bytes_into`], [`Connection::poll`] |
//! | `EOFError`, `BufferTooShort` | [`Error::Eof`], [`Error::BufferTooShort`] |
//! | `multiprocessing.connection.wait` | [`connection::wait`] |
//! | `Listener`, `Client` (authkey) | [`Listener`], [`Client`] (same wire protocol) |
//! | `Queue(maxsize)`, `put`, `get`, `put_nowait`, `get_nowait`, `qsize`, `empty`, `full`, `close` | [`Queue::with_maxsize`], [`Queue::put`], [`Queue::get`], [`Queue::put_nowait`], [`Queue::get_nowait`], … ([`Error::Empty`], [`PutError::Full`]) |
//! | `SimpleQueue`, `JoinableQueue` (`task_done`, `join`) | [`SimpleQueue`], [`JoinableQueue`] |
//! | `reduction.send_handle` / pickled sockets | [`Handle`] inside any message or argument |
//! | `Pool(n, initializer, initargs, maxtasksperchild)` | [`Pool::new(n)`](Pool::new), [`Pool::builder`]`().initializer(f, args).maxtasksperchild(k)` |
//! | `pool.apply`, `apply_async(f, args, callback, error_callback)` | [`Pool::apply`], [`Pool::apply_async`], [`Pool::apply_async_with`] |
//! | `map`, `map_async`, `imap`, `imap_unordered`, `starmap` (chunksize) | [`Pool::map`], [`Pool::map_async`], [`Pool::imap`], [`Pool::imap_unordered`], [`Pool::starmap`] (`*_chunked`) |
//! | `AsyncResult.get(timeout)`, `wait`, `ready`, `successful` | [`AsyncResult::get`], [`get_timeout`](AsyncResult::get_timeout), [`wait`](AsyncResult::wait), [`ready`](AsyncResult::ready), [`successful`](AsyncResult::successful) |
//! | `close`, `terminate`, `join`, `with Pool() as p` | [`Pool::close`], [`Pool::terminate`], [`Pool::join`], `Drop` |
//! | a killed worker: hangs forever / `BrokenProcessPool` | [`Error::WorkerLost`] for that task only; the worker is replaced |
//! | `ProcessPoolExecutor`: `submit`, `map`, `shutdown(wait, cancel_futures)` | [`Executor::submit`], [`Executor::map`], [`Executor::shutdown`] |
//! | `Lock()`, `RLock()`, `with lock:` | [`Lock`], [`RLock`]: `acquire()` returns a guard |
//! | `lock.acquire(False)`, `acquire(timeout=t)` | [`Lock::try_acquire`], [`Lock::acquire_timeout`] |
//! | a holder that died (Python hangs) | [`LockError::OwnerDied`], which hands over the guard |
//! | `Semaphore(n)`, `BoundedSemaphore(n)` | [`Semaphore`], [`BoundedSemaphore`] |
//! | `Condition()`, `wait`, `wait_for`, `notify(n)`, `notify_all` | [`Condition`], through its [`ConditionGuard`] |
//! | `Event()`: `set`, `clear`, `is_set`, `wait(timeout)` | [`Event`] |
//! | `Barrier(n, action, timeout)`, `BrokenBarrierError` | [`Barrier`], [`BrokenBarrierError`] |
//! | `Value('i', 0)`, `Array('d', 10)`, `get_lock()`, `get_obj()` | [`Value<i32>`](Value), [`Array<f64>`](Array) |
//! | `RawValue`, `RawArray` | [`RawValue`], [`RawArray`] |
//! | `shared_memory.SharedMemory(name, create, size)` | [`SharedMemory::create`], [`SharedMemory::attach`] |
//! | `shared_memory.ShareableList(seq, name=...)` | [`ShareableList`] of [`Item`]s |
//! | `Manager()`, `with Manager() as m:`, `m.shutdown()` | [`Manager::start`], `Drop`, [`Manager::shutdown`] |
//! | `m.dict()`, `m.list()`, `m.Queue()`, `m.JoinableQueue()`, `m.Value(t, v)`, `m.Array(t, seq)`, `m.Namespace()` | [`dict`](manager::RemoteManager::dict), [`list`](manager::RemoteManager::list), [`queue`](manager::RemoteManager::queue), [`joinable_queue`](manager::RemoteManager::joinable_queue), [`value`](manager::RemoteManager::value), [`array`](manager::RemoteManager::array), [`namespace`](manager::RemoteManager::namespace): typed proxies ([`DictProxy<K, V>`](manager::DictProxy), [`ListProxy<T>`](manager::ListProxy), [`QueueProxy<T>`](manager::QueueProxy), …) |
//! | `m.Lock()`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Condition`, `Event`, `Barrier` | [`lock`](manager::RemoteManager::lock), [`rlock`](manager::RemoteManager::rlock), [`semaphore`](manager::RemoteManager::semaphore), [`bounded_semaphore`](manager::RemoteManager::bounded_semaphore), [`condition`](manager::RemoteManager::condition), [`event`](manager::RemoteManager::event), [`barrier`](manager::RemoteManager::barrier) |
//! | `BaseManager.register('Foo', Foo, exposed=...)` | [`managed_type!`], [`manager::Registry`], [`Manager::start_with_types`] |
//! | `BaseManager(address, authkey).get_server().serve_forever()`, `register('get_queue', callable=...)` | [`manager::Server::bind`], [`register_shared`](manager::Server::register_shared), [`serve_forever`](manager::Server::serve_forever) |
//! | `BaseManager(address, authkey).connect()`, `m.get_queue()` | [`manager::connect`], [`RemoteManager::get`](manager::RemoteManager::get) (also against a Python manager) |
//! | `RemoteError`, a method's exception | [`Error::Remote`] ([`Error::Empty`]/[`Error::Full`] for the queue's) |
//! | `log_to_stderr(level)`, `get_logger()` | [`log_to_stderr`]`(log::LevelFilter::Info)`; the crate's records go through the [`log`] facade under targets starting with `multiproc` |
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
//! * Corrupt, truncated or oversized messages are errors, never a crash, a
//!   hang or an allocation of the claimed size.
//! * A process that dies holding a [`Lock`] or [`RLock`] does not deadlock
//!   the others: the next acquirer is told ([`LockError::OwnerDied`]) and
//!   holds the lock.
//! * A queue has no feeder thread: `put` returning `Ok` means the item is in
//!   shared memory, so a program exits with items still queued, and a
//!   producer or consumer killed mid-item never hands out a torn item.
//! * A pool worker that is killed, crashes or times out fails only the task
//!   it was running; it is replaced and the pool goes on.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod codec;
pub mod connection;
mod error;
mod exclusive;
mod logging;
pub mod manager;
pub mod pickle;
mod pool;
mod process;
pub mod queue;
mod shm;
mod sync;
mod sys;

pub use codec::{Handle, handle};
pub use connection::{
    Address, Client, Connection, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_MESSAGE, Listener, Pipe,
    ToAddress, Waitable,
};
pub use error::{Error, RemotePanic, Result, signal_name};
pub use logging::log_to_stderr;
pub use manager::Manager;
pub use pool::{AsyncResult, Executor, Future, IMap, Pool, PoolBuilder};
pub use process::forkserver::server_pid as forkserver_pid;
pub use process::{
    ActiveChild, Context, ParentProcess, Process, ProcessInfo, Run, StartMethod, Target,
    active_children, cpu_count, current_process, exit, get_all_start_methods, get_context,
    get_start_method, parent_process, set_start_method,
};
pub use queue::{JoinableQueue, PutError, Queue, SimpleQueue};
pub use shm::{
    Array, ArrayGuard, Item, RawArray, RawValue, ShareableList, SharedMemory, ShmSafe, Value,
    ValueGuard,
};
pub use sync::{
    Barrier, BoundedSemaphore, BrokenBarrierError, Condition, ConditionGuard, Event, Lock,
    LockError, LockGuard, LockResult, RLock, RLockGuard, Semaphore,
};
