//! Shared state between processes: a counter in a [`Value`] incremented
//! under its lock by several children, and an [`Array`] whose slices are
//! filled by different children.
//!
//! Run with `cargo run --example shared_counter`.

use multiproc::{Array, Process, Value};

const WORKERS: usize = 4;
const INCREMENTS: u64 = 10_000;
const CHUNK: usize = 8;

fn count(counter: Value<u64>) {
    for _ in 0..INCREMENTS {
        *counter.lock().unwrap() += 1;
    }
}

/// Fills its own chunk of the array with squares.
fn fill(squares: Array<u64>, worker: usize) {
    let start = worker * CHUNK;
    let values: Vec<u64> = (start..start + CHUNK).map(|i| (i * i) as u64).collect();
    let mut all = squares.lock().unwrap();
    all[start..start + CHUNK].copy_from_slice(&values);
}

fn main() -> multiproc::Result<()> {
    let counter = Value::new(0u64)?;
    let squares = Array::<u64>::new(WORKERS * CHUNK)?;
    let mut children = Vec::new();
    for w in 0..WORKERS {
        let mut a = Process::new(count, (counter.clone(),));
        a.start()?;
        let mut b = Process::new(fill, (squares.clone(), w));
        b.start()?;
        children.push(a);
        children.push(b);
    }
    for mut c in children {
        c.join()?;
    }
    println!(
        "counter = {} (expected {})",
        counter.get(),
        WORKERS as u64 * INCREMENTS
    );
    println!("squares = {:?}", squares.to_vec());
    assert_eq!(counter.get(), WORKERS as u64 * INCREMENTS);
    assert!(
        squares
            .to_vec()
            .iter()
            .enumerate()
            .all(|(i, &v)| v == (i * i) as u64)
    );
    Ok(())
}
