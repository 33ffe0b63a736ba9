//! Starting a child: the job it is given, the launch by each start method,
//! and the header and arguments sent to it.

use super::bootstrap::{self, ForkBody, Header};
use super::child::{self, ChildShared, Reaper};
use super::{Outcome, Process, Started, State, forkserver, get_start_method, limits};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::exclusive::Exclusive;
use crate::runtime::current::{self, StartMethod, current_process};
use crate::runtime::role;
use crate::sys::{self, SocketKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// Erased arguments: anything that can be sent on a connection.
pub(super) trait Payload: Send {
    fn send_on(&self, chan: &Connection) -> Result<()>;
    /// The encoded frame payload and its handles, as `send_on` would send.
    fn encode(&self) -> Result<(Vec<u8>, Vec<OwnedFd>)>;
}

impl<T: Serialize + Send> Payload for T {
    fn send_on(&self, chan: &Connection) -> Result<()> {
        chan.send(self)
    }

    fn encode(&self) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut out = Vec::new();
        let mut fds = Vec::new();
        crate::codec::encode_into(self, &mut out, &mut fds)?;
        Ok((out, fds))
    }
}

/// Arguments at most this long (encoded) are written on a fork server
/// child's channel before the server answers: far below a socket's
/// buffer, so the write never waits for a reader.
const PRESEND_MAX: usize = 16 * 1024;

pub(super) enum Job {
    Entry { offset: u64, args: Box<dyn Payload> },
    Closure(ForkBody),
}

impl<R: DeserializeOwned> Process<R> {
    /// Starts the child.
    ///
    /// # Errors
    /// [`Error::State`] when started twice or after close;
    /// [`Error::DaemonicChildren`] in a daemonic process;
    /// [`Error::ClosureNeedsFork`] / [`Error::ForkWithThreads`] for the fork
    /// method's rules; [`Error::Encode`] when the arguments cannot be
    /// serialized (no child is left behind); OS errors.
    pub fn start(&mut self) -> Result<()> {
        let job = match std::mem::replace(&mut self.state, State::Closed) {
            State::New(job) => job.into_inner(),
            other => {
                let closed = matches!(other, State::Closed);
                self.state = other;
                return Err(Error::State(if closed {
                    "process object is closed"
                } else {
                    "cannot start a process twice"
                }));
            }
        };
        match self.launch(job) {
            Ok(started) => {
                log::debug!(
                    "started {} (pid {}, {})",
                    self.name,
                    started.child.pid,
                    self.method.unwrap_or_else(get_start_method)
                );
                self.state = State::Started(Box::new(started));
                Ok(())
            }
            Err((job, e)) => {
                self.state = match job {
                    Some(job) => State::New(Exclusive::new(job)),
                    None => State::Closed,
                };
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn launch(&mut self, job: Job) -> std::result::Result<Started<R>, (Option<Job>, Error)> {
        if current_process().is_daemon() {
            return Err((Some(job), Error::DaemonicChildren));
        }
        let method = self.method.unwrap_or_else(get_start_method);
        let daemon = self.is_daemon();
        if matches!(job, Job::Closure(_)) && method != StartMethod::Fork {
            return Err((Some(job), Error::ClosureNeedsFork));
        }
        let (here, there) = match sys::socketpair(SocketKind::Stream) {
            Ok(p) => p,
            Err(e) => return Err((Some(job), e.into())),
        };
        let entry = match &job {
            Job::Entry { offset, .. } => Some(*offset),
            Job::Closure(_) => None,
        };
        let (child_limits, marker) = match self.limits.as_ref().map(limits::Limits::arm) {
            Some(Ok(Some((c, m)))) => (Some(c), Some(m)),
            Some(Err(e)) => return Err((Some(job), e.into())),
            _ => (None, None),
        };
        let self_pidfd = match current::self_pidfd() {
            Ok(fd) => fd,
            Err(e) => return Err((Some(job), e)),
        };
        let chan = Connection::new(here, true, true);
        // With the fork server, small arguments and the header are written
        // while the server hands the request to a child, so the child finds
        // them when it starts rather than waiting for this process again.
        let mut early = None;
        if method == StartMethod::ForkServer {
            if let Job::Entry { args, .. } = &job {
                match args.encode() {
                    Ok((bytes, fds)) if bytes.len() <= PRESEND_MAX => early = Some((bytes, fds)),
                    Ok(_) => {}
                    // As when the arguments fail to encode after the
                    // launch: the process object is closed.
                    Err(e) => return Err((None, e)),
                }
            }
        }
        let mut self_pidfd = Some(self_pidfd);
        let mut child_limits = child_limits;
        let mut presend_header = |client: OwnedFd| -> Result<()> {
            let (bytes, fds) = early.as_ref().expect("checked by the caller");
            let mut header = Header::new(
                entry,
                self.name.clone(),
                daemon,
                self.identity.clone(),
                method,
                self_pidfd.take().expect("called once"),
                Some(client),
            );
            header.limits = child_limits.take();
            chan.send(&header)?;
            let fds: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            chan.send_parts(&[bytes], &fds)
        };
        let presend: Option<forkserver::Presend<'_>> = if early.is_some() {
            Some(&mut presend_header)
        } else {
            None
        };
        let (pid, pidfd, reaper, job, present) = match method {
            StartMethod::ForkServer => match forkserver::fork_child(there.as_fd(), presend) {
                Ok((f, present)) => (
                    f.pid,
                    f.pidfd,
                    Reaper::ForkServer(f.status),
                    Some(job),
                    present,
                ),
                Err(e) => return Err((Some(job), e)),
            },
            StartMethod::Spawn => {
                let spawned = role::spawn(role::CHILD, None, there.as_fd())
                    .and_then(|pid| Ok((pid, sys::pidfd_open(pid)?)));
                match spawned {
                    Ok((pid, pidfd)) => (pid, pidfd, Reaper::Direct, Some(job), None),
                    Err(e) => return Err((Some(job), e.into())),
                }
            }
            StartMethod::Fork => match fork_now(there, job) {
                Ok((pid, pidfd, job)) => (pid, pidfd, Reaper::Direct, job, None),
                Err((job, e)) => return Err((job, e)),
            },
        };
        let child = Arc::new(ChildShared::new(
            pid,
            self.name.clone(),
            daemon,
            pidfd,
            reaper,
        ));
        child::register(child.clone());
        let mut started = Started {
            child,
            chan: Some(chan),
            outcome: Outcome::Pending,
            limits: self.limits.clone().zip(marker),
            verdict: std::sync::OnceLock::new(),
        };
        // Hand the child its header and arguments (unless they were sent
        // while the fork server worked). If this fails the child is already
        // running and will fail its bootstrap; join reports it.
        let chan = started.chan.as_ref().expect("set above");
        let sent = match (present, self_pidfd) {
            (Some(sent), _) => sent,
            (None, Some(self_pidfd)) => {
                // Built after the launch so that a fork server started by
                // it is shared with the child too.
                let mut header = Header::new(
                    entry,
                    self.name.clone(),
                    daemon,
                    self.identity.clone(),
                    method,
                    self_pidfd,
                    // Children of the fork server share it; spawned and
                    // forked children start their own when they need one.
                    (method == StartMethod::ForkServer)
                        .then(forkserver::client_for_child)
                        .flatten(),
                );
                header.limits = child_limits;
                chan.send(&header).and_then(|_| match &job {
                    Some(Job::Entry { args, .. }) => args.send_on(chan),
                    _ => Ok(()),
                })
            }
            (None, None) => Err(Error::State("the process header was already used")),
        };
        // The arguments (and any handles in them) are released now.
        drop(job);
        if let Err(e) = sent {
            if let Error::Encode(_) = e {
                let _ = started.child.signal(libc::SIGKILL);
                let _ = started.child.wait(None);
                child::unregister(&started.child);
                return Err((None, e));
            }
            started.outcome = Outcome::Failed(e);
        }
        Ok(started)
    }
}

/// Whether a process with `threads` threads may fork a child that runs
/// arbitrary code. Fails closed: a process that cannot tell its thread
/// count may have other threads, so it does not fork.
fn fork_permitted(threads: std::io::Result<usize>) -> Result<()> {
    match threads {
        Ok(1) => Ok(()),
        Ok(threads) => Err(Error::ForkWithThreads { threads }),
        Err(e) => {
            let why = format!(
                "refusing to fork: cannot tell whether this process has other threads \
                 (/proc/self/task: {e}); use the forkserver or spawn start method"
            );
            Err(Error::Io(std::io::Error::new(e.kind(), why)))
        }
    }
}

#[allow(clippy::type_complexity)]
fn fork_now(
    there: OwnedFd,
    job: Job,
) -> std::result::Result<(u32, OwnedFd, Option<Job>), (Option<Job>, Error)> {
    if let Err(e) = fork_permitted(sys::thread_count()) {
        return Err((Some(job), e));
    }
    // SAFETY: the process has one thread (checked just above, and nothing
    // in this function starts one), so the child may run arbitrary code.
    #[allow(unsafe_code)]
    let forked = unsafe { sys::fork() };
    match forked {
        Ok(sys::Fork::Child) => {
            // A panic from here on must not unwind into the parent's frames
            // copied into this child: it aborts (`child_main` never returns).
            let _abort = bootstrap::AbortOnUnwind;
            bootstrap::forget_parent_channel_after_fork();
            let body = match job {
                Job::Closure(body) => Some(body),
                Job::Entry { .. } => None,
            };
            bootstrap::child_main(there, body)
        }
        Ok(sys::Fork::Parent(pid)) => match sys::pidfd_open(pid) {
            Ok(pidfd) => {
                drop(there);
                Ok((pid, pidfd, Some(job)))
            }
            Err(e) => Err((None, e.into())),
        },
        Err(e) => Err((Some(job), e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_is_refused_when_the_thread_count_cannot_be_read() {
        let unreadable = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        match fork_permitted(Err(unreadable)) {
            Err(Error::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
                assert!(e.to_string().contains("refusing to fork"), "{e}");
            }
            other => panic!("forked without knowing the thread count: {other:?}"),
        }
    }

    #[test]
    fn fork_is_refused_with_other_threads_and_allowed_alone() {
        assert!(matches!(
            fork_permitted(Ok(3)),
            Err(Error::ForkWithThreads { threads: 3 })
        ));
        assert!(fork_permitted(Ok(1)).is_ok());
    }
}
