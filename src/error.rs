//! Errors.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// OS failures stay [`io::Error`]s inside [`Error::Io`]; everything else names
/// what happened in this crate's own terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The other end of a connection is closed and nothing more will arrive
    /// (Python's `EOFError`).
    #[error("connection closed by the peer")]
    Eof,
    /// The peer went away in the middle of a message; the partial message is
    /// discarded.
    #[error("the peer closed the connection in the middle of a message")]
    Truncated,
    /// A blocking call reached its timeout.
    #[error("timed out")]
    Timeout,
    /// A message is larger than the connection's limit. Nothing of the claimed
    /// size was allocated.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The size the frame claimed.
        size: u64,
        /// The connection's limit.
        max: u64,
    },
    /// Bytes on a connection do not form a valid frame.
    #[error("corrupt frame: {0}")]
    BadFrame(String),
    /// A value could not be serialized.
    #[error("could not encode value: {0}")]
    Encode(String),
    /// Received bytes could not be deserialized into the expected type.
    #[error("could not decode value: {0}")]
    Decode(String),
    /// `recv_bytes_into` got a message larger than the buffer; the message is
    /// returned whole and is not lost (Python's `BufferTooShort`).
    #[error("buffer of {capacity} bytes is too short for a message of {} bytes", .message.len())]
    BufferTooShort {
        /// The whole message.
        message: Vec<u8>,
        /// The size of the buffer that was offered.
        capacity: usize,
    },
    /// The connection was opened one-way and this direction is not allowed.
    #[error("connection is {0}")]
    WrongDirection(&'static str),
    /// A misuse of a [`Process`](crate::Process) object, e.g. starting twice.
    #[error("{0}")]
    State(&'static str),
    /// A daemonic process tried to start a child.
    #[error("daemonic processes are not allowed to have children")]
    DaemonicChildren,
    /// The `fork` start method refuses to fork a process with several threads.
    #[error(
        "refusing to fork: this process has {threads} threads, and a forked child \
         could deadlock on locks they hold; use the forkserver or spawn start method"
    )]
    ForkWithThreads {
        /// The number of threads seen.
        threads: usize,
    },
    /// A capturing closure was given to a start method other than `fork`.
    #[error(
        "closures can only be run with the fork start method; use a fn item with spawn or forkserver"
    )]
    ClosureNeedsFork,
    /// The target panicked in the child.
    #[error("process panicked: {0}")]
    Panicked(RemotePanic),
    /// The child ended with an exit code and delivered no result.
    #[error("process exited with code {0} before returning a result")]
    Exited(i32),
    /// The child was killed by a signal.
    #[error("process was killed by signal {} ({})", .0, signal_name(*.0))]
    Killed(i32),
    /// A child could not start: its bootstrap failed.
    #[error("child bootstrap failed: {0}")]
    Bootstrap(String),
    /// The authkey handshake of a [`Listener`](crate::Listener) or
    /// [`Client`](crate::Client) failed: the peer's key differs, or the peer
    /// does not speak the protocol (Python's `AuthenticationError`).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// An address could not be understood or belongs to no supported family
    /// (Python's `ValueError` from `Listener`/`Client`).
    #[error("invalid address: {0}")]
    Address(String),
    /// The pool worker running this task died: killed by a signal (a
    /// negative `exitcode`, e.g. `-9` for SIGKILL) or exited with a code. The
    /// worker was replaced and the pool goes on.
    #[error("the worker process (pid {pid}) running this task {}", describe_exit(*.exitcode))]
    WorkerLost {
        /// The worker's pid.
        pid: u32,
        /// Its exit code, or minus the signal that killed it.
        exitcode: i32,
    },
    /// A pool task ran longer than its timeout; its worker was killed and
    /// replaced.
    #[error("the task timed out after {0:?}; its worker was killed and replaced")]
    TaskTimeout(std::time::Duration),
    /// An argument is out of its allowed range (Python's `ValueError`), e.g.
    /// a pool of 0 processes or a chunk size of 0.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The pool was terminated (or dropped) before the task finished.
    #[error("the pool was terminated before the task finished")]
    PoolTerminated,
    /// The task was cancelled before it started.
    #[error("the task was cancelled")]
    Cancelled,
    /// The pool cannot run tasks any more, e.g. because a worker's
    /// initializer failed; the message says why.
    #[error("the pool is broken: {0}")]
    PoolBroken(String),
    /// A lock's holder died while holding it (the lock was taken over; see
    /// [`LockError`](crate::LockError), which keeps the guard).
    #[error("the previous owner of the lock died while holding it")]
    OwnerDied,
    /// A non-blocking call could not proceed at once.
    #[error("the operation would block")]
    WouldBlock,
    /// A queue had no item to give: `get_nowait`, or a `get` whose timeout
    /// passed (Python's `queue.Empty`).
    #[error("the queue is empty")]
    Empty,
    /// A queue had no room: `put_nowait`, or a `put` whose timeout passed
    /// (Python's `queue.Full`). See [`PutError`](crate::PutError), which
    /// keeps the item.
    #[error("the queue is full")]
    Full,
    /// The queue handle was closed with `close()` (Python's `ValueError:
    /// Queue ... is closed`).
    #[error("the queue is closed")]
    Closed,
    /// A manager call failed in the server: the method raised (`kind` is the
    /// Python exception's name, e.g. `"KeyError"`, or the name a Rust object
    /// gave its error; a panic is `"Panic"`), or the server refused the
    /// request (`kind` is `"RemoteError"`, Python's `#TRACEBACK`).
    #[error("{kind} in the manager: {message}")]
    Remote {
        /// The exception's name.
        kind: String,
        /// Its message (its arguments, or the server's traceback text).
        message: String,
    },
}

impl Error {
    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// True when the peer is gone ([`Error::Eof`] or [`Error::Truncated`]).
    pub fn is_eof(&self) -> bool {
        matches!(self, Error::Eof | Error::Truncated)
    }

    /// True for [`Error::Authentication`].
    pub fn is_authentication(&self) -> bool {
        matches!(self, Error::Authentication(_))
    }

    /// The signal that killed the process or worker, for [`Error::Killed`]
    /// and [`Error::WorkerLost`].
    ///
    /// # Examples
    /// ```
    /// let e = multiproc::Error::WorkerLost { pid: 42, exitcode: -9 };
    /// assert_eq!(e.signal(), Some(9));
    /// assert!(e.to_string().contains("SIGKILL"));
    /// ```
    pub fn signal(&self) -> Option<i32> {
        match self {
            Error::Killed(sig) => Some(*sig),
            Error::WorkerLost { exitcode, .. } if *exitcode < 0 => Some(-exitcode),
            _ => None,
        }
    }

    /// The panic, when a child panicked.
    pub fn panic(&self) -> Option<&RemotePanic> {
        match self {
            Error::Panicked(p) => Some(p),
            _ => None,
        }
    }
}

/// A panic that happened in another process, delivered as data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePanic {
    /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
    pub message: String,
    /// `file:line:column` of the panic, when known.
    pub location: Option<String>,
    /// The name of the process that panicked.
    pub process: String,
}

impl fmt::Display for RemotePanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.message)?;
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        write!(f, " in {}", self.process)
    }
}

/// The conventional name of a signal number, e.g. `"SIGKILL"`.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "unknown signal",
    }
}

fn describe_exit(exitcode: i32) -> String {
    if exitcode < 0 {
        format!(
            "was killed by signal {} ({})",
            -exitcode,
            signal_name(-exitcode)
        )
    } else {
        format!("exited with code {exitcode}")
    }
}
