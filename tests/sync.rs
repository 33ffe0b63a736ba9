//! Cross-process synchronization: Lock, RLock, Semaphore, BoundedSemaphore,
//! Condition, Event, Barrier.
//!
//! Scenarios L01–L06, S01–S03, C01–C07, E01 and B01–B09 are ported from
//! CPython's `Lib/test/_test_multiprocessing.py` (see
//! `CPYTHON_SCENARIOS.md`), in Rust terms and across real processes; the
//! owner-death tests go beyond CPython, which hangs there.

use multiproc::*;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(20);

fn start<R>(mut p: Process<R>) -> Process<R>
where
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    p.start().unwrap();
    p
}

fn finish<R>(mut p: Process<R>) -> R
where
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    assert!(p.join_timeout(LONG).unwrap(), "child did not finish");
    p.take_result().unwrap()
}

/// Polls `f` until true or a generous limit (a "does not hang" bound).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + LONG;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    f()
}

// ---------------------------------------------------------------- Lock

#[test]
fn l01_lock_basics() {
    let lock = Lock::new().unwrap();
    assert!(!lock.is_locked());
    let g = lock.acquire().unwrap();
    assert!(lock.is_locked());
    assert!(matches!(lock.try_acquire(), Err(LockError::WouldBlock)));
    drop(g);
    assert!(!lock.is_locked());
    // Python's release(): manual, and an error when unlocked.
    lock.try_acquire().unwrap().leak();
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(Error::State(_))));
}

#[test]
fn l03_guards_scope() {
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    {
        let _a = lock.acquire().unwrap();
        let _b = rlock.acquire().unwrap();
        assert!(lock.is_locked() && rlock.is_locked());
    }
    assert!(!lock.is_locked() && !rlock.is_locked());
}

#[test]
fn l02_rlock_nesting() {
    let r = RLock::new().unwrap();
    for _ in 0..3 {
        r.acquire().unwrap().leak();
    }
    assert_eq!(r.count(), 3);
    for left in (0..3).rev() {
        r.release().unwrap();
        assert_eq!(r.count(), left);
    }
    assert!(!r.is_locked());
    assert!(matches!(r.release(), Err(Error::State(_))));
}

#[test]
fn rlock_is_per_thread() {
    let r = RLock::new().unwrap();
    let _g = r.acquire().unwrap();
    let r2 = r.clone();
    let res = thread::spawn(move || {
        let blocked = matches!(r2.try_acquire(), Err(LockError::WouldBlock));
        let released = r2.release().is_err();
        blocked && released
    })
    .join()
    .unwrap();
    assert!(res);
}

fn hold_until(lock: Lock, holding: Event, go: Event) -> bool {
    let _g = lock.acquire().unwrap();
    holding.set();
    go.wait_timeout(LONG)
}

#[test]
fn l04_locked_seen_from_other_process() {
    let lock = Lock::new().unwrap();
    let (holding, go) = (Event::new().unwrap(), Event::new().unwrap());
    let p = start(Process::new(
        hold_until,
        (lock.clone(), holding.clone(), go.clone()),
    ));
    assert!(holding.wait_timeout(LONG));
    assert!(lock.is_locked());
    assert_eq!(lock.owner_pid(), p.pid());
    assert!(matches!(lock.try_acquire(), Err(LockError::WouldBlock)));
    let t = Instant::now();
    assert!(matches!(
        lock.acquire_timeout(Duration::from_millis(50)),
        Err(LockError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    go.set();
    assert!(finish(p));
    // The child released on exit; we can take it now.
    let _g = lock.acquire_timeout(LONG).unwrap();
}

#[test]
fn l05_debug_shows_owner() {
    let lock = Lock::new().unwrap();
    assert_eq!(format!("{lock:?}"), "<Lock(owner=None)>");
    let _g = lock.acquire().unwrap();
    assert_eq!(
        format!("{lock:?}"),
        format!("<Lock(owner={})>", std::process::id())
    );
    let r = RLock::new().unwrap();
    assert_eq!(format!("{r:?}"), "<RLock(None, 0)>");
    let _a = r.acquire().unwrap();
    let _b = r.acquire().unwrap();
    assert!(format!("{r:?}").ends_with(", 2)>"));
}

fn add_locked(v: Value<u64>, n: u64) {
    for _ in 0..n {
        *v.lock().unwrap() += 1;
    }
}

#[test]
fn two_processes_locked_increments_are_exact() {
    let n: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let v = Value::new(0u64).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| start(Process::new(add_locked, (v.clone(), n))))
        .collect();
    for p in ps {
        finish(p);
    }
    assert_eq!(v.get(), 2 * n);
}

/// Processes block in `acquire` while threads give up with short
/// timeouts: every increment is counted once and nobody is left asleep.
#[test]
fn lock_with_timeouts_and_blocking_waiters() {
    let n: u64 = 20_000;
    let v = Value::new(0u64).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| start(Process::new(add_locked, (v.clone(), n))))
        .collect();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let v = v.clone();
            thread::spawn(move || {
                let mut done = 0u64;
                for _ in 0..2_000 {
                    if let Ok(mut g) = v.lock_timeout(Duration::from_micros(50)) {
                        *g.get_obj() += 1;
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let by_threads: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    for p in ps {
        finish(p);
    }
    assert_eq!(v.get(), 2 * n + by_threads);
}

fn lock_through_pipe(conn: Connection) -> bool {
    let lock: Lock = conn.recv().unwrap();
    let g = lock.try_acquire();
    let ok = g.is_ok();
    drop(g);
    conn.send(&ok).unwrap();
    ok
}

#[test]
fn lock_travels_in_messages() {
    let (a, b) = Pipe::new().unwrap();
    let p = start(Process::new(lock_through_pipe, (b,)));
    let lock = Lock::new().unwrap();
    let g = lock.acquire().unwrap();
    a.send(&lock).unwrap();
    // Held by us: the child's try fails.
    assert!(!a.recv::<bool>().unwrap());
    drop(g);
    assert!(!finish(p));
}

// ---------------------------------------------------------------- owner death

fn hold_forever(lock: Lock, holding: Event) {
    lock.acquire().unwrap().leak();
    holding.set();
    thread::sleep(LONG * 3);
}

fn hold_rlock_forever(lock: RLock, holding: Event) {
    lock.acquire().unwrap().leak();
    lock.acquire().unwrap().leak();
    holding.set();
    thread::sleep(LONG * 3);
}

#[test]
fn sigkill_of_holder_gives_owner_died_to_blocked_waiter() {
    let lock = Lock::new().unwrap();
    let holding = Event::new().unwrap();
    let mut p = start(Process::new(hold_forever, (lock.clone(), holding.clone())));
    assert!(holding.wait_timeout(LONG));
    let waiter = {
        let lock = lock.clone();
        thread::spawn(move || {
            let r = lock.acquire();
            let died_at = Instant::now();
            let died = matches!(r, Err(LockError::OwnerDied(_)));
            (died, died_at)
        })
    };
    thread::sleep(Duration::from_millis(50));
    let killed_at = Instant::now();
    p.kill().unwrap();
    let (died, died_at) = waiter.join().unwrap();
    assert!(died, "the waiter was not told that the owner died");
    assert!(died_at.duration_since(killed_at) < Duration::from_secs(1));
    // Recovered: the lock works normally again.
    assert!(!lock.is_locked());
    let _g = lock.try_acquire().unwrap();
    let _ = p.join_timeout(LONG);
}

#[test]
fn sigkill_of_holder_gives_owner_died_to_try_and_timeout() {
    let lock = Lock::new().unwrap();
    let holding = Event::new().unwrap();
    let mut p = start(Process::new(hold_forever, (lock.clone(), holding.clone())));
    assert!(holding.wait_timeout(LONG));
    assert!(matches!(lock.try_acquire(), Err(LockError::WouldBlock)));
    p.kill().unwrap();
    // Not reaped yet or reaped: both count as dead.
    let t = Instant::now();
    let g = lock
        .acquire_timeout(Duration::from_secs(5))
        .expect_err("owner died")
        .into_guard()
        .expect("guard handed over");
    assert!(t.elapsed() < Duration::from_secs(1));
    drop(g);
    let _ = p.join_timeout(LONG);
    assert!(lock.try_acquire().is_ok());
}

#[test]
fn sigkill_of_rlock_holder_gives_owner_died() {
    let lock = RLock::new().unwrap();
    let holding = Event::new().unwrap();
    let mut p = start(Process::new(
        hold_rlock_forever,
        (lock.clone(), holding.clone()),
    ));
    assert!(holding.wait_timeout(LONG));
    p.kill().unwrap();
    let _ = p.join_timeout(LONG);
    let g = lock
        .acquire()
        .expect_err("owner died")
        .into_guard()
        .unwrap();
    assert_eq!(lock.count(), 1);
    drop(g);
    assert!(!lock.is_locked());
}

// ---------------------------------------------------------------- Semaphore

#[test]
fn s01_semaphore_accounting() {
    let s = Semaphore::new(2).unwrap();
    assert_eq!(s.value(), 2);
    s.acquire();
    assert_eq!(s.value(), 1);
    assert!(s.try_acquire());
    assert_eq!(s.value(), 0);
    assert!(!s.try_acquire());
    s.release().unwrap();
    assert_eq!(s.value(), 1);
    s.release().unwrap();
    assert_eq!(s.value(), 2);
    // Past the initial value is allowed.
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!(s.value(), 4);
}

#[test]
fn s02_bounded_semaphore() {
    let s = BoundedSemaphore::new(2).unwrap();
    assert!(s.try_acquire());
    assert!(s.try_acquire());
    assert!(!s.try_acquire());
    s.release().unwrap();
    s.release().unwrap();
    assert!(matches!(s.release(), Err(Error::State(_))));
    assert_eq!(s.value(), 2);
    assert!(BoundedSemaphore::new(0).is_err());
}

#[test]
fn s03_semaphore_timeouts() {
    let s = Semaphore::new(0).unwrap();
    assert!(!s.try_acquire());
    assert!(!s.acquire_timeout(Duration::ZERO));
    let t = Instant::now();
    assert!(!s.acquire_timeout(Duration::from_millis(100)));
    let e = t.elapsed();
    assert!(e >= Duration::from_millis(100) && e < LONG);
}

fn take_units(s: Semaphore, n: u32) -> u32 {
    for _ in 0..n {
        s.acquire();
    }
    n
}

#[test]
fn semaphore_wakes_waiters_in_other_processes() {
    let s = Semaphore::new(0).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| start(Process::new(take_units, (s.clone(), 3))))
        .collect();
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(2));
        s.release().unwrap();
    }
    for p in ps {
        assert_eq!(finish(p), 3);
    }
    assert_eq!(s.value(), 0);
}

fn take_and_die(s: Semaphore, took: Event) {
    s.acquire();
    took.set();
    thread::sleep(LONG * 3);
}

#[test]
fn semaphore_with_dead_holder_does_not_hang_a_timed_waiter() {
    let s = Semaphore::new(1).unwrap();
    let took = Event::new().unwrap();
    let mut p = start(Process::new(take_and_die, (s.clone(), took.clone())));
    assert!(took.wait_timeout(LONG));
    p.kill().unwrap();
    assert!(!s.acquire_timeout(Duration::from_millis(100)));
    let _ = p.join_timeout(LONG);
}

// ---------------------------------------------------------------- Condition

/// A waiter: reports "sleeping", waits (with an optional timeout in ms),
/// then reports "woken" if notified.
fn cond_waiter(c: Condition, sleeping: Semaphore, woken: Semaphore, timeout_ms: u64) -> bool {
    let mut g = c.acquire().unwrap();
    sleeping.release().unwrap();
    let notified = if timeout_ms == 0 {
        g.wait().unwrap();
        true
    } else {
        g.wait_timeout(Duration::from_millis(timeout_ms)).unwrap()
    };
    if notified {
        woken.release().unwrap();
    }
    notified
}

/// `n` [`cond_waiter`] processes, started.
fn waiter_processes(
    n: usize,
    c: &Condition,
    sleeping: &Semaphore,
    woken: &Semaphore,
    timeout_ms: u64,
) -> Vec<Process<bool>> {
    (0..n)
        .map(|_| {
            start(Process::new(
                cond_waiter,
                (c.clone(), sleeping.clone(), woken.clone(), timeout_ms),
            ))
        })
        .collect()
}

fn settle_at(woken: &Semaphore, n: u32) {
    assert!(eventually(|| woken.value() >= n));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(woken.value(), n, "a notify woke more waiters than asked");
}

fn wait_sleeping(sleeping: &Semaphore, n: u32) {
    for _ in 0..n {
        assert!(sleeping.acquire_timeout(LONG));
    }
}

#[test]
fn c01_notify_wakes_exactly_one() {
    let c = Condition::new().unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let ps = waiter_processes(2, &c, &sleeping, &woken, 0);
    let ts: Vec<_> = (0..2)
        .map(|_| {
            let (c, s, w) = (c.clone(), sleeping.clone(), woken.clone());
            thread::spawn(move || cond_waiter(c, s, w, 0))
        })
        .collect();
    wait_sleeping(&sleeping, 4);
    settle_at(&woken, 0);
    for k in 1..=4 {
        assert_eq!(c.acquire().unwrap().notify(1), 1);
        settle_at(&woken, k);
    }
    // No sleepers remain.
    assert_eq!(c.acquire().unwrap().notify(1), 0);
    for p in ps {
        assert!(finish(p));
    }
    for t in ts {
        assert!(t.join().unwrap());
    }
}

#[test]
fn c02_notify_all_and_expired_waits() {
    let c = Condition::new().unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    // Three waiters whose timeouts expire: nobody is woken.
    let ps = waiter_processes(3, &c, &sleeping, &woken, 100);
    wait_sleeping(&sleeping, 3);
    for p in ps {
        assert!(!finish(p));
    }
    assert_eq!(woken.value(), 0);
    // Six waiters, one notify_all.
    let ps = waiter_processes(6, &c, &sleeping, &woken, 0);
    wait_sleeping(&sleeping, 6);
    assert_eq!(c.acquire().unwrap().notify_all(), 6);
    settle_at(&woken, 6);
    for p in ps {
        assert!(finish(p));
    }
}

#[test]
fn c03_notify_n() {
    let c = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let ps = waiter_processes(6, &c, &sleeping, &woken, 0);
    wait_sleeping(&sleeping, 6);
    assert_eq!(c.acquire().unwrap().notify(2), 2);
    settle_at(&woken, 2);
    assert_eq!(c.acquire().unwrap().notify(4), 4);
    settle_at(&woken, 6);
    // Extra notifies with nobody waiting do nothing.
    assert_eq!(c.acquire().unwrap().notify(3), 0);
    assert_eq!(c.acquire().unwrap().notify_all(), 0);
    for p in ps {
        assert!(finish(p));
    }
}

#[test]
fn c04_c07_wait_results() {
    let c = Condition::new().unwrap();
    let mut g = c.acquire().unwrap();
    assert!(!g.wait_timeout(Duration::ZERO).unwrap());
    let t = Instant::now();
    assert!(!g.wait_timeout(Duration::from_millis(100)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(100));
    drop(g);
    // Notified → true.
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let p = start(Process::new(
        cond_waiter,
        (c.clone(), sleeping.clone(), woken.clone(), 20_000),
    ));
    wait_sleeping(&sleeping, 1);
    c.acquire().unwrap().notify(1);
    assert!(finish(p));
}

fn bump_state(c: Condition, state: Value<u32>) {
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(5));
        let g = c.acquire().unwrap();
        state.set(state.get() + 1);
        g.notify_all();
    }
}

#[test]
fn c05_wait_for_across_processes() {
    let c = Condition::new().unwrap();
    let state = Value::new(0u32).unwrap();
    let mut g = c.acquire().unwrap();
    let p = start(Process::new(bump_state, (c.clone(), state.clone())));
    assert!(g.wait_for(|| state.get() == 4, Some(LONG)).unwrap());
    assert_eq!(state.get(), 4);
    drop(g);
    finish(p);
}

fn wait_for_never(c: Condition, state: Value<u32>) -> bool {
    let mut g = c.acquire().unwrap();
    let t = Instant::now();
    let r = g
        .wait_for(|| state.get() == 42, Some(Duration::from_millis(100)))
        .unwrap();
    !r && t.elapsed() >= Duration::from_millis(100)
}

#[test]
fn c06_wait_for_timeout() {
    let c = Condition::new().unwrap();
    let state = Value::new(0u32).unwrap();
    let p = start(Process::new(wait_for_never, (c.clone(), state.clone())));
    for _ in 0..5 {
        let g = c.acquire().unwrap();
        state.set(state.get() + 1);
        g.notify_all();
        drop(g);
        thread::sleep(Duration::from_millis(10));
    }
    assert!(finish(p));
}

// ---------------------------------------------------------------- Event

fn set_after(e: Event, ms: u64) {
    thread::sleep(Duration::from_millis(ms));
    e.set();
}

#[test]
fn e01_event() {
    let e = Event::new().unwrap();
    assert!(!e.is_set());
    assert!(!e.wait_timeout(Duration::ZERO));
    let t = Instant::now();
    assert!(!e.wait_timeout(Duration::from_millis(100)));
    assert!(t.elapsed() >= Duration::from_millis(100));
    let p = start(Process::new(set_after, (e.clone(), 50)));
    e.wait();
    assert!(e.is_set());
    // At once when already set.
    assert!(e.wait_timeout(Duration::ZERO));
    e.clear();
    assert!(!e.is_set());
    finish(p);
    assert_eq!(format!("{e:?}"), "<Event unset>");
}

// ---------------------------------------------------------------- Barrier

fn barrier_party(b: Barrier, passes: u32, lock: Lock, out: Connection) -> Vec<u32> {
    let mut indices = Vec::new();
    for i in 0..passes {
        indices.push(b.wait_timeout(LONG).unwrap());
        {
            let _g = lock.acquire().unwrap();
            out.send(&i).unwrap();
        }
        b.wait_timeout(LONG).unwrap();
    }
    indices
}

fn run_lockstep(parties: u32, passes: u32) {
    let b = Barrier::new(parties).unwrap();
    let lock = Lock::new().unwrap();
    let (rx, tx) = Pipe::one_way().unwrap();
    // Read while the parties send: the socket buffer holds only a few
    // hundred small messages.
    let total = parties * passes;
    let reader = thread::spawn(move || {
        (0..total)
            .map(|_| rx.recv::<u32>().unwrap())
            .collect::<Vec<_>>()
    });
    let ps: Vec<_> = (0..parties - 1)
        .map(|_| {
            start(Process::new(
                barrier_party,
                (b.clone(), passes, lock.clone(), tx.clone_for_test()),
            ))
        })
        .collect();
    let mine = barrier_party(b.clone(), passes, lock.clone(), tx);
    let mut all = vec![mine];
    for p in ps {
        all.push(finish(p));
    }
    // Messages arrive pass by pass: every party's pass i before any pass i+1.
    let got = reader.join().unwrap();
    let expect: Vec<u32> = (0..passes)
        .flat_map(|i| std::iter::repeat_n(i, parties as usize))
        .collect();
    assert_eq!(got, expect);
    // B03: each pass, the indices are a permutation: exactly one 0.
    for pass in 0..passes as usize {
        let mut idx: Vec<u32> = all.iter().map(|v| v[pass]).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..parties).collect::<Vec<_>>());
    }
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.is_broken());
}

trait CloneForTest {
    fn clone_for_test(&self) -> Self;
}

impl CloneForTest for Connection {
    /// A second handle to the same socket, through the codec.
    fn clone_for_test(&self) -> Self {
        let (a, b) = Pipe::new().unwrap();
        a.send(self).unwrap();
        b.recv().unwrap()
    }
}

#[test]
fn b01_b02_b03_lockstep() {
    run_lockstep(5, 2);
    run_lockstep(3, 10);
}

#[test]
fn b09_thousand_passes() {
    run_lockstep(3, 1000);
}

static PASSES: OnceLock<RawValue<u32>> = OnceLock::new();

fn count_pass() {
    let v = PASSES.get().expect("counter installed");
    v.set(v.get() + 1);
}

fn action_party(b: Barrier, counter: RawValue<u32>, passes: u32) {
    let _ = PASSES.set(counter);
    for _ in 0..passes {
        b.wait_timeout(LONG).unwrap();
    }
}

#[test]
fn b04_action_runs_once_per_pass() {
    let counter = RawValue::new(0u32).unwrap();
    let _ = PASSES.set(counter.clone());
    let b = Barrier::with_action(3, count_pass).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| start(Process::new(action_party, (b.clone(), counter.clone(), 20))))
        .collect();
    action_party(b.clone(), counter.clone(), 20);
    for p in ps {
        finish(p);
    }
    assert_eq!(counter.get(), 20);
}

fn expect_broken(b: Barrier, arrived: Semaphore) -> bool {
    arrived.release().unwrap();
    b.wait_timeout(LONG) == Err(BrokenBarrierError)
}

#[test]
fn b05_abort() {
    let b = Barrier::new(3).unwrap();
    let arrived = Semaphore::new(0).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| start(Process::new(expect_broken, (b.clone(), arrived.clone()))))
        .collect();
    wait_sleeping(&arrived, 2);
    assert!(eventually(|| b.n_waiting() == 2));
    b.abort();
    for p in ps {
        assert!(finish(p));
    }
    assert!(b.is_broken());
    assert_eq!(b.wait(), Err(BrokenBarrierError));
}

fn pass_once(b: Barrier) -> bool {
    b.wait_timeout(LONG).is_ok()
}

#[test]
fn b06_reset() {
    let b = Barrier::new(3).unwrap();
    let arrived = Semaphore::new(0).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| start(Process::new(expect_broken, (b.clone(), arrived.clone()))))
        .collect();
    wait_sleeping(&arrived, 2);
    assert!(eventually(|| b.n_waiting() == 2));
    b.reset();
    for p in ps {
        assert!(finish(p));
    }
    assert!(!b.is_broken());
    // All three can pass again; also after abort + reset.
    for round in 0..2 {
        if round == 1 {
            b.abort();
            b.reset();
        }
        let ps: Vec<_> = (0..2)
            .map(|_| start(Process::new(pass_once, (b.clone(),))))
            .collect();
        assert!(b.wait_timeout(LONG).is_ok());
        for p in ps {
            assert!(finish(p));
        }
    }
}

fn sleep_then_wait(b: Barrier, ms: u64) -> bool {
    thread::sleep(Duration::from_millis(ms));
    b.wait_timeout(LONG) == Err(BrokenBarrierError)
}

#[test]
fn b07_timeout_breaks_for_all() {
    let b = Barrier::new(3).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| start(Process::new(sleep_then_wait, (b.clone(), 300))))
        .collect();
    let t = Instant::now();
    assert_eq!(
        b.wait_timeout(Duration::from_millis(50)),
        Err(BrokenBarrierError)
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(b.is_broken());
    for p in ps {
        assert!(finish(p));
    }
    // The default timeout from the constructor behaves the same.
    let b = Barrier::with_timeout(2, None, Duration::from_millis(50)).unwrap();
    assert_eq!(b.timeout(), Some(Duration::from_millis(50)));
    assert_eq!(b.wait(), Err(BrokenBarrierError));
    assert!(b.is_broken());
}

#[test]
fn b08_single_party() {
    let b = Barrier::new(1).unwrap();
    assert_eq!(b.wait(), Ok(0));
    assert_eq!(b.wait(), Ok(0));
    assert_eq!(b.parties(), 1);
    assert!(Barrier::new(0).is_err());
}

fn wait_then_die(b: Barrier) {
    let _ = b.wait_timeout(LONG);
}

#[test]
fn barrier_with_dead_party_does_not_hang_a_timed_waiter() {
    let b = Barrier::new(3).unwrap();
    let mut p = start(Process::new(wait_then_die, (b.clone(),)));
    assert!(eventually(|| b.n_waiting() == 1));
    p.kill().unwrap();
    let _ = p.join_timeout(LONG);
    assert_eq!(
        b.wait_timeout(Duration::from_millis(100)),
        Err(BrokenBarrierError)
    );
}

// ---------------------------------------------------------------- misc

#[test]
fn primitives_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Lock>();
    check::<RLock>();
    check::<Semaphore>();
    check::<BoundedSemaphore>();
    check::<Condition>();
    check::<Event>();
    check::<Barrier>();
    check::<Value<u64>>();
    check::<Array<f64>>();
    check::<LockGuard<'static>>();
}

fn under_spawn(lock: Lock, e: Event, s: Semaphore) -> bool {
    let _g = lock.acquire().unwrap();
    s.release().unwrap();
    e.set();
    true
}

#[test]
fn works_under_spawn_start_method() {
    let (lock, e, s) = (
        Lock::new().unwrap(),
        Event::new().unwrap(),
        Semaphore::new(0).unwrap(),
    );
    let p = start(
        Process::new(under_spawn, (lock.clone(), e.clone(), s.clone()))
            .start_method(StartMethod::Spawn),
    );
    assert!(e.wait_timeout(LONG));
    assert!(s.acquire_timeout(LONG));
    assert!(finish(p));
    assert!(!lock.is_locked());
}

fn fork_child_locks(lock: Lock, v: Value<u64>) -> u64 {
    // Started with ForkServer: single-threaded here, so Fork is allowed.
    let mut p = Process::new(add_locked, (v.clone(), 1000)).start_method(StartMethod::Fork);
    p.start().unwrap();
    add_locked(v.clone(), 1000);
    p.join().unwrap();
    let _g = lock.acquire().unwrap();
    v.get()
}

#[test]
fn works_under_fork_start_method() {
    let lock = Lock::new().unwrap();
    let v = Value::new(0u64).unwrap();
    let p = start(Process::new(fork_child_locks, (lock.clone(), v.clone())));
    assert_eq!(finish(p), 2000);
}

#[test]
fn release_refuses_a_hold_by_a_live_guard() {
    // `Value::lock` hands out `&mut T`; if anybody could release the lock
    // under the guard, another process could then write the value at the
    // same time (a data race from safe code).
    let v = Value::new(0u64).unwrap();
    let mut g = v.lock().unwrap();
    assert!(matches!(v.get_lock().release(), Err(Error::State(_))));
    assert!(v.get_lock().is_locked());
    *g += 1;
    drop(g);
    // A leaked hold is still Python's release(), from any process.
    v.get_lock().acquire().unwrap().leak();
    let l = v.get_lock().clone();
    let mut p = Process::new(release_it, (l,));
    p.start().unwrap();
    p.join().unwrap();
    assert!(p.take_result().unwrap());
    assert!(!v.get_lock().is_locked());
    assert_eq!(v.get(), 1);
}

fn release_it(l: Lock) -> bool {
    l.release().is_ok()
}

fn hold_all(r: RLock, c: Condition, s: Semaphore, held: Event, done: Event) {
    let _r = r.acquire().unwrap();
    let _c = c.acquire().unwrap();
    s.acquire();
    held.set();
    done.wait_timeout(Duration::from_secs(60));
}

/// The `_deadline` forms against holders in another process: each returns
/// by its deadline with its kind's timeout result.
#[test]
fn deadline_forms_return_by_their_deadline() {
    let (r, c, s) = (
        RLock::new().unwrap(),
        Condition::new().unwrap(),
        Semaphore::new(1).unwrap(),
    );
    let (held, done) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p = Process::new(
        hold_all,
        (r.clone(), c.clone(), s.clone(), held.clone(), done.clone()),
    );
    p.start().unwrap();
    assert!(held.wait_timeout(Duration::from_secs(30)));
    let wait = Duration::from_millis(100);
    let start = Instant::now();
    assert!(matches!(
        r.acquire_deadline(Instant::now() + wait),
        Err(LockError::Timeout)
    ));
    assert!(matches!(
        c.acquire_deadline(Instant::now() + wait),
        Err(LockError::Timeout)
    ));
    assert!(!s.acquire_deadline(Instant::now() + wait));
    let b = Barrier::new(2).unwrap();
    assert!(b.wait_deadline(Instant::now() + wait).is_err());
    assert!(b.is_broken());
    let q = JoinableQueue::new().unwrap();
    q.put(1u8).unwrap();
    assert!(!q.join_deadline(Instant::now() + wait));
    assert!(!p.join_deadline(Instant::now() + wait).unwrap());
    let c2 = Condition::new().unwrap();
    let mut g = c2.acquire_deadline(Instant::now() + wait).unwrap();
    assert!(!g.wait_deadline(Instant::now() + wait).unwrap());
    drop(g);
    assert!(start.elapsed() < 7 * wait + Duration::from_secs(5));
    assert!(start.elapsed() >= 7 * wait);
    done.set();
    assert!(
        p.join_deadline(Instant::now() + Duration::from_secs(30))
            .unwrap()
    );
    // Released by the holder's exit: now they succeed.
    let _r = r.acquire_deadline(Instant::now() + wait).unwrap();
    let _c = c.acquire_deadline(Instant::now() + wait).unwrap();
}
