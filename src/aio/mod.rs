//! Awaitable twins of blocking operations, on tokio (feature `tokio`).
//!
//! The twins are inherent methods of the types they belong to
//! ([`Queue::get_async`](crate::Queue::get_async),
//! [`Process::join_async`](crate::Process::join_async), …); this module
//! holds their shared machinery and documents how they wait.
//!
//! # How they wait: a descriptor the reactor watches
//!
//! No twin busy-polls. Each one has a file descriptor that becomes readable
//! when what it waits for may have happened, registers a duplicate of it
//! with tokio's reactor ([`tokio::io::unix::AsyncFd`]), and retries the
//! non-blocking form of the operation when woken:
//!
//! | operation | descriptor | who makes it readable |
//! |---|---|---|
//! | `Queue`/`SimpleQueue`/`JoinableQueue` `get_async` | the queue's `eventfd` | the next producer to publish, after the waiter *armed* the queue (the mechanism of [`connection::wait`](crate::connection::wait)) |
//! | `Process::join_async` | the child's pidfd | the kernel, when the child exits |
//! | `Connection::recv_async` / `send_async` (and the bytes forms) | the connection's socket | the kernel, when data (or room) is there |
//!
//! An idle waiter therefore costs nothing: it is a registration in the
//! reactor's epoll set. The protocol for a queue is: try `get_nowait`; arm
//! (drain the `eventfd`, set the armed flag, check the ring again); await
//! readability; clear it; repeat. A producer that publishes while the flag
//! is set clears it and signals the `eventfd`, which wakes every waiter of
//! every process. A waiter that takes an item and sees more passes the
//! wake on (signals again), so a drain by one waiter cannot strand
//! another. Within a process only one task per queue watches the
//! `eventfd`; the others wait their turn on a FIFO `tokio::sync::Mutex`
//! (so 10,000 waiting tasks are one registration, and a publish wakes one
//! task per process, not all of them).
//!
//! Operations without such a descriptor — a `put` into a full ring,
//! `JoinableQueue::join`, a pool's `AsyncResult` and `TaskFuture` — wait
//! in tokio's blocking pool ([`tokio::task::spawn_blocking`]) with 100 ms
//! slices and a cancellation flag, so a dropped future releases its thread
//! within 100 ms.
//!
//! # Locks, events, semaphores, conditions, barriers
//!
//! These sleep on futex words in shared memory, which no reactor can
//! watch and whose writers (in any process) know nothing of tokio. Their
//! twins wait where the blocking calls wait, in a thread: per primitive and
//! process, the task at the head of a FIFO turn waits in one thread of the
//! blocking pool, asleep in the kernel on the futex (100 ms slices, between
//! which it checks whether its future was dropped and whether a lock's
//! holder still runs); the other tasks wait for their turn at no cost. So
//! 10,000 tasks waiting on one lock are one sleeping thread.
//!
//! Before that, the first poll looks at the futex word inline, as the
//! blocking waits spin before they sleep: for a bounded, adaptive moment
//! (at most 20 µs; halved after each spin that finds nothing, down to
//! 1 µs; back to 20 µs after one that succeeds; none on a one-CPU machine). A
//! peer in another process that answers within it (a ping-pong) costs no
//! thread wake-up at all; the poll holds its runtime thread for at most
//! those 20 µs.
//!
//! | operation | guard |
//! |---|---|
//! | [`Lock::acquire_async`](crate::Lock::acquire_async) | [`LockGuard`](crate::LockGuard): the lock is held by the *process* (its owner word is pid and start time), so the guard may cross `.await` and threads |
//! | [`RLock::acquire_async`](crate::RLock::acquire_async) | [`AsyncRLockGuard`]: the hold is recorded under a per-acquire tag instead of a thread id; one level, not reentrant |
//! | [`Condition::acquire_async`](crate::Condition::acquire_async) | [`AsyncConditionGuard`], with `wait_async`, `wait_async_timeout`, `wait_for_async`, `notify` |
//! | [`Semaphore::acquire_async`](crate::Semaphore::acquire_async), [`BoundedSemaphore::acquire_async`](crate::BoundedSemaphore::acquire_async) | none, as the blocking `acquire` |
//! | [`Event::wait_async`](crate::Event::wait_async), [`Barrier::wait_async`](crate::Barrier::wait_async) | — |
//! | [`wait`] (twin of [`connection::wait`](crate::connection::wait)) | — (descriptors in the reactor) |
//!
//! A process that dies holding a lock, even by `SIGKILL`, hands it to the
//! next acquirer, sync or async, with
//! [`LockError::OwnerDied`](crate::LockError::OwnerDied).
//!
//! # Cancel safety
//!
//! Stated per method, as tokio does: dropping a pending `get_async` never
//! loses an item (an item is taken only in the poll that returns it);
//! dropping a pending `acquire_async` never keeps a lock or a semaphore
//! unit (one its waiting thread takes after the drop is released; a lock
//! taken over from a dead owner is given back still marked as the dead
//! owner's, so the next acquirer learns of the death); a dropped condition
//! wait gives up its place (and passes on a notification that chose it),
//! a dropped barrier wait takes its party out of the count.

#![allow(unsafe_code)]

mod connection;
mod listener;
mod lock;
mod manager;
mod process;
mod queue;
mod results;
mod spin;
mod sync;
mod wait;

pub use lock::{AsyncConditionGuard, AsyncRLockGuard};
pub use manager::{AsyncProxy, AsyncProxyGuard};
pub use wait::wait;

use crate::error::Result;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A duplicate of a descriptor, registered with the current runtime's
/// reactor for readability.
pub(crate) struct Readable(AsyncFd<OwnedFd>);

impl Readable {
    /// Registers a duplicate of `fd`.
    ///
    /// Panics outside a tokio runtime (as every tokio I/O type does).
    pub(crate) fn new(fd: BorrowedFd<'_>) -> Result<Readable> {
        Readable::with_interest(fd, Interest::READABLE)
    }

    /// Registers a duplicate of `fd` for `interest`.
    pub(crate) fn with_interest(fd: BorrowedFd<'_>, interest: Interest) -> Result<Readable> {
        let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(std::io::Error::from)?;
        // SAFETY: the `AsyncFd` owns `dup` (an `OwnedFd` it alone holds), so
        // the descriptor stays open, refers to the same file description
        // and `as_raw_fd` returns the same number until the `AsyncFd` drops
        // it — the contract of `register_with_interest`.
        let afd = unsafe { AsyncFd::register_with_interest(dup, interest) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Readable(afd))
    }

    /// Waits until the descriptor is readable (or was since the last
    /// [`wait`](Self::wait)), and clears the reactor's readiness so the next
    /// call waits for a new event.
    pub(crate) async fn wait(&self) -> Result<()> {
        let mut g = self.0.readable().await?;
        g.clear_ready();
        Ok(())
    }

    /// Polls for readability (clearing it when ready), for waits on
    /// several descriptors at once.
    pub(crate) fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        match self.0.poll_read_ready(cx) {
            std::task::Poll::Ready(Ok(mut g)) => {
                g.clear_ready();
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e.into())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    /// [`wait`](Self::wait) for writability.
    pub(crate) async fn wait_writable(&self) -> Result<()> {
        let mut g = self.0.writable().await?;
        g.clear_ready();
        Ok(())
    }
}

impl AsFd for Readable {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

/// Runs `slice` (a blocking wait of at most 100 ms that returns `Some`
/// when done) on tokio's blocking pool until it returns `Some` or the
/// returned future is dropped.
pub(crate) async fn blocking_slices<R, F>(mut slice: F) -> R
where
    F: FnMut() -> Option<R> + Send + 'static,
    R: Send + 'static,
{
    struct Cancel(Arc<AtomicBool>);
    impl Drop for Cancel {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let flag = Arc::new(AtomicBool::new(false));
    let _cancel = Cancel(flag.clone());
    let r = tokio::task::spawn_blocking(move || {
        loop {
            if let Some(r) = slice() {
                return Some(r);
            }
            if flag.load(Ordering::Acquire) {
                return None;
            }
        }
    })
    .await;
    unwrap_blocking(r).expect("only a dropped future cancels")
}

/// The value of a blocking task; its panic goes on in the caller.
pub(crate) fn unwrap_blocking<R>(r: std::result::Result<R, tokio::task::JoinError>) -> R {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a blocking task, and then
        // the task awaiting it is being dropped too.
        Err(e) => panic!("blocking task cancelled: {e}"),
    }
}

/// The length of one blocking slice.
pub(crate) const SLICE: std::time::Duration = std::time::Duration::from_millis(100);
