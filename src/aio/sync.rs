//! Awaitable twins of `Event::wait` and the semaphores' `acquire`.
//!
//! These primitives wake through a futex in shared memory, which a reactor
//! cannot watch. The twins wait on the futex in a thread of tokio's
//! blocking pool, in 100 ms slices between which they check whether the
//! future was dropped: a waiter thread asleep in the kernel, and a dropped
//! future frees its thread within 100 ms. Before that, the first poll
//! looks inline for a bounded, adaptive moment (at most 20 µs, see
//! `spin.rs`), which spares a ping-pong two thread wake-ups per round. Per
//! primitive and process only one task at a time waits so (the others
//! queue for their turn, see `lock.rs`), so many waiting tasks are one
//! thread.

use super::SLICE;
use super::lock::{Hold, in_turn};
use super::spin::spin_until;
use crate::sync::{BoundedSemaphore, Event, Semaphore};
use std::time::Duration;

impl Event {
    /// Awaitable [`wait`](Event::wait): until the event is set.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let e = multiproc::Event::new()?;
    /// e.set();
    /// e.wait_async().await;
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn wait_async(&self) {
        // A setter in another process often answers within a microsecond
        // (a ping-pong): look for it inline, for a bounded adaptive moment
        // (see `spin.rs`), before handing the wait to a thread (two thread
        // wake-ups more). An idle waiter costs nothing after it.
        if spin_until(self.identity(), || self.is_set()) {
            return;
        }
        let e = self.clone();
        in_turn(self.identity(), move || {
            e.wait_timeout(SLICE).then_some(Hold::plain(()))
        })
        .await;
    }

    /// [`wait_async`](Self::wait_async) for at most `timeout`; true when the
    /// event was set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_async_timeout(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.wait_async())
            .await
            .is_ok()
    }
}

macro_rules! sem_async {
    ($t:ty) => {
        impl $t {
            /// Awaitable [`acquire`](Self::acquire): takes one unit.
            ///
            /// # Panics
            ///
            /// Outside a tokio runtime.
            ///
            /// # Cancel safety
            ///
            /// Cancel safe: a dropped `acquire_async` never keeps a unit (one
            /// taken by its waiting thread after the drop is released).
            pub async fn acquire_async(&self) {
                if spin_until(self.identity(), || self.value() > 0 && self.try_acquire()) {
                    return;
                }
                let s = self.clone();
                in_turn(self.identity(), move || {
                    if s.acquire_timeout(SLICE) {
                        let s = s.clone();
                        Some(Hold::new((), move |()| {
                            let _ = s.release();
                        }))
                    } else {
                        None
                    }
                })
                .await;
            }

            /// [`acquire_async`](Self::acquire_async) for at most `timeout`;
            /// true when a unit was taken.
            ///
            /// # Cancel safety
            ///
            /// Cancel safe, as [`acquire_async`](Self::acquire_async).
            pub async fn acquire_async_timeout(&self, timeout: Duration) -> bool {
                tokio::time::timeout(timeout, self.acquire_async())
                    .await
                    .is_ok()
            }
        }
    };
}

sem_async!(Semaphore);
sem_async!(BoundedSemaphore);
