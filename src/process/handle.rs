//! [`ProcessHandle`]: a process of any result type, behind one trait.

use super::Process;
use crate::error::Result;
use serde::de::DeserializeOwned;
use std::fmt;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// A started-or-not process of any result type, for holding processes of
/// different `Process<R>` in one collection (Python's
/// `for p in procs: p.start()`).
///
/// Every [`Process<R>`] implements it; [`Process::erase`] boxes one. The
/// methods are those of [`Process`] that do not involve the result type;
/// to take a result, get the `Process<R>` back with
/// [`into_any`](ProcessHandle::into_any) and `downcast`.
///
/// # Examples
/// ```
/// use multiproc::{Process, ProcessHandle};
///
/// fn count(n: u32) -> u32 { n }
/// fn greet(who: String) -> String { format!("hello, {who}") }
/// fn quiet() {}
///
/// let mut procs: Vec<Box<dyn ProcessHandle>> = vec![
///     Process::new(count, (3,)).erase(),
///     Process::new(greet, ("world".to_string(),)).name("greeter").erase(),
///     Box::new(Process::new(quiet, ())),
/// ];
/// for p in &mut procs {
///     p.start()?;
/// }
/// for p in &mut procs {
///     p.join()?;
///     assert_eq!(p.exitcode(), Some(0));
/// }
/// // The result of one of them, by its type:
/// let greeter = procs.remove(1).into_any().downcast::<Process<String>>().unwrap();
/// assert_eq!(greeter.get_name(), "greeter");
/// let mut greeter = *greeter;
/// assert_eq!(greeter.take_result()?, "hello, world");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait ProcessHandle: Send + fmt::Debug {
    /// [`Process::start`].
    ///
    /// # Errors
    /// As [`Process::start`].
    fn start(&mut self) -> Result<()>;
    /// [`Process::join`].
    ///
    /// # Errors
    /// As [`Process::join`].
    fn join(&mut self) -> Result<()>;
    /// [`Process::join_timeout`].
    ///
    /// # Errors
    /// As [`Process::join`].
    fn join_timeout(&mut self, timeout: Duration) -> Result<bool>;
    /// [`Process::join_deadline`].
    ///
    /// # Errors
    /// As [`Process::join`].
    fn join_deadline(&mut self, deadline: Instant) -> Result<bool>;
    /// [`Process::terminate`].
    ///
    /// # Errors
    /// As [`Process::terminate`].
    fn terminate(&self) -> Result<()>;
    /// [`Process::kill`].
    ///
    /// # Errors
    /// As [`Process::terminate`].
    fn kill(&self) -> Result<()>;
    /// [`Process::interrupt`].
    ///
    /// # Errors
    /// As [`Process::terminate`].
    fn interrupt(&self) -> Result<()>;
    /// [`Process::close`].
    ///
    /// # Errors
    /// As [`Process::close`].
    fn close(&mut self) -> Result<()>;
    /// [`Process::pid`].
    fn pid(&self) -> Option<u32>;
    /// [`Process::exitcode`].
    fn exitcode(&self) -> Option<i32>;
    /// [`Process::is_alive`].
    fn is_alive(&self) -> bool;
    /// [`Process::is_daemon`].
    fn is_daemon(&self) -> bool;
    /// [`Process::get_name`].
    fn get_name(&self) -> &str;
    /// [`Process::sentinel`].
    ///
    /// # Errors
    /// As [`Process::sentinel`].
    fn sentinel(&self) -> Result<BorrowedFd<'_>>;
    /// The `Process<R>` itself, to `downcast` back to its type (and take
    /// its result).
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

impl<R> ProcessHandle for Process<R>
where
    R: DeserializeOwned + Send + 'static,
{
    fn start(&mut self) -> Result<()> {
        Process::start(self)
    }
    fn join(&mut self) -> Result<()> {
        Process::join(self)
    }
    fn join_timeout(&mut self, timeout: Duration) -> Result<bool> {
        Process::join_timeout(self, timeout)
    }
    fn join_deadline(&mut self, deadline: Instant) -> Result<bool> {
        Process::join_deadline(self, deadline)
    }
    fn terminate(&self) -> Result<()> {
        Process::terminate(self)
    }
    fn kill(&self) -> Result<()> {
        Process::kill(self)
    }
    fn interrupt(&self) -> Result<()> {
        Process::interrupt(self)
    }
    fn close(&mut self) -> Result<()> {
        Process::close(self)
    }
    fn pid(&self) -> Option<u32> {
        Process::pid(self)
    }
    fn exitcode(&self) -> Option<i32> {
        Process::exitcode(self)
    }
    fn is_alive(&self) -> bool {
        Process::is_alive(self)
    }
    fn is_daemon(&self) -> bool {
        Process::is_daemon(self)
    }
    fn get_name(&self) -> &str {
        Process::get_name(self)
    }
    fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        Process::sentinel(self)
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl<R> Process<R>
where
    R: DeserializeOwned + Send + 'static,
{
    /// This process as a [`ProcessHandle`] trait object, to keep with
    /// processes of other result types.
    ///
    /// # Examples
    /// See [`ProcessHandle`].
    pub fn erase(self) -> Box<dyn ProcessHandle> {
        Box::new(self)
    }
}
