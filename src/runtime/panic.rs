//! Panics in a child: printed with the process's name, recorded with their
//! location, and described for the parent as a [`RemotePanic`].

use super::current::{self, StartMethod};
use crate::error::RemotePanic;
use std::io::Write;
use std::panic;
use std::sync::Mutex;

/// The payload of the unwind started by [`crate::exit`].
pub(crate) struct ExitRequest(pub(crate) i32);

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
pub(crate) fn install_panic_hook() {
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
