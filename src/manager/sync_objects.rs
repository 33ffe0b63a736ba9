//! The queue and synchronization objects of Python's `SyncManager`, living
//! in the server: `Queue`/`JoinableQueue`, `Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Condition`, `Event`, `Barrier`.
//!
//! Blocking methods block only the connection that called them, and give up
//! when that caller hangs up (its process died), so a dead waiter neither
//! keeps a server thread forever nor swallows an item.

use super::inbox::Inbox;
use super::object::{Args, Call, Object, int_arg, timeout_arg, truthy};
use super::server::Factory;
use super::wire::Fail;
use crate::pickle::Value;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `(block, timeout)` of `get`/`put`/`acquire`, positional or keyword.
fn block_timeout(
    a: &Args,
    first: usize,
    block_name: &str,
) -> Result<(bool, Option<Duration>), Fail> {
    let block = a.get(first, block_name).is_none_or(truthy);
    let timeout = match a.get(first + 1, "timeout") {
        // acquire(timeout=-1) means no limit.
        Some(Value::Int(n)) if *n < 0 => None,
        Some(Value::Float(f)) if *f < 0.0 => None,
        v => timeout_arg(v)?,
    };
    Ok((block, timeout))
}

struct QueueState {
    items: VecDeque<Value>,
    unfinished: u64,
    /// Calls waiting on `changed`: a change wakes them only when there are
    /// some (a wake is a system call).
    waiters: usize,
}

pub(crate) struct QueueObj {
    maxsize: usize,
    shared: Arc<QueueShared>,
    /// The put inbox of Rust clients on this machine (see
    /// [`inbox`](super::inbox)), made when one first asks; `None` when it
    /// could not be made.
    inbox: OnceLock<Option<Inbox>>,
}

struct QueueShared {
    state: Mutex<QueueState>,
    changed: Condvar,
}

impl QueueShared {
    /// Moves what waits in `inbox` to the end of the queue, waking the
    /// waiters when something came; returns how many items came.
    fn take_in(&self, s: &mut QueueState, inbox: &Inbox) -> u64 {
        let n = inbox.drain(&mut s.items);
        s.unfinished += n;
        if n > 0 && s.waiters > 0 {
            self.changed.notify_all();
        }
        n
    }
}

impl QueueObj {
    pub(crate) fn new(maxsize: usize) -> Self {
        QueueObj {
            maxsize,
            shared: Arc::new(QueueShared {
                state: Mutex::new(QueueState {
                    items: VecDeque::new(),
                    unfinished: 0,
                    waiters: 0,
                }),
                changed: Condvar::new(),
            }),
            inbox: OnceLock::new(),
        }
    }

    /// The queue's state, locked, with the inbox's items taken in: every
    /// call sees the puts that went through the inbox before it.
    fn locked(&self) -> MutexGuard<'_, QueueState> {
        let mut s = lock(&self.shared.state);
        if let Some(Some(inbox)) = self.inbox.get() {
            self.shared.take_in(&mut s, inbox);
        }
        s
    }

    /// The inbox, made (with its thread) on first use; only for a queue
    /// without a `maxsize`.
    pub(crate) fn inbox(&self) -> Option<&Inbox> {
        if self.maxsize > 0 {
            return None;
        }
        self.inbox
            .get_or_init(|| {
                let shared = Arc::downgrade(&self.shared);
                Inbox::start(move |inbox| {
                    let q = shared.upgrade()?;
                    let mut s = lock(&q.state);
                    Some(q.take_in(&mut s, inbox))
                })
                .ok()
            })
            .as_ref()
    }

    fn full(&self, s: &QueueState) -> bool {
        self.maxsize > 0 && s.items.len() >= self.maxsize
    }

    /// [`Call::wait_while`], counted in `waiters`.
    fn wait<'g>(
        &self,
        call: &Call<'_>,
        mut s: MutexGuard<'g, QueueState>,
        timeout: Option<Duration>,
        ready: impl FnMut(&mut QueueState) -> bool,
    ) -> (MutexGuard<'g, QueueState>, bool) {
        s.waiters += 1;
        let (mut s, ok) = call.wait_while(&self.shared.changed, s, timeout, ready);
        s.waiters -= 1;
        (s, ok)
    }

    /// Unlocks the state after a change, then wakes the waiters if there
    /// are some: woken under the lock, a waiter would find it held and
    /// sleep again (two switches instead of one).
    fn changed(&self, s: MutexGuard<'_, QueueState>) {
        let wake = s.waiters > 0;
        drop(s);
        if wake {
            self.shared.changed.notify_all();
        }
    }
}

impl Object for QueueObj {
    fn exposed(&self) -> &[&'static str] {
        &[
            "empty",
            "full",
            "get",
            "get_nowait",
            "join",
            "put",
            "put_nowait",
            "qsize",
            "task_done",
        ]
    }

    fn call(&self, method: &str, a: Args, call: &Call<'_>) -> Result<Value, Fail> {
        let s = self.locked();
        match method {
            "qsize" => Ok(Value::Int(s.items.len() as i64)),
            "empty" => Ok(Value::Bool(s.items.is_empty())),
            "full" => Ok(Value::Bool(self.full(&s))),
            "put" | "put_nowait" => {
                let mut a = a;
                let item = match a.args.first_mut() {
                    Some(v) => std::mem::replace(v, Value::None),
                    None => a.required(0, "obj")?.clone(),
                };
                let (block, timeout) = if method == "put" {
                    block_timeout(&a, 1, "block")?
                } else {
                    (false, None)
                };
                let (mut s, ok) = if block && self.full(&s) {
                    self.wait(call, s, timeout, |s| !self.full(s))
                } else {
                    let ok = !self.full(&s);
                    (s, ok)
                };
                if !ok {
                    return Err(Fail::full());
                }
                s.items.push_back(item);
                s.unfinished += 1;
                self.changed(s);
                Ok(Value::None)
            }
            "get" | "get_nowait" => {
                let (block, timeout) = if method == "get" {
                    block_timeout(&a, 0, "block")?
                } else {
                    (false, None)
                };
                let waited = block && s.items.is_empty();
                let (mut s, ok) = if waited {
                    self.wait(call, s, timeout, |s| !s.items.is_empty())
                } else {
                    let ok = !s.items.is_empty();
                    (s, ok)
                };
                // A caller that hung up while it waited gets nothing: the
                // item stays queued.
                if !ok || (waited && call.caller_gone()) {
                    return Err(Fail::empty());
                }
                let item = s.items.pop_front().expect("not empty");
                self.changed(s);
                Ok(item)
            }
            "task_done" => {
                let mut s = s;
                if s.unfinished == 0 {
                    return Err(Fail::builtin(
                        "ValueError",
                        "task_done() called too many times",
                    ));
                }
                s.unfinished -= 1;
                self.changed(s);
                Ok(Value::None)
            }
            "join" => {
                drop(self.wait(call, s, None, |s| s.unfinished == 0));
                Ok(Value::None)
            }
            other => Err(Fail::Traceback(format!("Queue has no method {other:?}"))),
        }
    }

    fn value(&self) -> Value {
        Value::List(self.locked().items.iter().cloned().collect())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// A counting lock: `Lock` (max 1, anyone may release), `Semaphore`,
/// `BoundedSemaphore`; or, with `owner`, an `RLock`.
struct Counter {
    /// Permits left (Lock/Semaphore), or recursion count (RLock).
    value: i64,
    owner: Option<u64>,
}

pub(crate) struct Sem {
    kind: SemKind,
    bound: i64,
    state: Mutex<Counter>,
    changed: Condvar,
}

#[derive(Clone, Copy, PartialEq)]
enum SemKind {
    Lock,
    RLock,
    Semaphore,
    Bounded,
}

impl Sem {
    fn new(kind: SemKind, value: i64) -> Self {
        Sem {
            kind,
            bound: value,
            state: Mutex::new(Counter { value, owner: None }),
            changed: Condvar::new(),
        }
    }

    fn acquire(&self, a: &Args, call: &Call<'_>) -> Result<bool, Fail> {
        let (block, timeout) = block_timeout(a, 0, "blocking")?;
        let me = call.conn_id;
        let s = lock(&self.state);
        if self.kind == SemKind::RLock {
            let (mut s, ok) = if block {
                call.wait_while(&self.changed, s, timeout, |c| {
                    c.owner.is_none() || c.owner == Some(me)
                })
            } else {
                let ok = s.owner.is_none() || s.owner == Some(me);
                (s, ok)
            };
            if ok && !call.caller_gone() {
                s.owner = Some(me);
                s.value += 1;
                return Ok(true);
            }
            return Ok(false);
        }
        let (mut s, ok) = if block {
            call.wait_while(&self.changed, s, timeout, |c| c.value > 0)
        } else {
            let ok = s.value > 0;
            (s, ok)
        };
        if ok && !call.caller_gone() {
            s.value -= 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn release(&self, a: &Args, call: &Call<'_>) -> Result<(), Fail> {
        let mut s = lock(&self.state);
        match self.kind {
            SemKind::RLock => {
                if s.owner != Some(call.conn_id) {
                    return Err(Fail::builtin(
                        "RuntimeError",
                        "cannot release un-acquired lock",
                    ));
                }
                s.value -= 1;
                if s.value == 0 {
                    s.owner = None;
                }
            }
            SemKind::Lock => {
                if s.value > 0 {
                    return Err(Fail::builtin("RuntimeError", "release unlocked lock"));
                }
                s.value = 1;
            }
            SemKind::Semaphore | SemKind::Bounded => {
                let n = a.get(0, "n").map(int_arg).transpose()?.unwrap_or(1).max(1);
                if self.kind == SemKind::Bounded && s.value + n > self.bound {
                    return Err(Fail::builtin(
                        "ValueError",
                        "Semaphore released too many times",
                    ));
                }
                s.value += n;
            }
        }
        self.changed.notify_all();
        Ok(())
    }
}

impl Object for Sem {
    fn exposed(&self) -> &[&'static str] {
        &["acquire", "release"]
    }

    fn call(&self, method: &str, a: Args, call: &Call<'_>) -> Result<Value, Fail> {
        match method {
            "acquire" => self.acquire(&a, call).map(Value::Bool),
            "release" => self.release(&a, call).map(|()| Value::None),
            other => Err(Fail::Traceback(format!("lock has no method {other:?}"))),
        }
    }
}

pub(crate) struct EventObj {
    set: Mutex<bool>,
    changed: Condvar,
}

impl Object for EventObj {
    fn exposed(&self) -> &[&'static str] {
        &["is_set", "set", "clear", "wait"]
    }

    fn call(&self, method: &str, a: Args, call: &Call<'_>) -> Result<Value, Fail> {
        let mut s = lock(&self.set);
        match method {
            "is_set" => Ok(Value::Bool(*s)),
            "set" => {
                *s = true;
                self.changed.notify_all();
                Ok(Value::None)
            }
            "clear" => {
                *s = false;
                Ok(Value::None)
            }
            "wait" => {
                let timeout = timeout_arg(a.get(0, "timeout"))?;
                let (_guard, ok) = call.wait_while(&self.changed, s, timeout, |s| *s);
                Ok(Value::Bool(ok))
            }
            other => Err(Fail::Traceback(format!("Event has no method {other:?}"))),
        }
    }
}

struct CondState {
    owner: Option<u64>,
    count: i64,
    next_ticket: u64,
    waiting: VecDeque<u64>,
    notified: HashSet<u64>,
}

/// `Condition()`: an `RLock` plus wait/notify.
pub(crate) struct CondObj {
    state: Mutex<CondState>,
    changed: Condvar,
}

impl Object for CondObj {
    fn exposed(&self) -> &[&'static str] {
        &["acquire", "release", "wait", "notify", "notify_all"]
    }

    fn call(&self, method: &str, a: Args, call: &Call<'_>) -> Result<Value, Fail> {
        let me = call.conn_id;
        let s = lock(&self.state);
        let not_owner = || Fail::builtin("RuntimeError", "cannot use an un-acquired lock");
        match method {
            "acquire" => {
                let (block, timeout) = block_timeout(&a, 0, "blocking")?;
                let free = |c: &mut CondState| c.owner.is_none() || c.owner == Some(me);
                let (mut s, ok) = if block {
                    call.wait_while(&self.changed, s, timeout, free)
                } else {
                    let mut s = s;
                    let ok = free(&mut s);
                    (s, ok)
                };
                if ok && !call.caller_gone() {
                    s.owner = Some(me);
                    s.count += 1;
                    return Ok(Value::Bool(true));
                }
                Ok(Value::Bool(false))
            }
            "release" => {
                let mut s = s;
                if s.owner != Some(me) {
                    return Err(not_owner());
                }
                s.count -= 1;
                if s.count == 0 {
                    s.owner = None;
                }
                self.changed.notify_all();
                Ok(Value::None)
            }
            "wait" => {
                let mut s = s;
                if s.owner != Some(me) {
                    return Err(not_owner());
                }
                let timeout = timeout_arg(a.get(0, "timeout"))?;
                let ticket = s.next_ticket;
                s.next_ticket += 1;
                s.waiting.push_back(ticket);
                let saved = s.count;
                s.owner = None;
                s.count = 0;
                self.changed.notify_all();
                let (mut s, notified) =
                    call.wait_while(&self.changed, s, timeout, |c| c.notified.contains(&ticket));
                s.notified.remove(&ticket);
                s.waiting.retain(|t| *t != ticket);
                // Take the lock back, whatever happened (as Python does);
                // but not for a caller that is gone (its process died), which
                // would keep the lock, or take it from its holder.
                let (mut s, free) = call.wait_while(&self.changed, s, None, |c| c.owner.is_none());
                if !free || call.caller_gone() {
                    return Ok(Value::Bool(false));
                }
                s.owner = Some(me);
                s.count = saved;
                Ok(Value::Bool(notified))
            }
            "notify" | "notify_all" => {
                let mut s = s;
                if s.owner != Some(me) {
                    return Err(not_owner());
                }
                let n = if method == "notify_all" {
                    usize::MAX
                } else {
                    a.get(0, "n").map(int_arg).transpose()?.unwrap_or(1).max(0) as usize
                };
                let wake: Vec<u64> = s.waiting.drain(..).collect();
                let (now, later) = wake.split_at(n.min(wake.len()));
                s.notified.extend(now.iter().copied());
                s.waiting.extend(later.iter().copied());
                self.changed.notify_all();
                Ok(Value::None)
            }
            other => Err(Fail::Traceback(format!(
                "Condition has no method {other:?}"
            ))),
        }
    }
}

struct BarrierState {
    parties: i64,
    count: i64,
    generation: u64,
    broken: bool,
}

pub(crate) struct BarrierObj {
    state: Mutex<BarrierState>,
    changed: Condvar,
    default_timeout: Option<Duration>,
}

fn broken() -> Fail {
    Fail::Raise {
        module: "threading".into(),
        name: "BrokenBarrierError".into(),
        args: vec![],
    }
}

impl Object for BarrierObj {
    fn exposed(&self) -> &[&'static str] {
        &["__getattribute__", "wait", "abort", "reset"]
    }

    fn call(&self, method: &str, a: Args, call: &Call<'_>) -> Result<Value, Fail> {
        let mut s = lock(&self.state);
        match method {
            "__getattribute__" => match a.required(0, "name")? {
                Value::Str(n) if n == "parties" => Ok(Value::Int(s.parties)),
                Value::Str(n) if n == "n_waiting" => Ok(Value::Int(s.count)),
                Value::Str(n) if n == "broken" => Ok(Value::Bool(s.broken)),
                n => Err(Fail::builtin("AttributeError", format!("{n:?}"))),
            },
            "abort" => {
                s.broken = true;
                self.changed.notify_all();
                Ok(Value::None)
            }
            "reset" => {
                s.broken = false;
                s.count = 0;
                s.generation += 1;
                self.changed.notify_all();
                Ok(Value::None)
            }
            "wait" => {
                if s.broken {
                    return Err(broken());
                }
                let timeout = match a.get(0, "timeout") {
                    None | Some(Value::None) => self.default_timeout,
                    v => timeout_arg(v)?,
                };
                let index = s.parties - 1 - s.count;
                s.count += 1;
                if s.count == s.parties {
                    s.count = 0;
                    s.generation += 1;
                    self.changed.notify_all();
                    return Ok(Value::Int(index));
                }
                let generation = s.generation;
                let (mut s, ok) = call.wait_while(&self.changed, s, timeout, |c| {
                    c.generation != generation || c.broken
                });
                if s.generation != generation {
                    return Ok(Value::Int(index));
                }
                if !ok || !s.broken {
                    // Timed out or the caller left: the barrier breaks, as in Python.
                    s.broken = true;
                    self.changed.notify_all();
                }
                Err(broken())
            }
            other => Err(Fail::Traceback(format!("Barrier has no method {other:?}"))),
        }
    }
}

fn factory<F>(f: F) -> Arc<Factory>
where
    F: Fn(Args) -> Result<Arc<dyn Object>, Fail> + Send + Sync + 'static,
{
    Arc::new(f)
}

fn initial(a: &Args) -> Result<i64, Fail> {
    let n = a.get(0, "value").map(int_arg).transpose()?.unwrap_or(1);
    if n < 0 {
        return Err(Fail::builtin(
            "ValueError",
            "semaphore initial value must be >= 0",
        ));
    }
    Ok(n)
}

pub(crate) fn sync_types() -> Vec<(&'static str, Arc<Factory>)> {
    vec![
        (
            "Lock",
            factory(|_| Ok(Arc::new(Sem::new(SemKind::Lock, 1)))),
        ),
        (
            "RLock",
            factory(|_| Ok(Arc::new(Sem::new(SemKind::RLock, 0)))),
        ),
        (
            "Semaphore",
            factory(|a| Ok(Arc::new(Sem::new(SemKind::Semaphore, initial(&a)?)))),
        ),
        (
            "BoundedSemaphore",
            factory(|a| Ok(Arc::new(Sem::new(SemKind::Bounded, initial(&a)?)))),
        ),
        (
            "Event",
            factory(|_| {
                Ok(Arc::new(EventObj {
                    set: Mutex::new(false),
                    changed: Condvar::new(),
                }))
            }),
        ),
        (
            "Condition",
            factory(|_| {
                Ok(Arc::new(CondObj {
                    state: Mutex::new(CondState {
                        owner: None,
                        count: 0,
                        next_ticket: 0,
                        waiting: VecDeque::new(),
                        notified: HashSet::new(),
                    }),
                    changed: Condvar::new(),
                }))
            }),
        ),
        (
            "Barrier",
            factory(|a| {
                let parties = int_arg(a.required(0, "parties")?)?;
                if parties < 1 {
                    return Err(Fail::builtin("ValueError", "parties must be >= 1"));
                }
                Ok(Arc::new(BarrierObj {
                    state: Mutex::new(BarrierState {
                        parties,
                        count: 0,
                        generation: 0,
                        broken: false,
                    }),
                    changed: Condvar::new(),
                    default_timeout: timeout_arg(a.get(2, "timeout"))?,
                }))
            }),
        ),
    ]
}
