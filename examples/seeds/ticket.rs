//! Seed program 8 (seed 001): ticket buying on a JSON file `{"count": N}`
//! by 100 processes.
//!
//! The Python original has every buyer read the file, wait (network delay),
//! and write it back with one ticket less. Without a lock the buyers race
//! and more tickets are sold than exist; with a `Lock` around the purchase
//! the count is exact (and the sale is serial, so slower).

use multiproc::{Lock, Process};
use std::error::Error;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const BUYERS: u32 = 100;
const TICKETS: u64 = 5;

/// A few milliseconds of "network delay", different in each process.
fn delay(salt: u32) {
    let seed = u64::from(std::process::id())
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(u64::from(salt));
    thread::sleep(Duration::from_millis(5 + (seed >> 33) % 10));
}

fn count(db: &str) -> u64 {
    let text = fs::read_to_string(db).expect("read db");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse db");
    v["count"].as_u64().expect("count")
}

/// One customer: look, then buy if a ticket is left. Returns whether it
/// bought one.
fn buy(db: String, lock: Option<Lock>) -> bool {
    // A holder that died would hand us the lock with OwnerDied: the file
    // is replaced atomically below, so there is nothing to repair.
    let _guard = lock.as_ref().map(|l| {
        l.acquire()
            .unwrap_or_else(|e| e.into_guard().expect("blocking acquire"))
    });
    let left = count(&db);
    delay(1); // reading over the network
    if left == 0 {
        return false;
    }
    delay(2); // writing over the network
    // Replace the file in one step (write aside, rename), so that readers
    // never see it half written; the race between buyers stays.
    let tmp = format!("{db}.{}", std::process::id());
    fs::write(&tmp, serde_json::json!({ "count": left - 1 }).to_string()).expect("write db");
    fs::rename(&tmp, &db).expect("replace db");
    true
}

fn sale(db: &Path, lock: Option<Lock>) -> multiproc::Result<(u32, u64)> {
    fs::write(db, serde_json::json!({ "count": TICKETS }).to_string())?;
    let path = db.to_string_lossy().into_owned();
    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        let mut p = Process::new(buy, (path.clone(), lock.clone()));
        p.start()?;
        buyers.push(p);
    }
    let mut sold = 0;
    for mut p in buyers {
        p.join()?;
        if p.take_result()? {
            sold += 1;
        }
    }
    Ok((sold, count(&path)))
}

/// Runs the program (the same at any length: it takes about a second).
pub fn run(_quick: bool) -> Result<(), Box<dyn Error>> {
    println!();
    println!("=== Seed program 8: ticket buying with and without a Lock (seed 001) ===");
    println!("{BUYERS} buyer processes race for {TICKETS} tickets in a JSON file.");
    println!();
    let db = std::env::temp_dir().join(format!("multiproc-ticket-{}.json", std::process::id()));
    for (label, lock) in [
        ("without a lock", None),
        ("with a lock", Some(Lock::new()?)),
    ] {
        let t = Instant::now();
        let (sold, left) = sale(&db, lock)?;
        let verdict = if u64::from(sold) > TICKETS {
            "OVERSOLD"
        } else {
            "exact"
        };
        println!(
            "{label:>15}: {sold} sold, {left} left in the file ({verdict}, {:.2?})",
            t.elapsed()
        );
    }
    fs::remove_file(&db)?;
    Ok(())
}
