//! Locks, semaphores, events, barriers and shared state on a real
//! `redis-server` (feature `redis`).
#![cfg(feature = "redis")]

mod redis_support;

use multiproc::distributed::Backend;
use multiproc::{LockError, Process};
use redis_support::RedisServer;
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_millis(1000);

fn backend(url: &str) -> Backend {
    Backend::connect(url).unwrap().with_lease(LEASE)
}

#[test]
fn lock_try_timeout_release() {
    let s = RedisServer::start();
    let b = backend(&s.url());
    let lock = b.lock("l").unwrap();
    let other = b.lock("l").unwrap();
    assert!(!lock.is_locked().unwrap());
    let g = lock.try_acquire().unwrap().expect("free");
    assert!(lock.is_locked().unwrap());
    assert!(matches!(
        other.try_acquire().unwrap(),
        Err(LockError::WouldBlock)
    ));
    let t0 = Instant::now();
    assert!(matches!(
        other.acquire_timeout(Duration::from_millis(200)).unwrap(),
        Err(LockError::Timeout)
    ));
    assert!(t0.elapsed() < Duration::from_secs(3));
    // The lease is renewed while the guard lives.
    std::thread::sleep(LEASE * 3);
    assert!(matches!(
        other.try_acquire().unwrap(),
        Err(LockError::WouldBlock)
    ));
    g.release().unwrap();
    // Released normally: the next holder gets a plain guard.
    let g2 = other.acquire().unwrap().expect("released, not died");
    drop(g2);
    assert!(!lock.is_locked().unwrap());
}

fn hold_lock_forever(url: String) {
    let b = backend(&url);
    let lock = b.lock("l").unwrap();
    let _g = lock.acquire().unwrap().unwrap();
    b.event("held").unwrap().set().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn holder_killed_next_acquirer_gets_owner_died() {
    let s = RedisServer::start();
    let b = backend(&s.url());
    let mut p = Process::new(hold_lock_forever, (s.url(),));
    p.start().unwrap();
    assert!(
        b.event("held")
            .unwrap()
            .wait_timeout(Duration::from_secs(30))
            .unwrap()
    );
    let lock = b.lock("l").unwrap();
    assert!(matches!(
        lock.try_acquire().unwrap(),
        Err(LockError::WouldBlock)
    ));
    p.kill().unwrap();
    p.join().unwrap();
    match lock.acquire_timeout(LEASE * 10).unwrap() {
        Err(LockError::OwnerDied(g)) => drop(g),
        Ok(_) => panic!("a dead holder must be reported"),
        Err(_) => panic!("the lease of a dead holder must run out"),
    }
    // Released properly this time: the next one is clean.
    assert!(lock.try_acquire().unwrap().is_ok());
}

fn take_permit_forever(url: String) {
    let b = backend(&url);
    let sem = b.semaphore("s", 2).unwrap();
    assert!(sem.acquire_timeout(Duration::from_secs(10)).unwrap());
    b.event("took").unwrap().set().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn semaphore_counts_and_returns_permits_of_the_dead() {
    let s = RedisServer::start();
    let b = backend(&s.url());
    let sem = b.semaphore("s", 2).unwrap();
    assert_eq!(sem.value(), 2);
    let mut p = Process::new(take_permit_forever, (s.url(),));
    p.start().unwrap();
    assert!(
        b.event("took")
            .unwrap()
            .wait_timeout(Duration::from_secs(30))
            .unwrap()
    );
    assert!(sem.try_acquire().unwrap());
    assert!(!sem.try_acquire().unwrap());
    std::thread::sleep(LEASE * 2);
    assert!(
        !sem.try_acquire().unwrap(),
        "a live holder keeps its permit"
    );
    p.kill().unwrap();
    p.join().unwrap();
    assert!(sem.acquire_timeout(LEASE * 10).unwrap());
    sem.release().unwrap();
    sem.release().unwrap();
    assert!(sem.release().is_err());
}

fn barrier_party(url: String) -> usize {
    backend(&url)
        .barrier("b", 3)
        .unwrap()
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
}

#[test]
fn barrier_and_event_across_processes() {
    let s = RedisServer::start();
    let b = backend(&s.url());
    let mut ps: Vec<_> = (0..2)
        .map(|_| {
            let mut p = Process::new(barrier_party, (s.url(),));
            p.start().unwrap();
            p
        })
        .collect();
    let mine = b
        .barrier("b", 3)
        .unwrap()
        .wait_timeout(Duration::from_secs(60))
        .unwrap();
    let mut idx = vec![mine];
    for p in &mut ps {
        p.join().unwrap();
        idx.push(p.take_result().unwrap());
    }
    idx.sort();
    assert_eq!(idx, [0, 1, 2]);
    // A timeout breaks the barrier.
    let lonely = b.barrier("lonely", 2).unwrap();
    assert!(lonely.wait_timeout(Duration::from_millis(100)).is_err());
    assert!(lonely.wait().is_err());
    lonely.reset().unwrap();

    let e = b.event("e").unwrap();
    assert!(!e.is_set().unwrap());
    assert!(!e.wait_timeout(Duration::from_millis(50)).unwrap());
    e.set().unwrap();
    assert!(e.wait_timeout(Duration::from_millis(50)).unwrap());
    e.clear().unwrap();
    assert!(!e.is_set().unwrap());
}

#[test]
fn dict_list_value_namespace() {
    let s = RedisServer::start();
    let b = backend(&s.url());
    let d = b.dict::<String, Vec<u32>>("d").unwrap();
    assert!(d.is_empty().unwrap());
    d.set(&"a".into(), &vec![1, 2]).unwrap();
    d.set(&"b".into(), &vec![]).unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), Some(vec![1, 2]));
    assert!(d.contains_key(&"b".into()).unwrap());
    assert_eq!(d.len().unwrap(), 2);
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(d.pop(&"a".into()).unwrap(), Some(vec![1, 2]));
    assert_eq!(d.pop(&"a".into()).unwrap(), None);
    assert_eq!(d.items().unwrap(), [("b".to_string(), vec![])]);
    assert_eq!(d.values().unwrap().len(), 1);
    d.clear().unwrap();
    assert_eq!(d.len().unwrap(), 0);

    let l = b.list::<(u8, String)>("l").unwrap();
    l.append(&(1, "x".into())).unwrap();
    l.extend(&[(2, "y".into()), (3, "z".into())]).unwrap();
    assert_eq!(l.len().unwrap(), 3);
    assert_eq!(l.get(-1).unwrap(), Some((3, "z".into())));
    l.set(0, &(9, "w".into())).unwrap();
    assert!(l.set(10, &(0, String::new())).is_err());
    assert_eq!(l.pop().unwrap(), Some((3, "z".into())));
    assert_eq!(l.to_vec().unwrap(), [(9, "w".into()), (2, "y".into())]);
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());

    let v = b.value("v", &1u64).unwrap();
    assert_eq!(v.get().unwrap(), 1);
    v.set(&5).unwrap();
    // Opening again keeps the existing value.
    assert_eq!(b.value("v", &1u64).unwrap().get().unwrap(), 5);

    let ns = b.namespace("n").unwrap();
    ns.setattr("workers", &4u32).unwrap();
    ns.setattr("name", &"run-1").unwrap();
    assert_eq!(ns.getattr::<u32>("workers").unwrap(), Some(4));
    assert_eq!(
        ns.getattr::<String>("name").unwrap().as_deref(),
        Some("run-1")
    );
    assert!(ns.delattr("workers").unwrap());
    assert_eq!(ns.getattr::<u32>("workers").unwrap(), None);
    // A value of another type is an error, not garbage.
    assert!(ns.getattr::<bool>("name").is_err());
}
