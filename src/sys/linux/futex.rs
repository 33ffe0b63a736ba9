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
#![allow(unsafe_code)]

use std::io;
use std::ptr;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// Converts `deadline` to an absolute `CLOCK_MONOTONIC` timespec.
///
/// `Instant` is `CLOCK_MONOTONIC` on Linux, but its representation is
/// private; the distance from now is added to a fresh clock reading instead.
fn monotonic_timespec(deadline: Instant) -> libc::timespec {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let mut sec = now.tv_sec.saturating_add(left.as_secs() as libc::time_t);
    let mut nsec = now.tv_nsec + left.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
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
    let ts = deadline.map(monotonic_timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `word` is a live, aligned 32-bit atomic for the whole call
        // (the kernel only reads it); `ts_ptr` is null or points to `ts`,
        // which outlives the call. No FUTEX_PRIVATE_FLAG: the word may be in
        // memory shared with other processes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                ts_ptr,
                ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r == 0 {
            return true;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
                continue;
            }
            Some(libc::ETIMEDOUT) => return false,
            // EAGAIN: the value was not `expected` any more.
            _ => return true,
        }
    }
}

/// Wakes up to `n` waiters sleeping on `word` in any process. Returns how
/// many were woken.
///
/// # References
/// futex(2) (`FUTEX_WAKE`)
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as i32;
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE only uses
    // its address as a key. No FUTEX_PRIVATE_FLAG (see the module docs).
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    r.max(0) as usize
}

/// Wakes every waiter sleeping on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) -> usize {
    futex_wake(word, i32::MAX as u32)
}
