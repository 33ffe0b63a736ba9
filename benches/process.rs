//! Start + join of a trivial child with each start method, next to the raw
//! OS primitives measured in the same run.
//!
//! Benchmarks (group `process`):
//!
//! * `forkserver`, `spawn`, `fork`: `Process::new(noop, ())`, `start()`,
//!   `join()` with that start method. The fork server is started (and a
//!   first child run) before measuring, so `forkserver` is the steady state.
//! * `forkserver_nospare`: the same with `set_forkserver_spare(false)`, so
//!   each start forks on demand: the spare's gain (or loss) in this run.
//! * `forkserver_cold`: the first forkserver start + join of a fresh
//!   process, which includes starting the server. Each iteration re-executes
//!   this binary; only the start + join inside it is timed.
//! * `raw_fork_waitpid`: `fork()` of this process, the child `_exit(0)`s at
//!   once, `waitpid`.
//! * `raw_fork_waitpid_small`: the same, from a small single-threaded
//!   child of the fork server (the kind of process the fork server and the
//!   fork helper are), since the cost of `fork` grows with the memory map of
//!   the process that forks.
//! * `raw_posix_spawn_true`: `posix_spawn` of `/bin/true` + `waitpid`.
//!
//! The fork start method refuses to fork a process with several threads, and
//! criterion starts worker threads for its analysis after the first
//! benchmark, so `fork` is measured inside a single-threaded helper child
//! (started with the fork server) that runs the loop and reports its own
//! elapsed time.
//!
//! Run with `cargo bench --bench process` or through `bench/compare`.

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
use multiproc::{Process, StartMethod, Target, get_context};
use std::ffi::c_char;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// When set, this binary only times one cold forkserver start + join,
/// prints the nanoseconds and exits.
const COLD_ENV: &str = "MULTIPROC_BENCH_COLD_FORKSERVER";

fn noop() {}

fn start_join(method: StartMethod) {
    let mut p = get_context(method).process(noop, ());
    p.start().expect("start");
    p.join().expect("join");
    assert_eq!(p.exitcode(), Some(0));
}

/// Runs in a single-threaded child: `iters` fork-method start + joins,
/// returning the elapsed nanoseconds.
fn fork_method_loop(iters: u64) -> u64 {
    let t = Instant::now();
    for _ in 0..iters {
        start_join(StartMethod::Fork);
    }
    t.elapsed().as_nanos() as u64
}

/// Runs in a small single-threaded child (forked by the fork server):
/// `iters` raw fork + waitpid, returning the elapsed nanoseconds.
fn raw_fork_loop(iters: u64) -> u64 {
    let t = Instant::now();
    for _ in 0..iters {
        raw_fork_waitpid();
    }
    t.elapsed().as_nanos() as u64
}

/// Times `body(iters)` inside a fresh fork-server child, which reports its
/// own elapsed nanoseconds (the child's start and join are not timed).
fn in_helper<F: Target<(u64,), Output = u64>>(body: F, iters: u64) -> Duration {
    let mut helper = Process::new(body, (iters,));
    helper.start().expect("start helper");
    helper.join().expect("join helper");
    Duration::from_nanos(helper.take_result().expect("helper result"))
}

fn raw_fork_waitpid() {
    // SAFETY: the child calls only `_exit`, which is async-signal-safe, so
    // forking a multi-threaded process is sound here.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: `_exit` ends the child at once without running any
        // handler or destructor of the copied parent state.
        unsafe { libc::_exit(0) };
    }
    wait_exited(pid);
}

fn raw_posix_spawn_true() {
    let path = c"/bin/true";
    let argv: [*mut c_char; 2] = [path.as_ptr().cast_mut(), std::ptr::null_mut()];
    let envp: [*mut c_char; 1] = [std::ptr::null_mut()];
    let mut pid: libc::pid_t = 0;
    // SAFETY: `path` is a NUL-terminated string, `argv` and `envp` are
    // NULL-terminated arrays of NUL-terminated strings that outlive the call
    // (posix_spawn does not keep them), and null file actions / attributes
    // mean the defaults.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    assert_eq!(
        rc,
        0,
        "posix_spawn failed: {}",
        std::io::Error::from_raw_os_error(rc)
    );
    wait_exited(pid);
}

fn wait_exited(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer and `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "waitpid: {err}"
        );
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

/// Runs `iters` fresh copies of this binary, each timing its first
/// forkserver start + join, and sums their reports.
fn cold_forkserver(iters: u64) -> Duration {
    let exe = std::env::current_exe().expect("current_exe");
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let out = std::process::Command::new(&exe)
            .env(COLD_ENV, "1")
            .output()
            .expect("run a cold copy of the benchmark");
        assert!(out.status.success(), "cold run failed: {out:?}");
        let nanos: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("cold run prints nanoseconds");
        total += Duration::from_nanos(nanos);
    }
    total
}

fn bench_method(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, method: StartMethod) {
    group.bench_function(id, |b| b.iter(|| start_join(black_box(method))));
}

fn benches(c: &mut Criterion) {
    // Start the fork server and let it fork once before anything is timed.
    start_join(StartMethod::ForkServer);

    let mut group = c.benchmark_group("process");
    group.sample_size(20);
    bench_method(&mut group, "forkserver", StartMethod::ForkServer);
    group.bench_function("forkserver_nospare", |b| {
        multiproc::set_forkserver_spare(false);
        b.iter(|| start_join(black_box(StartMethod::ForkServer)));
        multiproc::set_forkserver_spare(true);
    });
    bench_method(&mut group, "spawn", StartMethod::Spawn);
    group.bench_function("fork", |b| {
        b.iter_custom(|iters| in_helper(fork_method_loop, iters))
    });
    group.bench_function("raw_fork_waitpid", |b| b.iter(raw_fork_waitpid));
    group.bench_function("raw_fork_waitpid_small", |b| {
        b.iter_custom(|iters| in_helper(raw_fork_loop, iters))
    });
    group.bench_function("raw_posix_spawn_true", |b| b.iter(raw_posix_spawn_true));
    group.sample_size(10);
    group.bench_function("forkserver_cold", |b| b.iter_custom(cold_forkserver));
    group.finish();
}

fn main() {
    if std::env::var_os(COLD_ENV).is_some() {
        let t = Instant::now();
        start_join(StartMethod::ForkServer);
        println!("{}", t.elapsed().as_nanos());
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
