//! The consumer's side: reading a record (or assembling a streamed item),
//! freeing its bytes, and telling a dead producer's partial item from one
//! on its way.
#![allow(unsafe_code)]

use super::*;
use crate::codec::le;

thread_local! {
    /// The buffer a record that wraps around the ring's end is copied into
    /// before it is decoded, reused by this thread's gets.
    static WRAPPED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A wrapped record's buffer is kept for reuse only up to this capacity.
const WRAPPED_KEEP: usize = 4 << 20;

/// Runs `f` on a reused buffer of `n` bytes (of unspecified contents): a
/// large item that wraps costs no fresh allocation, and so no page faults
/// nor zeroing, each time.
fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut v = WRAPPED.with(|w| std::mem::take(&mut *w.borrow_mut()));
    if v.len() < n {
        v.resize(n, 0);
    }
    let r = f(&mut v[..n]);
    if v.capacity() <= WRAPPED_KEEP {
        WRAPPED.with(|w| *w.borrow_mut() = v);
    }
    r
}

impl<M: RingMem> Core<M> {
    /// Takes the consumer lock for a get, or the item a get through this
    /// view parked with it (see [`get`](Self::get)).
    fn take_get(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<(Held<'_>, Option<Partial>), GetFail> {
        let s = self.st();
        // The lock free: nothing is parked (a parked item keeps it held).
        if s.get_lock.try_lock_fast() {
            return Ok((Held(&s.get_lock), None));
        }
        loop {
            if let Some(p) = self.unpark() {
                return Ok((Held(&s.get_lock), Some(p)));
            }
            // While this process holds the lock, a get through this view
            // may park an item, which no unlock announces: wait a slice at
            // a time and look again.
            let until = if s.get_lock.held_by_me() {
                park_slice(deadline)
            } else {
                deadline
            };
            if let Some(held) = take(&s.get_lock, until) {
                return Ok((held, None));
            }
            if expired(deadline) {
                return Err(GetFail::Empty);
            }
        }
    }

    /// The item parked by a get through this view, if any; the caller then
    /// holds the consumer lock.
    fn unpark(&self) -> Option<Partial> {
        if !self.has_parked.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut slot = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        self.has_parked
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let p = slot.take()?;
        if p.owner != raw::me() {
            // A copy inherited through fork: the lock is the parent's.
            return None;
        }
        Some(p.item)
    }

    /// Parks a streamed item whose get's deadline passed, with the consumer
    /// lock `held`, for the next get through this view.
    #[cold]
    fn park(&self, item: Partial, held: Held<'_>) {
        let mut slot = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(Parked {
            item,
            owner: raw::me(),
        });
        self.has_parked
            .store(true, std::sync::atomic::Ordering::Release);
        // The lock stays held for the parked item until a get resumes it
        // or this view is dropped.
        std::mem::forget(held);
    }

    /// Gets one item and decodes it with `decode` (while holding the get
    /// lock, straight from the ring when the record does not wrap).
    ///
    /// An item larger than the ring streams. When the deadline passes in
    /// the middle of one, this returns [`GetFail::Empty`] and parks the part
    /// taken in this view, which keeps the consumer lock: the next get
    /// through this view (any thread) resumes the item, other consumers
    /// wait for the lock (within their deadlines). Dropping the view with an
    /// item parked drops the item and releases the lock, as a consumer that
    /// dies mid-item would (the next consumer skips the rest of the item).
    pub(crate) fn get<T>(
        &self,
        deadline: Option<Instant>,
        decode: impl Fn(&[u8], Vec<OwnedFd>) -> Result<T>,
    ) -> std::result::Result<T, GetFail> {
        let s = self.st();
        let (held, mut partial) = self.take_get(deadline)?;
        let mut round = 0;
        let mut check_at = Instant::now() + SLICE;
        loop {
            let h = s.head.load(Ordering::Relaxed);
            let mut t = self.tail_seen.load(Ordering::Acquire);
            if t.wrapping_sub(h) == 0 || t.wrapping_sub(h) > self.cap {
                t = s.tail.load(Ordering::Acquire);
                // Release: see `free_space`.
                self.tail_seen.fetch_max(t, Ordering::Release);
            }
            if t == h {
                if partial.is_some() {
                    // Mid-item: a producer that died, or withdrew the item
                    // (its put's deadline passed), must not keep us here.
                    let late = expired(deadline);
                    if late || Instant::now() >= check_at {
                        check_at = Instant::now() + SLICE;
                        if self.producer_gone(h) {
                            log::debug!("discarding a partial queue item: its producer left");
                            partial = None;
                            round = 0;
                            continue;
                        }
                    }
                    if late {
                        // Chunks taken cannot be put back: keep them, and
                        // the lock, for the next get through this view.
                        self.park(partial.take().expect("checked"), held);
                        return Err(GetFail::Empty);
                    }
                } else if expired(deadline) {
                    return Err(GetFail::Empty);
                }
                pause(
                    &s.data_seq,
                    &s.get_waiters,
                    || s.tail.load(Ordering::Acquire) != h,
                    deadline,
                    &mut round,
                );
                continue;
            }
            round = 0;
            let avail = t.wrapping_sub(h);
            let mut hb = [0u8; HDR as usize];
            if avail > self.cap || avail < HDR {
                return Err(self.corrupt(t));
            }
            self.read_at(h, &mut hb);
            let clen = u64::from(le::u32_at(&hb, 0));
            let word = le::u32_at(&hb, 4);
            let seq = le::u64_at(&hb, 8);
            let total = le::u64_at(&hb, 16);
            let (flags, nfds) = (word & 0xff, (word >> 8) as usize);
            let rec = HDR + pad8(clen);
            if rec > avail || nfds > MAX_ITEM_FDS || clen > total {
                return Err(self.corrupt(t));
            }
            let first = flags & F_FIRST != 0;
            let last = flags & F_LAST != 0;
            let fds_of = |n: usize| {
                if flags & F_FDS != 0 {
                    self.take_fds(seq, n)
                } else {
                    Ok(Vec::new())
                }
            };
            if first && last {
                if partial.take().is_some() {
                    log::debug!("discarding a partial queue item: its producer died");
                }
                let out = fds_of(nfds).and_then(|fds| match self.slice_at(h + HDR, clen) {
                    Some(bytes) => decode(bytes, fds),
                    None => with_scratch(clen as usize, |v| {
                        self.read_at(h + HDR, v);
                        decode(v, fds)
                    }),
                });
                self.consumed(h + rec, true);
                return out.map_err(GetFail::Err);
            }
            if first {
                if partial.is_some() {
                    log::debug!("discarding a partial queue item: its producer died");
                }
                let mut buf = Vec::with_capacity(total.min(MAX_RESERVE) as usize);
                self.append(&mut buf, h + HDR, clen);
                partial = Some(Partial {
                    seq,
                    total,
                    buf,
                    fds: fds_of(nfds),
                });
                self.consumed(h + rec, true);
                continue;
            }
            let mine = partial
                .as_ref()
                .is_some_and(|p| p.seq == seq && p.total == total);
            if !mine {
                // A chunk of an item whose start was taken by a consumer
                // that died, or whose producer died: skip it.
                self.consumed(h + rec, false);
                continue;
            }
            let p = partial.as_mut().expect("checked");
            if p.buf.len() as u64 + clen > p.total || (last && p.buf.len() as u64 + clen != p.total)
            {
                partial = None;
                self.consumed(h + rec, false);
                continue;
            }
            self.append(&mut p.buf, h + HDR, clen);
            self.consumed(h + rec, false);
            if last {
                let p = partial.take().expect("checked");
                return p
                    .fds
                    .and_then(|fds| decode(&p.buf, fds))
                    .map_err(GetFail::Err);
            }
        }
    }

    pub(super) fn append(&self, buf: &mut Vec<u8>, pos: u64, n: u64) {
        let old = buf.len();
        buf.resize(old + n as usize, 0);
        self.read_at(pos, &mut buf[old..]);
    }

    /// Publishes `head` (after the bytes before it were copied out).
    #[inline]
    pub(super) fn consumed(&self, new_head: u64, item_taken: bool) {
        let s = self.st();
        if item_taken {
            // Before `head`: a consumer dying between the two makes `qsize`
            // low by one, never high (which could block a bounded queue).
            s.items_out.fetch_add(1, Ordering::Release);
        }
        s.head.store(new_head, Ordering::Release);
        notify(&s.space_seq, &s.put_waiters);
    }

    /// A process broke the ring's format: drop everything published and
    /// report it.
    #[cold]
    pub(super) fn corrupt(&self, tail: u64) -> GetFail {
        let s = self.st();
        s.items_out
            .store(s.items_in.load(Ordering::Acquire), Ordering::Release);
        s.head.store(tail, Ordering::Release);
        notify(&s.space_seq, &s.put_waiters);
        GetFail::Err(Error::BadFrame(
            "queue ring holds a malformed record; queued items were discarded".into(),
        ))
    }

    /// Mid-item with nothing published past `h`: whether the item's producer
    /// is gone (the put lock is free, or its holder is dead, and still no
    /// data came): it died, or its deadline passed and it withdrew the item.
    pub(super) fn producer_gone(&self, h: u64) -> bool {
        let s = self.st();
        if s.put_lock.try_lock().is_none() {
            return false;
        }
        let _held = Held(&s.put_lock);
        s.tail.load(Ordering::Acquire) == h
    }
}
