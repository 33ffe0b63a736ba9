//! A pool worker: a child process that runs the tasks its supervisor sends
//! on the worker's own channel, one after the other, and reports each
//! result before it starts the next task.
//!
//! # Wire format
//!
//! Supervisor to worker, one frame per batch: a kind byte, then for
//! [`TASKS`] a sequence of tasks, each `id: u64`, `entry: u64` (the task
//! function's offset from the bootstrap anchor), `nfds: u32` (its top bit,
//! [`MEASURE`], asks for the task's resource use), `len: u32` (all
//! little-endian) and `len` argument bytes. The frame's descriptors are
//! the tasks' handles, in task order. [`STOP`] ends the worker.
//!
//! Worker to supervisor, one frame per task: `id: u64`, a status byte and,
//! when the status has its [`MEASURED`] bit, the task's resource use
//! (`cpu_ns: u64`, `peak_rss: u64`), then the body — the encoded result
//! (with its handles) for [`OK`], an encoded [`RemotePanic`] for [`PANIC`],
//! an error message otherwise. A task is measured when its caller can see
//! the figure (an `AsyncResult`, a future) or a CPU limit per task is set;
//! otherwise the worker skips the `getrusage` and the 16 bytes.
#![allow(unsafe_code)]

use crate::codec::{self, Handle, le};
use crate::connection::Connection;
use crate::error::{Error, RemotePanic, Result};
use crate::process::limits::{self, ResourceUsage};
use crate::process::{Target, zst_target};
use crate::runtime::entry;
use crate::runtime::panic::{ExitRequest, remote_panic};
use crate::shm::RawArray;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};

/// A batch of tasks.
pub(crate) const TASKS: u8 = 1;
/// The worker should exit.
pub(crate) const STOP: u8 = 2;

/// Result statuses.
pub(crate) const OK: u8 = 0;
pub(crate) const PANIC: u8 = 1;
pub(crate) const ENCODE: u8 = 2;
pub(crate) const DECODE: u8 = 3;
pub(crate) const BAD_ENTRY: u8 = 4;
pub(crate) const INIT_FAILED: u8 = 5;

/// Size of a task's header in a batch frame.
pub(crate) const TASK_HEADER: usize = 24;
/// Size of a result's header without, and with, the resource use.
pub(crate) const RESULT_HEADER: usize = 9;
pub(crate) const RESULT_HEADER_MEASURED: usize = 25;
/// Bit of a task's `nfds`: report what the task used.
pub(crate) const MEASURE: u32 = 1 << 31;
/// Bit of a result's status: the resource use follows.
pub(crate) const MEASURED: u8 = 0x80;

/// What a task function reports.
pub(crate) enum Status {
    Ok,
    Panicked(RemotePanic),
    Encode(String),
    Decode(String),
}

/// A task function as the worker calls it: decode the arguments from
/// `args` (handles from `table`), run, encode the result into `out` and
/// `out_fds`.
pub(crate) type TaskEntry = fn(
    args: &[u8],
    table: &mut Vec<Option<OwnedFd>>,
    out: &mut Vec<u8>,
    out_fds: &mut Vec<OwnedFd>,
) -> Status;

/// The offset of a task entry from the code anchor (`runtime/entry.rs`).
pub(crate) fn task_entry_offset(entry: TaskEntry) -> u64 {
    entry::code_offset(entry as usize)
}

/// Turns a task entry offset received by a pool worker back into the
/// function, refusing any address outside this crate's executable segment.
pub(crate) fn resolve_task_entry(offset: u64) -> Result<TaskEntry, String> {
    // SAFETY: `TaskEntry` is a fn pointer type. A pool worker is a child
    // that passed `child_main`'s checks (magic, protocol, build identity),
    // so its parent runs this same build. The parent computed the offset
    // with `task_entry_offset` of a function of type `TaskEntry` and sent it
    // over the worker's private socketpair, which no other process can
    // reach.
    unsafe { entry::resolve_fn::<TaskEntry>(offset) }
}

/// The initializer a worker runs once before its first task.
#[derive(Serialize, Deserialize)]
pub(crate) struct Init {
    pub(crate) entry: u64,
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
    pub(crate) fds: Vec<Handle<OwnedFd>>,
}

fn run_caught<T>(body: impl FnOnce() -> T) -> std::result::Result<T, RemotePanic> {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => Ok(v),
        Err(payload) => {
            if payload.downcast_ref::<ExitRequest>().is_some() {
                // `multiproc::exit(n)` in a task ends the worker with code n.
                panic::resume_unwind(payload);
            }
            let p = remote_panic(&*payload);
            // Dropping a payload can itself panic; leak it instead.
            std::mem::forget(payload);
            Err(p)
        }
    }
}

fn finish<R: Serialize>(
    value: std::result::Result<R, RemotePanic>,
    out: &mut Vec<u8>,
    out_fds: &mut Vec<OwnedFd>,
) -> Status {
    match value {
        Ok(v) => match codec::encode_into(&v, out, out_fds) {
            Ok(()) => Status::Ok,
            Err(e) => {
                out.clear();
                out_fds.clear();
                Status::Encode(format!("cannot encode the task's result: {}", inner(e)))
            }
        },
        Err(p) => Status::Panicked(p),
    }
}

/// The task function of `apply`: `f(args...)`.
pub(crate) fn apply_entry<F, A, R>(
    args: &[u8],
    table: &mut Vec<Option<OwnedFd>>,
    out: &mut Vec<u8>,
    out_fds: &mut Vec<OwnedFd>,
) -> Status
where
    F: Target<A, Output = R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let args: A = match codec::decode_in(args, table) {
        Ok(a) => a,
        Err(e) => {
            return Status::Decode(format!("cannot decode the task's arguments: {}", inner(e)));
        }
    };
    let f: F = zst_target();
    finish(run_caught(move || f.call(args)), out, out_fds)
}

/// The task function of the map family: `f(args...)` for each argument
/// tuple of a chunk, the results as one list, or the position and panic of
/// the item that panicked (a [`ChunkOut`](super::results::ChunkOut)).
pub(crate) fn chunk_entry<F, A, R>(
    args: &[u8],
    table: &mut Vec<Option<OwnedFd>>,
    out: &mut Vec<u8>,
    out_fds: &mut Vec<OwnedFd>,
) -> Status
where
    F: Target<A, Output = R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let args: Vec<A> = match codec::decode_in(args, table) {
        Ok(a) => a,
        Err(e) => {
            return Status::Decode(format!("cannot decode the task's arguments: {}", inner(e)));
        }
    };
    let f: F = zst_target();
    // The chunk stops at the first panic, which is reported with the
    // position of its item in the chunk (as a result, for the sink to name
    // the input item).
    let at = std::cell::Cell::new(0u64);
    let mut results = Vec::with_capacity(args.len());
    let ran = run_caught(|| {
        for a in args {
            results.push(f.call(a));
            at.set(at.get() + 1);
        }
    });
    let outcome: super::results::ChunkOut<R> = match ran {
        Ok(()) => Ok(results),
        Err(p) => Err((at.get(), p)),
    };
    finish(Ok(outcome), out, out_fds)
}

/// The message of a codec error, without the variant's own prefix.
fn inner(e: Error) -> String {
    match e {
        Error::Encode(m) | Error::Decode(m) => m,
        other => other.to_string(),
    }
}

/// Parses a result frame's header: `(task id, status, usage, body)`.
pub(crate) fn parse_result(b: &[u8]) -> Result<(u64, u8, Option<ResourceUsage>, &[u8])> {
    if b.len() < RESULT_HEADER {
        return Err(Error::BadFrame("short pool result".into()));
    }
    let status = b[8];
    if status & MEASURED == 0 {
        return Ok((le::u64_at(b, 0), status, None, &b[RESULT_HEADER..]));
    }
    if b.len() < RESULT_HEADER_MEASURED {
        return Err(Error::BadFrame("short pool result".into()));
    }
    let usage = ResourceUsage::from_bytes(
        b[RESULT_HEADER..RESULT_HEADER_MEASURED]
            .try_into()
            .expect("16 bytes"),
    );
    Ok((
        le::u64_at(b, 0),
        status & !MEASURED,
        Some(usage),
        &b[RESULT_HEADER_MEASURED..],
    ))
}

/// Appends one task to a batch frame; `measure` asks for its resource use.
pub(crate) fn push_task(
    frame: &mut Vec<u8>,
    id: u64,
    entry: u64,
    nfds: usize,
    measure: bool,
    args: &[u8],
) {
    let nfds = nfds as u32 | if measure { MEASURE } else { 0 };
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&entry.to_le_bytes());
    frame.extend_from_slice(&nfds.to_le_bytes());
    frame.extend_from_slice(&(args.len() as u32).to_le_bytes());
    frame.extend_from_slice(args);
}

struct Reporter<'a> {
    conn: &'a Connection,
    out: Vec<u8>,
    out_fds: Vec<OwnedFd>,
    /// What the task being reported used, if it was measured.
    usage: Option<ResourceUsage>,
}

impl Reporter<'_> {
    fn send(&mut self, id: u64, status: Status) -> Result<()> {
        let (code, body) = match status {
            Status::Ok => (OK, None),
            Status::Panicked(p) => {
                self.out.clear();
                self.out_fds.clear();
                codec::encode_into(&p, &mut self.out, &mut self.out_fds)?;
                (PANIC, None)
            }
            Status::Encode(why) => (ENCODE, Some(why)),
            Status::Decode(why) => (DECODE, Some(why)),
        };
        self.report(id, code, body.as_deref())
    }

    fn report(&mut self, id: u64, code: u8, text: Option<&str>) -> Result<()> {
        let mut meta = [0u8; RESULT_HEADER_MEASURED];
        meta[..8].copy_from_slice(&id.to_le_bytes());
        meta[8] = code;
        let meta_len = match self.usage.take() {
            Some(usage) => {
                meta[8] |= MEASURED;
                meta[RESULT_HEADER..].copy_from_slice(&usage.to_bytes());
                RESULT_HEADER_MEASURED
            }
            None => RESULT_HEADER,
        };
        let meta = &mut meta[..meta_len];
        let no_fds = self.out_fds.is_empty();
        let fds: Vec<_> = if no_fds {
            Vec::new()
        } else {
            self.out_fds.iter().map(|f| f.as_fd()).collect()
        };
        let body = text.map_or(&self.out[..], str::as_bytes);
        let sent = self.conn.send_parts(&[meta, body], &fds);
        drop(fds);
        self.out.clear();
        self.out_fds.clear();
        match sent {
            // Too many handles in the result: report that instead.
            Err(Error::Encode(why)) => {
                meta[8] = ENCODE | (meta[8] & MEASURED);
                let why = format!("cannot send the task's result: {why}");
                self.conn.send_parts(&[meta, why.as_bytes()], &[])
            }
            other => other,
        }
    }
}

/// The body of a pool worker process.
///
/// Word `slot` of `started` receives the id of each task before the task is
/// decoded, so that the supervisor can tell, after a death, whether the
/// oldest task it sent was running.
pub(crate) fn worker_main(
    conn: Connection,
    init: Option<Init>,
    max_tasks: u64,
    (started, slot): (RawArray<u64>, u64),
) {
    let slot = usize::try_from(slot).unwrap_or(usize::MAX);
    // A task's panic is printed by the child's hook, as in any child
    // process (`process 'PoolWorker-1' (pid N) panicked at ...`), and
    // reported to the caller as the task's error.
    let mut rep = Reporter {
        conn: &conn,
        out: Vec::new(),
        out_fds: Vec::new(),
        usage: None,
    };
    if let Some(init) = init {
        let mut table: Vec<Option<OwnedFd>> =
            init.fds.into_iter().map(|h| Some(h.into_inner())).collect();
        let failed = match resolve_task_entry(init.entry) {
            Err(why) => Some(why),
            Ok(entry) => match entry(&init.args, &mut table, &mut rep.out, &mut rep.out_fds) {
                Status::Ok => None,
                Status::Panicked(p) => Some(format!("initializer panicked: {p}")),
                Status::Encode(why) | Status::Decode(why) => Some(why),
            },
        };
        rep.out.clear();
        rep.out_fds.clear();
        if let Some(why) = failed {
            let _ = rep.report(0, INIT_FAILED, Some(&why));
            return;
        }
    }
    let mut entries: HashMap<u64, TaskEntry> = HashMap::new();
    let mut done: u64 = 0;
    loop {
        let batch = conn.recv_with(|bytes, fds| Ok((bytes.to_vec(), fds)));
        let Ok((bytes, fds)) = batch else { return };
        match bytes.first() {
            Some(&TASKS) => {}
            _ => return,
        }
        let mut table: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let mut fd_at = 0usize;
        let mut at = 1usize;
        while at < bytes.len() {
            if bytes.len() - at < TASK_HEADER {
                return;
            }
            let id = le::u64_at(&bytes, at);
            let offset = le::u64_at(&bytes, at + 8);
            let nfds_word = le::u32_at(&bytes, at + 16);
            let measure = nfds_word & MEASURE != 0 || limits::task_cpu_limited();
            let nfds = (nfds_word & !MEASURE) as usize;
            let len = le::u32_at(&bytes, at + 20) as usize;
            at += TASK_HEADER;
            if bytes.len() - at < len || table.len() - fd_at < nfds {
                return;
            }
            let args = &bytes[at..at + len];
            at += len;
            let mut own: Vec<Option<OwnedFd>> = table[fd_at..fd_at + nfds]
                .iter_mut()
                .map(Option::take)
                .collect();
            fd_at += nfds;
            let entry = match entries.get(&offset) {
                Some(e) => Ok(*e),
                None => resolve_task_entry(offset).inspect(|e| {
                    entries.insert(offset, *e);
                }),
            };
            let sent = match entry {
                Ok(entry) => {
                    // Out of range only for a malformed array, which the
                    // supervisor never sends; the task runs regardless.
                    let _ = started.set(slot, id);
                    let status = if measure {
                        let cpu_before = limits::task_start();
                        let status = entry(args, &mut own, &mut rep.out, &mut rep.out_fds);
                        drop(own);
                        rep.usage = Some(limits::task_end(cpu_before));
                        status
                    } else {
                        let status = entry(args, &mut own, &mut rep.out, &mut rep.out_fds);
                        drop(own);
                        limits::task_unmeasured();
                        status
                    };
                    rep.send(id, status)
                }
                Err(why) => rep.report(id, BAD_ENTRY, Some(&why)),
            };
            if sent.is_err() {
                return;
            }
            done += 1;
            if max_tasks != 0 && done >= max_tasks {
                return;
            }
        }
    }
}
