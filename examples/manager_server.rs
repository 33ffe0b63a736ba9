//! A remote manager serving a queue and a dict of plain values (Python's
//! `BaseManager` with `register('get_queue', ...)` and
//! `register('get_dict', ...)` and `serve_forever()`).
//!
//! ```text
//! MULTIPROC_AUTHKEY=secret cargo run --example manager_server -- 127.0.0.1:50000
//! MULTIPROC_AUTHKEY=secret cargo run --example manager_server -- /tmp/manager.sock
//! ```
//!
//! It prints `serving ADDRESS` once ready and runs until SIGTERM (or
//! SIGINT), then exits 0, removing its Unix socket file. A Rust program
//! reaches it with `multiproc::manager::connect(address, authkey)` and
//! `get::<QueueProxy<_>>("get_queue")`; an unmodified Python program with
//!
//! ```python
//! from multiprocessing.managers import BaseManager
//! BaseManager.register('get_queue'); BaseManager.register('get_dict')
//! m = BaseManager(address=('127.0.0.1', 50000), authkey=b'secret'); m.connect()
//! m.get_queue().put('hello'); m.get_dict()['a'] = 1
//! ```
#![allow(unsafe_code)]

use multiproc::manager::{Server, objects};
use std::io::Write;

/// Blocks SIGTERM and SIGINT in this thread (and so in every thread it
/// starts later) and returns the set, for `sigwait`.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: `set` is a local sigset_t initialized by sigemptyset before any
    // other use; sigaddset and pthread_sigmask only read or write it and the
    // calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() {
    let Some(address) = std::env::args().nth(1) else {
        eprintln!("usage: manager_server ADDRESS   (127.0.0.1:PORT or a Unix socket path)");
        eprintln!("       with the authkey in the environment variable MULTIPROC_AUTHKEY");
        std::process::exit(2);
    };
    let Ok(authkey) = std::env::var("MULTIPROC_AUTHKEY") else {
        eprintln!("manager_server: set MULTIPROC_AUTHKEY to the authkey");
        std::process::exit(2);
    };
    let set = block_stop_signals();
    let mut server = match Server::bind(address.as_str(), authkey.as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("manager_server: cannot serve on {address}: {e}");
            std::process::exit(1);
        }
    };
    server
        .register_shared("get_queue", objects::queue(0))
        .register_shared("get_dict", objects::dict());
    let stopper = server.stopper();
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid, initialized signal set and `sig` a live
        // c_int for the result; the signals are blocked in every thread, so
        // sigwait is the only way they are delivered.
        unsafe { libc::sigwait(&set, &mut sig) };
        stopper.stop();
    });
    println!("serving {}", server.address());
    let _ = std::io::stdout().flush();
    match server.serve_forever() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("manager_server: {e}");
            std::process::exit(1);
        }
    }
}
