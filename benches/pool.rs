//! Pool throughput and start-up cost (issue targets, 2-core machine):
//! `Pool(2)` map of a trivial function over 20,000 items with chunksize 1
//! (≥ 300,000 tasks/s), 10,000 `apply_async` then get all (≥ 200,000
//! tasks/s), map over 100,000 items with the default chunksize, and
//! `Pool(2)` create + close + join (≤ 1 ms).
//!
//! The raw column of the two per-task rows is a raw pipe pool
//! (`raw_pipe_pool_20k`, `raw_pipe_pool_10k`): two children forked before
//! anything else starts, each on a socketpair; per task the parent writes
//! 8 bytes and reads the 8-byte answer, the child reads 8 bytes and writes
//! 8 bytes (one system call each), with up to 64 tasks in flight per child
//! like the pool's own pipelining.
//!
//! Besides criterion's report, prints each median and the task rate.

use criterion::{Criterion, criterion_group};
use multiproc::Pool;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Tasks in flight per child of the raw pool.
const RAW_WINDOW: usize = 64;

/// Two children that answer `x + 1` to each 8-byte `x`, over socketpairs.
struct RawPool {
    socks: Vec<UnixStream>,
    pids: Vec<libc::pid_t>,
}

/// The raw child: one read and one write per task, `_exit` at end of stream.
fn raw_child(fd: RawFd) -> ! {
    let mut buf = [0u8; 8];
    loop {
        let mut got = 0;
        while got < 8 {
            // SAFETY: `buf[got..]` is valid for `8 - got` bytes.
            let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), 8 - got) };
            if n == 0 {
                // SAFETY: `_exit` is async-signal-safe and ends the child.
                unsafe { libc::_exit(0) };
            }
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // SAFETY: as above.
                unsafe { libc::_exit(1) };
            }
            got += n as usize;
        }
        let x = u64::from_le_bytes(buf).wrapping_add(1).to_le_bytes();
        let mut put = 0;
        while put < 8 {
            // SAFETY: `x[put..]` is valid for `8 - put` bytes.
            let n = unsafe { libc::write(fd, x[put..].as_ptr().cast(), 8 - put) };
            if n <= 0 {
                // SAFETY: as above.
                unsafe { libc::_exit(1) };
            }
            put += n as usize;
        }
    }
}

impl RawPool {
    /// Forks the two children; call before any thread starts.
    fn new() -> RawPool {
        let mut socks = Vec::new();
        let mut pids = Vec::new();
        for _ in 0..2 {
            let (here, there) = UnixStream::pair().expect("socketpair");
            // SAFETY: called while this process has one thread; the child
            // only makes async-signal-safe calls (read, write, _exit).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                drop(here);
                raw_child(there.as_raw_fd());
            }
            drop(there);
            socks.push(here);
            pids.push(pid);
        }
        RawPool { socks, pids }
    }

    /// `n` tasks, round robin, at most [`RAW_WINDOW`] in flight per child.
    fn run(&mut self, n: u64) {
        let mut sent = [0usize; 2];
        let mut got = [0usize; 2];
        let mut buf = [0u8; 8];
        let mut sum = 0u64;
        for i in 0..n {
            let c = (i % 2) as usize;
            if sent[c] - got[c] == RAW_WINDOW {
                self.socks[c].read_exact(&mut buf).expect("raw read");
                sum = sum.wrapping_add(u64::from_le_bytes(buf));
                got[c] += 1;
            }
            self.socks[c]
                .write_all(&i.to_le_bytes())
                .expect("raw write");
            sent[c] += 1;
        }
        for c in 0..2 {
            while got[c] < sent[c] {
                self.socks[c].read_exact(&mut buf).expect("raw read");
                sum = sum.wrapping_add(u64::from_le_bytes(buf));
                got[c] += 1;
            }
        }
        assert_eq!(sum, (1..=n).sum::<u64>());
    }
}

impl Drop for RawPool {
    fn drop(&mut self) {
        self.socks.clear();
        for &pid in &self.pids {
            let mut status = 0;
            // SAFETY: `pid` is our child; `status` is a valid out-pointer.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

fn inc(x: u64) -> u64 {
    x + 1
}

fn map_chunk1(pool: &Pool) {
    let r = pool.map_chunked(inc, 0..20_000u64, 1).unwrap();
    assert_eq!(r.len(), 20_000);
}

fn apply_async_all(pool: &Pool) {
    let rs: Vec<_> = (0..10_000u64)
        .map(|i| pool.apply_async(inc, (i,)).unwrap())
        .collect();
    for r in rs {
        black_box(r.get().unwrap());
    }
}

fn map_default(pool: &Pool) {
    let r = pool.map(inc, 0..100_000u64).unwrap();
    assert_eq!(r.len(), 100_000);
}

fn create_close_join() {
    let pool = Pool::new(2).unwrap();
    pool.close();
    pool.join().unwrap();
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn bench(c: &mut Criterion) {
    // Forked before the pool's supervisor thread exists.
    let mut raw = RawPool::new();
    let pool = Pool::new(2).unwrap();
    let mut g = c.benchmark_group("pool");
    g.sample_size(10);
    g.bench_function("map_20k_chunksize_1", |b| b.iter(|| map_chunk1(&pool)));
    g.bench_function("raw_pipe_pool_20k", |b| b.iter(|| raw.run(20_000)));
    g.bench_function("apply_async_10k_get_all", |b| {
        b.iter(|| apply_async_all(&pool))
    });
    g.bench_function("raw_pipe_pool_10k", |b| b.iter(|| raw.run(10_000)));
    g.bench_function("map_100k_default_chunksize", |b| {
        b.iter(|| map_default(&pool))
    });
    g.bench_function("create_close_join_2", |b| b.iter(create_close_join));
    g.finish();

    println!();
    let rate = |n: f64, d: Duration| n / d.as_secs_f64();
    let d = median(|| map_chunk1(&pool), 15);
    println!(
        "median: Pool(2) map 20,000 chunksize 1: {:.2} ms = {:.0} tasks/s",
        d.as_secs_f64() * 1e3,
        rate(20_000.0, d)
    );
    let raw20 = median(|| raw.run(20_000), 15);
    println!(
        "median: raw pipe pool 20,000 tasks: {:.2} ms = {:.0} tasks/s (ours/raw rate {:.2})",
        raw20.as_secs_f64() * 1e3,
        rate(20_000.0, raw20),
        raw20.as_secs_f64() / d.as_secs_f64()
    );
    let d = median(|| apply_async_all(&pool), 15);
    println!(
        "median: 10,000 apply_async + get: {:.2} ms = {:.0} tasks/s",
        d.as_secs_f64() * 1e3,
        rate(10_000.0, d)
    );
    let raw10 = median(|| raw.run(10_000), 15);
    println!(
        "median: raw pipe pool 10,000 tasks: {:.2} ms = {:.0} tasks/s (ours/raw rate {:.2})",
        raw10.as_secs_f64() * 1e3,
        rate(10_000.0, raw10),
        raw10.as_secs_f64() / d.as_secs_f64()
    );
    let d = median(|| map_default(&pool), 15);
    println!(
        "median: map 100,000 default chunksize: {:.2} ms = {:.0} items/s",
        d.as_secs_f64() * 1e3,
        rate(100_000.0, d)
    );
    let d = median(create_close_join, 31);
    println!(
        "median: Pool(2) create + close + join: {:.3} ms",
        d.as_secs_f64() * 1e3
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
