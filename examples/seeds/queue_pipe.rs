//! Seed program 13 (seed 003): a queue between a writer and a reader
//! process, a pipe both ways, and the queue API's edge cases.
//!
//! The seed's writer puts ten numbers with a pause between them while a
//! reader loops `while not q.empty(): q.get()` — which quits as soon as it
//! outruns the writer, with numbers still to come. Here the reader waits
//! with a timeout instead, and stops at the writer's end marker. Then two
//! processes talk over a duplex `Pipe`, and over a one-way pipe; finally the
//! queue's edge cases: `qsize`, `empty`, `full`, `get_nowait` on an empty
//! queue, `put_nowait` on a full one, and the timeouts.

use multiproc::{Connection, Error, Pipe, Process, PutError, Queue, current_process};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The writer: puts `0..n`, pausing `pause_ms` between them, then `None`.
pub fn write(q: Queue<Option<u32>>, n: u32, pause_ms: u64) {
    let me = current_process();
    for i in 0..n {
        println!("    [{}] put {i} to queue", me.name());
        q.put(Some(i)).unwrap();
        sleep(Duration::from_millis(pause_ms));
    }
    q.put(None).unwrap();
}

/// The reader: gets until the end marker; returns what it got.
pub fn read(q: Queue<Option<u32>>) -> Vec<u32> {
    let me = current_process();
    let mut got = Vec::new();
    loop {
        match q.get_timeout(Duration::from_secs(10)) {
            Ok(Some(i)) => {
                println!("    [{}] got {i} from queue", me.name());
                got.push(i);
            }
            Ok(None) => break,
            Err(e) => {
                println!("    [{}] gave up: {e}", me.name());
                break;
            }
        }
    }
    got
}

/// One end of a duplex pipe: answers each question until `"bye"`.
pub fn answer(conn: Connection) {
    let me = current_process();
    while let Ok(q) = conn.recv::<String>() {
        println!("    [{}] received {q:?}", me.name());
        if q == "bye" {
            conn.send("bye").unwrap();
            break;
        }
        conn.send(&format!("{} letters", q.chars().count()))
            .unwrap();
    }
}

/// The sending end of a one-way pipe.
pub fn send_only(conn: Connection, words: Vec<String>) {
    for w in words {
        conn.send(&w).unwrap();
    }
}

fn check(what: &str, ok: bool) -> Result<(), Box<dyn std::error::Error>> {
    println!("  {what}: {}", if ok { "yes" } else { "NO" });
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected: {what}").into())
    }
}

/// Runs the program; `quick` shortens the pauses for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn std::error::Error>> {
    let pause_ms = if quick { 20 } else { 100 };
    println!();
    println!(
        "=== Seed program 13: queue writer/reader, Pipe both ways, Queue edge cases (seed 003) ==="
    );
    println!("The Python original: a writer and a reader process on a Queue, a Pipe");
    println!("between two processes, and the Queue methods one by one.");
    println!("Notice: the reader never quits early (it waits with a timeout for the");
    println!("writer's end marker), and each edge case answers at once or after its timeout.");
    println!();

    println!("-- queue: writer and reader processes");
    let q = Queue::new()?;
    let mut writer = Process::new(write, (q.clone(), 10, pause_ms)).name("writer");
    let mut reader = Process::new(read, (q.clone(),)).name("reader");
    writer.start()?;
    reader.start()?;
    writer.join()?;
    reader.join()?;
    let got = reader.take_result()?;
    check(
        "the reader got 0..10 in order",
        got == (0..10).collect::<Vec<_>>(),
    )?;

    println!("-- duplex Pipe: questions one way, answers the other");
    let (here, there) = Pipe::new()?;
    let mut p = Process::new(answer, (there,)).name("answerer");
    p.start()?;
    for word in ["queue", "pipe", "bye"] {
        here.send(word)?;
        let reply: String = here.recv()?;
        println!("  main sent {word:?}, got {reply:?}");
    }
    p.join()?;
    println!("-- one-way Pipe: reader end and writer end");
    let (rx, tx) = Pipe::one_way()?;
    let words: Vec<String> = ["one", "way"].iter().map(|s| s.to_string()).collect();
    let mut p = Process::new(send_only, (tx, words.clone())).name("sender");
    p.start()?;
    let mut heard = Vec::new();
    for _ in 0..words.len() {
        heard.push(rx.recv::<String>()?);
    }
    p.join()?;
    check("one-way pipe delivered both words", heard == words)?;
    check("the reader end cannot send", rx.send("back").is_err())?;

    println!("-- Queue API edge cases, on Queue::with_maxsize(3)");
    let q = Queue::with_maxsize(3)?;
    check("new queue: empty()", q.is_empty())?;
    check("qsize() == 0", q.qsize() == 0)?;
    let t = Instant::now();
    check(
        "get_nowait() on an empty queue is Error::Empty",
        matches!(q.get_nowait(), Err(Error::Empty)),
    )?;
    check(
        "get_timeout(100 ms) on an empty queue is Error::Empty",
        matches!(q.get_timeout(Duration::from_millis(100)), Err(Error::Empty)),
    )?;
    println!("  (both took {:.2} s)", t.elapsed().as_secs_f64());
    q.put('a')?;
    q.put_nowait('b')?;
    q.put_timeout('c', Duration::from_millis(100))?;
    check("after three puts: full()", q.is_full())?;
    check("qsize() == 3", q.qsize() == 3)?;
    check(
        "put_nowait on a full queue gives the item back in PutError::Full",
        matches!(q.put_nowait('d'), Err(PutError::Full('d'))),
    )?;
    let t = Instant::now();
    check(
        "put_timeout(100 ms) on a full queue is Full too",
        q.put_timeout('e', Duration::from_millis(100))
            .is_err_and(|e| e.is_full()),
    )?;
    println!("  (after {:.2} s)", t.elapsed().as_secs_f64());
    check("get() is FIFO", q.get()? == 'a' && q.get_nowait()? == 'b')?;
    check("qsize() == 1, not full", q.qsize() == 1 && !q.is_full())?;
    q.close();
    check(
        "after close(): put is PutError::Closed, get is Error::Closed",
        matches!(q.put('f'), Err(PutError::Closed('f'))) && matches!(q.get(), Err(Error::Closed)),
    )?;
    Ok(())
}
