//! Pool and executor acceptance tests (CPython's _TestPool, _TestPoolWorkerLifetime,
//! _TestPoolWorkerErrors and the concurrent.futures fault matrix), plus the faults
//! CPython's pool cannot survive.

mod common;

use multiproc::{Error, Executor, Pool, StartMethod};
use std::time::{Duration, Instant};

fn sqr(x: i64) -> i64 {
    x * x
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[test]
fn w01_apply() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(sqr, (5,)).unwrap(), 25);
    assert_eq!(pool.apply(add, (3, 4)).unwrap(), 7);
}

#[test]
fn w02_map() {
    let pool = Pool::new(2).unwrap();
    let want: Vec<i64> = (0..10).map(sqr).collect();
    assert_eq!(pool.map(sqr, 0..10).unwrap(), want);
    let want: Vec<i64> = (0..100).map(sqr).collect();
    assert_eq!(pool.map_chunked(sqr, 0..100, 20).unwrap(), want);
}
