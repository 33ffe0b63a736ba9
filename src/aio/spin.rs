//! The bounded inline spin of the futex twins' first poll.
//!
//! A blocking futex wait ([`Event::wait`](crate::Event::wait) and friends)
//! looks at its word for a moment before it sleeps: a peer on another CPU
//! often answers within a microsecond, and a waiter caught spinning costs
//! the peer no wake-up call. The async twins do the same on their first
//! poll, on the runtime's thread, before they hand the wait to a helper
//! thread (which costs two thread wake-ups more: the helper's and the
//! task's). So a ping-pong between processes stays a handful of cache-line
//! transfers whether its sides block or await.
//!
//! The spin is bounded, so a poll never holds its runtime thread for long:
//! at most [`MAX`] (20 µs), and it adapts per primitive (a small table of
//! budgets indexed by the primitive's address): a spin that ends with the
//! word ready restores the full budget (a miss costs the helper thread's
//! two wake-ups, tens of µs under load: more than the spin), one that runs
//! out halves it, down to
//! [`MIN`] (1 µs, about the blocking waits' fixed spin). So a waiter of a
//! primitive that is seldom ready soon spends 1 µs per wait, and an idle
//! waiter costs nothing after it (the helper thread sleeps in the kernel).
//! On a machine with one CPU nothing is spun: the peer cannot run while we
//! spin.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The longest inline spin, in nanoseconds.
pub(crate) const MAX: u32 = 20_000;
/// The shortest inline spin (once spins keep failing), in nanoseconds.
pub(crate) const MIN: u32 = 1_000;
/// Budgets, one per slot; primitives share a slot by address hash.
const SLOTS: usize = 64;
/// `spin_loop` rounds between looks at the clock.
const ROUNDS: u32 = 16;

static BUDGET: [AtomicU32; SLOTS] = [const { AtomicU32::new(MAX) }; SLOTS];

fn multi_cpu() -> bool {
    static MULTI: OnceLock<bool> = OnceLock::new();
    *MULTI.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

fn slot(key: usize) -> &'static AtomicU32 {
    let h = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
    &BUDGET[h as usize % SLOTS]
}

/// Looks for `ready` to give a value, spinning for at most the adaptive
/// budget of the primitive at `key`; `None` when the budget ran out.
/// `ready` should be cheap and read before it writes (it runs in a tight
/// loop, sharing a cache line with the peer).
pub(crate) fn spin<R>(key: usize, mut ready: impl FnMut() -> Option<R>) -> Option<R> {
    if let Some(r) = ready() {
        return Some(r);
    }
    if !multi_cpu() {
        return None;
    }
    let budget = slot(key);
    let b = budget.load(Ordering::Relaxed).clamp(MIN, MAX);
    let end = Instant::now() + Duration::from_nanos(u64::from(b));
    loop {
        for _ in 0..ROUNDS {
            std::hint::spin_loop();
            if let Some(r) = ready() {
                budget.store(MAX, Ordering::Relaxed);
                return Some(r);
            }
        }
        if Instant::now() >= end {
            budget.store((b / 2).max(MIN), Ordering::Relaxed);
            return None;
        }
    }
}

/// [`spin`] for a condition without a value.
pub(crate) fn spin_until(key: usize, mut ready: impl FnMut() -> bool) -> bool {
    spin(key, || ready().then_some(())).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_at_once_does_not_spin() {
        assert_eq!(spin(1, || Some(5)), Some(5));
    }

    #[test]
    fn budget_halves_on_failure_and_is_restored_on_success() {
        let key = 0x1234_5000;
        let s = slot(key);
        s.store(MAX, Ordering::Relaxed);
        if !multi_cpu() {
            return;
        }
        let t = Instant::now();
        assert!(!spin_until(key, || false));
        assert!(t.elapsed() >= Duration::from_nanos(u64::from(MAX)));
        assert_eq!(s.load(Ordering::Relaxed), MAX / 2);
        for _ in 0..20 {
            spin_until(key, || false);
        }
        assert_eq!(s.load(Ordering::Relaxed), MIN);
        let mut n = 0;
        assert!(spin_until(key, || {
            n += 1;
            n > 3
        }));
        assert_eq!(s.load(Ordering::Relaxed), MAX);
    }
}
