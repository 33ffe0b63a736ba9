//! The shared-memory tracker: unlinks named segments whose users are all
//! gone, even when their creator was killed with `SIGKILL`.
//!
//! The first named segment a process creates starts a tracker: this very
//! binary re-executed with a role (so it runs before `main`, like a fork
//! server), reading from a pipe. The process keeps the write end, and hands
//! a duplicate of it along with every [`SharedMemory`](crate::SharedMemory)
//! it sends to another process, which keeps it too. Each creation writes
//! `R<name>\n` and each unlink `U<name>\n`, one `write` of at most
//! `PIPE_BUF` bytes, so lines from several processes never interleave. When
//! the last write end closes (every holder exited, whatever killed it), the
//! tracker reads end-of-file, unlinks the names still registered, says so on
//! stderr, and exits.
#![allow(unsafe_code)]

use crate::process::bootstrap::ROLE_VAR;
use crate::sys;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

static TRACKER: Mutex<Option<File>> = Mutex::new(None);

/// The role name in `MULTIPROC_ROLE`.
pub(crate) const ROLE: &str = "shm-tracker";

fn start() -> io::Result<File> {
    let (read, write) = sys::pipe()?;
    let role = format!("{ROLE}:{}", sys::getpid());
    let var = ROLE_VAR.to_str().map_err(io::Error::other)?;
    sys::spawn_self(c"multiproc-shm-tracker", &[(var, &role)], read.as_fd())?;
    Ok(File::from(write))
}

fn send(op: u8, name: &str, start_if_missing: bool) -> io::Result<()> {
    let mut line = Vec::with_capacity(name.len() + 2);
    line.push(op);
    line.extend_from_slice(name.as_bytes());
    line.push(b'\n');
    let mut t = TRACKER.lock().unwrap_or_else(|e| e.into_inner());
    if t.is_none() {
        if !start_if_missing {
            return Ok(());
        }
        *t = Some(start()?);
    }
    let file = t.as_mut().expect("tracker present");
    file.write_all(&line)
}

/// Asks the tracker to unlink `name` when every user is gone.
pub(crate) fn register(name: &str) -> io::Result<()> {
    send(b'R', name, true)
}

/// Tells the tracker that `name` was unlinked.
pub(crate) fn unregister(name: &str) {
    let _ = send(b'U', name, false);
}

/// A duplicate of this process's tracker pipe, for a process that receives
/// one of our segments.
pub(crate) fn share() -> Option<OwnedFd> {
    let t = TRACKER.lock().unwrap_or_else(|e| e.into_inner());
    t.as_ref()
        .and_then(|f| f.try_clone().ok())
        .map(OwnedFd::from)
}

/// Keeps a received tracker pipe (when this process has none yet), so the
/// tracker waits for this process too.
pub(crate) fn adopt(fd: OwnedFd) {
    let mut t = TRACKER.lock().unwrap_or_else(|e| e.into_inner());
    if t.is_none() {
        *t = Some(File::from(fd));
    }
}

/// The tracker's life (called before `main` in the re-executed binary).
pub(crate) fn serve(pipe: OwnedFd) -> ! {
    // Like Python's tracker: a Ctrl-C aimed at the program must not kill
    // the process that cleans up after it.
    sys::set_signal(libc::SIGINT, sys::Disposition::Ignore);
    sys::set_signal(libc::SIGTERM, sys::Disposition::Ignore);
    if let Ok(null) = File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        let _ = sys::dup2(null.as_raw_fd(), 0);
        let _ = sys::dup2(null.as_raw_fd(), 1);
    }
    let mut names = BTreeSet::new();
    let mut reader = BufReader::new(File::from(pipe));
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let Some((&op, name)) = line.split_first() else {
            continue;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        match op {
            b'R' => {
                names.insert(name);
            }
            b'U' => {
                names.remove(&name);
            }
            _ => {}
        }
    }
    let mut leaked = 0;
    for name in &names {
        if super::shared_memory::unlink_name(name).is_ok() {
            leaked += 1;
        }
    }
    if leaked > 0 {
        eprintln!(
            "multiproc: shared-memory tracker: there appear to be {leaked} leaked shared_memory \
             objects to clean up at shutdown: {names:?}"
        );
    }
    sys::exit_now(0)
}
