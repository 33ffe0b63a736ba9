//! The parent's view of a started child, and the registry of children.
//!
//! Every child is tracked by a pidfd: it is the pollable sentinel, and
//! signals go through it, so a signal can never reach a recycled pid.
//! Direct children (spawn, fork) are reaped with `waitid(P_PIDFD)`; children
//! of the fork server are reaped by the server, which reports the status on a
//! per-child channel.

use super::limits::{ResourceUsage, waitid_pidfd_usage};
use crate::codec::le;
use crate::error::Result;
use crate::sys::{self, WaitStatus};
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

/// Where a child's exit status comes from.
pub(crate) enum Reaper {
    /// Our own child: `waitid` on the pidfd.
    Direct,
    /// A child of the fork server: it sends the status on this
    /// `SOCK_SEQPACKET` channel.
    ForkServer(OwnedFd),
}

pub(crate) struct ChildShared {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) pidfd: OwnedFd,
    reaper: Reaper,
    status: Mutex<Option<WaitStatus>>,
    usage: Mutex<Option<ResourceUsage>>,
}

impl ChildShared {
    pub(crate) fn new(
        pid: u32,
        name: String,
        daemon: bool,
        pidfd: OwnedFd,
        reaper: Reaper,
    ) -> Self {
        ChildShared {
            pid,
            name,
            daemon,
            pidfd,
            reaper,
            status: Mutex::new(None),
            usage: Mutex::new(None),
        }
    }

    pub(crate) fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The exit status if the child has ended, reaping it if needed; never
    /// blocks for long.
    pub(crate) fn try_status(&self) -> Result<Option<WaitStatus>> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_some() {
            return Ok(*status);
        }
        if !sys::wait_readable(self.pidfd.as_fd(), Some(Instant::now()))? {
            return Ok(None);
        }
        let reaped = match &self.reaper {
            Reaper::Direct => {
                waitid_pidfd_usage(self.pidfd.as_fd(), false)?.map(|(s, u)| (s, Some(u)))
            }
            // The process is gone; the server sends its status right after
            // reaping it, so this read is short.
            Reaper::ForkServer(chan) => Some(read_server_status(chan.as_fd())),
        };
        if let Some((st, usage)) = reaped {
            *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = usage;
            *status = Some(st);
        }
        Ok(*status)
    }

    /// What the child used, once it has been reaped (`None` before, or when
    /// a fork server went away without saying).
    pub(crate) fn usage(&self) -> Option<ResourceUsage> {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the child to end, until `deadline`.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Result<Option<WaitStatus>> {
        if let Some(s) = self.try_status()? {
            return Ok(Some(s));
        }
        if let Reaper::ForkServer(chan) = &self.reaper {
            // The server's message comes right after it has reaped the
            // child: one wake-up for the exit and the status, instead of
            // one for the exit and another for the message.
            if !sys::wait_readable(chan.as_fd(), deadline)? {
                return Ok(None);
            }
            if let Some(s) = self.try_status()? {
                return Ok(Some(s));
            }
            // End of stream while the child runs: the server went away
            // first. Wait for the child itself.
        }
        if !sys::wait_readable(self.pidfd.as_fd(), deadline)? {
            return Ok(None);
        }
        self.try_status()
    }

    /// Sends `sig` unless the child was already reaped.
    pub(crate) fn signal(&self, sig: i32) -> Result<()> {
        if self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        match sys::pidfd_send_signal(self.pidfd.as_fd(), sig) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => Ok(other?),
        }
    }
}

/// Reads the fork server's status message: `[kind u8][value i32 LE]`,
/// then the child's usage (`[cpu ns u64][peak rss u64]`).
/// If the server died first, the status is lost: reported as exit code 255.
fn read_server_status(chan: BorrowedFd<'_>) -> (WaitStatus, Option<ResourceUsage>) {
    let mut buf = [0u8; 21];
    let mut fds = VecDeque::new();
    match sys::recv_msg_into(chan, &mut buf, &mut fds, false) {
        Ok(n @ (5 | 21)) => {
            let v = le::i32_at(&buf, 1);
            let st = if buf[0] == 0 {
                WaitStatus::Exited(v)
            } else {
                WaitStatus::Signaled(v)
            };
            let usage = (n == 21).then(|| ResourceUsage::from_bytes(buf[5..].try_into().unwrap()));
            (st, usage)
        }
        _ => {
            log::warn!("the fork server went away before reporting a child's exit status");
            (WaitStatus::Exited(255), None)
        }
    }
}

static CHILDREN: Mutex<Vec<Arc<ChildShared>>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

fn children() -> std::sync::MutexGuard<'static, Vec<Arc<ChildShared>>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a started child; at normal exit, daemonic children are terminated
/// and every child is waited for.
pub(crate) fn register(child: Arc<ChildShared>) {
    AT_EXIT.call_once(|| sys::at_exit(at_exit_hook));
    let mut list = children();
    // Reap children whose `Process` was dropped without a join (only the
    // registry still holds them), as Python does at each start.
    list.retain(|c| Arc::strong_count(c) > 1 || !matches!(c.try_status(), Ok(Some(_))));
    list.push(child);
}

/// Forgets a child that has been joined.
pub(crate) fn unregister(child: &Arc<ChildShared>) {
    children().retain(|c| !Arc::ptr_eq(c, child));
}

/// Reaps every child that has ended and returns the ones still running.
pub(crate) fn active() -> Vec<Arc<ChildShared>> {
    let mut list = children();
    list.retain(|c| !matches!(c.try_status(), Ok(Some(_))));
    list.clone()
}

/// Forgets the parent's children in a freshly forked child.
pub(crate) fn reset_after_fork() {
    let mut list = children();
    // The Arcs still own the parent's pidfds, which this process inherited
    // as copies; closing them is harmless.
    list.clear();
}

extern "C" fn at_exit_hook() {
    cleanup_children();
}

/// Terminates daemonic children and waits for every child (Python's exit
/// behaviour), leaving no zombies.
pub(crate) fn cleanup_children() {
    let list: Vec<Arc<ChildShared>> = std::mem::take(&mut *children());
    for c in &list {
        if c.daemon {
            let _ = c.signal(libc::SIGTERM);
        }
    }
    for c in &list {
        let _ = c.wait(None);
    }
}
