//! A Rust listener and a Python client talking through
//! `multiprocessing.connection` with an authkey.
//!
//! Run with `cargo run --example python_interop` (needs `python3` on PATH).
//! The Rust side listens on a Unix socket, starts `python3`, authenticates
//! it, and the two exchange a few messages, including one over 64 KiB.

use multiproc::connection::wait;
use multiproc::{Listener, Result};
use std::process::{Command, Stdio};
use std::time::Duration;

const PYTHON_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client

with Client(sys.argv[1], authkey=sys.argv[2].encode()) as conn:
    greeting = b'hello from Python ' + sys.version.split()[0].encode()
    print('python sends   :', greeting, flush=True)
    conn.send_bytes(greeting)
    reply = conn.recv_bytes()
    print('python received:', reply, flush=True)
    big = bytes(range(256)) * 400
    print('python sends   :', len(big), 'bytes', flush=True)
    conn.send_bytes(big)
    digest = conn.recv_bytes()
    print('python received:', digest, flush=True)
"#;

fn main() -> Result<()> {
    let path = std::env::temp_dir().join(format!("python-interop-{}.sock", std::process::id()));
    let authkey = b"correct horse battery staple";
    let listener = Listener::bind(path.as_path(), Some(authkey))?;
    println!("rust listening on {}", listener.address());

    let mut python = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(&path)
        .arg(std::str::from_utf8(authkey).expect("ASCII key"))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;

    // Do not wait forever if Python fails to start.
    if wait([&listener], Some(Duration::from_secs(30)))?.is_empty() {
        python.kill()?;
        return Err(multiproc::Error::Timeout);
    }
    let conn = listener.accept()?;
    println!("rust accepted an authenticated connection");

    let greeting = conn.recv_bytes()?;
    println!("rust received  : {:?}", String::from_utf8_lossy(&greeting));
    let reply = b"hello from Rust";
    println!("rust sends     : {:?}", String::from_utf8_lossy(reply));
    conn.send_bytes(reply)?;

    let big = conn.recv_bytes()?;
    let sum: u64 = big.iter().map(|&b| u64::from(b)).sum();
    println!("rust received  : {} bytes (byte sum {sum})", big.len());
    let answer = format!("got {} bytes, byte sum {sum}", big.len());
    println!("rust sends     : {answer:?}");
    conn.send_bytes(answer.as_bytes())?;

    let status = python.wait()?;
    println!("python exited with {status}");
    Ok(())
}
