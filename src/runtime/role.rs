//! The roles a copy of this binary started by the crate can take, and the
//! one function that starts such a copy.
//!
//! A role travels in the [`ROLE_VAR`] environment variable as
//! `NAME:PARENT_PID`, with the role's channel on descriptor 3; `boot.rs`
//! reads it before `main` and runs the role instead of the program.

use crate::sys;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::BorrowedFd;

/// The environment variable that marks a re-executed child or fork server.
pub(crate) const ROLE_VAR: &CStr = c"MULTIPROC_ROLE";
/// Exit code of a child whose bootstrap failed before the target ran.
pub(crate) const EXIT_BOOTSTRAP_FAILED: i32 = 70;

/// A child process (`Process`, pool worker) started by spawn.
pub(crate) const CHILD: &str = "child";
/// The fork server.
pub(crate) const FORKSERVER: &str = "forkserver";
/// The tracker of named shared memory.
pub(crate) const SHM_TRACKER: &str = "shm-tracker";

/// Starts this binary again as `role`, with `give` as its descriptor 3,
/// and returns its pid. The new process is named `name`, or after this
/// program when `None`.
pub(crate) fn spawn(role: &str, name: Option<&CStr>, give: BorrowedFd<'_>) -> io::Result<u32> {
    spawn_with(role, name, give, false)
}

/// [`spawn`], with every symbol of every library bound at load
/// ([`BIND_NOW_VAR`]) unless the environment already says how to bind.
/// The new process removes the variable at once, so its own children
/// never see it. For the fork server: its children then do not each
/// resolve symbols again, page by page, when they first call them (most
/// of all in `exit`).
pub(crate) fn spawn_bound(
    role: &str,
    name: Option<&CStr>,
    give: BorrowedFd<'_>,
) -> io::Result<u32> {
    spawn_with(role, name, give, true)
}

fn spawn_with(
    role: &str,
    name: Option<&CStr>,
    give: BorrowedFd<'_>,
    bind_now: bool,
) -> io::Result<u32> {
    let argv0 = match name {
        Some(name) => name.to_owned(),
        None => {
            let argv0 = std::env::args_os().next().unwrap_or_default();
            CString::new(argv0.into_encoded_bytes()).unwrap_or_else(|_| c"multiproc".into())
        }
    };
    let var = ROLE_VAR.to_str().map_err(io::Error::other)?;
    let bind_var = BIND_NOW_VAR.to_str().map_err(io::Error::other)?;
    let set_bind_now = bind_now && std::env::var_os(bind_var).is_none();
    let mark = if set_bind_now { BIND_NOW_MARK } else { "" };
    let value = format!("{role}:{}{mark}", sys::getpid());
    let mut env = vec![(var, value.as_str())];
    if set_bind_now {
        env.push((bind_var, "1"));
    }
    sys::spawn_self(&argv0, &env, give)
}

/// The dynamic loader's variable for binding symbols at load.
pub(crate) const BIND_NOW_VAR: &CStr = c"LD_BIND_NOW";
/// The end of a role's value when [`spawn_bound`] set [`BIND_NOW_VAR`] for it
/// (and the new process is to remove it).
pub(crate) const BIND_NOW_MARK: &str = ":bind-now";
