//! The pool's supervisor thread: hands queued tasks to idle workers, reads
//! their results, watches their sentinels and timeouts, and replaces dead
//! workers.
//!
//! Each worker has its own channel and runs its tasks in the order they
//! were sent, reporting each result before starting the next. So when a
//! worker dies, the oldest task it had not reported is the one it was
//! running: that task fails with [`Error::WorkerLost`] (or
//! [`Error::TaskTimeout`] when the supervisor killed it for its timeout),
//! and the tasks queued behind it on that worker, which never started, go
//! back to the front of the pool's queue.

use super::backlog::{Job, Shared, State};
use super::worker::{self, Init};
use crate::codec::{self, Handle};
use crate::connection::{Connection, Pipe};
use crate::error::{Error, RemotePanic, Result};
use crate::process::{Process, StartMethod};
use crate::shm::RawArray;
use crate::sys;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Produces a worker's initializer: its entry and freshly encoded arguments.
pub(crate) type InitFn = Arc<dyn Fn() -> Result<(u64, Vec<u8>, Vec<OwnedFd>)> + Send + Sync>;

/// How to start workers.
#[derive(Clone)]
pub(crate) struct WorkerSpec {
    pub(crate) method: StartMethod,
    pub(crate) init: Option<InitFn>,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    /// Resource limits of each worker (CPU time per task).
    pub(crate) limits: Option<crate::Limits>,
    /// One word per worker slot: the id of the task the worker in that slot
    /// started last ([`NOT_STARTED`] before its first), written by the
    /// worker before it decodes each task. It tells a task that was running
    /// when its worker died from one that was only sent to it.
    pub(crate) started: RawArray<u64>,
}

/// Most tasks in flight on one worker, for quick tasks.
const MAX_DEPTH: usize = 64;
/// Argument bytes that may wait unread on one worker's channel; larger
/// batches go only to a worker that has nothing outstanding (so a send can
/// never block on a worker that is itself blocked sending a result).
const BYTE_BUDGET: usize = 64 * 1024;
/// Descriptors per batch frame.
const FD_BUDGET: usize = 200;

pub(crate) struct WorkerSlot {
    proc: Process<()>,
    conn: Connection,
    pid: u32,
    conn_open: bool,
    outstanding: VecDeque<Job>,
    head_since: Instant,
    sent: usize,
    depth: usize,
    service_ns: f64,
    inflight_bytes: usize,
    killed_for: Option<u64>,
    /// This worker's word in [`WorkerSpec::started`].
    slot: usize,
}

/// A slot of [`WorkerSpec::started`] before its worker's first task.
pub(crate) const NOT_STARTED: u64 = u64::MAX;

/// How often a task goes back to the queue because its worker died before
/// starting it; the next such loss fails it (workers that die for reasons
/// of their own must not keep a task waiting forever).
const MAX_UNSTARTED_LOSSES: u8 = 3;

impl WorkerSlot {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the worker and waits for it (used when a pool cannot start).
    pub(crate) fn kill_now(mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.join();
    }
}

/// Starts one worker process.
pub(crate) fn start_worker(
    spec: &WorkerSpec,
    method: StartMethod,
    slot: usize,
) -> Result<WorkerSlot> {
    let (here, there) = Pipe::new()?;
    let init = match &spec.init {
        Some(f) => {
            let (entry, args, fds) = f()?;
            Some(Init {
                entry,
                args,
                fds: fds.into_iter().map(Handle).collect(),
            })
        }
        None => None,
    };
    let max = spec.max_tasks.unwrap_or(0) as u64;
    spec.started.set(slot, NOT_STARTED)?;
    let started = (spec.started.clone(), slot as u64);
    let mut proc = Process::new(worker::worker_main, (there, init, max, started))
        .daemon(true)
        .start_method(method);
    if let Some(limits) = &spec.limits {
        proc = proc.limits(limits.clone());
    }
    let name = proc.get_name().replace("Process", "PoolWorker");
    proc.set_name(name);
    proc.start()?;
    let pid = proc.pid().expect("started");
    Ok(WorkerSlot {
        proc,
        conn: here,
        pid,
        conn_open: true,
        outstanding: VecDeque::new(),
        head_since: Instant::now(),
        sent: 0,
        depth: 1,
        service_ns: 0.0,
        inflight_bytes: 0,
        killed_for: None,
        slot,
    })
}

pub(crate) struct Supervisor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) wake: Connection,
    pub(crate) workers: Vec<WorkerSlot>,
    pub(crate) spec: WorkerSpec,
    pub(crate) next: usize,
}

enum Step {
    Go,
    Stop,
    Terminate,
}

impl Supervisor {
    fn replacement_method(&self) -> StartMethod {
        // A forked child cannot be started from this (threaded) process:
        // replacements of fork workers come from the fork server.
        match self.spec.method {
            StartMethod::Fork => StartMethod::ForkServer,
            m => m,
        }
    }

    fn publish_pids(&self) {
        let pids = self.workers.iter().map(|w| w.pid).collect();
        *self.shared.pids.lock().unwrap_or_else(|e| e.into_inner()) = pids;
    }

    /// Runs the pool until it is closed and drained or terminated. If the
    /// supervisor panics (a result type whose `Deserialize` panics, say),
    /// the pool is broken instead of left hanging: every pending and later
    /// result fails with [`Error::PoolBroken`] saying the supervisor died,
    /// the workers are killed, and `join` returns.
    pub(crate) fn run(mut self) {
        let run = panic::catch_unwind(AssertUnwindSafe(|| self.run_loop()));
        let Err(payload) = run else { return };
        let why = format!(
            "the pool's supervisor thread panicked ({}); the pool cannot run tasks any more",
            panic_text(&*payload)
        );
        log::error!("{why}");
        let cleanup = panic::catch_unwind(AssertUnwindSafe(|| {
            self.break_pool(why);
            self.shared.lock().finished = true;
        }));
        if cleanup.is_err() {
            log::error!("the pool's supervisor panicked again while failing its tasks");
            self.shared.lock().finished = true;
        }
    }

    fn run_loop(&mut self) {
        self.publish_pids();
        loop {
            match self.dispatch() {
                Step::Go => {}
                Step::Stop => return self.stop_all(),
                Step::Terminate => return self.terminate_all(),
            }
            if let Err(e) = self.wait_and_handle() {
                self.break_pool(format!("pool supervisor failed: {e}"));
            }
        }
    }

    /// Moves queued tasks to workers with room and sends them.
    fn dispatch(&mut self) -> Step {
        let mut frames: Vec<(usize, usize)> = Vec::new();
        {
            let mut q = self.shared.lock();
            match q.state {
                State::Terminated => return Step::Terminate,
                State::Closed
                    if q.pending.is_empty()
                        && self.workers.iter().all(|w| w.outstanding.is_empty()) =>
                {
                    return Step::Stop;
                }
                _ => {}
            }
            if q.pending.is_empty() || q.broken.is_some() {
                return Step::Go;
            }
            let n = self.workers.len();
            for k in 0..n {
                let i = (self.next + k) % n;
                let w = &mut self.workers[i];
                if !w.conn_open || w.killed_for.is_some() {
                    continue;
                }
                // An idle worker that has already died (its exit not yet
                // handled) must not be handed tasks: it would be blamed for
                // one it never started. Its replacement takes them.
                if w.outstanding.is_empty() && !w.proc.is_alive() {
                    continue;
                }
                let first = w.outstanding.len();
                let mut bytes = 0usize;
                let mut fds = 0usize;
                while let Some(job) = q.pending.front() {
                    let room = w.outstanding.len() < w.depth
                        && self.spec.max_tasks.is_none_or(|m| w.sent < m);
                    let fits = w.outstanding.is_empty()
                        || (w.inflight_bytes + bytes + job.payload.len() <= BYTE_BUDGET
                            && fds + job.fds.len() <= FD_BUDGET);
                    if !room || !fits {
                        break;
                    }
                    let job = q.pending.pop_front().expect("front exists");
                    bytes += job.payload.len();
                    fds += job.fds.len();
                    w.sent += 1;
                    if w.outstanding.is_empty() {
                        w.head_since = Instant::now();
                    }
                    w.outstanding.push_back(job);
                }
                w.inflight_bytes += bytes;
                if w.outstanding.len() > first {
                    frames.push((i, first));
                }
                if q.pending.is_empty() {
                    break;
                }
            }
            self.next = (self.next + 1) % n.max(1);
        }
        for (i, first) in frames {
            self.send_batch(i, first);
        }
        Step::Go
    }

    fn send_batch(&mut self, i: usize, first: usize) {
        let w = &mut self.workers[i];
        let mut frame = Vec::with_capacity(64);
        frame.push(worker::TASKS);
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        for job in w.outstanding.range(first..) {
            worker::push_task(
                &mut frame,
                job.id,
                job.entry,
                job.fds.len(),
                job.sink.wants_usage(),
                &job.payload,
            );
            fds.extend(job.fds.iter().map(|f| f.as_fd()));
        }
        let sent = w.conn.send_parts(&[&frame], &fds);
        drop(fds);
        if sent.is_err() {
            // The worker is gone and never got these: queue them again.
            let back: Vec<Job> = w.outstanding.drain(first..).collect();
            w.sent -= back.len();
            w.inflight_bytes -= back.iter().map(|j| j.payload.len()).sum::<usize>();
            let mut q = self.shared.lock();
            for job in back.into_iter().rev() {
                q.pending.push_front(job);
            }
        }
    }

    fn wait_and_handle(&mut self) -> Result<()> {
        let timeout = self.spec.timeout;
        let deadline = timeout.and_then(|t| {
            self.workers
                .iter()
                .filter(|w| !w.outstanding.is_empty() && w.killed_for.is_none())
                // A timeout too large to add to an instant is no timeout.
                .filter_map(|w| w.head_since.checked_add(t))
                .min()
        });
        let mut fds: Vec<BorrowedFd<'_>> = vec![self.wake.as_fd()];
        let mut index: Vec<(usize, bool)> = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            if w.conn_open {
                fds.push(w.conn.as_fd());
                index.push((i, true));
            }
            fds.push(w.proc.sentinel()?);
            index.push((i, false));
        }
        let ready = sys::poll_readable(&fds, deadline)?;
        drop(fds);
        if ready[0] {
            // Drain first, then clear the flag: a wake-up sent after the
            // flag is cleared stays in the socket, and tasks queued before
            // it are picked up by the dispatch that follows.
            while self.wake.poll(Some(Duration::ZERO))? {
                self.wake.recv_bytes()?;
            }
            self.shared.woken.store(false, Ordering::SeqCst);
        }
        let mut dead = Vec::new();
        for (k, &(i, is_conn)) in index.iter().enumerate() {
            if !ready[k + 1] {
                continue;
            }
            if is_conn {
                self.read_results(i);
            } else {
                dead.push(i);
            }
        }
        // Highest index first, so that indices stay valid while replacing.
        for i in dead.into_iter().rev() {
            self.handle_exit(i);
        }
        if let Some(t) = timeout {
            let now = Instant::now();
            for w in &mut self.workers {
                let due = w.head_since.checked_add(t).is_some_and(|d| now >= d);
                if w.killed_for.is_none() && !w.outstanding.is_empty() && due {
                    w.killed_for = Some(w.outstanding[0].id);
                    let _ = w.proc.kill();
                }
            }
        }
        Ok(())
    }

    /// Reads every result already waiting on worker `i`'s channel.
    fn read_results(&mut self, i: usize) {
        loop {
            let w = &mut self.workers[i];
            let WorkerSlot {
                conn,
                outstanding,
                head_since,
                depth,
                service_ns,
                inflight_bytes,
                ..
            } = w;
            let mut init_failed = None;
            let res = conn.recv_with(|bytes, fds| {
                let (id, status, usage, body) = worker::parse_result(bytes)?;
                if status == worker::INIT_FAILED {
                    init_failed = Some(String::from_utf8_lossy(body).into_owned());
                    return Ok(());
                }
                // The job leaves `outstanding` only once delivered: if the
                // delivery panics, the supervisor's guard (in `run`) still
                // finds it there and fails it.
                let job = match outstanding.front() {
                    Some(j) if j.id == id => j,
                    _ => return Err(Error::BadFrame(format!("unexpected result for task {id}"))),
                };
                let now = Instant::now();
                let took = now.saturating_duration_since(*head_since).as_nanos() as f64;
                *service_ns = if *service_ns == 0.0 {
                    took
                } else {
                    (*service_ns * 7.0 + took) / 8.0
                };
                *depth = if *service_ns < 100_000.0 {
                    (*depth * 2).min(MAX_DEPTH)
                } else if *service_ns < 1_000_000.0 {
                    4
                } else {
                    1
                };
                *head_since = now;
                let outcome = match status {
                    worker::OK => Ok((body, fds)),
                    worker::PANIC => Err(match codec::decode::<RemotePanic>(body, fds) {
                        Ok(p) => Error::Panicked(p),
                        Err(e) => e,
                    }),
                    worker::ENCODE => Err(Error::Encode(text(body))),
                    worker::DECODE => Err(Error::Decode(text(body))),
                    _ => Err(Error::Bootstrap(text(body))),
                };
                if let Some(usage) = usage {
                    job.sink.record_usage(job.index, usage);
                }
                job.sink.deliver(job.index, outcome);
                let job = outstanding.pop_front().expect("front exists");
                *inflight_bytes -= job.payload.len();
                Ok(())
            });
            if let Some(why) = init_failed {
                self.break_pool(why);
                return;
            }
            match res {
                Ok(()) => {}
                Err(Error::BadFrame(_)) | Err(Error::Decode(_)) => {
                    // A worker that breaks the protocol is not trusted again.
                    let w = &mut self.workers[i];
                    w.conn_open = false;
                    let _ = w.proc.kill();
                    return;
                }
                Err(_) => {
                    // End of stream: the worker is exiting; its sentinel
                    // reports the rest.
                    self.workers[i].conn_open = false;
                    return;
                }
            }
            match self.workers[i].conn.poll(Some(Duration::ZERO)) {
                Ok(true) => continue,
                _ => return,
            }
        }
    }

    /// Worker `i` has exited: fail the task it was running, queue again the
    /// ones it never started, and start a replacement.
    fn handle_exit(&mut self, i: usize) {
        if self.workers[i].conn_open {
            self.read_results(i);
        }
        if i >= self.workers.len() {
            return;
        }
        let mut w = self.workers.remove(i);
        let _ = w.proc.join();
        let exitcode = w.proc.exitcode().unwrap_or(-libc::SIGKILL);
        let mut jobs = std::mem::take(&mut w.outstanding);
        // The worker is gone, so its last write to `started` is visible.
        let started = self.spec.started.get(w.slot);
        if let Some(mut head) = jobs.pop_front() {
            let timed_out = w.killed_for == Some(head.id);
            if !timed_out
                && started.is_some_and(|s| s != head.id)
                && head.unstarted_losses < MAX_UNSTARTED_LOSSES
            {
                // Sent but never started (the worker died between tasks,
                // e.g. killed while idle): not this task's fault, so it runs
                // elsewhere.
                head.unstarted_losses += 1;
                log::debug!(
                    "pool worker {} ended before starting task {}; the task goes back to the queue",
                    w.pid,
                    head.id
                );
                jobs.push_front(head);
            } else {
                let usage = w.proc.usage();
                let err = match (self.spec.timeout, w.proc.limit_exceeded()) {
                    (Some(t), _) if timed_out => Error::TaskTimeout(t),
                    (_, Some(limit)) => Error::LimitExceeded { limit, usage },
                    _ => Error::WorkerLost {
                        pid: w.pid,
                        exitcode,
                    },
                };
                if let Some(usage) = usage {
                    head.sink.record_usage(head.index, usage);
                }
                log::info!("task {} failed: {err}", head.id);
                head.sink.deliver(head.index, Err(err));
            }
        }
        let terminated;
        {
            let mut q = self.shared.lock();
            for job in jobs.into_iter().rev() {
                q.pending.push_front(job);
            }
            terminated = q.state == State::Terminated || q.broken.is_some();
        }
        let _ = w.proc.close();
        if terminated {
            self.publish_pids();
            return;
        }
        match start_worker(&self.spec, self.replacement_method(), w.slot) {
            Ok(new) => {
                log::debug!(
                    "pool worker {} ended (exit code {exitcode}); worker {} replaces it",
                    w.pid,
                    new.pid
                );
                self.workers.insert(i, new)
            }
            Err(e) => self.break_pool(format!("cannot start a replacement worker: {e}")),
        }
        self.publish_pids();
    }

    /// The pool cannot run tasks any more: fail everything, stop workers.
    fn break_pool(&mut self, why: String) {
        let jobs: Vec<Job> = {
            let mut q = self.shared.lock();
            if q.broken.is_none() {
                q.broken = Some(why.clone());
            }
            q.pending.drain(..).collect()
        };
        for job in jobs {
            job.sink
                .deliver(job.index, Err(Error::PoolBroken(why.clone())));
        }
        for mut w in self.workers.drain(..) {
            let _ = w.proc.kill();
            let _ = w.proc.join();
            for job in w.outstanding.drain(..) {
                job.sink
                    .deliver(job.index, Err(Error::PoolBroken(why.clone())));
            }
        }
        self.publish_pids();
    }

    /// Closed and drained: ask every worker to exit and wait for them.
    fn stop_all(&mut self) {
        for w in &self.workers {
            let _ = w.conn.send_parts(&[&[worker::STOP]], &[]);
        }
        for mut w in self.workers.drain(..) {
            if !matches!(w.proc.join_timeout(Duration::from_secs(5)), Ok(true)) {
                let _ = w.proc.kill();
                let _ = w.proc.join();
            }
        }
        self.publish_pids();
        self.shared.lock().finished = true;
    }

    /// Terminated: stop every worker (SIGTERM, or SIGKILL for
    /// `kill_workers`), fail every task.
    fn terminate_all(&mut self) {
        let kill = self.shared.kill.load(Ordering::SeqCst);
        for w in &self.workers {
            let _ = if kill {
                w.proc.kill()
            } else {
                w.proc.terminate()
            };
        }
        for mut w in self.workers.drain(..) {
            if !matches!(w.proc.join_timeout(Duration::from_secs(1)), Ok(true)) {
                let _ = w.proc.kill();
                let _ = w.proc.join();
            }
            for job in w.outstanding.drain(..) {
                job.sink.deliver(job.index, Err(Error::PoolTerminated));
            }
        }
        let jobs: Vec<Job> = self.shared.lock().pending.drain(..).collect();
        for job in jobs {
            job.sink.deliver(job.index, Err(Error::PoolTerminated));
        }
        self.publish_pids();
        self.shared.lock().finished = true;
    }
}

/// The message of a panic payload, as far as it is text.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-text payload"
    }
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}
