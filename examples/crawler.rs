//! The coroutine exercise: processes × threads × coroutines drain one
//! cross-process queue of URLs, fetching each from a local HTTP server.
//!
//! ```text
//! cargo run --release --features tokio --example crawler -- \
//!     --processes 2 --threads 3 --coroutines 5 --requests 10000
//! ```
//!
//! * The server (hyper, HTTP/1.1 keep-alive) runs in its own process and
//!   counts the hits of every path; its counts prove each URL was fetched
//!   exactly once.
//! * A [`Queue`] holds the N distinct URLs (then one stop marker per
//!   coroutine).
//! * Each of P worker processes runs a [`ThreadPool`] of T threads; each
//!   thread runs its own current-thread tokio runtime with C coroutines
//!   ([`green::Pool`]), each holding one keep-alive connection and taking
//!   URLs with [`Queue::get_async`] — a coroutine waiting for the queue
//!   never blocks the others of its thread (the freeze a blocking
//!   `Queue.get()` causes under gevent).
//!
//! The last line printed is `fetched=N unique=U duplicates=D errors=E
//! seconds=S`.
//!
//! `crawler --serve` runs only the server (for the CPython clients of
//! `bench/compare`): it prints `port=P`, serves until stdin closes, then
//! prints `hits=H unique=U duplicates=D`.

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use multiproc::{Connection, Pipe, Process, Queue, ThreadPool, green};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The command line.
#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub processes: usize,
    pub threads: usize,
    pub coroutines: usize,
    pub requests: usize,
}

impl Args {
    /// Parses `--processes P --threads T --coroutines C --requests N`.
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            processes: 2,
            threads: 3,
            coroutines: 5,
            requests: 10_000,
        };
        while let Some(flag) = it.next() {
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            let n: usize = value
                .parse()
                .map_err(|_| format!("{flag}: not a number: {value}"))?;
            if n == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
            match flag.as_str() {
                "--processes" => a.processes = n,
                "--threads" => a.threads = n,
                "--coroutines" => a.coroutines = n,
                "--requests" => a.requests = n,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(a)
    }
}

/// What one worker thread did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ThreadStats {
    pub fetched: u64,
    pub errors: u64,
}

/// The server process: serves until told to stop on `control`, then
/// returns the hit count of every path.
fn serve(control: Connection) -> Vec<(String, u64)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        control.send(&port).expect("report the port");
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let stop = tokio::task::spawn_blocking(move || {
            let _ = control.recv::<()>();
        });
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let counts = counts.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let counts = counts.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                *counts.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(path))))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        }
        let counts = counts.lock().unwrap();
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    })
}

/// One coroutine: a keep-alive connection, URLs from the queue until the
/// stop marker.
async fn fetch_loop(q: Queue<Option<String>>, port: u16) -> ThreadStats {
    let mut stats = ThreadStats::default();
    let mut sender = None;
    while let Ok(Some(path)) = q.get_async().await {
        // Up to three attempts (a new connection each) per URL.
        let mut ok = false;
        for _ in 0..3 {
            if sender.is_none() {
                sender = connect(port).await;
            }
            let Some(s) = sender.as_mut() else { continue };
            match get(s, &path).await {
                Ok(body) if body == path.as_bytes() => {
                    ok = true;
                    break;
                }
                _ => sender = None,
            }
        }
        if ok {
            stats.fetched += 1;
        } else {
            stats.errors += 1;
        }
    }
    stats
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(port: u16) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn get(
    s: &mut Sender,
    path: &str,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    s.ready().await?;
    let req = Request::builder()
        .uri(path)
        .header(hyper::header::HOST, "127.0.0.1")
        .body(Empty::new())?;
    let res = s.send_request(req).await?;
    if !res.status().is_success() {
        return Err(format!("status {}", res.status()).into());
    }
    Ok(res.into_body().collect().await?.to_bytes())
}

/// One worker thread: its own runtime, `coroutines` coroutines.
fn worker_thread(q: Queue<Option<String>>, port: u16, coroutines: usize) -> ThreadStats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("thread runtime");
    rt.block_on(async move {
        let pool = green::Pool::new(coroutines);
        let all = pool
            .map(move |_| fetch_loop(q.clone(), port), 0..coroutines)
            .await
            .expect("a coroutine panicked");
        all.into_iter()
            .fold(ThreadStats::default(), |a, s| ThreadStats {
                fetched: a.fetched + s.fetched,
                errors: a.errors + s.errors,
            })
    })
}

/// One worker process: a thread pool of `threads` threads.
fn worker_process(
    q: Queue<Option<String>>,
    port: u16,
    threads: usize,
    coroutines: usize,
) -> Vec<ThreadStats> {
    let pool = ThreadPool::new(threads).expect("thread pool");
    pool.map(
        move |_| worker_thread(q.clone(), port, coroutines),
        0..threads,
    )
    .expect("a worker thread panicked")
}

/// Runs the exercise, printing as it goes; returns the last line.
pub fn run(a: Args) -> Result<String, Box<dyn std::error::Error>> {
    let (here, there) = Pipe::new()?;
    let mut server = Process::new(serve, (there,)).name("http-server");
    server.start()?;
    let port: u16 = here.recv()?;
    println!(
        "server on 127.0.0.1:{port} (pid {}); {} processes x {} threads x {} coroutines, {} URLs",
        server.pid().unwrap_or(0),
        a.processes,
        a.threads,
        a.coroutines,
        a.requests
    );

    let q: Queue<Option<String>> = Queue::new()?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..a.processes {
        let mut p = Process::new(worker_process, (q.clone(), port, a.threads, a.coroutines))
            .name(format!("worker-{i}"));
        p.start()?;
        workers.push(p);
    }
    for i in 0..a.requests {
        q.put(Some(format!("/item/{i}")))?;
    }
    for _ in 0..a.processes * a.threads * a.coroutines {
        q.put(None)?;
    }
    let mut fetched = 0;
    let mut errors = 0;
    for (i, mut p) in workers.into_iter().enumerate() {
        p.join()?;
        let stats = p.take_result()?;
        for (t, s) in stats.iter().enumerate() {
            println!(
                "worker {i} thread {t}: fetched {} errors {}",
                s.fetched, s.errors
            );
            fetched += s.fetched;
            errors += s.errors;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    here.send(&())?;
    server.join()?;
    let counts: HashMap<String, u64> = server.take_result()?.into_iter().collect();
    let mut unique = 0;
    let mut duplicates = 0;
    for i in 0..a.requests {
        match counts.get(&format!("/item/{i}")) {
            Some(&n) if n >= 1 => {
                unique += 1;
                duplicates += n - 1;
            }
            _ => {}
        }
    }
    println!(
        "{:.0} requests/s over {seconds:.3} s",
        fetched as f64 / seconds
    );
    Ok(format!(
        "fetched={fetched} unique={unique} duplicates={duplicates} errors={errors} seconds={seconds:.3}"
    ))
}

/// `--serve`: only the server, for clients in other languages (the
/// CPython rows of `bench/compare`). Prints `port=P`, serves until stdin
/// closes, then prints `hits=H unique=U duplicates=D` for the paths
/// `/item/0 ..`.
fn serve_only() -> Result<(), Box<dyn std::error::Error>> {
    let (here, there) = Pipe::new()?;
    let mut server = Process::new(serve, (there,)).name("http-server");
    server.start()?;
    let port: u16 = here.recv()?;
    println!("port={port}");
    std::io::Write::flush(&mut std::io::stdout())?;
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    here.send(&())?;
    server.join()?;
    let counts = server.take_result()?;
    let hits: u64 = counts.iter().map(|(_, n)| n).sum();
    let unique = counts.len();
    println!(
        "hits={hits} unique={unique} duplicates={}",
        hits - unique as u64
    );
    Ok(())
}

#[allow(dead_code)]
fn main() {
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        if let Err(e) = serve_only() {
            eprintln!("crawler: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crawler: {e}");
            eprintln!(
                "usage: crawler [--processes P] [--threads T] [--coroutines C] [--requests N]"
            );
            std::process::exit(2);
        }
    };
    match run(args) {
        Ok(last) => println!("{last}"),
        Err(e) => {
            eprintln!("crawler: {e}");
            std::process::exit(1);
        }
    }
}
