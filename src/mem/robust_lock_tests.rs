//! Thread-level tests of the lock protocol in one process (the acceptance
//! tests in `tests/sync.rs` cover real processes and SIGKILL).

use super::{Acquired, OWNER_MASK, RawLock, START_SHIFT, WAITERS, me};
use crate::sys::{self, Ident};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Polls `cond` for up to 10 s.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The identity of a process that had our pid before us: same pid, another
/// start time. `is_alive` must call it dead (this is the pid-reuse case).
fn dead_owner() -> u64 {
    let Ident { pid, start } = sys::self_ident();
    let other = if start > 1 { start - 1 } else { start + 1 };
    let owner = (other << START_SHIFT) | u64::from(pid);
    assert!(
        !sys::is_alive(super::owner_of(owner)),
        "a start time other than ours must read as dead (needs /proc)"
    );
    owner
}

#[test]
fn lock_excludes_threads() {
    const THREADS: usize = 4;
    const ROUNDS: u64 = 20_000;
    let lock = Arc::new(RawLock::default());
    // Incremented with a separate load and store: any overlap of two
    // critical sections loses an update.
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (lock, counter, start) = (lock.clone(), counter.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    assert_eq!(lock.lock(None), Some(Acquired::Clean));
                    let v = counter.load(Ordering::Relaxed);
                    std::hint::spin_loop();
                    counter.store(v + 1, Ordering::Relaxed);
                    lock.unlock();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.load(Ordering::Relaxed), THREADS as u64 * ROUNDS);
    assert!(!lock.is_locked());
}

/// A waiter announces itself with `WAITERS` before it sleeps; the unlock
/// that sees the bit bumps `wake` and the waiter gets the lock, keeping
/// the bit (others may sleep behind it).
#[test]
fn waiter_sets_bit_and_unlock_wakes_it() {
    let lock = Arc::new(RawLock::default());
    assert!(lock.try_lock_fast());
    assert_eq!(lock.state.load(Ordering::Relaxed), me());
    let waiter = {
        let lock = lock.clone();
        thread::spawn(move || {
            let how = lock.lock(None);
            let state = lock.state.load(Ordering::Relaxed);
            lock.unlock();
            (how, state)
        })
    };
    eventually("the waiter's bit", || {
        lock.state.load(Ordering::Relaxed) == me() | WAITERS
    });
    let wake = lock.wake.load(Ordering::Relaxed);
    lock.unlock();
    let (how, state) = waiter.join().unwrap();
    assert_eq!(how, Some(Acquired::Clean));
    assert_eq!(state, me() | WAITERS);
    // Our unlock bumped `wake` once, and so did the waiter's (it kept the
    // bit, not knowing whether anybody else slept).
    assert_eq!(lock.wake.load(Ordering::Relaxed), wake.wrapping_add(2));
    assert!(!lock.is_locked());
}

/// An unlock without the bit does not touch `wake` (the uncontended path
/// makes no system call).
#[test]
fn uncontended_unlock_does_not_wake() {
    let lock = RawLock::default();
    for _ in 0..3 {
        assert_eq!(lock.lock(None), Some(Acquired::Clean));
        assert!(lock.held_by_me());
        assert_eq!(lock.owner_pid(), Some(sys::self_ident().pid));
        lock.unlock();
    }
    assert_eq!(lock.wake.load(Ordering::Relaxed), 0);
    assert_eq!(lock.owner_pid(), None);
}

/// A deadline passes while the lock stays held: `None`, by the deadline
/// (plus a generous margin), and the lock is untouched.
#[test]
fn timeout_while_held() {
    let lock = RawLock::default();
    assert!(lock.try_lock_fast());
    let t0 = Instant::now();
    let other = thread::scope(|s| {
        s.spawn(|| lock.lock(Some(Instant::now() + Duration::from_millis(150))))
            .join()
            .unwrap()
    });
    assert_eq!(other, None);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(
        took < Duration::from_millis(150) + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(lock.state.load(Ordering::Relaxed) & OWNER_MASK, me());
    lock.unlock();
    assert_eq!(lock.lock(Some(Instant::now())), Some(Acquired::Clean));
}

/// The owner is a process that no longer runs: `try_lock` takes the lock
/// over at once, `OwnerDied`, keeping `WAITERS`.
#[test]
fn try_lock_takes_over_from_dead_owner() {
    let lock = RawLock::default();
    let dead = dead_owner();
    lock.state.store(dead, Ordering::Relaxed);
    assert!(lock.is_locked());
    assert!(!lock.try_lock_fast());
    assert_eq!(lock.try_lock(), Some(Acquired::OwnerDied));
    assert_eq!(lock.state.load(Ordering::Relaxed), me() | WAITERS);
    lock.unlock();
    assert_eq!(lock.try_lock(), Some(Acquired::Clean));
    lock.unlock();
}

/// A lock taken over from a dead owner and given back unused with
/// `restore_dead` (a dropped async acquire) still tells the next acquirer,
/// asleep or not, that its owner died.
#[test]
fn restore_dead_keeps_the_news_for_the_next_acquirer() {
    let lock = Arc::new(RawLock::default());
    let dead = dead_owner();
    lock.state.store(dead, Ordering::Relaxed);
    assert_eq!(lock.try_lock_noting(), Some((Acquired::OwnerDied, dead)));
    lock.restore_dead(dead);
    assert_eq!(lock.try_lock_noting(), Some((Acquired::OwnerDied, dead)));
    // A sleeper behind it takes it over within a slice or so.
    let l = lock.clone();
    let sleeper = thread::spawn(move || l.lock_noting(None));
    thread::sleep(Duration::from_millis(20));
    lock.restore_dead(dead);
    assert_eq!(sleeper.join().unwrap(), Some((Acquired::OwnerDied, dead)));
    lock.unlock();
    assert_eq!(lock.lock_noting(None), Some((Acquired::Clean, 0)));
    lock.unlock();
}

/// Two threads sleep behind an owner that is dead: within a slice or so one
/// takes the lock over (`OwnerDied`), and the other gets it after it,
/// `Clean` (its wake is passed on).
#[test]
fn sleepers_behind_dead_owner_hand_over() {
    let lock = Arc::new(RawLock::default());
    lock.state.store(dead_owner(), Ordering::Relaxed);
    let t0 = Instant::now();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let lock = lock.clone();
            thread::spawn(move || {
                let how = lock.lock(Some(Instant::now() + Duration::from_secs(10)));
                thread::sleep(Duration::from_millis(20));
                lock.unlock();
                how
            })
        })
        .collect();
    let mut got: Vec<_> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
    got.sort_by_key(|a| *a == Some(Acquired::Clean));
    assert_eq!(got, [Some(Acquired::OwnerDied), Some(Acquired::Clean)]);
    assert!(t0.elapsed() < super::SLICE * 2 + Duration::from_secs(2));
    assert!(!lock.is_locked());
}

/// A thread that exits holding the lock leaves it held: the owner is this
/// process, which still runs (lock owners are processes, not threads).
#[test]
fn thread_exit_is_not_owner_death() {
    let lock = Arc::new(RawLock::default());
    {
        let lock = lock.clone();
        thread::spawn(move || assert_eq!(lock.lock(None), Some(Acquired::Clean)))
            .join()
            .unwrap();
    }
    assert!(lock.held_by_me());
    assert_eq!(lock.try_lock(), None);
    assert_eq!(lock.lock(Some(Instant::now() + super::SLICE * 2)), None);
    lock.unlock();
}
