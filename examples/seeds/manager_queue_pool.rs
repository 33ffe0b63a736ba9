//! Seed program 14 (seed 003): a manager `Queue` shared by a writer task and
//! a reader task of a `Pool`.
//!
//! The Python original needs `Manager().Queue()` because a plain
//! `multiprocessing.Queue` cannot be passed to pool tasks; a writer task puts
//! the letters of "hello" one per second, and a reader task started a
//! second later takes `q.qsize()` items. Here the reader takes exactly five
//! items (waiting for each), so it does not depend on the timing, and the
//! writer pauses less.

use multiproc::manager::QueueProxy;
use multiproc::{Manager, Pool};
use std::error::Error;
use std::time::Duration;

/// The writer task: puts the letters one by one.
fn writer(q: QueueProxy<String>, pause_ms: u64) -> usize {
    println!(
        "    writer starts (pid {}, parent {})",
        std::process::id(),
        multiproc::parent_process().map_or(0, |p| p.pid())
    );
    let word = "hello";
    for c in word.chars() {
        q.put(c.to_string()).expect("put");
        std::thread::sleep(Duration::from_millis(pause_ms));
    }
    word.len()
}

/// The reader task: takes `n` letters.
fn reader(q: QueueProxy<String>, n: usize) -> String {
    println!(
        "    reader starts (pid {}, parent {})",
        std::process::id(),
        multiproc::parent_process().map_or(0, |p| p.pid())
    );
    let mut got = String::new();
    for _ in 0..n {
        let c = q.get_timeout(Duration::from_secs(30)).expect("get");
        println!("    reader got {c:?} from the queue");
        got.push_str(&c);
    }
    got
}

/// Runs the program; `quick` pauses less between letters.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    println!();
    println!("=== Manager Queue between Pool tasks: a writer and a reader ===");
    println!("({}) start", std::process::id());
    let manager = Manager::start()?;
    let q = manager.queue::<String>()?;
    let pool = Pool::new(2)?;
    let pause = if quick { 50 } else { 1000 };
    let w = pool.apply_async(writer, (q.clone(), pause))?;
    let r = pool.apply_async(reader, (q.clone(), 5))?;
    pool.close();
    let (written, read) = (w.get()?, r.get()?);
    pool.join()?;
    println!(
        "({}) end: wrote {written} letters, read {read:?}",
        std::process::id()
    );
    assert_eq!(read, "hello");
    Ok(())
}
