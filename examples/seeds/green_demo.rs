//! Seed 000's small gevent demo, on `multiproc::green`: two coroutines that
//! `sleep` and switch, `spawn`, `join`, `joinall`.
//!
//! The Python original:
//!
//! ```python
//! def f(n):
//!     for i in range(n):
//!         print(gevent.getcurrent(), i)
//!         gevent.sleep(0)
//! g1 = gevent.spawn(f, 3); g2 = gevent.spawn(f, 3)
//! g1.join(); g2.join()                 # or gevent.joinall([g1, g2])
//! ```
//!
//! Each `sleep` hands the thread to the other coroutine, so their lines
//! interleave.

use multiproc::green;
use std::error::Error;
use std::time::{Duration, Instant};

async fn count(name: &'static str, n: u32, nap: Duration, quiet: bool) -> u32 {
    for i in 0..n {
        if !quiet {
            println!("  {name} {i}");
        }
        green::sleep(nap).await;
    }
    n
}

pub fn run(short: bool) -> Result<(), Box<dyn Error>> {
    println!("== seed 000: gevent demo (spawn, join, joinall, sleep) ==");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // spawn + join: the two coroutines take turns at every sleep(0).
        let g1 = green::spawn(count("g1", 3, Duration::ZERO, false));
        let g2 = green::spawn(count("g2", 3, Duration::ZERO, false));
        g1.join(None).await;
        g2.join(None).await;
        println!(
            "  joined: g1 -> {:?}, g2 -> {:?}",
            g1.get().await,
            g2.get().await
        );

        // joinall: many coroutines sleeping at once take the time of one.
        let n = if short { 100 } else { 1000 };
        let t0 = Instant::now();
        let gs: Vec<_> = (0..n)
            .map(|_| green::spawn(count("worker", 1, Duration::from_millis(100), true)))
            .collect();
        let refs: Vec<_> = gs.iter().collect();
        let done = green::joinall(&refs, None, true, None).await?;
        println!(
            "  joinall: {} coroutines that each sleep 100 ms finished in {:.0} ms",
            done.len(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        Ok::<(), Box<dyn Error>>(())
    })
}
