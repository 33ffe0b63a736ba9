//! The awaitable twins against the blocking calls, in the same run:
//!
//! * `aio/queue_spsc_u64`: 100,000 `u64` items, one producer process → the
//!   bench process, taken with `Queue::get_async` on a current-thread
//!   runtime (`async`) or with `Queue::get` (`blocking`).
//! * `aio/event_ping_pong`: a round trip between two processes over two
//!   `Event`s, both sides awaiting `Event::wait_async` on a current-thread
//!   runtime (`async`) or both calling `Event::wait` (`blocking`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc::{Barrier, Connection, Event, Pipe, Process, Queue};
use std::hint::black_box;
use std::time::{Duration, Instant};

const ITEMS: u64 = 100_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Puts `n` items for each count received on `ctl` (0 ends it).
fn producer(q: Queue<u64>, ctl: Connection) {
    while let Ok(n) = ctl.recv::<u64>() {
        if n == 0 {
            return;
        }
        for i in 0..n {
            q.put(i).unwrap();
        }
    }
}

fn spsc(c: &mut Criterion) {
    let q = Queue::<u64>::new().unwrap();
    let (ctl, there) = Pipe::new().unwrap();
    let mut p = Process::new(producer, (q.clone(), there));
    p.start().unwrap();
    let rt = rt();
    let mut g = c.benchmark_group("aio/queue_spsc_u64");
    g.throughput(Throughput::Elements(ITEMS));
    g.bench_function("async", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                ctl.send(&ITEMS).unwrap();
                rt.block_on(async {
                    let mut sum = 0u64;
                    for _ in 0..ITEMS {
                        sum = sum.wrapping_add(q.get_async().await.unwrap());
                    }
                    black_box(sum);
                });
            }
            t.elapsed()
        })
    });
    g.bench_function("blocking", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                ctl.send(&ITEMS).unwrap();
                let mut sum = 0u64;
                for _ in 0..ITEMS {
                    sum = sum.wrapping_add(q.get().unwrap());
                }
                black_box(sum);
            }
            t.elapsed()
        })
    });
    g.finish();
    ctl.send(&0u64).unwrap();
    p.join().unwrap();
}

fn pong(ping: Event, pong: Event, start: Barrier, rounds: u64, use_async: bool) {
    start.wait().unwrap();
    if use_async {
        rt().block_on(async {
            for _ in 0..rounds {
                ping.wait_async().await;
                ping.clear();
                pong.set();
            }
        });
    } else {
        for _ in 0..rounds {
            ping.wait();
            ping.clear();
            pong.set();
        }
    }
}

fn ping_pong(c: &mut Criterion) {
    let mut g = c.benchmark_group("aio/event_ping_pong");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for (name, use_async) in [("async", true), ("blocking", false)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (ping, pong_e) = (Event::new().unwrap(), Event::new().unwrap());
                let start = Barrier::new(2).unwrap();
                let mut p = Process::new(
                    pong,
                    (
                        ping.clone(),
                        pong_e.clone(),
                        start.clone(),
                        iters,
                        use_async,
                    ),
                );
                p.start().unwrap();
                start.wait().unwrap();
                let rt = rt();
                let t = Instant::now();
                if use_async {
                    rt.block_on(async {
                        for _ in 0..iters {
                            ping.set();
                            pong_e.wait_async().await;
                            pong_e.clear();
                        }
                    });
                } else {
                    for _ in 0..iters {
                        ping.set();
                        pong_e.wait();
                        pong_e.clear();
                    }
                }
                let d = t.elapsed();
                p.join().unwrap();
                d
            })
        });
    }
    g.finish();
}

criterion_group!(benches, spsc, ping_pong);
criterion_main!(benches);
