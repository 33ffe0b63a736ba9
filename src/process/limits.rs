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
//!   SIGABRT handler installed with the limit tells such an abort from
//!   others and writes that on a pipe to the parent, which then reports
//!   [`Limit::Memory`] instead of a bare SIGABRT. The handler counts an
//!   abort as the limit's when either
//!   - `errno` is `ENOMEM`, as the failed allocation left it: std prints
//!     `memory allocation of N bytes failed` and aborts. With
//!     `RUST_BACKTRACE` set (`1` or `full`, read once per process), std
//!     also prints a backtrace before it aborts; looking up debug info
//!     makes system calls that fail (`ENOENT`), so `errno` cannot be
//!     relied on then (nor when stderr is closed); or
//!   - the address space the child mapped since the limit was set
//!     (`/proc/self/statm`, read then and, with async-signal-safe calls, in
//!     the handler) is more than half of what the limit left: then a
//!     request no larger than what the child has mapped since could have
//!     failed, which covers a child that grows by blocks or by doubling a
//!     buffer.
//!
//!   What remains: an abort of another cause in a child that has mapped
//!   more than half of what its limit left is reported as
//!   [`Limit::Memory`], and with `RUST_BACKTRACE` set a single failed
//!   request larger than all the child mapped before it (say
//!   `vec![0u8; 1 << 40]` early in the child) is reported as SIGABRT when
//!   the backtrace printing changed `errno`.
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
///   failed allocation or, when that is gone (std prints a backtrace first
///   under `RUST_BACKTRACE`), by the child having mapped more than half of
///   what the limit left it. A single request larger than all the child
///   mapped before, made under `RUST_BACKTRACE`, may be reported as a
///   plain SIGABRT; another abort in a child past that half is reported as
///   the limit. cgroup memory limits are not used.
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
/// For the SIGABRT handler: the `RLIMIT_AS` in place in the child, in
/// bytes (0: none), the address space in use when it was set, in pages,
/// and the page size.
static AS_LIMIT: AtomicU64 = AtomicU64::new(0);
static AS_BASE_PAGES: AtomicU64 = AtomicU64::new(0);
static PAGE_SIZE: AtomicU64 = AtomicU64::new(0);
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
        set_limit(rustix::process::Resource::As, bytes, Some(bytes))
            .map_err(|e| format!("cannot set the memory limit: {e}"))?;
        AS_BASE_PAGES.store(statm_pages().unwrap_or(0), Ordering::Relaxed);
        let set = rustix::process::getrlimit(rustix::process::Resource::As).current;
        AS_LIMIT.store(set.unwrap_or(0), Ordering::Relaxed);
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        PAGE_SIZE.store(u64::try_from(page).unwrap_or(0), Ordering::Relaxed);
        install_abort_handler();
    }
    Ok(())
}

extern "C" fn on_abort(_sig: libc::c_int) {
    // SAFETY: reading errno through its thread-local location is
    // async-signal-safe; the handler runs on the thread that aborted, so it
    // sees that thread's errno (the `ENOMEM` of the failed allocation when
    // Rust's allocation-failure path led here and left it alone). Read
    // before this handler makes a system call of its own.
    let enomem = unsafe { *libc::__errno_location() } == libc::ENOMEM;
    let fd = MARKER_FD.load(Ordering::Relaxed);
    if fd >= 0 && (enomem || address_space_near_limit()) {
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

/// In the SIGABRT handler: whether the address space mapped since the
/// memory limit was set (the first field of `/proc/self/statm`, now and
/// then) is more than half of what the limit left, that is, whether a
/// request no larger than what the child has mapped since then could have
/// failed. Only async-signal-safe calls; false when the file cannot be
/// read.
fn address_space_near_limit() -> bool {
    let limit = AS_LIMIT.load(Ordering::Relaxed);
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    if limit == 0 || page == 0 {
        return false;
    }
    let Some(now) = statm_pages() else {
        return false;
    };
    let base = AS_BASE_PAGES.load(Ordering::Relaxed).saturating_mul(page);
    let grown = now.saturating_mul(page).saturating_sub(base);
    grown > limit.saturating_sub(base) / 2
}

/// This process's address space in pages, from `/proc/self/statm`, read
/// with async-signal-safe calls only (open, read, close).
fn statm_pages() -> Option<u64> {
    let mut buf = [0u8; 128];
    // SAFETY: open(2), read(2) and close(2) are async-signal-safe; the
    // path is a NUL-terminated static string, `buf` is a local buffer of
    // `buf.len()` bytes that read(2) fills at most, and the descriptor is
    // this function's own, closed before it returns.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let n = usize::try_from(n).ok()?;
    statm_size_pages(&buf[..n.min(buf.len())])
}

/// The first field of `/proc/self/statm` (the address space in pages).
fn statm_size_pages(statm: &[u8]) -> Option<u64> {
    let digits = statm.iter().take_while(|b| b.is_ascii_digit());
    let mut pages: u64 = 0;
    let mut any = false;
    for &d in digits {
        pages = pages.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(pages)
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

#[cfg(test)]
mod tests {
    use super::statm_size_pages;

    #[test]
    fn statm_first_field() {
        assert_eq!(statm_size_pages(b"65536 1200 800 1 0 300 0\n"), Some(65536));
        assert_eq!(statm_size_pages(b"7"), Some(7));
        assert_eq!(statm_size_pages(b""), None);
        assert_eq!(statm_size_pages(b" 12"), None);
        assert_eq!(statm_size_pages(b"99999999999999999999999 1"), None);
    }

    #[test]
    fn this_process_statm_is_read() {
        assert!(super::statm_pages().is_some_and(|p| p > 0));
    }
}
