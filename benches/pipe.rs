//! `Pipe` round trips and throughput against a raw socketpair, both across
//! processes, measured in the same run.
//!
//! Benchmarks (group `pipe`):
//!
//! * `roundtrip_64b`: `send` + `recv` of a 64-byte typed message through
//!   `Pipe::new()` to a child that echoes it with `recv` + `send`.
//! * `raw_roundtrip_64b`: `write` + `read` of 64 bytes on a plain socketpair
//!   to a child that echoes them with plain `read` + `write`.
//! * `raw_futex_roundtrip`: the floor of a round trip between two
//!   processes: a parent and a child bounce a turn counter through a futex
//!   word in shared memory (a memfd mapped by both), each waiting for its
//!   turn with the same adaptive wait as the pipe's receive (spin for 30 µs,
//!   yield a few times, then `FUTEX_WAIT`, woken only when it sleeps).
//! * `throughput_1mib`: a child sends 1 MiB messages with `send_bytes`; this
//!   process receives them with `recv_bytes_into` into a reused buffer.
//! * `throughput_1mib_recv_bytes`: the same, received with `recv_bytes`
//!   (a new vector per message).
//! * `raw_throughput_1mib`: a child `write`s 1 MiB chunks on a plain
//!   socketpair; this process `read`s them into a reused buffer.
//!
//! Every child is a `multiproc::Process` started with the fork server, so
//! both sides of each comparison cross the same process boundary.
//!
//! After criterion's report, prints same-run medians of the round trips
//! and of the 1 MiB transfer from batches that alternate ours and the raw
//! pairs, and their ratios (issue 14 targets: round trip ≤ 0.25x the
//! socketpair; 1 MiB ≥ 1.2x the socketpair).
//!
//! Run with `cargo bench --bench pipe` or through `bench/compare`.
#![allow(unsafe_code)]

use criterion::{Criterion, Throughput};
use multiproc::{Connection, Handle, Pipe, Process};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// A 64-byte message: postcard writes fixed-size arrays without a length,
/// so it encodes to exactly 64 bytes.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Msg {
    head: [u8; 32],
    tail: [u8; 32],
}

/// Echoes typed messages until the peer closes the pipe.
fn echo(conn: Connection) {
    while let Ok(m) = conn.recv::<Msg>() {
        if conn.send(&m).is_err() {
            break;
        }
    }
}

/// Echoes 64-byte blocks with plain reads and writes until end of stream.
fn raw_echo(sock: Handle<UnixStream>) {
    let mut s = sock.into_inner();
    let mut buf = [0u8; 64];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

/// For each request `n` (a u64), sends `n` messages of 1 MiB.
fn sender(conn: Connection) {
    let data = vec![0x5a_u8; MIB];
    while let Ok(n) = conn.recv::<u64>() {
        for _ in 0..n {
            if conn.send_bytes(&data).is_err() {
                return;
            }
        }
    }
}

/// For each request `n` (8 bytes, little endian), writes `n` MiB.
fn raw_sender(sock: Handle<UnixStream>) {
    let mut s = sock.into_inner();
    let data = vec![0x5a_u8; MIB];
    let mut req = [0u8; 8];
    while s.read_exact(&mut req).is_ok() {
        for _ in 0..u64::from_le_bytes(req) {
            if s.write_all(&data).is_err() {
                return;
            }
        }
    }
}

/// The futex ping-pong's shared words: the turn counter (odd: the child's
/// turn, even: the parent's) and whether each side sleeps on it.
#[repr(C)]
struct Turns {
    turn: AtomicU32,
    parent_sleeps: AtomicU32,
    child_sleeps: AtomicU32,
}

/// Maps the `Turns` page of the memfd `fd` (kept mapped for the process's
/// life: the bench maps it twice at most).
fn map_turns(fd: &OwnedFd) -> &'static Turns {
    // SAFETY: a fresh shared mapping of one page of `fd` (a memfd of one
    // page), readable and writable; nothing else in this process uses the
    // address range.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            4096,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            fd.as_fd(),
            0,
        )
    }
    .expect("mmap");
    // SAFETY: the page is mapped for the rest of the process (never
    // unmapped), page aligned, zero-filled at creation, and `Turns` is made
    // of atomics, valid for any bit pattern and shared through atomics only.
    unsafe { &*p.cast::<Turns>() }
}

/// Publishes turn `v` and wakes the other side if it sleeps.
fn give_turn(t: &Turns, v: u32, other_sleeps: &AtomicU32) {
    t.turn.store(v, Ordering::SeqCst);
    if other_sleeps.load(Ordering::SeqCst) != 0 {
        rustix::thread::futex::wake(&t.turn, rustix::thread::futex::Flags::empty(), 1)
            .expect("futex wake");
    }
}

/// Waits until the turn is `v` (or `u32::MAX`, the end): spins 30 µs,
/// yields 8 times, then sleeps on the futex. Returns false at the end.
fn wait_turn(t: &Turns, v: u32, sleeps: &AtomicU32) -> bool {
    let ready = |x: u32| x == v || x == u32::MAX;
    let start = Instant::now();
    'spin: loop {
        for _ in 0..64 {
            if ready(t.turn.load(Ordering::Acquire)) {
                break 'spin;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= Duration::from_micros(30) {
            for _ in 0..8 {
                std::thread::yield_now();
                if ready(t.turn.load(Ordering::Acquire)) {
                    break 'spin;
                }
            }
            loop {
                sleeps.store(1, Ordering::SeqCst);
                let now = t.turn.load(Ordering::SeqCst);
                if ready(now) {
                    break;
                }
                let _ = rustix::thread::futex::wait(
                    &t.turn,
                    rustix::thread::futex::Flags::empty(),
                    now,
                    None,
                );
            }
            sleeps.store(0, Ordering::SeqCst);
            break;
        }
    }
    t.turn.load(Ordering::Acquire) != u32::MAX
}

/// The child of the futex ping-pong: answers every odd turn with the next.
fn futex_echo(fd: Handle<OwnedFd>) {
    let t = map_turns(&fd.0);
    let mut v = 1;
    while wait_turn(t, v, &t.child_sleeps) {
        give_turn(t, v + 1, &t.parent_sleeps);
        v += 2;
    }
}

fn start(mut p: Process) -> Process {
    p.start().expect("start child");
    p
}

fn finish(mut p: Process) {
    p.join().expect("join child");
    assert_eq!(p.exitcode(), Some(0));
}

/// Every pair of the comparison, each with its child running.
struct Rigs {
    msg: Msg,
    pipe: Connection,
    pipe_child: Process,
    raw: UnixStream,
    raw_child: Process,
    turns: &'static Turns,
    turn: u32,
    futex_child: Process,
    mib: Connection,
    mib_child: Process,
    raw_mib: UnixStream,
    raw_mib_child: Process,
    buf: Vec<u8>,
}

impl Rigs {
    fn new() -> Rigs {
        let (pipe, there) = Pipe::new().expect("pipe");
        let pipe_child = start(Process::new(echo, (there,)));
        let (raw, there) = UnixStream::pair().expect("socketpair");
        let raw_child = start(Process::new(raw_echo, (Handle(there),)));
        let fd =
            rustix::fs::memfd_create(c"turns", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 4096).expect("ftruncate");
        let turns = map_turns(&fd);
        let futex_child = start(Process::new(futex_echo, (Handle(fd),)));
        let (mib, there) = Pipe::new().expect("pipe");
        let mib_child = start(Process::new(sender, (there,)));
        let (raw_mib, there) = UnixStream::pair().expect("socketpair");
        let raw_mib_child = start(Process::new(raw_sender, (Handle(there),)));
        Rigs {
            msg: Msg {
                head: [7; 32],
                tail: [9; 32],
            },
            pipe,
            pipe_child,
            raw,
            raw_child,
            turns,
            turn: 0,
            futex_child,
            mib,
            mib_child,
            raw_mib,
            raw_mib_child,
            buf: vec![0u8; MIB],
        }
    }

    fn pipe_rt(&self) {
        self.pipe.send(black_box(&self.msg)).expect("send");
        black_box(self.pipe.recv::<Msg>().expect("recv"));
    }

    fn raw_rt(&mut self) {
        let mut buf = [1u8; 64];
        self.raw.write_all(black_box(&buf)).expect("write");
        self.raw.read_exact(&mut buf).expect("read");
    }

    fn futex_rt(&mut self) {
        let (t, v) = (self.turns, self.turn);
        give_turn(t, v + 1, &t.child_sleeps);
        wait_turn(t, v + 2, &t.parent_sleeps);
        self.turn += 2;
    }

    /// Asks for `n` MiB and receives them with `recv_bytes_into`.
    fn pipe_mib(&mut self, n: u64) {
        self.mib.send(&n).expect("request");
        for _ in 0..n {
            let got = self
                .mib
                .recv_bytes_into(&mut self.buf)
                .expect("recv_bytes_into");
            assert_eq!(got, MIB);
        }
    }

    /// Asks for `n` MiB and receives them with `recv_bytes`.
    fn pipe_mib_vec(&mut self, n: u64) {
        self.mib.send(&n).expect("request");
        for _ in 0..n {
            let v = self.mib.recv_bytes().expect("recv_bytes");
            assert_eq!(black_box(v).len(), MIB);
        }
    }

    /// Asks for `n` MiB on the raw socketpair and reads them.
    fn raw_mib(&mut self, n: u64) {
        self.raw_mib.write_all(&n.to_le_bytes()).expect("request");
        for _ in 0..n {
            self.raw_mib.read_exact(&mut self.buf).expect("read");
        }
        black_box(&self.buf);
    }

    fn finish(self) {
        give_turn(self.turns, u32::MAX, &self.turns.child_sleeps);
        drop((self.pipe, self.raw, self.mib, self.raw_mib));
        for p in [
            self.pipe_child,
            self.raw_child,
            self.futex_child,
            self.mib_child,
            self.raw_mib_child,
        ] {
            finish(p);
        }
    }
}

/// How long `f` takes.
fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn benches(c: &mut Criterion, rigs: &mut Rigs) {
    let mut group = c.benchmark_group("pipe");
    group.bench_function("roundtrip_64b", |b| b.iter(|| rigs.pipe_rt()));
    group.bench_function("raw_roundtrip_64b", |b| b.iter(|| rigs.raw_rt()));
    group.bench_function("raw_futex_roundtrip", |b| b.iter(|| rigs.futex_rt()));

    group.throughput(Throughput::Bytes(MIB as u64));
    group.sample_size(30);
    group.bench_function("throughput_1mib", |b| {
        b.iter_custom(|iters| timed(|| rigs.pipe_mib(iters)))
    });
    group.bench_function("throughput_1mib_recv_bytes", |b| {
        b.iter_custom(|iters| timed(|| rigs.pipe_mib_vec(iters)))
    });
    group.bench_function("raw_throughput_1mib", |b| {
        b.iter_custom(|iters| timed(|| rigs.raw_mib(iters)))
    });
    group.finish();
}

/// Medians of batches, alternating ours and the raw pairs so that all see
/// the same machine load (criterion measures one after the other).
fn summary(rigs: &mut Rigs) {
    const ROUNDS: usize = 21;
    const RT_BATCH: u32 = 1_000;
    const MIB_BATCH: u64 = 16;
    let mut rt: [Vec<Duration>; 3] = Default::default();
    let mut mib: [Vec<Duration>; 2] = Default::default();
    for round in 0..=ROUNDS {
        let a = timed(|| (0..RT_BATCH).for_each(|_| rigs.pipe_rt())) / RT_BATCH;
        let b = timed(|| (0..RT_BATCH).for_each(|_| rigs.raw_rt())) / RT_BATCH;
        let c = timed(|| (0..RT_BATCH).for_each(|_| rigs.futex_rt())) / RT_BATCH;
        let d = timed(|| rigs.pipe_mib(MIB_BATCH)) / MIB_BATCH as u32;
        let e = timed(|| rigs.raw_mib(MIB_BATCH)) / MIB_BATCH as u32;
        if round > 0 {
            // Round 0 warms up.
            for (v, x) in rt.iter_mut().zip([a, b, c]) {
                v.push(x);
            }
            for (v, x) in mib.iter_mut().zip([d, e]) {
                v.push(x);
            }
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let [p, r, f] = rt.each_mut().map(median);
    let [pm, rm] = mib.each_mut().map(median);
    let gbs = |d: Duration| MIB as f64 / d.as_secs_f64() / 1e9;
    println!(
        "summary: 64-byte round trip, median of {ROUNDS} batches of {RT_BATCH}: \
         Pipe {p:?}, raw socketpair {r:?}, raw futex {f:?}, Pipe/socketpair {:.3}",
        p.as_secs_f64() / r.as_secs_f64()
    );
    println!(
        "summary: 1 MiB into a reused buffer, median of {ROUNDS} batches of {MIB_BATCH}: \
         Pipe {:.2} GB/s, raw socketpair {:.2} GB/s, Pipe/socketpair {:.3}",
        gbs(pm),
        gbs(rm),
        rm.as_secs_f64() / pm.as_secs_f64()
    );
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let mut rigs = Rigs::new();
    benches(&mut c, &mut rigs);
    summary(&mut rigs);
    rigs.finish();
    c.final_summary();
}
