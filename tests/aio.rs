//! Awaitable twins across real processes, on both runtime flavours: queue
//! get/put/join, Process::join, the locks, Condition, Barrier and
//! `aio::wait`; idle waiters cost no CPU; a cancelled get loses nothing, a
//! dropped acquire leaks no lock; a holder killed with SIGKILL gives async
//! waiters OwnerDied; 10,000 tasks waiting on one queue and on one lock.
#![cfg(feature = "tokio")]

use multiproc::{JoinableQueue, Process, Queue, SimpleQueue};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

type Test = fn() -> Pin<Box<dyn Future<Output = ()>>>;

fn both(test: Test) {
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

fn put_later(q: Queue<u64>, n: u64, delay_ms: u64) {
    for i in 0..n {
        std::thread::sleep(Duration::from_millis(delay_ms));
        q.put(i).unwrap();
    }
}

fn drain_slowly(q: Queue<u64>, n: u64) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(200));
    (0..n)
        .map(|_| q.get_timeout(Duration::from_secs(30)).unwrap())
        .collect()
}

fn done_later(q: JoinableQueue<u8>, n: usize) {
    for _ in 0..n {
        q.get_timeout(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        q.task_done().unwrap();
    }
}

fn simple_put(q: SimpleQueue<String>) {
    std::thread::sleep(Duration::from_millis(50));
    q.put("from the child".to_string()).unwrap();
}

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn get_async_across_processes() {
    both(|| {
        Box::pin(async {
            let q = Queue::new().unwrap();
            let mut p = Process::new(put_later, (q.clone(), 20, 5));
            p.start().unwrap();
            let mut got = Vec::new();
            for _ in 0..20 {
                got.push(q.get_async().await.unwrap());
            }
            // An item received for a dropped get may come after one that a
            // newer get received meanwhile: sort.
            got.sort();
            assert_eq!(got, (0..20).collect::<Vec<_>>());
            p.join_async().await.unwrap();
            assert_eq!(p.exitcode(), Some(0));
            let t0 = Instant::now();
            let e = q
                .get_async_timeout(Duration::from_millis(100))
                .await
                .unwrap_err();
            assert!(matches!(e, multiproc::Error::Empty));
            assert!(t0.elapsed() < Duration::from_secs(5));

            let s = SimpleQueue::new().unwrap();
            let mut p = Process::new(simple_put, (s.clone(),));
            p.start().unwrap();
            assert_eq!(s.get_async().await.unwrap(), "from the child");
            p.join_async().await.unwrap();
        })
    });
}

#[test]
fn many_tasks_share_one_queue() {
    both(|| {
        Box::pin(async {
            let q = Queue::<u64>::new().unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..4 {
                let q = q.clone();
                tasks.spawn(async move {
                    let mut n = Vec::new();
                    while let Ok(v) = q.get_async_timeout(Duration::from_secs(2)).await {
                        n.push(v);
                    }
                    n
                });
            }
            let mut p = Process::new(put_later, (q.clone(), 200, 0));
            p.start().unwrap();
            let mut all = Vec::new();
            while let Some(r) = tasks.join_next().await {
                all.extend(r.unwrap());
            }
            all.sort();
            assert_eq!(all, (0..200).collect::<Vec<_>>());
            p.join_async().await.unwrap();
        })
    });
}

#[test]
fn put_async_waits_for_room_made_by_another_process() {
    both(|| {
        Box::pin(async {
            let q = Queue::with_maxsize(2).unwrap();
            let mut p = Process::new(drain_slowly, (q.clone(), 6));
            p.start().unwrap();
            for i in 0..6 {
                q.put_async(i).await.unwrap();
            }
            p.join_async().await.unwrap();
            assert_eq!(p.take_result().unwrap(), (0..6).collect::<Vec<_>>());
            q.put_async(1).await.unwrap();
            q.put_async(2).await.unwrap();
            let e = q
                .put_async_timeout(3, Duration::from_millis(150))
                .await
                .unwrap_err();
            assert!(e.is_full());
            assert_eq!(e.into_inner(), 3);
        })
    });
}

#[test]
fn join_async_waits_for_task_done_in_another_process() {
    both(|| {
        Box::pin(async {
            let q = JoinableQueue::new().unwrap();
            for i in 0..3u8 {
                q.put(i).unwrap();
            }
            assert!(
                !q.join_async_timeout(Duration::from_millis(50))
                    .await
                    .unwrap()
            );
            let mut p = Process::new(done_later, (q.clone(), 3));
            p.start().unwrap();
            q.join_async().await.unwrap();
            assert_eq!(q.unfinished_tasks(), 0);
            p.join_async().await.unwrap();
        })
    });
}

#[test]
fn join_async_of_a_running_child() {
    both(|| {
        Box::pin(async {
            let mut p = Process::new(nap, (150,));
            p.start().unwrap();
            let t0 = Instant::now();
            // The runtime stays free while the child runs.
            let ticker = tokio::spawn(async {
                let mut n = 0;
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    n += 1;
                }
                n
            });
            p.join_async().await.unwrap();
            assert!(t0.elapsed() >= Duration::from_millis(150));
            assert_eq!(ticker.await.unwrap(), 5);
            assert_eq!(p.exitcode(), Some(0));
            let mut never = Process::new(nap, (1,));
            assert!(never.join_async().await.is_err());
        })
    });
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: `getrusage` writes only into the `rusage` we pass it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer to a `rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn an_idle_waiter_costs_no_cpu() {
    // A current-thread runtime runs every task on this thread, so the
    // thread's CPU time is the waiters' (plus the reactor's).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let q = Queue::<u64>::new().unwrap();
            let s = SimpleQueue::<u64>::new().unwrap();
            let mut p = Process::new(nap, (3000,));
            p.start().unwrap();
            // Registration costs are paid before the measurement.
            let (q1, s1) = (q.clone(), s.clone());
            let waiters = tokio::spawn(async move {
                let _ = tokio::join!(
                    q1.get_async_timeout(Duration::from_secs(60)),
                    s1.get_async()
                );
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let cpu0 = thread_cpu();
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let cpu = thread_cpu() - cpu0;
            let wall = t0.elapsed();
            assert!(
                cpu < Duration::from_millis(10),
                "idle waiters used {cpu:?} in {wall:?}"
            );
            assert!(!waiters.is_finished());
            waiters.abort();
            p.kill().unwrap();
            p.join_async().await.unwrap();
        });
}

#[test]
fn a_cancelled_get_loses_nothing() {
    both(|| {
        Box::pin(async {
            let q = Queue::<u64>::new().unwrap();
            // Many gets cancelled while pending, some racing the puts.
            let mut tasks = Vec::new();
            for _ in 0..50 {
                let q = q.clone();
                tasks.push(tokio::spawn(async move { q.get_async().await }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut p = Process::new(put_later, (q.clone(), 100, 0));
            p.start().unwrap();
            for t in &tasks {
                t.abort();
            }
            let mut got = Vec::new();
            for t in tasks {
                if let Ok(v) = t.await {
                    got.push(v.unwrap());
                }
            }
            p.join_async().await.unwrap();
            while let Ok(v) = q.get_nowait() {
                got.push(v);
            }
            got.sort();
            assert_eq!(got, (0..100).collect::<Vec<_>>());
            // Timeouts cancel too.
            assert!(
                q.get_async_timeout(Duration::from_millis(20))
                    .await
                    .is_err()
            );
            q.put(7).unwrap();
            assert_eq!(q.get_nowait().unwrap(), 7);
        })
    });
}

#[test]
fn ten_thousand_tasks_wait_on_one_queue() {
    both(|| {
        Box::pin(async {
            const N: u64 = 10_000;
            let q = Queue::<u64>::new().unwrap();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..N {
                let q = q.clone();
                set.spawn(async move { q.get_async().await.unwrap() });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut p = Process::new(put_later, (q.clone(), N, 0));
            p.start().unwrap();
            let mut sum = 0;
            while let Some(r) = set.join_next().await {
                sum += r.unwrap();
            }
            assert_eq!(sum, N * (N - 1) / 2);
            p.join_async().await.unwrap();
        })
    });
}

fn echo_upper(conn: multiproc::Connection) {
    while let Ok(s) = conn.recv::<String>() {
        std::thread::sleep(Duration::from_millis(20));
        conn.send(&s.to_uppercase()).unwrap();
    }
}

fn bytes_later(conn: multiproc::Connection) {
    std::thread::sleep(Duration::from_millis(200));
    conn.send_bytes(&[1, 2, 3]).unwrap();
    // A message larger than the socket buffer.
    conn.send_bytes(&vec![7u8; 4 << 20]).unwrap();
}

#[test]
fn connection_send_and_recv_async_across_processes() {
    both(|| {
        Box::pin(async {
            let (here, there) = multiproc::Pipe::new().unwrap();
            let mut p = Process::new(echo_upper, (there,));
            p.start().unwrap();
            // The runtime stays free while a reply is awaited.
            let ticker = tokio::spawn(async {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            for word in ["a", "bc", "def"] {
                here.send_async(word).await.unwrap();
                assert_eq!(
                    here.recv_async::<String>().await.unwrap(),
                    word.to_uppercase()
                );
            }
            ticker.await.unwrap();
            drop(here);
            p.join_async().await.unwrap();
            assert_eq!(p.exitcode(), Some(0));

            let (here, there) = multiproc::Pipe::new().unwrap();
            let mut p = Process::new(bytes_later, (there,));
            p.start().unwrap();
            // A receive that times out (is cancelled) loses nothing.
            let e = here
                .recv_async_timeout::<u8>(Duration::from_millis(20))
                .await
                .unwrap_err();
            assert!(e.is_timeout());
            assert_eq!(here.recv_bytes_async().await.unwrap(), [1, 2, 3]);
            assert_eq!(here.recv_bytes_async().await.unwrap().len(), 4 << 20);
            p.join_async().await.unwrap();
            assert!(matches!(
                here.recv_bytes_async().await,
                Err(multiproc::Error::Eof)
            ));
        })
    });
}

fn square(n: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    n * n
}

#[test]
fn pool_results_are_futures() {
    both(|| {
        Box::pin(async {
            let pool = multiproc::Pool::new(2).unwrap();
            let r = pool.apply_async(square, (7,)).unwrap();
            assert_eq!(r.await.unwrap(), 49);
            let m = pool.map_async(square, 0..4u64).unwrap();
            assert_eq!(m.await.unwrap(), vec![0, 1, 4, 9]);
            let ex = multiproc::Executor::new(1).unwrap();
            let f = ex.submit(square, (3,)).unwrap();
            assert_eq!(f.await.unwrap(), 9);
        })
    });
}

fn set_later(e: multiproc::Event) {
    std::thread::sleep(Duration::from_millis(100));
    e.set();
}

fn release_later(s: multiproc::Semaphore) {
    std::thread::sleep(Duration::from_millis(100));
    s.release().unwrap();
}

#[test]
fn event_and_semaphore_twins_across_processes() {
    both(|| {
        Box::pin(async {
            let e = multiproc::Event::new().unwrap();
            assert!(!e.wait_async_timeout(Duration::from_millis(30)).await);
            let mut p = Process::new(set_later, (e.clone(),));
            p.start().unwrap();
            e.wait_async().await;
            assert!(e.is_set());
            p.join_async().await.unwrap();

            let s = multiproc::Semaphore::new(0).unwrap();
            let mut p = Process::new(release_later, (s.clone(),));
            p.start().unwrap();
            s.acquire_async().await;
            assert_eq!(s.value(), 0);
            p.join_async().await.unwrap();

            // A cancelled acquire never keeps a unit: the release that comes
            // after the timeout stays available.
            assert!(!s.acquire_async_timeout(Duration::from_millis(30)).await);
            s.release().unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(s.value(), 1);
            let b = multiproc::BoundedSemaphore::new(1).unwrap();
            b.acquire_async().await;
            assert!(!b.acquire_async_timeout(Duration::from_millis(30)).await);
            b.release().unwrap();
        })
    });
}

fn client_says(addr: std::net::SocketAddr) {
    let c = multiproc::Client::connect(addr, Some(b"key")).unwrap();
    c.send("hello from the child").unwrap();
}

#[test]
fn listener_and_client_twins() {
    both(|| {
        Box::pin(async {
            let l = multiproc::Listener::bind("127.0.0.1:0", Some(b"key")).unwrap();
            let multiproc::Address::Tcp(sa) = l.address().clone() else {
                unreachable!()
            };
            let mut p = Process::new(client_says, (sa,));
            p.start().unwrap();
            let c = l.accept_async().await.unwrap();
            assert_eq!(
                c.recv_async::<String>().await.unwrap(),
                "hello from the child"
            );
            p.join_async().await.unwrap();

            let addr = l.address().clone();
            let client = tokio::spawn(async move {
                let c = multiproc::Client::connect_async(addr, Some(b"key"))
                    .await
                    .unwrap();
                c.send_async(&5u8).await.unwrap();
            });
            let c = l.accept_async().await.unwrap();
            assert_eq!(c.recv_async::<u8>().await.unwrap(), 5);
            client.await.unwrap();
        })
    });
}

fn hold_lock(lock: multiproc::Lock, ready: multiproc::Event, ms: u64) {
    let _g = lock.acquire().unwrap();
    ready.set();
    std::thread::sleep(Duration::from_millis(ms));
}

fn hold_rlock(lock: multiproc::RLock, ready: multiproc::Event, ms: u64) {
    let _g = lock.acquire().unwrap();
    let _g2 = lock.acquire().unwrap();
    ready.set();
    std::thread::sleep(Duration::from_millis(ms));
}

/// Starts `f` holding a lock in a child and waits until it holds it.
macro_rules! child_holding {
    ($f:expr, $lock:expr, $ms:expr) => {{
        let ready = multiproc::Event::new().unwrap();
        let mut p = Process::new($f, ($lock, ready.clone(), $ms));
        p.start().unwrap();
        assert!(ready.wait_timeout(Duration::from_secs(30)));
        p
    }};
}

#[test]
fn lock_rlock_and_bounded_semaphore_acquire_async_across_processes() {
    both(|| {
        Box::pin(async {
            let lock = multiproc::Lock::new().unwrap();
            let mut p = child_holding!(hold_lock, lock.clone(), 200);
            let t0 = Instant::now();
            let g = lock.acquire_async().await.unwrap();
            assert!(t0.elapsed() >= Duration::from_millis(100));
            assert_eq!(lock.owner_pid(), Some(std::process::id()));
            // Held across awaits (on the multi-thread runtime the task may
            // move to another thread meanwhile).
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(lock.is_locked());
            drop(g);
            assert!(!lock.is_locked());
            p.join_async().await.unwrap();
            let _g = lock.acquire().unwrap();
            assert!(matches!(
                lock.acquire_async_timeout(Duration::from_millis(30)).await,
                Err(multiproc::LockError::Timeout)
            ));

            let r = multiproc::RLock::new().unwrap();
            let mut p = child_holding!(hold_rlock, r.clone(), 200);
            let g = r.acquire_async().await.unwrap();
            assert!(r.is_locked());
            // A thread of this process does not own the task's hold.
            let r2 = r.clone();
            let other = std::thread::spawn(move || r2.try_acquire().is_err());
            assert!(other.join().unwrap());
            assert_eq!(r.count(), 0);
            tokio::task::yield_now().await;
            drop(g);
            assert!(!r.is_locked());
            p.join_async().await.unwrap();

            let b = multiproc::BoundedSemaphore::new(1).unwrap();
            b.acquire_async().await;
            assert!(!b.acquire_async_timeout(Duration::from_millis(20)).await);
            b.release().unwrap();
        })
    });
}

#[test]
fn a_dropped_acquire_never_leaks_the_lock() {
    both(|| {
        Box::pin(async {
            let lock = multiproc::Lock::new().unwrap();
            let mut p = child_holding!(hold_lock, lock.clone(), 300);
            // Pending acquires dropped while the child holds the lock, some
            // by abort, some by timeouts that end around the release.
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let l = lock.clone();
                tasks.push(tokio::spawn(async move {
                    let _g = l.acquire_async().await;
                }));
            }
            let mut timed = Vec::new();
            for i in 0..10u64 {
                let l = lock.clone();
                timed.push(tokio::spawn(async move {
                    let r = l
                        .acquire_async_timeout(Duration::from_millis(250 + 10 * i))
                        .await;
                    r.is_ok()
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            for t in &tasks {
                t.abort();
            }
            for t in timed {
                let _ = t.await;
            }
            p.join_async().await.unwrap();
            // The waiting threads of the dropped futures finish their slice
            // (100 ms) and give back whatever they took.
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert!(!lock.is_locked(), "leaked: {lock:?}");
            assert!(lock.try_acquire().is_ok());

            let r = multiproc::RLock::new().unwrap();
            let mut p = child_holding!(hold_rlock, r.clone(), 200);
            assert!(
                r.acquire_async_timeout(Duration::from_millis(50))
                    .await
                    .is_err()
            );
            let pending = {
                let r = r.clone();
                tokio::spawn(async move {
                    let _g = r.acquire_async().await;
                    std::future::pending::<()>().await;
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            pending.abort();
            p.join_async().await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert!(!r.is_locked(), "leaked: {r:?}");
        })
    });
}

fn hold_forever(lock: multiproc::Lock, ready: multiproc::Event, _ms: u64) {
    lock.acquire().unwrap().leak();
    ready.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn hold_rlock_forever(lock: multiproc::RLock, ready: multiproc::Event, _ms: u64) {
    lock.acquire().unwrap().leak();
    ready.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn async_waiters_get_owner_died_from_a_killed_holder() {
    both(|| {
        Box::pin(async {
            let lock = multiproc::Lock::new().unwrap();
            let mut p = child_holding!(hold_forever, lock.clone(), 0);
            let mut waiters = tokio::task::JoinSet::new();
            for _ in 0..3 {
                let l = lock.clone();
                waiters.spawn(async move {
                    let r = l.acquire_async().await;
                    let died = r.as_ref().is_err_and(|e| e.is_owner_died());
                    let held = l.is_locked();
                    drop(r);
                    (died, held)
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.kill().unwrap();
            p.join_async().await.unwrap();
            let mut died = 0;
            while let Some(r) = waiters.join_next().await {
                let (d, held) = r.unwrap();
                assert!(held);
                died += usize::from(d);
            }
            assert_eq!(died, 1, "exactly one waiter recovers the lock");
            assert!(!lock.is_locked());

            let r = multiproc::RLock::new().unwrap();
            let mut p = child_holding!(hold_rlock_forever, r.clone(), 0);
            let r2 = r.clone();
            let waiter = tokio::spawn(async move {
                let g = r2.acquire_async().await;
                g.is_err_and(|e| e.is_owner_died())
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.kill().unwrap();
            p.join_async().await.unwrap();
            assert!(waiter.await.unwrap());
            assert!(!r.is_locked());
        })
    });
}

#[test]
fn ten_thousand_tasks_take_turns_on_one_lock() {
    both(|| {
        Box::pin(async {
            const N: usize = 10_000;
            let lock = multiproc::Lock::new().unwrap();
            let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let inside = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let hold = lock.acquire().unwrap();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..N {
                let (l, c, inside) = (lock.clone(), counter.clone(), inside.clone());
                set.spawn(async move {
                    let _g = l.acquire_async().await.unwrap();
                    assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(hold);
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
            assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), N);
            assert!(!lock.is_locked());
        })
    });
}

fn bump_and_notify(cond: multiproc::Condition, v: multiproc::Value<u32>) {
    std::thread::sleep(Duration::from_millis(100));
    let g = cond.acquire().unwrap();
    v.set(v.get() + 1);
    g.notify_all();
}

fn wait_then_bump(cond: multiproc::Condition, v: multiproc::Value<u32>) {
    let mut g = cond.acquire().unwrap();
    assert!(
        g.wait_for(|| v.get() == 1, Some(Duration::from_secs(30)))
            .unwrap()
    );
    v.set(2);
    g.notify_all();
}

#[test]
fn condition_wait_async_across_processes() {
    both(|| {
        Box::pin(async {
            for cond in [
                multiproc::Condition::new().unwrap(),
                multiproc::Condition::with_lock(multiproc::Lock::new().unwrap()).unwrap(),
            ] {
                let v = multiproc::Value::new(0u32).unwrap();
                let g = cond.acquire_async().await.unwrap();
                let mut p = Process::new(bump_and_notify, (cond.clone(), v.clone()));
                p.start().unwrap();
                let (g, ok) = g
                    .wait_for_async(|| v.get() == 1, Some(Duration::from_secs(30)))
                    .await;
                assert!(ok.unwrap());
                drop(g);
                p.join_async().await.unwrap();

                // The other way round: a sync waiter in a child, notified by
                // a task.
                let mut p = Process::new(wait_then_bump, (cond.clone(), v.clone()));
                p.start().unwrap();
                let g = cond.acquire_async().await.unwrap();
                let (g, ok) = g
                    .wait_for_async(|| v.get() == 2, Some(Duration::from_secs(30)))
                    .await;
                assert!(ok.unwrap());
                drop(g);
                p.join_async().await.unwrap();
                assert_eq!(p.exitcode(), Some(0));

                // A timed-out wait, and a dropped one, leave no waiter behind.
                let g = cond.acquire_async().await.unwrap();
                let (g, ok) = g.wait_async_timeout(Duration::from_millis(20)).await;
                assert!(!ok.unwrap());
                drop(g);
                let c2 = cond.clone();
                let t = tokio::spawn(async move {
                    let g = c2.acquire_async().await.unwrap();
                    let _ = g.wait_async().await;
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                t.abort();
                let _ = t.await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let g = cond.acquire_async().await.unwrap();
                assert_eq!(g.notify_all(), 0, "{cond:?}");
            }
        })
    });
}

fn barrier_party(b: multiproc::Barrier) -> u32 {
    std::thread::sleep(Duration::from_millis(100));
    b.wait().unwrap()
}

#[test]
fn barrier_wait_async_across_processes() {
    both(|| {
        Box::pin(async {
            let b = multiproc::Barrier::new(3).unwrap();
            let mut p = Process::new(barrier_party, (b.clone(),));
            p.start().unwrap();
            let b2 = b.clone();
            let t = tokio::spawn(async move { b2.wait_async().await.unwrap() });
            let mine = b.wait_async().await.unwrap();
            let theirs = t.await.unwrap();
            p.join_async().await.unwrap();
            let mut all = vec![mine, theirs, p.take_result().unwrap()];
            all.sort();
            assert_eq!(all, [0, 1, 2]);
            // A dropped wait leaves the count.
            let b2 = b.clone();
            let t = tokio::spawn(async move { b2.wait_async().await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(b.n_waiting(), 1);
            t.abort();
            let _ = t.await;
            assert_eq!(b.n_waiting(), 0);
            // A timeout breaks it, as the blocking wait does.
            assert!(
                b.wait_async_timeout(Duration::from_millis(30))
                    .await
                    .is_err()
            );
            assert!(b.is_broken());
        })
    });
}

fn send_later(conn: multiproc::Connection, q: Queue<u8>) {
    std::thread::sleep(Duration::from_millis(100));
    conn.send(&1u8).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    q.put(9).unwrap();
}

#[test]
fn wait_async_on_connections_and_queues() {
    both(|| {
        Box::pin(async {
            let (a_rx, _a_tx) = multiproc::Pipe::new().unwrap();
            let (b_rx, b_tx) = multiproc::Pipe::new().unwrap();
            let q = Queue::<u8>::new().unwrap();
            let objs: [&dyn multiproc::Waitable; 3] = [&a_rx, &b_rx, &q];
            assert!(
                multiproc::aio::wait(objs, Some(Duration::from_millis(20)))
                    .await
                    .unwrap()
                    .is_empty()
            );
            let mut p = Process::new(send_later, (b_tx, q.clone()));
            p.start().unwrap();
            let ticker = tokio::spawn(async {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            assert_eq!(multiproc::aio::wait(objs, None).await.unwrap(), [1]);
            ticker.await.unwrap();
            assert_eq!(b_rx.recv::<u8>().unwrap(), 1);
            // The queue (and the pipe, once the child has exited).
            let ready = multiproc::aio::wait(objs, None).await.unwrap();
            assert!(ready.contains(&2), "{ready:?}");
            assert_eq!(q.get_nowait().unwrap(), 9);
            p.join_async().await.unwrap();
        })
    });
}

fn idle_lock_and_event_waiters_cpu() -> Duration {
    let cpu = || {
        // SAFETY: `getrusage` writes only into the `rusage` we pass it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF with a valid pointer to a `rusage`.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let lock = multiproc::Lock::new().unwrap();
            let e = multiproc::Event::new().unwrap();
            let b = multiproc::Barrier::new(2).unwrap();
            let cond = multiproc::Condition::new().unwrap();
            let _held = lock.acquire().unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..100 {
                let (l, e) = (lock.clone(), e.clone());
                tasks.spawn(async move {
                    let _ = tokio::join!(l.acquire_async(), e.wait_async());
                });
            }
            let b2 = b.clone();
            tasks.spawn(async move {
                let _ = b2.wait_async().await;
            });
            let c2 = cond.clone();
            tasks.spawn(async move {
                let g = c2.acquire_async().await.unwrap();
                let _ = g.wait_async().await;
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let cpu0 = cpu();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let used = cpu() - cpu0;
            tasks.abort_all();
            used
        })
}

#[test]
fn idle_lock_event_barrier_and_condition_waiters_cost_no_cpu() {
    // In a child, so that the process's CPU time is the waiters' alone
    // (their sleeping threads included).
    let mut p = Process::new(idle_lock_and_event_waiters_cpu, ());
    p.start().unwrap();
    p.join().unwrap();
    let cpu = p.take_result().unwrap();
    assert!(
        cpu < Duration::from_millis(10),
        "idle waiters used {cpu:?} in 1 s"
    );
}

fn manager_child(
    d: multiproc::manager::DictProxy<String, i64>,
    q: multiproc::manager::QueueProxy<u32>,
    lock: multiproc::manager::LockProxy,
    e: multiproc::manager::EventProxy,
) {
    lock.acquire().unwrap();
    e.set().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    d.set("child".to_string(), 7).unwrap();
    lock.release().unwrap();
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(5));
        q.put(i).unwrap();
    }
}

#[test]
fn manager_proxy_twins_across_processes() {
    both(|| {
        Box::pin(async {
            use multiproc::aio::AsyncProxy;
            let m = multiproc::Manager::start().unwrap();
            let d = AsyncProxy::new(m.dict::<String, i64>().unwrap());
            let q = AsyncProxy::new(m.queue::<u32>().unwrap());
            let lock = AsyncProxy::new(m.lock().unwrap());
            let e = AsyncProxy::new(m.event().unwrap());
            let mut p = Process::new(
                manager_child,
                ((*d).clone(), (*q).clone(), (*lock).clone(), (*e).clone()),
            );
            p.start().unwrap();
            e.wait_async().await.unwrap();
            // The child holds the lock for 200 ms; the runtime stays free.
            let ticker = tokio::spawn(async {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            let g = lock.acquire_async().await.unwrap();
            ticker.await.unwrap();
            assert_eq!(d.get_async("child".to_string()).await.unwrap(), Some(7));
            d.set_async("parent".to_string(), 1).await.unwrap();
            assert_eq!(d.len_async().await.unwrap(), 2);
            drop(g);
            // Gets cancelled by short timeouts while the child puts lose
            // nothing.
            let mut got = Vec::new();
            while got.len() < 20 {
                // Dropped by the timeout, mostly while the call is in flight.
                if let Ok(v) = tokio::time::timeout(Duration::from_millis(3), q.get_async()).await {
                    got.push(v.unwrap());
                }
            }
            // An item received for a dropped get may come after one that a
            // newer get received meanwhile: sort.
            got.sort();
            assert_eq!(got, (0..20).collect::<Vec<_>>());
            p.join_async().await.unwrap();
            assert_eq!(p.exitcode(), Some(0));
            // A dropped acquire never keeps the managed lock.
            let other = AsyncProxy::new(m.lock().unwrap());
            let held = other.acquire_async().await.unwrap();
            let o2 = other.clone();
            let t = tokio::spawn(async move {
                let _g = o2.acquire_async().await;
                std::future::pending::<()>().await;
            });
            tokio::time::sleep(Duration::from_millis(30)).await;
            t.abort();
            drop(held);
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert!(other.try_acquire().unwrap(), "the managed lock leaked");
            other.release().unwrap();
            assert_eq!(
                other.call_async("acquire", vec![]).await.unwrap(),
                multiproc::pickle::Value::Bool(true)
            );
        })
    });
}

fn manager_put(q: multiproc::manager::QueueProxy<u32>, items: Vec<u32>) {
    for i in items {
        q.put(i).unwrap();
    }
}

/// Runs `test` on a current-thread and on a multi-thread runtime whose
/// threads (the blocking pool's included) are named `name`.
fn both_named(name: &'static str, test: Test) {
    tokio::runtime::Builder::new_current_thread()
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

/// Context switches so far of this process's threads named `name`.
fn switches_of_threads_named(name: &str) -> u64 {
    let mut n = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap();
            }
        }
    }
    n
}

#[test]
fn idle_manager_waiters_make_no_calls() {
    // Each call to the manager wakes the thread that makes it (to read
    // the reply): idle waiters that made calls would show as wake-ups of
    // the runtime's threads.
    both_named("idle-mgr-wait", || {
        Box::pin(async {
            use multiproc::aio::AsyncProxy;
            let m = multiproc::Manager::start().unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..3 {
                let q = AsyncProxy::new(m.queue::<u32>().unwrap());
                tasks.spawn(async move {
                    let _ = q.get_async().await;
                });
            }
            let e = AsyncProxy::new(m.event().unwrap());
            let e2 = e.clone();
            tasks.spawn(async move {
                let _ = e2.wait_async().await;
            });
            let q = AsyncProxy::new(m.queue::<u32>().unwrap());
            let q2 = q.clone();
            tasks.spawn(async move {
                let _ = q2.get_async_timeout(Duration::from_secs(60)).await;
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = switches_of_threads_named("idle-mgr-wait");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let woken = switches_of_threads_named("idle-mgr-wait") - before;
            eprintln!("idle manager waiters: {woken} wake-ups in 1 s");
            // In 100 ms slices, five waiters were 50 calls a second.
            assert!(woken < 15, "idle waiters woke {woken} times in 1 s");
            // They still wait, and are woken by a put or a set.
            assert!(!tasks.is_empty());
            e.set().unwrap();
            q.put_async(1).await.unwrap();
            let t0 = Instant::now();
            let mut done = 0;
            while done < 2 {
                tokio::time::timeout(Duration::from_secs(10), tasks.join_next())
                    .await
                    .expect("the set and the put wake their waiters")
                    .unwrap()
                    .unwrap();
                done += 1;
            }
            assert!(t0.elapsed() < Duration::from_secs(5));
            tasks.abort_all();
        })
    });
}

/// Polls `f` once, leaving it pending.
async fn poll_once<F: Future + Unpin>(f: &mut F)
where
    F::Output: std::fmt::Debug,
{
    tokio::select! {
        biased;
        r = f => panic!("ready at once: {r:?}"),
        () = std::future::ready(()) => {}
    }
}

/// Waits (up to 10 s) until the managed queue holds `n` items.
async fn until_qsize(q: &multiproc::manager::QueueProxy<u32>, n: usize) {
    let t0 = Instant::now();
    while q.qsize().unwrap() != n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "qsize stays {}",
            q.qsize().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_dropped_manager_get_keeps_its_item_for_the_next_get() {
    both(|| {
        Box::pin(async {
            use multiproc::aio::AsyncProxy;
            let m = multiproc::Manager::start().unwrap();
            let q = AsyncProxy::new(m.queue::<u32>().unwrap());
            let plain = (*q).clone();
            // A get dropped while the queue is empty takes nothing.
            assert!(
                tokio::time::timeout(Duration::from_millis(50), q.get_async())
                    .await
                    .is_err()
            );
            let mut p = Process::new(manager_put, (plain.clone(), vec![1]));
            p.start().unwrap();
            p.join_async().await.unwrap();
            assert_eq!(q.get_async().await.unwrap(), 1);
            // A get whose item the manager handed out before the future
            // was dropped: the item is kept and comes first.
            let mut f = Box::pin(q.get_async());
            poll_once(&mut f).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut p = Process::new(manager_put, (plain.clone(), vec![2, 3]));
            p.start().unwrap();
            p.join_async().await.unwrap();
            until_qsize(&plain, 1).await;
            drop(f);
            assert_eq!(q.get_async().await.unwrap(), 2);
            assert_eq!(
                q.get_async_timeout(Duration::from_secs(5)).await.unwrap(),
                3
            );
            // Timed gets: the manager is told the deadline.
            let t0 = Instant::now();
            assert!(matches!(
                q.get_async_timeout(Duration::from_millis(200)).await,
                Err(multiproc::Error::Empty)
            ));
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(200), "{took:?}");
            assert!(took < Duration::from_millis(2200), "{took:?}");
        })
    });
}

#[test]
fn dropping_the_async_proxy_puts_kept_items_back() {
    both(|| {
        Box::pin(async {
            use multiproc::aio::AsyncProxy;
            let m = multiproc::Manager::start().unwrap();
            let q = AsyncProxy::new(m.queue::<u32>().unwrap());
            let plain = (*q).clone();
            let mut f = Box::pin(q.get_async());
            poll_once(&mut f).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut p = Process::new(manager_put, (plain.clone(), vec![7, 8]));
            p.start().unwrap();
            p.join_async().await.unwrap();
            // The manager handed 7 to the pending get.
            until_qsize(&plain, 1).await;
            drop(f);
            drop(q);
            // 7 goes back, at the end.
            until_qsize(&plain, 2).await;
            assert_eq!(plain.get().unwrap(), 8);
            assert_eq!(plain.get().unwrap(), 7);
        })
    });
}

#[test]
fn manager_event_wait_async_timeout_is_one_call_with_its_deadline() {
    both(|| {
        Box::pin(async {
            use multiproc::aio::AsyncProxy;
            let m = multiproc::Manager::start().unwrap();
            let e = AsyncProxy::new(m.event().unwrap());
            let t0 = Instant::now();
            assert!(
                !e.wait_async_timeout(Duration::from_millis(200))
                    .await
                    .unwrap()
            );
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(200), "{took:?}");
            assert!(took < Duration::from_millis(2200), "{took:?}");
            // A dropped wait leaves the next one working.
            assert!(
                tokio::time::timeout(Duration::from_millis(20), e.wait_async())
                    .await
                    .is_err()
            );
            let e2 = (*e).clone();
            let setter = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                e2.set().unwrap();
            });
            assert!(e.wait_async_timeout(Duration::from_secs(10)).await.unwrap());
            setter.join().unwrap();
        })
    });
}

fn hold_condition(c: multiproc::manager::ConditionProxy, e: multiproc::manager::EventProxy) {
    c.acquire().unwrap();
    e.set().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.release().unwrap();
}

#[test]
fn a_dropped_manager_condition_acquire_keeps_no_lock() {
    both(|| {
        Box::pin(async {
            use multiproc::aio::AsyncProxy;
            use multiproc::manager::Proxy;
            use multiproc::pickle::Value;
            let m = multiproc::Manager::start().unwrap();
            let c = AsyncProxy::new(m.condition().unwrap());
            let held = AsyncProxy::new(m.event().unwrap());
            let mut p = Process::new(hold_condition, ((*c).clone(), (*held).clone()));
            p.start().unwrap();
            held.wait_async().await.unwrap();
            // Dropped while the child holds the lock.
            assert!(
                tokio::time::timeout(Duration::from_millis(50), c.acquire_async())
                    .await
                    .is_err()
            );
            p.join_async().await.unwrap();
            // Its call may take the lock once the child lets go; it is given
            // back.
            let other = (*c).clone();
            let t0 = Instant::now();
            loop {
                let got = other
                    .base()
                    .call_method("acquire", vec![Value::Bool(false)])
                    .unwrap();
                if got == Value::Bool(true) {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "a dropped acquire kept the lock"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other.release().unwrap();
            // The twin still works.
            c.acquire_async().await.unwrap();
            c.release().unwrap();
        })
    });
}

#[test]
fn a_dropped_manager_barrier_wait_breaks_the_barrier() {
    both(|| {
        Box::pin(async {
            use multiproc::aio::AsyncProxy;
            let m = multiproc::Manager::start().unwrap();
            let b = AsyncProxy::new(m.barrier(2).unwrap());
            let other = (*b).clone();
            assert!(
                tokio::time::timeout(Duration::from_millis(50), b.wait_async())
                    .await
                    .is_err()
            );
            // Not counted as arrived: the barrier breaks, as when a waiter
            // times out.
            let t0 = Instant::now();
            while !other.broken().unwrap() {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "a dropped wait still counts as arrived"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut p = Process::new(barrier_wait_in_child, (other,));
            p.start().unwrap();
            p.join_async().await.unwrap();
            assert_eq!(p.exitcode(), Some(0));
            // After a reset, parties in two processes pass it.
            b.reset().unwrap();
            let mut p = Process::new(barrier_pass_in_child, ((*b).clone(),));
            p.start().unwrap();
            let i = b.wait_async().await.unwrap();
            p.join_async().await.unwrap();
            assert!(i < 2);
        })
    });
}

fn barrier_wait_in_child(b: multiproc::manager::BarrierProxy) {
    assert!(b.wait().is_err(), "the barrier is broken");
}

fn barrier_pass_in_child(b: multiproc::manager::BarrierProxy) {
    b.wait().unwrap();
}

fn wait_on_condition(c: multiproc::manager::ConditionProxy, e: multiproc::manager::EventProxy) {
    c.acquire().unwrap();
    e.set().unwrap();
    let _ = c.wait();
}

#[test]
fn a_condition_waiter_killed_in_its_wait_leaves_the_lock_free() {
    both(|| {
        Box::pin(async {
            use multiproc::aio::AsyncProxy;
            let m = multiproc::Manager::start().unwrap();
            let c = AsyncProxy::new(m.condition().unwrap());
            let waiting = AsyncProxy::new(m.event().unwrap());
            let mut p = Process::new(wait_on_condition, ((*c).clone(), (*waiting).clone()));
            p.start().unwrap();
            waiting.wait_async().await.unwrap();
            // The child's wait has released the lock (or is about to).
            tokio::time::sleep(Duration::from_millis(200)).await;
            p.kill().unwrap();
            p.join_async().await.unwrap();
            // The manager sees the waiter gone within its 200 ms poll; it
            // must not take the lock back for it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            tokio::time::timeout(Duration::from_secs(5), c.acquire_async())
                .await
                .expect("the dead waiter kept the condition's lock")
                .unwrap();
            c.notify_all().unwrap();
            c.release().unwrap();
        })
    });
}
