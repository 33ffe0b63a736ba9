//! Queue throughput between processes, against raw baselines:
//!
//! * `queue/spsc_u64`: 100,000 `u64` items, one producer process → one
//!   consumer process (the bench process). Baseline `raw_pipe`: a pipe with
//!   one `write` and one `read` system call per item.
//! * `queue/mpmc_2x2_u64`: the same 100,000 items, 2 producer processes →
//!   2 consumer processes. Baseline: the same over one pipe.
//! * `queue/mib_1000`: 1,000 items of 1 MiB, one producer process → the
//!   bench process. Baseline `memcpy`: copying the same bytes once in
//!   process, MiB by MiB between two 64 MiB areas (beyond the caches).
//!
//! Criterion ids are `queue/<case>/ours` and `queue/<case>/<baseline>`.
//! Afterwards a summary prints the median rate of each (alternating rounds,
//! so both see the same machine load) and their ratios.

use criterion::{Criterion, Throughput, criterion_group};
use multiproc::{Connection, Handle, Pipe, Process, Queue};
use serde_bytes::ByteBuf;
use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const SMALL: u64 = 100_000;
const MIB: usize = 1 << 20;
const BIG_ITEMS: u64 = 1_000;

/// Commands on a worker's control pipe: a count of items to move (0 ends
/// the worker); the worker answers `()` when done.
fn serve(ctl: Connection, mut work: impl FnMut(u64)) {
    while let Ok(n) = ctl.recv::<u64>() {
        if n == 0 {
            return;
        }
        work(n);
        ctl.send(&()).unwrap();
    }
}

fn queue_producer(q: Queue<u64>, ctl: Connection) {
    serve(ctl, |n| {
        for i in 0..n {
            q.put(i).unwrap();
        }
    });
}

fn queue_consumer(q: Queue<u64>, ctl: Connection) {
    serve(ctl, |n| {
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(q.get().unwrap());
        }
        black_box(sum);
    });
}

fn pipe_producer(w: Handle<File>, ctl: Connection) {
    let mut w = w.0;
    serve(ctl, |n| {
        for i in 0..n {
            // One write(2) per item.
            w.write_all(&i.to_le_bytes()).unwrap();
        }
    });
}

fn pipe_consumer(r: Handle<File>, ctl: Connection) {
    let mut r = r.0;
    serve(ctl, |n| {
        let mut sum = 0u64;
        let mut b = [0u8; 8];
        for _ in 0..n {
            // One read(2) per item (writes of 8 bytes are atomic).
            r.read_exact(&mut b).unwrap();
            sum = sum.wrapping_add(u64::from_le_bytes(b));
        }
        black_box(sum);
    });
}

fn mib_producer(q: Queue<ByteBuf>, ctl: Connection) {
    let item = ByteBuf::from(vec![0x5a; MIB]);
    serve(ctl, |n| {
        for _ in 0..n {
            q.put_ref(&item).unwrap();
        }
    });
}

/// A set of worker processes driven over control pipes; the bench process
/// may take part itself through `local`.
struct Rig {
    producers: Vec<(Process, Connection)>,
    consumers: Vec<(Process, Connection)>,
}

impl Rig {
    /// Moves `n` items in total; returns the time from the start command
    /// to the last consumer's completion (`local` runs in between, in this
    /// process, and may consume too).
    fn run(&self, n: u64, local: impl FnOnce()) -> Duration {
        let parts = (self.producers.len() as u64).max(1);
        let cparts = (self.consumers.len() as u64).max(1);
        let t = Instant::now();
        for (_, c) in &self.consumers {
            c.send(&(n / cparts)).unwrap();
        }
        for (_, c) in &self.producers {
            c.send(&(n / parts)).unwrap();
        }
        local();
        for (_, c) in &self.consumers {
            c.recv::<()>().unwrap();
        }
        let took = t.elapsed();
        for (_, c) in &self.producers {
            c.recv::<()>().unwrap();
        }
        took
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for (p, c) in self.producers.iter_mut().chain(self.consumers.iter_mut()) {
            let _ = c.send(&0u64);
            let _ = p.join();
        }
    }
}

fn spawn<F, A>(f: F, a: A) -> (Process, Connection)
where
    F: multiproc::Target<(A, Connection), Output = ()>,
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let (here, there) = Pipe::new().unwrap();
    let mut p = Process::new(f, (a, there));
    p.start().unwrap();
    (p, here)
}

fn pipe_pair() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2 failed");
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (File::from(r), File::from(w))
}

struct Cases {
    spsc_q: Queue<u64>,
    spsc: Rig,
    spsc_pipe_r: File,
    spsc_pipe: Rig,
    mpmc: Rig,
    mpmc_pipe: Rig,
    mib_q: Queue<ByteBuf>,
    mib: Rig,
}

fn cases() -> Cases {
    let spsc_q = Queue::new().unwrap();
    let spsc = Rig {
        producers: vec![spawn(queue_producer, spsc_q.clone())],
        consumers: vec![],
    };
    let (r, w) = pipe_pair();
    let spsc_pipe = Rig {
        producers: vec![spawn(pipe_producer, Handle(w))],
        consumers: vec![],
    };
    let q2 = Queue::new().unwrap();
    let mpmc = Rig {
        producers: (0..2).map(|_| spawn(queue_producer, q2.clone())).collect(),
        consumers: (0..2).map(|_| spawn(queue_consumer, q2.clone())).collect(),
    };
    let (r2, w2) = pipe_pair();
    let mpmc_pipe = Rig {
        producers: (0..2)
            .map(|_| spawn(pipe_producer, Handle(w2.try_clone().unwrap())))
            .collect(),
        consumers: (0..2)
            .map(|_| spawn(pipe_consumer, Handle(r2.try_clone().unwrap())))
            .collect(),
    };
    let mib_q = Queue::new().unwrap();
    let mib = Rig {
        producers: vec![spawn(mib_producer, mib_q.clone())],
        consumers: vec![],
    };
    Cases {
        spsc_q,
        spsc,
        spsc_pipe_r: r,
        spsc_pipe,
        mpmc,
        mpmc_pipe,
        mib_q,
        mib,
    }
}

fn spsc_ours(c: &Cases) -> Duration {
    c.spsc.run(SMALL, || {
        let mut sum = 0u64;
        for _ in 0..SMALL {
            sum = sum.wrapping_add(c.spsc_q.get().unwrap());
        }
        black_box(sum);
    })
}

fn spsc_pipe(c: &Cases) -> Duration {
    let mut r = &c.spsc_pipe_r;
    c.spsc_pipe.run(SMALL, || {
        let mut b = [0u8; 8];
        let mut sum = 0u64;
        for _ in 0..SMALL {
            r.read_exact(&mut b).unwrap();
            sum = sum.wrapping_add(u64::from_le_bytes(b));
        }
        black_box(sum);
    })
}

fn mib_ours(c: &Cases) -> Duration {
    c.mib.run(BIG_ITEMS, || {
        for _ in 0..BIG_ITEMS {
            black_box(c.mib_q.get().unwrap());
        }
    })
}

/// Copies 1,000 MiB, one MiB at a time, between two 64 MiB areas (larger
/// than the caches, like the queue's traffic).
fn mib_memcpy(src: &[u8], dst: &mut [u8]) -> Duration {
    let slots = src.len() / MIB;
    let t = Instant::now();
    for i in 0..BIG_ITEMS as usize {
        let k = (i % slots) * MIB;
        dst[k..k + MIB].copy_from_slice(black_box(&src[k..k + MIB]));
        black_box(&mut *dst);
    }
    t.elapsed()
}

fn total(iters: u64, mut f: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| f()).sum()
}

fn bench(c: &mut Criterion) {
    let cs = cases();
    let mut g = c.benchmark_group("queue/spsc_u64");
    g.throughput(Throughput::Elements(SMALL));
    g.bench_function("ours", |b| b.iter_custom(|n| total(n, || spsc_ours(&cs))));
    g.bench_function("raw_pipe", |b| {
        b.iter_custom(|n| total(n, || spsc_pipe(&cs)))
    });
    g.finish();

    let mut g = c.benchmark_group("queue/mpmc_2x2_u64");
    g.throughput(Throughput::Elements(SMALL));
    g.bench_function("ours", |b| {
        b.iter_custom(|n| total(n, || cs.mpmc.run(SMALL, || {})))
    });
    g.bench_function("raw_pipe", |b| {
        b.iter_custom(|n| total(n, || cs.mpmc_pipe.run(SMALL, || {})))
    });
    g.finish();

    let mut g = c.benchmark_group("queue/mib_1000");
    g.throughput(Throughput::Bytes(BIG_ITEMS * MIB as u64));
    g.bench_function("ours", |b| b.iter_custom(|n| total(n, || mib_ours(&cs))));
    let src = vec![0x5au8; 64 * MIB];
    let mut dst = vec![1u8; 64 * MIB];
    g.bench_function("memcpy", |b| {
        b.iter_custom(|n| total(n, || mib_memcpy(&src, &mut dst)))
    });
    g.finish();
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Medians of alternating rounds of ours and the baseline, as rates.
fn summary() {
    const ROUNDS: usize = 11;
    let cs = cases();
    let src = vec![0x5au8; 64 * MIB];
    let mut dst = vec![1u8; 64 * MIB];
    let mut m: [Vec<Duration>; 6] = Default::default();
    for _ in 0..ROUNDS {
        m[0].push(spsc_ours(&cs));
        m[1].push(spsc_pipe(&cs));
        m[2].push(cs.mpmc.run(SMALL, || {}));
        m[3].push(cs.mpmc_pipe.run(SMALL, || {}));
        m[4].push(mib_ours(&cs));
        m[5].push(mib_memcpy(&src, &mut dst));
    }
    let rate = |d: Duration, n: f64| n / d.as_secs_f64();
    let med: Vec<Duration> = m.iter_mut().map(|v| median(v)).collect();
    let small = SMALL as f64;
    let bytes = (BIG_ITEMS as usize * MIB) as f64;
    let line = |name: &str, unit: &str, ours: f64, base: f64, base_name: &str| {
        println!(
            "summary: {name}: ours {ours:.3e} {unit}, {base_name} {base:.3e} {unit}, ratio {:.2}",
            ours / base
        );
    };
    line(
        "queue/spsc_u64 (median of 11 runs of 100,000 items)",
        "items/s",
        rate(med[0], small),
        rate(med[1], small),
        "raw_pipe",
    );
    line(
        "queue/mpmc_2x2_u64",
        "items/s",
        rate(med[2], small),
        rate(med[3], small),
        "raw_pipe",
    );
    line(
        "queue/mib_1000",
        "B/s",
        rate(med[4], bytes),
        rate(med[5], bytes),
        "memcpy",
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    summary();
    Criterion::default().configure_from_args().final_summary();
}
