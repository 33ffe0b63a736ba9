//! Resource limits for a child process or a pool worker ([`Limits`]), the
//! limit a child ran into ([`Limit`]), and what a child or task used
//! ([`ResourceUsage`]).
//!
//! # How the limits work
//!
//! The child applies them to itself, after its bootstrap and before the
//! target runs, with every start method:
//!
//! * **memory**: `RLIMIT_AS`, a cap on the process's address space. An
//!   allocation past it fails; Rust then aborts the process (SIGABRT). A
//!   SIGABRT handler installed with the limit notes, when the abort follows
//!   an out-of-memory failure (`errno` is `ENOMEM`), that the limit was hit
//!   and writes that on a pipe to the parent, which then reports
//!   [`Limit::Memory`] instead of a bare SIGABRT. One case escapes it: with
//!   `RUST_BACKTRACE` set, std prints a backtrace between the failure and
//!   the abort; when there is memory enough for that (a single huge
//!   request, far above what is left) and a system call made while printing
//!   fails, `errno` no longer tells, and the child is reported as killed by
//!   SIGABRT.
//! * **CPU time**: `RLIMIT_CPU`, in whole seconds (rounded up). When it is
//!   used up the kernel sends SIGXCPU, which ends the process; for a
//!   [`Process`](crate::Process) the hard limit is one second later (SIGKILL
//!   if SIGXCPU is blocked). A pool worker sets its soft limit before each
//!   task to the CPU time it has used so far plus the limit, so the limit is
//!   per task.
//!
//! cgroup v2 memory limits are not used (where this was built, the memory
//! controller sits on a cgroup v1 hierarchy and the v2 hierarchy has none):
//! `RLIMIT_AS` caps address space, not resident memory, so leave headroom
//! for what the runtime reserves (thread stacks, allocator arenas: tens of
//! MiB). Children the target starts inherit the limits, the handler and
//! the marker pipe.
#![allow(unsafe_code)]

use crate::codec::Handle;
use crate::sys::WaitStatus;
pub use crate::usage::{Limit, ResourceUsage};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

/// Resource limits for a [`Process`](crate::Process) (see
/// [`Process::limits`](crate::Process::limits)) or for each worker of a
/// [`Pool`](crate::Pool) (see
/// [`PoolBuilder::worker_limits`](crate::PoolBuilder::worker_limits)).
///
/// A child that runs past one fails with [`Error::LimitExceeded`](crate::Error::LimitExceeded)
/// naming the limit, rather than a bare SIGABRT or SIGXCPU.
///
/// * [`memory`](Self::memory) caps the child's address space (`RLIMIT_AS`),
///   so it counts reserved as well as resident memory: leave tens of MiB of
///   headroom for thread stacks and allocator arenas. An allocation past it
///   aborts the child; the abort is recognised by the `ENOMEM` left by the
///   failed allocation. With `RUST_BACKTRACE` set, std prints a backtrace
///   between the failure and the abort; when that printing finds memory
///   enough (a single request far larger than what was left) and one of its
///   system calls fails, the cause can no longer be told and the child is
///   reported as killed by SIGABRT. cgroup memory limits are not used.
/// * [`cpu_time`](Self::cpu_time) caps user + system CPU time
///   (`RLIMIT_CPU`), in whole seconds, rounded up.
///
/// # Examples
/// ```
/// use multiproc::{Error, Limit, Limits, Process};
/// use std::time::Duration;
///
/// fn hog() -> usize {
///     let mut v: Vec<Vec<u8>> = Vec::new();
///     loop {
///         v.push(vec![1u8; 64 << 20]);
///     }
/// }
///
/// let limits = Limits::new().memory(256 << 20).cpu_time(Duration::from_secs(30));
/// let mut p = Process::new(hog, ()).limits(limits);
/// p.start()?;
/// p.join()?;
/// match p.take_result() {
///     Err(Error::LimitExceeded { limit: Limit::Memory(bytes), .. }) => assert_eq!(bytes, 256 << 20),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    memory: Option<u64>,
    cpu_time: Option<Duration>,
    /// The CPU limit applies to each pool task, not to the process.
    pub(crate) per_task: bool,
}

impl Limits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps the address space at `bytes` (`RLIMIT_AS`).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Caps the CPU time (user + system) at `time`, rounded up to whole
    /// seconds (`RLIMIT_CPU`); at least one second.
    pub fn cpu_time(mut self, time: Duration) -> Self {
        self.cpu_time = Some(time);
        self
    }

    /// The memory limit in bytes, if any.
    pub fn get_memory(&self) -> Option<u64> {
        self.memory
    }

    /// The CPU time limit, if any.
    pub fn get_cpu_time(&self) -> Option<Duration> {
        self.cpu_time
    }

    fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu_time.is_none()
    }

    /// What the child needs (sent in its header) and the parent's end of
    /// the pipe on which the child reports a memory limit hit.
    pub(crate) fn arm(&self) -> io::Result<Option<(ChildLimits, OwnedFd)>> {
        if self.is_empty() {
            return Ok(None);
        }
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        Ok(Some((
            ChildLimits {
                memory: self.memory,
                cpu_time: self.cpu_time,
                per_task: self.per_task,
                marker: Handle(write),
            },
            read,
        )))
    }
}

/// The limits as they travel to the child in its header.
#[derive(Serialize, Deserialize)]
pub(crate) struct ChildLimits {
    memory: Option<u64>,
    cpu_time: Option<Duration>,
    per_task: bool,
    marker: Handle<OwnedFd>,
}

/// What the child writes on its marker pipe when it aborts after an
/// allocation failed under its memory limit.
const MEMORY_HIT: u8 = b'M';

/// The child's end of the marker pipe, or -1.
static MARKER_FD: AtomicI32 = AtomicI32::new(-1);
/// The per-task CPU limit of a pool worker in nanoseconds (0: none).
static TASK_CPU_NS: AtomicU64 = AtomicU64::new(0);

fn whole_seconds(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

fn set_limit(resource: rustix::process::Resource, soft: u64, hard: Option<u64>) -> io::Result<()> {
    let old = rustix::process::getrlimit(resource);
    // Never above the hard limit already in place.
    let cap = |v: u64| old.maximum.map_or(v, |m| v.min(m));
    let new = rustix::process::Rlimit {
        current: Some(cap(soft)),
        maximum: hard.map(cap).or(old.maximum),
    };
    Ok(rustix::process::setrlimit(resource, new)?)
}

/// In the child, before its target: applies `limits`.
pub(crate) fn apply_in_child(limits: ChildLimits) -> Result<(), String> {
    MARKER_FD.store(limits.marker.into_inner().into_raw_fd(), Ordering::Relaxed);
    if let Some(cpu) = limits.cpu_time {
        // SIGXCPU must end the process for the parent to name the limit.
        crate::sys::set_signal(libc::SIGXCPU, crate::sys::Disposition::Default);
        if limits.per_task {
            let ns = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX).max(1);
            TASK_CPU_NS.store(ns, Ordering::Relaxed);
        } else {
            let used = self_usage().cpu_time;
            let soft = whole_seconds(used + cpu);
            set_limit(rustix::process::Resource::Cpu, soft, Some(soft + 1))
                .map_err(|e| format!("cannot set the CPU time limit: {e}"))?;
        }
    }
    if let Some(bytes) = limits.memory {
        install_abort_handler();
        set_limit(rustix::process::Resource::As, bytes, Some(bytes))
            .map_err(|e| format!("cannot set the memory limit: {e}"))?;
    }
    Ok(())
}

extern "C" fn on_abort(_sig: libc::c_int) {
    // SAFETY: reading errno through its thread-local location is
    // async-signal-safe; the handler runs on the thread that aborted, so it
    // sees that thread's errno (the `ENOMEM` of the failed allocation when
    // Rust's allocation-failure path led here).
    let enomem = unsafe { *libc::__errno_location() } == libc::ENOMEM;
    let fd = MARKER_FD.load(Ordering::Relaxed);
    if enomem && fd >= 0 {
        // SAFETY: write(2) and signal(2) are async-signal-safe; `fd` is the
        // marker pipe this process owns for its whole life (never closed),
        // and the byte lives in static memory.
        unsafe {
            libc::write(fd, [MEMORY_HIT].as_ptr().cast(), 1);
        }
    }
    // SAFETY: as above; SIGABRT is blocked while this handler runs, so the
    // raised signal is delivered, with the default action (the process
    // ends with SIGABRT as before), once the handler returns.
    unsafe {
        libc::signal(libc::SIGABRT, libc::SIG_DFL);
        libc::raise(libc::SIGABRT);
    }
}

fn install_abort_handler() {
    // SAFETY: `sigaction` is plain data, zeroed then filled in; the handler
    // is an `extern "C" fn(c_int)` that only does async-signal-safe work.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGABRT, &sa, std::ptr::null_mut());
    }
}

/// This process's usage so far (`getrusage(RUSAGE_SELF)`).
fn self_usage() -> ResourceUsage {
    // SAFETY: `rusage` is plain data that getrusage fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage`; RUSAGE_SELF cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ResourceUsage::from_rusage(&ru)
}

/// `/proc/self/clear_refs`, kept open by a pool worker (-1: not open yet,
/// -2: cannot be opened).
static CLEAR_REFS: AtomicI32 = AtomicI32::new(-1);

/// Resets this process's peak-RSS mark (Linux ≥ 4.0); false if it cannot.
fn reset_peak_rss() -> bool {
    let mut fd = CLEAR_REFS.load(Ordering::Relaxed);
    if fd == -1 {
        fd = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/clear_refs")
            .map_or(-2, IntoRawFd::into_raw_fd);
        CLEAR_REFS.store(fd, Ordering::Relaxed);
    }
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was opened above and is kept open for the life of the
    // worker; nothing else closes it.
    let f = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::write(f, b"5").is_ok()
}

/// CPU time (ns) this worker had used when its last task ended
/// (`u64::MAX`: no task yet).
static LAST_CPU_NS: AtomicU64 = AtomicU64::new(u64::MAX);
/// The peak RSS reported for the last task (`u64::MAX`: none yet).
static LAST_PEAK: AtomicU64 = AtomicU64::new(u64::MAX);
/// Whether the peak-RSS mark is reset before the next task.
static RESET_PEAK: AtomicBool = AtomicBool::new(true);

/// In a pool worker, before a task: resets the peak-RSS mark when the last
/// task moved it, arms the per-task CPU limit, and returns the CPU time
/// used so far.
///
/// One system call per task in the steady state (the `getrusage` of
/// [`task_end`]): the CPU time at the end of one task is the start of the
/// next (so the worker's own few microseconds between tasks count towards
/// the next task), and the peak mark is reset only after a task whose peak
/// differed from the one before it. When it did not, the mark is that
/// same peak, which the next task's figure then includes.
pub(crate) fn task_start() -> Duration {
    if RESET_PEAK.load(Ordering::Relaxed) {
        reset_peak_rss();
    }
    let used = match LAST_CPU_NS.load(Ordering::Relaxed) {
        u64::MAX => self_usage().cpu_time,
        ns => Duration::from_nanos(ns),
    };
    let limit = TASK_CPU_NS.load(Ordering::Relaxed);
    if limit != 0 {
        let soft = whole_seconds(used + Duration::from_nanos(limit));
        let _ = set_limit(rustix::process::Resource::Cpu, soft, None);
    }
    used
}

/// Whether a CPU-time limit per task is set in this worker (then every
/// task is measured, since the next task's limit counts from the last
/// task's end).
pub(crate) fn task_cpu_limited() -> bool {
    TASK_CPU_NS.load(Ordering::Relaxed) != 0
}

/// In a pool worker, after a task that was not measured: the next measured
/// task reads its starting CPU time afresh and resets the peak mark first,
/// so that it is not charged with what this one used.
pub(crate) fn task_unmeasured() {
    LAST_CPU_NS.store(u64::MAX, Ordering::Relaxed);
    LAST_PEAK.store(u64::MAX, Ordering::Relaxed);
    RESET_PEAK.store(true, Ordering::Relaxed);
}

/// In a pool worker, after a task that started when [`task_start`]
/// returned `cpu_before`: what the task used.
pub(crate) fn task_end(cpu_before: Duration) -> ResourceUsage {
    let now = self_usage();
    let ns = u64::try_from(now.cpu_time.as_nanos()).unwrap_or(u64::MAX - 1);
    LAST_CPU_NS.store(ns, Ordering::Relaxed);
    let prev = LAST_PEAK.swap(now.peak_rss, Ordering::Relaxed);
    RESET_PEAK.store(prev != now.peak_rss, Ordering::Relaxed);
    ResourceUsage {
        cpu_time: now.cpu_time.saturating_sub(cpu_before),
        peak_rss: now.peak_rss,
    }
}

/// Reaps the child behind `pidfd` like `waitid(P_PIDFD)`, also returning
/// its resource usage (the kernel's `waitid` takes a `rusage` pointer,
/// which the C library does not expose). `Ok(None)`: still running.
pub(crate) fn waitid_pidfd_usage(
    pidfd: BorrowedFd<'_>,
    block: bool,
) -> io::Result<Option<(WaitStatus, ResourceUsage)>> {
    let mut flags = libc::WEXITED;
    if !block {
        flags |= libc::WNOHANG;
    }
    loop {
        // SAFETY: plain data, zeroed: si_pid stays 0 when WNOHANG finds
        // nothing to reap.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to a siginfo_t and a rusage, which the
        // kernel fills in; the pidfd is borrowed, so open for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                libc::P_PIDFD,
                pidfd.as_raw_fd(),
                &mut info as *mut libc::siginfo_t,
                flags,
                &mut ru as *mut libc::rusage,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: the kernel filled in a SIGCHLD siginfo (or left it zeroed).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        let st = if info.si_code == libc::CLD_EXITED {
            WaitStatus::Exited(status)
        } else {
            WaitStatus::Signaled(status)
        };
        return Ok(Some((st, ResourceUsage::from_rusage(&ru))));
    }
}

/// After the child ended: the limit it ran into, if any, from how it
/// ended, its marker pipe and its usage.
pub(crate) fn verdict(
    limits: &Limits,
    marker: &OwnedFd,
    status: WaitStatus,
    usage: Option<ResourceUsage>,
) -> Option<Limit> {
    let WaitStatus::Signaled(sig) = status else {
        return None;
    };
    if sig == libc::SIGABRT {
        if let Some(bytes) = limits.memory {
            let mut b = [0u8; 1];
            if matches!(rustix::io::read(marker, &mut b), Ok(1)) && b[0] == MEMORY_HIT {
                return Some(Limit::Memory(bytes));
            }
        }
    }
    let cpu = limits.cpu_time?;
    if sig == libc::SIGXCPU {
        return Some(Limit::CpuTime(cpu));
    }
    // The hard limit (a process, not a pool worker): SIGKILL a second after
    // SIGXCPU, for a child that blocked or ignored it.
    if sig == libc::SIGKILL && !limits.per_task && usage.is_some_and(|u| u.cpu_time >= cpu) {
        return Some(Limit::CpuTime(cpu));
    }
    None
}
