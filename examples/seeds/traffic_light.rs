//! Seed program 10 (seed 001): a traffic light. A light process toggles an
//! `Event` (set = green) every 2 seconds; cars wait for green; police cars
//! wait at most 0.5 seconds and then pass anyway.

use multiproc::{Event, Process};
use std::error::Error;
use std::thread;
use std::time::{Duration, Instant};

fn light(green: Event, period_ms: u64, toggles: u32) {
    println!("  light: RED");
    for _ in 0..toggles {
        thread::sleep(Duration::from_millis(period_ms));
        if green.is_set() {
            green.clear();
            println!("  light: RED");
        } else {
            green.set();
            println!("  light: GREEN");
        }
    }
    // Leave it green so that every car gets through.
    green.set();
}

fn car(id: u32, green: Event) -> String {
    if !green.is_set() {
        println!("  car {id} waits");
        green.wait();
    }
    println!("  car {id} passes");
    format!("car {id}")
}

fn police_car(id: u32, green: Event, patience_ms: u64) -> String {
    if !green.is_set() && !green.wait_timeout(Duration::from_millis(patience_ms)) {
        println!("  police car {id} passes on red");
        return format!("police car {id} (on red)");
    }
    println!("  police car {id} passes");
    format!("police car {id}")
}

/// Runs the program; `quick` makes everything ten times faster.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let scale = if quick { 10 } else { 1 };
    let (period, patience, gap) = (2000 / scale, 500 / scale, 400 / scale);
    println!();
    println!("=== Seed program 10: a traffic light with an Event (seed 001) ===");
    println!("The light toggles every {period} ms; cars wait for green, police cars");
    println!("wait at most {patience} ms and pass anyway.");
    println!();
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
