//! Seed program 6 (seed 001): a heartbeat ("报活") from a daemon process.
//!
//! The seed explains why a daemon is the right tool to report "this
//! application is alive" to a monitor: it costs almost nothing, keeps its
//! rhythm while the main program is busy, and ends with the main program by
//! itself. Its example is a daemon printing `in func2` every 0.5 s while the
//! main program works.
//!
//! Here the real main process is the monitor. A child, `app`, plays the
//! application: it starts a daemonic `heartbeat` that prints `alive` and
//! sends a beat to the monitor on every interval, then does its work and
//! returns. The daemon is terminated when `app` ends, its end of the pipe
//! closes, and the monitor sees the heartbeat stop (end of file) at once.

use multiproc::{Connection, Pipe, Process, current_process};
use serde::{Deserialize, Serialize};
use std::error::Error;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// One heartbeat, as the monitor receives it.
#[derive(Serialize, Deserialize)]
pub struct Beat {
    /// The beat's number, from 1.
    pub n: u32,
    /// The pid of the application the heartbeat speaks for.
    pub app_pid: u32,
}

/// The daemon: report "alive" every `interval_ms`, forever.
pub fn heartbeat(monitor: Connection, interval_ms: u64) {
    let me = current_process();
    let app_pid = multiproc::parent_process().map_or(0, |p| p.pid());
    for n in 1.. {
        println!("    [{}] alive #{n}", me.name());
        if monitor.send(&Beat { n, app_pid }).is_err() {
            return; // Nobody is listening any more.
        }
        sleep(Duration::from_millis(interval_ms));
    }
}

/// The application: starts its heartbeat, works in `steps` steps of
/// `step_ms`, and returns its result.
pub fn app(monitor: Connection, steps: u64, step_ms: u64, interval_ms: u64) -> u64 {
    let me = current_process();
    let mut hb = Process::new(heartbeat, (monitor, interval_ms))
        .name("heartbeat")
        .daemon(true);
    hb.start().expect("cannot start the heartbeat");
    let mut total = 0;
    for step in 1..=steps {
        // Simulated work: a little arithmetic and a lot of waiting.
        total += (1..=step * 1000).sum::<u64>();
        sleep(Duration::from_millis(step_ms));
        println!("    [{}] work step {step}/{steps} done", me.name());
    }
    println!(
        "    [{}] work finished; the app's code ends here",
        me.name()
    );
    total
}

/// Runs the program; `quick` shortens the sleeps for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let (steps, step_ms, interval_ms) = if quick { (4, 200, 150) } else { (5, 800, 500) };
    println!();
    println!("=== Seed program 6: heartbeat from a daemon (seed 001) ===");
    println!("The Python original: a daemon that reports \"alive\" on an interval while");
    println!("the main program works, and dies with it.");
    println!("Notice: the beats keep their {interval_ms} ms rhythm while the app works;");
    println!("nobody stops the heartbeat explicitly: when the app's code ends, the");
    println!("daemon is terminated and the monitor sees the end of the heartbeat at once.");
    println!();

    let (beats, tx) = Pipe::one_way()?;
    let mut application = Process::new(app, (tx, steps, step_ms, interval_ms)).name("app");
    application.start()?;
    let app_pid = application.pid().expect("started");
    println!("monitor: watching app (pid {app_pid})");
    let started = Instant::now();
    let mut received = 0;
    loop {
        // A heartbeat that is late by three intervals would be an alarm.
        match beats.recv_timeout::<Beat>(Duration::from_millis(3 * interval_ms)) {
            Ok(beat) => {
                received += 1;
                if beat.app_pid != app_pid {
                    println!("monitor: beat #{} names pid {}?", beat.n, beat.app_pid);
                }
            }
            // Every copy of the sending end is closed: the daemon is gone.
            Err(e) if e.is_eof() => break,
            Err(e) if e.is_timeout() => {
                println!("monitor: ALARM, no heartbeat for {} ms", 3 * interval_ms);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let silent_at = started.elapsed().as_millis();
    println!(
        "monitor: {received} beats in {silent_at} ms, then end of file: the heartbeat \
         stopped with the app"
    );
    application.join()?;
    println!(
        "monitor: app exited with {:?} and returned {}",
        application.exitcode(),
        application.take_result()?
    );
    Ok(())
}
