//! The composition root: the load-time hook that lets a copy of this
//! binary started by the crate become a child, the fork server or the
//! shared-memory tracker before the program's own `main` runs. This is the
//! only module that knows every role; nothing in the crate imports it.
//!
//! The hook is a `#[used]` entry of `.init_array`. rustc keeps `#[used]`
//! statics of a library in every binary that links it (it references them
//! from a synthetic object file at link time), so the hook is present in
//! any program, test or example that can start children, without a call
//! from the code that starts them.
#![allow(unsafe_code)]

use crate::runtime::role::{self, EXIT_BOOTSTRAP_FAILED, ROLE_VAR};
use crate::sys;

/// Runs from `.init_array`, before `main`, in every program that links this
/// crate. In an ordinary start it only checks one environment variable and
/// returns; in a process started by this crate it never returns.
extern "C" fn on_load(
    _argc: libc::c_int,
    _argv: *const *const libc::c_char,
    _env: *const *const libc::c_char,
) {
    // Unwinding out of an init_array function is undefined behaviour, so a
    // panic here ends the process.
    if std::panic::catch_unwind(dispatch).is_err() {
        sys::exit_now(EXIT_BOOTSTRAP_FAILED);
    }
}

/// The `.init_array` entry. Glibc calls it with (argc, argv, envp).
#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) =
    on_load;

/// Becomes a child or the fork server when the environment says so,
/// otherwise returns at once.
fn dispatch() {
    let Some(value) = sys::getenv(ROLE_VAR) else {
        return;
    };
    // SAFETY: this runs from .init_array before main, when the process has a
    // single thread, so nothing else reads the environment concurrently.
    unsafe { sys::unsetenv(ROLE_VAR) };
    // The variable is set only by `role::spawn` for the process it starts,
    // and removed here at once, so it never reaches a program's own
    // children. Once it is seen, `main` must never run: a child whose
    // bootstrap cannot proceed exits.
    let value = String::from_utf8_lossy(&value).into_owned();
    if value.ends_with(role::BIND_NOW_MARK) {
        // SAFETY: as above.
        unsafe { sys::unsetenv(role::BIND_NOW_VAR) };
    }
    let kind = value.split_once(':').map_or(value.as_str(), |(k, _)| k);
    if !sys::is_open(3) {
        eprintln!("multiproc: {ROLE_VAR:?} is set but descriptor 3 is not open");
        sys::exit_now(EXIT_BOOTSTRAP_FAILED);
    }
    // SAFETY: fd 3 was placed there for us by the parent's posix_spawn file
    // actions (dup2 onto 3); nothing else in this fresh process owns it.
    let fd = unsafe { sys::owned_from_raw(3) };
    sys::name_after_program();
    match kind {
        role::CHILD => crate::process::bootstrap::child_main(fd, None),
        role::FORKSERVER => crate::process::forkserver::serve(fd),
        role::SHM_TRACKER => crate::shm::tracker::serve(fd),
        _ => {
            eprintln!("multiproc: unknown role {value:?}");
            sys::exit_now(EXIT_BOOTSTRAP_FAILED)
        }
    }
}
