//! Shared helpers for the integration tests.
#![allow(dead_code)]

use multiproc::{Process, StartMethod, Target};
use std::time::{Duration, Instant};

/// Runs `scenario(method)` for every start method: forkserver and spawn in
/// this (multi-threaded) test process, fork inside a single-threaded
/// forkserver child, since fork is refused where other threads exist.
pub fn for_each_method<F>(scenario: F)
where
    F: Target<(StartMethod,), Output = ()>,
{
    scenario.call((StartMethod::ForkServer,));
    scenario.call((StartMethod::Spawn,));
    run_in_child(scenario, StartMethod::Fork);
}

/// Runs `scenario(method)` in a fresh forkserver child; its panic fails the
/// test with the child's message and location.
pub fn run_in_child<F>(scenario: F, method: StartMethod)
where
    F: Target<(StartMethod,), Output = ()>,
{
    let mut p = Process::new(scenario, (method,)).name(format!("scenario-{method}"));
    p.start().expect("start scenario child");
    p.join().expect("join scenario child");
    if let Err(e) = p.take_result() {
        panic!("scenario under {method} failed: {e}");
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Whether `pid` names a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// The children of this process that are zombies.
pub fn zombie_children() -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("children");
        let list = std::fs::read_to_string(path).unwrap_or_default();
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if !pid_alive(pid) && std::path::Path::new(&format!("/proc/{pid}")).exists() {
                out.push(pid);
            }
        }
    }
    out
}

/// The descriptors open in this process, with what they point at.
pub fn open_fds() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(n) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(entry.path()) {
            out.push((n, target.to_string_lossy().into_owned()));
        }
    }
    // The directory being listed shows up as an fd that is gone by now.
    out.retain(|(n, _)| std::path::Path::new(&format!("/proc/self/fd/{n}")).exists());
    out.sort();
    out
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with integer arguments; the pid is a live child of
    // the test or its process tree.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Runs `scenario` in a spawned child: a fresh process with no fork server
/// shared with this one, for tests that disturb process-wide state.
pub fn run_isolated<F>(scenario: F)
where
    F: Target<(StartMethod,), Output = ()>,
{
    let mut p = Process::new(scenario, (StartMethod::Spawn,))
        .name("isolated-scenario")
        .start_method(StartMethod::Spawn);
    p.start().expect("start isolated child");
    p.join().expect("join isolated child");
    if let Err(e) = p.take_result() {
        panic!("isolated scenario failed: {e}");
    }
}

/// A value that is `depth` nested `Some`s, as the recursive type
/// `struct Msg(Option<Box<Msg>>)` encodes. It is encoded without recursion
/// (as a hostile peer would write the bytes by hand) and decoded with it
/// (as the derived `Deserialize` of such a type does), one decoding level
/// per `Some`.
#[derive(Debug, PartialEq, Eq)]
pub struct Nest {
    pub depth: usize,
}

/// The bytes of [`Nest`] `depth` deep: `depth` times `Some`, then `None`.
pub fn nest_bytes(depth: usize) -> Vec<u8> {
    let mut b = vec![1u8; depth];
    b.push(0);
    b
}

impl serde::Serialize for Nest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let bytes = nest_bytes(self.depth);
        let mut t = s.serialize_tuple(bytes.len())?;
        for b in &bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> serde::Deserialize<'de> for Nest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let inner: Option<Box<Nest>> = serde::Deserialize::deserialize(d)?;
        Ok(Nest {
            depth: inner.map_or(0, |n| n.depth + 1),
        })
    }
}

/// Deeper than any decoding limit: without one, decoding it overflows the
/// stack.
pub const HOSTILE_DEPTH: usize = 100_000;

/// An anonymous memory file holding `text`, read back from its start (a
/// handle to send in tests).
pub fn memfd_with(text: &str) -> std::fs::File {
    use std::io::{Seek, Write};
    let fd = rustix::fs::memfd_create(c"test-file", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes()).unwrap();
    f.rewind().unwrap();
    f
}
