//! This process's identity: `current_process()`, `parent_process()`.

use crate::error::Result;
use crate::sys;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a child process is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// A single-threaded server process, started once from this binary,
    /// forks each child. Safe in a multi-threaded parent and fast. The
    /// default.
    ForkServer,
    /// Re-executes this binary for each child (`posix_spawn` of
    /// `/proc/self/exe`). The cleanest child, the slowest start.
    Spawn,
    /// Forks the calling process. Fastest, and the only method that can run
    /// a capturing closure; refused when the process has several threads.
    /// The child inherits the parent's memory and *all* of its descriptors,
    /// as in Python: a pipe end the parent holds stays open in the child, so
    /// a peer waiting for end of stream also waits for forked children.
    Fork,
}

impl StartMethod {
    /// The method's name as Python spells it.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::ForkServer => "forkserver",
            StartMethod::Spawn => "spawn",
            StartMethod::Fork => "fork",
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity of a process as this crate knows it (Python's
/// `current_process()` object).
///
/// # Examples
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.is_daemon());
/// ```
#[derive(Debug)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
    daemon: bool,
    identity: Vec<u32>,
    authkey: Vec<u8>,
    method: Option<StartMethod>,
    parent: Option<Arc<ParentProcess>>,
}

impl ProcessInfo {
    fn main() -> Self {
        let mut authkey = vec![0u8; 32];
        let _ = sys::random_bytes(&mut authkey);
        ProcessInfo {
            name: "MainProcess".into(),
            pid: sys::getpid(),
            daemon: false,
            identity: Vec::new(),
            authkey,
            method: None,
            parent: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_child(
        name: String,
        daemon: bool,
        identity: Vec<u32>,
        authkey: Vec<u8>,
        method: StartMethod,
        parent_pid: u32,
        parent_name: String,
        parent_pidfd: OwnedFd,
    ) -> Self {
        ProcessInfo {
            name,
            pid: sys::getpid(),
            daemon,
            identity,
            authkey,
            method: Some(method),
            parent: Some(Arc::new(ParentProcess {
                pid: parent_pid,
                name: parent_name,
                pidfd: parent_pidfd,
            })),
        }
    }

    /// The process name: `"MainProcess"`, or the name given to the child
    /// (default `Process-N`, `Process-N:M` for grandchildren).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether this process is daemonic.
    #[doc(alias = "daemon")]
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The authentication key, inherited from the parent (32 random bytes
    /// in the main process).
    pub fn authkey(&self) -> &[u8] {
        &self.authkey
    }

    /// The start method that created this process; `None` in the main
    /// process.
    pub fn start_method(&self) -> Option<StartMethod> {
        self.method
    }

    /// The position of this process in the tree: `[]` for the main process,
    /// `[2]` for its second child, `[2, 1]` for that child's first child.
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }

    /// This process is running, by definition.
    pub fn is_alive(&self) -> bool {
        true
    }
}

/// The process that started this one (Python's `parent_process()`).
#[derive(Debug)]
pub struct ParentProcess {
    pid: u32,
    name: String,
    pidfd: OwnedFd,
}

impl ParentProcess {
    /// The parent's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The parent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the parent is still running.
    pub fn is_alive(&self) -> bool {
        !sys::wait_readable(self.pidfd.as_fd(), Some(std::time::Instant::now())).unwrap_or(true)
    }

    /// Waits until the parent has exited or `timeout` passes; `true` if it
    /// exited.
    ///
    /// # Errors
    /// When polling the parent fails.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        Ok(sys::wait_readable(
            self.pidfd.as_fd(),
            sys::deadline_after(timeout),
        )?)
    }

    /// A descriptor that becomes readable when the parent exits.
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

static CURRENT: Mutex<Option<Arc<ProcessInfo>>> = Mutex::new(None);
static NEXT_CHILD: AtomicU32 = AtomicU32::new(1);
static SELF_PIDFD: Mutex<Option<(u32, OwnedFd)>> = Mutex::new(None);

/// This process (Python's `current_process()`).
///
/// # Examples
/// ```
/// assert!(multiproc::current_process().is_alive());
/// ```
pub fn current_process() -> Arc<ProcessInfo> {
    CURRENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(|| Arc::new(ProcessInfo::main()))
        .clone()
}

/// The parent of this process, or `None` in the main process (Python's
/// `parent_process()`).
///
/// # Examples
/// ```
/// assert!(multiproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<Arc<ParentProcess>> {
    current_process().parent.clone()
}

/// Installs a child's identity, replacing what a fork copied from the parent.
pub(crate) fn become_child(info: ProcessInfo) {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(info));
    NEXT_CHILD.store(1, Ordering::Relaxed);
}

/// The identity and default name for this process's next child.
pub(crate) fn next_child_identity() -> (Vec<u32>, String) {
    let n = NEXT_CHILD.fetch_add(1, Ordering::Relaxed);
    let mut identity = current_process().identity.clone();
    identity.push(n);
    let name = format!(
        "Process-{}",
        identity
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(":")
    );
    (identity, name)
}

/// A fresh duplicate of a pidfd for this very process, for children to watch.
pub(crate) fn self_pidfd() -> Result<OwnedFd> {
    let mut slot = SELF_PIDFD.lock().unwrap_or_else(|e| e.into_inner());
    let pid = sys::getpid();
    if slot.as_ref().is_none_or(|(p, _)| *p != pid) {
        *slot = Some((pid, sys::pidfd_open(pid)?));
    }
    Ok(slot.as_ref().expect("set above").1.try_clone()?)
}
