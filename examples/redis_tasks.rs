//! Starts W worker programs (this binary, `--multiproc-worker URL`), submits
//! N tasks through Redis (each returns its input squared after a short
//! random sleep) and checks every result came exactly once.
//!
//! ```text
//! cargo run --features redis --example redis_tasks -- redis://:PASSWORD@127.0.0.1:6379/0 --workers 2 --tasks 1000 [--kill-one]
//! ```
//! The last line is `done=N unique=U duplicates=D failed=F seconds=S`.
//! With `--kill-one`, one worker is SIGKILLed mid-run; its task comes back
//! after the lease (`--lease-ms`, default 2000) and the counts still hold.

#[cfg(feature = "redis")]
mod app {
    use multiproc::distributed::{Backend, LEASE_ENV, RedisPool, Registry, WORKER_FLAG};
    use std::collections::HashMap;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn square_after_nap(x: u64) -> u64 {
        // A short pseudo-random sleep (0-4 ms), different for each input.
        let mut h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
        h ^= h >> 29;
        std::thread::sleep(Duration::from_micros(h % 5000));
        x * x
    }

    struct Workers(Vec<Child>);

    impl Drop for Workers {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn usage() -> ! {
        eprintln!(
            "usage: redis_tasks REDIS_URL [--workers W] [--tasks N] [--kill-one] [--lease-ms MS]"
        );
        std::process::exit(2)
    }

    pub fn main() {
        let square = multiproc::entry_point!(square_after_nap);
        let registry = Registry::new().with(&square);
        registry.serve_if_worker(); // workers never get past this line

        let mut args = std::env::args().skip(1);
        let url = args.next().unwrap_or_else(|| usage());
        let (mut workers, mut tasks, mut kill_one, mut lease_ms) =
            (2usize, 1000u64, false, 2000u64);
        while let Some(a) = args.next() {
            let mut num = || {
                args.next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_else(|| usage())
            };
            match a.as_str() {
                "--workers" => workers = num() as usize,
                "--tasks" => tasks = num(),
                "--lease-ms" => lease_ms = num(),
                "--kill-one" => kill_one = true,
                _ => usage(),
            }
        }
        let backend = match Backend::connect(&url) {
            Ok(b) => b.with_lease(Duration::from_millis(lease_ms)),
            Err(e) => {
                eprintln!("redis_tasks: {e}");
                std::process::exit(1);
            }
        };
        let pool = RedisPool::new(&backend, "default", &registry).expect("pool");
        let exe = std::env::current_exe().expect("own path");
        let mut children = Workers(
            (0..workers)
                .map(|_| {
                    Command::new(&exe)
                        .arg(WORKER_FLAG)
                        .arg(&url)
                        .env(LEASE_ENV, lease_ms.to_string())
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("start a worker")
                })
                .collect(),
        );
        let t_wait = Instant::now();
        while pool.size().unwrap_or(0) < workers && t_wait.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} workers up", pool.size().unwrap_or(0));

        let t0 = Instant::now();
        let mut seen: HashMap<u64, u32> = HashMap::new();
        let mut failed = 0u64;
        let results = pool.imap_unordered(&square, 0..tasks).expect("submit");
        for (i, r) in results.enumerate() {
            if kill_one && i as u64 == tasks / 2 {
                let victim = &mut children.0[0];
                eprintln!("killing worker pid {}", victim.id());
                let _ = victim.kill();
                let _ = victim.wait();
            }
            match r {
                Ok(v) => *seen.entry(v).or_default() += 1,
                Err(e) => {
                    eprintln!("task failed: {e}");
                    failed += 1;
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let done: u64 = seen.values().map(|&c| u64::from(c)).sum();
        let unique = seen.len();
        let duplicates = done - unique as u64;
        let wrong = (0..tasks).filter(|x| !seen.contains_key(&(x * x))).count();
        if wrong > 0 && failed == 0 {
            eprintln!("{wrong} inputs have no correct result");
        }
        println!(
            "done={done} unique={unique} duplicates={duplicates} failed={failed} seconds={secs:.3}"
        );
    }
}

#[cfg(feature = "redis")]
fn main() {
    app::main();
}

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!(
        "this example needs the `redis` feature: cargo run --features redis --example redis_tasks"
    );
}
