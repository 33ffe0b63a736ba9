//! `concurrent.futures` completeness across real processes: `wait` with
//! each `ReturnWhen`, `as_completed` (order and total timeout), the
//! future's `exception` / `running` / `cancelled` / `add_done_callback`,
//! `Executor::map_timeout`, `kill_workers`, deadline forms, the index of a
//! failed map item, the `MULTIPROC_PROCESSES` override and how a worker's
//! panic is printed.

mod common;

use common::*;
use multiproc::futures::{ReturnWhen, Watchable, as_completed, wait};
use multiproc::{Error, Executor, Pool, Shutdown};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn boom_after(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    panic!("boom after {ms}")
}

fn sqr(x: i64) -> i64 {
    x * x
}

fn fail_at(x: i64, bad: i64) -> i64 {
    assert!(x != bad, "bad item {x}");
    x
}

fn fail_at_7(x: i64) -> i64 {
    fail_at(x, 7)
}

fn die_at_5(x: i64) -> i64 {
    if x == 5 {
        multiproc::exit(3);
    }
    x
}

/// 30 s upper bound for anything that should take well under a second.
const LONG: Duration = Duration::from_secs(30);

#[test]
fn wait_first_completed() {
    let ex = Executor::new(2).unwrap();
    let slow = ex.submit(nap, (20_000,)).unwrap();
    let quick = ex.submit(nap, (50,)).unwrap();
    let t = Instant::now();
    let w = wait([&slow, &quick], Some(LONG), ReturnWhen::FirstCompleted);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(w.done.len(), 1);
    assert_eq!(w.not_done.len(), 1);
    assert!(std::ptr::eq(w.done[0], &quick));
    assert!(std::ptr::eq(w.not_done[0], &slow));
    // Already finished: returns at once, whatever the others do.
    let w = wait([&quick, &slow], None, ReturnWhen::FirstCompleted);
    assert_eq!(w.done.len(), 1);
    ex.kill_workers();
}

#[test]
fn wait_first_exception_ignores_success_and_cancellation() {
    let ex = Executor::new(2).unwrap();
    let slow = ex.submit(nap, (20_000,)).unwrap();
    let ok = ex.submit(nap, (10,)).unwrap();
    assert!(ok.wait_timeout(LONG));
    let bad = ex.submit(boom_after, (200,)).unwrap();
    // Queued behind two busy workers: cancellable.
    let queued = ex.submit(nap, (1,)).unwrap();
    assert!(queued.cancel());
    assert!(queued.cancelled());
    let t = Instant::now();
    let w = wait(
        [&slow, &ok, &bad, &queued],
        Some(LONG),
        ReturnWhen::FirstException,
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(bad.done());
    assert!(w.done.iter().any(|f| std::ptr::eq(*f, &bad)));
    assert_eq!(w.not_done.len(), 1);
    assert!(std::ptr::eq(w.not_done[0], &slow));
    // No failure at all: FirstException waits for all, like AllCompleted.
    let a = ex.submit(nap, (100,)).unwrap();
    let w = wait([&a, &ok], Some(LONG), ReturnWhen::FirstException);
    assert_eq!(w.done.len(), 2);
    ex.kill_workers();
}

#[test]
fn wait_all_completed_and_timeout() {
    let ex = Executor::new(2).unwrap();
    let fs: Vec<_> = (0..6).map(|i| ex.submit(nap, (i * 20,)).unwrap()).collect();
    let w = wait(fs, None, ReturnWhen::AllCompleted);
    assert_eq!(w.done.len(), 6);
    assert!(w.not_done.is_empty());
    let mut got: Vec<u64> = w.done.into_iter().map(|f| f.result().unwrap()).collect();
    got.sort();
    assert_eq!(got, [0, 20, 40, 60, 80, 100]);

    // A timeout is no error: the running future is in not_done, by the
    // deadline.
    let slow = ex.submit(nap, (20_000,)).unwrap();
    let t = Instant::now();
    let w = wait(
        [&slow],
        Some(Duration::from_millis(200)),
        ReturnWhen::default(),
    );
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(
        took < Duration::from_millis(200) + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(w.not_done.len(), 1);
    // Nothing to wait for.
    let none: Vec<multiproc::TaskFuture<u64>> = Vec::new();
    let w = wait(none, None, ReturnWhen::AllCompleted);
    assert!(w.done.is_empty() && w.not_done.is_empty());
    ex.kill_workers();
}

#[test]
fn wait_mixes_result_types_and_async_results() {
    let ex = Executor::new(2).unwrap();
    let a = ex.submit(nap, (10,)).unwrap();
    let b = ex.submit(sqr, (4,)).unwrap();
    let pool = Pool::new(1).unwrap();
    let c = pool.apply_async(sqr, (5,)).unwrap();
    let all: [&dyn Watchable; 3] = [&a, &b, &c];
    let w = wait(all, Some(LONG), ReturnWhen::AllCompleted);
    assert_eq!(w.done.len(), 3);
    assert_eq!((a.result().unwrap(), b.result().unwrap()), (10, 16));
    assert_eq!(c.get().unwrap(), 25);
}

#[test]
fn as_completed_yields_in_completion_order() {
    let ex = Executor::new(3).unwrap();
    let done_first = ex.submit(nap, (0,)).unwrap();
    assert!(done_first.wait_timeout(LONG));
    let fs = vec![
        ex.submit(nap, (1_500,)).unwrap(),
        ex.submit(nap, (800,)).unwrap(),
        done_first,
        ex.submit(nap, (100,)).unwrap(),
    ];
    let order: Vec<u64> = as_completed(fs, Some(LONG))
        .map(|f| f.unwrap().result().unwrap())
        .collect();
    assert_eq!(order, [0, 100, 800, 1_500]);
}

#[test]
fn as_completed_timeout_is_a_total_deadline() {
    let ex = Executor::new(2).unwrap();
    let fs = vec![
        ex.submit(nap, (20_000,)).unwrap(),
        ex.submit(nap, (300,)).unwrap(),
        ex.submit(nap, (20_000,)).unwrap(),
    ];
    let t = Instant::now();
    let mut it = as_completed(&fs, Some(Duration::from_secs(2)));
    let first = it.next().unwrap().unwrap();
    assert!(std::ptr::eq(first, &fs[1]));
    let e = it.next().unwrap().unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(it.next().is_none());
    let pending = it.into_pending();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|f| !f.done()));
    ex.kill_workers();
}

#[test]
fn future_state_exception_running_cancelled() {
    let ex = Executor::new(1).unwrap();
    let running = ex.submit(nap, (500,)).unwrap();
    let queued = ex.submit(nap, (1,)).unwrap();
    assert!(eventually(LONG, || running.running()));
    assert!(!running.done() && !running.cancelled());
    assert!(!queued.running());
    assert!(!running.cancel());
    assert!(queued.cancel());
    assert!(queued.cancelled() && queued.done() && !queued.running());
    assert!(matches!(queued.exception(), Some(Error::Cancelled)));
    assert!(
        running
            .exception_timeout(Duration::from_millis(1))
            .unwrap_err()
            .is_timeout()
    );
    assert!(running.exception().is_none());
    assert!(!running.running());
    assert_eq!(running.result().unwrap(), 500);

    let bad = ex.submit(boom_after, (1,)).unwrap();
    let e = bad.exception().unwrap();
    assert_eq!(e.panic().unwrap().message, "boom after 1");
    assert!(e.panic().unwrap().process.starts_with("PoolWorker"));
    assert!(!bad.cancelled());
    // exception() copies: the result still carries the error.
    assert!(matches!(bad.result(), Err(Error::Panicked(_))));
}

#[test]
fn done_callbacks_run_once_in_order_and_panics_are_contained() {
    let ex = Executor::new(1).unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let f = ex.submit(nap, (300,)).unwrap();
    for k in 0..3 {
        let tx = tx.clone();
        f.add_done_callback(move |r| {
            tx.send(format!("{k}:{}", r.unwrap())).unwrap();
        });
    }
    // A panicking callback neither kills the pool nor stops the others.
    f.add_done_callback(|_| panic!("callback panics"));
    let tx2 = tx.clone();
    f.add_done_callback(move |_| tx2.send("after".into()).unwrap());
    let got: Vec<String> = (0..4).map(|_| rx.recv_timeout(LONG).unwrap()).collect();
    assert_eq!(got, ["0:300", "1:300", "2:300", "after"]);
    // Callbacks run before waiters are woken: the future is done once
    // they have all returned.
    assert!(f.wait_timeout(LONG));
    assert!(f.done());
    // Added after completion: runs at once, on this thread.
    let here = std::thread::current().id();
    let ran_here = Arc::new(Mutex::new(None));
    let r2 = ran_here.clone();
    f.add_done_callback(move |r| {
        *r2.lock().unwrap() = Some((std::thread::current().id(), *r.unwrap()));
    });
    assert_eq!(*ran_here.lock().unwrap(), Some((here, 300)));
    assert_eq!(f.result().unwrap(), 300);

    // Errors and cancellation reach callbacks too; the pool still works.
    let calls = Arc::new(AtomicUsize::new(0));
    let bad = ex.submit(boom_after, (1,)).unwrap();
    let c = calls.clone();
    bad.add_done_callback(move |r| {
        assert!(r.unwrap_err().panic().is_some());
        c.fetch_add(1, Ordering::SeqCst);
    });
    let blocker = ex.submit(nap, (300,)).unwrap();
    let queued = ex.submit(nap, (1,)).unwrap();
    let c = calls.clone();
    queued.add_done_callback(move |r| {
        assert!(matches!(r, Err(Error::Cancelled)));
        c.fetch_add(1, Ordering::SeqCst);
    });
    assert!(queued.cancel());
    assert!(bad.wait_timeout(LONG));
    assert!(eventually(LONG, || calls.load(Ordering::SeqCst) == 2));
    assert_eq!(blocker.result().unwrap(), 300);
    assert_eq!(ex.submit(sqr, (3,)).unwrap().result().unwrap(), 9);
}

#[test]
fn executor_map_timeout_cancels_the_rest() {
    let ex = Executor::new(1).unwrap();
    let t = Instant::now();
    let mut it = ex.map_timeout(nap, [10, 20_000, 1, 1], Duration::from_secs(1));
    assert_eq!(it.next().unwrap().unwrap(), 10);
    let e = it.next().unwrap().unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(it.next().is_none());
    drop(it);
    // The queued items were cancelled: the worker is free once the long
    // task is killed, and nothing else of that map runs.
    ex.kill_workers();
    // In time: everything.
    let ex = Executor::new(2).unwrap();
    let v: Vec<u64> = ex
        .map_timeout(nap, vec![5; 20], LONG)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(v, vec![5; 20]);
}

#[test]
fn kill_workers_sigkills_and_fails_pending() {
    let ex = Executor::new(2).unwrap();
    let fs: Vec<_> = (0..6)
        .map(|_| ex.submit(ignore_term_and_nap, ()).unwrap())
        .collect();
    assert!(eventually(LONG, || fs[0].running() && fs[1].running()));
    let pids = ex.pool().worker_pids();
    let t = Instant::now();
    ex.kill_workers();
    for f in fs {
        assert!(matches!(f.result(), Err(Error::PoolTerminated)));
    }
    assert!(eventually(Duration::from_secs(5), || pids
        .iter()
        .all(|&p| !pid_alive(p))));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(matches!(ex.submit(sqr, (1,)), Err(Error::State(_))));
    ex.shutdown_with(Shutdown {
        wait: true,
        cancel_futures: false,
    })
    .unwrap();
}

fn ignore_term_and_nap() {
    // SAFETY: signal(2) with a valid signal number and SIG_IGN.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    std::thread::sleep(Duration::from_secs(30));
}

#[test]
fn deadline_forms() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(nap, (20_000,)).unwrap();
    let t = Instant::now();
    let deadline = t + Duration::from_millis(200);
    assert!(r.get_deadline(deadline).unwrap_err().is_timeout());
    assert!(!r.wait_deadline(deadline));
    assert!(r.try_get().unwrap_err().is_timeout());
    assert!(t.elapsed() < Duration::from_millis(200) + Duration::from_secs(2));
    // A deadline in the past returns at once.
    assert!(r.get_deadline(t).unwrap_err().is_timeout());
    pool.terminate();

    let ex = Executor::new(1).unwrap();
    let f = ex.submit(nap, (100,)).unwrap();
    let far = Instant::now() + LONG;
    assert!(f.try_result().unwrap_err().is_timeout());
    assert!(f.wait_deadline(far));
    assert_eq!(f.result_deadline(far).unwrap(), 100);
    assert!(matches!(f.result_deadline(far), Err(Error::State(_))));
}

#[test]
fn map_errors_name_the_input_item() {
    let pool = Pool::new(2).unwrap();
    // A panic: the exact item, whatever the chunk size.
    for cs in [1, 3, 4, 100] {
        let e = pool.map_chunked(fail_at_7, 0..20, cs).unwrap_err();
        assert_eq!(e.task_index(), Some(7), "chunksize {cs}: {e}");
        assert_eq!(e.root().panic().unwrap().message, "bad item 7");
        assert!(e.to_string().contains("item 7"), "{e}");
    }
    let e = pool.map(fail_at_7, 0..20).unwrap_err();
    assert!(
        matches!(&e, Error::Task { index: 7, source } if matches!(**source, Error::Panicked(_)))
    );
    assert!(e.panic().is_some());
    let e = pool.starmap(fail_at, [(1, 0), (2, 2), (3, 0)]).unwrap_err();
    assert_eq!(e.task_index(), Some(1));
    // The imap family names each failed item, in order or not.
    let got: Vec<Option<usize>> = pool
        .imap_unordered(fail_at_7, 0..10)
        .filter_map(|r| r.err().map(|e| e.task_index()))
        .collect();
    assert_eq!(got, [Some(7)]);
    let got: Vec<Result<i64, Error>> = pool.imap_chunked(fail_at_7, 0..10, 4).collect();
    let bad: Vec<usize> = got
        .iter()
        .filter_map(|r| r.as_ref().err()?.task_index())
        .collect();
    assert_eq!(bad, [7]);
    // A lost worker takes its whole chunk: the chunk's first item.
    let e = pool.map_chunked(die_at_5, 0..12, 4).unwrap_err();
    assert_eq!(e.task_index(), Some(4), "{e}");
    assert!(
        matches!(e.root(), Error::WorkerLost { exitcode: 3, .. }),
        "{e}"
    );
    // Errors of the pool as a whole are not wrapped.
    pool.close();
    assert!(matches!(pool.map(sqr, 0..3), Err(Error::State(_))));
}

// ---- in a child test process (its own environment and stderr) ----

/// Runs the ignored test `name` of this binary in a new process with
/// `env`, and returns its status and standard error.
fn run_inner(name: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FUTURES_TEST_INNER", "1")
    .env_remove("MULTIPROC_PROCESSES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), format!("{stdout}\n{stderr}"))
}

fn inner() -> bool {
    std::env::var_os("FUTURES_TEST_INNER").is_some()
}

#[test]
#[ignore = "run by processes_env_override in a child process"]
fn inner_processes_env() {
    if !inner() {
        return;
    }
    let want = std::env::var("WANT").unwrap();
    match want.parse::<usize>() {
        Ok(n) => {
            assert_eq!(Pool::default_size().unwrap(), n);
            assert_eq!(Pool::with_default_size().unwrap().processes(), n);
            assert_eq!(Pool::builder().build().unwrap().processes(), n);
            assert_eq!(Executor::with_default_size().unwrap().pool().processes(), n);
            // An explicit number wins.
            assert_eq!(Pool::new(1).unwrap().processes(), 1);
        }
        Err(_) => {
            let e = Pool::with_default_size().unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains("MULTIPROC_PROCESSES")),
                "{e}"
            );
            assert!(Executor::with_default_size().is_err());
            assert_eq!(Pool::new(1).unwrap().processes(), 1);
        }
    }
}

#[test]
fn processes_env_override() {
    let (ok, out) = run_inner(
        "inner_processes_env",
        &[("MULTIPROC_PROCESSES", "3"), ("WANT", "3")],
    );
    assert!(ok && out.contains("1 passed"), "{out}");
    let (ok, out) = run_inner(
        "inner_processes_env",
        &[("MULTIPROC_PROCESSES", " 2 "), ("WANT", "2")],
    );
    assert!(ok && out.contains("1 passed"), "{out}");
    let cpus = multiproc::cpu_count().to_string();
    let (ok, out) = run_inner("inner_processes_env", &[("WANT", &cpus)]);
    assert!(ok && out.contains("1 passed"), "{out}");
    for bad in ["0", "many", "-1", ""] {
        let (ok, out) = run_inner(
            "inner_processes_env",
            &[("MULTIPROC_PROCESSES", bad), ("WANT", "error")],
        );
        assert!(ok && out.contains("1 passed"), "{bad:?}: {out}");
    }
}

#[test]
#[ignore = "run by worker_panics_are_printed_like_process_panics"]
fn inner_worker_panic() {
    if !inner() {
        return;
    }
    let pool = Pool::new(1).unwrap();
    assert!(pool.apply(boom_after, (0,)).is_err());
    let mut p = multiproc::Process::new(boom_after, (1,)).name("plain-child");
    p.start().unwrap();
    p.join().unwrap();
    assert!(p.take_result().is_err());
}

#[test]
fn worker_panics_are_printed_like_process_panics() {
    let (ok, out) = run_inner("inner_worker_panic", &[]);
    assert!(ok, "{out}");
    let worker = out
        .lines()
        .find(|l| l.starts_with("process 'PoolWorker-"))
        .unwrap_or_else(|| panic!("no worker panic line in:\n{out}"));
    assert!(worker.contains("panicked at"), "{worker}");
    assert!(out.contains("boom after 0"), "{out}");
    assert!(out.contains("process 'plain-child'"), "{out}");
    assert!(out.contains("boom after 1"), "{out}");
}

#[cfg(feature = "progress")]
#[test]
fn progress_counts_every_result() {
    use indicatif::{ProgressBar, ProgressDrawTarget};
    let pool = Pool::new(2).unwrap();
    let bar = ProgressBar::with_draw_target(Some(50), ProgressDrawTarget::hidden());
    let it = pool
        .imap_chunked(fail_at_7, 0..50, 3)
        .progress_with(bar.clone());
    let errs = it.filter(Result::is_err).count();
    assert_eq!(errs, 1);
    // 49 results and one error for the failed chunk of 3.
    assert_eq!(bar.position(), 48);
    assert!(bar.is_finished());
    assert_eq!(pool.imap(sqr, 0..7).progress().bar().length(), Some(7));
    assert_eq!(pool.map_progress(sqr, 0..100).unwrap()[99], 9801);
    let e = pool.map_progress(fail_at_7, 0..100).unwrap_err();
    assert_eq!(e.task_index(), Some(7));
}
