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
    /// A child process, or the pool worker running this task, ran past one
    /// of its [`Limits`](crate::Limits) and was stopped (a pool worker is
    /// replaced).
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, Limit};
    /// let e = Error::LimitExceeded { limit: Limit::Memory(256 << 20), usage: None };
    /// assert!(e.to_string().contains("memory limit of 256 MiB"));
    /// ```
    #[error("ran past its {limit} and was stopped")]
    LimitExceeded {
        /// Which limit.
        limit: crate::usage::Limit,
        /// What the process used until it was stopped (for a pool worker:
        /// over its whole life), when known.
        usage: Option<crate::usage::ResourceUsage>,
    },
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
    /// A task of a pool's map family failed; `index` is the position in the
    /// input of the item it failed on (for a fault that takes a whole chunk,
    /// such as a lost worker or a timeout, the chunk's first item). The
    /// task's own error is `source`; [`Error::root`] reaches it through any
    /// wrapping, and [`Error::panic`] and [`Error::signal`] look through it.
    #[error("the task for input item {index} failed: {source}")]
    Task {
        /// The item's position in the input, from 0.
        index: usize,
        /// What happened to the task.
        #[source]
        source: Box<Error>,
    },
    /// A manager call failed in the server: the method raised (`kind` is the
    /// Python exception's name, e.g. `"KeyError"`, or the name a Rust object
    /// gave its error; a panic in a method arrives as `"RuntimeError"` with the
    /// panic's message), or the server refused the
    /// request (`kind` is `"RemoteError"`, Python's `#TRACEBACK`).
    #[error("{kind} in the manager: {message}")]
    Remote {
        /// The exception's name.
        kind: String,
        /// Its message (its arguments, or the server's traceback text).
        message: String,
    },

    /// A task of a distributed pool killed its worker too many times and
    /// was moved to the pool's dead-letter list instead of being delivered
    /// again.
    #[error("task {task} killed its worker {attempts} times and was moved to the dead-letter list")]
    DeadLetter {
        /// The task: its id and the entry point it names.
        task: String,
        /// How many times it was started.
        attempts: u32,
    },
}

impl Error {
    /// The error itself, or for [`Error::Task`] the task's own error (for
    /// matching on what happened, whichever input item it was).
    ///
    /// # Examples
    /// ```
    /// use multiproc::Error;
    /// fn check(x: u32) -> u32 { assert!(x != 2, "two"); x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let e = pool.map(check, [0, 1, 2, 3]).unwrap_err();
    /// assert_eq!(e.task_index(), Some(2));
    /// assert!(matches!(e.root(), Error::Panicked(p) if p.message == "two"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn root(&self) -> &Error {
        let mut e = self;
        while let Error::Task { source, .. } = e {
            e = source;
        }
        e
    }

    /// For [`Error::Task`], the input item's index.
    pub fn task_index(&self) -> Option<usize> {
        match self {
            Error::Task { index, .. } => Some(*index),
            _ => None,
        }
    }

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
        match self.root() {
            Error::Killed(sig) => Some(*sig),
            Error::WorkerLost { exitcode, .. } if *exitcode < 0 => Some(-exitcode),
            _ => None,
        }
    }

    /// The panic, when a child panicked (also through [`Error::Task`]).
    pub fn panic(&self) -> Option<&RemotePanic> {
        match self.root() {
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

/// How an [`Error`] travels between processes (see the `Serialize` impl of
/// [`Error`]). Every variant keeps its data; an [`io::Error`] keeps its OS
/// error number when it has one, otherwise its kind and message.
#[derive(Serialize, Deserialize)]
enum WireError {
    Io {
        errno: Option<i32>,
        kind: String,
        message: String,
    },
    Eof,
    Truncated,
    Timeout,
    MessageTooLarge {
        size: u64,
        max: u64,
    },
    BadFrame(String),
    Encode(String),
    Decode(String),
    BufferTooShort {
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
        capacity: usize,
    },
    WrongDirection(String),
    State(String),
    DaemonicChildren,
    ForkWithThreads {
        threads: usize,
    },
    ClosureNeedsFork,
    Panicked(RemotePanic),
    Exited(i32),
    Killed(i32),
    Bootstrap(String),
    Authentication(String),
    Address(String),
    WorkerLost {
        pid: u32,
        exitcode: i32,
    },
    TaskTimeout(std::time::Duration),
    LimitExceeded {
        limit: crate::usage::Limit,
        usage: Option<crate::usage::ResourceUsage>,
    },
    InvalidArgument(String),
    PoolTerminated,
    Cancelled,
    PoolBroken(String),
    OwnerDied,
    WouldBlock,
    Empty,
    Full,
    Closed,
    Task {
        index: usize,
        source: Box<Error>,
    },
    Remote {
        kind: String,
        message: String,
    },
    DeadLetter {
        task: String,
        attempts: u32,
    },
}

/// Sends an error to another process (a child's `multiproc::Result<T>`,
/// an error inside a message). Every variant arrives as the same variant
/// with the same data, with two approximations:
///
/// * an [`Error::Io`] keeps its OS error number (`raw_os_error`) when it has
///   one, and otherwise its [`io::ErrorKind`] and message; its `source()`
///   chain is not kept beyond that message;
/// * the text of [`Error::State`] and [`Error::WrongDirection`] is a
///   `&'static str`: a received text is kept once per distinct text (at most
///   1024 texts of at most 256 bytes per process); past that limit the text
///   is replaced by a fixed one.
///
/// # Examples
/// ```
/// use multiproc::{Error, Process, Result};
///
/// fn parse(text: String) -> Result<u32> {
///     text.parse().map_err(|e| Error::InvalidArgument(format!("{text:?}: {e}")))
/// }
///
/// let mut p = Process::new(parse, ("forty-two".to_string(),));
/// p.start()?;
/// p.join()?;
/// let err = p.take_result()?.unwrap_err();
/// assert!(matches!(err, Error::InvalidArgument(ref m) if m.starts_with("\"forty-two\"")));
/// # Ok::<(), multiproc::Error>(())
/// ```
impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let wire = match self {
            Error::Io(e) => WireError::Io {
                errno: e.raw_os_error(),
                kind: format!("{:?}", e.kind()),
                message: e.to_string(),
            },
            Error::Eof => WireError::Eof,
            Error::Truncated => WireError::Truncated,
            Error::Timeout => WireError::Timeout,
            Error::MessageTooLarge { size, max } => WireError::MessageTooLarge {
                size: *size,
                max: *max,
            },
            Error::BadFrame(m) => WireError::BadFrame(m.clone()),
            Error::Encode(m) => WireError::Encode(m.clone()),
            Error::Decode(m) => WireError::Decode(m.clone()),
            Error::BufferTooShort { message, capacity } => WireError::BufferTooShort {
                message: message.clone(),
                capacity: *capacity,
            },
            Error::WrongDirection(m) => WireError::WrongDirection((*m).to_owned()),
            Error::State(m) => WireError::State((*m).to_owned()),
            Error::DaemonicChildren => WireError::DaemonicChildren,
            Error::ForkWithThreads { threads } => WireError::ForkWithThreads { threads: *threads },
            Error::ClosureNeedsFork => WireError::ClosureNeedsFork,
            Error::Panicked(p) => WireError::Panicked(p.clone()),
            Error::Exited(c) => WireError::Exited(*c),
            Error::Killed(s) => WireError::Killed(*s),
            Error::Bootstrap(m) => WireError::Bootstrap(m.clone()),
            Error::Authentication(m) => WireError::Authentication(m.clone()),
            Error::Address(m) => WireError::Address(m.clone()),
            Error::WorkerLost { pid, exitcode } => WireError::WorkerLost {
                pid: *pid,
                exitcode: *exitcode,
            },
            Error::TaskTimeout(d) => WireError::TaskTimeout(*d),
            Error::LimitExceeded { limit, usage } => WireError::LimitExceeded {
                limit: *limit,
                usage: *usage,
            },
            Error::InvalidArgument(m) => WireError::InvalidArgument(m.clone()),
            Error::PoolTerminated => WireError::PoolTerminated,
            Error::Cancelled => WireError::Cancelled,
            Error::PoolBroken(m) => WireError::PoolBroken(m.clone()),
            Error::OwnerDied => WireError::OwnerDied,
            Error::WouldBlock => WireError::WouldBlock,
            Error::Empty => WireError::Empty,
            Error::Full => WireError::Full,
            Error::Closed => WireError::Closed,
            Error::Task { index, source } => WireError::Task {
                index: *index,
                source: Box::new(copy_error(source)),
            },
            Error::Remote { kind, message } => WireError::Remote {
                kind: kind.clone(),
                message: message.clone(),
            },
            Error::DeadLetter { task, attempts } => WireError::DeadLetter {
                task: task.clone(),
                attempts: *attempts,
            },
        };
        wire.serialize(s)
    }
}

/// Receives an error sent by another process; see the `Serialize` impl.
impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match WireError::deserialize(d)? {
            WireError::Io {
                errno: Some(errno), ..
            } => Error::Io(io::Error::from_raw_os_error(errno)),
            WireError::Io {
                errno: None,
                kind,
                message,
            } => Error::Io(io::Error::new(io_kind_from_name(&kind), message)),
            WireError::Eof => Error::Eof,
            WireError::Truncated => Error::Truncated,
            WireError::Timeout => Error::Timeout,
            WireError::MessageTooLarge { size, max } => Error::MessageTooLarge { size, max },
            WireError::BadFrame(m) => Error::BadFrame(m),
            WireError::Encode(m) => Error::Encode(m),
            WireError::Decode(m) => Error::Decode(m),
            WireError::BufferTooShort { message, capacity } => {
                Error::BufferTooShort { message, capacity }
            }
            WireError::WrongDirection(m) => Error::WrongDirection(intern(&m)),
            WireError::State(m) => Error::State(intern(&m)),
            WireError::DaemonicChildren => Error::DaemonicChildren,
            WireError::ForkWithThreads { threads } => Error::ForkWithThreads { threads },
            WireError::ClosureNeedsFork => Error::ClosureNeedsFork,
            WireError::Panicked(p) => Error::Panicked(p),
            WireError::Exited(c) => Error::Exited(c),
            WireError::Killed(s) => Error::Killed(s),
            WireError::Bootstrap(m) => Error::Bootstrap(m),
            WireError::Authentication(m) => Error::Authentication(m),
            WireError::Address(m) => Error::Address(m),
            WireError::WorkerLost { pid, exitcode } => Error::WorkerLost { pid, exitcode },
            WireError::TaskTimeout(d) => Error::TaskTimeout(d),
            WireError::LimitExceeded { limit, usage } => Error::LimitExceeded { limit, usage },
            WireError::InvalidArgument(m) => Error::InvalidArgument(m),
            WireError::PoolTerminated => Error::PoolTerminated,
            WireError::Cancelled => Error::Cancelled,
            WireError::PoolBroken(m) => Error::PoolBroken(m),
            WireError::OwnerDied => Error::OwnerDied,
            WireError::WouldBlock => Error::WouldBlock,
            WireError::Empty => Error::Empty,
            WireError::Full => Error::Full,
            WireError::Closed => Error::Closed,
            WireError::Task { index, source } => Error::Task { index, source },
            WireError::Remote { kind, message } => Error::Remote { kind, message },
            WireError::DeadLetter { task, attempts } => Error::DeadLetter { task, attempts },
        })
    }
}

/// A `&'static str` equal to `text`, kept once per distinct text, with a
/// bound on what is kept in all (see the `Serialize` impl of [`Error`]).
fn intern(text: &str) -> &'static str {
    const MAX_TEXTS: usize = 1024;
    const MAX_LEN: usize = 256;
    static TEXTS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut end = text.len().min(MAX_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let mut texts = TEXTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = texts.iter().find(|t| **t == text) {
        return t;
    }
    if texts.len() >= MAX_TEXTS {
        return "(an error reported by another process; its text was not kept)";
    }
    let kept: &'static str = Box::leak(text.to_owned().into_boxed_str());
    texts.push(kept);
    kept
}

/// The [`io::ErrorKind`] whose `Debug` name is `name` (`Other` when none is).
fn io_kind_from_name(name: &str) -> io::ErrorKind {
    use io::ErrorKind as K;
    const KINDS: &[io::ErrorKind] = &[
        K::NotFound,
        K::PermissionDenied,
        K::ConnectionRefused,
        K::ConnectionReset,
        K::HostUnreachable,
        K::NetworkUnreachable,
        K::ConnectionAborted,
        K::NotConnected,
        K::AddrInUse,
        K::AddrNotAvailable,
        K::NetworkDown,
        K::BrokenPipe,
        K::AlreadyExists,
        K::WouldBlock,
        K::NotADirectory,
        K::IsADirectory,
        K::DirectoryNotEmpty,
        K::ReadOnlyFilesystem,
        K::StaleNetworkFileHandle,
        K::InvalidInput,
        K::InvalidData,
        K::TimedOut,
        K::WriteZero,
        K::StorageFull,
        K::NotSeekable,
        K::FileTooLarge,
        K::ResourceBusy,
        K::ExecutableFileBusy,
        K::Deadlock,
        K::TooManyLinks,
        K::ArgumentListTooLong,
        K::Interrupted,
        K::Unsupported,
        K::UnexpectedEof,
        K::OutOfMemory,
    ];
    KINDS
        .iter()
        .copied()
        .find(|k| format!("{k:?}") == name)
        .unwrap_or(K::Other)
}

/// A copy of `e`: the same variant with the same contents; an
/// [`Error::Io`] keeps its kind, OS error code and message.
pub(crate) fn copy_error(e: &Error) -> Error {
    use Error as E;
    match e {
        E::Io(io) => E::Io(match io.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(io.kind(), io.to_string()),
        }),
        E::Eof => E::Eof,
        E::Truncated => E::Truncated,
        E::Timeout => E::Timeout,
        E::MessageTooLarge { size, max } => E::MessageTooLarge {
            size: *size,
            max: *max,
        },
        E::BadFrame(s) => E::BadFrame(s.clone()),
        E::Encode(s) => E::Encode(s.clone()),
        E::Decode(s) => E::Decode(s.clone()),
        E::BufferTooShort { message, capacity } => E::BufferTooShort {
            message: message.clone(),
            capacity: *capacity,
        },
        E::WrongDirection(s) => E::WrongDirection(s),
        E::State(s) => E::State(s),
        E::DaemonicChildren => E::DaemonicChildren,
        E::ForkWithThreads { threads } => E::ForkWithThreads { threads: *threads },
        E::ClosureNeedsFork => E::ClosureNeedsFork,
        E::Panicked(p) => E::Panicked(p.clone()),
        E::Exited(c) => E::Exited(*c),
        E::Killed(s) => E::Killed(*s),
        E::Bootstrap(s) => E::Bootstrap(s.clone()),
        E::Authentication(s) => E::Authentication(s.clone()),
        E::Address(s) => E::Address(s.clone()),
        E::WorkerLost { pid, exitcode } => E::WorkerLost {
            pid: *pid,
            exitcode: *exitcode,
        },
        E::TaskTimeout(d) => E::TaskTimeout(*d),
        E::LimitExceeded { limit, usage } => E::LimitExceeded {
            limit: *limit,
            usage: *usage,
        },
        E::InvalidArgument(s) => E::InvalidArgument(s.clone()),
        E::PoolTerminated => E::PoolTerminated,
        E::Cancelled => E::Cancelled,
        E::PoolBroken(s) => E::PoolBroken(s.clone()),
        E::OwnerDied => E::OwnerDied,
        E::WouldBlock => E::WouldBlock,
        E::Empty => E::Empty,
        E::Full => E::Full,
        E::Closed => E::Closed,
        E::Task { index, source } => E::Task {
            index: *index,
            source: Box::new(copy_error(source)),
        },
        E::Remote { kind, message } => E::Remote {
            kind: kind.clone(),
            message: message.clone(),
        },
        E::DeadLetter { task, attempts } => E::DeadLetter {
            task: task.clone(),
            attempts: *attempts,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: &Error) -> Error {
        let bytes = serde_json::to_vec(e).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn every_kind_of_error_round_trips() {
        let cases = vec![
            Error::Io(io::Error::from_raw_os_error(2)),
            Error::Io(io::Error::new(io::ErrorKind::InvalidData, "bad bytes")),
            Error::Io(io::Error::from(io::ErrorKind::BrokenPipe)),
            Error::Eof,
            Error::Timeout,
            Error::MessageTooLarge { size: 10, max: 5 },
            Error::BufferTooShort {
                message: vec![1, 2, 3],
                capacity: 2,
            },
            Error::State("process has not been started"),
            Error::WrongDirection("read-only"),
            Error::Panicked(RemotePanic {
                message: "boom".into(),
                location: Some("a.rs:1:2".into()),
                process: "Process-1".into(),
            }),
            Error::Killed(9),
            Error::WorkerLost {
                pid: 7,
                exitcode: -9,
            },
            Error::TaskTimeout(std::time::Duration::from_millis(1500)),
            Error::LimitExceeded {
                limit: crate::usage::Limit::CpuTime(std::time::Duration::from_secs(2)),
                usage: Some(crate::usage::ResourceUsage {
                    cpu_time: std::time::Duration::from_millis(2100),
                    peak_rss: 1 << 20,
                }),
            },
            Error::InvalidArgument("x".into()),
            Error::Closed,
        ];
        for e in &cases {
            let back = round_trip(e);
            if !matches!(e, Error::Io(_)) {
                assert_eq!(format!("{e:?}"), format!("{back:?}"));
            }
            assert_eq!(e.to_string(), back.to_string());
        }
        let Error::Io(e) = round_trip(&cases[1]) else {
            panic!()
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let Error::Io(e) = round_trip(&cases[0]) else {
            panic!()
        };
        assert_eq!(e.raw_os_error(), Some(2));
    }

    #[test]
    fn received_texts_are_kept_within_bounds() {
        let long = "é".repeat(1000);
        let kept = intern(&long);
        assert!(kept.len() <= 256 && long.starts_with(kept));
        assert!(std::ptr::eq(intern("same text"), intern("same text")));
    }
}
