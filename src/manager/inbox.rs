//! The put inbox of a managed queue: `put` from a Rust proxy on the same
//! machine without a round trip to the server.
//!
//! A managed queue without a `maxsize`, served by this crate's server, can
//! give a local client (one on a [pipe](super::local)) an *inbox*: one of the
//! crate's shared-memory [`Queue`]s (a 1 MiB ring) of pickled items, which
//! only the server reads. A proxy that holds it puts an item by writing its
//! pickle into the ring (no system call unless the server sleeps) instead
//! of calling `put` on the server.
//!
//! **Order and visibility.** The queue's items are those in the server's
//! list followed by those in the inbox. Every call the server serves on the
//! queue — from any client, Rust or Python, local or remote — first moves
//! everything in the inbox to the end of its list, under the queue's lock;
//! a server thread also moves items as they come, so that a waiting `get`
//! wakes. So a `put` that has returned is seen by every later call, exactly
//! as if it had been a call: FIFO order, `qsize`, `join` and
//! `unfinished_tasks` hold as before.
//!
//! **When a put still goes to the server.** An item that holds a proxy (the
//! server must take a reference to it), an item whose pickle is over 64 KiB,
//! a full ring, a bounded queue, a remote (TCP) connection, or a server that
//! is not this crate's: the proxy makes the usual call. The server then
//! moves the inbox's items first, so order holds across both ways.
//!
//! **A dead manager.** Before each inbox put the proxy checks that its
//! connection to the server is still open (one `poll`); when it is closed
//! the put takes the usual path and fails as any call does. A put that
//! wrote its item just before the manager died returned like a call that
//! was served just before: the item is lost with the manager.

use super::sockopt;
use crate::Connection;
use crate::error::{Error, Result};
use crate::pickle::{self, Value};
use crate::queue::Queue;
use serde_bytes::ByteBuf;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The method a client calls (on the queue's ident) to get the inbox. Not
/// in the queue's `exposed` list: the server answers it itself.
pub(crate) const METHOD: &str = "#multiproc_inbox";

/// Bytes of an inbox's ring.
const RING: usize = 1 << 20;

/// Items whose pickle is larger go to the server as a call (they would
/// take a large part of the ring).
const MAX_ITEM: usize = 64 << 10;

/// At most this many inboxes live in one server process (each holds four
/// descriptors and a thread), and one client process holds at most this
/// many; beyond, puts make the call.
const MAX_INBOXES: usize = 64;

/// Inboxes alive in this (server) process.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The shared-memory queue of an inbox.
pub(crate) type Ring = Queue<ByteBuf>;

/// The server's side of a queue's inbox.
pub(crate) struct Inbox {
    ring: Ring,
    /// Whether this is the queue's own (counted in [`LIVE`]), not the
    /// thread's copy.
    counted: bool,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if self.counted {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Inbox {
    /// A new inbox, and a thread that calls `arrived` with it each time
    /// items may have come, until it returns `None`; `Some(n)`: `n` items
    /// were taken in.
    ///
    /// # Errors
    /// When the ring or the thread cannot be made.
    pub(crate) fn start(arrived: impl Fn(&Inbox) -> Option<u64> + Send + 'static) -> Result<Inbox> {
        if LIVE.fetch_add(1, Ordering::Relaxed) >= MAX_INBOXES {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::InvalidArgument(format!(
                "more than {MAX_INBOXES} queue inboxes"
            )));
        }
        let made = Self::make(arrived);
        if made.is_err() {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
        made
    }

    fn make(arrived: impl Fn(&Inbox) -> Option<u64> + Send + 'static) -> Result<Inbox> {
        let ring = Ring::with_config(0, RING)?;
        let watch = Inbox {
            ring: ring.clone(),
            counted: false,
        };
        std::thread::Builder::new()
            .name("manager-inbox".into())
            .spawn(move || {
                // Wake-ups in a row that found nothing to take: the calls
                // took it first, or (a hostile writer) the ring holds what
                // cannot be taken; many in a row mean the latter, and the
                // thread then naps instead of spinning.
                let mut idle = 0u32;
                loop {
                    // The slice bounds how long a dropped queue keeps this
                    // thread.
                    if crate::connection::wait([&watch.ring], Some(Duration::from_secs(1))).is_err()
                    {
                        // Out of descriptors or memory for a moment: the
                        // calls still take items in; do not spin.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    match arrived(&watch) {
                        None => return,
                        Some(0) => idle += 1,
                        Some(_) => idle = 0,
                    }
                    if idle >= 100 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
            .map_err(Error::Io)?;
        Ok(Inbox {
            ring,
            counted: true,
        })
    }

    /// Moves every item waiting in the inbox to `items`; returns how many.
    /// An item that is not a plain pickle (only a hostile client writes
    /// one) is dropped.
    pub(crate) fn drain(&self, items: &mut VecDeque<Value>) -> u64 {
        let mut n = 0;
        let mut bad = 0;
        loop {
            match self.ring.get_nowait() {
                Ok(raw) => match super::fast::decode(&raw) {
                    Ok(v) => {
                        items.push_back(v);
                        n += 1;
                    }
                    Err(_) => bad += 1,
                },
                Err(Error::Empty) => break,
                // A broken record (written by a hostile client, or by one
                // killed mid-put) is skipped; the ring goes on.
                Err(_) => bad += 1,
            }
            if bad > 1024 {
                break;
            }
        }
        n
    }

    /// The ring, to send to a client.
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }
}

/// Asks the server, on a local client's pipe ([`local`](super::local)),
/// for the inbox of object `ident`. `Ok(None)`: the server has none to
/// give (not a queue without a `maxsize`).
///
/// # Errors
/// When the connection failed (it is then out of step).
pub(crate) fn ask(pipe: &Connection, ident: &str) -> Result<Option<Arc<Ring>>> {
    let mut req = Vec::new();
    super::fast::request(&mut req, Some(ident), METHOD, &[], &[])?;
    pipe.send_bytes(&req)?;
    let depth = pipe.max_decode_depth();
    let max = pipe.max_message_size();
    let (id, ring) = pipe.recv_with(|payload, fds| {
        // The ring's memory file comes first: it names the inbox.
        let id = fds
            .first()
            .and_then(|fd| crate::sys::file_identity(fd.as_fd()).ok());
        let ring = crate::codec::decode_message::<Option<Ring>>(payload, fds, depth, max)?;
        Ok((id, ring))
    })?;
    let (Some(id), Some(ring)) = (id, ring) else {
        return Ok(None);
    };
    let pid = crate::sys::self_ident().pid;
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.retain(|h| h.pid == pid && h.ring.strong_count() > 0);
    if let Some(same) = held
        .iter()
        .find(|h| h.id == id)
        .and_then(|h| h.ring.upgrade())
    {
        return Ok(Some(same));
    }
    if held.len() >= MAX_INBOXES {
        return Ok(None);
    }
    let ring = Arc::new(ring);
    held.push(Held {
        pid,
        id,
        ring: Arc::downgrade(&ring),
    });
    Ok(Some(ring))
}

/// What a process knows of one queue's inbox.
#[derive(Default)]
pub(crate) enum Known {
    /// Not asked yet on this connection.
    #[default]
    Unasked,
    /// The server has none to give.
    Refused,
    /// The inbox.
    Open(Arc<Ring>),
}

/// An inbox this process holds.
struct Held {
    /// The process that took it (a forked child starts afresh).
    pid: u32,
    /// Its memory file's device and inode.
    id: (u64, u64),
    ring: Weak<Ring>,
}

/// The inboxes this process holds, so that many proxies of one queue in
/// one process share one mapping and its descriptors.
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Puts `item` into `ring` if it may go that way: a plain value (no proxy
/// inside) whose pickle is small, a server still connected on `sock`, room
/// in the ring. False: make the call instead.
pub(crate) fn try_put(ring: &Ring, sock: BorrowedFd<'_>, item: &Value) -> bool {
    if super::proxy::holds_object(item) || sockopt::peer_closed(sock) {
        return false;
    }
    let bytes = pickle::dumps(item);
    if bytes.len() > MAX_ITEM {
        return false;
    }
    ring.put_nowait(ByteBuf::from(bytes)).is_ok()
}
