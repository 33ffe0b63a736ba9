//! Processes: pidfds, signals, reaping.
//!
//! Fork, posix_spawn and exit are in `libc_only`.

use super::retry;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use std::ffi::CStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// How a process ended, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    /// `_exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

impl WaitStatus {
    /// Python's `exitcode`: the code, or minus the signal number.
    pub(crate) fn exitcode(self) -> i32 {
        match self {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled(s) => -s,
        }
    }
}

pub(crate) fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// Waits for the child `pid` to end and reaps it.
///
/// # References
/// waitpid(2)
pub(crate) fn reap_pid(pid: u32) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::INVAL)?;
    retry(|| rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()))?;
    Ok(())
}

/// The signal numbered `sig`; `EINVAL` for a number that names no standard
/// signal (the real-time signals are not used here).
fn signal(sig: i32) -> io::Result<Signal> {
    Signal::from_named_raw(sig).ok_or_else(|| Errno::INVAL.into())
}

/// A pidfd for `pid`: pollable (readable once the process has exited) and a
/// race-free target for signals. Close-on-exec.
///
/// # References
/// pidfd_open(2)
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // Pid 0 and numbers beyond `pid_t` name no process: EINVAL, as the
    // kernel says for them.
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::INVAL)?;
    // pidfd_open sets O_CLOEXEC itself.
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// Sends `sig` to the process behind `pidfd`. A process that has already been
/// reaped yields `ESRCH` (never a signal to a recycled pid).
///
/// # References
/// pidfd_send_signal(2)
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    Ok(rustix::process::pidfd_send_signal(pidfd, signal(sig)?)?)
}

/// Reaps the child behind `pidfd` if it has exited (`WNOHANG`), or waits.
/// `Ok(None)` means it is still running.
///
/// # References
/// waitid(2) (`P_PIDFD`)
pub(crate) fn waitid_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<WaitStatus>> {
    let mut options = WaitIdOptions::EXITED;
    if !block {
        options |= WaitIdOptions::NOHANG;
    }
    let Some(status) = retry(|| rustix::process::waitid(WaitId::PidFd(pidfd), options))? else {
        return Ok(None);
    };
    // Without WSTOPPED or WCONTINUED the child either exited or was killed
    // (CLD_KILLED or CLD_DUMPED).
    Ok(Some(match status.exit_status() {
        Some(code) => WaitStatus::Exited(code),
        None => WaitStatus::Signaled(status.terminating_signal().unwrap_or(0)),
    }))
}

/// Sends `sig` to this very process.
pub(crate) fn kill_self(sig: i32) {
    if let Ok(sig) = signal(sig) {
        let _ = rustix::process::kill_process(rustix::process::getpid(), sig);
    }
}

/// Names this process after the program in its command line (the base name
/// of `argv[0]`), instead of `exe` from `/proc/self/exe`, so that `ps` and
/// `top` show what a fork would.
pub(crate) fn name_after_program() {
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let base = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    // The kernel keeps 15 bytes plus the terminating NUL.
    let mut name = [0u8; 16];
    let n = base.len().min(15);
    name[..n].copy_from_slice(&base[..n]);
    if n == 0 || name[..n].contains(&0) {
        return;
    }
    if let Ok(name) = CStr::from_bytes_until_nul(&name) {
        let _ = rustix::thread::set_name(name);
    }
}

/// Raises this process's soft limit on open descriptors to its hard limit
/// (a server holding many clients' connections).
pub(crate) fn raise_open_files_limit() -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let old = getrlimit(Resource::Nofile);
    if old.current == old.maximum {
        return Ok(());
    }
    Ok(setrlimit(
        Resource::Nofile,
        Rlimit {
            current: old.maximum,
            maximum: old.maximum,
        },
    )?)
}

/// How many threads this process has (`/proc/self/task`); an error when
/// that cannot be told (callers must then assume other threads exist).
pub(crate) fn thread_count() -> io::Result<usize> {
    std::fs::read_dir("/proc/self/task")?.try_fold(0, |n, e| e.map(|_| n + 1))
}

/// Fills `buf` from the kernel's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        filled += retry(|| {
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())
        })?;
    }
    Ok(())
}
