//! The bounded spin of a receive (see `Connection::set_spin`): idle
//! waiters cost next to no CPU, deadlines hold with any spin, handles stay
//! in order while both sides spin, and a peer that dies while the receiver
//! spins is seen at once.

use multiproc::*;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// CPU time used by the calling thread so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The calling thread's CPU time spent in `f`, and what `f` returned.
fn cpu_of<R>(f: impl FnOnce() -> R) -> (Duration, R) {
    let before = thread_cpu();
    let r = f();
    (thread_cpu() - before, r)
}

// A receiver (or poller) that waits a second for its message spends far
// less than a spin's worth of CPU per wait in total: the spin is bounded
// and then the thread sleeps in the kernel.
#[test]
fn idle_waiters_use_next_to_no_cpu() {
    let (a, b) = Pipe::new().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(1));
            a.send(&1u32).unwrap();
            std::thread::sleep(Duration::from_secs(1));
            a.send(&2u32).unwrap();
        });
        let (cpu, got) = cpu_of(|| b.recv::<u32>().unwrap());
        assert_eq!(got, 1);
        assert!(cpu < Duration::from_millis(10), "idle recv used {cpu:?}");
        let (cpu, ready) = cpu_of(|| b.poll(Some(Duration::from_secs(30))).unwrap());
        assert!(ready);
        assert!(cpu < Duration::from_millis(10), "idle poll used {cpu:?}");
        assert_eq!(b.recv::<u32>().unwrap(), 2);
    });

    // Many short idle waits in a row: the spin backs off. Spinning through
    // them would cost about a second; the spin's own bound (50 µs a wait)
    // 2 ms. The limit leaves room for the system calls' own time on a
    // loaded machine (10.7 ms was seen once).
    let (cpu, ()) = cpu_of(|| {
        for _ in 0..40 {
            assert!(matches!(
                b.recv_timeout::<u32>(Duration::from_millis(25)),
                Err(Error::Timeout)
            ));
        }
    });
    assert!(
        cpu < Duration::from_millis(30),
        "40 idle waits used {cpu:?}"
    );
}

// Timeouts and deadlines hold however long the spin is allowed to be: the
// spin counts against them.
#[test]
fn a_spin_never_outlasts_a_deadline() {
    let (a, b) = Pipe::new().unwrap();
    b.set_spin(Duration::from_secs(60));
    assert!(b.spin() == Duration::from_secs(60) || cpu_count() == 1);
    let check = |what: &str, took: Duration, at_least: Duration| {
        assert!(took >= at_least, "{what} returned early: {took:?}");
        assert!(
            took < at_least + Duration::from_secs(2),
            "{what} overran: {took:?}"
        );
    };
    let wait = Duration::from_millis(100);

    let t = Instant::now();
    assert!(matches!(b.recv_timeout::<u8>(wait), Err(Error::Timeout)));
    check("recv_timeout", t.elapsed(), wait);

    let t = Instant::now();
    assert!(matches!(b.recv_bytes_timeout(wait), Err(Error::Timeout)));
    check("recv_bytes_timeout", t.elapsed(), wait);

    let t = Instant::now();
    assert!(matches!(
        b.recv_deadline::<u8>(t + wait),
        Err(Error::Timeout)
    ));
    check("recv_deadline", t.elapsed(), wait);

    let t = Instant::now();
    assert!(!b.poll(Some(wait)).unwrap());
    check("poll", t.elapsed(), wait);

    let t = Instant::now();
    assert!(matches!(
        b.recv_deadline::<u8>(t - Duration::from_millis(1)),
        Err(Error::Timeout)
    ));
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    check("a past deadline", t.elapsed(), Duration::ZERO);

    // Half a frame, then silence: the deadline holds in mid-message too,
    // and the message is whole once the rest arrives.
    let (mut raw, c) = UnixStream::pair().unwrap();
    let c = Connection::from_fd(OwnedFd::from(c)).unwrap();
    c.set_spin(Duration::from_secs(60));
    let mut frame = 1000u64.to_le_bytes().to_vec();
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend((0..1000u32).map(|i| i as u8));
    raw.write_all(&frame[..500]).unwrap();
    let t = Instant::now();
    assert!(matches!(c.recv_bytes_timeout(wait), Err(Error::Timeout)));
    check("recv_bytes_timeout mid-frame", t.elapsed(), wait);
    raw.write_all(&frame[500..]).unwrap();
    assert_eq!(c.recv_bytes().unwrap(), frame[12..]);

    // With spinning off the same holds.
    b.set_spin(Duration::ZERO);
    assert_eq!(b.spin(), Duration::ZERO);
    let t = Instant::now();
    assert!(matches!(b.recv_timeout::<u8>(wait), Err(Error::Timeout)));
    check("recv_timeout without spin", t.elapsed(), wait);
    a.send(&9u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 9);
}

/// A memory file holding `text`, read back from its start.
fn file_with(text: &str) -> File {
    let fd = rustix::fs::memfd_create(c"spin-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut f = File::from(fd);
    f.write_all(text.as_bytes()).unwrap();
    f.rewind().unwrap();
    f
}

const MESSAGES: u32 = 300;

/// Sends `MESSAGES` numbered messages, a file with every third, as fast as
/// it can; then echoes what it receives, files included, until EOF.
fn send_numbered_files(conn: Connection) {
    for i in 0..MESSAGES {
        let file = (i % 3 == 0).then(|| Handle(file_with(&format!("file {i}"))));
        conn.send(&(i, file)).unwrap();
    }
    while let Ok(msg) = conn.recv::<(u32, Option<Handle<File>>)>() {
        conn.send(&msg).unwrap();
    }
}

fn check_numbered(i: u32, file: Option<Handle<File>>) {
    match file {
        Some(Handle(mut f)) => {
            assert_eq!(i % 3, 0, "message {i} carries a file");
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            assert_eq!(text, format!("file {i}"));
        }
        None => assert_ne!(i % 3, 0, "message {i} lost its file"),
    }
}

// Handles ride with their own messages, in order, while both processes
// spin on the same socket (the spin reads the socket the same way).
#[test]
fn handles_stay_in_order_while_both_sides_spin() {
    let (here, there) = Pipe::new().unwrap();
    here.set_spin(Duration::from_millis(5));
    let mut p = Process::new(send_numbered_files, (there,));
    p.start().unwrap();
    for want in 0..MESSAGES {
        let (i, file): (u32, Option<Handle<File>>) = here.recv().unwrap();
        assert_eq!(i, want);
        check_numbered(i, file);
    }
    // Ping-pong with files both ways.
    for i in 0..MESSAGES {
        let file = (i % 3 == 0).then(|| Handle(file_with(&format!("file {i}"))));
        here.send(&(i, file)).unwrap();
        let (back, file): (u32, Option<Handle<File>>) = here.recv().unwrap();
        assert_eq!(back, i);
        check_numbered(back, file);
    }
    drop(here);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// Waits to be killed.
fn wait_forever(_end: Connection) {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

// A peer killed while this side spins (with a spin far longer than the
// test) is seen at once: end of stream, not a spin to the end.
#[test]
fn a_peer_killed_during_the_spin_is_eof_at_once() {
    for poll_first in [false, true] {
        let (here, there) = Pipe::new().unwrap();
        here.set_spin(Duration::from_secs(120));
        let mut p = Process::new(wait_forever, (there,));
        p.start().unwrap();
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                p.kill().unwrap();
            });
            if poll_first {
                assert!(here.poll(None).unwrap());
            }
            assert!(matches!(here.recv::<u8>(), Err(Error::Eof)));
        });
        let took = t.elapsed();
        assert!(took < Duration::from_secs(10), "EOF took {took:?}");
        p.join().unwrap();
    }
}
