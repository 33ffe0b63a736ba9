//! The pool's backlog: the tasks waiting for a worker, the pool's state,
//! and what the pool's handles share with its supervisor thread.

use super::results::Sink;
use crate::connection::Connection;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A task as submitted: entry, payload, handles, where its result goes,
/// and its index there.
pub(super) type Task = (u64, Vec<u8>, Vec<OwnedFd>, Arc<dyn Sink>, usize);

/// A task waiting for, or held by, a worker.
pub(crate) struct Job {
    pub(super) id: u64,
    pub(super) entry: u64,
    pub(super) payload: Vec<u8>,
    pub(super) fds: Vec<OwnedFd>,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) index: usize,
    /// How many workers died after this task was sent to them but before
    /// they started it.
    pub(super) unstarted_losses: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    Closed,
    Terminated,
}

pub(crate) struct Queue {
    pub(super) pending: VecDeque<Job>,
    pub(super) next_id: u64,
    pub(super) state: State,
    pub(super) broken: Option<String>,
    pub(super) finished: bool,
}

/// What the pool's handles and its supervisor share.
pub(crate) struct Shared {
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Connection,
    pub(super) woken: AtomicBool,
    pub(super) pids: Mutex<Vec<u32>>,
    /// Terminate with SIGKILL at once rather than SIGTERM first.
    pub(super) kill: AtomicBool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the supervisor; at most one wake-up is ever outstanding, so
    /// this never blocks.
    pub(super) fn wake(&self) {
        if !self.woken.swap(true, Ordering::SeqCst) {
            let _ = self.wake.send_bytes(b"");
        }
    }

    pub(super) fn submit(&self, tasks: Vec<Task>) -> Result<Vec<u64>> {
        let mut q = self.lock();
        if let Some(why) = &q.broken {
            return Err(Error::PoolBroken(why.clone()));
        }
        if q.state != State::Running {
            return Err(Error::State(
                "the pool is not running (closed or terminated)",
            ));
        }
        let mut ids = Vec::with_capacity(tasks.len());
        for (entry, payload, fds, sink, index) in tasks {
            let id = q.next_id;
            q.next_id += 1;
            ids.push(id);
            q.pending.push_back(Job {
                id,
                entry,
                payload,
                fds,
                sink,
                index,
                unstarted_losses: 0,
            });
        }
        drop(q);
        self.wake();
        Ok(ids)
    }

    /// Takes the tasks with these ids out of the queue, if still there.
    pub(super) fn remove_pending(&self, ids: &[u64]) -> Vec<Job> {
        let mut q = self.lock();
        let mut out = Vec::new();
        let mut i = 0;
        while i < q.pending.len() {
            if ids.contains(&q.pending[i].id) {
                out.extend(q.pending.remove(i));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Whether any task with these ids is still queued.
    pub(super) fn any_pending(&self, ids: &[u64]) -> bool {
        self.lock().pending.iter().any(|j| ids.contains(&j.id))
    }

    /// Takes the queued tasks of `sink` out of the queue.
    pub(super) fn remove_pending_of(&self, sink: &Arc<dyn Sink>) -> Vec<Job> {
        let mut q = self.lock();
        let (mine, rest): (VecDeque<Job>, VecDeque<Job>) = q
            .pending
            .drain(..)
            .partition(|j| std::ptr::addr_eq(Arc::as_ptr(&j.sink), Arc::as_ptr(sink)));
        q.pending = rest;
        mine.into_iter().collect()
    }

    /// Takes every queued task out of the queue.
    pub(super) fn drain_pending(&self) -> Vec<Job> {
        self.lock().pending.drain(..).collect()
    }
}
