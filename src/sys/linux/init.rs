//! The load-time hook that lets a re-executed binary become a child or the
//! fork server before the program's own `main` runs.
#![allow(unsafe_code)]

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
    if std::panic::catch_unwind(crate::process::bootstrap::on_load).is_err() {
        super::exit_now(crate::process::bootstrap::EXIT_BOOTSTRAP_FAILED);
    }
}

/// The `.init_array` entry. Glibc calls it with (argc, argv, envp).
#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static ON_LOAD: extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) = on_load;

/// Keeps the object file holding [`ON_LOAD`] in the final link: every path
/// that starts a process calls this, so a binary that can start children
/// can also be one.
#[inline(never)]
pub(crate) fn ensure_load_hook_linked() {
    std::hint::black_box(&ON_LOAD);
}
