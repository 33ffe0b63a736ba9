//! Who holds a lock: process identities that survive pid reuse, and a
//! liveness check for them.
//!
//! A process is named by its pid plus its start time (field 22 of
//! `/proc/<pid>/stat`, in clock ticks since boot): a recycled pid has a
//! later start time, so a stored identity never matches a stranger.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsFd;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A process identity: pid (below 2^22, the kernel's `PID_MAX_LIMIT`) and
/// start time, truncated to [`START_BITS`] bits (0 when `/proc` is
/// unreadable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ident {
    pub(crate) pid: u32,
    pub(crate) start: u64,
}

/// The cached identity of this process, packed `pid << 41 | start`; 0 when
/// not computed yet. Cleared in the child after `fork` (pthread_atfork).
static SELF_IDENT: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn forget_identity_in_child() {
    SELF_IDENT.store(0, Ordering::Relaxed);
}

/// Bits of the start time kept in the packed identity.
pub(crate) const START_BITS: u32 = 41;

/// This process's identity, cached (no system call on the fast path).
#[inline]
pub(crate) fn self_ident() -> Ident {
    let v = SELF_IDENT.load(Ordering::Relaxed);
    if v != 0 {
        return Ident {
            pid: (v >> START_BITS) as u32,
            start: v & ((1 << START_BITS) - 1),
        };
    }
    compute_self_ident()
}

#[cold]
fn compute_self_ident() -> Ident {
    ATFORK.call_once(|| {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe as a fork handler must be.
        unsafe { super::at_fork_child(forget_identity_in_child) };
    });
    let pid = super::getpid();
    let start = start_time(pid).ok().flatten().unwrap_or(0) & ((1 << START_BITS) - 1);
    SELF_IDENT.store((u64::from(pid) << START_BITS) | start, Ordering::Relaxed);
    Ident { pid, start }
}

thread_local! {
    static TID: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// This thread's id, cached per thread (and recomputed in a forked child).
#[inline]
pub(crate) fn self_tid() -> u32 {
    let pid = self_ident().pid;
    TID.with(|c| {
        let (p, t) = c.get();
        if p == pid {
            return t;
        }
        let t = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        c.set((pid, t));
        t
    })
}

/// The start time of `pid` from `/proc/<pid>/stat`: `Ok(None)` when the
/// process does not exist or `/proc` is not mounted.
fn start_time(pid: u32) -> io::Result<Option<u64>> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // Fields from 3 (state) on; the start time is field 22.
    Ok(rest.split_whitespace().nth(19).and_then(|s| s.parse().ok()))
}

/// Whether the process `who` still runs. A process that has exited but not
/// been reaped yet (a zombie) counts as dead. When in doubt (an unexpected
/// error), the answer is "alive": a wrong "dead" would hand a lock to two
/// owners.
///
/// # References
/// pidfd_open(2), proc(5)
pub(crate) fn is_alive(who: Ident) -> bool {
    let pidfd = match super::pidfd_open(who.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return false,
        Err(_) => return true,
    };
    if who.start != 0 {
        match start_time(who.pid) {
            // Gone, or the pid now names another process.
            Ok(None) => return false,
            Ok(Some(s)) if s & ((1 << START_BITS) - 1) != who.start => return false,
            _ => {}
        }
    }
    // The pidfd refers to the process that had the pid when it was opened;
    // the start time read afterwards matched, so it is the same process.
    // It becomes readable once the whole process has exited.
    !super::wait_readable(pidfd.as_fd(), Some(Instant::now())).unwrap_or(false)
}
