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
//!
//! If the tracker itself is killed, the next registration or unlink finds
//! its pipe broken: a new tracker is started (with a warning on stderr) and
//! told about every name this process still holds.
#![allow(unsafe_code)]

use crate::runtime::role;
use crate::sys;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

/// This process's side of the tracker.
struct Tracker {
    /// The write end of the tracker's pipe (ours, or received).
    pipe: Option<File>,
    /// A pidfd of the tracker this process started, to reap it should it
    /// die while we live.
    child: Option<OwnedFd>,
    /// The names this process registered and has not unregistered: a new
    /// tracker is told about them if the old one died.
    names: BTreeSet<String>,
}

static TRACKER: Mutex<Tracker> = Mutex::new(Tracker {
    pipe: None,
    child: None,
    names: BTreeSet::new(),
});

fn line(op: u8, name: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(name.len() + 2);
    line.push(op);
    line.extend_from_slice(name.as_bytes());
    line.push(b'\n');
    line
}

impl Tracker {
    /// Starts a tracker and tells it every name this process holds.
    fn start(&mut self) -> io::Result<()> {
        if let Some(old) = self.child.take() {
            // Reap the previous tracker if it died (it is our child).
            let _ = sys::waitid_pidfd(old.as_fd(), false);
        }
        self.pipe = None;
        let (read, write) = sys::pipe()?;
        let pid = role::spawn(
            role::SHM_TRACKER,
            Some(c"multiproc-shm-tracker"),
            read.as_fd(),
        )?;
        drop(read);
        self.child = sys::pidfd_open(pid).ok();
        let mut pipe = File::from(write);
        // Nobody else holds this pipe yet, so one write cannot interleave
        // with another process's lines.
        let all: Vec<u8> = self.names.iter().flat_map(|n| line(b'R', n)).collect();
        pipe.write_all(&all)?;
        self.pipe = Some(pipe);
        Ok(())
    }
}

fn send(op: u8, name: &str, start_if_missing: bool) -> io::Result<()> {
    let mut t = TRACKER.lock().unwrap_or_else(|e| e.into_inner());
    if op == b'R' {
        t.names.insert(name.to_string());
    } else {
        t.names.remove(name);
    }
    let Some(pipe) = t.pipe.as_mut() else {
        // A new tracker learns every name, this one included.
        return if start_if_missing { t.start() } else { Ok(()) };
    };
    match pipe.write_all(&line(op, name)) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe && t.names.is_empty() => {
            // Nothing of ours to track: a new tracker can wait for the
            // next creation.
            t.pipe = None;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            // The tracker died (killed, most likely). Like Python's, it is
            // started again on the next use, and told about every name
            // this process holds; names registered only by other processes
            // are theirs to register again.
            eprintln!("multiproc: the shared-memory tracker died unexpectedly; starting a new one");
            t.start()
        }
        other => other,
    }
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
    t.pipe
        .as_ref()
        .and_then(|f| f.try_clone().ok())
        .map(OwnedFd::from)
}

/// Keeps a received tracker pipe (when this process has none yet), so the
/// tracker waits for this process too.
pub(crate) fn adopt(fd: OwnedFd) {
    let mut t = TRACKER.lock().unwrap_or_else(|e| e.into_inner());
    if t.pipe.is_none() {
        t.pipe = Some(File::from(fd));
    }
}

/// The tracker's life (called before `main` in the re-executed binary).
pub(crate) fn serve(pipe: OwnedFd) -> ! {
    // Like Python's tracker: a Ctrl-C aimed at the program must not kill
    // the process that cleans up after it.
    sys::set_signal(libc::SIGINT, sys::Disposition::Ignore);
    sys::set_signal(libc::SIGTERM, sys::Disposition::Ignore);
    if let Ok(null) = File::open("/dev/null") {
        use std::os::fd::AsFd;
        let _ = sys::dup2_stdio(null.as_fd(), 0);
        let _ = sys::dup2_stdio(null.as_fd(), 1);
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
    // Names another process unlinked without telling this tracker are
    // simply gone (ENOENT) and not reported.
    let leaked: Vec<&String> = names
        .iter()
        .filter(|name| super::shared_memory::unlink_name(name).is_ok())
        .collect();
    if !leaked.is_empty() {
        eprintln!(
            "multiproc: shared-memory tracker: there appear to be {} leaked shared_memory \
             objects to clean up at shutdown: {leaked:?}",
            leaked.len()
        );
    }
    sys::exit_now(0)
}
