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

/// Calls of each command the server has run so far (INFO commandstats).
fn commands(url: &str) -> std::collections::BTreeMap<String, u64> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    redis_support::command_calls(&mut c)
}

/// The commands run between two [`commands`] snapshots (INFO and the
/// connection set-up of the snapshots left out).
struct Used(std::collections::BTreeMap<String, u64>);

impl Used {
    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Scripts run and blocking reads: one each per wake or per second of
    /// waiting. (The totals count the commands inside scripts too.)
    fn round_trips(&self) -> u64 {
        ["evalsha", "eval", "xread"]
            .iter()
            .map(|k| self.0.get(*k).copied().unwrap_or(0))
            .sum()
    }

    fn check(&self, what: &str) {
        assert!(
            self.round_trips() <= 15 && self.total() <= 45,
            "{what} wait ran {self}"
        );
    }
}

impl std::fmt::Display for Used {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} commands: {:?}", self.total(), self.0)
    }
}

/// Runs `wait` while another thread ends it after `HOLD` with `end`;
/// returns the server commands run meanwhile (connection set-up left out).
/// A wait that polled (every 50 ms at most, as before) runs about 60
/// commands in 3 s; one that blocks on the server runs one per second at
/// most while nothing happens.
fn commands_during(url: &str, wait: impl FnOnce(), end: impl FnOnce() + Send) -> Used {
    const HOLD: Duration = Duration::from_secs(3);
    let before = commands(url);
    std::thread::scope(|sc| {
        sc.spawn(move || {
            std::thread::sleep(HOLD);
            end();
        });
        wait();
    });
    let after = commands(url);
    Used(
        after
            .into_iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "info" | "auth" | "client|setinfo" | "hello" | "select"
                )
            })
            .map(|(k, v)| {
                let d = v - before.get(&k).copied().unwrap_or(0);
                (k, d)
            })
            .filter(|(_, d)| *d > 0)
            .collect(),
    )
}

#[test]
fn waits_block_on_the_server_and_do_not_poll() {
    let s = RedisServer::start();
    let url = s.url();
    // The default lease (10 s): no renewal during the 3 s.
    let b = Backend::connect(&url).unwrap();
    // Connections made up front, so that connecting is not counted.
    let (e1, e2) = (b.event("we").unwrap(), b.event("we").unwrap());
    e1.clear().unwrap();
    e2.clear().unwrap();
    let n = commands_during(
        &url,
        || assert!(e1.wait_timeout(Duration::from_secs(30)).unwrap()),
        || e2.set().unwrap(),
    );
    n.check("event");

    let (l1, l2) = (b.lock("wl").unwrap(), b.lock("wl").unwrap());
    assert!(!l1.is_locked().unwrap());
    let g = l2.acquire().unwrap().unwrap();
    let n = commands_during(
        &url,
        || {
            let g = l1.acquire_timeout(Duration::from_secs(30)).unwrap();
            assert!(g.is_ok(), "released, not died");
        },
        || drop(g),
    );
    n.check("lock");

    let (s1, s2) = (b.semaphore("ws", 1).unwrap(), b.semaphore("ws", 1).unwrap());
    assert!(s2.try_acquire().unwrap());
    assert_eq!(s1.value(), 1);
    let n = commands_during(
        &url,
        || assert!(s1.acquire_timeout(Duration::from_secs(30)).unwrap()),
        || s2.release().unwrap(),
    );
    n.check("semaphore");
    s1.release().unwrap();

    let (b1, b2) = (b.barrier("wb", 2).unwrap(), b.barrier("wb", 2).unwrap());
    b2.reset().unwrap();
    let n = commands_during(
        &url,
        || assert_eq!(b1.wait_timeout(Duration::from_secs(30)).unwrap(), 1),
        || assert_eq!(b2.wait().unwrap(), 0),
    );
    n.check("barrier");
}

#[test]
fn barrier_reset_breaks_the_waiters() {
    let s = RedisServer::start();
    let b = backend(&s.url());
    let (b1, b2) = (b.barrier("r", 2).unwrap(), b.barrier("r", 2).unwrap());
    std::thread::scope(|sc| {
        let h = sc.spawn(|| b1.wait_timeout(Duration::from_secs(30)));
        // Reset once the waiter has arrived.
        let t0 = Instant::now();
        while redis_arrived(&s.url()) < 1 {
            assert!(t0.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(10));
        }
        b2.reset().unwrap();
        let r = h.join().unwrap();
        assert!(r.is_err(), "{r:?}");
    });
    // Usable again after the reset.
    std::thread::scope(|sc| {
        let h = sc.spawn(|| b1.wait_timeout(Duration::from_secs(30)).unwrap());
        let mine = b2.wait_timeout(Duration::from_secs(30)).unwrap();
        let mut idx = [mine, h.join().unwrap()];
        idx.sort();
        assert_eq!(idx, [0, 1]);
    });
}

/// Parties waiting at the barrier `r`.
fn redis_arrived(url: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    redis::cmd("HGET")
        .arg("multiproc:barrier:r")
        .arg("n")
        .query::<Option<i64>>(&mut c)
        .unwrap()
        .unwrap_or(0)
}
