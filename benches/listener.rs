//! Round trip of a 64-byte message over a Listener/Client connection on a
//! Unix socket, against the same exchange written by hand on a std
//! `UnixStream` with the same framing (4-byte big-endian length). In both
//! cases a thread echoes every message back.
//!
//! Besides criterion's report, prints the median round trip of each and
//! their ratio (target: ours ≤ 1.25× raw).

use criterion::{Criterion, criterion_group};
use multiproc::{Client, Connection, Listener};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MSG: [u8; 64] = [7u8; 64];

fn sock_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("multiproc-bench-{tag}-{}.sock", std::process::id()))
}

/// Our pair: the returned connection talks to an echo thread.
fn ours() -> Connection {
    let path = sock_path("ours");
    let listener = Listener::bind(path.as_path(), Some(b"bench")).unwrap();
    std::thread::spawn(move || {
        let c = Client::connect(path.as_path(), Some(b"bench")).unwrap();
        while let Ok(m) = c.recv_bytes() {
            c.send_bytes(&m).unwrap();
        }
    });
    listener.accept().unwrap()
}

fn ours_round_trip(c: &Connection) {
    c.send_bytes(black_box(&MSG)).unwrap();
    let back = c.recv_bytes().unwrap();
    assert_eq!(back.len(), MSG.len());
}

/// The raw pair: same framing by hand, one write and two exact reads per
/// message on each side.
fn raw() -> UnixStream {
    let path = sock_path("raw");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut s = UnixStream::connect(&path).unwrap();
        let mut buf = Vec::new();
        loop {
            let mut h = [0u8; 4];
            if s.read_exact(&mut h).is_err() {
                break;
            }
            let n = i32::from_be_bytes(h) as usize;
            buf.clear();
            buf.extend_from_slice(&h);
            buf.resize(4 + n, 0);
            s.read_exact(&mut buf[4..]).unwrap();
            s.write_all(&buf).unwrap();
        }
        let _ = std::fs::remove_file(&path);
    });
    listener.accept().unwrap().0
}

fn raw_round_trip(s: &mut UnixStream, frame: &[u8], back: &mut Vec<u8>) {
    s.write_all(black_box(frame)).unwrap();
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    back.resize(i32::from_be_bytes(h) as usize, 0);
    s.read_exact(back).unwrap();
}

fn raw_frame() -> Vec<u8> {
    let mut f = (MSG.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&MSG);
    f
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip_64B_unix");
    let conn = ours();
    g.bench_function("listener_client", |b| b.iter(|| ours_round_trip(&conn)));
    let mut s = raw();
    let frame = raw_frame();
    let mut back = Vec::new();
    g.bench_function("raw_unix_stream", |b| {
        b.iter(|| raw_round_trip(&mut s, &frame, &mut back))
    });
    g.finish();
}

/// Medians of batches of round trips, alternating the two so that both see
/// the same machine load.
fn summary() {
    const BATCH: u32 = 2_000;
    const ROUNDS: usize = 31;
    let conn = ours();
    let mut s = raw();
    let frame = raw_frame();
    let mut back = Vec::new();
    for _ in 0..BATCH {
        ours_round_trip(&conn);
        raw_round_trip(&mut s, &frame, &mut back);
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..BATCH {
            ours_round_trip(&conn);
        }
        a.push(t.elapsed() / BATCH);
        let t = Instant::now();
        for _ in 0..BATCH {
            raw_round_trip(&mut s, &frame, &mut back);
        }
        b.push(t.elapsed() / BATCH);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (ours_m, raw_m) = (median(&mut a), median(&mut b));
    println!(
        "summary: 64-byte round trip, median of {ROUNDS} batches of {BATCH}: \
         Listener/Client {ours_m:?}, raw UnixStream {raw_m:?}, ratio {:.3}",
        ours_m.as_secs_f64() / raw_m.as_secs_f64()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    summary();
    Criterion::default().configure_from_args().final_summary();
}
