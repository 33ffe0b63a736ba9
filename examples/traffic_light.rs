//! Seed program 10: a traffic light. A light process toggles an [`Event`]
//! (set = green) every 2 seconds; cars wait for green; police cars wait at
//! most 0.5 seconds and then pass anyway.
//!
//! Run with `cargo run --example traffic_light`; `--quick` (or
//! `MULTIPROC_QUICK=1`) makes everything ten times faster.

use multiproc::{Event, Process};
use std::thread;
use std::time::{Duration, Instant};

fn light(green: Event, period_ms: u64, toggles: u32) {
    println!("light: RED");
    for _ in 0..toggles {
        thread::sleep(Duration::from_millis(period_ms));
        if green.is_set() {
            green.clear();
            println!("light: RED");
        } else {
            green.set();
            println!("light: GREEN");
        }
    }
    // Leave it green so that every car gets through.
    green.set();
}

fn car(id: u32, green: Event) -> String {
    if !green.is_set() {
        println!("car {id} waits");
        green.wait();
    }
    println!("car {id} passes");
    format!("car {id}")
}

fn police_car(id: u32, green: Event, patience_ms: u64) -> String {
    if !green.is_set() && !green.wait_timeout(Duration::from_millis(patience_ms)) {
        println!("police car {id} passes on red");
        return format!("police car {id} (on red)");
    }
    println!("police car {id} passes");
    format!("police car {id}")
}

fn main() -> multiproc::Result<()> {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("MULTIPROC_QUICK").is_some();
    let scale = if quick { 10 } else { 1 };
    let (period, patience, gap) = (2000 / scale, 500 / scale, 400 / scale);
    let t = Instant::now();
    let green = Event::new()?;
    let mut light_p = Process::new(light, (green.clone(), period, 2));
    light_p.start()?;
    let mut vehicles: Vec<Process<String>> = Vec::new();
    for id in 0..10 {
        let mut p = if id % 3 == 2 {
            Process::new(police_car, (id, green.clone(), patience))
        } else {
            Process::new(car, (id, green.clone()))
        };
        p.start()?;
        vehicles.push(p);
        thread::sleep(Duration::from_millis(gap));
    }
    let mut passed = Vec::new();
    for mut p in vehicles {
        p.join()?;
        passed.push(p.take_result()?);
    }
    light_p.join()?;
    println!(
        "{} vehicles through in {:.1?}: {}",
        passed.len(),
        t.elapsed(),
        passed.join(", ")
    );
    Ok(())
}
