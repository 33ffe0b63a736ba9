//! The child's side: from the load-time hook (or a fork) to the target's
//! result on the parent's channel.
//!
//! A child reads two frames from its channel (fd 3 after spawn or fork
//! server): a [`Header`] describing the process, then the target's
//! arguments. Which function to run arrives as an offset from [`anchor`];
//! it is accepted only after the header's magic, protocol version and build
//! identity match this binary and the resulting address lies inside the
//! executable segment of the object that holds this crate's code.
#![allow(unsafe_code)]

use super::current::{self, ProcessInfo};
use super::target::{Run, Target};
use super::{StartMethod, forkserver};
use crate::codec::Handle;
use crate::connection::Connection;
use crate::error::RemotePanic;
use crate::pool::worker::TaskEntry;
use crate::sys;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

/// The environment variable that marks a re-executed child or fork server.
pub(crate) const ROLE_VAR: &std::ffi::CStr = c"MULTIPROC_ROLE";
/// Exit code of a child whose bootstrap failed before the target ran.
pub(crate) const EXIT_BOOTSTRAP_FAILED: i32 = 70;

const MAGIC: u64 = u64::from_le_bytes(*b"mprocHDR");
const PROTOCOL: u32 = 2;

/// A child's entry: runs the target with the arguments read from the
/// channel, reports the outcome, and returns the exit code.
pub(crate) type Entry = fn(&Connection) -> i32;

/// The fixed point entry offsets are measured from.
#[inline(never)]
pub(crate) fn anchor() -> u32 {
    std::hint::black_box(0x6d70_726f)
}

/// Identifies this build of the binary: the distance between two functions
/// of this crate plus the crate version.
pub(crate) fn build_identity() -> u64 {
    let a = anchor as fn() -> u32 as usize as u64;
    let b = child_main as fn(OwnedFd, Option<ForkBody>) -> ! as usize as u64;
    let mut h = b.wrapping_sub(a);
    for byte in env!("CARGO_PKG_VERSION").bytes() {
        h = h.rotate_left(5) ^ u64::from(byte);
    }
    h
}

/// The offset of `entry` from [`anchor`].
pub(crate) fn entry_offset(entry: Entry) -> u64 {
    code_offset(entry as usize)
}

/// The distance of a code address from [`anchor`]: the same in every
/// process running this build, wherever ASLR placed it.
fn code_offset(addr: usize) -> u64 {
    addr.wrapping_sub(anchor as fn() -> u32 as usize) as u64
}

/// Checks that `offset` from [`anchor`] lands inside this crate's
/// executable segment and returns the address.
fn resolve_code(offset: u64) -> Result<usize, String> {
    let base = anchor as fn() -> u32 as usize;
    let addr = base.wrapping_add(offset as usize);
    let (start, end) = sys::code_segment_containing(base)
        .ok_or_else(|| "cannot locate this binary's code segment".to_string())?;
    if !(start..end).contains(&addr) {
        return Err(format!(
            "entry offset {offset:#x} points outside the code segment"
        ));
    }
    Ok(addr)
}

/// Turns an offset received from the parent back into an entry, refusing
/// any address outside this crate's executable segment.
fn resolve_entry(offset: u64) -> Result<Entry, String> {
    let addr = resolve_code(offset)?;
    // SAFETY: the address lies inside our own executable segment and was
    // computed by the parent, which runs this same build (magic, protocol
    // and build identity checked by the caller), as `entry_offset` of a
    // function of type `Entry`. The channel it came from is a private
    // socketpair inherited from the parent, not reachable by other processes.
    Ok(unsafe { std::mem::transmute::<usize, Entry>(addr) })
}

/// The offset of a pool task entry from [`anchor`].
pub(crate) fn task_entry_offset(entry: TaskEntry) -> u64 {
    code_offset(entry as usize)
}

/// Turns a task entry offset received by a pool worker back into the
/// function, refusing any address outside this crate's executable segment.
pub(crate) fn resolve_task_entry(offset: u64) -> Result<TaskEntry, String> {
    let addr = resolve_code(offset)?;
    // SAFETY: a pool worker is a child that passed `child_main`'s checks
    // (magic, protocol, build identity), so its parent runs this same build.
    // The parent computed the offset with `task_entry_offset` of a function
    // of type `TaskEntry`, and sent it over the worker's private socketpair,
    // which no other process can reach. The address is inside our own code.
    Ok(unsafe { std::mem::transmute::<usize, TaskEntry>(addr) })
}

/// The value of a zero-sized target type, in the process that runs it.
pub(crate) fn zst_target<F: Copy + 'static>() -> F {
    super::target::assert_zero_sized::<F>();
    // SAFETY: `F` is zero-sized (asserted at compile time) and, for every
    // caller, a `Target`: a fn item or a closure without captures, which has
    // no bytes and no invariant, so the zero-sized value is the function.
    unsafe { std::mem::zeroed() }
}

/// The offset of a plain function from [`anchor`], meaningful to every
/// process running this same build.
pub(crate) fn plain_fn_offset(f: fn()) -> u64 {
    code_offset(f as usize)
}

/// Turns an offset made by [`plain_fn_offset`] back into the function,
/// refusing any address outside this crate's executable segment.
///
/// # Safety
/// `offset` must have been produced by [`plain_fn_offset`] in a process
/// running this same build (callers authenticate it).
pub(crate) unsafe fn resolve_plain_fn(offset: u64) -> Result<fn(), String> {
    let addr = resolve_code(offset)?;
    // SAFETY: inside our executable segment, and by the caller's obligation
    // the address of a `fn()` of this very build.
    Ok(unsafe { std::mem::transmute::<usize, fn()>(addr) })
}

/// What the parent tells a child before its arguments.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) magic: u64,
    pub(crate) protocol: u32,
    pub(crate) build: u64,
    /// `None` for a fork-only closure, which the child already holds.
    pub(crate) entry: Option<u64>,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) identity: Vec<u32>,
    pub(crate) authkey: Vec<u8>,
    pub(crate) method: StartMethod,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    pub(crate) parent_pidfd: Handle<OwnedFd>,
    pub(crate) forkserver: Option<Handle<OwnedFd>>,
    /// The level of the parent's `log_to_stderr` logger (0: none).
    pub(crate) log_level: u8,
    /// Resource limits the child applies to itself before its target.
    pub(crate) limits: Option<super::limits::ChildLimits>,
}

impl Header {
    pub(crate) fn new(
        entry: Option<u64>,
        name: String,
        daemon: bool,
        identity: Vec<u32>,
        method: StartMethod,
        parent_pidfd: OwnedFd,
        forkserver: Option<OwnedFd>,
    ) -> Self {
        let me = current::current_process();
        Header {
            magic: MAGIC,
            protocol: PROTOCOL,
            build: build_identity(),
            entry,
            name,
            daemon,
            identity,
            authkey: me.authkey().to_vec(),
            method,
            parent_pid: me.pid(),
            parent_name: me.name().to_string(),
            parent_pidfd: Handle(parent_pidfd),
            forkserver: forkserver.map(Handle),
            log_level: crate::logging::child_level(),
            limits: None,
        }
    }
}

/// The outcome a child reports on its channel.
#[derive(Serialize, Deserialize)]
pub(crate) enum WireOutcome<R> {
    Return(R),
    Panic(RemotePanic),
    Error(String),
}

/// A closure run by a forked child instead of a named entry.
pub(crate) type ForkBody = Box<dyn FnOnce(&Connection) -> i32 + Send>;

/// The payload of the unwind started by [`crate::exit`].
pub(crate) struct ExitRequest(pub(crate) i32);

/// Called before `main` in every process: becomes a child or the fork
/// server when the environment says so, otherwise returns at once.
pub(crate) fn on_load() {
    let Some(role) = sys::getenv(ROLE_VAR) else {
        return;
    };
    // SAFETY: this runs from .init_array before main, when the process has a
    // single thread, so nothing else reads the environment concurrently.
    unsafe { sys::unsetenv(ROLE_VAR) };
    // The variable is set only by `spawn_self` for the process it starts,
    // and removed here at once, so it never reaches a program's own
    // children. Once it is seen, `main` must never run: a child whose
    // bootstrap cannot proceed exits.
    let role = String::from_utf8_lossy(&role).into_owned();
    let kind = role.split_once(':').map_or(role.as_str(), |(k, _)| k);
    if !sys::is_open(3) {
        eprintln!("multiproc: {ROLE_VAR:?} is set but descriptor 3 is not open");
        sys::exit_now(EXIT_BOOTSTRAP_FAILED);
    }
    // SAFETY: fd 3 was placed there for us by the parent's posix_spawn file
    // actions (dup2 onto 3); nothing else in this fresh process owns it.
    let fd = unsafe { sys::owned_from_raw(3) };
    sys::name_after_program();
    match kind {
        "child" => child_main(fd, None),
        "forkserver" => forkserver::serve(fd),
        crate::shm::tracker::ROLE => crate::shm::tracker::serve(fd),
        _ => {
            eprintln!("multiproc: unknown role {role:?}");
            sys::exit_now(EXIT_BOOTSTRAP_FAILED)
        }
    }
}

fn fail(chan: &Connection, why: String) -> ! {
    let _ = chan.send(&WireOutcome::<()>::Error(why.clone()));
    eprintln!("multiproc: child bootstrap failed: {why}");
    sys::exit_now(EXIT_BOOTSTRAP_FAILED)
}

/// The life of a child: read the header, become the described process, run
/// the target, report, clean up, exit. Never returns.
pub(crate) fn child_main(chan: OwnedFd, fork_body: Option<ForkBody>) -> ! {
    // As Rust's runtime does for `main`: a closed pipe is an error, not death.
    sys::set_signal(libc::SIGPIPE, sys::Disposition::Ignore);
    OWN_CHANNEL.store(chan.as_raw_fd(), Ordering::Relaxed);
    let chan = Connection::new(chan, true, true);
    let header: Header = match chan.recv() {
        Ok(h) => h,
        Err(e) => fail(&chan, format!("cannot read the process header: {e}")),
    };
    if header.magic != MAGIC || header.protocol != PROTOCOL {
        fail(&chan, "protocol mismatch between parent and child".into());
    }
    if header.build != build_identity() {
        fail(
            &chan,
            "the parent runs a different build of this binary".into(),
        );
    }
    let entry = match header.entry.map(resolve_entry) {
        Some(Ok(e)) => Some(e),
        Some(Err(why)) => fail(&chan, why),
        None => None,
    };
    super::child::reset_after_fork();
    forkserver::adopt_client(header.forkserver.map(Handle::into_inner));
    let parent_pidfd = header.parent_pidfd.into_inner();
    if header.daemon {
        watch_parent(&parent_pidfd);
    }
    current::become_child(ProcessInfo::new_child(
        header.name,
        header.daemon,
        header.identity,
        header.authkey,
        header.method,
        header.parent_pid,
        header.parent_name,
        parent_pidfd,
    ));
    install_panic_hook();
    crate::logging::install_in_child(header.log_level);
    if let Some(limits) = header.limits {
        if let Err(why) = super::limits::apply_in_child(limits) {
            fail(&chan, why);
        }
    }
    log::info!("child process calling its target");
    let code = match (entry, fork_body) {
        (Some(entry), _) => entry(&chan),
        (None, Some(body)) => body(&chan),
        (None, None) => fail(&chan, "no entry point and no closure".into()),
    };
    finish(code)
}

/// The descriptor of this child's channel to its parent, or -1.
static OWN_CHANNEL: AtomicI32 = AtomicI32::new(-1);

/// In a process just forked from a child: close the copy of the parent's
/// channel, which belongs to the parent's report, so that it does not stay
/// open (and hide the parent's death) for as long as the new child lives.
/// The `Connection` that owns it lives in a stack frame of the parent that
/// this process never returns to.
pub(crate) fn forget_parent_channel_after_fork() {
    let fd = OWN_CHANNEL.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the `Connection` owning `fd` lives in a frame of the
        // parent's code that this process never returns to, so it is never
        // used or dropped here.
        unsafe { sys::close_raw(fd) };
    }
}

/// Held by a freshly forked child from `fork` returning until it leaves
/// through `_exit`: if anything panics before the target's own
/// `catch_unwind` (or a panic escapes it), dropping this while unwinding
/// aborts the child instead of unwinding into the parent's frames that
/// the fork copied (std's own fork path does the same). It is never
/// dropped otherwise: the paths that hold it end in `_exit`.
pub(crate) struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        std::process::abort();
    }
}

/// Ends a child: join its own children, flush stdio, `_exit`.
///
/// A child made by exec (spawn) or by the fork server leaves through
/// `exit(3)`, so exit handlers registered in it run, as in Python. A child
/// made by forking the caller leaves through `_exit(2)`: the handlers it
/// inherited belong to the parent.
fn finish(code: i32) -> ! {
    log::info!("process shutting down");
    super::child::cleanup_children();
    log::info!("process exiting with exit code {code}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if current::current_process().start_method() == Some(StartMethod::Fork) {
        sys::exit_now(code)
    }
    std::process::exit(code)
}

/// A daemonic child dies with its parent, even when the parent is killed
/// with SIGKILL: a thread waits on the parent's pidfd.
fn watch_parent(parent: &OwnedFd) {
    let Ok(fd) = parent.try_clone() else { return };
    let _ = std::thread::Builder::new()
        .name("multiproc-parent-watch".into())
        .spawn(move || {
            use std::os::fd::AsFd;
            let _ = sys::wait_readable(fd.as_fd(), None);
            sys::kill_self(libc::SIGKILL);
        });
}

static PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

/// Records where a panic happened (for the parent) and prints the message
/// on stderr; an [`ExitRequest`] unwind prints nothing.
///
/// A panic on the thread that runs the target is printed with the process's
/// name and pid (`process 'Process-1' (pid 4242) panicked at src/main.rs:9:5:`),
/// as Python prints `Process Process-1:` above a traceback: std would call
/// that thread `<unnamed>`, since its runtime never started `main` in this
/// process. Panics on other threads, and every panic in a child made by
/// forking the caller (which may have installed a hook of its own), go to
/// the hook that was in place.
fn install_panic_hook() {
    let previous = panic::take_hook();
    let target_thread = std::thread::current().id();
    let own_message = current::current_process().start_method() != Some(StartMethod::Fork);
    panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<ExitRequest>().is_some() {
            return;
        }
        if let Some(loc) = info.location() {
            *PANIC_LOCATION.lock().unwrap_or_else(|e| e.into_inner()) = Some(loc.to_string());
        }
        if !own_message || std::thread::current().id() != target_thread {
            return previous(info);
        }
        let me = current::current_process();
        let at = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        let message = panic_message(info.payload());
        let backtrace = std::backtrace::Backtrace::capture();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "process '{}' (pid {}) panicked{at}:\n{message}",
            me.name(),
            std::process::id()
        );
        let _ = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => {
                writeln!(err, "stack backtrace:\n{backtrace}")
            }
            _ => writeln!(
                err,
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"
            ),
        };
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

/// Describes a caught panic (message, location, process) for the parent.
pub(crate) fn remote_panic(payload: &(dyn std::any::Any + Send)) -> RemotePanic {
    RemotePanic {
        message: panic_message(payload),
        location: PANIC_LOCATION
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(),
        process: current::current_process().name().to_string(),
    }
}

/// Runs `body`, reports its value or panic on `chan`, returns the exit code.
pub(crate) fn run_reporting<R: Serialize>(chan: &Connection, body: impl FnOnce() -> R) -> i32 {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => match chan.send(&WireOutcome::Return(&value)) {
            Ok(()) => 0,
            Err(crate::Error::Encode(why)) => {
                let _ = chan.send(&WireOutcome::<()>::Error(format!(
                    "cannot encode the result: {why}"
                )));
                1
            }
            // The parent stopped listening; the result has nowhere to go.
            Err(_) => 0,
        },
        Err(payload) => {
            if let Some(ExitRequest(code)) = payload.downcast_ref::<ExitRequest>() {
                return *code;
            }
            let p = remote_panic(&*payload);
            let _ = chan.send(&WireOutcome::<()>::Panic(p));
            // Dropping a payload can itself panic; leak it instead.
            std::mem::forget(payload);
            1
        }
    }
}

/// The entry of `Process::new(f, args)`: reads `A`, calls `F`.
pub(crate) fn fn_entry<F, A, R>(chan: &Connection) -> i32
where
    F: Target<A, Output = R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let args: A = match chan.recv() {
        Ok(a) => a,
        Err(e) => fail(chan, format!("cannot decode the arguments: {e}")),
    };
    let f: F = zst_target();
    run_reporting(chan, move || f.call(args))
}

/// The entry of `Process::from_run(value)`.
pub(crate) fn run_entry<T: Run>(chan: &Connection) -> i32 {
    let value: T = match chan.recv() {
        Ok(v) => v,
        Err(e) => fail(chan, format!("cannot decode the process value: {e}")),
    };
    run_reporting(chan, move || value.run())
}
