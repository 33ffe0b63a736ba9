//! `Barrier`: `parties` processes (or threads) wait for each other.
//!
//! State, changed under the barrier's internal lock; `generation` is also
//! the futex word waiters sleep on:
//!
//! | field | meaning |
//! | --- | --- |
//! | `generation` | bumped when a pass completes, the barrier breaks, or a reset interrupts waiters |
//! | `count` | parties arrived in the current generation |
//! | `broken` | new arrivals fail until `reset` |
//! | `broken_generation` | the last generation that ended broken |
//!
//! A waiter remembers the generation it arrived in and sleeps until it
//! changes; it then passed, unless that generation is `broken_generation`.
//! No draining phase is needed: arrivals of the next generation never mix
//! with leavers of the previous one.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::mem::robust_lock::{Acquired, RawLock};
use crate::mem::segment::{Shared, shm_layout};
use crate::runtime::current::current_process;
use crate::runtime::entry;
use crate::sys;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
#[derive(Default)]
pub(crate) struct BarrierState {
    lock: RawLock,
    generation: AtomicU32,
    count: AtomicU32,
    parties: AtomicU32,
    broken: AtomicU32,
    broken_generation: AtomicU32,
    _pad: u32,
    /// The default timeout in nanoseconds; `u64::MAX` for none.
    timeout_ns: AtomicU64,
}

// SAFETY: `#[repr(C)]`, atomics only (all bit patterns valid), align 8.
shm_layout!(unsafe impl BarrierState => Barrier);

/// The barrier was broken (aborted, reset while waiting, timed out, or its
/// action panicked): Python's `BrokenBarrierError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the barrier is broken")]
pub struct BrokenBarrierError;

impl From<BrokenBarrierError> for Error {
    fn from(_: BrokenBarrierError) -> Self {
        Error::State("the barrier is broken")
    }
}

/// A barrier for `parties` processes or threads (Python's
/// `multiprocessing.Barrier`).
///
/// Each [`wait`](Self::wait) blocks until `parties` waits have arrived,
/// then all return, each with its arrival index (`0` for the first). An
/// optional action (a plain `fn()`) runs once per pass, in the process that
/// arrives last, before the others are released. A barrier can be
/// [`abort`](Self::abort)ed and [`reset`](Self::reset); a wait that times
/// out breaks it for everybody, so a dead party cannot hang waiters that use
/// a timeout.
///
/// # Examples
/// ```
/// use multiproc::{Barrier, Process};
///
/// fn party(b: Barrier) -> u32 { b.wait().unwrap() }
///
/// let b = Barrier::new(2)?;
/// let mut p = Process::new(party, (b.clone(),));
/// p.start()?;
/// let mine = b.wait().unwrap();
/// p.join()?;
/// let theirs = p.take_result()?;
/// assert_eq!(mine + theirs, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    shm: Shared<BarrierState>,
    action: Option<fn()>,
}

impl Barrier {
    /// A barrier for `parties` parties, no action, no default timeout.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 parties; otherwise when the shared
    /// memory cannot be created.
    pub fn new(parties: u32) -> Result<Barrier> {
        Barrier::build(parties, None, None)
    }

    /// A barrier whose `action` runs once per pass, in the last process to
    /// arrive, before anybody is released. If it panics, the barrier breaks
    /// and the panic goes on in that process.
    ///
    /// The action travels with the barrier to other processes of this same
    /// program, authenticated with the process family's key.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    /// ```
    /// fn hello() { println!("pass!") }
    /// let b = multiproc::Barrier::with_action(1, hello)?;
    /// assert_eq!(b.wait().unwrap(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_action(parties: u32, action: fn()) -> Result<Barrier> {
        Barrier::build(parties, Some(action), None)
    }

    /// A barrier with a default timeout for [`wait`](Self::wait), and an
    /// optional action.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::Barrier::with_timeout(2, None, Duration::from_millis(10))?;
    /// assert_eq!(b.timeout(), Some(Duration::from_millis(10)));
    /// assert!(b.wait().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_timeout(parties: u32, action: Option<fn()>, timeout: Duration) -> Result<Barrier> {
        Barrier::build(parties, action, Some(timeout))
    }

    fn build(parties: u32, action: Option<fn()>, timeout: Option<Duration>) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a Barrier needs at least 1 party".into(),
            ));
        }
        let ns = timeout.map_or(u64::MAX, |t| {
            t.as_nanos().min(u128::from(u64::MAX - 1)) as u64
        });
        let shm = Shared::create(0, 0, |s: &BarrierState| {
            s.parties.store(parties, Ordering::Relaxed);
            s.generation.store(1, Ordering::Relaxed);
            s.timeout_ns.store(ns, Ordering::Relaxed);
        })?;
        Ok(Barrier { shm, action })
    }

    fn st(&self) -> &BarrierState {
        self.shm.get()
    }

    /// Takes the internal lock; a party that died holding it breaks the
    /// barrier.
    fn lock(&self) {
        let st = self.st();
        if st.lock.lock(None) == Some(Acquired::OwnerDied) {
            Self::break_locked(st);
        }
    }

    fn unlock(&self) {
        self.st().lock.unlock();
    }

    /// Ends the current generation broken (internal lock held).
    fn break_locked(st: &BarrierState) {
        st.broken.store(1, Ordering::Relaxed);
        let g = st.generation.load(Ordering::Relaxed);
        st.broken_generation.store(g, Ordering::Relaxed);
        st.count.store(0, Ordering::Relaxed);
        st.generation.store(g.wrapping_add(1), Ordering::Release);
        sys::futex_wake_all(&st.generation);
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.st().parties.load(Ordering::Relaxed)
    }

    /// How many parties are waiting now (Python's `n_waiting`).
    pub fn n_waiting(&self) -> u32 {
        let st = self.st();
        if st.broken.load(Ordering::Relaxed) != 0 {
            0
        } else {
            st.count.load(Ordering::Relaxed)
        }
    }

    /// Whether the barrier is broken.
    #[doc(alias = "broken")]
    pub fn is_broken(&self) -> bool {
        self.st().broken.load(Ordering::Relaxed) != 0
    }

    /// The default timeout given at construction.
    pub fn timeout(&self) -> Option<Duration> {
        match self.st().timeout_ns.load(Ordering::Relaxed) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Waits for the other parties, with the default timeout; returns the
    /// arrival index (`0..parties`).
    ///
    /// # Errors
    /// [`BrokenBarrierError`] if the barrier is or becomes broken while
    /// waiting, or the timeout passes (which breaks it for everybody).
    pub fn wait(&self) -> std::result::Result<u32, BrokenBarrierError> {
        self.wait_until(self.timeout().and_then(|t| Instant::now().checked_add(t)))
    }

    /// Waits for the other parties for at most `timeout`.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::Barrier::new(2)?;
    /// assert!(b.wait_timeout(Duration::from_millis(10)).is_err());
    /// assert!(b.is_broken());
    /// b.reset();
    /// assert!(!b.is_broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> std::result::Result<u32, BrokenBarrierError> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Waits for the other parties until `deadline` at the latest.
    ///
    /// # Errors
    /// As [`wait`](Self::wait): a deadline that passes breaks the barrier.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// let b = multiproc::Barrier::new(2)?;
    /// assert!(b.wait_deadline(Instant::now() + Duration::from_millis(10)).is_err());
    /// assert!(b.is_broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> std::result::Result<u32, BrokenBarrierError> {
        self.wait_until(Some(deadline))
    }

    fn wait_until(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<u32, BrokenBarrierError> {
        let (generation, index) = match self.arrive()? {
            Arrival::Passed(index) => return Ok(index),
            Arrival::Waiting { generation, index } => (generation, index),
        };
        let st = self.st();
        loop {
            if st.generation.load(Ordering::Acquire) != generation {
                break;
            }
            if !sys::futex_wait(&st.generation, generation, deadline) {
                self.time_out(generation);
            }
        }
        self.outcome(generation, index)
    }

    /// Arrives at the barrier: the last party passes it (running the
    /// action), the others have to wait for `generation` to end.
    pub(crate) fn arrive(&self) -> std::result::Result<Arrival, BrokenBarrierError> {
        let st = self.st();
        self.lock();
        if st.broken.load(Ordering::Relaxed) != 0 {
            self.unlock();
            return Err(BrokenBarrierError);
        }
        let generation = st.generation.load(Ordering::Relaxed);
        let index = st.count.load(Ordering::Relaxed);
        if index + 1 >= st.parties.load(Ordering::Relaxed) {
            if let Some(action) = self.action {
                if let Err(panic) = std::panic::catch_unwind(action) {
                    Self::break_locked(st);
                    self.unlock();
                    std::panic::resume_unwind(panic);
                }
            }
            st.count.store(0, Ordering::Relaxed);
            st.generation
                .store(generation.wrapping_add(1), Ordering::Release);
            self.unlock();
            sys::futex_wake_all(&st.generation);
            return Ok(Arrival::Passed(index));
        }
        st.count.store(index + 1, Ordering::Relaxed);
        self.unlock();
        Ok(Arrival::Waiting { generation, index })
    }

    /// The futex word a waiter of `arrive` sleeps on while it still holds
    /// its generation.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn generation_word(&self) -> &AtomicU32 {
        &self.st().generation
    }

    /// A waiter of `generation` ran out of time: the barrier breaks, unless
    /// the generation ended meanwhile.
    pub(crate) fn time_out(&self, generation: u32) {
        let st = self.st();
        self.lock();
        if st.generation.load(Ordering::Relaxed) == generation {
            Self::break_locked(st);
        }
        self.unlock();
    }

    /// A waiter of `generation` leaves without waiting for the others (its
    /// async wait was dropped): it no longer counts as arrived, unless the
    /// generation ended meanwhile (then it passed or broke with the rest).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn leave(&self, generation: u32) {
        let st = self.st();
        self.lock();
        if st.generation.load(Ordering::Relaxed) == generation {
            let c = st.count.load(Ordering::Relaxed);
            st.count.store(c.saturating_sub(1), Ordering::Relaxed);
        }
        self.unlock();
    }

    /// How a wait of `generation` ended, once the generation moved on.
    pub(crate) fn outcome(
        &self,
        generation: u32,
        index: u32,
    ) -> std::result::Result<u32, BrokenBarrierError> {
        if self.st().broken_generation.load(Ordering::Acquire) == generation {
            Err(BrokenBarrierError)
        } else {
            Ok(index)
        }
    }

    /// Breaks the barrier: current and future waiters get
    /// [`BrokenBarrierError`] until [`reset`](Self::reset).
    ///
    /// # Examples
    /// ```
    /// let b = multiproc::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.is_broken());
    /// assert_eq!(b.n_waiting(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn abort(&self) {
        self.lock();
        Self::break_locked(self.st());
        self.unlock();
    }

    /// Returns the barrier to its initial state; parties waiting now get
    /// [`BrokenBarrierError`].
    pub fn reset(&self) {
        let st = self.st();
        self.lock();
        if st.count.load(Ordering::Relaxed) > 0 {
            Self::break_locked(st);
        }
        st.broken.store(0, Ordering::Relaxed);
        self.unlock();
    }
}

/// Where a party stands after [`Barrier::arrive`].
pub(crate) enum Arrival {
    /// It arrived last: the barrier passed, with this index.
    Passed(u32),
    /// It waits for `generation` to end.
    Waiting { generation: u32, index: u32 },
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Barrier(parties={}, waiting={}, broken={})>",
            self.parties(),
            self.n_waiting(),
            self.is_broken()
        )
    }
}

/// What authenticates an action's offset: HMAC-SHA256 keyed with the
/// process family's authkey (random, shared by the family only), over a
/// domain label, the offset and this build's identity.
type ActionMac = hmac::Hmac<sha2::Sha256>;

fn action_mac(offset: u64) -> ActionMac {
    use hmac::{KeyInit, Mac};
    let me = current_process();
    // HMAC takes keys of any length; the error arm cannot happen.
    let mut m =
        <ActionMac as KeyInit>::new_from_slice(me.authkey()).expect("HMAC accepts any key length");
    m.update(b"multiproc barrier action\0");
    m.update(&offset.to_le_bytes());
    m.update(&entry::build_identity().to_le_bytes());
    m
}

/// The tag of an action's offset.
fn action_tag(offset: u64) -> [u8; 32] {
    use hmac::Mac;
    let mut t = [0u8; 32];
    t.copy_from_slice(&action_mac(offset).finalize().into_bytes());
    t
}

/// Whether `tag` is the tag of `offset` (compared in constant time).
fn action_tag_ok(offset: u64, tag: &[u8]) -> bool {
    use hmac::Mac;
    action_mac(offset).verify_slice(tag).is_ok()
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let action = self.action.map(|f| {
            let off = entry::code_offset(f as usize);
            (off, action_tag(off))
        });
        (&self.shm, action).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (shm, action): (Shared<BarrierState>, Option<(u64, [u8; 32])>) =
            Deserialize::deserialize(d)?;
        let action = match action {
            None => None,
            Some((off, tag)) => {
                if !action_tag_ok(off, &tag) {
                    return Err(serde::de::Error::custom(
                        "barrier action does not come from this program's process family",
                    ));
                }
                // SAFETY: the tag proves that a process holding this family's
                // secret authkey and running this same build computed `off`
                // with `code_offset` from a real `fn()`, a fn pointer type.
                Some(unsafe { entry::resolve_fn::<fn()>(off) }.map_err(serde::de::Error::custom)?)
            }
        };
        Ok(Barrier { shm, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_offsets_are_authenticated_with_hmac_sha256() {
        use hmac::{KeyInit, Mac};
        let off = 0x1234_5678u64;
        let tag = action_tag(off);
        let me = current_process();
        let mut m = <ActionMac as KeyInit>::new_from_slice(me.authkey()).expect("any key length");
        m.update(b"multiproc barrier action\0");
        m.update(&off.to_le_bytes());
        m.update(&entry::build_identity().to_le_bytes());
        assert_eq!(tag[..], m.finalize().into_bytes()[..]);
        assert!(action_tag_ok(off, &tag));
        // A tampered offset, or a tampered or shortened tag, is refused.
        assert!(!action_tag_ok(off + 1, &tag));
        assert!(!action_tag_ok(off ^ (1 << 40), &tag));
        let mut bad = tag;
        bad[31] ^= 1;
        assert!(!action_tag_ok(off, &bad));
        assert!(!action_tag_ok(off, &tag[..16]));
    }
}
