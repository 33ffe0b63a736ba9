//! The child's side: from the load-time hook (or a fork) to the target's
//! result on the parent's channel.
//!
//! A child reads two frames from its channel (fd 3 after spawn or fork
//! server): a [`Header`] describing the process, then the target's
//! arguments. Which function to run arrives as a code offset
//! (`runtime/entry.rs`); it is accepted only after the header's magic,
//! protocol version and build identity match this binary and the resulting
//! address lies inside the executable segment of the object that holds this
//! crate's code.
#![allow(unsafe_code)]

use super::forkserver;
use super::target::{Run, Target, zst_target};
use crate::codec::Handle;
use crate::connection::Connection;
use crate::error::RemotePanic;
use crate::runtime::current::{self, ProcessInfo, StartMethod};
use crate::runtime::entry;
use crate::runtime::panic::{ExitRequest, install_panic_hook, remote_panic};
use crate::runtime::role::EXIT_BOOTSTRAP_FAILED;
use crate::sys;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, Ordering};

const MAGIC: u64 = u64::from_le_bytes(*b"mprocHDR");
const PROTOCOL: u32 = 2;

/// A child's entry: runs the target with the arguments read from the
/// channel, reports the outcome, and returns the exit code.
pub(crate) type Entry = fn(&Connection) -> i32;

/// The offset of `entry` from the code anchor.
pub(crate) fn entry_offset(entry: Entry) -> u64 {
    entry::code_offset(entry as usize)
}

/// Turns an offset received from the parent back into an entry, refusing
/// any address outside this crate's executable segment.
fn resolve_entry(offset: u64) -> Result<Entry, String> {
    // SAFETY: `Entry` is a fn pointer type. The parent runs this same build
    // (magic, protocol and build identity checked by the caller) and
    // computed the offset as `entry_offset` of a function of type `Entry`.
    // The channel it came from is a private socketpair inherited from the
    // parent, not reachable by other processes.
    unsafe { entry::resolve_fn::<Entry>(offset) }
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
            build: entry::build_identity(),
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
            log_level: crate::runtime::logging::child_level(),
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
    if header.build != entry::build_identity() {
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
    crate::runtime::logging::install_in_child(header.log_level);
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

#[cfg(test)]
mod tests {
    use super::AbortOnUnwind;
    use std::os::unix::process::ExitStatusExt;

    const PROBE: &str = "MULTIPROC_ABORT_ON_UNWIND_PROBE";

    /// In a copy of this test binary run by the test below: a panic that
    /// unwinds past the guard must abort the process, not return.
    #[test]
    fn abort_on_unwind_probe() {
        if std::env::var_os(PROBE).is_none() {
            return;
        }
        let guard = AbortOnUnwind;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _inner = AbortOnUnwind;
            panic!("a panic in a forked child before the target's catch_unwind");
        }));
        // Only reached if unwinding went past the guard.
        std::mem::forget(guard);
        println!("UNWOUND PAST THE GUARD: {}", caught.is_err());
        std::process::exit(0);
    }

    #[test]
    fn a_panic_past_the_fork_guard_aborts_the_child() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::bootstrap::tests::abort_on_unwind_probe",
            ])
            .args(["--nocapture", "--test-threads", "1"])
            .env(PROBE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("UNWOUND PAST THE GUARD"), "{stdout}");
        assert_eq!(
            out.status.signal(),
            Some(6),
            "expected SIGABRT, got {:?}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
