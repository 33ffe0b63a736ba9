//! Seed program 11 (seed 002): a child fills a `Manager` dict and list; the
//! parent prints them.
//!
//! The Python original starts `multiprocessing.Manager()`, makes
//! `d = manager.dict()` and `l = manager.list()`, and runs a child that
//! does `l += range(11, 16)` and `d["key{i}"] = "val{i}"` for `i` in 1..5;
//! the parent then prints `d` and `l`. The proxies here are typed
//! (`DictProxy<String, String>`, `ListProxy<i64>`), and the child is any
//! start method's child: the proxies travel in its arguments.

use multiproc::manager::{DictProxy, ListProxy};
use multiproc::{Manager, Process};
use std::error::Error;

/// The child: extends the list and fills the dict.
fn worker(d: DictProxy<String, String>, l: ListProxy<i64>) {
    l.extend(11..16).expect("list extend");
    for i in 1..6 {
        d.set(format!("key{i}"), format!("val{i}"))
            .expect("dict set");
    }
}

/// Runs the program; `_quick` changes nothing (it is already short).
pub fn run(_quick: bool) -> Result<(), Box<dyn Error>> {
    println!();
    println!("=== Manager: a child fills a dict and a list in a manager process ===");
    let manager = Manager::start()?;
    println!("manager server started (pid {:?})", manager.pid());
    let d = manager.dict::<String, String>()?;
    let l = manager.list::<i64>()?;
    let mut p = Process::new(worker, (d.clone(), l.clone()));
    p.start()?;
    p.join()?;
    let items = d.items()?;
    let shown: Vec<String> = items.iter().map(|(k, v)| format!("'{k}': '{v}'")).collect();
    println!("{{{}}}", shown.join(", "));
    println!("{:?}", l.to_vec()?);
    assert_eq!(items.len(), 5);
    assert_eq!(l.to_vec()?, [11, 12, 13, 14, 15]);
    Ok(())
}
