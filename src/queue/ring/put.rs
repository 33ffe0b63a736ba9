//! The producer's side: waiting for room and an item slot, writing a
//! record (or streaming a large item in chunks), publishing it.
#![allow(unsafe_code)]

use super::*;

impl<M: RingMem> Core<M> {
    pub(super) fn free_space(&self) -> u64 {
        let s = self.st();
        let head = s.head.load(Ordering::Acquire);
        // Release: a thread of this process that uses the cached value
        // acquires what the consumer released with `head`.
        self.head_seen.fetch_max(head, Ordering::Release);
        let used = s.tail.load(Ordering::Relaxed).wrapping_sub(head);
        self.cap.saturating_sub(used)
    }

    /// Waits (holding the put lock) until `need` bytes are free; returns
    /// the free space.
    pub(super) fn wait_space(
        &self,
        need: u64,
        deadline: Option<Instant>,
    ) -> std::result::Result<u64, PutFail> {
        let s = self.st();
        let used = s
            .tail
            .load(Ordering::Relaxed)
            .wrapping_sub(self.head_seen.load(Ordering::Acquire));
        if used <= self.cap && self.cap - used >= need {
            return Ok(self.cap - used);
        }
        let mut round = 0;
        loop {
            let free = self.free_space();
            if free >= need {
                return Ok(free);
            }
            if expired(deadline) {
                return Err(PutFail::Full);
            }
            pause(
                &s.space_seq,
                &s.put_waiters,
                || self.free_space() >= need,
                deadline,
                &mut round,
            );
        }
    }

    /// Waits (holding the put lock) until fewer than `maxsize` items are
    /// queued.
    pub(super) fn wait_slot(&self, deadline: Option<Instant>) -> std::result::Result<(), PutFail> {
        let s = self.st();
        let mut round = 0;
        while self.qsize() >= self.maxsize {
            if expired(deadline) {
                return Err(PutFail::Full);
            }
            pause(
                &s.space_seq,
                &s.put_waiters,
                || self.qsize() < self.maxsize,
                deadline,
                &mut round,
            );
        }
        Ok(())
    }

    /// After a record was published.
    #[inline]
    pub(super) fn published(&self) {
        let s = self.st();
        notify(&s.data_seq, &s.get_waiters);
        if s.armed.load(Ordering::Relaxed) != 0 && s.armed.swap(0, Ordering::AcqRel) != 0 {
            if let Err(e) = sys::eventfd_signal(self.notify.as_fd()) {
                log::warn!("cannot signal queue readiness: {e}");
            }
        }
    }

    /// Counts a task for a joinable queue (before its item is published).
    pub(super) fn task_added(&self) {
        if self.joinable {
            self.st().unfinished.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Uncounts the task of an item withdrawn mid-stream (counted by
    /// [`task_added`](Self::task_added), never to be delivered).
    #[cold]
    fn task_withdrawn(&self) {
        if self.joinable {
            let s = self.st();
            if s.unfinished.fetch_sub(1, Ordering::AcqRel) == 1 {
                notify(&s.join_seq, &s.join_waiters);
            }
        }
    }

    /// Puts one encoded item. `deadline`: `None` waits as long as it takes;
    /// a past instant does not wait. An item larger than the ring streams;
    /// when the deadline passes in the middle, the item is withdrawn (see
    /// the comment there) and the put fails with [`PutFail::Full`]; a
    /// no-wait put of such an item fails at once.
    pub(crate) fn put(
        &self,
        bytes: &[u8],
        fds: &[OwnedFd],
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutFail> {
        if fds.len() > MAX_ITEM_FDS {
            return Err(PutFail::Err(Error::InvalidArgument(format!(
                "an item may carry at most {MAX_ITEM_FDS} handles, not {}",
                fds.len()
            ))));
        }
        let len = bytes.len() as u64;
        let s = self.st();
        let _held = take(&s.put_lock, deadline).ok_or(PutFail::Full)?;
        if self.maxsize > 0 {
            self.wait_slot(deadline)?;
        }
        let seq = s.next_seq.load(Ordering::Relaxed);
        s.next_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        let fds_flag = if fds.is_empty() { 0 } else { F_FDS };
        let rec = HDR + pad8(len);
        if rec <= self.cap {
            self.wait_space(rec, deadline)?;
            self.send_fds(seq, fds).map_err(PutFail::Err)?;
            let t = s.tail.load(Ordering::Relaxed);
            self.write_header(t, len, F_FIRST | F_LAST | fds_flag, fds.len(), seq, len);
            self.write_at(t + HDR, bytes);
            self.task_added();
            s.tail.store(t + rec, Ordering::Release);
            s.items_in.fetch_add(1, Ordering::Release);
            self.published();
            return Ok(());
        }
        // Stream the item in chunks while consumers drain it. Wait for a
        // quarter of the ring at a time, so that chunks stay large.
        let want = pad8((self.cap / 4).max(HDR + 8));
        if expired(deadline) {
            // An item larger than the ring cannot go in without waiting for
            // a consumer: a no-wait put fails before publishing anything.
            return Err(PutFail::Full);
        }
        let mut off = 0u64;
        while off < len || off == 0 {
            let free = match self.wait_space(want, deadline) {
                Ok(free) => free,
                Err(PutFail::Full) if off > 0 => {
                    // The deadline passed mid-item: withdraw the item. The
                    // put lock is released on return with nothing published
                    // past the last chunk, which consumers read as an item
                    // whose producer is gone (as if it had died): they drop
                    // the part they took, or skip it. The caller gets the
                    // item back, so its task is not counted either.
                    self.task_withdrawn();
                    log::debug!("queue put timed out mid-item: item withdrawn");
                    return Err(PutFail::Full);
                }
                Err(e) => return Err(e),
            };
            if off == 0 {
                self.send_fds(seq, fds).map_err(PutFail::Err)?;
                self.task_added();
            }
            let room = (free - HDR) & !7;
            let chunk = (len - off).min(room);
            let mut flags = fds_flag;
            if off == 0 {
                flags |= F_FIRST;
            }
            if off + chunk == len {
                flags |= F_LAST;
            }
            let t = s.tail.load(Ordering::Relaxed);
            self.write_header(t, chunk, flags, fds.len(), seq, len);
            self.write_at(t + HDR, &bytes[off as usize..(off + chunk) as usize]);
            s.tail.store(t + HDR + pad8(chunk), Ordering::Release);
            if off == 0 {
                s.items_in.fetch_add(1, Ordering::Release);
            }
            self.published();
            off += chunk;
            if flags & F_LAST != 0 {
                break;
            }
        }
        Ok(())
    }

    /// Puts one item of known encoded size `len` that fits the ring,
    /// encoding it with `encode` while holding the put lock: straight into
    /// the ring when the space does not wrap (one copy of the data instead
    /// of two), else through `scratch`. `encode` returns the item's handles.
    pub(crate) fn put_sized(
        &self,
        len: u64,
        deadline: Option<Instant>,
        scratch: &mut Vec<u8>,
        encode: &mut dyn FnMut(&mut [u8]) -> Result<Vec<OwnedFd>>,
    ) -> std::result::Result<(), PutFail> {
        let rec = HDR + pad8(len);
        debug_assert!(rec <= self.cap);
        let s = self.st();
        let _held = take(&s.put_lock, deadline).ok_or(PutFail::Full)?;
        if self.maxsize > 0 {
            self.wait_slot(deadline)?;
        }
        self.wait_space(rec, deadline)?;
        let t = s.tail.load(Ordering::Relaxed);
        let start = (t + HDR) % self.cap;
        let direct = if start + len <= self.cap {
            // SAFETY: `start + len <= cap <= ring_len`. The range lies
            // between `tail` and `head + cap` (room was checked above), which
            // only the put-lock holder (us) touches until `tail` is published
            // past it; no other reference to it exists.
            unsafe { self.mem.slice_mut(start as usize, len as usize) }
        } else {
            None
        };
        let fds = if let Some(dst) = direct {
            encode(dst).map_err(PutFail::Err)?
        } else {
            // The encoder writes every byte: only grow, never clear (no
            // zeroing of a reused buffer).
            if scratch.len() < len as usize {
                scratch.resize(len as usize, 0);
            }
            let buf = &mut scratch[..len as usize];
            let fds = encode(buf).map_err(PutFail::Err)?;
            self.write_at(t + HDR, buf);
            fds
        };
        if fds.len() > MAX_ITEM_FDS {
            return Err(PutFail::Err(Error::InvalidArgument(format!(
                "an item may carry at most {MAX_ITEM_FDS} handles, not {}",
                fds.len()
            ))));
        }
        let seq = s.next_seq.load(Ordering::Relaxed);
        s.next_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        self.send_fds(seq, &fds).map_err(PutFail::Err)?;
        let flags = F_FIRST | F_LAST | if fds.is_empty() { 0 } else { F_FDS };
        self.write_header(t, len, flags, fds.len(), seq, len);
        self.task_added();
        s.tail.store(t + rec, Ordering::Release);
        s.items_in.fetch_add(1, Ordering::Release);
        self.published();
        Ok(())
    }
}
