//! The coroutine exercise (examples/crawler.rs) with a small N: every URL
//! fetched exactly once, no errors, in both shapes the issue names.
#![cfg(feature = "tokio")]

#[allow(dead_code)]
#[path = "../examples/crawler.rs"]
mod crawler;

use crawler::{Args, run};

fn check(last: &str, n: usize) {
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields.len(), 5, "{last}");
    assert_eq!(fields[0], format!("fetched={n}"), "{last}");
    assert_eq!(fields[1], format!("unique={n}"), "{last}");
    assert_eq!(fields[2], "duplicates=0", "{last}");
    assert_eq!(fields[3], "errors=0", "{last}");
    let secs: f64 = fields[4].strip_prefix("seconds=").unwrap().parse().unwrap();
    assert!(secs > 0.0);
}

#[test]
fn processes_threads_coroutines() {
    let a = Args::parse(
        [
            "--processes",
            "2",
            "--threads",
            "3",
            "--coroutines",
            "5",
            "--requests",
            "300",
        ]
        .map(String::from)
        .into_iter(),
    )
    .unwrap();
    check(&run(a).unwrap(), 300);
}

#[test]
fn one_process_one_thread_a_hundred_coroutines() {
    let a = Args::parse(
        [
            "--processes",
            "1",
            "--threads",
            "1",
            "--coroutines",
            "100",
            "--requests",
            "300",
        ]
        .map(String::from)
        .into_iter(),
    )
    .unwrap();
    check(&run(a).unwrap(), 300);
}

#[test]
fn bad_flags_are_errors() {
    assert!(Args::parse(["--threads", "0"].map(String::from).into_iter()).is_err());
    assert!(Args::parse(["--bogus", "1"].map(String::from).into_iter()).is_err());
    assert!(Args::parse(["--requests"].map(String::from).into_iter()).is_err());
}
