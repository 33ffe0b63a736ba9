//! Shared state between processes (seed 003's `Value`/`Array`): a counter
//! in a `Value` incremented under its lock by several children, and an
//! `Array` whose chunks are filled by different children.

use multiproc::{Array, Process, Value};
use std::error::Error;

const WORKERS: usize = 4;
const CHUNK: usize = 8;

fn count(counter: Value<u64>, increments: u64) {
    for _ in 0..increments {
        *counter.lock().expect("counter lock") += 1;
    }
}

/// Fills its own chunk of the array with squares.
fn fill(squares: Array<u64>, worker: usize) {
    let start = worker * CHUNK;
    let values: Vec<u64> = (start..start + CHUNK).map(|i| (i * i) as u64).collect();
    let mut all = squares.lock().expect("array lock");
    all[start..start + CHUNK].copy_from_slice(&values);
}

/// Runs the program; `quick` counts less.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let increments: u64 = if quick { 10_000 } else { 100_000 };
    println!();
    println!("=== Shared state: a Value counter and an Array filled by children ===");
    println!("{WORKERS} children add 1 to a Value {increments} times each under its lock;");
    println!("{WORKERS} more each fill their chunk of an Array.");
    println!();
    let counter = Value::new(0u64)?;
    let squares = Array::<u64>::new(WORKERS * CHUNK)?;
    let mut children = Vec::new();
    for w in 0..WORKERS {
        let mut a = Process::new(count, (counter.clone(), increments));
        a.start()?;
        let mut b = Process::new(fill, (squares.clone(), w));
        b.start()?;
        children.push(a);
        children.push(b);
    }
    for mut c in children {
        c.join()?;
    }
    let expected = WORKERS as u64 * increments;
    println!("counter = {} (expected {expected})", counter.get());
    println!("squares = {:?}", squares.to_vec());
    assert_eq!(counter.get(), expected);
    assert!(
        squares
            .to_vec()
            .iter()
            .enumerate()
            .all(|(i, &v)| v == (i * i) as u64)
    );
    Ok(())
}
