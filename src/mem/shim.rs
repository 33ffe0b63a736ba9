//! What the lock core (`mem/robust_lock.rs`) and the queue core (`queue/ring.rs`)
//! use for atomics, futex waits and process identities: the real ones in
//! every build, and models of them when the crate's unit tests are built
//! with `--cfg loom` for the `loom` model checker.
//!
//! In a normal build everything here is a plain re-export (`std`'s atomics,
//! `sys`'s futex and identity functions), so the cores compile to the same
//! code as if they named those directly: no wrapper, no indirection.
//!
//! Under `cfg(all(loom, test))` the atomics are loom's, and the kernel is
//! replaced by a small model (`model`) that loom can explore:
//!
//! - `futex_wait` / `futex_wake` behave as futex(2) says: checking the word
//!   and going to sleep is atomic with respect to wakes of that word (a wait
//!   queue under one loom `Mutex`, keyed by the word's address). A sleeper
//!   returns only when woken or when its value is stale, so a lost wake-up
//!   shows up as a deadlock that loom reports. (The mutex also orders the
//!   waker before the woken thread, as the kernel's hash-bucket lock does in
//!   practice.)
//! - A timed wait stands for "a slice expires": it returns `false` once
//!   after each death of a model process (see `model::die`), which is
//!   when an expiry can change anything (a waiter then checks whether the
//!   owner still runs). Expiries while every process lives only repeat a
//!   check that finds the owner alive, and are not modelled.
//! - A model process is a loom thread that called `model::be`; its
//!   identity is its number (start time 0), and `model::die` marks it dead
//!   for `is_alive`. Nothing else happens at death: the lock word is not
//!   touched by the kernel (this crate's locks do not use robust futexes;
//!   owners are found dead by `is_alive`).
//!
//! This module sits in `mem` (not `sys`) so that `sys` never depends on
//! the layers above it; `sys` stays the only door to the OS.

#[cfg(not(all(loom, test)))]
pub(crate) use crate::sys::{futex_wait, futex_wake, futex_wake_all, is_alive, self_ident};
#[cfg(not(all(loom, test)))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(all(loom, test)))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(all(loom, test)))]
pub(crate) use std::thread::yield_now;

#[cfg(all(loom, test))]
pub(crate) use loom::hint::spin_loop;
#[cfg(all(loom, test))]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(all(loom, test))]
pub(crate) use loom::thread::yield_now;
#[cfg(all(loom, test))]
pub(crate) use model::{futex_wait, futex_wake, futex_wake_all, is_alive, self_ident};
// The real liveness check has no other user; keep it compiled (and free of
// dead-code warnings) in model builds.
#[cfg(all(loom, test))]
const _: fn(crate::sys::Ident) -> bool = crate::sys::is_alive;

/// The model kernel: futex wait queues, process identities and deaths.
#[cfg(all(loom, test))]
pub(crate) mod model {
    use super::{AtomicU32, Ordering};
    use crate::sys::Ident;
    use loom::sync::{Condvar, Mutex};
    use std::cell::Cell;
    use std::time::Instant;

    #[derive(Default)]
    struct State {
        /// Sleepers in arrival order: (word address, ticket).
        sleepers: Vec<(usize, u64)>,
        next_ticket: u64,
        dead: Vec<u32>,
    }

    struct Kernel {
        state: Mutex<State>,
        woken: Condvar,
    }

    loom::lazy_static! {
        static ref KERNEL: Kernel = Kernel {
            state: Mutex::new(State::default()),
            woken: Condvar::new(),
        };
    }

    loom::thread_local! {
        /// This thread's model process number.
        static PID: Cell<u32> = Cell::new(1);
        /// Deaths this thread's timed waits have already expired for.
        static DEATHS_SEEN: Cell<usize> = Cell::new(0);
    }

    /// Makes the current loom thread model process `pid` (not 0).
    pub(crate) fn be(pid: u32) {
        assert_ne!(pid, 0);
        PID.with(|p| p.set(pid));
    }

    /// The current model process dies: `is_alive` says so from now on, and
    /// the slices of timed sleepers expire (once each).
    pub(crate) fn die() {
        let k = &*KERNEL;
        let mut st = k.state.lock().unwrap();
        st.dead.push(PID.with(Cell::get));
        k.woken.notify_all();
    }

    pub(crate) fn self_ident() -> Ident {
        Ident {
            pid: PID.with(Cell::get),
            start: 0,
        }
    }

    pub(crate) fn is_alive(who: Ident) -> bool {
        !KERNEL.state.lock().unwrap().dead.contains(&who.pid)
    }

    pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
        let k = &*KERNEL;
        let mut st = k.state.lock().unwrap();
        if word.load(Ordering::Relaxed) != expected {
            return true;
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.sleepers
            .push((word as *const AtomicU32 as usize, ticket));
        loop {
            if !st.sleepers.iter().any(|&(_, t)| t == ticket) {
                return true;
            }
            let deaths = st.dead.len();
            if deadline.is_some() && DEATHS_SEEN.with(Cell::get) < deaths {
                DEATHS_SEEN.with(|d| d.set(deaths));
                st.sleepers.retain(|&(_, t)| t != ticket);
                return false;
            }
            st = k.woken.wait(st).unwrap();
        }
    }

    pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
        let k = &*KERNEL;
        let mut st = k.state.lock().unwrap();
        let addr = word as *const AtomicU32 as usize;
        let mut woken = 0;
        st.sleepers.retain(|&(a, _)| {
            if a == addr && woken < n as usize {
                woken += 1;
                false
            } else {
                true
            }
        });
        if woken > 0 {
            k.woken.notify_all();
        }
        woken
    }

    pub(crate) fn futex_wake_all(word: &AtomicU32) -> usize {
        futex_wake(word, u32::MAX)
    }
}
