//! Managers: calls through proxies against the raw round trips they are
//! built on, all across real processes.
//!
//! * `manager/dict_set`, `manager/dict_get`: `d.set(k, v)` / `d.get(&k)` on
//!   a `DictProxy<u64, u64>` from the benchmark process to the manager
//!   process (a child); baseline `manager/raw_socketpair_rtt`: a 64-byte
//!   `write` + `read` on a socketpair to a child echoing it.
//! * `manager/dict_get_pipelined_1000`: 1,000 `d[k]` with the requests in
//!   flight together (`get_many`); `manager/dict_set_pipelined_1000`: the
//!   same with 1,000 `d[k] = v` (`set_many`); `manager/dict_update_10000`: one
//!   `update` of 10,000 keys. Both report keys per second.
//! * `manager/queue_1p1c_10000`: 10,000 `u64` items from a producer process
//!   to the benchmark process through a manager queue, one `put`/`get` per
//!   item; `manager/queue_1p1c_10000_pipelined`: the same with
//!   `put_many`/`get_many`; baseline `manager/raw_queue_server_1p1c_10000`:
//!   the same hand-off with no manager code: a server process with one
//!   thread per client socketpair and a `Mutex<VecDeque>` + `Condvar`, the
//!   producer writing 8-byte items and reading a 1-byte acknowledgement, the
//!   benchmark process writing a 1-byte request and reading an item. Both
//!   pay two request/response round trips through a third process per item.
//! * `manager/start_shutdown`: `Manager::start()` + `shutdown()`.
//! * `manager/remote_connect_first_call`: over TCP 127.0.0.1 to a server
//!   process: `connect` (handshake + ping), `get("get_dict")`, first
//!   `d.set`; `manager/remote_dict_get_tcp`: one `d.get` round trip over
//!   TCP; baseline `manager/raw_tcp_rtt`: a 64-byte request/response over
//!   TCP (`TCP_NODELAY`) to a child echoing it.

use criterion::{Criterion, Throughput};
use multiproc::manager::{self, DictProxy, QueueProxy, Server, objects};
use multiproc::{Connection, Handle, Manager, Pipe, Process};
use std::collections::VecDeque;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

fn raw_echo(sock: Handle<UnixStream>) {
    let mut s = sock.into_inner();
    let mut buf = [0u8; 64];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

fn tcp_echo(ready: Connection) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    ready.send(&l.local_addr().unwrap().port()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

fn serve_tcp(ready: Connection) {
    let mut server = Server::bind("127.0.0.1:0", b"bench").unwrap();
    server
        .register_shared("get_dict", objects::dict())
        .register_shared("get_queue", objects::queue(0));
    ready.send(&server.address().to_string()).unwrap();
    server.serve_forever().unwrap();
}

/// For each count received, puts that many items (after the signal).
fn producer(q: QueueProxy<u64>, ctl: Connection, pipelined: bool) {
    while let Ok(n) = ctl.recv::<u64>() {
        if n == 0 {
            return;
        }
        if pipelined {
            q.put_many(0..n).unwrap();
        } else {
            for i in 0..n {
                q.put(i).unwrap();
            }
        }
    }
}

/// The raw server of `raw_queue_server_1p1c_10000`: a queue behind a mutex,
/// one thread per client.
fn raw_queue_server(prod: Handle<UnixStream>, cons: Handle<UnixStream>) {
    let q = Arc::new((Mutex::new(VecDeque::<[u8; 8]>::new()), Condvar::new()));
    let pq = Arc::clone(&q);
    let mut prod = prod.into_inner();
    let puts = std::thread::spawn(move || {
        let mut item = [0u8; 8];
        while prod.read_exact(&mut item).is_ok() {
            pq.0.lock().unwrap().push_back(item);
            pq.1.notify_one();
            if prod.write_all(&[1]).is_err() {
                break;
            }
        }
    });
    let mut cons = cons.into_inner();
    let mut req = [0u8; 1];
    while cons.read_exact(&mut req).is_ok() {
        let mut g = q.0.lock().unwrap();
        let item = loop {
            match g.pop_front() {
                Some(item) => break item,
                None => g = q.1.wait(g).unwrap(),
            }
        };
        drop(g);
        if cons.write_all(&item).is_err() {
            break;
        }
    }
    puts.join().unwrap();
}

/// The raw producer: for each count received, writes that many items, each
/// followed by reading its acknowledgement.
fn raw_producer(sock: Handle<UnixStream>, ctl: Connection) {
    let mut s = sock.into_inner();
    let mut ack = [0u8; 1];
    while let Ok(n) = ctl.recv::<u64>() {
        if n == 0 {
            return;
        }
        for i in 0..n {
            s.write_all(&i.to_le_bytes()).unwrap();
            s.read_exact(&mut ack).unwrap();
        }
    }
}

fn raw_queue_bench(c: &mut Criterion) {
    let (prod_here, prod_there) = UnixStream::pair().unwrap();
    let (mut cons, cons_there) = UnixStream::pair().unwrap();
    let mut server = started(Process::new(
        raw_queue_server,
        (Handle(prod_there), Handle(cons_there)),
    ));
    let (ctl, there) = Pipe::new().unwrap();
    let mut p = started(Process::new(raw_producer, (Handle(prod_here), there)));
    let mut g = c.benchmark_group("manager");
    g.throughput(Throughput::Elements(QUEUE_ITEMS));
    g.sample_size(10);
    g.bench_function("raw_queue_server_1p1c_10000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut item = [0u8; 8];
            for _ in 0..iters {
                let t = Instant::now();
                ctl.send(&QUEUE_ITEMS).unwrap();
                for _ in 0..QUEUE_ITEMS {
                    cons.write_all(&[0]).unwrap();
                    cons.read_exact(&mut item).unwrap();
                    black_box(item);
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    ctl.send(&0u64).unwrap();
    p.join().unwrap();
    drop(cons);
    server.join().unwrap();
}

fn started(mut p: Process) -> Process {
    p.start().unwrap();
    p
}

const QUEUE_ITEMS: u64 = 10_000;

fn queue_bench(c: &mut Criterion, m: &Manager, pipelined: bool) {
    let q = m.queue::<u64>().unwrap();
    let (ctl, there) = Pipe::new().unwrap();
    let mut p = started(Process::new(producer, (q.clone(), there, pipelined)));
    let mut g = c.benchmark_group("manager");
    g.throughput(Throughput::Elements(QUEUE_ITEMS));
    g.sample_size(10);
    let id = if pipelined {
        "queue_1p1c_10000_pipelined"
    } else {
        "queue_1p1c_10000"
    };
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                ctl.send(&QUEUE_ITEMS).unwrap();
                if pipelined {
                    black_box(q.get_many(QUEUE_ITEMS as usize).unwrap());
                } else {
                    for _ in 0..QUEUE_ITEMS {
                        black_box(q.get().unwrap());
                    }
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    ctl.send(&0u64).unwrap();
    p.join().unwrap();
}

fn benches(c: &mut Criterion) {
    let m = Manager::start().unwrap();
    {
        let mut g = c.benchmark_group("manager");
        let d = m.dict::<u64, u64>().unwrap();
        d.set(7, 7).unwrap();
        let mut i = 0u64;
        g.bench_function("dict_set", |b| {
            b.iter(|| {
                i += 1;
                d.set(black_box(i & 1023), i).unwrap()
            })
        });
        g.bench_function("dict_get", |b| {
            b.iter(|| black_box(d.get(black_box(&7)).unwrap()))
        });

        let (mut here, there) = UnixStream::pair().unwrap();
        let mut echo = started(Process::new(raw_echo, (Handle(there),)));
        let mut buf = [1u8; 64];
        g.bench_function("raw_socketpair_rtt", |b| {
            b.iter(|| {
                here.write_all(black_box(&buf)).unwrap();
                here.read_exact(&mut buf).unwrap();
            })
        });
        drop(here);
        echo.join().unwrap();

        let keys: Vec<u64> = (0..1000).collect();
        d.update(keys.iter().map(|&k| (k, k))).unwrap();
        g.throughput(Throughput::Elements(1000));
        g.bench_function("dict_get_pipelined_1000", |b| {
            b.iter(|| black_box(d.get_many(keys.iter()).unwrap()))
        });
        g.bench_function("dict_set_pipelined_1000", |b| {
            b.iter(|| d.set_many(keys.iter().map(|&k| (k, k))).unwrap())
        });
        g.throughput(Throughput::Elements(10_000));
        g.sample_size(20);
        g.bench_function("dict_update_10000", |b| {
            b.iter(|| d.update((0..10_000u64).map(|k| (k, k))).unwrap())
        });
        g.finish();
    }
    queue_bench(c, &m, false);
    queue_bench(c, &m, true);
    raw_queue_bench(c);
    {
        let mut g = c.benchmark_group("manager");
        g.sample_size(20);
        g.bench_function("start_shutdown", |b| {
            b.iter(|| {
                let mut m = Manager::start().unwrap();
                m.shutdown().unwrap();
            })
        });

        let (ready, there) = Pipe::new().unwrap();
        let mut server = started(Process::new(serve_tcp, (there,)));
        let addr: String = ready.recv().unwrap();
        g.bench_function("remote_connect_first_call", |b| {
            b.iter_with_large_drop(|| {
                let remote = manager::connect(addr.as_str(), b"bench").unwrap();
                let d = remote.get::<DictProxy<u64, u64>>("get_dict").unwrap();
                d.set(1, 1).unwrap();
                d
            })
        });
        let remote = manager::connect(addr.as_str(), b"bench").unwrap();
        let d = remote.get::<DictProxy<u64, u64>>("get_dict").unwrap();
        d.set(1, 1).unwrap();
        g.sample_size(100);
        g.bench_function("remote_dict_get_tcp", |b| {
            b.iter(|| black_box(d.get(black_box(&1)).unwrap()))
        });
        drop(d);
        remote.shutdown_server().unwrap();
        server.join().unwrap();

        let (ready, there) = Pipe::new().unwrap();
        let mut echo = started(Process::new(tcp_echo, (there,)));
        let port: u16 = ready.recv().unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [1u8; 64];
        g.bench_function("raw_tcp_rtt", |b| {
            b.iter(|| {
                s.write_all(black_box(&buf)).unwrap();
                s.read_exact(&mut buf).unwrap();
            })
        });
        drop(s);
        echo.join().unwrap();
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
}
