//! The fork server: a clean, single-threaded copy of this binary, started
//! once, that forks each child on request.
//!
//! It is this binary re-executed with `MULTIPROC_ROLE=forkserver:<ppid>`; the
//! load-time hook sends it here before `main`, so none of the program's own
//! code or threads exist in it. Clients talk to it over a `SOCK_SEQPACKET`
//! socket pair (atomic messages, so several processes may share one client
//! end):
//!
//! * request: 12 bytes `[magic u32][protocol u32][flags u32]` + 5
//!   descriptors `[child channel, status channel, stdin, stdout, stderr]`;
//!   flag 1 asks the server to keep a spare;
//! * on the status channel the server answers `[pid u32]` + the child's pidfd
//!   right after forking, and later `[kind u8][value i32]` (0 = exited with
//!   code, 1 = killed by signal) followed by the child's resource usage
//!   `[cpu ns u64][peak rss u64]` once it has reaped the child.
//!
//! **The spare.** After answering a request that asks for it, the server
//! forks a *spare*: a child that closes every descriptor but its own end of
//! a socket pair to the server, and blocks reading it. The next request
//! hands the child's channel and standard streams to the spare in one
//! message instead of forking, so a start costs a message rather than a
//! fork; the spare lays out its descriptors as a freshly forked child does
//! and runs `child_main`. An unused spare ends at its socket's end of
//! stream: when the server closes it (the server kills and reaps it on its
//! way out, or when a request does not want a spare) or when the server
//! dies, even by SIGKILL, since no other process holds the server's end.
//! The spare has no parent-death signal: the server may die right after
//! handing it a request, before the spare has read it, and the child it
//! becomes must outlive the server like one forked on demand (the handed
//! message stays readable after the server's end is closed).
//!
//! The server exits when every client end is closed, so it never outlives
//! the processes that use it. It ignores SIGINT, so Ctrl-C in a terminal
//! reaches the program, not the server.
#![allow(unsafe_code)]

use crate::codec::le;
use crate::error::{Error, Result};
use crate::runtime::role;
use crate::sys::{self, Fork, SocketKind, WaitStatus};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

const MAGIC: u32 = u32::from_le_bytes(*b"mpFS");
const PROTOCOL: u32 = 2;
/// Length of a request: magic, protocol, flags.
const REQUEST: usize = 12;
/// Request flag: keep a spare child ready for the next request.
const FLAG_SPARE: u32 = 1;

/// The environment variable that turns the spare off (`0`, `no`, `off` or
/// `false`).
pub(crate) const SPARE_VAR: &str = "MULTIPROC_FORKSERVER_SPARE";

/// 0: not decided yet (read [`SPARE_VAR`]), 1: on, 2: off.
static SPARE_SETTING: AtomicU8 = AtomicU8::new(0);

/// Whether the fork server keeps a spare child ready for this process's
/// next start.
///
/// By default the fork server forks one child ahead of time, which only
/// waits for its descriptors; a start with the forkserver method then hands
/// the new process to that spare instead of forking on demand, and the
/// server forks the next spare after it has answered. The spare does
/// nothing before it is used (the child reads its header, identity, logging
/// and limits as any child does) and dies with the server.
///
/// `set_forkserver_spare(false)` (or `MULTIPROC_FORKSERVER_SPARE=0` in the
/// environment, read on first use and inherited by children) makes every
/// later start fork on demand; the server ends an idle spare at the next
/// request. The setting is per process: each start says whether it wants
/// a spare kept.
///
/// # Examples
/// ```
/// fn noop() {}
/// multiproc::set_forkserver_spare(false);
/// let mut p = multiproc::Process::new(noop, ());
/// p.start()?;
/// p.join()?;
/// assert!(!multiproc::forkserver_spare());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn set_spare(enabled: bool) {
    SPARE_SETTING.store(if enabled { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether the fork server keeps a spare child for this process (see
/// [`set_forkserver_spare`](crate::set_forkserver_spare)).
///
/// # Examples
/// ```
/// if std::env::var_os("MULTIPROC_FORKSERVER_SPARE").is_none() {
///     assert!(multiproc::forkserver_spare());
/// }
/// ```
pub fn spare() -> bool {
    match SPARE_SETTING.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let off = std::env::var(SPARE_VAR).is_ok_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "0" | "no" | "off" | "false"
                )
            });
            // A concurrent `set_spare` wins.
            let _ = SPARE_SETTING.compare_exchange(
                0,
                if off { 2 } else { 1 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            SPARE_SETTING.load(Ordering::Relaxed) == 1
        }
    }
}

struct Client {
    control: OwnedFd,
    /// The server process, when this process started it (to reap it).
    server: Option<OwnedFd>,
}

static CLIENT: Mutex<Option<Client>> = Mutex::new(None);

/// In a new child: use the parent's server (if it passed one) instead of
/// anything inherited by fork.
pub(crate) fn adopt_client(control: Option<OwnedFd>) {
    let mut c = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = c.take() {
        // A forked child holds copies of the parent's descriptors; dropping
        // them closes only our copies. The server is not our child.
        drop(old.control);
        std::mem::forget(old.server);
    }
    *c = control.map(|control| Client {
        control,
        server: None,
    });
}

/// A duplicate of the client end, for a child to share the server.
pub(crate) fn client_for_child() -> Option<OwnedFd> {
    let c = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    c.as_ref().and_then(|c| c.control.try_clone().ok())
}

/// The pid of the fork server this process started, if it is running.
///
/// Useful for diagnostics; the server is started on the first use of the
/// forkserver start method.
///
/// # Examples
/// ```
/// fn noop() {}
/// let mut p = multiproc::Process::new(noop, ());
/// p.start()?;
/// p.join()?;
/// assert!(multiproc::forkserver_pid().is_some());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn server_pid() -> Option<u32> {
    let c = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    let server = c.as_ref()?.server.as_ref()?;
    read_pid_of_pidfd(server.as_fd())
}

fn read_pid_of_pidfd(fd: BorrowedFd<'_>) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&p| p > 0)
        .map(|p| p as u32)
}

/// Starts a server; `bind_now`: with symbols bound at load (see
/// [`role::spawn_bound`]).
fn start_server(bind_now: bool) -> Result<Client> {
    let (client, server) = sys::socketpair(SocketKind::SeqPacket)?;
    let pid = if bind_now {
        role::spawn_bound(role::FORKSERVER, None, server.as_fd())?
    } else {
        role::spawn(role::FORKSERVER, None, server.as_fd())?
    };
    let pidfd = sys::pidfd_open(pid)?;
    static SHUTDOWN_AT_EXIT: std::sync::Once = std::sync::Once::new();
    SHUTDOWN_AT_EXIT.call_once(|| sys::at_exit(shutdown_at_exit));
    Ok(Client {
        control: client,
        server: Some(pidfd),
    })
}

/// At exit (after the children were joined: exit hooks run in reverse
/// order of registration), close our end so the server sees end of stream
/// and exits, and reap it, so that no zombie is left for `init`.
extern "C" fn shutdown_at_exit() {
    let client = CLIENT.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(Client {
        control,
        server: Some(server),
    }) = client
    {
        drop(control);
        // Processes still holding a client end keep the server alive; do
        // not wait for them for long.
        let deadline = sys::deadline_after(std::time::Duration::from_secs(1));
        if let Ok(true) = sys::wait_readable(server.as_fd(), deadline) {
            let _ = sys::waitid_pidfd(server.as_fd(), false);
        }
    }
}

/// A child forked by the server.
pub(crate) struct Forked {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) status: OwnedFd,
}

/// What the caller writes on the child's channel while the server works:
/// given a client end of the server for the child, it sends the child's
/// first frames, so that the child finds them as soon as it starts.
pub(crate) type Presend<'a> = &'a mut dyn FnMut(OwnedFd) -> Result<()>;

/// Asks the server (started on first use, restarted if it died) to fork a
/// child whose channel is `child_chan`.
///
/// `presend`, if given, is called once, right after the request is sent
/// and before the answer is read; its result is returned with the child.
/// (If the server then turns out to be dead, the child of the next server
/// reads what it sent: the client end it holds is then that of the dead
/// server, which the child replaces on its first start of its own.)
pub(crate) fn fork_child(
    child_chan: BorrowedFd<'_>,
    mut presend: Option<Presend<'_>>,
) -> Result<(Forked, Option<Result<()>>)> {
    let mut present = None;
    let mut last_err = None;
    let mut bind_now = true;
    for _attempt in 0..2 {
        let mut guard = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = guard.is_none();
        if fresh {
            *guard = Some(start_server(bind_now)?);
        }
        // A server started just now that cannot be reached is replaced by
        // one that binds symbols lazily, in case binding them all at load
        // is what failed (a library with a symbol nothing defines).
        bind_now = !fresh;
        let client = guard.as_ref().expect("set above");
        let (status_here, status_there) = sys::socketpair(SocketKind::SeqPacket)?;
        let mut req = [0u8; REQUEST];
        req[..4].copy_from_slice(&MAGIC.to_le_bytes());
        req[4..8].copy_from_slice(&PROTOCOL.to_le_bytes());
        let flags = if spare() { FLAG_SPARE } else { 0 };
        req[8..].copy_from_slice(&flags.to_le_bytes());
        // A closed standard stream is replaced by a harmless placeholder.
        let stdio = [0, 1, 2].map(|fd| sys::stdio(fd).unwrap_or(status_there.as_fd()));
        let fds = [
            child_chan,
            status_there.as_fd(),
            stdio[0],
            stdio[1],
            stdio[2],
        ];
        let sent = sys::send_msg(client.control.as_fd(), &[IoSlice::new(&req)], &fds);
        drop(status_there);
        if sent.is_ok() {
            if let Some(f) = presend.take() {
                present = Some(client.control.try_clone().map_err(Error::from).and_then(f));
            }
        }
        let reply = sent.and_then(|_| {
            let mut buf = [0u8; 8];
            let mut got = VecDeque::new();
            let n = sys::recv_msg_into(status_here.as_fd(), &mut buf, &mut got, false)?;
            match (n, got.pop_front()) {
                (4, Some(pidfd)) => Ok((le::u32_at(&buf, 0), pidfd)),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the fork server closed the request",
                )),
            }
        });
        match reply {
            Ok((pid, pidfd)) => {
                let forked = Forked {
                    pid,
                    pidfd,
                    status: status_here,
                };
                return Ok((forked, present));
            }
            Err(e) => {
                // The server is gone (killed, or crashed): reap it and start
                // a new one.
                log::warn!("fork server unavailable ({e}); starting a new one");
                if let Some(old) = guard.take() {
                    if let Some(server) = &old.server {
                        let _ = sys::pidfd_send_signal(server.as_fd(), libc::SIGKILL);
                        let _ = sys::waitid_pidfd(server.as_fd(), true);
                    }
                }
                last_err = Some(e);
            }
        }
    }
    Err(Error::Io(last_err.expect("two failed attempts")))
}

struct Live {
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// A child forked ahead of time that waits for its descriptors (the spare).
struct Spare {
    pid: u32,
    pidfd: OwnedFd,
    /// The server's end of the spare's socket: one message with the child's
    /// channel and standard streams makes it a child.
    sock: OwnedFd,
}

/// What the spare receives with its descriptors.
const SPARE_GO: [u8; 4] = *b"mpGO";

/// Forks a spare. `None` when the fork fails (the next request forks).
fn make_spare() -> Option<Spare> {
    let (here, there) = sys::socketpair(SocketKind::SeqPacket).ok()?;
    // SAFETY: this process is single-threaded (the server runs before main
    // and starts no threads), so the child may run any code.
    match unsafe { sys::fork() } {
        Ok(Fork::Child) => spare_main(here, there),
        Ok(Fork::Parent(pid)) => {
            drop(there);
            match sys::pidfd_open(pid) {
                Ok(pidfd) => Some(Spare {
                    pid,
                    pidfd,
                    sock: here,
                }),
                Err(_) => {
                    // Without a pidfd the spare cannot be watched: closing
                    // `here` ends it; reap it by pid.
                    drop(here);
                    let _ = sys::reap_pid(pid);
                    None
                }
            }
        }
        Err(_) => None,
    }
}

/// Ends an unused spare and reaps it.
fn retire_spare(spare: Spare) {
    drop(spare.sock);
    let _ = sys::pidfd_send_signal(spare.pidfd.as_fd(), libc::SIGKILL);
    let _ = sys::waitid_pidfd(spare.pidfd.as_fd(), true);
}

/// Hands the request's channel and standard streams to the spare. On
/// success the spare is that child from now on. They are sent in the
/// order of the numbers they take in the child (standard streams, then
/// the channel), which is where the spare receives them.
fn hand_to_spare(spare: &Spare, req: &[OwnedFd]) -> bool {
    let fds = [
        req[2].as_fd(),
        req[3].as_fd(),
        req[4].as_fd(),
        req[0].as_fd(),
    ];
    sys::send_msg(spare.sock.as_fd(), &[IoSlice::new(&SPARE_GO)], &fds).is_ok()
}

/// The server's loop. Never returns.
pub(crate) fn serve(control: OwnedFd) -> ! {
    // SIGINT stays blocked (never acted on) in the server. A child inherits
    // the mask, restores the default action and then unblocks it, so a
    // SIGINT sent to a child between fork and that point stays pending and
    // is delivered instead of lost.
    sys::set_signal(libc::SIGINT, sys::Disposition::Ignore);
    sys::block_signal(libc::SIGINT, true);
    sys::set_signal(libc::SIGPIPE, sys::Disposition::Ignore);
    // What every child would otherwise work out for itself on its first
    // connection, settled once here and inherited.
    crate::connection::prime_spin();
    let _ = crate::runtime::entry::code_segment();
    let mut live: Vec<Live> = Vec::new();
    let mut spare: Option<Spare> = None;
    let mut fds = VecDeque::new();
    loop {
        let mut watch: Vec<BorrowedFd<'_>> = vec![control.as_fd()];
        if let Some(s) = &spare {
            watch.push(s.pidfd.as_fd());
        }
        let first_live = watch.len();
        watch.extend(live.iter().map(|l| l.pidfd.as_fd()));
        let ready = match sys::poll_readable(&watch, None) {
            Ok(r) => r,
            Err(_) => sys::exit_now(1),
        };
        if first_live == 2 && ready[1] {
            // The spare died unused (killed by someone): reap it.
            if let Some(s) = spare.take() {
                retire_spare(s);
            }
        }
        // Reap first, so that pidfds are not polled again after exit.
        let exited: Vec<usize> = ready[first_live..]
            .iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .map(|(i, _)| i)
            .collect();
        for &i in exited.iter().rev() {
            let l = live.swap_remove(i);
            if let Ok(Some((st, usage))) = super::limits::waitid_pidfd_usage(l.pidfd.as_fd(), false)
            {
                let (kind, value) = match st {
                    WaitStatus::Exited(c) => (0u8, c),
                    WaitStatus::Signaled(s) => (1u8, s),
                };
                // `[kind u8][value i32][cpu ns u64][peak rss u64]`
                let mut msg = [0u8; 21];
                msg[0] = kind;
                msg[1..5].copy_from_slice(&value.to_le_bytes());
                msg[5..].copy_from_slice(&usage.to_bytes());
                let _ = sys::send_msg::<OwnedFd>(l.status.as_fd(), &[IoSlice::new(&msg)], &[]);
            } else {
                live.push(l);
            }
        }
        if !ready[0] {
            continue;
        }
        fds.clear();
        let mut buf = [0u8; 16];
        let n = match sys::recv_msg_into(control.as_fd(), &mut buf, &mut fds, false) {
            Ok(0) | Err(_) => {
                if let Some(s) = spare.take() {
                    retire_spare(s);
                }
                sys::exit_now(0)
            }
            Ok(n) => n,
        };
        let valid = n == REQUEST
            && buf[..4] == MAGIC.to_le_bytes()
            && buf[4..8] == PROTOCOL.to_le_bytes()
            && fds.len() == 5;
        if !valid {
            continue;
        }
        let want_spare = le::u32_at(&buf, 8) & FLAG_SPARE != 0;
        let req: Vec<OwnedFd> = fds.drain(..).collect();
        let mut child = None;
        if let Some(s) = spare.take() {
            if want_spare && hand_to_spare(&s, &req) {
                child = Some((s.pid, s.pidfd));
                // The spare has its message; closing our end of its socket
                // is all that is left of it.
            } else {
                retire_spare(s);
            }
        }
        if child.is_none() {
            // SAFETY: this process is single-threaded (the server runs
            // before main and starts no threads), so the child may run any
            // code.
            let forked = unsafe { sys::fork() };
            child = match forked {
                Ok(Fork::Child) => become_forked_child(&req[0], [&req[2], &req[3], &req[4]]),
                Ok(Fork::Parent(pid)) => sys::pidfd_open(pid).ok().map(|fd| (pid, fd)),
                Err(_) => None, // The client sees its status channel close.
            };
        }
        if let Some((pid, pidfd)) = child {
            let reply = pid.to_le_bytes();
            let _ = sys::send_msg(req[1].as_fd(), &[IoSlice::new(&reply)], &[pidfd.as_fd()]);
            let mut req = req;
            let status = req.swap_remove(1);
            live.push(Live { pidfd, status });
        }
        // The next child's spare is forked after the answer, while this
        // child starts.
        if want_spare && spare.is_none() {
            spare = make_spare();
        }
    }
}

/// Where a spare keeps its socket to the server: just above the four
/// descriptors of the child it is to become, so that those arrive on
/// 0..=3, already laid out.
const SPARE_SOCK: i32 = 4;

/// A spare's life: wait (doing nothing else) for the descriptors of the
/// child it is to become, or exit when the server ends.
fn spare_main(here: OwnedFd, sock: OwnedFd) -> ! {
    let _abort = super::bootstrap::AbortOnUnwind;
    // The server's end of our socket is the server's alone, so that its
    // death (even by SIGKILL) is our end of stream.
    drop(here);
    // Keep only our socket, on SPARE_SOCK: every other descriptor the
    // server holds is closed, its standard streams too (the child's
    // replace them).
    // SAFETY: this fresh child never returns to the server's frames, so no
    // owner of a descriptor closed or replaced below is used or dropped
    // again; `sock` is forgotten after its move.
    let moved = unsafe { sys::dup2(sock.as_raw_fd(), SPARE_SOCK) };
    if moved.is_err() {
        sys::exit_now(0);
    }
    std::mem::forget(sock);
    // SAFETY: as above.
    let closed = unsafe {
        sys::close_between(0, SPARE_SOCK as u32 - 1)
            .and_then(|_| sys::close_from(SPARE_SOCK as u32 + 1))
    };
    if closed.is_err() {
        sys::exit_now(0);
    }
    // SAFETY: SPARE_SOCK was just installed and nothing else owns it.
    let sock = unsafe { sys::owned_from_raw(SPARE_SOCK) };
    let mut got = VecDeque::new();
    let mut buf = [0u8; 8];
    // Received without close-on-exec, as the child keeps them: this
    // process has one thread.
    let n = match sys::recv_msg_inheritable(sock.as_fd(), &mut buf, &mut got) {
        Ok(n) => n,
        Err(_) => sys::exit_now(0),
    };
    if n != SPARE_GO.len() || buf[..4] != SPARE_GO || got.len() != 4 {
        // End of stream (the server retired us or exited), or garbage.
        sys::exit_now(0);
    }
    drop(sock);
    // From here on this is an ordinary child of the server, which outlives
    // it like one forked on demand.
    let fds: Vec<OwnedFd> = got.into_iter().collect();
    if fds.iter().zip(0..).all(|(fd, n)| fd.as_raw_fd() == n) {
        // Standard streams on 0..=2 and the channel on 3, nothing else
        // open: the layout `become_forked_child` makes.
        fds.into_iter().for_each(|fd| {
            let _ = fd.into_raw_fd();
        });
        enter_child()
    }
    become_forked_child(&fds[3], [&fds[0], &fds[1], &fds[2]])
}

fn become_forked_child(chan: &OwnedFd, stdio: [&OwnedFd; 3]) -> ! {
    // A panic from here on must not unwind into the server's frames copied
    // into this child: it aborts (`child_main` never returns).
    let _abort = super::bootstrap::AbortOnUnwind;
    // Lay out the child's descriptors: the caller's stdio on 0..2 and the
    // channel on 3; close everything else the server holds.
    // Move sources above the targets first so that dup2 never clobbers one.
    let mut moved = [0i32; 4];
    for (i, src) in [chan, stdio[0], stdio[1], stdio[2]].into_iter().enumerate() {
        match sys::dup_above(src.as_fd(), 64) {
            Ok(fd) => moved[i] = fd.into_raw_fd(),
            Err(_) => sys::exit_now(role::EXIT_BOOTSTRAP_FAILED),
        }
    }
    // Everything the server holds, the sources included, is closed by
    // number below; their owners live in frames never returned to.
    for (target, src) in [(3, moved[0]), (0, moved[1]), (1, moved[2]), (2, moved[3])] {
        // SAFETY: this fresh child never returns to the server's frames, so
        // no owner of `target` is used or dropped again.
        if unsafe { sys::dup2(src, target) }.is_err() {
            sys::exit_now(role::EXIT_BOOTSTRAP_FAILED);
        }
    }
    // SAFETY: as above: the owners of descriptors 4 and up (the server's
    // channels, the request's descriptors, `moved`) are in frames never
    // returned to.
    if unsafe { sys::close_from(4) }.is_err() {
        sys::exit_now(role::EXIT_BOOTSTRAP_FAILED);
    }
    enter_child()
}

/// Runs the child whose standard streams are on 0..=2 and channel on 3,
/// with nothing else open.
fn enter_child() -> ! {
    let _abort = super::bootstrap::AbortOnUnwind;
    sys::set_signal(libc::SIGINT, sys::Disposition::Default);
    sys::block_signal(libc::SIGINT, false);
    // SAFETY: fd 3 is the channel, laid out by the caller, and nothing else
    // owns it.
    let chan = unsafe { sys::owned_from_raw(3) };
    super::bootstrap::child_main(chan, None)
}
