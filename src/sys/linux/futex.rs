//! Futexes shared between processes.
//!
//! These futexes live in memory mapped `MAP_SHARED` into several processes,
//! so they never use `FUTEX_PRIVATE_FLAG` (which keys the wait queue on the
//! process's own address space and would make a waiter in one process deaf
//! to a wake from another). Deadlines are absolute `CLOCK_MONOTONIC` times
//! (`FUTEX_WAIT_BITSET` without `FUTEX_CLOCK_REALTIME`), so a wait that is
//! interrupted by a signal (`EINTR`) is retried without drifting.
//!
//! Async waiting is not built yet. The door left open: the same words can be
//! waited on together with other futexes through `futex_waitv(2)` (Linux
//! 5.16) by a helper thread that then signals an `eventfd` a reactor polls,
//! or a notifier can write to such an `eventfd` after its `futex_wake`.

use rustix::io::Errno;
use rustix::thread::futex::{self, Flags, Timespec};
use rustix::time::{ClockId, clock_gettime};
use std::num::NonZeroU32;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// Futex flags for words in shared memory: empty, so neither
/// `FUTEX_PRIVATE_FLAG` nor `FUTEX_CLOCK_REALTIME` (see the module docs).
const SHARED: Flags = Flags::empty();

/// `FUTEX_BITSET_MATCH_ANY`: a bitset wait that any wake ends.
const MATCH_ANY: NonZeroU32 = NonZeroU32::MAX;

/// Converts `deadline` to an absolute `CLOCK_MONOTONIC` timespec.
///
/// `Instant` is `CLOCK_MONOTONIC` on Linux, but its representation is
/// private; the distance from now is added to a fresh clock reading instead.
fn monotonic_timespec(deadline: Instant) -> Timespec {
    let left = deadline.saturating_duration_since(Instant::now());
    let now = clock_gettime(ClockId::Monotonic);
    let mut sec = now.tv_sec.saturating_add(left.as_secs() as i64);
    let mut nsec = now.tv_nsec + i64::from(left.subsec_nanos());
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Sleeps while `*word == expected`, until woken, until `deadline`, or
/// spuriously. Returns `false` only when the deadline has passed.
///
/// A return of `true` says nothing about the value: callers re-check their
/// condition in a loop.
///
/// # References
/// futex(2) (`FUTEX_WAIT_BITSET`)
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
    // FUTEX_WAIT_BITSET takes an absolute deadline, so a retry after EINTR
    // waits until the same moment.
    let ts = deadline.map(monotonic_timespec);
    loop {
        match futex::wait_bitset(word, SHARED, expected, ts.as_ref(), MATCH_ANY) {
            Ok(()) => return true,
            Err(Errno::INTR) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
            }
            Err(Errno::TIMEDOUT) => return false,
            // EAGAIN: the value was not `expected` any more.
            Err(_) => return true,
        }
    }
}

/// Wakes up to `n` waiters sleeping on `word` in any process. Returns how
/// many were woken.
///
/// # References
/// futex(2) (`FUTEX_WAKE`)
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    // The kernel reads the count as a signed int.
    futex::wake(word, SHARED, n.min(i32::MAX as u32)).unwrap_or(0)
}

/// Wakes every waiter sleeping on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) -> usize {
    futex_wake(word, i32::MAX as u32)
}
