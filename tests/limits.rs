//! Resource limits (memory, CPU time) on processes and pool workers, and
//! the resource use reported for processes and tasks, across real
//! processes.

mod common;

use common::*;
use multiproc::*;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Allocates (and touches) 64 MiB blocks until something stops it.
fn hog() -> usize {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![1u8; 64 << 20]);
        std::hint::black_box(&blocks);
    }
}

/// Burns CPU until something stops it.
fn spin() -> u64 {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Touches `mib` MiB and returns the sum of a few bytes.
fn touch(mib: usize) -> u64 {
    let v = vec![7u8; mib << 20];
    let v = std::hint::black_box(v);
    v.iter().step_by(4096).map(|&b| u64::from(b)).sum()
}

fn plain_abort() {
    std::process::abort()
}

fn memory_limit_names_the_limit(method: StartMethod) {
    let mut p = Process::new(hog, ())
        .start_method(method)
        .limits(Limits::new().memory(512 * MIB));
    p.start().unwrap();
    assert!(p.join_timeout(Duration::from_secs(60)).unwrap());
    assert_eq!(p.limit_exceeded(), Some(Limit::Memory(512 * MIB)));
    match p.take_result() {
        Err(Error::LimitExceeded {
            limit: Limit::Memory(bytes),
            usage,
        }) => {
            assert_eq!(bytes, 512 * MIB);
            assert!(usage.is_some(), "usage of the reaped child");
        }
        other => panic!("{method}: expected the memory limit, got {other:?}"),
    }
}

#[test]
fn process_memory_limit_is_reported_as_such() {
    for_each_method(memory_limit_names_the_limit);
}

fn cpu_limit_names_the_limit(method: StartMethod) {
    let mut p = Process::new(spin, ())
        .start_method(method)
        .limits(Limits::new().cpu_time(Duration::from_secs(1)));
    p.start().unwrap();
    assert!(p.join_timeout(Duration::from_secs(120)).unwrap());
    match p.take_result() {
        Err(Error::LimitExceeded {
            limit: Limit::CpuTime(d),
            ..
        }) => assert_eq!(d, Duration::from_secs(1)),
        other => panic!("{method}: expected the CPU limit, got {other:?}"),
    }
    let used = p.usage().expect("usage after join");
    assert!(used.cpu_time >= Duration::from_secs(1), "{used:?}");
}

#[test]
fn process_cpu_limit_is_reported_as_such() {
    for_each_method(cpu_limit_names_the_limit);
}

fn within_limits_returns_and_reports_usage(method: StartMethod) {
    let mut p = Process::new(touch, (100,)).start_method(method).limits(
        Limits::new()
            .memory(1024 * MIB)
            .cpu_time(Duration::from_secs(60)),
    );
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.limit_exceeded(), None);
    assert_eq!(p.take_result().unwrap(), 7 * (100 << 20) / 4096);
    let used = p.usage().expect("usage after join");
    assert!(used.peak_rss >= 100 * MIB, "{method}: {used:?}");
    assert!(used.cpu_time > Duration::ZERO, "{method}: {used:?}");
}

#[test]
fn process_within_limits_runs_and_reports_usage() {
    for_each_method(within_limits_returns_and_reports_usage);
}

#[test]
fn process_usage_without_limits() {
    let mut p = Process::new(touch, (100,));
    assert_eq!(p.usage(), None);
    p.start().unwrap();
    p.join().unwrap();
    let used = p.usage().expect("usage after join");
    assert!(used.peak_rss >= 100 * MIB, "{used:?}");
}

/// An abort that is not an allocation failure stays a plain SIGABRT.
#[test]
fn other_abort_under_a_memory_limit_is_not_blamed_on_it() {
    let mut p = Process::new(plain_abort, ()).limits(Limits::new().memory(1024 * MIB));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.limit_exceeded(), None);
    match p.take_result() {
        Err(Error::Killed(sig)) => assert_eq!(sig, libc_sigabrt()),
        other => panic!("expected SIGABRT, got {other:?}"),
    }
}

fn libc_sigabrt() -> i32 {
    6
}
