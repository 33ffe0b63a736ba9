//! The distributed pool on a real `redis-server` (feature `redis`), with
//! workers that are independent programs: this test binary started again
//! as a command with `MULTIPROC_WORKER=URL`, which runs `worker_entry`.
#![cfg(feature = "redis")]

mod redis_support;

use multiproc::distributed::{Backend, EntryPoint, RedisPool, Registry};
use multiproc::{Error, entry_point};
use redis_support::RedisServer;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_millis(1000);

fn square(x: u64) -> u64 {
    x * x
}

fn slow_square(arg: (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(arg.1));
    arg.0 * arg.0
}

fn boom(x: u32) -> u32 {
    assert!(x != 13, "unlucky {x}");
    x
}

fn crash(_: u32) -> u32 {
    // A task that takes its worker down, every time.
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::thread::sleep(Duration::from_secs(60));
    0
}

struct Entries {
    square: EntryPoint<u64, u64>,
    slow_square: EntryPoint<(u64, u64), u64>,
    boom: EntryPoint<u32, u32>,
    crash: EntryPoint<u32, u32>,
}

fn entries() -> Entries {
    Entries {
        square: entry_point!(square),
        slow_square: entry_point!(slow_square),
        boom: entry_point!(boom),
        crash: entry_point!(crash),
    }
}

fn registry() -> Registry {
    let e = entries();
    let r = Registry::new()
        .with(&e.square)
        .with(&e.slow_square)
        .with(&e.boom)
        .with(&e.crash);
    match std::env::var("TEST_REGISTRY_VERSION") {
        Ok(v) => r.version(&v),
        Err(_) => r,
    }
}

/// Not a test of its own: the worker program's `main`. It returns at once
/// unless this binary was started as a worker.
#[test]
fn worker_entry() {
    if std::env::var_os("TEST_WORKER_LOG").is_some() {
        let _ = multiproc::log_to_stderr(log::LevelFilter::Info);
    }
    registry().serve_if_worker();
}

/// Worker programs, killed and waited for when dropped.
struct Workers(Vec<Child>);

impl Workers {
    fn start(url: &str, n: usize, version: Option<&str>) -> Workers {
        let exe = std::env::current_exe().unwrap();
        Workers(
            (0..n)
                .map(|_| {
                    let mut c = Command::new(&exe);
                    c.args([
                        "--exact",
                        "worker_entry",
                        "--nocapture",
                        "--test-threads",
                        "1",
                    ])
                    .env("MULTIPROC_WORKER", url)
                    .env("MULTIPROC_LEASE_MS", LEASE.as_millis().to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                    if let Some(v) = version {
                        c.env("TEST_REGISTRY_VERSION", v);
                    }
                    c.spawn().expect("start a worker program")
                })
                .collect(),
        )
    }

    fn kill(&mut self, i: usize) {
        let _ = self.0[i].kill();
        let _ = self.0[i].wait();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pool(s: &RedisServer) -> RedisPool {
    let b = Backend::connect(&s.url()).unwrap().with_lease(LEASE);
    RedisPool::new(&b, "default", &registry()).unwrap()
}

fn wait_size(p: &RedisPool, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.size().unwrap() != n {
        assert!(
            Instant::now() < deadline,
            "pool size stayed {} (want {n})",
            p.size().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn apply_map_imap_submit_and_panics() {
    let s = RedisServer::start();
    let _w = Workers::start(&s.url(), 2, None);
    let p = pool(&s);
    let e = entries();
    wait_size(&p, 2);
    assert_eq!(p.apply(&e.square, 7).unwrap(), 49);
    assert_eq!(p.submit(&e.square, 8).unwrap().get().unwrap(), 64);
    let r = p.apply_async(&e.square, 9).unwrap();
    assert!(r.task_id().starts_with(p.caller()));
    assert_eq!(r.get_timeout(Duration::from_secs(30)).unwrap(), 81);
    let t0 = Instant::now();
    let v = p.map(&e.square, 0..1000u64).unwrap();
    eprintln!(
        "map of 1000 trivial tasks over redis, 2 workers: {:?}",
        t0.elapsed()
    );
    assert_eq!(v, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    let v: Vec<u64> = p
        .imap(&e.slow_square, (0..10u64).map(|x| (x, (10 - x) * 20)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(v, (0..10u64).map(|x| x * x).collect::<Vec<_>>());
    let mut v: Vec<u64> = p
        .imap_unordered(&e.square, 0..50u64)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    v.sort();
    assert_eq!(v, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    // A panic is that task's error; the workers go on.
    match p.apply(&e.boom, 13) {
        Err(Error::Panicked(rp)) => assert!(rp.message.contains("unlucky 13"), "{rp:?}"),
        other => panic!("{other:?}"),
    }
    let err = p.map(&e.boom, [1, 13, 2]).unwrap_err();
    assert_eq!(err.task_index(), Some(1));
    assert_eq!(p.apply(&e.boom, 1).unwrap(), 1);
    assert_eq!(p.duplicates_dropped(), 0);
}

#[test]
fn worker_killed_mid_task_results_exactly_once_and_size_follows() {
    let s = RedisServer::start();
    let mut w = Workers::start(&s.url(), 2, None);
    // Bounded: a task lost with its worker would show as a timeout.
    let p = pool(&s).with_task_timeout(Duration::from_secs(60));
    let e = entries();
    wait_size(&p, 2);
    let n = 40u64;
    let results = p
        .imap_unordered(&e.slow_square, (0..n).map(|x| (x, 100)))
        .unwrap();
    let mut got = Vec::new();
    for (i, r) in results.enumerate() {
        if i == 5 {
            w.kill(0); // SIGKILL, mid-task
        }
        got.push(r.unwrap());
    }
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(got.len(), n as usize);
    assert_eq!(unique.len(), n as usize);
    assert!((0..n).all(|x| unique.contains(&(x * x))));
    wait_size(&p, 1);
}

#[test]
fn task_that_kills_its_worker_goes_to_dead_letter() {
    let s = RedisServer::start();
    let _w = Workers::start(&s.url(), 3, None);
    let b = Backend::connect(&s.url()).unwrap().with_lease(LEASE);
    let p = RedisPool::new(&b, "default", &registry())
        .unwrap()
        .with_max_attempts(2);
    let e = entries();
    wait_size(&p, 3);
    let r = p.apply_async(&e.crash, 1).unwrap();
    let id = r.task_id().to_string();
    match r.get_timeout(Duration::from_secs(60)) {
        Err(Error::DeadLetter { task, attempts }) => {
            assert!(task.contains(&id) && task.contains("crash"), "{task}");
            assert_eq!(attempts, 2);
        }
        other => panic!("{other:?}"),
    }
    // The survivor still serves.
    assert_eq!(p.apply(&e.square, 3).unwrap(), 9);
    let mut c = redis::Client::open(s.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let dead: usize = redis::cmd("LLEN")
        .arg(format!("{}:pool:default:dead", b.prefix()))
        .query(&mut c)
        .unwrap();
    assert_eq!(dead, 1);
}

#[test]
fn worker_of_another_build_refuses_with_an_error_the_caller_sees() {
    let s = RedisServer::start();
    let _w = Workers::start(&s.url(), 1, Some("other-build"));
    let p = pool(&s);
    let e = entries();
    wait_size(&p, 1);
    match p.apply(&e.square, 2) {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains("schema") && m.contains("square"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_task_timeout_and_no_workers() {
    let s = RedisServer::start();
    let b = Backend::connect(&s.url()).unwrap().with_lease(LEASE);
    let e = entries();
    // No worker yet: size 0, and a per-task timeout bounds the wait.
    let p = RedisPool::new(&b, "default", &registry())
        .unwrap()
        .with_task_timeout(Duration::from_millis(500));
    assert_eq!(p.size().unwrap(), 0);
    let t0 = Instant::now();
    assert!(matches!(p.apply(&e.square, 2), Err(Error::TaskTimeout(_))));
    assert!(t0.elapsed() < Duration::from_millis(500) + Duration::from_secs(2));
    // A planted, hostile task: the worker drops it and goes on.
    let mut c = redis::Client::open(s.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("XADD")
        .arg(format!("{}:q:pool:default:tasks", b.prefix()))
        .arg("*")
        .arg("d")
        .arg(&b"\x05touch /tmp/pwned"[..])
        .query::<String>(&mut c)
        .unwrap();
    let _w = Workers::start(&s.url(), 1, None);
    let p = RedisPool::new(&b, "default", &registry()).unwrap();
    wait_size(&p, 1);
    assert_eq!(p.apply(&e.square, 6).unwrap(), 36);
    // A running task longer than the timeout: the caller stops waiting.
    let p = p.with_task_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(matches!(
        p.apply(&e.slow_square, (2, 3000)),
        Err(Error::TaskTimeout(_))
    ));
    assert!(t0.elapsed() < Duration::from_millis(300) + Duration::from_secs(2));
}

#[test]
fn redis_restart_mid_run_every_task_answered_once() {
    let mut s = RedisServer::start_persistent();
    let _w = Workers::start(&s.url(), 2, None);
    // Bounded: a task stuck with a worker would show as a timeout.
    let p = pool(&s).with_task_timeout(Duration::from_secs(90));
    let e = entries();
    wait_size(&p, 2);
    let n = 30u64;
    let mut got = Vec::new();
    for (i, r) in p
        .imap_unordered(&e.slow_square, (0..n).map(|x| (x, 150)))
        .unwrap()
        .enumerate()
    {
        if i == 4 {
            // Killed while both workers are in the middle of a task.
            s.restart();
        }
        match r {
            Ok(v) => got.push(v),
            Err(e) => panic!("after {} results: {e}", got.len()),
        }
    }
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(got.len(), n as usize);
    assert_eq!(unique.len(), n as usize);
    assert!((0..n).all(|x| unique.contains(&(x * x))));
}
