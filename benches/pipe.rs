//! `Pipe` round trips and throughput against a raw socketpair, both across
//! processes, measured in the same run.
//!
//! Benchmarks (group `pipe`):
//!
//! * `roundtrip_64b`: `send` + `recv` of a 64-byte typed message through
//!   `Pipe::new()` to a child that echoes it with `recv` + `send`.
//! * `raw_roundtrip_64b`: `write` + `read` of 64 bytes on a plain socketpair
//!   to a child that echoes them with plain `read` + `write`.
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
//! Run with `cargo bench --bench pipe` or through `bench/compare`.

use criterion::{Criterion, Throughput};
use multiproc::{Connection, Handle, Pipe, Process};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
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

fn start(mut p: Process) -> Process {
    p.start().expect("start child");
    p
}

fn finish(mut p: Process) {
    p.join().expect("join child");
    assert_eq!(p.exitcode(), Some(0));
}

fn benches(c: &mut Criterion) {
    let msg = Msg {
        head: [7; 32],
        tail: [9; 32],
    };
    let mut group = c.benchmark_group("pipe");

    {
        let (here, there) = Pipe::new().expect("pipe");
        let child = start(Process::new(echo, (there,)));
        group.bench_function("roundtrip_64b", |b| {
            b.iter(|| {
                here.send(black_box(&msg)).expect("send");
                black_box(here.recv::<Msg>().expect("recv"))
            })
        });
        drop(here);
        finish(child);
    }
    {
        let (mut here, there) = UnixStream::pair().expect("socketpair");
        let child = start(Process::new(raw_echo, (Handle(there),)));
        let mut buf = [1u8; 64];
        group.bench_function("raw_roundtrip_64b", |b| {
            b.iter(|| {
                here.write_all(black_box(&buf)).expect("write");
                here.read_exact(&mut buf).expect("read");
            })
        });
        drop(here);
        finish(child);
    }

    group.throughput(Throughput::Bytes(MIB as u64));
    group.sample_size(30);
    {
        let (here, there) = Pipe::new().expect("pipe");
        let child = start(Process::new(sender, (there,)));
        let mut buf = vec![0u8; MIB];
        group.bench_function("throughput_1mib", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                here.send(&iters).expect("request");
                for _ in 0..iters {
                    let n = here.recv_bytes_into(&mut buf).expect("recv_bytes_into");
                    assert_eq!(n, MIB);
                }
                t.elapsed()
            })
        });
        group.bench_function("throughput_1mib_recv_bytes", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                here.send(&iters).expect("request");
                for _ in 0..iters {
                    let v = here.recv_bytes().expect("recv_bytes");
                    assert_eq!(black_box(v).len(), MIB);
                }
                t.elapsed()
            })
        });
        drop(here);
        finish(child);
    }
    {
        let (mut here, there) = UnixStream::pair().expect("socketpair");
        let child = start(Process::new(raw_sender, (Handle(there),)));
        let mut buf = vec![0u8; MIB];
        group.bench_function("raw_throughput_1mib", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                here.write_all(&iters.to_le_bytes()).expect("request");
                for _ in 0..iters {
                    here.read_exact(&mut buf).expect("read");
                }
                black_box(&buf);
                t.elapsed()
            })
        });
        drop(here);
        finish(child);
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
}
