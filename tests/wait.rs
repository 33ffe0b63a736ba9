//! `connection::wait` over pipes, Listener connections, listeners and
//! process sentinels.
//!
//! Scenario N14 is ported from CPython's `Lib/test/_test_multiprocessing.py`
//! (`TestWait.test_wait`, `test_wait_slow`, `test_wait_socket`,
//! `test_wait_socket_slow`, `test_wait_timeout`, `test_wait_integer`,
//! `test_neg_timeout`) in Rust terms: indices instead of objects, and no
//! negative timeouts (`Duration::ZERO` plays their part).

use multiproc::connection::wait;
use multiproc::{Client, Connection, Listener, Pipe, Process, Waitable};
use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"wait tests";

/// Sends `count` numbered values slowly, then a last `u32::MAX`.
fn slow_sender(conn: Connection, id: u32, count: u32) -> u32 {
    for i in 0..count {
        sleep(Duration::from_millis(3 + 2 * u64::from(id)));
        conn.send(&(id, i)).unwrap();
    }
    conn.send(&(id, u32::MAX)).unwrap();
    count
}

/// The same through a Listener/Client connection.
fn slow_client(addr: String, id: u32, count: u32) -> u32 {
    let conn = Client::connect(addr.as_str(), Some(KEY)).unwrap();
    slow_sender(conn, id, count)
}

fn sleeper(ms: u64) -> u64 {
    sleep(Duration::from_millis(ms));
    ms
}

/// N14: several slow senders in child processes, over pipes and a socket,
/// plus their sentinels: `wait` hands out every message, in order per
/// sender, and reports every exit.
#[test]
fn wait_collects_everything_from_slow_senders() {
    const PIPES: u32 = 3;
    const COUNT: u32 = 20;
    let mut readers = Vec::new();
    let mut procs = Vec::new();
    for id in 0..PIPES {
        let (r, w) = Pipe::one_way().unwrap();
        let mut p = Process::new(slow_sender, (w, id, COUNT));
        p.start().unwrap();
        readers.push(r);
        procs.push(p);
    }
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let mut p = Process::new(slow_client, (listener.address().to_string(), PIPES, COUNT));
    p.start().unwrap();
    procs.push(p);
    assert_eq!(wait([&listener], Some(LIMIT)).unwrap(), [0]);
    readers.push(listener.accept().unwrap());

    let sentinels: Vec<_> = procs.iter().map(|p| p.sentinel().unwrap()).collect();
    let mut got: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut open_readers: Vec<usize> = (0..readers.len()).collect();
    let mut running: Vec<usize> = (0..sentinels.len()).collect();
    let start = Instant::now();
    while !open_readers.is_empty() || !running.is_empty() {
        assert!(start.elapsed() < LIMIT, "wait loop did not finish");
        let mut objects: Vec<&dyn Waitable> = Vec::new();
        for &i in &open_readers {
            objects.push(&readers[i]);
        }
        for &i in &running {
            objects.push(&sentinels[i]);
        }
        let ready = wait(objects.iter().copied(), Some(LIMIT)).unwrap();
        assert!(!ready.is_empty(), "wait timed out with senders still busy");
        let (mut done_r, mut done_s) = (Vec::new(), Vec::new());
        for k in ready {
            if k < open_readers.len() {
                let i = open_readers[k];
                let (id, n): (u32, u32) = readers[i].recv().unwrap();
                if n == u32::MAX {
                    done_r.push(i);
                } else {
                    got.entry(id).or_default().push(n);
                }
            } else {
                done_s.push(running[k - open_readers.len()]);
            }
        }
        open_readers.retain(|i| !done_r.contains(i));
        running.retain(|i| !done_s.contains(i));
    }
    let want: Vec<u32> = (0..COUNT).collect();
    assert_eq!(got.len(), PIPES as usize + 1);
    for (id, seq) in &got {
        assert_eq!(seq, &want, "sender {id}");
    }
    drop(sentinels);
    for mut p in procs {
        p.join().unwrap();
        assert_eq!(p.take_result().unwrap(), COUNT);
    }
}

/// A sentinel is not ready while the process runs and is ready once it has
/// ended; `wait` then returns without a timeout.
#[test]
fn sentinel_is_ready_when_the_process_ends() {
    let mut p = Process::new(sleeper, (300u64,));
    p.start().unwrap();
    let s = p.sentinel().unwrap();
    assert!(wait([&s], Some(Duration::ZERO)).unwrap().is_empty());
    assert_eq!(wait([&s], None).unwrap(), [0]);
    assert_eq!(wait([&s], Some(Duration::ZERO)).unwrap(), [0]);
    assert!(
        p.join_timeout(Duration::ZERO).unwrap(),
        "sentinel ready but not joinable"
    );
    assert_eq!(p.take_result().unwrap(), 300);
}

/// Nothing ready: an empty result after about the timeout.
#[test]
fn timeout_gives_an_empty_result() {
    let (a, _b) = Pipe::new().unwrap();
    let (c, _d) = Pipe::new().unwrap();
    let t = Duration::from_millis(200);
    let start = Instant::now();
    assert!(wait([&a, &c], Some(t)).unwrap().is_empty());
    let took = start.elapsed();
    assert!(took >= t, "returned early after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// A zero timeout only looks: at once, ready or not.
#[test]
fn zero_timeout_returns_at_once() {
    let (a, b) = Pipe::new().unwrap();
    let start = Instant::now();
    for _ in 0..100 {
        assert!(wait([&a, &b], Some(Duration::ZERO)).unwrap().is_empty());
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    b.send_bytes(b"x").unwrap();
    assert_eq!(wait([&a, &b], Some(Duration::ZERO)).unwrap(), [0]);
    // Nothing to wait on, no timeout: nothing can happen, return at once.
    let none: [&Connection; 0] = [];
    assert!(wait(none, None).unwrap().is_empty());
}

/// A whole message already read into the connection's buffer counts as
/// ready although its descriptor has nothing more to read.
#[test]
fn buffered_messages_count_as_ready() {
    for (r, w) in [Pipe::new().unwrap(), listener_pair()] {
        w.send_bytes(b"one").unwrap();
        w.send_bytes(b"two").unwrap();
        w.send_bytes(b"").unwrap();
        // Give all three time to arrive so that one read takes them all.
        assert!(r.poll(Some(LIMIT)).unwrap());
        sleep(Duration::from_millis(50));
        assert_eq!(r.recv_bytes().unwrap(), b"one");
        assert_eq!(wait([&r], Some(Duration::ZERO)).unwrap(), [0]);
        assert_eq!(r.recv_bytes().unwrap(), b"two");
        assert_eq!(wait([&r], Some(Duration::ZERO)).unwrap(), [0]);
        assert_eq!(r.recv_bytes().unwrap(), b"");
        assert!(wait([&r], Some(Duration::ZERO)).unwrap().is_empty());
    }
}

/// A peer that hung up makes its end ready; the receive then says EOF.
#[test]
fn hung_up_peer_is_ready() {
    for (r, w) in [Pipe::new().unwrap(), listener_pair()] {
        let (other, _keep) = Pipe::new().unwrap();
        drop(w);
        assert_eq!(wait([&other, &r], Some(LIMIT)).unwrap(), [1]);
        assert!(r.recv_bytes().unwrap_err().is_eof());
    }
}

/// A listener is ready when a client is waiting to be accepted; objects of
/// different types mix as `&dyn Waitable`.
#[test]
fn listener_ready_when_a_client_connects() {
    let l = Listener::bind(
        format!("@multiproc-wait-{}", std::process::id()).as_str(),
        None,
    )
    .unwrap();
    let (a, _b) = Pipe::new().unwrap();
    let objects: [&dyn Waitable; 2] = [&a, &l];
    assert!(wait(objects, Some(Duration::ZERO)).unwrap().is_empty());
    let c = Client::connect(l.address(), None).unwrap();
    assert_eq!(wait(objects, Some(LIMIT)).unwrap(), [1]);
    let s = l.accept().unwrap();
    c.send(&7u8).unwrap();
    let conns = [s];
    assert_eq!(wait(&conns, Some(LIMIT)).unwrap(), [0]);
    assert_eq!(conns[0].recv::<u8>().unwrap(), 7);
}

fn listener_pair() -> (Connection, Connection) {
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let addr = l.address().clone();
    let t = std::thread::spawn(move || Client::connect(addr, Some(KEY)).unwrap());
    let server = l.accept().unwrap();
    (server, t.join().unwrap())
}
