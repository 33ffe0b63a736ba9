//! Seed program 1 (seed 000): three processes, each doing a slow request.
//!
//! The Python original starts three `Process(target=res_1)`, whose body does
//! an HTTP GET and sleeps a second; it prints `is_alive()` right after
//! `start()`, then, for each process, `join()`, `name`, `pid`, `terminate()`
//! and `is_alive()` again. Here the slow request is simulated with a sleep
//! (no network), and the child's return value comes back to the parent,
//! which Python cannot do.

use multiproc::{Process, current_process};
use std::error::Error;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The child's body: a "request" that takes `delay_ms` to answer.
pub fn slow_request(url: String, delay_ms: u64) -> String {
    let me = current_process();
    println!("    [{} pid {}] GET {url} ...", me.name(), me.pid());
    sleep(Duration::from_millis(delay_ms));
    println!("    [{}] {url} answered after {delay_ms} ms", me.name());
    format!("200 OK from {url}")
}

fn pid<R>(p: &Process<R>) -> u32 {
    p.pid().expect("the process has been started")
}

/// Runs the program; `quick` shortens the sleeps for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let delay = if quick { 300 } else { 1000 };
    println!();
    println!("=== Seed program 1: three processes doing slow requests (seed 000) ===");
    println!("The Python original: Process(target=...), start(), join(), name, pid,");
    println!("is_alive() and terminate(), with three slow HTTP requests in parallel.");
    println!("Notice: default names are Process-N; the three {delay} ms requests take");
    println!("about {delay} ms together, not three times that; terminate() after join()");
    println!("does nothing, but terminate() on a running process cuts it off (-15).");
    println!();

    println!("-- start three processes, then join, inspect and terminate each");
    let started = Instant::now();
    let mut procs = Vec::new();
    for i in 1..=3 {
        let url = format!("http://localhost/item/{i}");
        let mut p = Process::new(slow_request, (url, delay));
        p.start()?;
        let alive = p.is_alive();
        println!(
            "main: started {} (pid {}), is_alive = {alive}",
            p.get_name(),
            pid(&p)
        );
        procs.push(p);
    }
    for p in &mut procs {
        p.join()?;
        let code = p.exitcode();
        println!(
            "main: joined {}: pid {}, exitcode {code:?}",
            p.get_name(),
            pid(p)
        );
        // As in the original: terminating a process that has ended is a no-op.
        p.terminate()?;
        let alive = p.is_alive();
        let result = p.take_result()?;
        println!(
            "main: after terminate(), {} is_alive = {alive}; it returned {result:?}",
            p.get_name()
        );
    }
    println!(
        "main: three requests of {delay} ms each took {} ms in all (in parallel)",
        started.elapsed().as_millis()
    );

    println!();
    println!("-- terminate() a request that is still running");
    let mut p = Process::new(
        slow_request,
        ("http://localhost/never-answers".to_string(), 30_000),
    )
    .name("stuck-request");
    p.start()?;
    let ended = p.join_timeout(Duration::from_millis(200))?;
    let alive = p.is_alive();
    println!(
        "main: join_timeout(200 ms) -> {ended}; {} is_alive = {alive}",
        p.get_name()
    );
    p.terminate()?;
    p.join()?;
    println!(
        "main: after terminate() and join(): is_alive = {}, exitcode = {:?}",
        p.is_alive(),
        p.exitcode()
    );
    match p.take_result() {
        Ok(v) => println!("main: unexpectedly got a result: {v}"),
        Err(e) => println!("main: take_result() -> error: {e}"),
    }
    Ok(())
}
