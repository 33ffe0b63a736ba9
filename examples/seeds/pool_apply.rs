//! Seed program 11 (seed 002): `apply_async` versus `apply` on a pool of 3.
//!
//! The Python original queues nine one-second tasks `hello1`…`hello9`,
//! first with `apply_async` (non-blocking: three run at a time, starts and
//! ends interleave) and then with `apply` (blocking: each task ends before
//! the next starts). The order of the lines shows the difference; here the
//! parent also records the order in which the results came back.

use multiproc::Pool;
use std::error::Error;
use std::time::{Duration, Instant};

/// The task: a start line, a sleep, an end line.
pub fn worker(msg: String, ms: u64) -> String {
    println!("    #######start {msg}########");
    std::thread::sleep(Duration::from_millis(ms));
    println!("    #######end   {msg}########");
    msg
}

/// Runs the program; `quick` shortens the sleeps for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let ms = if quick { 150 } else { 1000 };
    println!();
    println!("=== Seed program 11: Pool apply_async vs apply ordering (seed 002) ===");
    println!("The Python original: Pool(processes=3) runs hello1..hello9, first with");
    println!("apply_async (three at a time, starts and ends interleave), then with apply");
    println!("(one at a time: each ends before the next starts).");
    println!();

    println!("-- non-blocking: apply_async");
    let pool = Pool::new(3)?;
    let started = Instant::now();
    let handles = (1..10)
        .map(|i| pool.apply_async(worker, (format!("hello{i}"), ms)))
        .collect::<Result<Vec<_>, _>>()?;
    pool.close();
    pool.join()?;
    let order = handles
        .into_iter()
        .map(|h| h.get())
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "main end: 9 tasks of {ms} ms in {} ms (three at a time); results in submission order {order:?}",
        started.elapsed().as_millis()
    );

    println!();
    println!("-- blocking: apply");
    let pool = Pool::new(3)?;
    let started = Instant::now();
    for i in 1..10 {
        let back = pool.apply(worker, (format!("hello{i}"), ms))?;
        println!("main: apply returned {back}");
    }
    pool.close();
    pool.join()?;
    println!(
        "main end: 9 tasks of {ms} ms in {} ms (one at a time)",
        started.elapsed().as_millis()
    );
    Ok(())
}
