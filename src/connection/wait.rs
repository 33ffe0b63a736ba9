//! `wait`: block until any of several objects is ready.

use super::Connection;
use super::listener::Listener;
use crate::error::Result;
use crate::sys;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

/// An object [`wait`] can wait on: it has a descriptor that becomes readable
/// when the object is ready.
///
/// Ready means, for a [`Connection`]: a message (or the end of the stream)
/// can be received; for a [`Listener`]: a peer is waiting to be accepted;
/// for a process sentinel (the [`BorrowedFd`] from
/// [`Process::sentinel`](crate::Process::sentinel)): the process has ended.
///
/// Implement it for your own types by pointing [`AsFd`] at their descriptor;
/// override [`ready_without_polling`](Self::ready_without_polling) when the
/// type buffers input in user space.
///
/// # Examples
/// ```
/// use multiproc::Waitable;
/// use std::os::fd::{AsFd, BorrowedFd};
///
/// struct Doorbell(std::os::unix::net::UnixStream);
/// impl AsFd for Doorbell {
///     fn as_fd(&self) -> BorrowedFd<'_> {
///         self.0.as_fd()
///     }
/// }
/// impl Waitable for Doorbell {}
/// ```
pub trait Waitable: AsFd {
    /// True when the object is ready without looking at its descriptor,
    /// e.g. because a whole message already sits in a user-space buffer
    /// (the descriptor alone would then not report it). The default says
    /// `false`.
    fn ready_without_polling(&self) -> bool {
        false
    }
}

impl Waitable for Connection {
    fn ready_without_polling(&self) -> bool {
        // On a write-only end the error means "nothing to read here".
        matches!(self.has_buffered_message(), Ok(Some(true)))
    }
}

impl<T: Waitable + ?Sized> Waitable for &T {
    fn ready_without_polling(&self) -> bool {
        (**self).ready_without_polling()
    }
}

impl<T: Waitable + ?Sized> Waitable for Box<T> {
    fn ready_without_polling(&self) -> bool {
        (**self).ready_without_polling()
    }
}

impl<T: Waitable + ?Sized> Waitable for std::sync::Arc<T> {
    fn ready_without_polling(&self) -> bool {
        (**self).ready_without_polling()
    }
}

impl Waitable for Listener {}
impl Waitable for BorrowedFd<'_> {}
impl Waitable for OwnedFd {}
impl Waitable for UnixStream {}
impl Waitable for UnixListener {}
impl Waitable for TcpStream {}
impl Waitable for TcpListener {}

/// Waits until at least one of `objects` is ready, or until `timeout`
/// passes, and returns the positions of the ready ones in `objects`, in
/// order (Python's `multiprocessing.connection.wait`, which returns the
/// objects themselves).
///
/// `timeout`: `None` waits as long as it takes; `Some(Duration::ZERO)` only
/// looks and returns at once. When the timeout passes with nothing ready the
/// result is empty. A [`Connection`] that already buffered a whole message
/// counts as ready at once. An end whose peer has hung up is ready (the
/// receive reports [`Error::Eof`](crate::Error::Eof)).
///
/// Signals that interrupt the wait are retried with the time left. With no
/// objects at all, `wait` sleeps for the timeout, or returns at once when
/// there is none (nothing could ever become ready).
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) when `poll(2)` fails, e.g. with more
/// objects than the descriptor limit.
///
/// # Examples
/// ```
/// use multiproc::{Pipe, Waitable, connection::wait};
/// use std::time::Duration;
///
/// let (a_rx, a_tx) = Pipe::new()?;
/// let (b_rx, b_tx) = Pipe::new()?;
/// assert!(wait(&[&a_rx, &b_rx], Some(Duration::ZERO))?.is_empty());
/// b_tx.send(&"ready")?;
/// assert_eq!(wait(&[&a_rx, &b_rx], None)?, [1]);
///
/// // Objects of different types go in as `&dyn Waitable`.
/// let listener = multiproc::Listener::bind("127.0.0.1:0", None)?;
/// let mixed: [&dyn Waitable; 2] = [&listener, &a_rx];
/// a_tx.send(&1u8)?;
/// assert_eq!(wait(mixed, Some(Duration::from_secs(5)))?, [1]);
/// # drop(a_tx);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait<'a, W, I>(objects: I, timeout: Option<Duration>) -> Result<Vec<usize>>
where
    W: Waitable + ?Sized + 'a,
    I: IntoIterator<Item = &'a W>,
{
    let objects: Vec<&W> = objects.into_iter().collect();
    if objects.is_empty() && timeout.is_none() {
        // Nothing could ever become ready.
        return Ok(Vec::new());
    }
    let buffered: Vec<bool> = objects.iter().map(|o| o.ready_without_polling()).collect();
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|o| o.as_fd()).collect();
    let deadline = if buffered.contains(&true) {
        // Something is ready already: only look at the others.
        Some(std::time::Instant::now())
    } else {
        timeout.and_then(sys::deadline_after)
    };
    let polled = sys::poll_readable(&fds, deadline)?;
    Ok(buffered
        .iter()
        .zip(&polled)
        .enumerate()
        .filter(|(_, (b, p))| **b || **p)
        .map(|(i, _)| i)
        .collect())
}
