//! Large messages through a pipe's reused shared buffers: they keep their
//! order among every other kind of message, with many senders, through
//! killed receivers and senders, with every start method; deadlines hold,
//! nothing leaks, and a broken envelope is a clear error.

mod common;

use common::{for_each_method, open_fds, run_in_child};
use multiproc::*;
use serde_bytes::ByteBuf;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const LONG: Duration = Duration::from_secs(60);

/// The bytes of message `seq` of sender `id`, `len` long.
fn body(id: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = (u64::from(id) << 40) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ len as u64;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - v.len()).min(8);
        v.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    v
}

/// Checks that `got` is [`body`]`(id, seq, len)`.
fn check(got: &[u8], id: u32, seq: u64, len: usize) {
    assert_eq!(got.len(), len, "sender {id} message {seq}: length");
    assert!(
        got == body(id, seq, len),
        "sender {id} message {seq}: bytes"
    );
}

/// A small random number generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// How many shared buffers of large messages this process holds.
fn bulk_fds() -> usize {
    open_fds()
        .iter()
        .filter(|(_, what)| what.contains("multiproc-bulk"))
        .count()
}

/// Every kind of message one sender mixes.
#[derive(serde::Serialize, serde::Deserialize)]
enum Msg {
    /// Through the slot while the receiver spins.
    Small(u32),
    /// On the socket with a handle.
    File(u32, Handle<File>),
    /// Just below the shared buffers' threshold: the socket.
    Below(u32, ByteBuf),
    /// A shared buffer.
    Bulk(u32, ByteBuf),
    /// A spilled memory file.
    Spill(u32, ByteBuf),
}

const MIXED: u32 = 120;

fn mixed(i: u32) -> Msg {
    let b = |len| ByteBuf::from(body(0, u64::from(i), len));
    match i % 6 {
        1 => Msg::File(i, Handle(common::memfd_with(&format!("file {i}")))),
        2 => Msg::Below(i, b(60 * KIB)),
        3 | 4 => Msg::Bulk(i, b(200 * KIB + i as usize * 3000)),
        5 if i % 30 == 5 => Msg::Spill(i, b(SPILL_MIN + 100)),
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
        Msg::Below(i, v) | Msg::Bulk(i, v) | Msg::Spill(i, v) => {
            assert_eq!(i, want);
            check(&v, 0, u64::from(i), v.len());
        }
    }
}

/// Sends the mixed messages, then raw ones of every size class, then how
/// many shared buffers it holds; then echoes raw messages until EOF.
fn send_mixed(conn: Connection) {
    conn.set_spin(Duration::from_millis(200));
    for i in 0..MIXED {
        conn.send(&mixed(i)).unwrap();
    }
    for (seq, len) in [10, 200 * KIB, MIB, 5, 3 * MIB, 5 * MIB, 0, 130 * KIB]
        .into_iter()
        .enumerate()
    {
        conn.send_bytes(&body(1, seq as u64, len)).unwrap();
    }
    conn.send(&bulk_fds()).unwrap();
    while let Ok(m) = conn.recv_bytes() {
        conn.send_bytes(&m).unwrap();
    }
}

// One sender's messages arrive in order whatever way each travels: slot,
// socket with handles, socket, shared buffer, spilled file; raw messages
// of every size land in a reused buffer or a vector; the sender used its
// shared buffers.
#[test]
fn order_is_kept_across_bulk_slot_socket_handles_and_spill() {
    let (here, there) = Pipe::new().unwrap();
    here.set_spin(Duration::from_millis(200));
    let mut p = Process::new(send_mixed, (there,));
    p.start().unwrap();
    for want in 0..MIXED {
        check_mixed(want, here.recv_timeout(LONG).unwrap());
    }
    let mut buf = vec![0u8; 4 * MIB];
    for (seq, len) in [10, 200 * KIB, MIB, 5, 3 * MIB, 5 * MIB, 0, 130 * KIB]
        .into_iter()
        .enumerate()
    {
        if seq % 2 == 0 {
            match here.recv_bytes_into(&mut buf) {
                Ok(n) => check(&buf[..n], 1, seq as u64, len),
                Err(Error::BufferTooShort { message, .. }) => {
                    assert!(len > buf.len());
                    check(&message, 1, seq as u64, len)
                }
                Err(e) => panic!("{e}"),
            }
        } else {
            check(&here.recv_bytes().unwrap(), 1, seq as u64, len);
        }
    }
    let held: usize = here.recv_timeout(LONG).unwrap();
    assert!(
        (1..=4).contains(&held),
        "the sender holds {held} shared buffers"
    );
    // Echoes: both directions, in pairs.
    for round in 0..10u64 {
        for i in 0..2 {
            here.send_bytes(&body(2, round * 6 + i, 150 * KIB + i as usize * 100 * KIB))
                .unwrap();
        }
        for i in 0..2 {
            let got = here.recv_bytes_timeout(LONG).unwrap();
            check(&got, 2, round * 6 + i, 150 * KIB + i as usize * 100 * KIB);
        }
    }
    drop(here);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

const PER_SENDER: u64 = 150;

/// Sends `PER_SENDER` numbered large messages of sizes 128 KiB..1.1 MiB,
/// at most two of them not yet taken: it waits for the receiver's word on
/// message `seq - 2` before it sends `seq`. (Each message then finds one
/// of the sender's buffers free. A message that went on the socket
/// instead could interleave with other senders' bytes: a stream socket
/// writes a large message in pieces.)
fn send_numbered(conn: Connection, taken: Connection, id: u32) {
    let mut rng = Rng(u64::from(id) + 7);
    for seq in 0..PER_SENDER {
        if seq >= 2 {
            assert_eq!(taken.recv_timeout::<u64>(LONG).unwrap(), seq - 2);
        }
        let len = 128 * KIB + rng.below(MIB as u64) as usize;
        let mut m = u64::from(id).to_le_bytes().to_vec();
        m.extend_from_slice(&seq.to_le_bytes());
        m.extend_from_slice(&body(id, seq, len));
        conn.send_bytes(&m).unwrap();
    }
}

// Two other processes and two threads of this one send large messages on
// one end at once: each arrives once, whole, and each sender's in order.
#[test]
fn two_processes_and_two_threads_on_one_end_keep_each_order() {
    let (rx, tx) = Pipe::one_way().unwrap();
    let (acks, takens): (Vec<Connection>, Vec<Connection>) = (0..4)
        .map(|_| {
            let (r, w) = Pipe::one_way().unwrap();
            (w, r)
        })
        .unzip();
    let mut takens = takens.into_iter();
    let mut procs: Vec<Process> = (0..2)
        .map(|id| {
            let taken = takens.next().unwrap();
            let mut p = Process::new(send_numbered, (tx.try_clone().unwrap(), taken, id));
            p.start().unwrap();
            p
        })
        .collect();
    std::thread::scope(|s| {
        for id in 2..4 {
            let tx = tx.try_clone().unwrap();
            let taken = takens.next().unwrap();
            s.spawn(move || send_numbered(tx, taken, id));
        }
        drop(tx);
        let mut next = [0u64; 4];
        let mut rngs: Vec<Rng> = (0..4).map(|id| Rng(id + 7)).collect();
        let mut buf = vec![0u8; 2 * MIB];
        for n in 0..4 * PER_SENDER {
            let len = if n % 2 == 0 {
                rx.recv_bytes_into(&mut buf).unwrap()
            } else {
                let v = rx.recv_bytes_timeout(LONG).unwrap();
                buf[..v.len()].copy_from_slice(&v);
                v.len()
            };
            let id = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
            let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap());
            assert_eq!(seq, next[id], "sender {id}");
            let want = 128 * KIB + rngs[id].below(MIB as u64) as usize;
            check(&buf[16..len], id as u32, seq, want);
            // The sender is gone after its last message.
            let _ = acks[id].send(&seq);
            next[id] += 1;
        }
        assert_eq!(next, [PER_SENDER; 4]);
    });
    for p in &mut procs {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    assert!(matches!(
        rx.recv_bytes_timeout(Duration::from_secs(30)),
        Err(Error::Eof)
    ));
}

/// Sends 1,000 messages of random sizes below 2 MiB, as raw bytes and as
/// values, then waits for the word to finish.
fn send_random(conn: Connection) {
    let mut rng = Rng(99);
    for seq in 0..1000u64 {
        let len = rng.below(2 * MIB as u64) as usize;
        if seq % 3 == 2 {
            conn.send(&ByteBuf::from(body(3, seq, len))).unwrap();
        } else {
            conn.send_bytes(&body(3, seq, len)).unwrap();
        }
    }
    let _ = conn.recv::<()>();
}

// A thousand messages of random sizes (0..2 MiB) across processes arrive
// whole, through every receive kind.
#[test]
fn a_thousand_random_sizes_arrive_whole() {
    let (here, there) = Pipe::new().unwrap();
    let mut p = Process::new(send_random, (there,));
    p.start().unwrap();
    let mut rng = Rng(99);
    let mut buf = vec![0u8; MIB];
    for seq in 0..1000u64 {
        let len = rng.below(2 * MIB as u64) as usize;
        if seq % 3 == 2 {
            let v: ByteBuf = here.recv_timeout(LONG).unwrap();
            check(&v, 3, seq, len);
        } else if seq % 3 == 1 {
            check(&here.recv_bytes_timeout(LONG).unwrap(), 3, seq, len);
        } else {
            match here.recv_bytes_into(&mut buf) {
                Ok(n) => check(&buf[..n], 3, seq, len),
                Err(Error::BufferTooShort { message, capacity }) => {
                    assert_eq!(capacity, MIB);
                    check(&message, 3, seq, len);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    here.send(&()).unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

/// Receives and checks large messages (the sequence number in front)
/// until killed.
fn receive_until_killed(conn: Connection, ready: Connection) {
    ready.send(&()).unwrap();
    let mut buf = vec![0u8; 4 * MIB];
    let mut last = None;
    loop {
        let n = conn.recv_bytes_into(&mut buf).unwrap();
        let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
        assert!(last < Some(seq));
        check(&buf[8..n], 4, seq, n - 8);
        last = Some(seq);
    }
}

/// Message `seq` of the killed-receiver test: its number, then its body.
fn numbered(seq: u64) -> Vec<u8> {
    let len = [200 * KIB, 2 * MIB, 3 * MIB + 5, 700 * KIB][seq as usize % 4];
    let mut m = seq.to_le_bytes().to_vec();
    m.extend_from_slice(&body(4, seq, len));
    m
}

// A receiver killed with SIGKILL in the middle of a stream of large
// messages (maybe while it copies one out): sends go on, and another
// receiver of that end gets every message sent after the kill, whole and
// in order.
#[test]
fn a_receiver_killed_mid_stream_loses_nothing_sent_later() {
    for round in 0..4u64 {
        let (rx, tx) = Pipe::one_way().unwrap();
        let (ready_rx, ready_tx) = Pipe::one_way().unwrap();
        let mut p = Process::new(receive_until_killed, (rx.try_clone().unwrap(), ready_tx));
        p.start().unwrap();
        ready_rx.recv_timeout::<()>(LONG).unwrap();
        let sent = AtomicU64::new(0);
        let killed_after = AtomicU64::new(u64::MAX);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30 + 20 * round));
                p.kill().unwrap();
                p.join().unwrap();
                // A send under way at the kill may have reached the child.
                killed_after.store(sent.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
            });
            // A second receiver of the same end, in this process.
            let reader = s.spawn(|| {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 4 * MIB];
                loop {
                    match rx.recv_bytes_into(&mut buf) {
                        Ok(n) => {
                            let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                            check(&buf[8..n], 4, seq, n - 8);
                            got.push(seq);
                            if seq == u64::MAX >> 1 {
                                return got;
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
            // Send until well after the kill.
            let mut seq = 0;
            let t = Instant::now();
            while killed_after.load(Ordering::SeqCst) == u64::MAX
                || seq < killed_after.load(Ordering::SeqCst) + 40
            {
                tx.send_bytes(&numbered(seq)).unwrap();
                seq += 1;
                sent.store(seq, Ordering::SeqCst);
                assert!(t.elapsed() < LONG, "sends stalled");
            }
            let mut last = (u64::MAX >> 1).to_le_bytes().to_vec();
            last.extend_from_slice(&body(4, u64::MAX >> 1, 200 * KIB));
            tx.send_bytes(&last).unwrap();
            let got = reader.join().unwrap();
            assert!(got.windows(2).all(|w| w[0] < w[1]), "round {round}: order");
            let after = killed_after.load(Ordering::SeqCst);
            let later: Vec<u64> = got.iter().copied().filter(|&s| s >= after).collect();
            let want: Vec<u64> = (after..seq).chain([u64::MAX >> 1]).collect();
            assert_eq!(later, want, "round {round}");
        });
    }
}

/// Sends large messages of random sizes, numbered, as fast as it can until
/// killed.
fn send_until_killed(conn: Connection, ready: Connection, seed: u64) {
    ready.send(&()).unwrap();
    let mut rng = Rng(seed);
    let mut seq = 0u64;
    loop {
        let len = 128 * KIB + rng.below(3 * MIB as u64) as usize;
        let mut m = seq.to_le_bytes().to_vec();
        m.extend_from_slice(&body(5, seq, len));
        conn.send_bytes(&m).unwrap();
        seq += 1;
    }
}

// A sender killed with SIGKILL at any point (while it copies into a
// buffer, after it marked one ready, while it sends an envelope): the
// receiver gets the messages sent before, whole and in order, then end of
// stream, and never hangs.
#[test]
fn a_sender_killed_at_random_points_never_tears_or_hangs() {
    for round in 0..10u64 {
        let (rx, tx) = Pipe::one_way().unwrap();
        let (ready_rx, ready_tx) = Pipe::one_way().unwrap();
        let mut p = Process::new(send_until_killed, (tx, ready_tx, round + 1));
        p.start().unwrap();
        ready_rx.recv_timeout::<()>(LONG).unwrap();
        let t = Instant::now();
        // The kill comes a varying time after the first message arrived
        // (on a loaded machine the sender may not have sent one within a
        // fixed delay from its start).
        let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
        let killer = std::thread::spawn(move || {
            let _ = first_rx.recv_timeout(LONG);
            std::thread::sleep(Duration::from_millis(1 + 9 * round));
            p.kill().unwrap();
            p.join().unwrap();
        });
        let mut next = 0u64;
        let mut buf = vec![0u8; 4 * MIB];
        loop {
            let got = if next % 2 == 0 {
                rx.recv_bytes_timeout(LONG)
            } else {
                rx.recv_bytes_into(&mut buf).map(|n| buf[..n].to_vec())
            };
            match got {
                Ok(m) => {
                    let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
                    assert_eq!(seq, next, "round {round}");
                    check(&m[8..], 5, seq, m.len() - 8);
                    if next == 0 {
                        let _ = first_tx.send(());
                    }
                    next += 1;
                }
                Err(e) => {
                    assert!(e.is_eof(), "round {round}: {e}");
                    break;
                }
            }
        }
        killer.join().unwrap();
        assert!(t.elapsed() < LONG, "round {round}: {:?}", t.elapsed());
        assert!(next > 0, "round {round}: nothing arrived");
    }
}

/// Reports how many shared buffers it holds after echoing large messages
/// through the end it was given.
fn echo_large(end: Connection) {
    for _ in 0..5 {
        let m = end.recv_bytes().unwrap();
        end.send_bytes(&m).unwrap();
    }
    end.send(&bulk_fds()).unwrap();
}

fn ends_travel(method: StartMethod) {
    let (here, there) = Pipe::new().unwrap();
    let mut p = Process::new(echo_large, (there,)).start_method(method);
    p.start().unwrap();
    for seq in 0..5 {
        let len = 300 * KIB * (seq as usize + 1);
        here.send_bytes(&body(6, seq, len)).unwrap();
        check(&here.recv_bytes_timeout(LONG).unwrap(), 6, seq, len);
    }
    let held: usize = here.recv_timeout(LONG).unwrap();
    // A forked child also inherits this process's copies.
    assert!(held >= 1, "{method}: the child holds {held} shared buffers");
    if method != StartMethod::Fork {
        assert!(held <= 4, "{method}: the child holds {held} shared buffers");
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0), "{method}");
}

// Ends passed to a child with every start method send and receive large
// messages through their own shared buffers.
#[test]
fn ends_passed_to_a_child_use_shared_buffers() {
    for_each_method(ends_travel);
}

// Deadlines hold with nothing coming, and a large message sent later
// arrives at once through every timed receive.
#[test]
fn deadlines_hold() {
    let (a, b) = Pipe::new().unwrap();
    let wait = Duration::from_millis(100);
    for seq in 0..3 {
        let t = Instant::now();
        assert!(matches!(b.recv_bytes_timeout(wait), Err(Error::Timeout)));
        let took = t.elapsed();
        assert!(
            took >= wait && took < wait + Duration::from_secs(2),
            "{took:?}"
        );
        a.send_bytes(&body(7, seq, MIB)).unwrap();
        assert!(b.poll(Some(Duration::ZERO)).unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        check(&b.recv_bytes_deadline(deadline).unwrap(), 7, seq, MIB);
        a.send(&ByteBuf::from(body(7, seq, MIB))).unwrap();
        let v: ByteBuf = b.recv_timeout(Duration::from_secs(10)).unwrap();
        check(&v, 7, seq, MIB);
    }
    let t = Instant::now();
    assert!(matches!(
        b.recv_deadline::<u8>(t + wait),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() < wait + Duration::from_secs(2));
}

/// Counts descriptors and `/dev/shm` entries around large messages (in a
/// child: no other test's threads open descriptors meanwhile).
fn count_descriptors(_: StartMethod) {
    let shm = || -> Vec<_> {
        std::fs::read_dir("/dev/shm")
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default()
    };
    let shm_before = shm();
    let before = open_fds().len();
    let (a, b) = Pipe::new().unwrap();
    let mut buf = vec![0u8; 2 * MIB];
    for seq in 0..20 {
        let len = 150 * KIB + seq as usize * 90 * KIB;
        a.send_bytes(&body(8, seq, len)).unwrap();
        assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), len);
        b.send_bytes(&body(8, seq, len)).unwrap();
        check(&a.recv_bytes().unwrap(), 8, seq, len);
    }
    // Each end keeps at most four buffers of its own; received ones are
    // only mapped.
    let held = bulk_fds();
    assert!((2..=8).contains(&held), "{held}");
    drop((a, b));
    assert_eq!(open_fds().len(), before);
    let new: Vec<_> = shm()
        .into_iter()
        .filter(|n| !shm_before.contains(n) && n.to_string_lossy().contains("multiproc"))
        .collect();
    assert!(new.is_empty(), "{new:?}");
}

// Large messages leak no descriptor and name nothing in /dev/shm.
#[test]
fn no_descriptor_leaks_and_nothing_in_dev_shm() {
    run_in_child(count_descriptors, StartMethod::ForkServer);
}

/// Writes a frame with the bulk envelope's mark: `payload`, with `fd`
/// attached.
fn send_envelope(
    sock: &std::os::unix::net::UnixStream,
    payload: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let mut frame = (payload.len() as u64).to_le_bytes().to_vec();
    frame.extend_from_slice(&(1u32 | 1 << 31).to_le_bytes());
    frame.extend_from_slice(payload);
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
    let n = sendmsg(
        sock,
        &[std::io::IoSlice::new(&frame)],
        &mut cmsg,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, frame.len());
}

/// An envelope payload: generation, length.
fn envelope(generation: u64, len: u64) -> Vec<u8> {
    let mut e = generation.to_le_bytes().to_vec();
    e.extend_from_slice(&len.to_le_bytes());
    e
}

// Envelopes naming a file that is no usable buffer, or a buffer in the
// wrong state or too short, are refused with a clear error, and the
// stream goes on.
#[test]
fn broken_envelopes_are_refused_and_the_stream_goes_on() {
    let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let conn = Connection::from_fd(theirs.into()).unwrap();
    let memfd = |len: u64, seal: bool| {
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd =
            rustix::fs::memfd_create(c"hostile", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        if seal {
            rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        }
        fd
    };
    let unsealed = memfd(64 + MIB as u64, false);
    let free = memfd(64 + MIB as u64, true);
    let tiny = memfd(64 + 4096, true);
    // READY with generation 5, as a sender leaves it.
    rustix::io::pwrite(&tiny, &(2u64 | 5 << 2).to_le_bytes(), 0).unwrap();
    let not_memfd = File::open("/proc/self/exe").unwrap();
    // Far larger than any sender makes: never mapped (nor faulted in).
    let huge = memfd(1 << 40, true);
    rustix::io::pwrite(&huge, &(2u64 | 1 << 2).to_le_bytes(), 0).unwrap();
    let cases: [(std::os::fd::BorrowedFd<'_>, Vec<u8>); 5] = [
        (huge.as_fd(), envelope(1, 10)),
        (unsealed.as_fd(), envelope(1, 1000)),
        (free.as_fd(), envelope(1, 1000)),
        (tiny.as_fd(), envelope(5, 8192)),
        (not_memfd.as_fd(), envelope(1, 10)),
    ];
    for (fd, env) in &cases {
        send_envelope(&mine, env, *fd);
        (&mine)
            .write_all(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3])
            .unwrap();
        let mut buf = [0u8; 16];
        match conn.recv_bytes_into(&mut buf) {
            Err(Error::Decode(why)) => assert!(why.contains("bulk message refused"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(conn.recv_bytes().unwrap(), [1, 2, 3]);
    }
    // A malformed envelope (wrong length) breaks the stream: its place is
    // lost.
    send_envelope(&mine, &[0u8; 3], free.as_fd());
    assert!(matches!(conn.recv_bytes(), Err(Error::BadFrame(_))));
}

// A connection wrapped around a TCP socket (which cannot carry
// descriptors) sends large messages on the socket.
#[test]
fn a_tcp_connection_sends_large_messages_on_the_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    let a = Connection::from_fd(a.into()).unwrap();
    let b = Connection::from_fd(b.into()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for seq in 0..4 {
                a.send_bytes(&body(9, seq, 300 * KIB)).unwrap();
            }
        });
        for seq in 0..4 {
            check(&b.recv_bytes_timeout(LONG).unwrap(), 9, seq, 300 * KIB);
        }
    });
}

/// Reads one frame's header from `sock` with the descriptors attached to
/// it: `(payload length, descriptor word, descriptors)`.
fn read_header(sock: &std::os::unix::net::UnixStream) -> (u64, u32, Vec<std::os::fd::OwnedFd>) {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut head = [0u8; 12];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let n = recvmsg(
        sock,
        &mut [std::io::IoSliceMut::new(&mut head)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap()
    .bytes;
    let mut fds = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = m {
            fds.extend(got);
        }
    }
    (&*sock).read_exact(&mut head[n..]).unwrap();
    let len = u64::from_le_bytes(head[..8].try_into().unwrap());
    (len, u32::from_le_bytes(head[8..].try_into().unwrap()), fds)
}

// A buffer left READING by a receiver that died is taken back by the
// sender; one READING by a live receiver is not.
#[test]
fn buffers_held_by_dead_receivers_are_taken_back() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let len = 200 * KIB;
    for (holder, reclaimed) in [(dead, true), (live, false)] {
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let conn = Connection::from_fd(theirs.into()).unwrap();
        // Take envelopes (leaving their buffers READY) until the end has no
        // buffer left and sends on the socket.
        let mut held = Vec::new();
        loop {
            conn.send_bytes(&body(10, 0, len)).unwrap();
            let (n, word, fds) = read_header(&mine);
            let mut payload = vec![0u8; n as usize];
            (&mine).read_exact(&mut payload).unwrap();
            if word == 0 {
                check(&payload, 10, 0, len);
                break;
            }
            assert_eq!((n, word, fds.len()), (16, 1 | 1 << 31, 1));
            held.extend(fds);
            assert!(held.len() <= 8, "no end keeps this many buffers");
        }
        assert!(held.len() >= 2, "{}", held.len());
        // Now every buffer is being read by `holder`.
        let reading = 3u64 | u64::from(holder) << 2;
        for fd in &held {
            rustix::io::pwrite(fd, &reading.to_le_bytes(), 0).unwrap();
        }
        // The next message: through a buffer taken back, or the socket.
        conn.send_bytes(&body(10, 1, len)).unwrap();
        let (n, word, _fds) = read_header(&mine);
        let mut payload = vec![0u8; n as usize];
        (&mine).read_exact(&mut payload).unwrap();
        assert_eq!(word != 0, reclaimed, "holder {holder}");
    }
}
