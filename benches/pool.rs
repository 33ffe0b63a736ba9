//! Pool throughput and start-up cost (issue targets, 2-core machine):
//! `Pool(2)` map of a trivial function over 20,000 items with chunksize 1
//! (≥ 300,000 tasks/s), 10,000 `apply_async` then get all (≥ 200,000
//! tasks/s), map over 100,000 items with the default chunksize, and
//! `Pool(2)` create + close + join (≤ 1 ms).
//!
//! Besides criterion's report, prints each median and the task rate.

use criterion::{Criterion, criterion_group};
use multiproc::Pool;
use std::hint::black_box;
use std::time::{Duration, Instant};

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
    let pool = Pool::new(2).unwrap();
    let mut g = c.benchmark_group("pool");
    g.sample_size(10);
    g.bench_function("map_20k_chunksize_1", |b| b.iter(|| map_chunk1(&pool)));
    g.bench_function("apply_async_10k_get_all", |b| {
        b.iter(|| apply_async_all(&pool))
    });
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
    let d = median(|| apply_async_all(&pool), 15);
    println!(
        "median: 10,000 apply_async + get: {:.2} ms = {:.0} tasks/s",
        d.as_secs_f64() * 1e3,
        rate(10_000.0, d)
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
