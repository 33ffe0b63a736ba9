//! Seed program 7 (seed 001): a TCP server with one process per connection.
//!
//! The Python original accepts connections in a loop and starts
//! `Process(target=talk, args=(conn, client_addr))` for each one; `talk`
//! echoes what it receives in upper case. Its client reads lines from the
//! keyboard and prints the replies.
//!
//! Here the server listens on an ephemeral port on 127.0.0.1, and the
//! accepted `TcpStream` travels to a new process inside its arguments as a
//! `multiproc::Handle<TcpStream>` (the descriptor is passed with
//! `SCM_RIGHTS`). A fixed number of client processes each send a few lines,
//! so that everything ends by itself.

use multiproc::{Handle, Process, current_process};
use std::error::Error;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Python's `talk(conn, client_addr)`: echoes every line in upper case
/// until the client hangs up; returns how many lines it served.
pub fn talk(conn: Handle<TcpStream>, client_addr: String) -> Result<usize, String> {
    let me = current_process();
    println!(
        "    [{} pid {}] talking to {client_addr}",
        me.name(),
        me.pid()
    );
    let Handle(stream) = conn;
    let mut out = stream.try_clone().map_err(|e| e.to_string())?;
    let mut served = 0;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| e.to_string())?;
        writeln!(out, "{}", line.to_uppercase()).map_err(|e| e.to_string())?;
        served += 1;
    }
    println!(
        "    [{}] {client_addr} hung up after {served} lines",
        me.name()
    );
    Ok(served)
}

/// The client: connects, sends each line, prints each reply.
pub fn client(server: String, lines: Vec<String>) -> Result<Vec<String>, String> {
    let me = current_process();
    let stream = TcpStream::connect(&server).map_err(|e| e.to_string())?;
    let mut replies = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut out = stream;
    let mut got = Vec::new();
    for line in lines {
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        if replies.read_line(&mut reply).map_err(|e| e.to_string())? == 0 {
            return Err("the server hung up".into());
        }
        let reply = reply.trim_end().to_string();
        println!("    [{}] >> {line:<18} << {reply}", me.name());
        got.push(reply);
    }
    Ok(got)
}

/// Accepts one connection, giving up at `deadline` so that a client that
/// never comes cannot hang the program.
fn accept_before(listener: &TcpListener, deadline: Instant) -> io::Result<(TcpStream, SocketAddr)> {
    loop {
        match listener.accept() {
            Ok((stream, addr)) => {
                stream.set_nonblocking(false)?;
                return Ok((stream, addr));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "no client connected in time",
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the program; `quick` sends fewer lines for the tour.
pub fn run(quick: bool) -> Result<(), Box<dyn Error>> {
    let words: &[&str] = if quick {
        &["hello", "multiproc"]
    } else {
        &["hello", "multiproc", "one process", "per connection"]
    };
    println!();
    println!("=== Seed program 7: TCP server, one process per connection (seed 001) ===");
    println!("The Python original: accept() in a loop and Process(target=talk,");
    println!("args=(conn, addr)).start() for each connection; talk echoes in upper case.");
    println!("Notice: the accepted TcpStream itself is an argument of the new process");
    println!("(a Handle<TcpStream>, passed as a descriptor); each connection is served");
    println!("by its own pid; the server's copy is closed once the child has it.");
    println!();

    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    println!("server: listening on {addr}");

    let mut clients = Vec::new();
    for i in 1..=3 {
        let lines: Vec<String> = words.iter().map(|w| format!("{w} #{i}")).collect();
        let mut c = Process::new(client, (addr.to_string(), lines)).name(format!("client-{i}"));
        c.start()?;
        clients.push(c);
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut talkers = Vec::new();
    for i in 1..=clients.len() {
        let (conn, client_addr) = accept_before(&listener, deadline)?;
        let mut t =
            Process::new(talk, (Handle(conn), client_addr.to_string())).name(format!("talk-{i}"));
        t.start()?;
        println!(
            "server: accepted {client_addr}, handed it to {} (pid {})",
            t.get_name(),
            t.pid().expect("started")
        );
        talkers.push(t);
    }
    drop(listener);

    for c in &mut clients {
        c.join()?;
        match c.take_result()? {
            Ok(replies) => println!("main: {} got {} replies", c.get_name(), replies.len()),
            Err(why) => println!("main: {} failed: {why}", c.get_name()),
        }
    }
    for t in &mut talkers {
        t.join()?;
        match t.take_result()? {
            Ok(n) => println!("server: {} served {n} lines and exited", t.get_name()),
            Err(why) => println!("server: {} failed: {why}", t.get_name()),
        }
    }
    Ok(())
}
