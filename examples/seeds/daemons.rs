//! Seed program 5 (seed 001): daemon processes.
//!
//! The Python original shows three things:
//! 1. a `Process` subclass (`Myprocess` with a `run()` method) started as a
//!    daemon, with `daemon = True` set before `start()`;
//! 2. `foo`/`bar`: a daemon `foo` and a normal `bar`; when the main program's
//!    code ends, the daemon is cut off (its `end123` is never printed) while
//!    `bar` is waited for;
//! 3. a daemon that tries to start a child gets
//!    `AssertionError: daemonic processes are not allowed to have children`.
//!
//! Part 2 needs a "main program" that ends while the tour goes on, so a
//! child process plays that main program: it starts `foo` and `bar` and
//! returns. Both report every line they print on a pipe to the real main
//! process, which shows afterwards how far each one got.

use multiproc::{Connection, Error as MpError, Pipe, Process, Run, current_process};
use serde::{Deserialize, Serialize};
use std::error::Error;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Python's `class Myprocess(Process)`: the struct's fields are the
/// subclass's attributes, `run` is its `run()`.
#[derive(Serialize, Deserialize)]
pub struct MyProcess {
    /// Who is chatting.
    pub person: String,
}

impl Run for MyProcess {
    type Output = String;

    fn run(self) -> String {
        let me = current_process();
        println!(
            "    [{} pid {}] daemon = {}",
            me.name(),
            me.pid(),
            me.is_daemon()
        );
        println!(
            "    [{}] {} is chatting with the streamer",
            me.name(),
            self.person
        );
        format!("{} said goodbye", self.person)
    }
}

/// Prints a line, labelled with the process name, and reports it to the
/// real main process.
fn say(report: &Connection, line: &str) {
    let me = current_process();
    println!("    [{}] {line}", me.name());
    // The report is for the summary; losing it must not stop the demo.
    let _ = report.send(&(me.name().to_string(), line.to_string()));
}

/// The daemon of the foo/bar program: prints `123`, sleeps, prints `end123`.
pub fn foo(report: Connection, ready: Connection, sleep_ms: u64) {
    say(&report, "123");
    // Tell the sub-main that `123` is out, so the demo does not depend on
    // how fast processes start.
    let _ = ready.send(&());
    sleep(Duration::from_millis(sleep_ms));
    say(&report, "end123");
}

/// The normal process of the foo/bar program: `456`, a longer sleep, `end456`.
pub fn bar(report: Connection, sleep_ms: u64) {
    say(&report, "456");
    sleep(Duration::from_millis(sleep_ms));
    say(&report, "end456");
}

/// Plays the main program of the foo/bar example: starts daemon `foo` and
/// normal `bar`, prints `main-------` and returns. At its exit, the daemon is
/// terminated and `bar` is waited for, as at the end of a Python main
/// program.
pub fn foo_bar_main(report: Connection, foo_ms: u64, bar_ms: u64) -> Result<(), String> {
    let fail = |e: MpError| e.to_string();
    let (ready_rx, ready_tx) = Pipe::one_way().map_err(fail)?;
    let foo_report = report.try_clone().map_err(fail)?;
    let mut p1 = Process::new(foo, (foo_report, ready_tx, foo_ms))
        .name("foo")
        .daemon(true);
    let mut p2 = Process::new(bar, (report, bar_ms)).name("bar");
    p1.start().map_err(fail)?;
    p2.start().map_err(fail)?;
    ready_rx.recv::<()>().map_err(fail)?;
    let me = current_process();
    println!(
        "    [{}] main-------   (the main program's code ends here)",
        me.name()
    );
    Ok(())
}

/// A daemon that tries to start a child of its own.
pub fn daemon_tries_a_child() -> String {
    let mut child = Process::new(nothing, ());
    match child.start() {
        Err(e @ MpError::DaemonicChildren) => format!("Err(Error::DaemonicChildren): \"{e}\""),
        Err(e) => format!("an unexpected error: {e}"),
        Ok(()) => {
            let _ = child.join();
            "it started a child, which it should not be allowed to".to_string()
        }
    }
}

/// The child the daemon is not allowed to start.
pub fn nothing() {}

/// Runs the program; `quick` shortens the sleeps for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let (pause, foo_ms, bar_ms) = if quick {
        (200, 400, 600)
    } else {
        (1000, 1000, 3000)
    };
    println!();
    println!("=== Seed program 5: daemon processes (seed 001) ===");
    println!("The Python original: a Process subclass run as a daemon; the foo/bar");
    println!("program where the daemon dies when the main code ends; a daemon that");
    println!("tries to start a child and fails.");
    println!("Notice: a struct implementing Run plays the subclass; the daemon flag is");
    println!("set before start; `end123` never appears, while `end456` does; the");
    println!("daemon's failed start is a clear error, not a crash.");
    println!();

    println!("-- part 1: a Run struct (Python's Process subclass) as a daemon");
    let mut p = Process::from_run(MyProcess {
        person: "Nezha".into(),
    })
    .daemon(true);
    p.start()?;
    println!(
        "main: started {} (pid {}), is_daemon = {}",
        p.get_name(),
        p.pid().expect("started"),
        p.is_daemon()
    );
    match p.set_daemon(false) {
        Ok(()) => println!("main: changing the daemon flag after start was accepted?!"),
        Err(e) => println!("main: set_daemon(false) after start -> error: {e}"),
    }
    // The original sleeps 10 s so that you can look at `ps -ef`; here the
    // main program waits for the daemon at most that long.
    let ended = p.join_timeout(Duration::from_millis(pause * 5))?;
    println!(
        "main: daemon ended = {ended}, exitcode = {:?}, run() returned {:?}",
        p.exitcode(),
        p.take_result()?
    );
    println!("main: 主 (main)");

    println!();
    println!("-- part 2: foo (daemon) and bar, started by a sub-main that then ends");
    let (report_rx, report_tx) = Pipe::one_way()?;
    let started = Instant::now();
    let mut sub = Process::new(foo_bar_main, (report_tx, foo_ms, bar_ms)).name("sub-main");
    sub.start()?;
    sub.join()?;
    println!(
        "main: sub-main exited with {:?} after {} ms (it waited for bar, not for foo)",
        sub.exitcode(),
        started.elapsed().as_millis()
    );
    if let Err(why) = sub.take_result()? {
        println!("main: the sub-main failed: {why}");
    }
    let (mut foo_lines, mut bar_lines) = (Vec::new(), Vec::new());
    loop {
        match report_rx.recv_timeout::<(String, String)>(Duration::from_secs(5)) {
            Ok((who, line)) if who == "foo" => foo_lines.push(line),
            Ok((_, line)) => bar_lines.push(line),
            // Every process that held the reporting end has exited.
            Err(e) if e.is_eof() => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("main: foo (daemon) printed {foo_lines:?}: cut off before `end123`");
    println!("main: bar (normal) printed {bar_lines:?}: run to its end");

    println!();
    println!("-- part 3: a daemon tries to start a child");
    let mut d = Process::new(daemon_tries_a_child, ())
        .name("lonely-daemon")
        .daemon(true);
    d.start()?;
    d.join()?;
    println!(
        "main: inside the daemon, start() returned {}",
        d.take_result()?
    );
    Ok(())
}
