//! Processes: pidfds, signals, reaping, fork, posix_spawn, exit.
#![allow(unsafe_code)]

use super::{cvt, cvt_r};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

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
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// A pidfd for `pid`: pollable (readable once the process has exited) and a
/// race-free target for signals.
///
/// # References
/// pidfd_open(2)
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    // pidfd_open sets O_CLOEXEC itself.
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to the process behind `pidfd`. A process that has already been
/// reaped yields `ESRCH` (never a signal to a recycled pid).
///
/// # References
/// pidfd_send_signal(2)
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: a plain syscall; a null siginfo means "as kill(2) would".
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// Reaps the child behind `pidfd` if it has exited (`WNOHANG`), or waits.
/// `Ok(None)` means it is still running.
///
/// # References
/// waitid(2) (`P_PIDFD`)
pub(crate) fn waitid_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<WaitStatus>> {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let mut flags = libc::WEXITED;
    if !block {
        flags |= libc::WNOHANG;
    }
    // SAFETY: `info` is a live, writable siginfo_t.
    cvt_r(|| unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            flags,
        )
    })?;
    // SAFETY: waitid filled `info` for SIGCHLD (or left si_pid 0 for WNOHANG).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => WaitStatus::Exited(status),
        _ => WaitStatus::Signaled(status),
    }))
}

/// The result of [`fork`].
pub(crate) enum Fork {
    Parent(u32),
    Child,
}

/// `fork(2)`.
///
/// # Safety
/// In the child only async-signal-safe work is sound if the parent had other
/// threads; callers either check that the process is single-threaded or
/// restrict the child to such work, and the child must leave through
/// [`exit_now`], never by returning or unwinding into the caller's frames
/// that assume a single owner of parent resources.
pub(crate) unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: forwarded to the caller's obligations.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid as u32)
    })
}

/// Ends the process at once with `code`: no atexit handlers, no unwinding.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always sound to call.
    unsafe { libc::_exit(code) }
}

/// Sends `sig` to this very process.
pub(crate) fn kill_self(sig: i32) {
    // SAFETY: kill with our own pid.
    unsafe {
        libc::kill(libc::getpid(), sig);
    }
}

/// Signal dispositions used around children.
#[derive(Clone, Copy)]
pub(crate) enum Disposition {
    Default,
    Ignore,
}

/// Sets the disposition of `sig` to default or ignore.
pub(crate) fn set_signal(sig: i32, disp: Disposition) {
    let handler = match disp {
        Disposition::Default => libc::SIG_DFL,
        Disposition::Ignore => libc::SIG_IGN,
    };
    // SAFETY: installing SIG_DFL/SIG_IGN runs no code of ours in a handler.
    unsafe {
        libc::signal(sig, handler);
    }
}

/// Blocks or unblocks `sig` for the calling thread.
pub(crate) fn block_signal(sig: i32, block: bool) {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
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
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // from `name`, which is 16 bytes long and ends with a NUL.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// How many threads this process has (`/proc/self/task`); an error when
/// that cannot be told (callers must then assume other threads exist).
pub(crate) fn thread_count() -> io::Result<usize> {
    std::fs::read_dir("/proc/self/task")?.try_fold(0, |n, e| e.map(|_| n + 1))
}

/// Starts `/proc/self/exe` (this very binary, even if the file was replaced
/// on disk) with `argv0`, the current environment plus `extra_env`, and
/// `give` duplicated onto fd 3. Every other fd above 2 is closed in the
/// child, so it inherits stdio and `give` only.
///
/// # References
/// posix_spawn(3), `posix_spawn_file_actions_addclosefrom_np`
pub(crate) fn spawn_self(
    argv0: &CStr,
    extra_env: &[(&str, &str)],
    give: BorrowedFd<'_>,
) -> io::Result<u32> {
    let path = c"/proc/self/exe";
    let argv = [argv0.as_ptr(), ptr::null()];
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| {
            !extra_env
                .iter()
                .any(|(e, _)| k.as_encoded_bytes() == e.as_bytes())
        })
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    for (k, v) in extra_env {
        env.push(CString::new(format!("{k}={v}")).map_err(io::Error::other)?);
    }
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
    envp.push(ptr::null());
    // dup2 of fd 3 onto itself would keep its close-on-exec flag: move it
    // out of the way first.
    let moved;
    let give = if give.as_raw_fd() == 3 {
        moved = give.try_clone_to_owned()?;
        std::os::fd::AsFd::as_fd(&moved)
    } else {
        give
    };

    // SAFETY: the file-actions and attribute objects are initialised before
    // use and destroyed on every path; all pointers passed to posix_spawn
    // (path, argv, envp) are NUL-terminated arrays of live C strings that
    // outlive the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let r = libc::posix_spawn_file_actions_init(&mut actions);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let r = libc::posix_spawnattr_init(&mut attr);
        if r != 0 {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(io::Error::from_raw_os_error(r));
        }
        let result = (|| {
            let check = |r: i32| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(r))
                }
            };
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                give.as_raw_fd(),
                3,
            ))?;
            check(libc::posix_spawn_file_actions_addclosefrom_np(
                &mut actions,
                4,
            ))?;
            // The child starts with default signal handling and an empty mask,
            // whatever this process had set.
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &all))?;
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as _,
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            ))?;
            Ok(pid as u32)
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result
    }
}

/// The executable address range (a `PT_LOAD` segment with `PF_X`) of the
/// loaded object that contains `addr`, if any.
///
/// # References
/// dl_iterate_phdr(3)
pub(crate) fn code_segment_containing(addr: usize) -> Option<(usize, usize)> {
    struct Search {
        addr: usize,
        found: Option<(usize, usize)>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info struct whose dlpi_phdr
        // points at dlpi_phnum program headers, and `data` is the &mut Search
        // we passed in, alive for the whole iteration.
        unsafe {
            let search = &mut *data.cast::<Search>();
            let info = &*info;
            for i in 0..info.dlpi_phnum as usize {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                    let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                    let end = start + ph.p_memsz as usize;
                    if (start..end).contains(&search.addr) {
                        search.found = Some((start, end));
                        return 1;
                    }
                }
            }
            0
        }
    }
    let mut search = Search { addr, found: None };
    // SAFETY: `visit` upholds dl_iterate_phdr's callback contract and
    // `search` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast());
    }
    search.found
}

/// Fills `buf` from the kernel's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the remaining length into `buf`.
        let n = cvt_r(|| unsafe {
            libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0)
        })?;
        filled += n as usize;
    }
    Ok(())
}

/// Reads an environment variable without allocating through std's lock,
/// usable before `main`.
pub(crate) fn getenv(name: &CStr) -> Option<Vec<u8>> {
    // SAFETY: getenv returns null or a pointer to a NUL-terminated string in
    // the environment; we copy it out at once, before anything can change it.
    unsafe {
        let p = libc::getenv(name.as_ptr());
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_bytes().to_vec())
        }
    }
}

/// Removes an environment variable.
///
/// # Safety
/// No other thread may read or write the environment concurrently.
pub(crate) unsafe fn unsetenv(name: &CStr) {
    // SAFETY: forwarded to the caller's obligation.
    unsafe {
        libc::unsetenv(name.as_ptr());
    }
}

/// Registers `f` to run at normal process exit (`exit(3)`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function that lives for the whole program.
    unsafe {
        libc::atexit(f);
    }
}
