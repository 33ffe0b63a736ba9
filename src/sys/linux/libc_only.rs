//! What `rustix` does not offer, through the C library: `fork` (which
//! must run the C library's atfork handlers), `posix_spawn` with
//! `closefrom`, closing descriptor ranges and raw descriptors, signal
//! dispositions and masks, the C environment and exit handlers (usable
//! before `main`), `dl_iterate_phdr`, `_exit`.
#![allow(unsafe_code)]

use super::cvt;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr;

/// `dup2(fd, target)` without close-on-exec on the result: whatever
/// `target` was is closed and replaced.
///
/// # Safety
/// `target` is closed and reused, so no live object that owns descriptor
/// `target` may use or close it afterwards (as in a freshly forked child
/// laying out its descriptors, whose owners are never used again). For the
/// standard streams use the safe [`super::dup2_stdio`].
///
/// # References
/// dup2(2)
pub(crate) unsafe fn dup2(fd: RawFd, target: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: dup2 takes plain integers (an invalid `fd` is EBADF); the
        // caller vouches that replacing `target` breaks no owner.
        match cvt(unsafe { libc::dup2(fd, target) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(drop),
        }
    }
}

/// Closes every fd numbered `first` or above.
///
/// # Safety
/// Every descriptor from `first` up is closed, so no live object that owns
/// one of them may use or close it afterwards: only for a fresh child whose
/// owners of those descriptors are never used or dropped again.
///
/// # References
/// close_range(2)
pub(crate) unsafe fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; the caller vouches that
    // nothing owns one at or above `first` any more.
    cvt(unsafe { libc::close_range(first, u32::MAX, 0) })?;
    Ok(())
}

/// Closes every descriptor from `first` to `last`, both included.
///
/// # Safety
/// As [`close_from`], for that range.
pub(crate) unsafe fn close_between(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; the caller vouches that
    // nothing owns one in the range any more.
    cvt(unsafe { libc::close_range(first, last, 0) })?;
    Ok(())
}

/// Closes a raw descriptor.
///
/// # Safety
/// `fd` must be owned by the caller, and its owner (if any object holds it)
/// must never be used or dropped again in this process.
pub(crate) unsafe fn close_raw(fd: RawFd) {
    // SAFETY: forwarded to the caller's obligation.
    unsafe {
        libc::close(fd);
    }
}

/// Checks that `fd` is an open descriptor. Only reads its flags, so it is
/// sound for any number, owned or not.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Registers `child` to run in the child after every `fork(2)` (including
/// forks by other code in the process).
///
/// # Safety
/// `child` runs in a child forked from a possibly multi-threaded process,
/// so it must do only async-signal-safe work (such as storing to atomics).
///
/// # References
/// pthread_atfork(3)
pub(crate) unsafe fn at_fork_child(child: extern "C" fn()) {
    // SAFETY: a plain function that lives for the whole program; the
    // caller vouches that it is async-signal-safe.
    unsafe {
        libc::pthread_atfork(None, None, Some(child));
    }
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
