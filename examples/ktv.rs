//! Seed program 9: a KTV with 4 rooms ([`Semaphore`] of 4) and 12 people.
//! At most four are inside at any moment; the others wait at the door.
//!
//! Run with `cargo run --example ktv`.

use multiproc::{Process, Semaphore, Value};
use std::thread;
use std::time::{Duration, Instant};

const ROOMS: u32 = 4;
const PEOPLE: u32 = 12;

fn go_ktv(rooms: Semaphore, inside: Value<u32>, most: Value<u32>, who: u32, start: u64) {
    let since = |t: Instant| t.elapsed().as_millis() as u64 + start;
    let t0 = Instant::now();
    rooms.acquire();
    {
        let mut n = inside.lock().unwrap();
        *n += 1;
        let mut m = most.lock().unwrap();
        *m = (*m).max(*n);
        println!(
            "[{:>4} ms] person{who:<2} takes a room ({} inside)",
            since(t0),
            *n
        );
    }
    // Everybody sings for a different while (100-400 ms).
    thread::sleep(Duration::from_millis(100 + u64::from(who * 37 % 4) * 100));
    {
        let mut n = inside.lock().unwrap();
        *n -= 1;
        println!("[{:>4} ms] person{who:<2} leaves", since(t0));
    }
    rooms.release().unwrap();
}

fn main() -> multiproc::Result<()> {
    let rooms = Semaphore::new(ROOMS)?;
    let inside = Value::new(0u32)?;
    let most = Value::new(0u32)?;
    let t = Instant::now();
    let mut people = Vec::new();
    for who in 0..PEOPLE {
        let start = t.elapsed().as_millis() as u64;
        let mut p = Process::new(
            go_ktv,
            (rooms.clone(), inside.clone(), most.clone(), who, start),
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
