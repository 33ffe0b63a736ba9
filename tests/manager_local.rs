//! The local fast paths of managers: a Rust client on the same machine
//! talks to the server over a pipe, and puts into a queue's shared-memory
//! inbox, which every call the server serves sees first — order across
//! both ways, visibility right after `put` returns, counts, a full inbox, a
//! dead manager, descriptors shared by proxies, and hostile hand-overs.

mod common;

use common::{for_each_method, open_fds, pid_alive};
use multiproc::connection::Client;
use multiproc::manager::{self, QueueProxy};
use multiproc::pickle::{self, Value};
use multiproc::{Connection, Error, Manager, Pipe, Process, StartMethod};
use std::time::{Duration, Instant};

/// Items of three kinds, in one order: small ones (through the inbox), a
/// large one (over 64 KiB: a call), and one holding a proxy (a call).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Item {
    Small(u32),
    Large(u32, serde_bytes::ByteBuf),
    Nested(u32, Box<QueueProxy<u32>>),
}

fn number(i: &Item) -> u32 {
    match i {
        Item::Small(n) | Item::Large(n, _) | Item::Nested(n, _) => *n,
    }
}

/// Puts 0..n, every 50th large and every 70th holding `inner`, then says
/// so on `done` (not through the manager).
fn put_mixed(q: QueueProxy<Item>, inner: QueueProxy<u32>, n: u32, done: Connection) {
    for i in 0..n {
        let item = if i % 50 == 49 {
            Item::Large(i, serde_bytes::ByteBuf::from(vec![i as u8; 100 << 10]))
        } else if i % 70 == 69 {
            Item::Nested(i, Box::new(inner.clone()))
        } else {
            Item::Small(i)
        };
        q.put(item).unwrap();
    }
    done.send(&n).unwrap();
}

fn mixed_scenario(method: StartMethod) {
    let m = Manager::start_with(method).unwrap();
    let q = m.queue::<Item>().unwrap();
    let inner = m.queue::<u32>().unwrap();
    inner.put(7).unwrap();
    let (done, there) = Pipe::new().unwrap();
    let n = 400;
    let mut p = Process::new(put_mixed, (q.clone(), inner.clone(), n, there)).start_method(method);
    p.start().unwrap();
    // Once the producer said it is done, every item is there: no wait.
    assert_eq!(done.recv::<u32>().unwrap(), n);
    assert_eq!(q.qsize().unwrap(), n as usize, "{method}");
    for i in 0..n {
        let item = q.get_nowait().unwrap();
        assert_eq!(number(&item), i, "{method}: out of order");
        if let Item::Nested(_, inner) = item {
            assert_eq!(inner.qsize().unwrap(), 1);
        }
    }
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    p.join().unwrap();
}

#[test]
fn puts_keep_their_order_across_both_ways_and_are_seen_once_put_returns() {
    for_each_method(mixed_scenario);
}

fn put_range(q: QueueProxy<u64>, from: u64, to: u64) {
    for i in from..to {
        q.put(i).unwrap();
    }
}

#[test]
fn join_counts_items_put_through_the_inbox() {
    let m = Manager::start().unwrap();
    let q = m.joinable_queue::<u64>().unwrap();
    let mut p = Process::new(put_range, (q.clone(), 0, 100));
    p.start().unwrap();
    p.join().unwrap();
    let joiner = {
        let q = q.clone();
        std::thread::spawn(move || {
            q.join().unwrap();
            Instant::now()
        })
    };
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(q.get().unwrap());
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!joiner.is_finished(), "join returned with tasks unfinished");
    let before = Instant::now();
    for _ in 0..100 {
        q.task_done().unwrap();
    }
    assert!(joiner.join().unwrap() >= before);
}

#[test]
fn a_waiting_get_wakes_for_an_inbox_put() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u64>().unwrap();
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || q.get_timeout(Duration::from_secs(20)))
    };
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let mut p = Process::new(put_range, (q.clone(), 5, 6));
    p.start().unwrap();
    assert_eq!(getter.join().unwrap().unwrap(), 5);
    assert!(t.elapsed() < Duration::from_secs(10));
    p.join().unwrap();
}

#[test]
fn a_full_inbox_sends_puts_as_calls_and_loses_nothing() {
    let m = Manager::start().unwrap();
    let q = m.queue::<String>().unwrap();
    // About 8 MiB of pickles, with no one taking: the 1 MiB inbox fills
    // again and again; no put waits.
    let n = 40_000;
    let item = |i: usize| format!("{i:0200}");
    let t = Instant::now();
    for i in 0..n {
        q.put(item(i)).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(q.qsize().unwrap(), n);
    for (i, got) in q.get_many(n).unwrap().into_iter().enumerate() {
        assert_eq!(got, item(i));
    }
    assert!(q.empty().unwrap());
}

#[test]
fn bounded_queues_keep_their_bound() {
    let m = Manager::start().unwrap();
    let q = m.queue_with_maxsize::<u32>(2).unwrap();
    q.put(1).unwrap();
    q.put_nowait(2).unwrap();
    assert!(matches!(q.put_nowait(3), Err(Error::Full)));
    assert!(matches!(
        q.put_timeout(3, Duration::from_millis(50)),
        Err(Error::Full)
    ));
    assert_eq!(q.qsize().unwrap(), 2);
}

#[test]
fn a_put_after_the_manager_was_killed_fails() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    let pid = m.pid().unwrap();
    common::signal(pid, libc::SIGKILL);
    // A put racing with the death may still land in the inbox (and be lost
    // with the manager, as one served just before); once the manager's
    // sockets are closed, every put fails.
    let t = Instant::now();
    while q.put(3).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "puts into a dead manager's queue kept succeeding"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!pid_alive(pid));
    let t = Instant::now();
    assert!(q.put(4).is_err());
    assert!(q.put_nowait(5).is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// Puts through 40 clones of `q`; returns how many descriptors this
/// process opened meanwhile.
fn put_through_clones(q: QueueProxy<u32>) -> usize {
    q.put(0).unwrap();
    let before = open_fds().len();
    let clones: Vec<QueueProxy<u32>> = (0..40).map(|_| q.clone()).collect();
    for (i, c) in clones.iter().enumerate() {
        c.put(i as u32 + 1).unwrap();
    }
    open_fds().len() - before
}

#[test]
fn proxies_of_one_queue_in_one_process_share_one_inbox() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>().unwrap();
    // In a child, whose descriptors no other test opens meanwhile.
    let mut p = Process::new(put_through_clones, (q.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    let grown: usize = p.take_result().unwrap();
    // Each clone has its connection (two descriptors); the inbox's four
    // are not repeated per clone.
    assert!(grown <= 2 * 40 + 8, "{grown} descriptors for 40 clones");
    assert_eq!(q.qsize().unwrap(), 41);
}

fn put_one_in_each(queues: Vec<QueueProxy<u32>>) {
    for (i, q) in queues.iter().enumerate() {
        q.put(i as u32).unwrap();
    }
}

#[test]
fn queues_beyond_the_inbox_limit_still_take_puts() {
    let m = Manager::start().unwrap();
    let queues: Vec<QueueProxy<u32>> = (0..80).map(|_| m.queue().unwrap()).collect();
    let mut p = Process::new(put_one_in_each, (queues.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    for (i, q) in queues.iter().enumerate() {
        assert_eq!(q.get_nowait().unwrap(), i as u32);
    }
}

#[test]
fn over_tcp_puts_are_calls_and_keep_their_order() {
    let mut server = manager::Server::bind("127.0.0.1:0", b"k").unwrap();
    server.register_shared("get_queue", manager::objects::queue(0));
    let tcp = server.address().clone();
    let stop = server.stopper();
    let t = std::thread::spawn(move || server.serve_forever());
    let remote = manager::connect(&tcp, b"k").unwrap();
    let q = remote.get::<QueueProxy<u32>>("get_queue").unwrap();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    let got: Vec<u32> = (0..10).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    drop(q);
    stop.stop();
    t.join().unwrap().unwrap();
}

/// A raw client of the manager protocol on `addr`: one request, one reply.
fn raw_call(conn: &Connection, method: &str) -> Value {
    let req = Value::Tuple(vec![
        Value::None,
        Value::Str(method.into()),
        Value::Tuple(vec![]),
        Value::Dict(vec![]),
    ]);
    conn.send_bytes(&pickle::dumps(&req)).unwrap();
    pickle::loads(&conn.recv_bytes().unwrap()).unwrap()
}

/// Writes `bytes` on the connection's socket as they are.
fn write_raw(conn: &Connection, bytes: &[u8]) {
    use std::io::Write;
    let fd = std::os::fd::AsFd::as_fd(conn).try_clone_to_owned().unwrap();
    std::os::unix::net::UnixStream::from(fd)
        .write_all(bytes)
        .unwrap();
}

fn returned(v: &Value) -> &Value {
    match v {
        Value::Tuple(t) if t.len() == 2 && t[0] == Value::Str("#RETURN".into()) => &t[1],
        other => panic!("not a #RETURN reply: {other:?}"),
    }
}

#[test]
fn a_hostile_pipe_hand_over_loses_only_its_own_connection() {
    let dir = std::env::temp_dir().join(format!("mp-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.sock");
    let mut server = manager::Server::bind(path.to_str().unwrap(), b"k").unwrap();
    server.register_shared("get_queue", manager::objects::queue(0));
    let addr = server.address().clone();
    let stop = server.stopper();
    let t = std::thread::spawn(move || server.serve_forever());

    // A hand-over that claims 1 MiB: the server closes that connection.
    let big = Client::connect(&addr, Some(b"k")).unwrap();
    assert_eq!(returned(&raw_call(&big, "#multiproc_pipe")), &Value::None);
    write_raw(&big, &(1u32 << 20).to_le_bytes());
    assert!(big.recv_bytes().is_err(), "the connection is closed");

    // An empty hand-over: the client stays on its socket and is served.
    let empty = Client::connect(&addr, Some(b"k")).unwrap();
    assert_eq!(returned(&raw_call(&empty, "#multiproc_pipe")), &Value::None);
    write_raw(&empty, &0u32.to_le_bytes());
    let took = pickle::loads(&empty.recv_bytes().unwrap()).unwrap();
    assert_eq!(returned(&took), &Value::Bool(false));
    assert_eq!(returned(&raw_call(&empty, "dummy")), &Value::None);
    // On a socket, an inbox request is a call of a method not exposed: an
    // error reply, and the connection goes on.
    let req = Value::Tuple(vec![
        Value::Str("1234".into()),
        Value::Str("#multiproc_inbox".into()),
        Value::Tuple(vec![]),
        Value::Dict(vec![]),
    ]);
    empty.send_bytes(&pickle::dumps(&req)).unwrap();
    match pickle::loads(&empty.recv_bytes().unwrap()).unwrap() {
        Value::Tuple(t) => assert_ne!(t[0], Value::Str("#RETURN".into())),
        other => panic!("not a reply: {other:?}"),
    }
    assert_eq!(returned(&raw_call(&empty, "dummy")), &Value::None);

    // One that never comes: only that connection waits.
    let stalled = Client::connect(&addr, Some(b"k")).unwrap();
    assert_eq!(
        returned(&raw_call(&stalled, "#multiproc_pipe")),
        &Value::None
    );

    // Meanwhile a proxy works, on its pipe.
    let remote = manager::connect(&addr, b"k").unwrap();
    let q = remote.get::<QueueProxy<u32>>("get_queue").unwrap();
    for i in 0..100 {
        q.put(i).unwrap();
    }
    let got: Vec<u32> = (0..100).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    drop((q, remote, stalled, empty, big));
    stop.stop();
    t.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
