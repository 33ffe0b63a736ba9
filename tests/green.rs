//! The gevent-shaped layer: joinall's count, timeout and raise_error, kill at
//! an await point, Timeout, Pool and Group.
#![cfg(feature = "tokio")]

use multiproc::green::{self, GreenletError, Group, Pool, Timeout};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn both(test: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn joinall_count_stops_early() {
    both(|| {
        Box::pin(async {
            let gs: Vec<_> = (0..5u64)
                .map(|i| {
                    green::spawn(async move {
                        if i < 2 {
                            green::sleep(Duration::from_millis(10 * i)).await;
                        } else {
                            green::sleep(LONG).await;
                        }
                        i
                    })
                })
                .collect();
            let refs: Vec<_> = gs.iter().collect();
            let t0 = Instant::now();
            let done = green::joinall(&refs, None, false, Some(2)).await.unwrap();
            assert!(t0.elapsed() < Duration::from_secs(30));
            let mut done = done;
            done.sort();
            assert_eq!(done, vec![0, 1]);
            assert!(!gs[2].ready());
            green::killall(&refs).await;
            assert!(gs.iter().all(|g| g.ready()));
            assert_eq!(gs[4].exception(), Some(GreenletError::Killed));
            assert_eq!(gs[0].get().await, Ok(0));
        })
    });
}

#[test]
fn joinall_timeout_returns_those_done() {
    both(|| {
        Box::pin(async {
            let fast = green::spawn(async { 1 });
            let slow = green::spawn(async {
                green::sleep(LONG).await;
                2
            });
            let t0 = Instant::now();
            let done = green::joinall(
                &[&fast, &slow],
                Some(Duration::from_millis(100)),
                false,
                None,
            )
            .await
            .unwrap();
            assert_eq!(done, vec![0]);
            assert!(t0.elapsed() >= Duration::from_millis(100));
            assert!(t0.elapsed() < Duration::from_secs(30));
            assert!(!slow.ready());
            slow.kill().await;
            assert!(!slow.successful());
        })
    });
}

#[test]
fn joinall_raise_error_reports_the_panic() {
    both(|| {
        Box::pin(async {
            let bad = green::spawn(async {
                green::sleep(Duration::from_millis(20)).await;
                panic!("boom");
            });
            let slow = green::spawn(async {
                green::sleep(LONG).await;
            });
            let r = green::joinall(&[&slow, &bad], None, true, None).await;
            assert_eq!(r, Err(GreenletError::Panicked("boom".into())));
            assert!(!slow.ready());
            // Without raise_error the failure is just "done".
            let r = green::joinall(&[&bad], None, false, None).await;
            assert_eq!(r, Ok(vec![0]));
            assert!(!bad.successful());
            slow.kill().await;
        })
    });
}

#[test]
fn kill_stops_at_an_await_point_and_runs_destructors() {
    both(|| {
        Box::pin(async {
            struct Flag(Arc<AtomicUsize>);
            impl Drop for Flag {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let dropped = Arc::new(AtomicUsize::new(0));
            let reached = Arc::new(AtomicUsize::new(0));
            let (d, r) = (dropped.clone(), reached.clone());
            let g = green::spawn(async move {
                let _f = Flag(d);
                green::sleep(LONG).await;
                r.fetch_add(1, Ordering::SeqCst);
            });
            green::sleep(Duration::from_millis(20)).await;
            assert!(!g.ready());
            g.kill().await;
            assert!(g.ready());
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
            assert_eq!(reached.load(Ordering::SeqCst), 0);
            assert_eq!(g.get().await, Err(GreenletError::Killed));
            // Killing a finished greenlet keeps its value.
            let done = green::spawn(async { 5 });
            done.join(None).await;
            done.kill().await;
            assert_eq!(done.get().await, Ok(5));
            assert_eq!(done.get().await, Err(GreenletError::Taken));
        })
    });
}

#[test]
fn spawn_later_killed_before_start_never_runs() {
    both(|| {
        Box::pin(async {
            let ran = Arc::new(AtomicUsize::new(0));
            let r = ran.clone();
            let g = green::spawn_later(Duration::from_millis(200), async move {
                r.fetch_add(1, Ordering::SeqCst);
            });
            g.kill().await;
            green::sleep(Duration::from_millis(300)).await;
            assert_eq!(ran.load(Ordering::SeqCst), 0);
        })
    });
}

#[test]
fn timeout_is_one_deadline_for_several_operations() {
    both(|| {
        Box::pin(async {
            let t = Timeout::start_new(Duration::from_millis(150));
            assert_eq!(t.run(async { 1 }).await, Ok(1));
            let t0 = Instant::now();
            assert!(
                t.run(green::sleep(Duration::from_millis(100)))
                    .await
                    .is_ok()
            );
            assert!(t.run(green::sleep(LONG)).await.is_err());
            assert!(t0.elapsed() < Duration::from_secs(30));
            assert!(
                green::with_timeout(Duration::from_millis(10), green::sleep(LONG))
                    .await
                    .is_err()
            );
            assert_eq!(green::with_timeout(LONG, async { 3 }).await, Ok(3));
        })
    });
}

#[test]
fn pool_bounds_concurrency() {
    both(|| {
        Box::pin(async {
            let pool = Pool::new(3);
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let (r, p) = (running.clone(), peak.clone());
            let out = pool
                .map(
                    move |i: usize| {
                        let (r, p) = (r.clone(), p.clone());
                        async move {
                            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                            p.fetch_max(now, Ordering::SeqCst);
                            green::sleep(Duration::from_millis(5)).await;
                            r.fetch_sub(1, Ordering::SeqCst);
                            i * 2
                        }
                    },
                    0..20,
                )
                .await
                .unwrap();
            assert_eq!(out, (0..20).map(|i| i * 2).collect::<Vec<_>>());
            assert_eq!(peak.load(Ordering::SeqCst), 3);
            assert!(pool.join(None).await);
            assert_eq!(pool.free_count(), 3);
            assert_eq!(pool.size(), 3);

            let mut it = pool.imap_unordered(|i: u32| async move { i + 1 }, 0..50u32);
            let mut got = Vec::new();
            while let Some(v) = it.next().await {
                got.push(v.unwrap());
            }
            got.sort();
            assert_eq!(got, (1..=50).collect::<Vec<_>>());
        })
    });
}

#[test]
fn group_join_and_kill() {
    both(|| {
        Box::pin(async {
            let group = Group::new();
            for _ in 0..10 {
                group.spawn(green::sleep(Duration::from_millis(10))).await;
            }
            assert!(group.join(Some(Duration::from_secs(30))).await);
            assert!(group.is_empty());
            let gs = {
                let mut v = Vec::new();
                for _ in 0..10 {
                    v.push(group.spawn(green::sleep(LONG)).await);
                }
                v
            };
            assert_eq!(group.len(), 10);
            assert!(!group.join(Some(Duration::from_millis(50))).await);
            group.kill().await;
            assert!(group.is_empty());
            assert!(
                gs.iter()
                    .all(|g| g.exception() == Some(GreenletError::Killed))
            );
        })
    });
}

#[test]
fn sleep_zero_switches_between_coroutines() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let log = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mk = |name: &'static str| {
                let log = log.clone();
                green::spawn(async move {
                    for i in 0..3 {
                        log.lock().unwrap().push(format!("{name}{i}"));
                        green::sleep(Duration::ZERO).await;
                    }
                })
            };
            let (a, b) = (mk("a"), mk("b"));
            green::joinall(&[&a, &b], None, true, None).await.unwrap();
            // Each sleep(0) lets the other run: both finish step i before
            // either starts step i + 1 (tokio picks the order within a step).
            let log = log.lock().unwrap();
            let steps: Vec<char> = log.iter().map(|s| s.chars().nth(1).unwrap()).collect();
            assert_eq!(steps, ['0', '0', '1', '1', '2', '2'], "{log:?}");
        });
}
