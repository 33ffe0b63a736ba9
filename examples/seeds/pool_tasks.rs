//! Seed program 3 (seeds 000 and 003): a pool of 3 processes running 10
//! tasks of random duration.
//!
//! The Python original creates `Pool(3)`, queues ten `apply_async(worker,
//! (i,))`, prints `start`, then `close()` and `join()`; each task prints a
//! start line with its pid, sleeps a random time up to 2 s and prints its
//! duration. Here the task also returns its timing, which the parent
//! collects through the result handles — Python's version throws it away.

use multiproc::Pool;
use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A small random number in `0..max_ms` without a random-number crate.
fn random_ms(max_ms: u64, salt: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ salt.wrapping_mul(0x9e37_79b9);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % max_ms.max(1)
}

/// The task: announce, sleep a random time, report.
pub fn worker(msg: u32, max_ms: u64) -> (u32, u32, u64) {
    let started = Instant::now();
    let pid = std::process::id();
    println!("    [pid {pid}] task {msg} starts");
    std::thread::sleep(Duration::from_millis(random_ms(max_ms, u64::from(msg))));
    let took = started.elapsed().as_millis() as u64;
    println!("    [pid {pid}] task {msg} done, pid {pid} is free again, took {took} ms");
    (msg, pid, took)
}

/// Runs the program; `quick` shortens the sleeps for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let max_ms = if quick { 400 } else { 2000 };
    println!();
    println!("=== Seed program 3: Pool(3) with 10 tasks of random duration (seeds 000, 003) ===");
    println!("The Python original: Pool(3), apply_async(worker, (i,)) ten times, close(),");
    println!("join(). Notice: only three pids ever appear — a free worker takes the next");
    println!("task — and `start` prints before any task ends, since apply_async does not wait.");
    println!();
    let started = Instant::now();
    let pool = Pool::new(3)?;
    let handles = (0..10)
        .map(|i| pool.apply_async(worker, (i, max_ms)))
        .collect::<Result<Vec<_>, _>>()?;
    println!("main: ------start------");
    pool.close();
    pool.join()?;
    println!(
        "main: -------end------- after {} ms",
        started.elapsed().as_millis()
    );
    let mut pids = Vec::new();
    let mut busy = 0;
    for h in handles {
        let (msg, pid, took) = h.get()?;
        busy += took;
        if !pids.contains(&pid) {
            pids.push(pid);
        }
        let _ = msg;
    }
    println!(
        "main: 10 tasks, {busy} ms of work in {} ms of wall time, on {} worker pids {pids:?}",
        started.elapsed().as_millis(),
        pids.len()
    );
    Ok(())
}
