//! Try the distributed pool with two terminals.
//!
//! ```text
//! terminal 1: cargo run --features redis --example distributed -- serve          # a private redis-server; prints its URL
//! terminal 2: cargo run --features redis --example distributed -- worker URL     # one or more, on any machine
//! terminal 3: cargo run --features redis --example distributed -- submit URL 100
//! ```
//! `serve` runs Debian's `redis-server` on 127.0.0.1 with a random password
//! (no persistence) until Ctrl-C; with your own server skip it.

#[cfg(feature = "redis")]
mod app {
    use multiproc::distributed::{Backend, RedisPool, Registry};
    use std::time::{Duration, Instant};

    fn collatz_steps(mut n: u64) -> u32 {
        let mut steps = 0;
        while n > 1 {
            n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
            steps += 1;
        }
        steps
    }

    fn usage() -> ! {
        eprintln!("usage: distributed serve [PORT] | worker URL | submit URL N");
        std::process::exit(2)
    }

    pub fn main() {
        let steps = multiproc::entry_point!(collatz_steps);
        let registry = Registry::new().with(&steps);
        registry.serve_if_worker(); // also lets `distributed --multiproc-worker URL` serve

        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.first().map(String::as_str) {
            Some("serve") => {
                let port = args.get(1).cloned().unwrap_or_else(|| "6390".into());
                let mut pw = [0u8; 12];
                let _ = rustix::rand::getrandom(&mut pw, rustix::rand::GetRandomFlags::empty());
                let pw: String = pw.iter().map(|b| format!("{b:02x}")).collect();
                println!("URL: redis://:{pw}@127.0.0.1:{port}/0");
                let status = std::process::Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port, "--requirepass", &pw])
                    .args(["--save", "", "--appendonly", "no"])
                    .status();
                if let Err(e) = status {
                    eprintln!("could not run redis-server ({e}); apt-get install redis-server");
                    std::process::exit(1);
                }
            }
            Some("worker") => {
                let url = args.get(1).unwrap_or_else(|| usage());
                let backend = Backend::connect(url).unwrap_or_else(|e| {
                    eprintln!("{e}");
                    std::process::exit(1)
                });
                eprintln!("serving tasks from {}", backend.url());
                if let Err(e) = registry.serve(&backend, "default") {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
            Some("submit") => {
                let url = args.get(1).unwrap_or_else(|| usage());
                let n: u64 = args
                    .get(2)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage());
                let backend = Backend::connect(url).unwrap_or_else(|e| {
                    eprintln!("{e}");
                    std::process::exit(1)
                });
                let pool = RedisPool::new(&backend, "default", &registry)
                    .expect("pool")
                    .with_task_timeout(Duration::from_secs(120));
                println!("{} live workers", pool.size().unwrap_or(0));
                let t0 = Instant::now();
                match pool.map(&steps, 1..=n) {
                    Ok(v) => {
                        let (best, most) = v
                            .iter()
                            .enumerate()
                            .max_by_key(|(_, s)| **s)
                            .map(|(i, s)| (i + 1, *s))
                            .unwrap_or((0, 0));
                        println!(
                            "{n} tasks in {:.3}s; longest Collatz chain below {}: {best} ({most} steps)",
                            t0.elapsed().as_secs_f64(),
                            n + 1
                        );
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(1);
                    }
                }
            }
            _ => usage(),
        }
    }
}

#[cfg(feature = "redis")]
fn main() {
    app::main();
}

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!(
        "this example needs the `redis` feature: cargo run --features redis --example distributed"
    );
}
