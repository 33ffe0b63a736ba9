//! Seed program 12 (seed 003): `Process` with args and kwargs, exit codes,
//! pid/ppid, and globals that are not shared.
//!
//! The Python originals:
//! - `Process(target=run_proc, args=('Alice', 20), kwargs={'city': 'beijing',
//!   'country': 'China'})`, whose target ends with `exit(12)`; the parent
//!   prints `is_alive()` before and after `join()` and the exit code (12;
//!   `-15` when `terminate()` is called first; 1 after `1 / 0`);
//! - a child printing its pid and ppid;
//! - `work1` changing the global `n` and list `nums`, and `work2` (and the
//!   parent) still seeing the old values.
//!
//! Rust has no keyword arguments; a struct of named fields plays `kwargs`.

use multiproc::{Process, current_process, parent_process};
use serde::{Deserialize, Serialize};
use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};
use std::thread::sleep;
use std::time::Duration;

/// Python's `kwargs={'city': 'beijing', 'country': 'China'}`.
#[derive(Serialize, Deserialize)]
pub struct Kwargs {
    /// The city.
    pub city: String,
    /// The country.
    pub country: String,
}

/// Python's `run_proc(name, age, **kwargs)`, which ends with `exit(12)`.
pub fn run_proc(name: String, age: u32, kwargs: Kwargs) {
    let me = current_process();
    println!("    [{}] My name is {name} and my age is {age}", me.name());
    println!(
        "    [{}] kwargs: city = {}, country = {}",
        me.name(),
        kwargs.city,
        kwargs.country
    );
    // A moment of "work", so that the parent's first is_alive() finds the
    // child running, as it does in the original.
    sleep(Duration::from_millis(100));
    multiproc::exit(12);
}

/// Python's commented-out `print(1 / 0)`: a division by zero.
pub fn divide(a: i32, b: i32) -> i32 {
    a / b
}

/// Python's `run_proc` of the pid/ppid example; returns (pid, ppid).
pub fn show_ids() -> (u32, u32) {
    let me = current_process();
    let parent = parent_process().expect("a child has a parent");
    println!(
        "    [{}] running child: pid = {}, ppid = {} ({})",
        me.name(),
        me.pid(),
        parent.pid(),
        parent.name()
    );
    let os_ppid = std::os::unix::process::parent_id();
    if os_ppid != parent.pid() {
        println!(
            "    [{}] the OS-level getppid() is {os_ppid}: the fork server that forked it",
            me.name()
        );
    }
    (me.pid(), parent.pid())
}

/// Python's global `n = 10`.
static N: AtomicU32 = AtomicU32::new(10);
/// Python's global `nums = [11, 22]`.
static NUMS: LazyLock<Mutex<Vec<i32>>> = LazyLock::new(|| Mutex::new(vec![11, 22]));

fn globals() -> (u32, Vec<i32>) {
    let nums = NUMS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (N.load(Ordering::SeqCst), nums)
}

/// Python's `work1`: sets `n = 100` and appends 0, 1, 2 to `nums`.
pub fn work1(step_ms: u64) {
    let me = current_process();
    N.store(100, Ordering::SeqCst);
    println!(
        "    [{} pid {}] nums = {:?}",
        me.name(),
        me.pid(),
        globals().1
    );
    for i in 0..3 {
        NUMS.lock().unwrap_or_else(|e| e.into_inner()).push(i);
        sleep(Duration::from_millis(step_ms));
    }
    let (n, nums) = globals();
    println!("    [{}] nums = {nums:?}, n = {n}", me.name());
}

/// Python's `work2`: prints the globals.
pub fn work2() {
    let me = current_process();
    let (n, nums) = globals();
    println!(
        "    [{} pid {}] nums = {nums:?}, n = {n}",
        me.name(),
        me.pid()
    );
}

/// Runs the program; `quick` shortens the sleeps for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let step_ms = if quick { 50 } else { 300 };
    println!();
    println!("=== Seed program 12: args, kwargs, exit codes, pids, globals (seed 003) ===");
    println!("The Python original: Process(target, args, kwargs) ending with exit(12);");
    println!("terminate() gives exitcode -15; os.getpid()/os.getppid(); a global");
    println!("changed in a child is unchanged everywhere else.");
    println!("Notice: multiproc::exit(12) gives exitcode 12 (and take_result says so);");
    println!("a killed child has minus the signal number; a panic is exit code 1 with");
    println!("its message and location; each child starts with the globals' initial values.");
    println!();

    println!("-- exit(12)");
    let kwargs = Kwargs {
        city: "beijing".into(),
        country: "China".into(),
    };
    let mut p = Process::new(run_proc, ("Alice".to_string(), 20, kwargs));
    p.start()?;
    println!("main: 1. child is alive: {}", p.is_alive());
    p.join()?;
    println!("main: 2. child is alive: {}", p.is_alive());
    println!("main: the child's exit code is {:?}", p.exitcode());
    if let Err(e) = p.take_result() {
        println!("main: take_result() -> {e}");
    }
    println!("main: parent ends");

    println!();
    println!("-- terminate() before join()");
    let kwargs = Kwargs {
        city: "shanghai".into(),
        country: "China".into(),
    };
    let mut p = Process::new(run_proc, ("Bob".to_string(), 30, kwargs));
    p.start()?;
    println!("main: 1. child is alive: {}", p.is_alive());
    p.terminate()?;
    p.join()?;
    println!("main: 2. child is alive: {}", p.is_alive());
    println!("main: the child's exit code is {:?}", p.exitcode());

    println!();
    println!("-- 1 / 0 (a panic in the child)");
    println!("main: (the child's panic message goes to its stderr, like Python's traceback)");
    let mut p = Process::new(divide, (1, 0)).name("divider");
    p.start()?;
    p.join()?;
    println!("main: the child's exit code is {:?}", p.exitcode());
    match p.take_result() {
        Ok(v) => println!("main: 1 / 0 = {v}?"),
        Err(e) => println!("main: take_result() -> {e}"),
    }

    println!();
    println!("-- pid and ppid");
    println!("main: running parent: pid = {}", current_process().pid());
    let mut p = Process::new(show_ids, ());
    p.start()?;
    p.join()?;
    let (child_pid, its_parent) = p.take_result()?;
    println!(
        "main: the child reported pid {child_pid} (== p.pid(): {}) and parent {its_parent} \
         (== me: {})",
        Some(child_pid) == p.pid(),
        its_parent == current_process().pid()
    );

    println!();
    println!("-- globals are not shared");
    let mut p1 = Process::new(work1, (step_ms,)).name("process1");
    p1.start()?;
    p1.join()?;
    println!("{}", "-".repeat(50));
    let (n, nums) = globals();
    println!("main: in the parent, nums = {nums:?}, n = {n}");
    let mut p2 = Process::new(work2, ()).name("process2");
    p2.start()?;
    p2.join()?;
    Ok(())
}
