//! The pipe's slot (a one-message mailbox per direction, used while a
//! receiver spins): messages keep their order whatever way each travels,
//! many senders share an end, killed receivers and senders leave nothing
//! hanging, deadlines hold, an end holds two descriptors and travels with
//! every start method.

mod common;

use common::{for_each_method, open_fds, run_in_child};
use multiproc::*;
use std::fs::File;
use std::io::Read;
use std::time::{Duration, Instant};

/// A receive spin long enough that a receiver is always spinning when a
/// sender comes (so senders use the slot whenever they may).
const LONG_SPIN: Duration = Duration::from_millis(200);

/// The kinds of message one sender mixes: small (slot-sized), a file
/// handle (socket), just over the slot's size, and large (socket).
#[derive(serde::Serialize, serde::Deserialize)]
enum Msg {
    Small(u32),
    File(u32, Handle<File>),
    Over(u32, Vec<u8>),
    Big(u32, Vec<u8>),
}

const MIXED: u32 = 400;

fn mixed(i: u32) -> Msg {
    match i % 7 {
        3 => Msg::File(i, Handle(common::memfd_with(&format!("file {i}")))),
        5 => Msg::Over(i, vec![i as u8; 4100]),
        6 if i % 21 == 6 => Msg::Big(i, vec![i as u8; 300_000]),
        _ => Msg::Small(i),
    }
}

fn check_mixed(want: u32, m: Msg) {
    match m {
        Msg::Small(i) => assert_eq!(i, want),
        Msg::File(i, Handle(mut f)) => {
            assert_eq!(i, want);
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            assert_eq!(s, format!("file {i}"));
        }
        Msg::Over(i, v) | Msg::Big(i, v) => {
            assert_eq!(i, want);
            assert!(v.iter().all(|&b| b == i as u8));
        }
    }
}

/// Sends `MIXED` mixed messages as fast as it can, then echoes until EOF.
fn send_mixed(conn: Connection) {
    conn.set_spin(LONG_SPIN);
    for i in 0..MIXED {
        conn.send(&mixed(i)).unwrap();
    }
    while let Ok(m) = conn.recv::<Msg>() {
        conn.send(&m).unwrap();
    }
}

// One sender's messages arrive in order whatever way each travels: through
// the slot, on the socket with handles, just too big for the slot, large.
#[test]
fn order_is_kept_across_slot_socket_handles_and_large() {
    let (here, there) = Pipe::new().unwrap();
    here.set_spin(LONG_SPIN);
    let mut p = Process::new(send_mixed, (there,));
    p.start().unwrap();
    for want in 0..MIXED {
        check_mixed(want, here.recv().unwrap());
    }
    // Ping-pong: both sides spin, small messages go through the slot.
    for i in 0..MIXED {
        here.send(&mixed(i)).unwrap();
        check_mixed(i, here.recv().unwrap());
    }
    // Bursts: the echo's replies queue up behind each other.
    for round in 0..20 {
        for i in 0..10 {
            here.send(&mixed(round * 10 + i)).unwrap();
        }
        for i in 0..10 {
            check_mixed(round * 10 + i, here.recv().unwrap());
        }
    }
    drop(here);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

const PER_SENDER: u32 = 2000;

/// Sends `PER_SENDER` messages `(id, seq)` on `conn`.
fn send_numbered(conn: Connection, id: u32) {
    conn.set_spin(LONG_SPIN);
    for seq in 0..PER_SENDER {
        if seq % 50 == 49 {
            conn.send(&(id, seq, Some(Handle(common::memfd_with("x")))))
                .unwrap();
        } else {
            conn.send(&(id, seq, None::<Handle<File>>)).unwrap();
        }
    }
}

// Three threads of this process and two other processes send on one end at
// once: every message arrives once, and each sender's in its order.
#[test]
fn many_senders_on_one_end_keep_each_order() {
    let (rx, tx) = Pipe::one_way().unwrap();
    rx.set_spin(LONG_SPIN);
    let mut procs: Vec<Process> = (0..2)
        .map(|id| {
            let mut p = Process::new(send_numbered, (tx.try_clone().unwrap(), id));
            p.start().unwrap();
            p
        })
        .collect();
    std::thread::scope(|s| {
        for id in 2..5 {
            let tx = tx.try_clone().unwrap();
            s.spawn(move || send_numbered(tx, id));
        }
        drop(tx);
        let mut next = [0u32; 5];
        for _ in 0..5 * PER_SENDER {
            let (id, seq, file): (u32, u32, Option<Handle<File>>) =
                rx.recv_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(seq, next[id as usize], "sender {id}");
            assert_eq!(file.is_some(), seq % 50 == 49);
            next[id as usize] += 1;
        }
        assert_eq!(next, [PER_SENDER; 5]);
    });
    for p in &mut procs {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    assert!(matches!(
        rx.recv_timeout::<u8>(Duration::from_secs(30)),
        Err(Error::Eof)
    ));
}

/// Receives on `conn` with a spin far longer than the test, so that it is
/// spinning (holding the slot's word) when it is killed.
fn spin_forever(conn: Connection, ready: Connection) {
    conn.set_spin(Duration::from_secs(600));
    ready.send(&()).unwrap();
    let _ = conn.recv::<u32>();
}

// A receiver killed with SIGKILL while it spins leaves the word SPINNING:
// the next sends still arrive, in order, at another receiver of that end,
// and no send waits long.
#[test]
fn a_receiver_killed_mid_spin_loses_nothing() {
    for _ in 0..3 {
        let (a, b) = Pipe::new().unwrap();
        let (ready_rx, ready_tx) = Pipe::one_way().unwrap();
        let mut p = Process::new(spin_forever, (b.try_clone().unwrap(), ready_tx));
        p.start().unwrap();
        ready_rx
            .recv_timeout::<()>(Duration::from_secs(60))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        p.kill().unwrap();
        p.join().unwrap();
        let t = Instant::now();
        for i in 0..100u32 {
            a.send(&i).unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "100 sends took {:?}",
            t.elapsed()
        );
        b.set_spin(LONG_SPIN);
        for i in 0..100u32 {
            assert_eq!(b.recv_timeout::<u32>(Duration::from_secs(30)).unwrap(), i);
        }
        // And the slot works again between the live ends.
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200u32 {
                    assert_eq!(b.recv_timeout::<u32>(Duration::from_secs(30)).unwrap(), i);
                    b.send(&i).unwrap();
                }
            });
            a.set_spin(LONG_SPIN);
            for i in 0..200u32 {
                a.send(&i).unwrap();
                assert_eq!(a.recv_timeout::<u32>(Duration::from_secs(30)).unwrap(), i);
            }
        });
    }
}

/// Sends small messages as fast as it can until killed.
fn send_until_killed(conn: Connection, ready: Connection) {
    conn.set_spin(LONG_SPIN);
    ready.send(&()).unwrap();
    let mut i = 0u64;
    loop {
        conn.send(&(i, [7u8; 32])).unwrap();
        i += 1;
    }
}

// A sender killed with SIGKILL at any point (also while it writes a
// message into the slot): the receiver gets the messages sent before, in
// order, then an error (end of stream), and never hangs.
#[test]
fn a_sender_killed_mid_write_never_hangs_the_receiver() {
    for round in 0..10u64 {
        let (rx, tx) = Pipe::one_way().unwrap();
        let (ready_rx, ready_tx) = Pipe::one_way().unwrap();
        rx.set_spin(LONG_SPIN);
        let mut p = Process::new(send_until_killed, (tx, ready_tx));
        p.start().unwrap();
        ready_rx
            .recv_timeout::<()>(Duration::from_secs(60))
            .unwrap();
        let mut next = 0u64;
        let t = Instant::now();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20 + 7 * round));
            p.kill().unwrap();
            p.join().unwrap();
        });
        loop {
            match rx.recv_timeout::<(u64, [u8; 32])>(Duration::from_secs(30)) {
                Ok((i, body)) => {
                    assert_eq!(i, next);
                    assert_eq!(body, [7u8; 32]);
                    next += 1;
                }
                Err(e) => {
                    assert!(e.is_eof(), "round {round}: {e}");
                    break;
                }
            }
        }
        killer.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(30));
        assert!(next > 0, "round {round}: nothing arrived");
    }
}

// Deadlines hold while the receiver spins on the slot, and leave nothing
// behind: a later send neither waits nor gets lost.
#[test]
fn deadlines_hold_and_leave_the_slot_free() {
    let (a, b) = Pipe::new().unwrap();
    b.set_spin(Duration::from_secs(60));
    let wait = Duration::from_millis(100);
    for _ in 0..3 {
        let t = Instant::now();
        assert!(matches!(b.recv_timeout::<u8>(wait), Err(Error::Timeout)));
        let took = t.elapsed();
        assert!(
            took >= wait && took < wait + Duration::from_secs(2),
            "{took:?}"
        );
        let t = Instant::now();
        assert!(!b.poll(Some(wait)).unwrap());
        let took = t.elapsed();
        assert!(
            took >= wait && took < wait + Duration::from_secs(2),
            "{took:?}"
        );
        a.send(&5u8).unwrap();
        assert!(b.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(b.recv::<u8>().unwrap(), 5);
    }
    // A deadline in the middle of a busy exchange.
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..1000u32 {
                a.send(&i).unwrap();
            }
        });
        for i in 0..1000u32 {
            assert_eq!(b.recv_timeout::<u32>(Duration::from_secs(30)).unwrap(), i);
        }
    });
    let t = Instant::now();
    assert!(matches!(
        b.recv_deadline::<u8>(t + wait),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() < wait + Duration::from_secs(2));
}

/// The descriptors of this process that are pipe slots.
fn slot_fds() -> usize {
    open_fds()
        .iter()
        .filter(|(_, what)| what.contains("multiproc-pipe-slot"))
        .count()
}

/// Reports how many slot memory files this process holds, then echoes one
/// message through the pipe end it was given.
fn report_slot(end: Connection) {
    end.set_spin(LONG_SPIN);
    end.send(&slot_fds()).unwrap();
    let v: u32 = end.recv().unwrap();
    end.send(&v).unwrap();
}

fn slot_travels(method: StartMethod) {
    let (here, there) = Pipe::new().unwrap();
    here.set_spin(LONG_SPIN);
    let mut p = Process::new(report_slot, (there,)).start_method(method);
    p.start().unwrap();
    // A forked child also inherits this process's copy of the file.
    let slots = here.recv::<usize>().unwrap();
    if method == StartMethod::Fork {
        assert!(slots >= 1, "{method}: {slots}");
    } else {
        assert_eq!(slots, 1, "{method}");
    }
    here.send(&9u32).unwrap();
    assert_eq!(here.recv::<u32>().unwrap(), 9);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0), "{method}");
}

/// Counts descriptors around making pipes (in a child: no other test's
/// threads open descriptors meanwhile).
fn count_descriptors(_: StartMethod) {
    let shm_before: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    let before = open_fds().len();
    // Two sockets and the slot file both ends share here; each end that
    // travels carries its socket and the slot file.
    let (a, b) = Pipe::new().unwrap();
    assert_eq!(open_fds().len(), before + 3);
    drop(a);
    assert_eq!(open_fds().len(), before + 2);
    drop(b);
    assert_eq!(open_fds().len(), before);
    let (r, w) = Pipe::one_way().unwrap();
    assert_eq!(open_fds().len(), before + 3);
    drop((r, w));
    assert_eq!(open_fds().len(), before);
    let shm_after: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    let new: Vec<_> = shm_after
        .iter()
        .filter(|n| !shm_before.contains(n) && n.to_string_lossy().contains("multiproc-pipe"))
        .collect();
    assert!(new.is_empty(), "{new:?}");
}

// An end holds two descriptors (socket and slot), names nothing in
// /dev/shm, and carries its slot to a child with every start method.
#[test]
fn an_end_holds_two_descriptors_and_travels_with_its_slot() {
    run_in_child(count_descriptors, StartMethod::ForkServer);
    for_each_method(slot_travels);
}

// With the spin off nothing spins and the slot is not used; messages still
// flow both ways.
#[test]
fn spin_off_turns_the_slot_off_too() {
    let (a, b) = Pipe::new().unwrap();
    a.set_spin(Duration::ZERO);
    b.set_spin(Duration::ZERO);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..500u32 {
                let v: u32 = b.recv().unwrap();
                assert_eq!(v, i);
                b.send(&v).unwrap();
            }
        });
        for i in 0..500u32 {
            a.send(&i).unwrap();
            assert_eq!(a.recv::<u32>().unwrap(), i);
        }
    });
}
