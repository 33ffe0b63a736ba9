//! Process lifecycle tests, ported from CPython's
//! `Lib/test/_test_multiprocessing.py` (`_TestProcess`, `_TestSubclassingProcess`)
//! where they apply in Rust terms. Scenario ids (P01…) refer to
//! `CPYTHON_SCENARIOS.md`.

mod common;

use common::*;
use multiproc::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn add(a: i32, b: i32) -> i32 {
    a + b
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn sleep_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn whoami() -> (String, u32, bool, Option<String>, Option<u32>) {
    let me = current_process();
    let parent = parent_process();
    (
        me.name().to_string(),
        me.pid(),
        me.is_daemon(),
        parent.as_ref().map(|p| p.name().to_string()),
        parent.as_ref().map(|p| p.pid()),
    )
}

// P01
#[test]
fn main_process_identity() {
    let me = current_process();
    assert_eq!(me.name(), "MainProcess");
    assert_eq!(me.pid(), std::process::id());
    assert!(me.is_alive());
    assert!(!me.is_daemon());
    assert_eq!(me.authkey().len(), 32);
    assert!(me.start_method().is_none());
    assert!(parent_process().is_none());
}

// P06, P12: the full lifecycle, and what the child sees.
fn lifecycle(m: StartMethod) {
    let mut p = Process::new(whoami, ()).name("worker-x").start_method(m);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    assert!(p.pid().is_none());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert_ne!(pid, std::process::id());
    // Listed while it runs; a child this short may already have ended
    // (and been reaped by `active_children`, as in Python) by the time the
    // list is taken.
    let listed = active_children()
        .iter()
        .any(|c| c.pid == pid && c.name == "worker-x");
    assert!(listed || !p.is_alive());
    p.join().unwrap();
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    assert!(!active_children().iter().any(|c| c.pid == pid));
    let (name, child_pid, daemon, parent_name, parent_pid) = p.take_result().unwrap();
    assert_eq!(name, "worker-x");
    assert_eq!(child_pid, pid);
    assert!(!daemon);
    assert_eq!(parent_name.as_deref(), Some(current_process().name()));
    assert_eq!(parent_pid, Some(std::process::id()));
    assert!(p.take_result().is_err(), "a result is taken once");
}

#[test]
fn lifecycle_every_method() {
    for_each_method(lifecycle);
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Kwargs {
    label: String,
    weights: Vec<f64>,
    nested: Option<Box<Kwargs>>,
}

type Eight = (
    u8,
    String,
    Vec<u64>,
    BTreeMap<String, i64>,
    Kwargs,
    (bool, char),
    Option<i32>,
    Vec<u8>,
);

// Eight arguments: the most a target takes.
#[allow(clippy::too_many_arguments)]
fn echo_args(
    a: u8,
    b: String,
    c: Vec<u64>,
    d: BTreeMap<String, i64>,
    e: Kwargs,
    f: (bool, char),
    g: Option<i32>,
    h: Vec<u8>,
) -> Eight {
    (a, b, c, d, e, f, g, h)
}

// P03: arguments of many shapes arrive equal.
fn args_round_trip(m: StartMethod) {
    let kw = Kwargs {
        label: "κ".into(),
        weights: vec![0.5, -1.0],
        nested: Some(Box::new(Kwargs {
            label: "inner".into(),
            weights: vec![],
            nested: None,
        })),
    };
    let map: BTreeMap<String, i64> = [("x".to_string(), -1), ("y".to_string(), i64::MAX)].into();
    let args = (
        7u8,
        "text".to_string(),
        vec![1u64, 2, 3],
        map,
        kw,
        (true, '字'),
        None,
        vec![0u8; 100_000],
    );
    let mut p = Process::new(echo_args, args.clone()).start_method(m);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), args);
}

#[test]
fn args_of_many_types() {
    for_each_method(args_round_trip);
}

fn report_daemon_default() -> (bool, bool) {
    let inherits = Process::new(add, (1, 1)).is_daemon();
    let explicit = Process::new(add, (1, 1)).daemon(false).is_daemon();
    (inherits, explicit)
}

fn try_start_child() -> String {
    let mut p = Process::new(add, (1, 2));
    match p.start() {
        Err(e) => e.to_string(),
        Ok(()) => "started".into(),
    }
}

// P04, P27
#[test]
fn daemon_flag_defaults_and_rules() {
    assert!(!Process::new(add, (1, 1)).is_daemon());
    assert!(Process::new(add, (1, 1)).daemon(true).is_daemon());
    let mut p = Process::new(report_daemon_default, ()).daemon(true);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), (true, false));

    let mut p = Process::new(try_start_child, ()).daemon(true);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(
        p.take_result().unwrap(),
        "daemonic processes are not allowed to have children"
    );
    let mut q = Process::new(add, (1, 1));
    q.start().unwrap();
    assert!(
        q.set_daemon(true).is_err(),
        "daemon flag is fixed once started"
    );
    q.join().unwrap();
}

fn report_parent_status(w: Connection) {
    let parent = parent_process().expect("a child has a parent");
    w.send(&(parent.pid(), parent.is_alive())).unwrap();
    let exited = parent.join_timeout(Duration::from_secs(20)).unwrap();
    w.send(&(exited, parent.is_alive())).unwrap();
}

fn create_grandchild(w: Connection) {
    let mut g = Process::new(report_parent_status, (w,)).name("grandchild");
    g.start().unwrap();
    sleep_forever();
}

// P05: the grandchild sees its parent alive, then dead once it is killed.
#[test]
fn parent_process_attributes() {
    assert!(parent_process().is_none());
    let (r, w) = Pipe::one_way().unwrap();
    let mut p = Process::new(create_grandchild, (w,));
    p.start().unwrap();
    let (ppid, alive): (u32, bool) = r.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(ppid, p.pid().unwrap());
    assert!(alive);
    p.terminate().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
    let (exited, alive): (bool, bool) = r.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(exited);
    assert!(!alive);
}

// P08, P09, P10: join(0) returns at once; terminate/kill/interrupt give -signal.
fn signals(m: StartMethod) {
    for (sig, how) in [(libc::SIGTERM, 0), (libc::SIGKILL, 1), (libc::SIGINT, 2)] {
        let mut p = Process::new(sleep_forever, ()).start_method(m);
        p.start().unwrap();
        let t = Instant::now();
        assert!(!p.join_timeout(Duration::ZERO).unwrap());
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        match how {
            0 => p.terminate().unwrap(),
            1 => p.kill().unwrap(),
            _ => p.interrupt().unwrap(),
        }
        assert!(p.join_timeout(Duration::from_secs(10)).unwrap());
        assert_eq!(p.exitcode(), Some(-sig));
        assert!(matches!(p.take_result(), Err(Error::Killed(s)) if s == sig));
        // Signalling a reaped process is harmless.
        p.terminate().unwrap();
    }
}

#[test]
fn terminate_kill_interrupt() {
    for_each_method(signals);
}

// P11
#[test]
fn cpu_count_is_positive() {
    assert!(cpu_count() >= 1);
}

fn recurse(w: Connection, id: Vec<u32>) {
    w.send(&id).unwrap();
    if id.len() < 2 {
        for i in 0..2 {
            let mut next = id.clone();
            next.push(i);
            let mut p = Process::new(recurse, (w.try_clone().unwrap(), next));
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
    }
}

fn recursion(m: StartMethod) {
    let (r, w) = Pipe::one_way().unwrap();
    let mut p = Process::new(recurse, (w, vec![])).start_method(m);
    p.start().unwrap();
    p.join().unwrap();
    let mut got: Vec<Vec<u32>> = Vec::new();
    while r.poll(Some(Duration::ZERO)).unwrap() {
        match r.recv() {
            Ok(v) => got.push(v),
            Err(e) if e.is_eof() => break,
            Err(e) => panic!("{e}"),
        }
    }
    let want: Vec<Vec<u32>> = vec![
        vec![],
        vec![0],
        vec![0, 0],
        vec![0, 1],
        vec![1],
        vec![1, 0],
        vec![1, 1],
    ];
    assert_eq!(got, want);
}

// P13: children start grandchildren, depth first.
#[test]
fn recursive_spawning() {
    for_each_method(recursion);
}

// P14: the sentinel is an error before start, then a pidfd that becomes
// readable when the child exits.
#[test]
fn sentinel() {
    let mut p = Process::new(sleep_ms, (300,));
    assert!(p.sentinel().is_err());
    p.start().unwrap();
    let fd = p.sentinel().unwrap();
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    #[allow(unsafe_code)]
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert_eq!(ready, 0, "not ready while the child runs");
    #[allow(unsafe_code)]
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(ready, 1, "ready once the child exits");
    p.join().unwrap();
}

// P15: close rules.
#[test]
fn close_rules() {
    let mut p = Process::new(sleep_ms, (200,));
    p.start().unwrap();
    assert!(matches!(p.close(), Err(Error::State(_))));
    p.join().unwrap();
    p.close().unwrap();
    assert!(!p.is_alive());
    assert!(p.join().is_err());
    assert!(p.terminate().is_err());
    assert!(p.sentinel().is_err());
    p.close().unwrap();
    assert!(p.start().is_err());
}

fn many(m: StartMethod) {
    let n = if m == StartMethod::Spawn { 20 } else { 100 };
    let mut ps: Vec<Process> = (0..n)
        .map(|_| Process::new(sleep_ms, (10,)).start_method(m))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    let mut ps: Vec<Process> = (0..n)
        .map(|_| Process::new(sleep_forever, ()).start_method(m))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &ps {
        p.terminate().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
    }
}

// P16
#[test]
fn many_processes() {
    for_each_method(many);
}

fn drop_and_linger(w: Connection) {
    drop(w);
    sleep_ms(5_000);
}

// P17: the parent drops its copy of the arguments (and the handles in them)
// once the child has started.
#[test]
fn arguments_released_after_start() {
    let (r, w) = Pipe::one_way().unwrap();
    let mut p = Process::new(drop_and_linger, (w,));
    p.start().unwrap();
    // Only the child held the write end, and it dropped it.
    match r.recv_timeout::<u8>(Duration::from_secs(4)) {
        Err(e) => assert!(e.is_eof(), "expected EOF, got {e}"),
        Ok(v) => panic!("unexpected message {v}"),
    }
    p.kill().unwrap();
    p.join().unwrap();
}

fn list_fds(_given: Option<Handle<std::fs::File>>) -> Vec<(i32, String)> {
    open_fds()
}

fn fd_hygiene(m: StartMethod) {
    // A descriptor of ours that is not close-on-exec must not leak either.
    let leak = std::fs::File::open("/dev/null").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leak);
    // SAFETY: clearing FD_CLOEXEC on a descriptor we own.
    #[allow(unsafe_code)]
    unsafe {
        libc::fcntl(raw, libc::F_SETFD, 0);
    }
    let mut ps: Vec<Process<Vec<(i32, String)>>> = (0..5)
        .map(|_| Process::new(list_fds, (None,)).start_method(m))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    let mut lists = Vec::new();
    for p in &mut ps {
        p.join().unwrap();
        lists.push(p.take_result().unwrap());
    }
    // P18: siblings started concurrently see the same number of fds.
    let counts: Vec<usize> = lists.iter().map(Vec::len).collect();
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    let fds = &lists[0];
    for (n, target) in fds {
        let ours = *n <= 2
            || target.starts_with("socket:")
            || target == "anon_inode:[pidfd]"
            || target.starts_with("/proc/");
        assert!(ours, "child inherited fd {n} -> {target}: {fds:?}");
        assert!(!target.ends_with("/dev/null") || *n <= 2, "leaked fd {n}");
    }
    // Internal descriptors: channel, parent pidfd, forkserver client.
    assert!(fds.len() <= 3 + 3, "{fds:?}");
    // A given handle arrives as one more fd.
    let mut p = Process::new(list_fds, (Some(Handle(leak.try_clone().unwrap())),)).start_method(m);
    p.start().unwrap();
    p.join().unwrap();
    let with = p.take_result().unwrap();
    assert_eq!(with.len(), fds.len() + 1, "{with:?} vs {fds:?}");
    assert!(with.iter().any(|(_, t)| t == "/dev/null"));
}

// P18, R08: children see only stdio, their own channel and the handles they
// were given (forkserver and spawn; fork inherits, as in Python).
#[test]
fn children_inherit_only_given_fds() {
    fd_hygiene(StartMethod::ForkServer);
    fd_hygiene(StartMethod::Spawn);
}

fn close_stdout_then_return() -> u32 {
    // SAFETY: taking ownership of fd 1 to close it; nothing else in this
    // child uses stdout afterwards except through std, which must cope.
    #[allow(unsafe_code)]
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(1) });
    5
}

// P20: a child whose stdout is closed still exits cleanly.
#[test]
fn closed_stdout_in_child() {
    let mut p = Process::new(close_stdout_then_return, ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(p.take_result().unwrap(), 5);
}

fn forkserver_restarts(_m: StartMethod) {
    let mut p = Process::new(add, (1, 1)).start_method(StartMethod::ForkServer);
    p.start().unwrap();
    p.join().unwrap();
    let first = forkserver_pid().expect("server running");
    // SIGINT is ignored by the server (Ctrl-C goes to the program).
    signal(first, libc::SIGINT);
    let mut p = Process::new(add, (2, 2)).start_method(StartMethod::ForkServer);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 4);
    assert_eq!(forkserver_pid(), Some(first));
    signal(first, libc::SIGKILL);
    assert!(eventually(Duration::from_secs(5), || !pid_alive(first)));
    let mut p = Process::new(add, (3, 3)).start_method(StartMethod::ForkServer);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 6);
    let second = forkserver_pid().expect("a new server");
    assert_ne!(second, first);
}

// P21: the fork server killed by SIGKILL or SIGINT does not stop new starts.
// Run in a spawned child, which has a fork server of its own, so that other
// tests' children are not affected.
#[test]
fn forkserver_restarts_after_being_killed() {
    run_isolated(forkserver_restarts);
}

#[derive(Serialize, Deserialize)]
struct UpperServer {
    conn: Connection,
}

impl Run for UpperServer {
    type Output = usize;
    fn run(self) -> usize {
        // Stops on an empty line or end of stream. Under fork the child
        // holds a copy of every parent descriptor, including the parent's
        // end, so end of stream alone would never come (as in Python).
        let mut served = 0;
        while let Ok(s) = self.conn.recv::<String>() {
            if s.is_empty() {
                break;
            }
            self.conn.send(&s.to_uppercase()).unwrap();
            served += 1;
        }
        served
    }
}

fn subclass(m: StartMethod) {
    let (here, there) = Pipe::new().unwrap();
    let mut p = Process::from_run(UpperServer { conn: there }).start_method(m);
    p.start().unwrap();
    for word in ["hello", "world"] {
        here.send(word).unwrap();
        assert_eq!(here.recv::<String>().unwrap(), word.to_uppercase());
    }
    here.send("").unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 2);
}

// P23: a `Run` value as a Process subclass.
#[test]
fn run_trait_like_subclassing() {
    for_each_method(subclass);
}

fn panics_here(msg: String) -> u8 {
    panic!("boom: {msg}");
}

fn exit_with(code: i32) {
    multiproc::exit(code)
}

fn std_exit_with(code: i32) {
    std::process::exit(code)
}

fn exits(m: StartMethod) {
    // P24: a panic becomes data, with message and location.
    let mut p = Process::new(panics_here, ("x".to_string(),)).start_method(m);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(1));
    let err = p.take_result().unwrap_err();
    let panic = err.panic().expect("a panic");
    assert_eq!(panic.message, "boom: x");
    let loc = panic.location.as_deref().unwrap();
    assert!(loc.starts_with("tests/process.rs:"), "{loc}");
    // P25: exit codes.
    for code in [0, 1, 8, 12, 255] {
        let mut p = Process::new(exit_with, (code,)).start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(code));
        assert!(matches!(p.take_result(), Err(Error::Exited(c)) if c == code));
        let mut p = Process::new(std_exit_with, (code,)).start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(code));
    }
}

#[test]
fn panics_and_exit_codes() {
    for_each_method(exits);
}

fn panic_output(_: StartMethod) {
    // This isolated process sends its stderr to a file, and the children
    // it starts inherit it.
    let path = std::env::temp_dir().join(format!("mp-panic-output-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    // SAFETY: dup2 of two open descriptors; this process is the test's own
    // isolated child, nothing else writes to its stderr.
    #[allow(unsafe_code)]
    let r = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), 2) };
    assert_eq!(r, 2);
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = Process::new(panics_here, ("printed".to_string(),))
            .name(format!("Painter-{m}"))
            .start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        assert!(p.take_result().is_err());
    }
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let head = format!("process 'Painter-{m}' (pid ");
        let at = text
            .find(&head)
            .unwrap_or_else(|| panic!("no {head:?} in {text:?}"));
        let line = &text[at..];
        assert!(
            line.contains(") panicked at tests/process.rs:") && line.contains("boom: printed"),
            "{text}"
        );
    }
    assert!(!text.contains("<unnamed>"), "{text}");
}

#[test]
fn a_childs_panic_is_printed_with_its_process_name() {
    run_isolated(panic_output);
}

// P28: start twice, join before start.
#[test]
fn misuse_is_an_error() {
    let mut p = Process::new(add, (1, 2));
    assert!(matches!(p.join(), Err(Error::State(_))));
    assert!(matches!(p.take_result(), Err(Error::State(_))));
    p.start().unwrap();
    assert!(matches!(
        p.start(),
        Err(Error::State("cannot start a process twice"))
    ));
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 3);
}

fn fork_rules(_m: StartMethod) {
    // A capturing closure runs under fork.
    let data = [1u64, 2, 3];
    let mut p = Process::from_closure(move || data.iter().sum::<u64>());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 6);
    // A closure cannot run under another method.
    let mut p = Process::from_closure(|| 1u8).start_method(StartMethod::Spawn);
    assert!(matches!(p.start(), Err(Error::ClosureNeedsFork)));
    // Fork is refused once this process has another thread.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let mut p = Process::new(add, (1, 1)).start_method(StartMethod::Fork);
    assert!(matches!(p.start(), Err(Error::ForkWithThreads { .. })));
    drop(tx);
    t.join().unwrap().ok();
    // The same Process can still be started once the thread is gone.
    assert!(eventually(Duration::from_secs(5), || p.start().is_ok()));
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 2);
}

#[test]
fn fork_method_rules() {
    run_in_child(fork_rules, StartMethod::Fork);
}

#[test]
fn contexts_choose_the_method() {
    assert_eq!(get_start_method(), StartMethod::ForkServer);
    assert_eq!(
        get_all_start_methods(),
        vec![
            StartMethod::ForkServer,
            StartMethod::Spawn,
            StartMethod::Fork
        ]
    );
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let ctx = get_context(m);
        assert_eq!(ctx.start_method(), m);
        let mut p = ctx.process(report_method, ());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.take_result().unwrap(), Some(m));
    }
}

fn report_method() -> Option<StartMethod> {
    current_process().start_method()
}

fn report_name() -> (String, Vec<u32>) {
    let mut p = Process::new(add, (0, 0));
    let name = p.get_name().to_string();
    p.start().unwrap();
    p.join().unwrap();
    (name, current_process().identity().to_vec())
}

#[test]
fn default_names_follow_the_tree() {
    let mut p = Process::new(report_name, ());
    let name = p.get_name().to_string();
    assert!(name.starts_with("Process-"), "{name}");
    let n: u32 = name["Process-".len()..].parse().unwrap();
    p.start().unwrap();
    p.join().unwrap();
    let (child_name, identity) = p.take_result().unwrap();
    assert_eq!(identity, vec![n]);
    assert_eq!(child_name, format!("Process-{n}:1"));
}

fn big_result(mib: usize) -> Vec<u8> {
    vec![0xAB; mib << 20]
}

// A result larger than any socket buffer: join collects it while waiting.
#[test]
fn large_return_value() {
    let mut p = Process::new(big_result, (64,));
    p.start().unwrap();
    p.join().unwrap();
    let v = p.take_result().unwrap();
    assert_eq!(v.len(), 64 << 20);
    assert!(v.iter().all(|&b| b == 0xAB));
}

fn send_forever(w: Connection) {
    let big = vec![7u8; 256 << 20];
    w.send_bytes(&big).unwrap();
}

// A child killed in the middle of a send gives the reader an error, not a hang.
#[test]
fn child_killed_mid_send() {
    let (r, w) = Pipe::one_way().unwrap();
    let mut p = Process::new(send_forever, (w,));
    p.start().unwrap();
    assert!(r.poll(Some(Duration::from_secs(20))).unwrap());
    sleep_ms(100);
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
    let err = r.recv_bytes().unwrap_err();
    assert!(matches!(err, Error::Truncated), "{err}");
}

fn daemon_sleeper() {
    sleep_forever();
}

fn start_daemon_and_wait(w: Connection, m: StartMethod) {
    let mut d = Process::new(daemon_sleeper, ())
        .daemon(true)
        .start_method(m);
    d.start().unwrap();
    w.send(&d.pid().unwrap()).unwrap();
    sleep_forever();
}

// A parent killed with SIGKILL takes its daemonic children with it.
#[test]
fn daemons_die_with_a_killed_parent() {
    for m in [
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        let (r, w) = Pipe::one_way().unwrap();
        let mut parent = Process::new(start_daemon_and_wait, (w, m));
        parent.start().unwrap();
        let daemon: u32 = r.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(pid_alive(daemon));
        parent.kill().unwrap();
        parent.join().unwrap();
        let t = Instant::now();
        assert!(
            eventually(Duration::from_secs(5), || !pid_alive(daemon)),
            "daemon {daemon} survived its parent under {m}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
    }
}

fn finish_children_then_report_zombies(m: StartMethod) {
    // Children that end in every way, some joined, some dropped unjoined.
    let mut keep = Vec::new();
    for i in 0..6 {
        let mut p = Process::new(exit_with, (i,)).start_method(m);
        p.start().unwrap();
        if i % 2 == 0 {
            p.join().unwrap();
        } else {
            keep.push(p.pid().unwrap());
        }
    }
    let mut k = Process::new(sleep_forever, ()).start_method(m);
    k.start().unwrap();
    k.kill().unwrap();
    drop(k);
    // Let the dropped ones finish, then reap through active_children().
    assert!(
        eventually(Duration::from_secs(30), || active_children().is_empty()),
        "still running under {m}: {:?}",
        active_children()
    );
    let zombies = zombie_children();
    assert!(zombies.is_empty(), "zombies under {m}: {zombies:?}");
}

// Every child is reaped: joined or not. Each run is isolated in a child so
// that other tests' children cannot be counted.
#[test]
fn no_zombies() {
    for m in [
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        run_in_child(finish_children_then_report_zombies, m);
    }
}

fn start_non_daemon_and_return(w: Connection) {
    let mut p = Process::new(write_after_delay, (w,));
    p.start().unwrap();
    // Returns without joining: the exit of this child waits for it.
}

fn write_after_delay(w: Connection) {
    sleep_ms(300);
    w.send(&"late").unwrap();
}

// Non-daemonic children are joined when their parent exits.
#[test]
fn non_daemonic_children_joined_at_exit() {
    let (r, w) = Pipe::one_way().unwrap();
    let mut p = Process::new(start_non_daemon_and_return, (w,));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    // The grandchild finished before its parent exited.
    assert_eq!(r.recv_timeout::<String>(Duration::ZERO).unwrap(), "late");
}

#[test]
fn display_and_debug() {
    let mut p = Process::new(add, (1, 1)).name("dbg");
    assert_eq!(format!("{p:?}"), "<Process name='dbg' initial>");
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(format!("{p:?}"), "<Process name='dbg' stopped exitcode=0>");
    assert_eq!(signal_name(9), "SIGKILL");
    assert_eq!(
        Error::Killed(15).to_string(),
        "process was killed by signal 15 (SIGTERM)"
    );
}

fn holds_socket(target: String) -> bool {
    open_fds().iter().any(|(_, t)| *t == target)
}

fn fork_grandchild_and_check(_m: StartMethod) {
    // This child's own channel to its parent is descriptor 3.
    let mine = std::fs::read_link("/proc/self/fd/3").unwrap();
    let mine = mine.to_string_lossy().into_owned();
    assert!(mine.starts_with("socket:"), "{mine}");
    let mut g = Process::new(holds_socket, (mine,)).start_method(StartMethod::Fork);
    g.start().unwrap();
    g.join().unwrap();
    assert!(
        !g.take_result().unwrap(),
        "a forked grandchild kept its parent's channel open"
    );
}

// A process forked from a child does not keep that child's channel to its
// parent open (which would hide the child's death from the parent).
#[test]
fn forked_grandchild_drops_the_parent_channel() {
    run_in_child(fork_grandchild_and_check, StartMethod::Fork);
}

extern "C" fn write_marker() {
    if let Ok(path) = std::env::var("MULTIPROC_TEST_MARKER") {
        let _ = std::fs::write(path, "atexit ran");
    }
}

fn register_atexit(path: String) {
    // SAFETY: set_var before any other thread exists in this child; atexit
    // registers a plain function.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("MULTIPROC_TEST_MARKER", path);
        libc::atexit(write_marker);
    }
}

// P29: exit handlers registered in a spawned or fork-server child run when
// it exits.
#[test]
fn atexit_handlers_run_in_children() {
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let path =
            std::env::temp_dir().join(format!("multiproc-atexit-{}-{m}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut p =
            Process::new(register_atexit, (path.to_string_lossy().into_owned(),)).start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "atexit ran",
            "under {m}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

fn my_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim()
        .to_string()
}

// Re-executed children and the fork server carry the program's name, not
// `exe`, in ps and top.
#[test]
fn children_are_named_after_the_program() {
    let mine = my_comm();
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let mut p = Process::new(my_comm, ()).start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.take_result().unwrap(), mine, "under {m}");
    }
}

// ------------------------------------------- a stalled result, hostile data

// Far larger than a socket buffer, but under SPILL_MIN: a larger result
// would travel in a sealed memory file and never block the writer. It
// carries a handle too: without one it would go through a shared buffer
// of the channel, with only a small envelope on the socket.
const BIG_RESULT: usize = multiproc::SPILL_MIN - 4096;

fn big_pattern() -> Vec<u8> {
    (0..BIG_RESULT).map(|i| (i % 251) as u8).collect()
}

fn big_result_after(ready: Connection) -> (serde_bytes::ByteBuf, Handle<std::fs::File>) {
    let v = big_pattern();
    let file = std::fs::File::open("/dev/null").unwrap();
    ready.send(&()).unwrap();
    (serde_bytes::ByteBuf::from(v), Handle(file))
}

/// Whether `pid` is blocked in `sendmsg` (`/proc/PID/syscall`).
fn blocked_in_sendmsg(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let sleeping = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('S'));
    let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    sleeping && call.split(' ').next() == Some(&libc::SYS_sendmsg.to_string())
}

// The child is stopped in the middle of writing a 4 MiB result: join_timeout
// keeps to its timeout, and a later join reads the rest of the same result.
#[test]
fn join_timeout_is_bounded_while_the_result_is_stalled() {
    let (ready_rx, ready_tx) = Pipe::new().unwrap();
    let mut p = Process::new(big_result_after, (ready_tx,));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    ready_rx
        .recv_timeout::<()>(Duration::from_secs(60))
        .unwrap();
    // Wait until the child has written part of its result and blocks on
    // the full socket (nobody reads it yet), then stop it there.
    assert!(
        eventually(Duration::from_secs(60), || blocked_in_sendmsg(pid)),
        "the child never blocked writing its result"
    );
    signal(pid, libc::SIGSTOP);
    // Should join_timeout hang, the child is continued after 6 s.
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(6));
        signal(pid, libc::SIGCONT);
    });
    let t = Instant::now();
    assert!(!p.join_timeout(Duration::from_secs(1)).unwrap());
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "join_timeout took {took:?}");
    // Once more, with the partial result already buffered.
    assert!(!p.join_timeout(Duration::from_millis(200)).unwrap());
    signal(pid, libc::SIGCONT);
    p.join().unwrap();
    let (got, _file) = p.take_result().unwrap();
    assert!(got.into_vec() == big_pattern(), "the result is not intact");
    watchdog.join().unwrap();
}

fn depth_of(n: Nest) -> usize {
    n.depth
}

fn deep_result(depth: usize) -> Nest {
    Nest { depth }
}

// Arguments and results nested 100,000 deep are decode errors on the side
// that receives them, not a stack overflow.
#[test]
fn deep_arguments_and_results_are_decode_errors() {
    let mut p = Process::new(
        depth_of,
        (Nest {
            depth: HOSTILE_DEPTH,
        },),
    );
    p.start().unwrap();
    p.join().unwrap();
    match p.take_result() {
        Err(Error::Bootstrap(why)) => assert!(why.contains("nests deeper"), "{why}"),
        other => panic!("expected a bootstrap error, got {other:?}"),
    }

    let mut p = Process::new(deep_result, (HOSTILE_DEPTH,));
    p.start().unwrap();
    p.join().unwrap();
    match p.take_result() {
        Err(Error::Decode(why)) => assert!(why.contains("nests deeper"), "{why}"),
        other => panic!("expected a decode error, got {other:?}"),
    }

    // Within the limit, both ways work.
    let mut p = Process::new(depth_of, (Nest { depth: 100 },));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 100);
}

fn fallible(which: u32) -> multiproc::Result<u32> {
    match which {
        0 => Ok(42),
        1 => Err(multiproc::Error::Io(
            std::fs::File::open("/nonexistent/x").unwrap_err(),
        )),
        2 => Err(multiproc::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad header",
        ))),
        3 => Err(multiproc::Error::State("cannot start a process twice")),
        4 => Err(multiproc::Error::Timeout),
        5 => Err(multiproc::Error::WorkerLost {
            pid: 12,
            exitcode: -9,
        }),
        _ => Err(multiproc::Error::BufferTooShort {
            message: vec![7; 5],
            capacity: 3,
        }),
    }
}

#[test]
fn a_child_returns_a_multiproc_result() {
    let mut got = Vec::new();
    for which in 0..7 {
        let mut p = Process::new(fallible, (which,));
        p.start().unwrap();
        p.join().unwrap();
        got.push(p.take_result().unwrap());
    }
    assert_eq!(*got[0].as_ref().unwrap(), 42);
    let expected: Vec<String> = (0..7)
        .map(|w| match fallible(w) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        })
        .collect();
    for (w, r) in got.iter().enumerate().skip(1) {
        assert_eq!(
            r.as_ref().unwrap_err().to_string(),
            expected[w],
            "variant {w}"
        );
    }
    match &got[1] {
        Err(multiproc::Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
            assert_eq!(e.raw_os_error(), Some(2));
        }
        other => panic!("{other:?}"),
    }
    match &got[2] {
        Err(multiproc::Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        got[3],
        Err(multiproc::Error::State("cannot start a process twice"))
    ));
    assert!(got[4].as_ref().unwrap_err().is_timeout());
    assert_eq!(got[5].as_ref().unwrap_err().signal(), Some(9));
    assert!(
        matches!(&got[6], Err(multiproc::Error::BufferTooShort { message, capacity: 3 }) if message == &[7; 5])
    );
}

fn greeting(who: String) -> String {
    format!("hello, {who}")
}

#[test]
fn processes_of_different_result_types_in_one_collection() {
    let mut procs: Vec<Box<dyn ProcessHandle>> = vec![
        Process::new(add, (2, 3)).erase(),
        Process::new(greeting, ("you".to_string(),))
            .start_method(StartMethod::Spawn)
            .erase(),
        Process::new(sleep_forever, ()).name("sleeper").erase(),
    ];
    for p in &mut procs {
        assert_eq!(p.pid(), None);
        assert!(p.sentinel().is_err());
        p.start().unwrap();
        assert!(p.pid().is_some());
    }
    assert_eq!(procs[2].get_name(), "sleeper");
    assert!(procs[2].is_alive());
    assert!(!procs[2].join_timeout(Duration::from_millis(50)).unwrap());
    procs[2].terminate().unwrap();
    for p in &mut procs {
        assert!(
            p.join_deadline(Instant::now() + Duration::from_secs(30))
                .unwrap()
        );
        assert!(!p.is_alive());
    }
    let codes: Vec<_> = procs.iter().map(|p| p.exitcode()).collect();
    assert_eq!(codes, [Some(0), Some(0), Some(-15)]);
    let mut greeter = procs
        .remove(1)
        .into_any()
        .downcast::<Process<String>>()
        .unwrap();
    assert_eq!(greeter.take_result().unwrap(), "hello, you");
    for p in &mut procs {
        p.close().unwrap();
    }
}

fn my_start_method() -> Option<StartMethod> {
    current_process().start_method()
}

/// A context scopes a start method: its processes and pools start their
/// children with it.
#[test]
fn context_factories_use_the_context_method() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let ctx = get_context(m);
        let mut p = ctx.process(my_start_method, ());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.take_result().unwrap(), Some(m));
        let pool = ctx.pool(1).unwrap();
        assert_eq!(pool.apply(my_start_method, ()).unwrap(), Some(m));
        drop(pool);
        let q = ctx.queue::<u8>().unwrap();
        q.put(3).unwrap();
        assert_eq!(q.get().unwrap(), 3);
        let lock = ctx.lock().unwrap();
        drop(lock.acquire().unwrap());
        assert_eq!(ctx.value(5u32).unwrap().get(), 5);
    }
}
