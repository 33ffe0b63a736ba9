//! Logging, as Python's `multiprocessing.log_to_stderr()` does it, through
//! the [`log`] facade.
//!
//! The crate reports what happens to processes and pools as [`log`] records
//! under targets that start with `multiproc` (children starting and
//! exiting, signals sent, pool workers lost and replaced, tasks handed on):
//! any `log` or `tracing` subscriber of the program sees them.
//!
//! A child started by the forkserver or spawn method begins before `main`
//! (see the crate docs), so a logger installed in `main` is not installed in
//! it. [`log_to_stderr`] is: it installs a small logger that writes
//! `[LEVEL/process name] message` lines to standard error, and every child
//! started after it installs the same logger at the same level before it
//! runs its target. With another logger, install it in the child's target
//! (or a pool's initializer).

use super::current::current_process;
use crate::error::{Error, Result};
use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The level children install [`log_to_stderr`]'s logger at; 0 for none.
static CHILD_LEVEL: AtomicU8 = AtomicU8::new(0);
/// Whether this process's logger is ours.
static INSTALLED: AtomicBool = AtomicBool::new(false);

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One write per line, so that lines from several processes sharing
        // the terminal do not interleave.
        let line = format!(
            "[{}/{}] {}\n",
            record.level(),
            current_process().name(),
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn level_code(level: LevelFilter) -> u8 {
    level as usize as u8
}

fn level_of(code: u8) -> LevelFilter {
    LevelFilter::iter()
        .find(|l| level_code(*l) == code)
        .unwrap_or(LevelFilter::Off)
}

/// Sends this process's log records at `level` and above to standard error
/// as `[LEVEL/process name] message` lines, and makes every child started
/// from now on do the same (Python's `log_to_stderr(level)`).
///
/// Calling it again changes the level, here and for children started
/// afterwards; `LevelFilter::Off` silences both.
///
/// # Errors
/// [`Error::State`] when the program already installed another logger (the
/// `log` facade holds one logger per process).
///
/// # Examples
/// ```
/// use multiproc::Process;
///
/// fn work(n: u32) {
///     log::info!("working on {n}"); // printed as "[INFO/Process-1] working on 7"
/// }
///
/// multiproc::log_to_stderr(log::LevelFilter::Info)?;
/// let mut p = Process::new(work, (7,));
/// p.start()?;
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn log_to_stderr(level: LevelFilter) -> Result<()> {
    install(level)?;
    CHILD_LEVEL.store(level_code(level), Ordering::Relaxed);
    Ok(())
}

fn install(level: LevelFilter) -> Result<()> {
    if !INSTALLED.load(Ordering::Acquire) {
        match log::set_logger(&LOGGER) {
            Ok(()) => INSTALLED.store(true, Ordering::Release),
            // Our own, installed by another thread meanwhile.
            Err(_) if INSTALLED.load(Ordering::Acquire) => {}
            Err(_) => {
                return Err(Error::State(
                    "another logger is already installed in this process",
                ));
            }
        }
    }
    log::set_max_level(level);
    Ok(())
}

/// The level a new child should log at (0: it installs no logger).
pub(crate) fn child_level() -> u8 {
    CHILD_LEVEL.load(Ordering::Relaxed)
}

/// In a new child: installs the parent's [`log_to_stderr`] logger.
pub(crate) fn install_in_child(code: u8) {
    let level = level_of(code);
    if level == LevelFilter::Off {
        return;
    }
    // A forked child already has its parent's logger, whichever it is.
    if install(level).is_ok() {
        CHILD_LEVEL.store(code, Ordering::Relaxed);
    }
}
