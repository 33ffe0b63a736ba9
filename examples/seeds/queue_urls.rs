//! Seed program 2 (seed 000): three processes draining one queue of URLs.
//!
//! The seed fills a `multiprocessing.Queue` with ten URLs and starts three
//! processes that each loop `while q.qsize() > 0: url = q.get()` and fetch
//! the URL. That loop has a race: two processes can both see one item left,
//! and the loser blocks in `get` forever. Here each worker takes URLs with
//! `get_nowait` and stops at [`Error::Empty`](multiproc::Error::Empty),
//! which cannot hang.
//!
//! The URLs are served locally: a small HTTP server on `127.0.0.1` (a std
//! `TcpListener` on a thread of the main process) answers every request
//! with the path it was asked for, after a short delay that stands for the
//! network.

use multiproc::{Error, Process, Queue, current_process};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Serves `GET <path>` requests on `listener` forever: answers `200 OK`
/// with a body naming the path, after `delay_ms`.
fn serve(listener: TcpListener, delay_ms: u64) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                return;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            thread::sleep(Duration::from_millis(delay_ms));
            let body = format!("you asked for {path}\n");
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
}

/// A minimal HTTP/1.0 GET: returns the status line and the body.
pub fn fetch(url: &str) -> std::io::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or("").to_string();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim_end().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A worker: fetches URLs from the queue until it is empty; returns how
/// many it fetched.
pub fn worker(urls: Queue<String>) -> usize {
    let me = current_process();
    let mut done = 0;
    loop {
        match urls.get_nowait() {
            Ok(url) => match fetch(&url) {
                Ok((status, body)) => {
                    println!("    [{}] {url}: {status}: {body}", me.name());
                    done += 1;
                }
                Err(e) => println!("    [{}] {url}: failed: {e}", me.name()),
            },
            Err(Error::Empty) => break,
            Err(e) => {
                println!("    [{}] queue error: {e}", me.name());
                break;
            }
        }
    }
    println!("    [{}] queue empty, fetched {done} URLs", me.name());
    done
}

/// Runs the program; `quick` shortens the server's delay for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn std::error::Error>> {
    let delay_ms = if quick { 50 } else { 500 };
    println!();
    println!("=== Seed program 2: three processes draining one queue of URLs (seed 000) ===");
    println!("The Python original: ten URLs in a Queue, three processes fetching them");
    println!("with `while q.qsize() > 0: q.get()` (which can hang when two see the last).");
    println!("Notice: the URLs are shared out between the processes as they free up; the");
    println!("workers stop at `Error::Empty` from get_nowait, which cannot hang.");
    println!();

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::spawn(move || serve(listener, delay_ms));
    println!("local server on http://{addr}/ (answers after {delay_ms} ms)");

    let urls = Queue::new()?;
    for i in 0..10 {
        urls.put(format!("http://{addr}/page/{i}"))?;
    }
    println!("queue filled: qsize() = {}", urls.qsize());

    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 1..=3 {
        let mut p = Process::new(worker, (urls.clone(),)).name(format!("worker-{i}"));
        p.start()?;
        println!(
            "started {} (pid {}), is_alive() = {}",
            p.get_name(),
            p.pid().unwrap_or(0),
            p.is_alive()
        );
        workers.push(p);
    }
    let mut total = 0;
    for p in &mut workers {
        p.join()?;
        let n = p.take_result()?;
        println!(
            "{} fetched {n} URLs, exit code {:?}",
            p.get_name(),
            p.exitcode()
        );
        total += n;
    }
    println!(
        "all {total} URLs fetched in {:.2} s by 3 processes (one at a time: {:.2} s); empty() = {}",
        started.elapsed().as_secs_f64(),
        10.0 * delay_ms as f64 / 1000.0,
        urls.is_empty()
    );
    if total != 10 {
        return Err(format!("expected 10 URLs fetched, got {total}").into());
    }
    Ok(())
}
