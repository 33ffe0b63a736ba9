//! Cross-process synchronization against the raw OS primitives, measured in
//! the same run:
//!
//! - uncontended `Lock` acquire+release vs a process-shared
//!   `pthread_mutex_t` living in a shared mapping;
//! - 2 processes x 100,000 locked increments, `Lock` vs `pthread_mutex_t`;
//! - `Event` set/wait ping-pong between two processes vs a raw futex
//!   ping-pong;
//! - `Value<i64>` increments under its lock (one process);
//! - an `Array<f64>` of 10M elements written in bulk by a child vs `memcpy`
//!   into a prefaulted shared mapping.
//!
//! The baselines live in shared memory made by this crate (a `RawArray`
//! segment, mapped by each process at its own address) and call `libc`
//! directly.

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc::{Array, Barrier, Event, Lock, Process, RawArray, Value};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const INCREMENTS: u64 = 100_000;
const ARRAY_LEN: usize = 10_000_000;

// ------------------------------------------------------------ raw baselines

/// A process-shared pthread mutex and a counter in one shared segment.
#[repr(C)]
struct PMutex {
    mutex: libc::pthread_mutex_t,
    counter: u64,
}

fn pmutex_segment() -> RawArray<u8> {
    let seg = RawArray::<u8>::new(std::mem::size_of::<PMutex>()).unwrap();
    let p = seg.as_ptr().cast::<PMutex>();
    // SAFETY: the segment is large enough for a PMutex and 64-aligned; the
    // attribute object is initialised before use and destroyed after.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutex_init(&mut (*p).mutex, &attr);
        libc::pthread_mutexattr_destroy(&mut attr);
    }
    seg
}

fn pmutex(seg: &RawArray<u8>) -> *mut PMutex {
    seg.as_ptr().cast()
}

fn pmutex_increments(seg: RawArray<u8>, start: Barrier, n: u64) -> u64 {
    let p = pmutex(&seg);
    start.wait().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: `p` points to an initialised process-shared mutex in a
        // live mapping; the counter is only touched under the mutex.
        unsafe {
            libc::pthread_mutex_lock(&mut (*p).mutex);
            (*p).counter += 1;
            libc::pthread_mutex_unlock(&mut (*p).mutex);
        }
    }
    t.elapsed().as_nanos() as u64
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: a shared (non-private) FUTEX_WAIT on a live aligned word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: a shared (non-private) FUTEX_WAKE on a live aligned word.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

fn word(seg: &RawArray<u32>) -> &AtomicU32 {
    // SAFETY: the segment holds at least one u32, aligned, alive as long as
    // `seg`; it is only accessed atomically.
    unsafe { AtomicU32::from_ptr(seg.as_ptr()) }
}

/// The responder of the raw ping-pong: waits for 1, answers 0.
fn futex_pong(seg: RawArray<u32>, start: Barrier, rounds: u64) {
    let w = word(&seg);
    start.wait().unwrap();
    for _ in 0..rounds {
        while w.load(Ordering::Acquire) == 0 {
            futex_wait(w, 0);
        }
        w.store(0, Ordering::Release);
        futex_wake(w);
    }
}

fn futex_ping(w: &AtomicU32) {
    w.store(1, Ordering::Release);
    futex_wake(w);
    while w.load(Ordering::Acquire) == 1 {
        futex_wait(w, 1);
    }
}

// ------------------------------------------------------------ ours

fn lock_increments(v: Value<u64>, start: Barrier, n: u64) -> u64 {
    start.wait().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        *v.lock().unwrap() += 1;
    }
    t.elapsed().as_nanos() as u64
}

fn event_pong(ping: Event, pong: Event, start: Barrier, rounds: u64) {
    start.wait().unwrap();
    for _ in 0..rounds {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

/// Writes the whole array from a local buffer; returns the nanoseconds the
/// copy took.
fn array_fill(a: Array<f64>, prefault: bool) -> u64 {
    let src: Vec<f64> = (0..a.len()).map(|i| i as f64).collect();
    if prefault {
        a.prefault().unwrap();
    }
    let mut g = a.lock().unwrap();
    let t = Instant::now();
    g.copy_from_slice(&src);
    let ns = t.elapsed().as_nanos() as u64;
    black_box(&g[0]);
    ns
}

/// The same copy into an anonymous shared mapping prefaulted with
/// MAP_POPULATE, in a child too.
fn memcpy_fill(len: u64) -> u64 {
    let len = len as usize;
    let bytes = len * 8;
    // SAFETY: a fresh anonymous shared mapping, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let src: Vec<f64> = (0..len).map(|i| i as f64).collect();
    let t = Instant::now();
    // SAFETY: `p` is a writable mapping of `bytes` bytes; `src` holds as many.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p.cast::<f64>(), len) };
    let ns = t.elapsed().as_nanos() as u64;
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(p, bytes) };
    ns
}

fn run_child<R>(mut p: Process<R>) -> Process<R>
where
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    p.start().unwrap();
    p
}

fn join<R>(mut p: Process<R>) -> R
where
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    p.join().unwrap();
    p.take_result().unwrap()
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended_acquire_release");
    let lock = Lock::new().unwrap();
    g.bench_function("multiproc_lock", |b| {
        b.iter(|| drop(black_box(lock.acquire().unwrap())))
    });
    let seg = pmutex_segment();
    let p = pmutex(&seg);
    g.bench_function("pthread_mutex_pshared", |b| {
        b.iter(|| {
            // SAFETY: an initialised process-shared mutex in a live mapping.
            unsafe {
                libc::pthread_mutex_lock(black_box(&mut (*p).mutex));
                libc::pthread_mutex_unlock(&mut (*p).mutex);
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("value_i64_locked_increment");
    let v = Value::new(0i64).unwrap();
    g.bench_function("multiproc_value", |b| b.iter(|| *v.lock().unwrap() += 1));
    g.finish();
}

/// The time both children needed from the common start (the later one).
fn slowest(ps: Vec<Process<u64>>) -> Duration {
    Duration::from_nanos(ps.into_iter().map(join).max().unwrap_or(0))
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_processes_100k_increments");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("multiproc_lock", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let v = Value::new(0u64).unwrap();
                let start = Barrier::new(2).unwrap();
                let ps: Vec<_> = (0..2)
                    .map(|_| {
                        run_child(Process::new(
                            lock_increments,
                            (v.clone(), start.clone(), INCREMENTS),
                        ))
                    })
                    .collect();
                total += slowest(ps);
                assert_eq!(v.get(), 2 * INCREMENTS);
            }
            total
        })
    });
    g.bench_function("pthread_mutex_pshared", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let seg = pmutex_segment();
                let start = Barrier::new(2).unwrap();
                let ps: Vec<_> = (0..2)
                    .map(|_| {
                        run_child(Process::new(
                            pmutex_increments,
                            (seg.clone(), start.clone(), INCREMENTS),
                        ))
                    })
                    .collect();
                total += slowest(ps);
                // SAFETY: both children are gone; nobody else touches it.
                assert_eq!(unsafe { (*pmutex(&seg)).counter }, 2 * INCREMENTS);
            }
            total
        })
    });
    g.finish();
}

fn ping_pong(c: &mut Criterion) {
    let mut g = c.benchmark_group("ping_pong_round_trip");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("multiproc_event", |b| {
        b.iter_custom(|iters| {
            let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
            let start = Barrier::new(2).unwrap();
            let p = run_child(Process::new(
                event_pong,
                (ping.clone(), pong.clone(), start.clone(), iters),
            ));
            start.wait().unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                ping.set();
                pong.wait();
                pong.clear();
            }
            let d = t.elapsed();
            join(p);
            d
        })
    });
    g.bench_function("raw_futex", |b| {
        b.iter_custom(|iters| {
            let seg = RawArray::<u32>::new(1).unwrap();
            let start = Barrier::new(2).unwrap();
            let p = run_child(Process::new(
                futex_pong,
                (seg.clone(), start.clone(), iters),
            ));
            let w = word(&seg);
            start.wait().unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                futex_ping(w);
            }
            let d = t.elapsed();
            join(p);
            d
        })
    });
    g.finish();
}

fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulk_write_10M_f64");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(criterion::Throughput::Bytes((ARRAY_LEN * 8) as u64));
    let a = Array::<f64>::new(ARRAY_LEN).unwrap();
    for (name, prefault) in [
        ("multiproc_array_child", false),
        ("multiproc_array_child_prefaulted", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let p = Process::new(array_fill, (a.clone(), prefault));
                        Duration::from_nanos(join(run_child(p)))
                    })
                    .sum()
            })
        });
    }
    g.bench_function("memcpy_prefaulted_shared_child", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    Duration::from_nanos(join(run_child(Process::new(
                        memcpy_fill,
                        (ARRAY_LEN as u64,),
                    ))))
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, uncontended, contended, ping_pong, bulk);
criterion_main!(benches);
