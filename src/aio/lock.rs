//! Awaitable twins of the locks: `Lock`/`RLock` acquire, `Condition`
//! acquire and wait, `Barrier::wait`.
//!
//! # How they wait
//!
//! These primitives sleep on futex words in shared memory, which no
//! reactor can watch, and whose writers (in any process) know nothing of
//! tokio. So the twins wait where the blocking calls wait, in a thread:
//!
//! * Per primitive and process, only the task at the head of a FIFO turn
//!   (a `tokio::sync::Mutex`) waits; it waits in one thread of tokio's
//!   blocking pool, asleep in the kernel on the futex, in slices of 100 ms
//!   between which it checks whether its future was dropped (and, for a
//!   lock, whether the holder still runs). The other tasks wait for their
//!   turn at no cost. 10,000 tasks waiting on one lock are one sleeping
//!   thread, not 10,000.
//! * A lock taken in that thread is held by the *process*: the robust
//!   lock's owner word names the process (pid and start time), not a
//!   thread, so the guard may be used from any thread and held across
//!   `.await` while the task moves between the runtime's threads. If the
//!   process dies holding it (even by `SIGKILL`), the next acquirer, sync
//!   or async, in any process, gets [`LockError::OwnerDied`] with the
//!   guard.
//! * An [`RLock`] records its holding thread for recursion. An async
//!   acquire records a per-acquire *tag* in its place (bit 31 set, so never
//!   a thread id): the hold belongs to the returned [`AsyncRLockGuard`],
//!   wherever the task runs. It is one level, not reentrant: a task that
//!   holds it and acquires it again waits for itself, as with
//!   `tokio::sync::Mutex`.
//!
//! # Cancel safety
//!
//! A dropped acquire never leaks the lock: a lock its waiting thread takes
//! after the future was dropped is released again at once, and one taken
//! over from a dead owner is given back *marked as the dead owner's*
//! (`RawLock::restore_dead`), so that the next acquirer still learns that
//! the owner died.

use super::spin::{spin, spin_until};
use super::{SLICE, blocking_slices, queue::turn_for};
use crate::mem::robust_lock::Acquired;
use crate::sync::{
    Arrival, Barrier, BrokenBarrierError, CondLockRef, Condition, Lock, LockError, LockGuard,
    LockResult, RLock, async_tag,
};
use crate::sys;
use std::fmt;
use std::time::{Duration, Instant};

/// A hold taken in a blocking thread for a task: given back by `undo`
/// unless the task receives it with [`keep`](Hold::keep).
pub(super) struct Hold<T> {
    val: Option<T>,
    undo: Option<Box<dyn FnOnce(T) + Send>>,
}

impl<T> Hold<T> {
    pub(super) fn new(val: T, undo: impl FnOnce(T) + Send + 'static) -> Hold<T> {
        Hold {
            val: Some(val),
            undo: Some(Box::new(undo)),
        }
    }

    /// A value with nothing to give back.
    pub(super) fn plain(val: T) -> Hold<T> {
        Hold {
            val: Some(val),
            undo: None,
        }
    }

    pub(super) fn keep(mut self) -> T {
        self.undo = None;
        self.val.take().expect("a hold is kept once")
    }
}

impl<T> Drop for Hold<T> {
    fn drop(&mut self) {
        if let (Some(v), Some(undo)) = (self.val.take(), self.undo.take()) {
            undo(v);
        }
    }
}

/// Runs `slice` (a blocking wait of at most [`SLICE`]) in tokio's blocking
/// pool until it returns a hold, as the one task of this process whose
/// turn it is for the primitive at `key`; the others wait (FIFO, at no
/// cost) for their turn.
pub(super) async fn in_turn<T, F>(key: usize, slice: F) -> T
where
    F: FnMut() -> Option<Hold<T>> + Send + 'static,
    T: Send + 'static,
{
    let turn = turn_for(key);
    let _turn = turn.lock().await;
    blocking_slices(slice).await.keep()
}

/// Runs `f` off the runtime's threads if there is a runtime, else here.
pub(super) fn detached(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(f);
        }
        Err(_) => f(),
    }
}

/// A lock as the async twins take it: a `Lock` (held by the process) or an
/// `RLock` held under an async tag.
#[derive(Clone)]
enum Target {
    Lock(Lock),
    RLock(RLock, u32),
}

impl Target {
    fn key(&self) -> usize {
        match self {
            Target::Lock(l) => l.shm_state() as *const _ as usize,
            Target::RLock(r, _) => r.state() as *const _ as usize,
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: only trying).
    fn take(&self, deadline: Option<Instant>) -> Option<(Acquired, u64)> {
        match (self, deadline) {
            (Target::Lock(l), Some(d)) => l.shm_state().raw.lock_noting(Some(d)),
            (Target::Lock(l), None) => l.shm_state().raw.try_lock_noting(),
            (Target::RLock(r, tag), d) => r.state().acquire_tagged(*tag, d, d.is_some()),
        }
    }

    fn is_locked(&self) -> bool {
        match self {
            Target::Lock(l) => l.shm_state().raw.is_locked(),
            Target::RLock(r, _) => r.state().raw.is_locked(),
        }
    }

    /// Releases the lock (held by this target).
    fn release(&self) {
        match self {
            Target::Lock(l) => l.shm_state().raw.unlock(),
            Target::RLock(r, tag) => {
                r.state().release_tagged(*tag);
            }
        }
    }

    /// Gives back a lock taken over from the dead owner `dead` unused.
    fn restore_dead(&self, dead: u64) {
        match self {
            Target::Lock(l) => l.shm_state().raw.restore_dead(dead),
            Target::RLock(r, tag) => r.state().restore_dead_tagged(*tag, dead),
        }
    }

    /// Takes the lock, awaiting it as long as it takes.
    async fn acquire(&self) -> Acquired {
        if let Some((a, _)) = self.take(None) {
            return a;
        }
        // The holder often lets go within microseconds: look inline for a
        // bounded moment (see `spin.rs`) before waiting in a thread.
        if let Some((a, _)) = spin(self.key(), || {
            if self.is_locked() {
                None
            } else {
                self.take(None)
            }
        }) {
            return a;
        }
        let t = self.clone();
        in_turn(self.key(), move || {
            let (a, dead) = t.take(Some(Instant::now() + SLICE))?;
            let t = t.clone();
            Some(Hold::new(a, move |a| {
                if a == Acquired::OwnerDied {
                    t.restore_dead(dead);
                } else {
                    t.release();
                }
            }))
        })
        .await
    }
}

/// The outcome of a lock acquire whose guard is made by `guard`.
fn outcome<G>(a: Acquired, guard: G) -> LockResult<G> {
    match a {
        Acquired::Clean => Ok(guard),
        Acquired::OwnerDied => Err(LockError::OwnerDied(guard)),
    }
}

/// `fut` until `deadline`, else [`LockError::Timeout`].
async fn until<G>(
    deadline: Option<Instant>,
    fut: impl std::future::Future<Output = LockResult<G>>,
) -> LockResult<G> {
    match deadline {
        None => fut.await,
        Some(d) => tokio::time::timeout_at(d.into(), fut)
            .await
            .unwrap_or(Err(LockError::Timeout)),
    }
}

impl Lock {
    /// Awaitable [`acquire`](Lock::acquire). The guard may be held across
    /// `.await` and moved between threads: the lock is held by the
    /// process (see [`aio`](crate::aio) for how the wait works).
    ///
    /// # Errors
    ///
    /// [`LockError::OwnerDied`] (holding the guard) when the previous
    /// holder died while holding the lock.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping a pending `acquire_async` never leaks the
    /// lock (one its waiting thread takes after the drop is released at
    /// once, and one taken from a dead owner is left for the next acquirer
    /// to recover, with [`LockError::OwnerDied`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let lock = multiproc::Lock::new()?;
    /// let g = lock.acquire_async().await.unwrap();
    /// tokio::task::yield_now().await; // held across an await
    /// drop(g);
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn acquire_async(&self) -> LockResult<LockGuard<'_>> {
        if self.shm_state().raw.try_lock_fast() {
            return self.outcome(Some(Acquired::Clean), LockError::Timeout);
        }
        let a = Target::Lock(self.clone()).acquire().await;
        self.outcome(Some(a), LockError::Timeout)
    }

    /// [`acquire_async`](Self::acquire_async) for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when the time ran out; otherwise as
    /// [`acquire_async`](Self::acquire_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire_async`](Self::acquire_async).
    pub async fn acquire_async_timeout(&self, timeout: Duration) -> LockResult<LockGuard<'_>> {
        until(sys::deadline_after(timeout), self.acquire_async()).await
    }
}

impl RLock {
    /// Awaitable [`acquire`](RLock::acquire), for a task: the hold belongs
    /// to the returned guard (which is `Send`), not to a thread, so it may
    /// be held across `.await` while the task moves between threads.
    ///
    /// Not reentrant: the task holds one level; acquiring again while
    /// holding it waits for itself (as with `tokio::sync::Mutex`). A
    /// thread's blocking [`acquire`](RLock::acquire) waits while a task
    /// holds it.
    ///
    /// # Errors
    ///
    /// [`LockError::OwnerDied`] (holding the guard) when the previous
    /// holder died while holding it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Lock::acquire_async`].
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let r = multiproc::RLock::new()?;
    /// let g = r.acquire_async().await.unwrap();
    /// assert!(r.is_locked());
    /// drop(g);
    /// assert!(!r.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn acquire_async(&self) -> LockResult<AsyncRLockGuard<'_>> {
        let tag = async_tag();
        let a = Target::RLock(self.clone(), tag).acquire().await;
        outcome(a, AsyncRLockGuard { lock: self, tag })
    }

    /// [`acquire_async`](Self::acquire_async) for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when the time ran out; otherwise as
    /// [`acquire_async`](Self::acquire_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire_async`](Self::acquire_async).
    pub async fn acquire_async_timeout(
        &self,
        timeout: Duration,
    ) -> LockResult<AsyncRLockGuard<'_>> {
        until(sys::deadline_after(timeout), self.acquire_async()).await
    }
}

/// Holds an [`RLock`] for a task (from [`RLock::acquire_async`]); releases
/// it when dropped, from whichever thread.
#[must_use = "the lock is released when the guard is dropped; `let _ = ...` drops it at once, bind it to a named variable such as `_guard`"]
pub struct AsyncRLockGuard<'a> {
    lock: &'a RLock,
    tag: u32,
}

impl AsyncRLockGuard<'_> {
    /// The lock this guard holds.
    pub fn lock(&self) -> &RLock {
        self.lock
    }
}

impl Drop for AsyncRLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.state().release_tagged(self.tag);
    }
}

impl fmt::Debug for AsyncRLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRLockGuard").finish_non_exhaustive()
    }
}

impl Condition {
    fn target(&self, tag: u32) -> Target {
        match self.lock_ref() {
            CondLockRef::Lock(l) => Target::Lock(l.clone()),
            CondLockRef::RLock(r) => Target::RLock(r.clone(), tag),
        }
    }

    /// Awaitable [`acquire`](Condition::acquire): takes the condition's
    /// lock for a task (as [`Lock::acquire_async`] or
    /// [`RLock::acquire_async`]); wait and notify through the guard.
    ///
    /// # Errors
    ///
    /// [`LockError::OwnerDied`] (holding the guard) when the previous
    /// holder died while holding the lock.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Lock::acquire_async`].
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.acquire_async().await.unwrap();
    /// let (g, notified) = g.wait_async_timeout(Duration::from_millis(10)).await;
    /// assert!(!notified.unwrap());
    /// assert_eq!(g.notify_all(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn acquire_async(&self) -> LockResult<AsyncConditionGuard<'_>> {
        let tag = async_tag();
        let a = self.target(tag).acquire().await;
        outcome(
            a,
            AsyncConditionGuard {
                cond: self,
                tag,
                held: true,
            },
        )
    }

    /// [`acquire_async`](Self::acquire_async) for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when the time ran out; otherwise as
    /// [`acquire_async`](Self::acquire_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire_async`](Self::acquire_async).
    pub async fn acquire_async_timeout(
        &self,
        timeout: Duration,
    ) -> LockResult<AsyncConditionGuard<'_>> {
        until(sys::deadline_after(timeout), self.acquire_async()).await
    }
}

/// The lock of a [`Condition`], held by a task (from
/// [`Condition::acquire_async`]); waits and notifies go through it. `Send`:
/// it may be held across `.await`. Released when dropped.
///
/// The waits take the guard and give it back, so that a wait dropped
/// while the lock is released leaves no guard behind that would claim to
/// hold it.
#[must_use = "the lock is released when the guard is dropped; `let _ = ...` drops it at once, bind it to a named variable such as `_guard`"]
pub struct AsyncConditionGuard<'a> {
    cond: &'a Condition,
    tag: u32,
    /// False while a wait has the lock released.
    held: bool,
}

/// What a dropped wait leaves to repair: the waiter is counted in
/// `waiters`, or was chosen by a notify, and the lock is not held.
struct Waiting {
    cond: Condition,
    tag: u32,
    armed: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let cond = self.cond.clone();
        let tag = self.tag;
        // Take the lock (off the runtime's threads: it may take a while)
        // and leave the wait: give back a notification meant for us, or
        // stop counting as a waiter.
        detached(move || {
            let t = cond.target(tag);
            let a = t.take(Some(Instant::now() + Duration::from_secs(3600 * 24 * 365)));
            let st = cond.state();
            let signals = st.signals.load(std::sync::atomic::Ordering::Relaxed);
            if signals > 0 {
                st.signals
                    .store(signals - 1, std::sync::atomic::Ordering::Relaxed);
                st.notify(1);
            } else {
                let w = st.waiters.load(std::sync::atomic::Ordering::Relaxed);
                st.waiters
                    .store(w.saturating_sub(1), std::sync::atomic::Ordering::Relaxed);
            }
            match a {
                Some((Acquired::OwnerDied, dead)) => t.restore_dead(dead),
                Some(_) => t.release(),
                None => {}
            }
        });
    }
}

impl<'a> AsyncConditionGuard<'a> {
    async fn wait_until(
        mut self,
        deadline: Option<Instant>,
    ) -> (Self, std::result::Result<bool, LockError<()>>) {
        use std::sync::atomic::Ordering;
        let cond = self.cond;
        let st = cond.state();
        let target = cond.target(self.tag);
        st.waiters.fetch_add(1, Ordering::Relaxed);
        let mut died = false;
        let mut waiting = Waiting {
            cond: cond.clone(),
            tag: self.tag,
            armed: false,
        };
        let seq_key = &st.seq as *const _ as usize;
        let woken = loop {
            let seq = st.seq.load(Ordering::Acquire);
            self.held = false;
            waiting.armed = true;
            target.release();
            if !spin_until(seq_key, || st.seq.load(Ordering::Acquire) != seq) {
                let c = cond.clone();
                in_turn(seq_key, move || {
                    let st = c.state();
                    let mut until = Instant::now() + SLICE;
                    if let Some(d) = deadline {
                        until = until.min(d);
                    }
                    sys::futex_wait(&st.seq, seq, Some(until));
                    let done = st.seq.load(Ordering::Acquire) != seq
                        || deadline.is_some_and(|d| Instant::now() >= d);
                    done.then_some(Hold::plain(()))
                })
                .await;
            }
            died |= target.acquire().await == Acquired::OwnerDied;
            self.held = true;
            waiting.armed = false;
            if let Some(woken) = st.settle(deadline) {
                break woken;
            }
        };
        if died {
            (self, Err(LockError::OwnerDied(())))
        } else {
            (self, Ok(woken))
        }
    }

    /// Awaitable [`wait`](crate::ConditionGuard::wait): releases the lock,
    /// waits until notified, takes the lock again and gives the guard back.
    ///
    /// # Errors
    ///
    /// [`LockError::OwnerDied`] when, while this task waited, a holder of
    /// the lock died; the lock is held again all the same.
    ///
    /// # Cancel safety
    ///
    /// Dropping a pending `wait_async` drops the guard with it: the lock is
    /// released (or, if the wait had released it, not taken again), the
    /// waiter stops counting as one, and a notification that had chosen it
    /// goes on to another waiter.
    pub async fn wait_async(self) -> (Self, std::result::Result<(), LockError<()>>) {
        let (g, r) = self.wait_until(None).await;
        (g, r.map(|_| ()))
    }

    /// [`wait_async`](Self::wait_async) for at most `timeout`; `Ok(true)`
    /// when notified, `Ok(false)` on timeout.
    ///
    /// # Errors
    ///
    /// As [`wait_async`](Self::wait_async).
    ///
    /// # Cancel safety
    ///
    /// As [`wait_async`](Self::wait_async).
    pub async fn wait_async_timeout(
        self,
        timeout: Duration,
    ) -> (Self, std::result::Result<bool, LockError<()>>) {
        self.wait_until(sys::deadline_after(timeout)).await
    }

    /// Awaitable [`wait_for`](crate::ConditionGuard::wait_for): waits
    /// until `predicate` is true, for at most `timeout` (`None`: as long as
    /// it takes); gives back the guard and the last value of the
    /// predicate.
    ///
    /// # Errors
    ///
    /// As [`wait_async`](Self::wait_async).
    ///
    /// # Cancel safety
    ///
    /// As [`wait_async`](Self::wait_async).
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.acquire_async().await.unwrap();
    /// let (_g, ok) = g.wait_for_async(|| true, None).await;
    /// assert!(ok.unwrap());
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn wait_for_async(
        self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> (Self, std::result::Result<bool, LockError<()>>) {
        let end = timeout.and_then(sys::deadline_after);
        let mut died = false;
        let mut g = self;
        loop {
            if predicate() || end.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let (back, r) = g.wait_until(end).await;
            g = back;
            died |= r.is_err();
        }
        let v = predicate();
        (
            g,
            if died {
                Err(LockError::OwnerDied(()))
            } else {
                Ok(v)
            },
        )
    }

    /// Wakes up to `n` waiters (in any process); returns how many were
    /// chosen.
    pub fn notify(&self, n: u32) -> u32 {
        self.cond.state().notify(n)
    }

    /// Wakes every waiter; returns how many there were.
    pub fn notify_all(&self) -> u32 {
        self.notify(u32::MAX)
    }

    /// The condition.
    pub fn condition(&self) -> &'a Condition {
        self.cond
    }
}

impl Drop for AsyncConditionGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            self.cond.target(self.tag).release();
        }
    }
}

impl fmt::Debug for AsyncConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncConditionGuard")
            .finish_non_exhaustive()
    }
}

impl Barrier {
    /// Awaitable [`wait`](Barrier::wait), with the barrier's default
    /// timeout: arrives, then waits for the other parties; returns the
    /// arrival index.
    ///
    /// Arriving takes the barrier's internal lock for a moment on the
    /// calling thread (and runs the action in the last party to arrive);
    /// the wait for the others is in tokio's blocking pool, one thread per
    /// barrier and process (see [`aio`](crate::aio)).
    ///
    /// # Errors
    ///
    /// [`BrokenBarrierError`] as for [`wait`](Barrier::wait).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Dropping a pending `wait_async` takes the party back out of the
    /// count (as asyncio's `Barrier` does), unless the barrier passed or
    /// broke meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let b = multiproc::Barrier::new(2)?;
    /// let b2 = b.clone();
    /// let other = tokio::spawn(async move { b2.wait_async().await });
    /// let mine = b.wait_async().await.unwrap();
    /// assert_eq!(mine + other.await.unwrap().unwrap(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn wait_async(&self) -> std::result::Result<u32, BrokenBarrierError> {
        self.wait_async_until(self.timeout().and_then(|t| Instant::now().checked_add(t)))
            .await
    }

    /// [`wait_async`](Self::wait_async) for at most `timeout` (which, as
    /// for [`wait_timeout`](Barrier::wait_timeout), breaks the barrier when
    /// it passes).
    ///
    /// # Errors
    ///
    /// As [`wait_async`](Self::wait_async).
    ///
    /// # Cancel safety
    ///
    /// As [`wait_async`](Self::wait_async).
    pub async fn wait_async_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<u32, BrokenBarrierError> {
        self.wait_async_until(Instant::now().checked_add(timeout))
            .await
    }

    async fn wait_async_until(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<u32, BrokenBarrierError> {
        use std::sync::atomic::Ordering;
        let (generation, index) = match self.arrive()? {
            Arrival::Passed(index) => return Ok(index),
            Arrival::Waiting { generation, index } => (generation, index),
        };
        struct Leave<'b>(&'b Barrier, u32, bool);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                if self.2 {
                    self.0.leave(self.1);
                }
            }
        }
        let mut leave = Leave(self, generation, true);
        let word = self.generation_word();
        let key = word as *const _ as usize;
        if !spin_until(key, || word.load(Ordering::Acquire) != generation) {
            let b = self.clone();
            in_turn(key, move || {
                let word = b.generation_word();
                let mut until = Instant::now() + SLICE;
                if let Some(d) = deadline {
                    until = until.min(d);
                }
                if word.load(Ordering::Acquire) == generation
                    && !sys::futex_wait(word, generation, Some(until))
                    && deadline.is_some_and(|d| Instant::now() >= d)
                {
                    b.time_out(generation);
                }
                (word.load(Ordering::Acquire) != generation).then_some(Hold::plain(()))
            })
            .await;
        }
        leave.2 = false;
        self.outcome(generation, index)
    }
}
