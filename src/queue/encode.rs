//! Encoding an item on its way into the ring: through a reused per-thread
//! scratch buffer, or, for large items, straight into the ring under the
//! producer lock.

use super::Queue;
use super::ring::{self, PutFail};
use crate::codec;
use crate::error::Error;
use serde::Serialize;
use std::cell::RefCell;
use std::time::Instant;

thread_local! {
    /// Encoding buffer reused by `put` on this thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// The encoded size of the last item put on this thread: when it was
    /// large, the next item is measured first and encoded in place.
    static LAST_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Items from this size on are encoded straight into the ring.
const IN_PLACE_MIN: usize = 64 << 10;

/// A scratch buffer is kept for reuse only up to this capacity.
const SCRATCH_KEEP: usize = 4 << 20;

impl<T: Serialize> Queue<T> {
    pub(super) fn put_encoded(
        &self,
        item: &T,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutFail> {
        if self.is_closed() {
            return Err(PutFail::Err(Error::Closed));
        }
        let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let large = LAST_LEN.with(|l| l.get()) >= IN_PLACE_MIN;
        let r = match large.then(|| codec::encoded_size(item)) {
            // Large items that fit the ring are encoded under the lock,
            // straight into the ring: one copy of the bytes, not two.
            Some(Ok(len)) if (len as u64) + ring::HDR + 8 <= self.core.ring_size() => {
                LAST_LEN.with(|l| l.set(len));
                self.core
                    .put_sized(len as u64, deadline, &mut buf, &mut |dst| {
                        let mut fds = Vec::new();
                        codec::encode_exact(item, dst, &mut fds)?;
                        Ok(fds)
                    })
            }
            Some(Err(e)) => Err(PutFail::Err(e)),
            _ => {
                buf.clear();
                let mut fds = Vec::new();
                match codec::encode_into(item, &mut buf, &mut fds) {
                    Ok(()) => {
                        LAST_LEN.with(|l| l.set(buf.len()));
                        self.core.put(&buf, &fds, deadline)
                    }
                    Err(e) => Err(PutFail::Err(e)),
                }
            }
        };
        if buf.capacity() <= SCRATCH_KEEP {
            SCRATCH.with(|s| *s.borrow_mut() = buf);
        }
        r
    }
}
