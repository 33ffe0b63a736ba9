//! Bounded, adaptive spinning before a receive (or a `poll`) blocks.
//!
//! A receiver that finds its socket empty does not go to sleep at once: for
//! a short budget it keeps asking the socket without blocking. While it does
//! so it is not on the socket's wait queue, so the peer's `send` wakes
//! nobody, and a ping-pong between two spinning processes costs system
//! calls, not kernel wake-ups (which cost 20–100 µs on a busy virtual
//! machine, against about a microsecond for a non-blocking `recvmsg`).
//!
//! The budget adapts, per connection:
//!
//! | event | budget afterwards |
//! |---|---|
//! | data was there at the first try | unchanged (nothing was spent) |
//! | the spin found data | back to the whole limit |
//! | the spin ran out (or found data only after its budget) | halved; below an eighth of the limit ([`FLOOR`]), off |
//!
//! While the budget is off, one receive in [`PROBE`] that finds the socket
//! empty still spins for the whole limit, and a success there turns the
//! spin back on at the whole limit. (A probe shorter than the peer's answer
//! would never succeed, and one preemption would switch a quick pair off
//! for good.) So an idle waiter spends at most one limit of CPU per
//! receive, and about a thirty-second of that once its spins keep
//! failing. Failing
//! spins are also what an overloaded machine produces (the peer waits for a
//! CPU while this process spins, and would run sooner if it slept), so
//! there the connection soon behaves as if it did not spin.
//!
//! The limit is [`DEFAULT_SPIN`] unless `MULTIPROC_CONNECTION_SPIN_US`
//! (whole microseconds, read once per process) says otherwise, or
//! [`Connection::set_spin`](super::Connection::set_spin) sets it for one
//! end; `0` turns spinning off. On a machine with one CPU nobody spins:
//! the peer cannot run while this process spins.
//!
//! The spin does not yield the CPU: measured on a loaded 2-CPU machine, a
//! few `sched_yield`s before sleeping sometimes let a peer on the same CPU
//! answer, but as often handed the CPU to an unrelated process for a whole
//! time slice (round trips of milliseconds). A spin never outlasts the
//! caller's deadline: it counts against it.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The default longest spin of one receive.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The environment variable that sets the default spin limit (whole
/// microseconds; `0` turns spinning off).
pub(crate) const SPIN_VAR: &str = "MULTIPROC_CONNECTION_SPIN_US";

/// The smallest budget is the limit divided by this; a smaller one means
/// no spinning (but see [`PROBE`]).
const FLOOR: u64 = 8;

/// While spinning is off, one receive in this many that would block spins
/// for the whole limit, to find out whether the peer got quick again.
const PROBE: u32 = 32;

/// `spin_loop` hints between two tries (a try is a system call of about a
/// microsecond, so this only eases the sibling hyperthread).
const HINTS: u32 = 8;

/// The limit for new connections, in nanoseconds: 0 on one CPU, else the
/// environment's or the default.
fn default_limit_ns() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        if one_cpu() {
            return 0;
        }
        let default = nanos(DEFAULT_SPIN);
        match std::env::var(SPIN_VAR) {
            Err(_) => default,
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(us) => nanos(Duration::from_micros(us)),
                Err(_) => {
                    log::warn!(
                        "{SPIN_VAR}={v:?} is not a whole number of microseconds; \
                         using the default ({DEFAULT_SPIN:?})"
                    );
                    default
                }
            },
        }
    })
}

/// A duration in nanoseconds, saturating at `u64::MAX`.
/// Whether this process may run on one CPU only, asked once per process.
/// (The answer costs a dozen system calls: the affinity mask, and the
/// cgroup's CPU quota read from `/proc` and `/sys`.)
fn one_cpu() -> bool {
    static ONE: OnceLock<bool> = OnceLock::new();
    *ONE.get_or_init(|| crate::cpu_count() <= 1)
}

/// Settles the default spin limit of this process now. The fork server
/// calls it before it forks, so its children inherit the answer instead of
/// each asking again (a dozen system calls, a tenth of a trivial child's
/// start). They share the fork server's environment and CPU affinity, so
/// the answer is theirs too.
pub(crate) fn prime() {
    default_limit_ns();
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One connection end's spin limit, current budget (nanoseconds) and the
/// count of receives that did not spin since spinning went off.
///
/// All are plain relaxed atomics: they only steer how long a waiter
/// spins, and two threads updating them at once lose nothing that matters.
pub(super) struct Spin {
    limit: AtomicU64,
    budget: AtomicU64,
    skipped: AtomicU32,
}

impl Spin {
    pub(super) fn new() -> Self {
        let limit = default_limit_ns();
        Spin {
            limit: AtomicU64::new(limit),
            budget: AtomicU64::new(limit),
            skipped: AtomicU32::new(0),
        }
    }

    /// Sets the longest spin (`Duration::ZERO`: never spin). Has no effect
    /// on a machine with one CPU.
    pub(super) fn set_limit(&self, limit: Duration) {
        let ns = if one_cpu() { 0 } else { nanos(limit) };
        self.limit.store(ns, Ordering::Relaxed);
        self.budget.store(ns, Ordering::Relaxed);
    }

    /// The longest spin.
    pub(super) fn limit(&self) -> Duration {
        Duration::from_nanos(self.limit.load(Ordering::Relaxed))
    }

    /// This spin's budget (0: none) and whether it is a probe made while
    /// spinning is off, counting the skipped spins while off.
    fn budget(&self) -> (u64, bool) {
        let limit = self.limit.load(Ordering::Relaxed);
        let floor = limit / FLOOR;
        let budget = self.budget.load(Ordering::Relaxed).min(limit);
        if budget >= floor.max(1) {
            return (budget, false);
        }
        let skipped = self.skipped.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if skipped % PROBE == 0 {
            (limit, true)
        } else {
            (0, false)
        }
    }

    /// Calls `attempt` until it returns `Some`, for at most the current
    /// budget and never past `deadline` (it is always called once, also
    /// when `deadline` has passed). `None` when it never did: the caller
    /// then blocks.
    ///
    /// # Errors
    /// The first error `attempt` returns.
    pub(super) fn run<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> io::Result<Option<T>>,
    ) -> io::Result<Option<T>> {
        if let Some(v) = attempt()? {
            return Ok(Some(v));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        match self.budget() {
            (0, _) => Ok(None),
            (budget, probe) => self.spin(budget, probe, deadline, &mut attempt),
        }
    }

    /// The spinning part of [`run`](Self::run), for `budget` nanoseconds;
    /// a failed `probe` leaves spinning off.
    fn spin<T>(
        &self,
        budget: u64,
        probe: bool,
        deadline: Option<Instant>,
        attempt: &mut impl FnMut() -> io::Result<Option<T>>,
    ) -> io::Result<Option<T>> {
        let started = Instant::now();
        // A budget too long to add to the clock spins until the deadline.
        let end = match (started.checked_add(Duration::from_nanos(budget)), deadline) {
            (Some(e), Some(d)) => Some(e.min(d)),
            (e, d) => e.or(d),
        };
        loop {
            for _ in 0..HINTS {
                std::hint::spin_loop();
            }
            let found = attempt()?;
            // Found only after the budget ran out (this thread was
            // preempted, say): that spin did not pay either.
            let late = end.is_some_and(|e| Instant::now() >= e);
            let limit = self.limit.load(Ordering::Relaxed);
            let next = match (late, probe) {
                (false, _) => limit,
                (true, false) => budget / 2,
                (true, true) => 0,
            };
            if found.is_some() || late {
                self.budget.store(next, Ordering::Relaxed);
                return Ok(found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(limit_us: u64) -> Spin {
        let s = Spin::new();
        s.limit
            .store(nanos(Duration::from_micros(limit_us)), Ordering::Relaxed);
        s.budget
            .store(nanos(Duration::from_micros(limit_us)), Ordering::Relaxed);
        s
    }

    /// Runs a spin whose `n`th try (from 1) finds data (`0`: none does);
    /// returns whether it found data and the number of tries.
    fn run(s: &Spin, n: u32) -> (bool, u32) {
        let mut tries = 0;
        let got = s
            .run(None, || {
                tries += 1;
                Ok((tries == n).then_some(()))
            })
            .unwrap();
        (got.is_some(), tries)
    }

    #[test]
    fn first_try_costs_nothing_and_keeps_the_budget() {
        let s = spin(50);
        s.budget.store(10_000, Ordering::Relaxed);
        assert_eq!(run(&s, 1), (true, 1));
        assert_eq!(s.budget.load(Ordering::Relaxed), 10_000);
    }

    #[test]
    fn failures_halve_then_stop_and_probes_restart_it() {
        // Long enough that a try always follows the first one in time.
        let s = spin(80_000);
        for want in [40, 20, 10, 5].map(|ms| ms * 1_000_000) {
            assert!(!run(&s, 0).0);
            assert_eq!(s.budget.load(Ordering::Relaxed), want);
        }
        // Off: only every PROBE-th receive tries more than once.
        let spun = (0..PROBE).filter(|_| run(&s, 0).1 > 1).count();
        assert_eq!(spun, 1);
        for _ in 0..PROBE - 1 {
            assert_eq!(run(&s, 3), (false, 1));
        }
        // The probe succeeds: the spin is back at the whole limit.
        assert_eq!(run(&s, 3), (true, 3));
        assert_eq!(s.budget.load(Ordering::Relaxed), 80_000_000);
        // One failure halves it; the next success restores it.
        assert!(!run(&s, 0).0);
        assert_eq!(s.budget.load(Ordering::Relaxed), 40_000_000);
        assert_eq!(run(&s, 3), (true, 3));
        assert_eq!(s.budget.load(Ordering::Relaxed), 80_000_000);
    }

    #[test]
    fn the_deadline_bounds_the_spin_and_errors_end_it() {
        let s = spin(60_000_000);
        let t = Instant::now();
        let got = s
            .run(Some(t + Duration::from_millis(20)), || Ok(None::<()>))
            .unwrap();
        assert!(got.is_none());
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(t.elapsed() < Duration::from_secs(5));
        // A deadline already past: one try, no spin.
        let mut tries = 0;
        let got = s
            .run(Some(Instant::now()), || {
                tries += 1;
                Ok(None::<()>)
            })
            .unwrap();
        assert!(got.is_none());
        assert_eq!(tries, 1);
        let e = s.run(None, || Err::<Option<()>, _>(io::Error::other("x")));
        assert!(e.is_err());
    }

    #[test]
    fn zero_limit_never_spins() {
        let s = spin(0);
        for _ in 0..2 * PROBE {
            assert_eq!(run(&s, 0), (false, 1));
        }
    }
}
