//! `log_to_stderr`: the crate's records and the program's own, from the
//! parent and from children of every start method, as
//! `[LEVEL/process name] message` lines on standard error.
//!
//! Scenarios G01, G02 and G04 of CPython's suite in Rust terms: records
//! below the level are suppressed, children inherit the level, and the
//! format is `[%(levelname)s/%(processName)s] %(message)s`.

mod common;

use common::*;
use log::LevelFilter;
use multiproc::{Error, Process, StartMethod};

fn work(n: u32) {
    log::info!("working on {n}");
    log::debug!("detail of {n}");
}

/// Sends this process's stderr (which its children inherit) to a file;
/// returns the file's path. Only for the tests' own isolated processes.
fn stderr_to_file(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("mp-log-{tag}-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    // SAFETY: dup2 of two open descriptors, in the test's own isolated
    // child, where nothing else writes to stderr.
    #[allow(unsafe_code)]
    let r = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), 2) };
    assert_eq!(r, 2);
    path
}

fn logs_everywhere(_: StartMethod) {
    let path = stderr_to_file("everywhere");
    multiproc::log_to_stderr(LevelFilter::Info).unwrap();
    log::info!("in the parent");
    let methods = [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ];
    for m in methods {
        let mut p = Process::new(work, (7,))
            .name(format!("Worker-{m}"))
            .start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        p.take_result().unwrap();
    }
    // A second call changes the level, here and in later children.
    multiproc::log_to_stderr(LevelFilter::Debug).unwrap();
    let mut p = Process::new(work, (8,)).name("Chatty");
    p.start().unwrap();
    p.join().unwrap();
    p.take_result().unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let me = multiproc::current_process().name().to_string();
    let mut want = vec![format!("[INFO/{me}] in the parent\n")];
    for m in methods {
        want.push(format!(
            "[INFO/Worker-{m}] child process calling its target\n"
        ));
        want.push(format!("[INFO/Worker-{m}] working on 7\n"));
        want.push(format!(
            "[INFO/Worker-{m}] process exiting with exit code 0\n"
        ));
    }
    want.push("[DEBUG/Chatty] detail of 8\n".into());
    want.push(format!("[DEBUG/{me}] started Chatty (pid "));
    for w in &want {
        assert!(text.contains(w.as_str()), "no {w:?} in:\n{text}");
    }
    // Below the level at the time: not printed.
    assert!(!text.contains("detail of 7"), "{text}");
}

#[test]
fn log_to_stderr_reaches_children_of_every_start_method() {
    run_isolated(logs_everywhere);
}

struct Other;

impl log::Log for Other {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, _: &log::Record<'_>) {}
    fn flush(&self) {}
}

static OTHER: Other = Other;

fn another_logger_first(_: StartMethod) {
    log::set_logger(&OTHER).unwrap();
    let e = multiproc::log_to_stderr(LevelFilter::Info).unwrap_err();
    assert!(
        matches!(e, Error::State(m) if m.contains("another logger")),
        "{e}"
    );
}

#[test]
fn log_to_stderr_refuses_to_replace_another_logger() {
    run_isolated(another_logger_first);
}
