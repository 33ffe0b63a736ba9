//! Pool and executor acceptance tests: CPython's _TestPool,
//! _TestPoolWorkerLifetime, _TestPoolWorkerErrors and the
//! concurrent.futures scenarios (W01–W25, X01–X12 where they apply), plus
//! the faults CPython's pool does not survive.

mod common;

use common::*;
use multiproc::{Connection, Error, Executor, Pipe, Pool, StartMethod};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

fn sqr(x: i64) -> i64 {
    x * x
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn my_pid() -> u32 {
    std::process::id()
}

fn fail_on(x: i64, bad: i64) -> i64 {
    if x == bad {
        panic!("bad input {x}");
    }
    x
}

fn exit_with(code: i32) -> i32 {
    multiproc::exit(code)
}

fn abort_now() {
    std::process::abort()
}

fn segfault() {
    // SAFETY: raise(2) with a signal number; the point is to die of it.
    #[allow(unsafe_code)]
    unsafe {
        libc::raise(libc::SIGSEGV);
    }
}

/// Serializes to an error.
#[derive(Debug)]
struct NoEncode;

impl Serialize for NoEncode {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("NoEncode refuses to be encoded"))
    }
}

impl<'de> Deserialize<'de> for NoEncode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|_| NoEncode)
    }
}

/// Encodes fine, fails to decode.
#[derive(Debug)]
struct NoDecode;

impl Serialize for NoDecode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for NoDecode {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(D::Error::custom("NoDecode refuses to be decoded"))
    }
}

fn take_no_decode(_: NoDecode) -> u8 {
    1
}

fn give_no_encode() -> NoEncode {
    NoEncode
}

fn give_no_decode() -> NoDecode {
    NoDecode
}

fn take_no_encode(_: NoEncode) -> u8 {
    1
}

fn big_len(v: Vec<u8>) -> usize {
    v.len()
}

fn big_result(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

fn reply_on(conn: Connection, x: i64) -> i64 {
    conn.send(&(x * 10)).unwrap();
    x
}

#[test]
fn w01_apply() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(sqr, (5,)).unwrap(), 25);
    assert_eq!(pool.apply(add, (3, 4)).unwrap(), 7);
    assert_ne!(pool.apply(my_pid, ()).unwrap(), std::process::id());
}

#[test]
fn w02_w12_map_and_empty_inputs() {
    let pool = Pool::new(2).unwrap();
    let want: Vec<i64> = (0..10).map(sqr).collect();
    assert_eq!(pool.map(sqr, 0..10).unwrap(), want);
    let want: Vec<i64> = (0..100).map(sqr).collect();
    assert_eq!(pool.map_chunked(sqr, 0..100, 20).unwrap(), want);
    let empty: Vec<i64> = Vec::new();
    assert!(pool.map(sqr, empty.clone()).unwrap().is_empty());
    assert!(
        pool.map_async(sqr, empty.clone())
            .unwrap()
            .get()
            .unwrap()
            .is_empty()
    );
    assert_eq!(pool.imap(sqr, empty.clone()).count(), 0);
    assert_eq!(pool.imap_unordered(sqr, empty).count(), 0);
}

#[test]
fn w03_starmap() {
    let pool = Pool::new(2).unwrap();
    let pairs: Vec<(i64, i64)> = (0..10).map(|i| (i, i * 2)).collect();
    let want: Vec<i64> = pairs.iter().map(|&(a, b)| a + b).collect();
    assert_eq!(pool.starmap(add, pairs.clone()).unwrap(), want);
    assert_eq!(pool.starmap_chunked(add, pairs.clone(), 3).unwrap(), want);
    assert_eq!(
        pool.starmap_async(add, pairs.clone(), None)
            .unwrap()
            .get()
            .unwrap(),
        want
    );
    assert_eq!(
        pool.starmap_async(add, pairs, Some(4))
            .unwrap()
            .get()
            .unwrap(),
        want
    );
}

#[test]
fn w04_w19_map_async_callbacks() {
    let pool = Pool::new(2).unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let r = pool
        .map_async_with(
            sqr,
            0..10,
            Some(2),
            move |v: &Vec<i64>| c.lock().unwrap().push(v.clone()),
            |e| panic!("unexpected error {e}"),
        )
        .unwrap();
    assert_eq!(r.get().unwrap(), (0..10).map(sqr).collect::<Vec<_>>());
    // The callback ran once, with the whole list, before get returned.
    assert_eq!(
        *calls.lock().unwrap(),
        vec![(0..10).map(sqr).collect::<Vec<_>>()]
    );

    let (tx, rx) = mpsc::channel();
    let r = pool
        .map_async_with(
            fail_on_3,
            0..10,
            Some(1),
            |_| panic!("no success expected"),
            move |e| tx.send(e.to_string()).unwrap(),
        )
        .unwrap();
    let err = r.get().unwrap_err();
    assert_eq!(err.panic().unwrap().message, "bad input 3");
    assert!(rx.recv().unwrap().contains("bad input 3"));
}

fn fail_on_3(x: i64) -> i64 {
    fail_on(x, 3)
}

#[test]
fn w05_x08_unencodable_argument_fails_at_once() {
    let pool = Pool::new(1).unwrap();
    let err = pool
        .map(take_no_encode, vec![NoEncode, NoEncode])
        .unwrap_err();
    assert_eq!(err.task_index(), Some(0), "{err}");
    let err = err.root();
    assert!(
        matches!(err, Error::Encode(m) if m.contains("arguments")
            && m.contains("NoEncode refuses to be encoded")),
        "{err}"
    );
    let err = pool.apply_async(take_no_encode, (NoEncode,)).unwrap_err();
    assert!(matches!(err, Error::Encode(_)));
    assert_eq!(pool.apply(sqr, (3,)).unwrap(), 9);
}

#[test]
fn w06_map_async_chunksize_on_empty_input() {
    let pool = Pool::new(2).unwrap();
    let r = pool
        .map_async_with(sqr, Vec::<i64>::new(), Some(5), |_| (), |_| ())
        .unwrap();
    assert!(r.wait_timeout(Duration::from_secs(5)));
    assert!(r.get().unwrap().is_empty());
}

#[test]
fn w08_async_get_and_timeout() {
    let pool = Pool::new(2).unwrap();
    let r = pool.apply_async(sleep_ms, (200,)).unwrap();
    assert!(!r.ready());
    assert!(r.successful().is_err());
    let t = Instant::now();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!r.wait_timeout(Duration::from_millis(1)));
    r.wait();
    assert!(r.ready());
    assert!(r.successful().unwrap());
    assert_eq!(r.get().unwrap(), 200);
}

#[test]
fn w09_imap_ordered_and_unordered() {
    let pool = Pool::new(3).unwrap();
    let want: Vec<i64> = (0..1000).map(sqr).collect();
    let got: Vec<i64> = pool.imap(sqr, 0..1000).map(Result::unwrap).collect();
    assert_eq!(got, want);
    let got: Vec<i64> = pool
        .imap_chunked(sqr, 0..1000, 100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want);
    let mut it = pool.imap(sqr, 0..2);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    assert_eq!(it.next().unwrap().unwrap(), 1);
    assert!(it.next().is_none());
    assert!(it.next().is_none());
    let mut got: Vec<i64> = pool
        .imap_unordered(sqr, 0..1000)
        .map(Result::unwrap)
        .collect();
    got.sort();
    assert_eq!(got, want);
    let mut got: Vec<i64> = pool
        .imap_unordered_chunked(sqr, 0..1000, 53)
        .map(Result::unwrap)
        .collect();
    got.sort();
    assert_eq!(got, want);
    // A failing item is an error at its position; the others still arrive.
    let got: Vec<Result<i64, Error>> = pool.imap(fail_on_3, 0..6).collect();
    assert_eq!(got.len(), 6);
    assert!(got[3].is_err());
    assert_eq!(got[5].as_ref().unwrap(), &5);
    assert!(pool.imap_chunked(sqr, 0..3, 0).next().unwrap().is_err());
}

static PULLED: AtomicU64 = AtomicU64::new(0);

#[test]
fn imap_reads_its_input_lazily() {
    let pool = Pool::new(2).unwrap();
    let input = (0..).inspect(|_| {
        PULLED.fetch_add(1, Ordering::SeqCst);
    });
    let first: Vec<i64> = pool.imap(sqr, input).take(10).map(Result::unwrap).collect();
    assert_eq!(first, (0..10).map(sqr).collect::<Vec<_>>());
    let pulled = PULLED.load(Ordering::SeqCst);
    assert!((10..=1000).contains(&pulled), "pulled {pulled}");
}

/// W07 in Rust terms: an input iterator that panics midway. The panic
/// reaches the caller (as any panic of its own iterator would), only
/// correct results came before it, and the pool goes on working.
#[test]
fn w07_input_that_panics_midway() {
    let pool = Pool::new(2).unwrap();
    let input = (0..).inspect(|&i| {
        if i == 5 {
            panic!("the input broke at 5");
        }
    });
    let mut got = Vec::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for v in pool.imap(sqr, input) {
            got.push(v.unwrap());
        }
    }));
    let payload = caught.unwrap_err();
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the input broke at 5")
    );
    assert!(
        got.len() <= 5 && got.iter().zip(0..).all(|(&v, i)| v == sqr(i)),
        "{got:?}"
    );
    // map collects its input first: the panic comes before any task.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.map(
            sqr,
            (0..).inspect(|&i| assert!(i < 3, "the input broke at 3")),
        )
    }));
    assert!(caught.is_err());
    assert_eq!(
        pool.map(sqr, 0..20).unwrap(),
        (0..20).map(sqr).collect::<Vec<_>>()
    );
    pool.close();
    pool.join().unwrap();
}

#[test]
fn w10_w22_invalid_sizes() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(Error::InvalidArgument(_))
    ));
    let pool = Pool::new(3).unwrap();
    assert_eq!(pool.processes(), 3);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| pid_alive(p)));
    let dflt = Pool::builder().build().unwrap();
    assert_eq!(dflt.processes(), multiproc::cpu_count());
    assert!(matches!(
        pool.map_chunked(sqr, 0..3, 0),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn w11_terminate_while_running_is_prompt() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.worker_pids();
    let r = pool.map_async(sleep_ms, vec![5000; 4]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    pool.terminate();
    pool.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(r.get(), Err(Error::PoolTerminated)));
    assert!(pids.iter().all(|&p| !pid_alive(p)));
}

#[test]
fn w13_terminated_pool_refuses_work_and_drop_reaps_workers() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(sqr, 0..4).unwrap(), [0, 1, 4, 9]);
    let pids = pool.worker_pids();
    pool.terminate();
    assert!(matches!(pool.map_async(sqr, 0..4), Err(Error::State(_))));
    assert!(matches!(pool.apply(sqr, (1,)), Err(Error::State(_))));
    pool.join().unwrap();
    drop(pool);
    assert!(pids.iter().all(|&p| !pid_alive(p)));

    // Dropping a busy pool: no hang, no leaked workers.
    let pool = Pool::new(2).unwrap();
    let pids = pool.worker_pids();
    let r = pool.apply_async(sleep_ms, (10_000,)).unwrap();
    let t = Instant::now();
    drop(pool);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(matches!(r.get(), Err(Error::PoolTerminated)));
    assert!(pids.iter().all(|&p| !pid_alive(p)));
    assert!(zombie_children().is_empty());
}

#[test]
fn w14_panic_carries_message_and_location() {
    let pool = Pool::new(1).unwrap();
    let err = pool.apply(fail_on, (7, 7)).unwrap_err();
    let p = err.panic().expect("a panic");
    assert_eq!(p.message, "bad input 7");
    assert!(p.location.as_deref().unwrap().contains("tests/pool.rs"));
    assert!(p.process.starts_with("PoolWorker"), "{}", p.process);
    // The worker survives a panic.
    assert_eq!(pool.apply(fail_on, (1, 7)).unwrap(), 1);
}

fn always_panics(x: u32) -> u32 {
    panic!("{}", "x".repeat(10_000 + x as usize))
}

#[test]
fn w16_every_task_fails_then_close_join() {
    let pool = Pool::new(2).unwrap();
    let err = pool.map_chunked(always_panics, 0..50, 1).unwrap_err();
    assert!(err.panic().unwrap().message.len() >= 10_000);
    let rs: Vec<_> = (0..20)
        .map(|i| pool.apply_async(always_panics, (i,)).unwrap())
        .collect();
    pool.close();
    pool.join().unwrap();
    for r in rs {
        assert!(r.ready());
        assert!(r.get().unwrap_err().panic().is_some());
    }
}

#[test]
fn w19_x08_errors_at_each_stage_never_hang() {
    let pool = Pool::new(2).unwrap();
    // Task decoding in the worker.
    let e = pool.apply(take_no_decode, (NoDecode,)).unwrap_err();
    assert!(
        matches!(&e, Error::Decode(m) if m.contains("arguments")),
        "{e}"
    );
    // Result encoding in the worker.
    let e = pool.apply(give_no_encode, ()).unwrap_err();
    assert!(
        matches!(&e, Error::Encode(m) if m.contains("result")
            && m.contains("NoEncode refuses to be encoded")),
        "{e}"
    );
    // Result decoding in the parent.
    let e = pool.apply(give_no_decode, ()).unwrap_err();
    assert!(
        matches!(&e, Error::Decode(m) if m.contains("result")
            && m.contains("NoDecode refuses to be decoded")),
        "{e}"
    );
    // The function exits, aborts or segfaults.
    let e = pool.apply(exit_with, (99,)).unwrap_err();
    assert!(matches!(e, Error::WorkerLost { exitcode: 99, .. }), "{e}");
    assert!(e.to_string().contains("exited with code 99"), "{e}");
    let e = pool.apply(abort_now, ()).unwrap_err();
    assert_eq!(e.signal(), Some(libc::SIGABRT), "{e}");
    assert!(e.to_string().contains("SIGABRT"), "{e}");
    let e = pool.apply(segfault, ()).unwrap_err();
    assert_eq!(e.signal(), Some(libc::SIGSEGV), "{e}");
    assert!(e.to_string().contains("SIGSEGV"), "{e}");
    // Through all of it the pool kept two working workers.
    assert_eq!(pool.worker_pids().len(), 2);
    assert_eq!(
        pool.map(sqr, 0..20).unwrap(),
        (0..20).map(sqr).collect::<Vec<_>>()
    );
}

#[test]
fn w20_maxtasksperchild_replaces_workers() {
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(10)
        .build()
        .unwrap();
    let first = pool.worker_pids();
    let rs: Vec<_> = (0..100)
        .map(|i| pool.apply_async(sqr, (i,)).unwrap())
        .collect();
    let got: Vec<i64> = rs.into_iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(got, (0..100).map(sqr).collect::<Vec<_>>());
    let pids: std::collections::HashSet<u32> =
        (0..20).map(|_| pool.apply(my_pid, ()).unwrap()).collect();
    assert!(pids.iter().all(|p| !first.contains(p)));
    assert!(pids.len() >= 2);
}

#[test]
fn w21_maxtasksperchild_1_close_early() {
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let rs: Vec<_> = (0..10)
        .map(|i| pool.apply_async(sqr, (i,)).unwrap())
        .collect();
    pool.close();
    pool.join().unwrap();
    let got: Vec<i64> = rs.into_iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(got, (0..10).map(sqr).collect::<Vec<_>>());
}

fn leak_a_pool() -> u32 {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(sqr, (2,)).unwrap(), 4);
    let pid = pool.worker_pids()[0];
    static KEEP: Mutex<Option<Pool>> = Mutex::new(None);
    *KEEP.lock().unwrap() = Some(pool);
    pid
}

#[test]
fn w23_pool_alive_at_exit_exits_cleanly() {
    let mut p = multiproc::Process::new(leak_a_pool, ());
    p.start().unwrap();
    assert!(p.join_timeout(Duration::from_secs(20)).unwrap());
    assert_eq!(p.exitcode(), Some(0));
    let worker = p.take_result().unwrap();
    assert!(eventually(Duration::from_secs(5), || !pid_alive(worker)));
}

#[test]
fn w24_failed_start_leaks_nothing() {
    // The fork method refuses this multi-threaded test process: the very
    // first worker cannot start, and the error comes back.
    let before = multiproc::active_children().len();
    let err = Pool::builder()
        .processes(3)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::ForkWithThreads { .. }), "{err}");
    assert!(multiproc::active_children().len() <= before);
}

#[test]
fn w25_large_pool() {
    let pool = Pool::new(100).unwrap();
    let sum: i64 = pool.map(sqr, 0..1000).unwrap().iter().sum();
    assert_eq!(sum, (0..1000).map(sqr).sum::<i64>());
    pool.close();
    pool.join().unwrap();
}

static INIT_FACTOR: AtomicU64 = AtomicU64::new(1);

fn init_factor(f: u64) {
    INIT_FACTOR.store(f, Ordering::SeqCst);
}

fn scaled(x: u64) -> u64 {
    x * INIT_FACTOR.load(Ordering::SeqCst)
}

fn init_panics(why: String) {
    panic!("{why}")
}

#[test]
fn initializer_runs_in_every_worker_and_its_failure_breaks_the_pool() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_factor, (3,))
        .maxtasksperchild(5)
        .build()
        .unwrap();
    // Replacement workers run it too.
    assert_eq!(
        pool.map_chunked(scaled, 0..40, 1).unwrap(),
        (0..40).map(|x| x * 3).collect::<Vec<_>>()
    );

    let pool = Pool::builder()
        .processes(2)
        .initializer(init_panics, ("no config".to_string(),))
        .build()
        .unwrap();
    let e = pool.apply(sqr, (2,)).unwrap_err();
    assert!(
        matches!(&e, Error::PoolBroken(m) if m.contains("no config")),
        "{e}"
    );
    let e = pool.apply(sqr, (2,)).unwrap_err();
    assert!(matches!(e, Error::PoolBroken(_)));
}

/// Initializer: the first `n` workers to start stop themselves (SIGSTOP)
/// before their first task; `starts` counts the workers started.
fn stop_first(starts: multiproc::RawValue<u64>, n: u64) {
    let k = starts.get();
    starts.set(k + 1);
    if k < n {
        signal(std::process::id(), libc::SIGSTOP);
    }
}

/// Waits for a worker of `pool` other than those in `seen` to be stopped,
/// then SIGKILLs it; returns its pid.
fn kill_next_stopped_worker(pool: &Pool, seen: &mut Vec<u32>) -> u32 {
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        found = pool.worker_pids().into_iter().find(|&p| {
            !seen.contains(&p)
                && std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                    st.rsplit(')')
                        .next()
                        .and_then(|s| s.split_whitespace().next())
                        == Some("T")
                })
        });
        found.is_some()
    });
    let pid = found.expect("a stopped worker");
    // The supervisor sends tasks to a stopped worker (it is alive): give it
    // time to do so before the worker dies.
    std::thread::sleep(Duration::from_millis(50));
    seen.push(pid);
    signal(pid, libc::SIGKILL);
    pid
}

/// A pool of one worker whose first `n` workers stop themselves before
/// their first task, and the count of workers started.
fn one_worker_pool_stopping_first(n: u64) -> (Pool, multiproc::RawValue<u64>) {
    let starts = multiproc::RawValue::new(0u64).unwrap();
    let pool = Pool::builder()
        .processes(1)
        .initializer(stop_first, (starts.clone(), n))
        .build()
        .unwrap();
    (pool, starts)
}

#[test]
fn tasks_sent_to_a_worker_that_dies_before_starting_them_run_elsewhere() {
    let (pool, starts) = one_worker_pool_stopping_first(1);
    let results: Vec<_> = (0..5)
        .map(|i| pool.apply_async(sqr, (i,)).unwrap())
        .collect();
    kill_next_stopped_worker(&pool, &mut Vec::new());
    // None of them was running: all complete on the replacement.
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.get().unwrap(), (i * i) as i64);
    }
    assert_eq!(starts.get(), 2);
}

#[test]
fn a_task_whose_workers_keep_dying_before_starting_it_fails_in_the_end() {
    let (pool, starts) = one_worker_pool_stopping_first(4);
    let r = pool.apply_async(sqr, (7,)).unwrap();
    let mut killed = Vec::new();
    while !r.ready() {
        assert!(
            killed.len() < 4,
            "the task was sent to {killed:?} and is still pending"
        );
        kill_next_stopped_worker(&pool, &mut killed);
        r.wait_timeout(Duration::from_millis(200));
    }
    // Three times back to the queue, failed with the fourth loss.
    assert_eq!(killed.len(), 4);
    let e = r.get().unwrap_err();
    assert!(
        matches!(e, Error::WorkerLost { exitcode, .. } if exitcode == -libc::SIGKILL),
        "{e}"
    );
    // The fifth worker does not stop itself and runs tasks.
    assert_eq!(pool.apply(sqr, (8,)).unwrap(), 64);
    assert_eq!(starts.get(), 5);
}

#[test]
fn tasks_carry_handles_and_big_data() {
    let pool = Pool::new(2).unwrap();
    let (here, there) = Pipe::new().unwrap();
    assert_eq!(pool.apply(reply_on, (there, 4)).unwrap(), 4);
    assert_eq!(here.recv::<i64>().unwrap(), 40);
    // Arguments and results larger than any socket buffer, several queued.
    let rs: Vec<_> = (0..6)
        .map(|i| {
            pool.apply_async(big_len, (vec![1u8; 3_000_000 + i],))
                .unwrap()
        })
        .collect();
    for (i, r) in rs.into_iter().enumerate() {
        assert_eq!(r.get().unwrap(), 3_000_000 + i);
    }
    let rs: Vec<_> = (0..4)
        .map(|_| pool.apply_async(big_result, (5_000_000,)).unwrap())
        .collect();
    for r in rs {
        assert_eq!(r.get().unwrap().len(), 5_000_000);
    }
}

#[test]
fn sigkill_every_50ms_fails_only_the_hit_tasks() {
    let pool = Pool::new(2).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let rs: Vec<_> = (0..1000u64)
        .map(|i| pool.apply_async(sleep_ms, (i % 3 + 1,)).unwrap())
        .collect();
    let pool_ref = &pool;
    let (ok, lost) = std::thread::scope(|s| {
        let h = {
            let stop = stop.clone();
            let kills = kills.clone();
            s.spawn(move || {
                let mut k = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let pids = pool_ref.worker_pids();
                    if let Some(&pid) = pids.get(k % pids.len().max(1)) {
                        signal(pid, libc::SIGKILL);
                        kills.fetch_add(1, Ordering::SeqCst);
                    }
                    k += 1;
                }
            })
        };
        let mut ok = 0;
        let mut lost = 0;
        for (i, r) in rs.into_iter().enumerate() {
            match r.get_timeout(Duration::from_secs(60)) {
                Ok(v) => {
                    assert_eq!(v, i as u64 % 3 + 1);
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
                    assert!(e.to_string().contains("SIGKILL"));
                    lost += 1;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap();
        (ok, lost)
    });
    let kills = kills.load(Ordering::SeqCst);
    assert_eq!(ok + lost, 1000);
    assert!(kills >= 5, "only {kills} kills");
    assert!(lost <= kills, "{lost} lost for {kills} kills");
    assert!(ok >= 1000 - kills, "{ok} ok");
    // Still a full, working pool.
    assert_eq!(
        pool.map(sqr, 0..10).unwrap(),
        (0..10).map(sqr).collect::<Vec<_>>()
    );
    assert_eq!(pool.worker_pids().len(), 2);
}

#[test]
fn task_timeout_kills_and_replaces_the_worker() {
    let pool = Pool::builder()
        .processes(1)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let before = pool.worker_pids();
    let slow = pool.apply_async(sleep_ms, (10_000,)).unwrap();
    let queued = pool.apply_async(sleep_ms, (1,)).unwrap();
    let t = Instant::now();
    let e = slow.get().unwrap_err();
    assert!(
        matches!(e, Error::TaskTimeout(d) if d == Duration::from_millis(300)),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // The task queued behind it ran on the replacement.
    assert_eq!(queued.get().unwrap(), 1);
    assert_ne!(pool.worker_pids(), before);
    assert_eq!(pool.apply(sqr, (6,)).unwrap(), 36);
}

#[test]
fn apply_async_from_many_threads() {
    let pool = Pool::new(2).unwrap();
    std::thread::scope(|s| {
        for t in 0..4i64 {
            let pool = &pool;
            s.spawn(move || {
                let rs: Vec<_> = (0..200)
                    .map(|i| pool.apply_async(add, (t, i)).unwrap())
                    .collect();
                for (i, r) in rs.into_iter().enumerate() {
                    assert_eq!(r.get().unwrap(), t + i as i64);
                }
            });
        }
    });
}

fn pool_under(method: StartMethod) {
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .unwrap();
    assert_eq!(
        pool.map(sqr, 0..50).unwrap(),
        (0..50).map(sqr).collect::<Vec<_>>()
    );
    // A crash is survived under every method.
    let e = pool.apply(exit_with, (3,)).unwrap_err();
    assert!(matches!(e, Error::WorkerLost { exitcode: 3, .. }), "{e}");
    assert_eq!(pool.apply(sqr, (9,)).unwrap(), 81);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn every_start_method() {
    for_each_method(pool_under);
}

// ---- the executor (concurrent.futures) ----

#[test]
fn x01_x02_killed_worker_fails_only_its_future() {
    let ex = Executor::new(2).unwrap();
    let victim = ex.submit(sleep_ms, (10_000,)).unwrap();
    let other = ex.submit(sleep_ms, (300,)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pids = ex.pool().worker_pids();
    // Kill both workers once the short task is done: only the long one
    // was running anything.
    assert!(other.wait_timeout(Duration::from_secs(10)));
    for &pid in &pids {
        if pid_alive(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
    // Both are gone before anything else is submitted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = victim.result().unwrap_err();
    assert!(
        matches!(e, Error::WorkerLost { exitcode, .. } if exitcode == -libc::SIGKILL),
        "{e}"
    );
    assert_eq!(other.result().unwrap(), 300);
    // Later submissions work (CPython: BrokenProcessPool from now on).
    assert_eq!(ex.submit(sqr, (4,)).unwrap().result().unwrap(), 16);
    let a = ex.submit(abort_now, ()).unwrap();
    let b = ex.submit(abort_now, ()).unwrap();
    let (ea, eb) = (a.result().unwrap_err(), b.result().unwrap_err());
    assert!(ea.signal() == Some(libc::SIGABRT) && eb.signal() == Some(libc::SIGABRT));
}

#[test]
fn x03_executor_map_chunksize() {
    let ex = Executor::new(2).unwrap();
    let want: Vec<i64> = (0..200).map(sqr).collect();
    for cs in [1, 6, 50, 40] {
        let got: Vec<i64> = ex
            .map_chunked(sqr, 0..200, cs)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want);
    }
    assert!(ex.map_chunked(sqr, 0..3, 0).next().unwrap().is_err());
}

#[test]
fn x06_x07_max_tasks_per_child() {
    let ex = Executor::from_builder(Pool::builder().processes(1).maxtasksperchild(3)).unwrap();
    let pids: Vec<u32> = (0..9)
        .map(|_| ex.submit(my_pid, ()).unwrap().result().unwrap())
        .collect();
    assert_eq!(pids[0], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_ne!(pids[5], pids[6]);
    // A backlog with max tasks per child: no deadlock.
    let fs: Vec<_> = (0..60).map(|i| ex.submit(sqr, (i,)).unwrap()).collect();
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(
            f.result_timeout(Duration::from_secs(30)).unwrap(),
            sqr(i as i64)
        );
    }
}

#[test]
fn x07_x09_shutdown_with_crash_and_cancel() {
    let ex = Executor::new(1).unwrap();
    let crash = ex.submit(exit_after, (200, 5)).unwrap();
    let after = ex.submit(sqr, (5,)).unwrap();
    let t = Instant::now();
    ex.shutdown().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        crash.result(),
        Err(Error::WorkerLost { exitcode: 5, .. })
    ));
    assert_eq!(after.result().unwrap(), 25);
    assert!(matches!(ex.submit(sqr, (1,)), Err(Error::State(_))));

    let ex = Executor::new(1).unwrap();
    let running = ex.submit(sleep_ms, (300,)).unwrap();
    let pending: Vec<_> = (0..5)
        .map(|_| ex.submit(sleep_ms, (300,)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(pending[4].cancel());
    assert!(matches!(
        pending[4].result_timeout(Duration::ZERO),
        Err(Error::Cancelled)
    ));
    ex.shutdown_with(multiproc::Shutdown {
        wait: false,
        cancel_futures: true,
    })
    .unwrap();
    assert_eq!(running.result().unwrap(), 300);
    let cancelled = pending
        .into_iter()
        .filter(|f| {
            matches!(
                f.result_timeout(Duration::from_secs(10)),
                Err(Error::Cancelled)
            )
        })
        .count();
    assert!(cancelled >= 3, "{cancelled}");
}

fn exit_after(ms: u64, code: i32) -> i32 {
    std::thread::sleep(Duration::from_millis(ms));
    multiproc::exit(code)
}

#[test]
fn x10_crash_while_writing_big_data() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply(big_then_die, (40_000_000,));
    match r {
        Ok(n) => assert_eq!(n.len(), 40_000_000),
        Err(e) => assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}"),
    }
    assert_eq!(pool.apply(sqr, (2,)).unwrap(), 4);
}

fn big_then_die(n: usize) -> Vec<u8> {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(5));
        // SAFETY: raise(2) with a signal number.
        #[allow(unsafe_code)]
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    });
    vec![1u8; n]
}

#[test]
fn x11_many_quick_submissions_never_block() {
    let ex = Executor::new(2).unwrap();
    let t = Instant::now();
    let fs: Vec<_> = (0..10_000).map(|i| ex.submit(sqr, (i,)).unwrap()).collect();
    assert!(t.elapsed() < Duration::from_secs(10));
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(f.result().unwrap(), sqr(i as i64));
    }
}

#[test]
fn x12_terminate_workers_fails_pending_futures() {
    let ex = Executor::new(1).unwrap();
    let fs: Vec<_> = (0..5)
        .map(|_| ex.submit(sleep_ms, (5_000,)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let pids = ex.pool().worker_pids();
    let t = Instant::now();
    ex.terminate_workers();
    for f in fs {
        assert!(matches!(f.result(), Err(Error::PoolTerminated)));
    }
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(eventually(Duration::from_secs(3), || pids
        .iter()
        .all(|&p| !pid_alive(p))));
}

#[test]
fn task_timeout_too_large_to_add_is_no_timeout() {
    // `Duration::MAX` overflowed `Instant + timeout` on the supervisor thread,
    // which then panicked and left every result waiting forever.
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::MAX)
        .build()
        .unwrap();
    let r = pool.apply_async(sleep_ms, (50,)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(r.get()).unwrap());
    let got = rx.recv_timeout(Duration::from_secs(20));
    assert!(matches!(got, Ok(Ok(50))), "{got:?}");
    assert_eq!(
        pool.map(sqr, 0..10).unwrap(),
        (0..10).map(sqr).collect::<Vec<_>>()
    );
    pool.close();
    pool.join().unwrap();
}

/// A result whose `Deserialize` panics: decoding it panics in the pool's
/// supervisor thread.
#[derive(Debug)]
struct PanicsWhenDecoded;

impl Serialize for PanicsWhenDecoded {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for PanicsWhenDecoded {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("decoding this result panics")
    }
}

fn make_panicking_result() -> PanicsWhenDecoded {
    PanicsWhenDecoded
}

#[test]
fn supervisor_panic_fails_pending_and_later_results() {
    let pool = Pool::new(1).unwrap();
    let slow = pool.apply_async(sleep_ms, (300,)).unwrap();
    let boom = pool.apply_async(make_panicking_result, ()).unwrap();
    let queued = pool.apply_async(sqr, (3,)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let b = boom.get().map(|_| ());
        let q = queued.get();
        tx.send((b, q)).unwrap();
    });
    let (b, q) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("results still pending after the supervisor died");
    for r in [b, q.map(|_| ())] {
        match r {
            Err(Error::PoolBroken(why)) => assert!(why.contains("supervisor"), "{why}"),
            other => panic!("expected PoolBroken, got {other:?}"),
        }
    }
    // The task that ran before the panic was delivered normally.
    assert_eq!(slow.get().unwrap(), 300);
    assert!(matches!(
        pool.apply_async(sqr, (1,)),
        Err(Error::PoolBroken(_))
    ));
    assert!(matches!(pool.map(sqr, 0..3), Err(Error::PoolBroken(_))));
    pool.close();
    pool.join().unwrap();
}

fn nest_depth(n: Nest) -> usize {
    n.depth
}

fn deep_nest(depth: usize) -> Nest {
    Nest { depth }
}

// A task whose arguments, or whose result, nest 100,000 deep fails with a
// decode error; neither the worker nor the pool's process crashes, and the
// worker goes on with the next task.
#[test]
fn deep_task_arguments_and_results_are_decode_errors() {
    let pool = Pool::new(1).unwrap();
    let pid = pool.apply(my_pid, ()).unwrap();
    match pool.apply(
        nest_depth,
        (Nest {
            depth: HOSTILE_DEPTH,
        },),
    ) {
        Err(Error::Decode(why)) => assert!(why.contains("nests deeper"), "{why}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    match pool.apply(deep_nest, (HOSTILE_DEPTH,)) {
        Err(Error::Decode(why)) => assert!(why.contains("nests deeper"), "{why}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    let deep: Vec<Result<usize, Error>> = (0..3)
        .map(|_| {
            pool.apply(
                nest_depth,
                (Nest {
                    depth: HOSTILE_DEPTH,
                },),
            )
        })
        .collect();
    assert!(deep.iter().all(|r| matches!(r, Err(Error::Decode(_)))));
    assert_eq!(pool.apply(nest_depth, (Nest { depth: 50 },)).unwrap(), 50);
    assert_eq!(
        pool.apply(my_pid, ()).unwrap(),
        pid,
        "the worker was replaced"
    );
}
