//! The distributed module on a real `redis-server` (feature `redis`),
//! against raw Redis round trips in the same run (issue 13 targets):
//!
//! * `redis/raw_ping`: one `PING` on a blocking connection, the unit of
//!   "Redis round trips";
//! * `redis/put_get`: one `put` then one `get` of a `u64` on a
//!   [`RedisQueue`] (target: ≤ 3 round trips, i.e. ≤ 3 × `raw_ping`);
//! * `redis/raw_stream_put_get`: the Redis commands of one `put` and one
//!   `get` on a stream with a consumer group (`XADD`; `XACK` +
//!   `XREADGROUP` in one pipeline) sent on a raw connection: the floor of
//!   the stream design the queues had before (the pool's queues still
//!   use it);
//! * `redis/raw_list_put_get`: the floor of the queues on lists: `LPUSH`;
//!   then the removal of the item before from a processing list and
//!   `LMOVE` of the next into it, in one pipeline (the queue removes with
//!   `RPOP` and moves with `BLMOVE`, commands of the same cost);
//! * `redis/batched_1000`: `put_many` of 1,000 `u64` then `get_many` of
//!   them (target: ≥ 100,000 items/s);
//! * `redis/pool_map_10k`: a [`RedisPool`] map of a trivial entry point
//!   over 10,000 items with 2 worker programs on this machine (target:
//!   ≥ 20,000 tasks/s, and ≥ 6× the minimal Python pool on Redis of
//!   `bench/compare`).
//!
//! The workers are this bench binary started again with
//! `MULTIPROC_WORKER=URL`. The server is started here (127.0.0.1, a random
//! port, a password, no persistence) and stopped by pid at the end. When
//! no `redis-server` is installed the bench prints why and does nothing.

use criterion::{Criterion, Throughput};
use multiproc::distributed::{Backend, EntryPoint, RedisPool, Registry};
use multiproc::entry_point;
use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

fn inc(x: u64) -> u64 {
    x + 1
}

fn entry() -> EntryPoint<u64, u64> {
    entry_point!(inc)
}

fn registry() -> Registry {
    Registry::new().with(&entry())
}

/// Worker programs (this binary), killed and waited for when dropped.
struct Workers(Vec<Child>);

impl Workers {
    fn start(url: &str, n: usize) -> Workers {
        let exe = std::env::current_exe().expect("the bench binary");
        Workers(
            (0..n)
                .map(|_| {
                    Command::new(&exe)
                        .env("MULTIPROC_WORKER", url)
                        .env("MULTIPROC_POOL", "bench")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::inherit())
                        .spawn()
                        .expect("start a worker program")
                })
                .collect(),
        )
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn have_redis_server() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bench(c: &mut Criterion, server: &redis_support::RedisServer) {
    let url = server.url();
    let backend = Backend::connect(&url).unwrap();
    let mut g = c.benchmark_group("redis");

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_connection().unwrap();
    g.bench_function("raw_ping", |b| {
        b.iter(|| redis::cmd("PING").query::<String>(&mut raw).unwrap())
    });

    let q = backend.queue::<u64>("put_get").unwrap();
    g.bench_function("put_get", |b| {
        b.iter(|| {
            q.put(black_box(7)).unwrap();
            black_box(q.get().unwrap())
        })
    });

    // The floor of a queue on a stream (the design before the lists): an
    // XADD; then the XACK of the item before and an XREADGROUP in one
    // pipeline, on a raw connection.
    let mut rc = client.get_connection().unwrap();
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("raw_stream")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query::<()>(&mut rc)
        .unwrap();
    let mut last: Option<String> = None;
    g.bench_function("raw_stream_put_get", |b| {
        b.iter(|| {
            redis::cmd("XADD")
                .arg("raw_stream")
                .arg("*")
                .arg("d")
                .arg(&[7u8][..])
                .query::<String>(&mut rc)
                .unwrap();
            let mut p = redis::pipe();
            if let Some(id) = last.take() {
                p.cmd("XACK").arg("raw_stream").arg("g").arg(id).ignore();
            }
            p.cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg("raw_stream")
                .arg(">");
            let (r,): (redis::streams::StreamReadReply,) = p.query(&mut rc).unwrap();
            last = Some(r.keys[0].ids[0].id.clone());
        })
    });

    // The same round trips on lists, the queues' core: the item waits in
    // a per-consumer processing list until acknowledged.
    let mut taken = false;
    let item = [7u8; 9];
    g.bench_function("raw_list_put_get", |b| {
        b.iter(|| {
            redis::cmd("LPUSH")
                .arg("raw_list")
                .arg(&item[..])
                .query::<i64>(&mut rc)
                .unwrap();
            let mut p = redis::pipe();
            if taken {
                p.cmd("LREM")
                    .arg("raw_list:taken")
                    .arg(1)
                    .arg(&item[..])
                    .ignore();
            }
            p.cmd("LMOVE")
                .arg("raw_list")
                .arg("raw_list:taken")
                .arg("RIGHT")
                .arg("LEFT");
            let (r,): (Vec<u8>,) = p.query(&mut rc).unwrap();
            taken = true;
            black_box(r)
        })
    });

    let items: Vec<u64> = (0..1000).collect();
    let qb = backend.queue::<u64>("batched").unwrap();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("batched_1000", |b| {
        b.iter(|| {
            qb.put_many(&items).unwrap();
            let mut got = 0;
            while got < items.len() {
                got += qb.get_many(1000, Duration::from_secs(10)).unwrap().len();
            }
            got
        })
    });

    let _workers = Workers::start(&url, 2);
    let pool = RedisPool::new(&backend, "bench", &registry()).unwrap();
    let t0 = Instant::now();
    while pool.size().unwrap() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "workers did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = entry();
    g.sample_size(10);
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("pool_map_10k", |b| {
        b.iter(|| {
            let r = pool.map(&e, 0..10_000u64).unwrap();
            assert_eq!(r.len(), 10_000);
            r
        })
    });
    g.finish();
    drop(pool);
}

fn main() {
    // Started as a worker program: serve until killed.
    registry().serve_if_worker();
    if !have_redis_server() {
        eprintln!("benches/redis.rs: skipped, no redis-server installed");
        return;
    }
    let server = redis_support::RedisServer::start();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &server);
    drop(server);
    c.final_summary();
}
