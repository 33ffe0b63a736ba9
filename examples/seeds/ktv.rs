//! Seed program 9 (seed 001): a KTV with 4 rooms (`Semaphore(4)`) and 12
//! people. At most four are inside at any moment; the others wait at the
//! door until somebody leaves.

use multiproc::{Process, Semaphore, Value};
use std::error::Error;
use std::thread;
use std::time::{Duration, Instant};

const ROOMS: u32 = 4;
const PEOPLE: u32 = 12;

fn go_ktv(rooms: Semaphore, inside: Value<u32>, most: Value<u32>, who: u32, sing_ms: u64) {
    let t0 = Instant::now();
    rooms.acquire();
    {
        let mut n = inside.lock().expect("counter lock");
        *n += 1;
        let mut m = most.lock().expect("max lock");
        *m = (*m).max(*n);
        println!(
            "  person{who:<2} takes a room after waiting {:>3} ms ({} inside)",
            t0.elapsed().as_millis(),
            *n
        );
    }
    // Everybody sings for a different while.
    thread::sleep(Duration::from_millis(
        sing_ms * (1 + u64::from(who * 37 % 4)),
    ));
    *inside.lock().expect("counter lock") -= 1;
    println!("  person{who:<2} leaves");
    rooms.release().expect("release a room");
}

/// Runs the program; `quick` shortens the songs.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let sing_ms = if quick { 50 } else { 250 };
    println!();
    println!("=== Seed program 9: KTV rooms with a Semaphore (seed 001) ===");
    println!("{PEOPLE} people, {ROOMS} rooms: Semaphore({ROOMS}) lets four in at a time.");
    println!();
    let rooms = Semaphore::new(ROOMS)?;
    let inside = Value::new(0u32)?;
    let most = Value::new(0u32)?;
    let t = Instant::now();
    let mut people = Vec::new();
    for who in 0..PEOPLE {
        let mut p = Process::new(
            go_ktv,
            (rooms.clone(), inside.clone(), most.clone(), who, sing_ms),
        );
        p.start()?;
        people.push(p);
    }
    for mut p in people {
        p.join()?;
    }
    println!(
        "{PEOPLE} people sang in {ROOMS} rooms in {:.2?}; at most {} were inside at once",
        t.elapsed(),
        most.get()
    );
    assert!(most.get() <= ROOMS);
    Ok(())
}
