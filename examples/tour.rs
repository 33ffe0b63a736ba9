//! A guided tour of multiproc through the seed programs ported so far: the
//! Python `multiprocessing` tutorials' programs, rewritten in Rust, each run
//! in a short form.
//!
//! Run it with `cargo run --release --example tour`. Each program is also an
//! example of its own, at full length (`cargo run --release --example
//! daemons`, …); the code lives in `examples/seeds/`.
//!
//! Child processes need no setup: the library takes over a re-executed child
//! before `main` runs, so a target is any plain `fn` with serde arguments.

#[path = "seeds/daemons.rs"]
mod daemons;
#[path = "seeds/echo_server.rs"]
mod echo_server;
#[cfg(feature = "tokio")]
#[path = "seeds/green_demo.rs"]
mod green_demo;
#[path = "seeds/heartbeat.rs"]
mod heartbeat;
#[path = "seeds/ktv.rs"]
mod ktv;
#[path = "seeds/manager_dict_list.rs"]
mod manager_dict_list;
#[path = "seeds/manager_queue_pool.rs"]
mod manager_queue_pool;
#[path = "seeds/pool_apply.rs"]
mod pool_apply;
#[path = "seeds/pool_tasks.rs"]
mod pool_tasks;
#[path = "seeds/process_basics.rs"]
mod process_basics;
#[path = "seeds/queue_pipe.rs"]
mod queue_pipe;
#[path = "seeds/queue_urls.rs"]
mod queue_urls;
#[path = "seeds/shared_counter.rs"]
mod shared_counter;
#[path = "seeds/slow_requests.rs"]
mod slow_requests;
#[path = "seeds/ticket.rs"]
mod ticket;
#[path = "seeds/traffic_light.rs"]
mod traffic_light;

use std::error::Error;
use std::time::Instant;

fn main() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    println!("multiproc tour: Python's multiprocessing tutorials, ported to Rust");
    println!(
        "(main process pid {}, start method {}, {} CPUs)",
        std::process::id(),
        multiproc::get_start_method(),
        multiproc::cpu_count()
    );
    println!("Lines from child processes are indented and start with [their name].");

    slow_requests::run(true)?;
    process_basics::run(true)?;
    daemons::run(true)?;
    heartbeat::run(true)?;
    echo_server::run(true)?;
    pool_tasks::run(true)?;
    pool_apply::run(true)?;
    ticket::run(true)?;
    ktv::run(true)?;
    traffic_light::run(true)?;
    shared_counter::run(true)?;
    queue_urls::run(true)?;
    queue_pipe::run(true)?;
    manager_dict_list::run(true)?;
    manager_queue_pool::run(true)?;
    // Coroutines (with `--features tokio`).
    #[cfg(feature = "tokio")]
    green_demo::run(true)?;

    println!();
    println!(
        "Tour finished in {:.1} s; children still running: {:?}",
        started.elapsed().as_secs_f64(),
        multiproc::active_children()
    );
    Ok(())
}
