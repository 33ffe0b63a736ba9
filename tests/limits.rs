//! Resource limits (memory, CPU time) on processes and pool workers, and
//! the resource use reported for processes and tasks, across real
//! processes.

mod common;

use common::*;
use multiproc::*;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Allocates (and touches) 64 MiB blocks until something stops it.
fn hog() -> usize {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![1u8; 64 << 20]);
        std::hint::black_box(&blocks);
    }
}

/// Burns CPU until something stops it.
fn spin() -> u64 {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Touches `mib` MiB and returns the sum of a few bytes.
fn touch(mib: usize) -> u64 {
    let v = vec![7u8; mib << 20];
    let v = std::hint::black_box(v);
    v.iter().step_by(4096).map(|&b| u64::from(b)).sum()
}

fn plain_abort() {
    std::process::abort()
}

fn memory_limit_names_the_limit(method: StartMethod) {
    let mut p = Process::new(hog, ())
        .start_method(method)
        .limits(Limits::new().memory(512 * MIB));
    p.start().unwrap();
    assert!(p.join_timeout(Duration::from_secs(60)).unwrap());
    assert_eq!(p.limit_exceeded(), Some(Limit::Memory(512 * MIB)));
    match p.take_result() {
        Err(Error::LimitExceeded {
            limit: Limit::Memory(bytes),
            usage,
        }) => {
            assert_eq!(bytes, 512 * MIB);
            assert!(usage.is_some(), "usage of the reaped child");
        }
        other => panic!("{method}: expected the memory limit, got {other:?}"),
    }
}

#[test]
fn process_memory_limit_is_reported_as_such() {
    for_each_method(memory_limit_names_the_limit);
}

/// Grows one `Vec<u8>` by 1 MiB steps, so that it doubles its capacity,
/// until something stops it.
fn grow() -> usize {
    let chunk = vec![1u8; 1 << 20];
    let mut v: Vec<u8> = Vec::new();
    loop {
        v.extend_from_slice(&chunk);
        std::hint::black_box(&v);
    }
}

fn doubling_memory_limit_names_the_limit(method: StartMethod) {
    let mut p = Process::new(grow, ())
        .start_method(method)
        .limits(Limits::new().memory(512 * MIB));
    p.start().unwrap();
    assert!(p.join_timeout(Duration::from_secs(60)).unwrap());
    match p.take_result() {
        Err(Error::LimitExceeded {
            limit: Limit::Memory(bytes),
            ..
        }) => assert_eq!(bytes, 512 * MIB),
        other => panic!("{method}: expected the memory limit, got {other:?}"),
    }
}

fn pool_doubling_memory_limit_names_the_limit(method: StartMethod) {
    let pool = Pool::builder()
        .processes(1)
        .start_method(method)
        .worker_limits(Limits::new().memory(512 * MIB))
        .build()
        .unwrap();
    match pool.apply(grow, ()) {
        Err(Error::LimitExceeded {
            limit: Limit::Memory(bytes),
            ..
        }) => assert_eq!(bytes, 512 * MIB),
        other => panic!("{method}: expected the memory limit, got {other:?}"),
    }
    assert_eq!(pool.apply(touch, (1,)).unwrap(), 7 * (1 << 20) / 4096);
}

/// Run by [`memory_limit_is_reported_with_rust_backtrace_set`] with
/// `RUST_BACKTRACE` set for the whole process (so for every child, with
/// every start method), where std prints a backtrace between the failed
/// allocation and the abort.
#[test]
#[ignore = "run with RUST_BACKTRACE set by memory_limit_is_reported_with_rust_backtrace_set"]
fn memory_limit_under_the_inherited_environment() {
    for_each_method(memory_limit_names_the_limit);
    for_each_method(doubling_memory_limit_names_the_limit);
    for_each_method(pool_doubling_memory_limit_names_the_limit);
}

#[test]
fn memory_limit_is_reported_with_rust_backtrace_set() {
    let exe = std::env::current_exe().unwrap();
    for style in ["1", "full"] {
        let out = std::process::Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "memory_limit_under_the_inherited_environment",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("RUST_BACKTRACE", style)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "RUST_BACKTRACE={style}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn cpu_limit_names_the_limit(method: StartMethod) {
    let mut p = Process::new(spin, ())
        .start_method(method)
        .limits(Limits::new().cpu_time(Duration::from_secs(1)));
    p.start().unwrap();
    assert!(p.join_timeout(Duration::from_secs(120)).unwrap());
    match p.take_result() {
        Err(Error::LimitExceeded {
            limit: Limit::CpuTime(d),
            ..
        }) => assert_eq!(d, Duration::from_secs(1)),
        other => panic!("{method}: expected the CPU limit, got {other:?}"),
    }
    let used = p.usage().expect("usage after join");
    assert!(used.cpu_time >= Duration::from_secs(1), "{used:?}");
}

#[test]
fn process_cpu_limit_is_reported_as_such() {
    for_each_method(cpu_limit_names_the_limit);
}

fn within_limits_returns_and_reports_usage(method: StartMethod) {
    let mut p = Process::new(touch, (100,)).start_method(method).limits(
        Limits::new()
            .memory(1024 * MIB)
            .cpu_time(Duration::from_secs(60)),
    );
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.limit_exceeded(), None);
    assert_eq!(p.take_result().unwrap(), 7 * (100 << 20) / 4096);
    let used = p.usage().expect("usage after join");
    assert!(used.peak_rss >= 100 * MIB, "{method}: {used:?}");
    assert!(used.cpu_time > Duration::ZERO, "{method}: {used:?}");
}

#[test]
fn process_within_limits_runs_and_reports_usage() {
    for_each_method(within_limits_returns_and_reports_usage);
}

#[test]
fn process_usage_without_limits() {
    let mut p = Process::new(touch, (100,));
    assert_eq!(p.usage(), None);
    p.start().unwrap();
    p.join().unwrap();
    let used = p.usage().expect("usage after join");
    assert!(used.peak_rss >= 100 * MIB, "{used:?}");
}

/// An abort that is not an allocation failure stays a plain SIGABRT.
#[test]
fn other_abort_under_a_memory_limit_is_not_blamed_on_it() {
    let mut p = Process::new(plain_abort, ()).limits(Limits::new().memory(1024 * MIB));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.limit_exceeded(), None);
    match p.take_result() {
        Err(Error::Killed(sig)) => assert_eq!(sig, libc_sigabrt()),
        other => panic!("expected SIGABRT, got {other:?}"),
    }
}

fn libc_sigabrt() -> i32 {
    6
}

fn hog_if(item: u32) -> u32 {
    if item == 1 {
        hog();
    }
    item
}

fn burn_cpu(ms: u64) -> u64 {
    fn cpu_now() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid pointer to a timespec, filled in by the call.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    let end = cpu_now() + Duration::from_millis(ms);
    let mut x = 0u64;
    while cpu_now() < end {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    x
}

#[test]
fn pool_memory_limit_fails_that_task_and_replaces_the_worker() {
    let pool = Pool::builder()
        .processes(1)
        .worker_limits(Limits::new().memory(512 * MIB))
        .build()
        .unwrap();
    let before = pool.worker_pids();
    let r = pool.apply_async(hog, ()).unwrap();
    assert!(
        r.wait_timeout(Duration::from_secs(120)),
        "the hog was not stopped"
    );
    match r.get() {
        Err(Error::LimitExceeded {
            limit: Limit::Memory(bytes),
            ..
        }) => assert_eq!(bytes, 512 * MIB),
        other => panic!("expected the memory limit, got {other:?}"),
    }
    // The next task runs, on a new worker.
    assert_eq!(pool.apply(touch, (1,)).unwrap(), 7 * (1 << 20) / 4096);
    assert_ne!(pool.worker_pids(), before);
    // The map family names the item.
    match pool.map_chunked(hog_if, [0u32, 1, 2], 1) {
        Err(Error::Task { index, source }) => {
            assert_eq!(index, 1);
            assert!(
                matches!(
                    *source,
                    Error::LimitExceeded {
                        limit: Limit::Memory(_),
                        ..
                    }
                ),
                "{source:?}"
            );
        }
        other => panic!("expected the item's memory limit, got {other:?}"),
    }
    assert_eq!(pool.map(hog_if, [0u32, 2]).unwrap(), [0, 2]);
}

#[test]
fn pool_cpu_limit_is_per_task() {
    let pool = Pool::builder()
        .processes(1)
        .worker_limits(Limits::new().cpu_time(Duration::from_secs(1)))
        .build()
        .unwrap();
    // Four tasks of 0.6 s CPU each on one worker: more than the limit
    // (rounded to 2 s) together, within it each.
    let pid = pool.worker_pids();
    for _ in 0..4 {
        pool.apply(burn_cpu, (600,)).unwrap();
    }
    assert_eq!(pool.worker_pids(), pid, "no worker was replaced");
    let r = pool.apply_async(spin, ()).unwrap();
    assert!(
        r.wait_timeout(Duration::from_secs(120)),
        "the spinning task was not stopped"
    );
    match r.get() {
        Err(Error::LimitExceeded {
            limit: Limit::CpuTime(d),
            usage,
        }) => {
            assert_eq!(d, Duration::from_secs(1));
            assert!(usage.is_some_and(|u| u.cpu_time >= Duration::from_secs(1)));
        }
        other => panic!("expected the CPU limit, got {other:?}"),
    }
    assert!(pool.apply(burn_cpu, (1,)).unwrap() > 0);
}

fn pool_reports_task_usage(method: StartMethod) {
    let pool = Pool::builder()
        .processes(1)
        .start_method(method)
        .build()
        .unwrap();
    let r = pool.apply_async(touch, (100,)).unwrap();
    r.wait();
    let used = r.usage().expect("usage of a finished task");
    assert!(used.peak_rss >= 100 * MIB, "{method}: {used:?}");
    assert!(used.cpu_time > Duration::ZERO, "{method}: {used:?}");
    r.get().unwrap();
    if method != StartMethod::Spawn {
        // The peak mark was reset: a small task on the same worker does not
        // inherit the big one's peak.
        let r = pool.apply_async(touch, (1,)).unwrap();
        r.wait();
        let small = r.usage().unwrap();
        assert!(small.peak_rss < 100 * MIB, "{method}: {small:?}");
    }
    // A map's usage adds up its chunks.
    let r = pool.map_async(burn_cpu, [50u64, 50, 50]).unwrap();
    r.wait();
    let used = r.usage().unwrap();
    assert!(
        used.cpu_time >= Duration::from_millis(150),
        "{method}: {used:?}"
    );
    // Through the executor too.
    drop(pool);
    let ex = Executor::from_builder(Pool::builder().processes(1).start_method(method)).unwrap();
    let f = ex.submit(touch, (100,)).unwrap();
    f.wait();
    assert!(f.usage().unwrap().peak_rss >= 100 * MIB);
}

#[test]
fn pool_reports_each_tasks_usage() {
    for_each_method(pool_reports_task_usage);
}
