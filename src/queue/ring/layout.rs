//! The layout of a queue: record headers and limits, the shared state
//! block, and the ring bytes, reached through [`RingMem`].
#![allow(unsafe_code)]

use super::*;

/// Size of a record header: chunk length (`u32`), flags and descriptor
/// count (`u32`), item sequence number (`u64`), item total length (`u64`).
pub(crate) const HDR: u64 = 24;
/// The record starts an item.
pub(super) const F_FIRST: u32 = 1;
/// The record ends an item.
pub(super) const F_LAST: u32 = 2;
/// The item has descriptors on the queue's socket.
pub(super) const F_FDS: u32 = 4;
/// Smallest ring accepted.
pub(crate) const MIN_RING: u64 = 64;
/// Largest ring accepted (chunk lengths are `u32`).
pub(crate) const MAX_RING: u64 = 1 << 30;
/// Largest number of descriptors in one item.
pub(crate) const MAX_ITEM_FDS: usize = 16 * sys::MAX_FDS_PER_MSG;
/// Capacity reserved up front for a streamed item, whatever its header claims.
pub(super) const MAX_RESERVE: u64 = 256 << 20;

/// The shared state of a queue, one segment per queue. Cache-line groups:
/// configuration, producers, consumers, data futex, space futex, others.
#[repr(C)]
#[cfg_attr(all(loom, test), derive(Default))]
pub(crate) struct QueueState {
    /// Ring size in bytes (multiple of 8), fixed at creation.
    pub(super) cap: AtomicU64,
    /// Most items in the queue; 0 for no limit. Fixed at creation.
    pub(super) maxsize: AtomicU64,
    /// 1 for a `JoinableQueue` (puts count unfinished tasks).
    pub(super) joinable: AtomicU64,
    pub(super) _c: [u64; 5],

    /// Serializes producers; the holder owns `tail` and `next_seq`.
    pub(super) put_lock: RawLock,
    /// Bytes ever published (Release after the bytes are written).
    pub(super) tail: AtomicU64,
    /// Items whose first record was published.
    pub(super) items_in: AtomicU64,
    /// Sequence number of the next item.
    pub(super) next_seq: AtomicU64,
    pub(super) _p: [u64; 3],

    /// Serializes consumers; the holder owns `head` and `fd_claim`.
    pub(super) get_lock: RawLock,
    /// Bytes ever consumed (Release after the bytes are copied out).
    pub(super) head: AtomicU64,
    /// Items whose first record was taken.
    pub(super) items_out: AtomicU64,
    /// 1 + the sequence number of the last item whose descriptors a
    /// consumer started to take from the socket.
    pub(super) fd_claim: AtomicU64,
    pub(super) _g: [u64; 3],

    /// Bumped when data is published and a consumer may sleep.
    pub(super) data_seq: AtomicU32,
    pub(super) get_waiters: AtomicU32,
    pub(super) _d: [u64; 7],

    /// Bumped when space or an item slot frees and a producer may sleep.
    pub(super) space_seq: AtomicU32,
    pub(super) put_waiters: AtomicU32,
    pub(super) _s: [u64; 7],

    /// `JoinableQueue`: items put and not yet marked done.
    pub(super) unfinished: AtomicU64,
    pub(super) join_seq: AtomicU32,
    pub(super) join_waiters: AtomicU32,
    /// Set by `wait` before it polls the eventfd; a producer that clears it
    /// signals the eventfd.
    pub(super) armed: AtomicU32,
    pub(super) _pad: u32,
}

// SAFETY: `#[repr(C)]`, atomics and plain integers only (every bit pattern
// is valid, all zeros is an empty unlocked queue), align 8; the integer
// padding is never written after creation. (In loom model builds the
// atomics are the model checker's and no segment is ever made: the models
// keep the state in ordinary memory, see `ring_loom.rs`.)
shm_layout!(unsafe impl QueueState => Queue);

#[cfg(not(all(loom, test)))]
const _: () = assert!(std::mem::size_of::<QueueState>() == 6 * 64 - 40);

/// Where a queue's state and ring bytes live: the queue's shared segment,
/// or, in loom models, memory the model checker watches (`ring_loom.rs`).
/// The protocol in [`Core`] is written once against this; for the segment
/// every method inlines to what a direct use of the mapping would be.
///
/// # Safety
/// `ring_len` is never more than the bytes the implementation can read and
/// write at ring offsets `0..ring_len`, for as long as the value lives.
pub(crate) unsafe trait RingMem {
    /// The queue's shared state.
    fn state(&self) -> &QueueState;
    /// How many ring bytes there are (at least the ring size).
    fn ring_len(&self) -> usize;
    /// Copies `data` to ring offset `off`.
    ///
    /// # Safety
    /// `off + data.len() <= ring_len()`, and the protocol gives the range
    /// to the caller alone (nobody reads or writes it meanwhile).
    unsafe fn write(&self, off: usize, data: &[u8]);
    /// Copies the ring bytes at `off` into `out`.
    ///
    /// # Safety
    /// `off + out.len() <= ring_len()`, and nobody writes the range
    /// meanwhile (the protocol).
    unsafe fn read(&self, off: usize, out: &mut [u8]);
    /// The ring bytes at `off..off + n`, or `None` when this memory cannot
    /// lend them (the caller then copies).
    ///
    /// # Safety
    /// `off + n <= ring_len()`, and nobody writes the range while the slice
    /// lives (the protocol).
    unsafe fn slice(&self, off: usize, n: usize) -> Option<&[u8]>;
    /// The ring bytes at `off..off + n` to write in place, or `None` when
    /// this memory cannot lend them (the caller then copies).
    ///
    /// # Safety
    /// `off + n <= ring_len()`, and nobody else reads or writes the range
    /// while the slice lives (the protocol).
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, off: usize, n: usize) -> Option<&mut [u8]>;
}

// SAFETY: `tail()` is the mapping's tail, `len` bytes that live as long as
// the handle (the handle keeps the mapping).
unsafe impl RingMem for Shared<QueueState> {
    #[inline]
    fn state(&self) -> &QueueState {
        self.get()
    }

    #[inline]
    fn ring_len(&self) -> usize {
        self.tail().1
    }

    #[inline]
    unsafe fn write(&self, off: usize, data: &[u8]) {
        let (base, len) = self.tail();
        debug_assert!(off + data.len() <= len);
        // SAFETY: the caller keeps `off + data.len()` within the tail, which
        // the handle keeps mapped; the source is the caller's buffer, not
        // the mapping. Concurrency: the caller owns the range (protocol).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(off), data.len()) }
    }

    #[inline]
    unsafe fn read(&self, off: usize, out: &mut [u8]) {
        let (base, len) = self.tail();
        debug_assert!(off + out.len() <= len);
        // SAFETY: as in `write`; the destination is the caller's buffer,
        // and nobody writes the range meanwhile (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(base.add(off), out.as_mut_ptr(), out.len()) }
    }

    #[inline]
    unsafe fn slice(&self, off: usize, n: usize) -> Option<&[u8]> {
        let (base, len) = self.tail();
        debug_assert!(off + n <= len);
        // SAFETY: the range is inside the mapping, which outlives `&self`.
        // Nobody writes it while the slice lives (the caller's contract); a
        // process breaking the protocol could change the bytes under us,
        // which makes them wrong but not out of bounds (the decoder checks
        // everything it reads).
        Some(unsafe { std::slice::from_raw_parts(base.add(off), n) })
    }

    #[inline]
    unsafe fn slice_mut(&self, off: usize, n: usize) -> Option<&mut [u8]> {
        let (base, len) = self.tail();
        debug_assert!(off + n <= len);
        // SAFETY: the range is inside the mapping, which outlives `&self`;
        // the caller owns it alone while the slice lives (its contract), so
        // no other reference to these bytes exists.
        Some(unsafe { std::slice::from_raw_parts_mut(base.add(off), n) })
    }
}

impl<M: RingMem> Core<M> {
    /// Copies `data` into the ring at stream position `pos`, wrapping.
    ///
    /// Only the holder of the put lock calls this, for bytes between `tail`
    /// and `head + cap`, which no consumer reads until `tail` is published
    /// past them.
    pub(super) fn write_at(&self, pos: u64, data: &[u8]) {
        debug_assert!(self.cap as usize <= self.mem.ring_len() && data.len() as u64 <= self.cap);
        let off = (pos % self.cap) as usize;
        let (first, second) = data.split_at(data.len().min(self.cap as usize - off));
        // SAFETY: `off + first.len() <= cap <= ring_len` (checked when the
        // view was built) and `second.len() <= cap` (callers never write
        // more than the ring holds). Concurrency: the protocol gives this
        // range to the put-lock holder alone (see above).
        unsafe {
            self.mem.write(off, first);
            self.mem.write(0, second);
        }
    }

    /// Copies bytes out of the ring from stream position `pos`, wrapping.
    ///
    /// Only the holder of the get lock calls this, for bytes between `head`
    /// and `tail`, which no producer writes until `head` is published past
    /// them.
    pub(super) fn read_at(&self, pos: u64, out: &mut [u8]) {
        debug_assert!(self.cap as usize <= self.mem.ring_len() && out.len() as u64 <= self.cap);
        let off = (pos % self.cap) as usize;
        let n = out.len().min(self.cap as usize - off);
        let (first, second) = out.split_at_mut(n);
        // SAFETY: as in `write_at`, both ranges are inside the ring; the
        // protocol keeps producers off this range until `head` moves past
        // it.
        unsafe {
            self.mem.read(off, first);
            self.mem.read(0, second);
        }
    }

    /// The ring bytes at `pos..pos + n` when they do not wrap, as a slice
    /// that lives until `head` is published past them (the caller holds the
    /// get lock and publishes `head` only after it stopped using the slice).
    pub(super) fn slice_at(&self, pos: u64, n: u64) -> Option<&[u8]> {
        let off = pos % self.cap;
        if off + n > self.cap {
            return None;
        }
        // SAFETY: `off + n <= cap <= ring_len`. No producer writes the range
        // while the caller holds the get lock and has not advanced `head`
        // (the protocol).
        unsafe { self.mem.slice(off as usize, n as usize) }
    }

    pub(super) fn write_header(
        &self,
        pos: u64,
        len: u64,
        flags: u32,
        nfds: usize,
        seq: u64,
        total: u64,
    ) {
        let mut h = [0u8; HDR as usize];
        h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        h[4..8].copy_from_slice(&(flags | ((nfds as u32) << 8)).to_le_bytes());
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..24].copy_from_slice(&total.to_le_bytes());
        self.write_at(pos, &h);
    }
}
