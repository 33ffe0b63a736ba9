//! Handing a large buffer to another process with [`SharedBytes`], against
//! copying the same bytes once in process:
//!
//! * `shared_<size>/pipe`: the bench process sends a `SharedBytes` of
//!   `<size>` through a `Pipe` to a child, which receives it (checks the
//!   seals, maps it), reads its first and last byte and answers with them.
//! * `shared_<size>/queue`: the same through a `Queue<SharedBytes>` (the
//!   answer comes back on a pipe).
//! * `shared_<size>/memcpy`: one copy of `<size>` bytes between two areas
//!   of this process (what sending an owned buffer costs at the least, on
//!   each side).
//!
//! Sizes: 1 MiB, 64 MiB, 1 GiB. The buffers are built once, outside the
//! timing. Each iteration is one hand-off (and a small answer).

use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use multiproc::{Connection, Pipe, Process, Queue, SharedBytes, SharedBytesMut};
use std::hint::black_box;
use std::time::Duration;

const MIB: usize = 1 << 20;
const SIZES: [(&str, usize); 3] = [("1mib", MIB), ("64mib", 64 * MIB), ("1gib", 1024 * MIB)];

/// Receives buffers on `c` and answers with their first and last byte; a
/// `None` ends.
fn pipe_peer(c: Connection) {
    while let Ok(Some(b)) = c.recv::<Option<SharedBytes>>() {
        let ends = (b[0], b[b.len() - 1]);
        c.send(&ends).unwrap();
    }
}

/// Takes buffers from `q` and answers on `c`; a `None` ends.
fn queue_peer(q: Queue<Option<SharedBytes>>, c: Connection) {
    while let Ok(Some(b)) = q.get() {
        let ends = (b[0], b[b.len() - 1]);
        c.send(&ends).unwrap();
    }
}

fn buffer(len: usize) -> SharedBytes {
    let mut m = SharedBytesMut::with_len(len).unwrap();
    m.fill(0x5a);
    m[len - 1] = 0xa5;
    m.freeze().unwrap()
}

fn bench(c: &mut Criterion) {
    let (here, there) = Pipe::new().unwrap();
    let mut pp = Process::new(pipe_peer, (there,));
    pp.start().unwrap();
    let q: Queue<Option<SharedBytes>> = Queue::new().unwrap();
    let (qhere, qthere) = Pipe::new().unwrap();
    let mut qp = Process::new(queue_peer, (q.clone(), qthere));
    qp.start().unwrap();

    for (name, len) in SIZES {
        let b = buffer(len);
        let mut g = c.benchmark_group(format!("shared_{name}"));
        g.throughput(Throughput::Bytes(len as u64));
        g.sampling_mode(SamplingMode::Flat);
        if len >= 64 * MIB {
            g.sample_size(10);
        }
        g.bench_function("pipe", |bn| {
            bn.iter(|| {
                here.send(&Some(b.clone())).unwrap();
                black_box(here.recv::<(u8, u8)>().unwrap())
            })
        });
        g.bench_function("queue", |bn| {
            bn.iter(|| {
                q.put(Some(b.clone())).unwrap();
                black_box(qhere.recv::<(u8, u8)>().unwrap())
            })
        });
        let src = vec![0x5au8; len];
        let mut dst = vec![1u8; len];
        g.bench_function("memcpy", |bn| {
            bn.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
        g.finish();
    }

    here.send(&None::<SharedBytes>).unwrap();
    q.put(None).unwrap();
    pp.join().unwrap();
    qp.join().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
