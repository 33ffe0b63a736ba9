//! Loom models of the lock protocol (`cargo test --lib` with
//! `RUSTFLAGS="--cfg loom"`, see `.ci/run`). Each thread is a model
//! process (its own identity for the state word); the futex and the
//! liveness check are the model kernel of `sync/shim.rs`, where a sleeper
//! that misses its wake stays asleep for ever, which loom reports.
#![allow(unsafe_code)]

use super::{Acquired, RawLock};
use crate::mem::shim::model;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

struct Shared {
    lock: RawLock,
    /// Written under the lock only: loom reports any access that is not
    /// ordered after the previous holder's.
    data: UnsafeCell<u32>,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        lock: RawLock::default(),
        data: UnsafeCell::new(0),
    })
}

/// Increments `data` under the lock; returns how the lock was taken.
fn locked_increment(s: &Shared) -> Acquired {
    let how = s.lock.lock(None).expect("no deadline");
    assert!(s.lock.held_by_me());
    // SAFETY: (model) the lock is held; loom checks the access.
    s.data.with_mut(|d| unsafe { *d += 1 });
    s.lock.unlock();
    how
}

/// Three processes take the lock in turn: the critical sections never
/// overlap, and every sleeper is woken (the `WAITERS` bit and the wake
/// sequence are exercised with two sleepers at once).
#[test]
fn loom_lock_excludes_and_wakes() {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(|| {
        let s = shared();
        let others: Vec<_> = (0..2)
            .map(|i| {
                let s = s.clone();
                thread::spawn(move || {
                    model::be(2 + i);
                    assert_eq!(locked_increment(&s), Acquired::Clean);
                })
            })
            .collect();
        assert_eq!(locked_increment(&s), Acquired::Clean);
        for t in others {
            t.join().unwrap();
        }
        assert!(!s.lock.is_locked());
        // SAFETY: (model) every other thread was joined.
        assert_eq!(s.data.with(|d| unsafe { *d }), 3);
    });
}

/// A process dies holding the lock (and with it, possibly, sleepers
/// behind it): exactly one of the two waiters takes it over with
/// `OwnerDied`, sees what the dead owner wrote, and the other one still
/// gets the lock afterwards (its wake is not lost).
#[test]
fn loom_lock_owner_died_hand_over() {
    loom::model(|| {
        let s = shared();
        let owner = {
            let s = s.clone();
            thread::spawn(move || {
                model::be(2);
                assert_eq!(s.lock.lock(None), Some(Acquired::Clean));
                // SAFETY: (model) the lock is held.
                s.data.with_mut(|d| unsafe { *d += 1 });
                model::die();
            })
        };
        let waiter = {
            let s = s.clone();
            thread::spawn(move || {
                model::be(3);
                locked_increment(&s)
            })
        };
        model::be(4);
        let mine = locked_increment(&s);
        let theirs = waiter.join().unwrap();
        owner.join().unwrap();
        // The dead owner may not even have taken the lock before both
        // waiters were done; if it did, exactly one waiter recovered.
        let recovered = [mine, theirs]
            .iter()
            .filter(|a| **a == Acquired::OwnerDied)
            .count();
        assert!(recovered <= 1);
        // SAFETY: (model) every other thread was joined.
        let total = s.data.with(|d| unsafe { *d });
        assert_eq!(total, 3);
        assert_eq!(s.lock.is_locked(), recovered == 0);
    });
}
