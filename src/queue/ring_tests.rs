//! Thread-level tests of the queue protocol in one process, on small rings
//! so that records wrap and producers wait for room all the time (the
//! acceptance tests in `tests/queue.rs` cover real processes).

use super::{Core, PutFail};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

fn ring(cap: u64, maxsize: u64) -> Arc<Core> {
    Arc::new(Core::create(cap, maxsize, false, 0).expect("queue"))
}

/// Item `n` of producer `p`: its numbers, then a filler whose length varies
/// (0 to 99 bytes), so records land at every offset of the ring and some
/// are larger than a 64-byte ring (streamed in chunks).
fn item(p: u8, n: u32) -> Vec<u8> {
    let mut v = vec![p];
    v.extend_from_slice(&n.to_le_bytes());
    let fill = (n.wrapping_mul(37) % 100) as usize;
    v.extend((0..fill).map(|k| (k as u8) ^ (n as u8) ^ p));
    v
}

fn parse(v: &[u8]) -> (u8, u32) {
    let n = u32::from_le_bytes(v[1..5].try_into().unwrap());
    assert_eq!(v, item(v[0], n), "item {n} of producer {} corrupted", v[0]);
    (v[0], n)
}

fn put(q: &Core, bytes: &[u8]) {
    match q.put(bytes, &[], None) {
        Ok(()) => {}
        Err(_) => panic!("put failed"),
    }
}

fn get(q: &Core) -> Vec<u8> {
    match q.get(Some(Instant::now() + Duration::from_secs(30)), |b, _| {
        Ok(b.to_vec())
    }) {
        Ok(v) => v,
        Err(_) => panic!("get failed or timed out"),
    }
}

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// One producer, one consumer, a 64-byte ring: every item arrives once,
/// whole, in order, across thousands of wrap-arounds.
#[test]
fn one_to_one_in_order_across_wraps() {
    const N: u32 = 5_000;
    let q = ring(64, 0);
    let p = q.clone();
    let producer = thread::spawn(move || (0..N).for_each(|n| put(&p, &item(0, n))));
    for n in 0..N {
        assert_eq!(parse(&get(&q)), (0, n));
    }
    producer.join().unwrap();
    assert!(q.is_empty());
    assert_eq!(q.qsize(), 0);
    let s = q.st();
    assert!(
        s.tail.load(Ordering::Relaxed) > 100 * q.ring_size(),
        "the ring wrapped"
    );
}

/// Three producers, two consumers, a 128-byte ring: each producer's items
/// arrive in its order at each consumer, and together exactly once.
#[test]
fn many_to_many_no_loss_no_duplicate() {
    const N: u32 = 2_000;
    const PRODUCERS: u8 = 3;
    let q = ring(128, 0);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || (0..N).for_each(|n| put(&q, &item(p, n))))
        })
        .collect();
    let total = N as usize * PRODUCERS as usize;
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let (q, taken) = (q.clone(), taken.clone());
            thread::spawn(move || {
                let mut got = Vec::new();
                while taken.fetch_add(1, Ordering::Relaxed) < total {
                    got.push(parse(&get(&q)));
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut seen = vec![vec![false; N as usize]; PRODUCERS as usize];
    for c in consumers {
        let got = c.join().unwrap();
        let mut last = [None::<u32>; PRODUCERS as usize];
        for (p, n) in got {
            assert!(
                last[p as usize] < Some(n),
                "producer {p}'s items out of order"
            );
            last[p as usize] = Some(n);
            assert!(!seen[p as usize][n as usize], "item {n} of {p} twice");
            seen[p as usize][n as usize] = true;
        }
    }
    assert!(seen.iter().flatten().all(|&s| s), "items lost");
    assert!(q.is_empty());
}

/// A consumer sleeping on an empty queue is counted in `get_waiters` and
/// woken by the next put; the count goes back to zero.
#[test]
fn sleeping_consumer_counted_and_woken() {
    let q = ring(64, 0);
    let c = q.clone();
    let consumer = thread::spawn(move || get(&c));
    eventually("the consumer to sleep", || {
        q.st().get_waiters.load(Ordering::SeqCst) == 1
    });
    let seq = q.st().data_seq.load(Ordering::SeqCst);
    put(&q, &item(0, 1));
    assert_eq!(parse(&consumer.join().unwrap()), (0, 1));
    assert_ne!(q.st().data_seq.load(Ordering::SeqCst), seq, "the put woke");
    assert_eq!(q.st().get_waiters.load(Ordering::SeqCst), 0);
}

/// A producer sleeping for room in a full ring is counted in `put_waiters`
/// and woken by the get that frees it.
#[test]
fn sleeping_producer_counted_and_woken() {
    let q = ring(64, 0);
    // Items 0, 100 and 200 have no filler: 5 bytes, 32-byte records, so
    // two fill the ring.
    put(&q, &item(0, 0));
    put(&q, &item(0, 100));
    let p = q.clone();
    let producer = thread::spawn(move || put(&p, &item(0, 200)));
    eventually("the producer to sleep", || {
        q.st().put_waiters.load(Ordering::SeqCst) == 1
    });
    let seq = q.st().space_seq.load(Ordering::SeqCst);
    assert_eq!(parse(&get(&q)), (0, 0));
    producer.join().unwrap();
    assert_ne!(q.st().space_seq.load(Ordering::SeqCst), seq, "the get woke");
    assert_eq!(q.st().put_waiters.load(Ordering::SeqCst), 0);
    assert_eq!(parse(&get(&q)), (0, 100));
    assert_eq!(parse(&get(&q)), (0, 200));
}

/// A bounded queue: a producer waits for an item slot, not for room.
#[test]
fn bounded_queue_waits_for_a_slot() {
    let q = ring(4096, 2);
    put(&q, &item(0, 0));
    put(&q, &item(0, 1));
    assert!(matches!(
        q.put(&item(0, 2), &[], Some(Instant::now())),
        Err(PutFail::Full)
    ));
    let p = q.clone();
    let producer = thread::spawn(move || put(&p, &item(0, 2)));
    eventually("the producer to sleep", || {
        q.st().put_waiters.load(Ordering::SeqCst) == 1
    });
    assert_eq!(parse(&get(&q)), (0, 0));
    producer.join().unwrap();
    assert_eq!(q.qsize(), 2);
    assert_eq!(parse(&get(&q)), (0, 1));
    assert_eq!(parse(&get(&q)), (0, 2));
}
