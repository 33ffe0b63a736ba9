//! ThreadPool: Python's multiprocessing.pool.ThreadPool over threads.

use multiproc::{Error, ThreadPool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn apply_and_map_run_capturing_closures() {
    let pool = ThreadPool::new(3).unwrap();
    let base = Arc::new(100u64);
    let b = base.clone();
    assert_eq!(pool.apply(move || *b + 1).unwrap(), 101);
    let b = base.clone();
    assert_eq!(
        pool.map(move |n: u64| n * *b, 0..5).unwrap(),
        vec![0, 100, 200, 300, 400]
    );
    assert_eq!(
        pool.starmap(
            |a: u64, b: u64, c: u64| a + b + c,
            vec![(1, 2, 3), (4, 5, 6)]
        )
        .unwrap(),
        vec![6, 15]
    );
    pool.close();
    pool.join().unwrap();
}

#[test]
fn tasks_really_run_in_parallel() {
    // Three tasks that each wait for the other two can finish only on three
    // threads at once.
    let pool = ThreadPool::new(3).unwrap();
    let barrier = Arc::new(Barrier::new(3));
    let rs: Vec<_> = (0..3)
        .map(|i| {
            let b = barrier.clone();
            pool.apply_async(move || {
                b.wait();
                i
            })
            .unwrap()
        })
        .collect();
    for (i, r) in rs.into_iter().enumerate() {
        assert_eq!(r.get_timeout(Duration::from_secs(30)).unwrap(), i);
    }
}

#[test]
fn a_panic_fails_only_its_item() {
    let pool = ThreadPool::new(2).unwrap();
    let out: Vec<_> = pool
        .imap(
            |n: u32| {
                if n == 3 {
                    panic!("three");
                }
                n
            },
            0..6,
        )
        .unwrap()
        .collect();
    assert_eq!(out.len(), 6);
    for (i, r) in out.iter().enumerate() {
        if i == 3 {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.task_index(), Some(3));
            assert!(matches!(e.root(), Error::Panicked(p) if p.message == "three"));
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u32);
        }
    }
    let e = pool
        .map(|n: u32| if n == 1 { panic!("one") } else { n }, 0..3)
        .unwrap_err();
    assert_eq!(e.task_index(), Some(1));
    // The pool still works.
    assert_eq!(pool.apply(|| 7).unwrap(), 7);
    let r = pool.apply_async(|| -> u8 { panic!("x") }).unwrap();
    r.wait();
    assert!(!r.successful().unwrap());
}

#[test]
fn imap_unordered_yields_every_result() {
    let pool = ThreadPool::new(4).unwrap();
    let mut got: Vec<u32> = pool
        .imap_unordered(|n: u32| n * 2, 0..100)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..100).map(|n| n * 2).collect::<Vec<_>>());
}

#[test]
fn close_refuses_new_tasks_and_join_waits_for_queued_ones() {
    let pool = ThreadPool::new(2).unwrap();
    assert!(matches!(pool.join(), Err(Error::State(_))));
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let d = done.clone();
        pool.apply_async(move || {
            std::thread::sleep(Duration::from_millis(5));
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    pool.close();
    assert!(matches!(pool.apply(|| 1), Err(Error::State(_))));
    pool.join().unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 10);
}

#[test]
fn terminate_fails_the_tasks_not_started() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let (started_tx, started) = std::sync::mpsc::channel();
    let running = pool
        .apply_async(move || {
            started_tx.send(()).unwrap();
            g.wait();
            1
        })
        .unwrap();
    // The task must be running (not queued) when the pool is terminated.
    started.recv_timeout(Duration::from_secs(30)).unwrap();
    let queued = pool.apply_async(|| 2).unwrap();
    let mapped = pool.imap(|n: u8| n, 0..3).unwrap();
    pool.terminate();
    gate.wait();
    assert_eq!(running.get().unwrap(), 1);
    assert!(matches!(queued.get(), Err(Error::PoolTerminated)));
    let rest: Vec<_> = mapped.collect();
    assert_eq!(rest.len(), 3);
    assert!(
        rest.iter()
            .all(|r| matches!(r.as_ref().unwrap_err().root(), Error::PoolTerminated))
    );
    pool.join().unwrap();
}

#[test]
fn get_timeout_keeps_the_result() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let r = pool
        .apply_async(move || {
            g.wait();
            5
        })
        .unwrap();
    assert!(
        r.get_timeout(Duration::from_millis(20))
            .unwrap_err()
            .is_timeout()
    );
    assert!(!r.ready());
    gate.wait();
    assert!(r.wait_timeout(Duration::from_secs(30)));
    assert_eq!(r.get_timeout(Duration::from_secs(30)).unwrap(), 5);
    assert!(matches!(
        r.get_timeout(Duration::ZERO),
        Err(Error::State(_))
    ));
    assert!(ThreadPool::new(0).is_err());
}
