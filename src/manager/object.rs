//! What a managed object is to the server: a set of exposed methods called
//! with plain values.

use super::wire::Fail;
use crate::pickle::Value;
use std::sync::{Condvar, MutexGuard};
use std::time::{Duration, Instant};

/// The arguments of a call: positional `args` and keyword `kwds`, as plain
/// values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, `(name, value)`.
    pub kwds: Vec<(Value, Value)>,
}

impl Args {
    /// The argument at position `i`, or else the keyword argument `name`.
    pub fn get(&self, i: usize, name: &str) -> Option<&Value> {
        self.args.get(i).or_else(|| {
            self.kwds
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == name))
                .map(|(_, v)| v)
        })
    }

    /// Like [`get`](Self::get), but a missing argument is a `TypeError`.
    ///
    /// # Errors
    /// A `TypeError` [`Fail`] when the argument is missing.
    pub fn required(&self, i: usize, name: &str) -> Result<&Value, Fail> {
        self.get(i, name)
            .ok_or_else(|| Fail::type_error(format!("missing argument {name:?}")))
    }
}

/// The context of one call in the server.
pub struct Call<'a> {
    /// Which connection the call came on; stable for the connection's life
    /// (what a recursive lock's owner is).
    pub conn_id: u64,
    pub(crate) gone: &'a dyn Fn() -> bool,
    pub(crate) flush: &'a dyn Fn(),
}

impl Call<'_> {
    /// True when the caller has hung up (its process died): a blocking
    /// method should give up rather than hand a result to nobody.
    pub fn caller_gone(&self) -> bool {
        (self.gone)()
    }

    /// Sends the replies held back for this connection's earlier
    /// (pipelined) requests. A method that blocks other than through
    /// [`wait_while`](Self::wait_while) calls it first.
    pub fn will_block(&self) {
        (self.flush)()
    }

    /// Waits on `cond` until `ready` holds, `timeout` passes (`None`: no
    /// limit) or the caller hangs up. Returns the guard and whether `ready`
    /// holds.
    pub fn wait_while<'g, T>(
        &self,
        cond: &Condvar,
        mut guard: MutexGuard<'g, T>,
        timeout: Option<Duration>,
        mut ready: impl FnMut(&mut T) -> bool,
    ) -> (MutexGuard<'g, T>, bool) {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut flushed = false;
        loop {
            if ready(&mut guard) {
                return (guard, true);
            }
            if !flushed {
                flushed = true;
                self.will_block();
            }
            let mut slice = Duration::from_millis(200);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (guard, false);
                }
                slice = slice.min(left);
            }
            guard = cond
                .wait_timeout(guard, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            // Woken with the condition met: no need to ask the socket
            // whether the caller is still there (a system call per wait).
            if ready(&mut guard) {
                return (guard, true);
            }
            if self.caller_gone() {
                let ok = ready(&mut guard);
                return (guard, ok);
            }
        }
    }
}

/// An object living in a manager server, called through proxies.
///
/// The built-in types (`dict`, `list`, `Queue`, …) implement it; so can
/// your own . `call` runs
/// on the thread serving the caller's connection, so several calls may run
/// at once: use interior locking.
pub trait Object: Send + Sync + 'static {
    /// The method names a proxy may call (Python's `exposed`).
    fn exposed(&self) -> &[&'static str];
    /// Calls `method` (one of [`exposed`](Self::exposed)).
    ///
    /// # Errors
    /// The [`Fail`] the caller receives. A panic also reaches the caller
    /// (as a `RuntimeError`), and the server goes on.
    fn call(&self, method: &str, args: Args, call: &Call<'_>) -> Result<Value, Fail>;
    /// The type id whose object a method's result becomes (Python's
    /// `method_to_typeid`): the server registers the result as a new
    /// object of that type, built by its factory from the result, and
    /// answers with a proxy (`#PROXY`) instead of the value. `dict` maps
    /// `__iter__` to `"Iterator"`.
    fn method_to_typeid(&self, method: &str) -> Option<&'static str> {
        let _ = method;
        None
    }
    /// The object's value as a plain value (Python's `proxy._getvalue()`).
    fn value(&self) -> Value {
        Value::None
    }
    /// A short description (Python's `repr`).
    fn repr(&self) -> String {
        format!("<{} object>", std::any::type_name::<Self>())
    }
    /// Whether the methods take Python sets (`{1, 2}`, `frozenset(...)`)
    /// as arguments, read as lists of their items. Other objects refuse
    /// them: a set has no plain-value form to store.
    fn takes_sets(&self) -> bool {
        false
    }
    /// Not part of the API: lets the server recognize its own types.
    #[doc(hidden)]
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Python's truth value of a plain value.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::None => false,
        Value::Bool(b) => *b,
        Value::Int(n) => *n != 0,
        Value::Float(f) => *f != 0.0,
        Value::Str(s) => !s.is_empty(),
        Value::Bytes(b) => !b.is_empty(),
        Value::List(l) | Value::Tuple(l) => !l.is_empty(),
        Value::Dict(d) => !d.is_empty(),
        _ => true,
    }
}

/// An optional timeout argument: `None` or a number of seconds.
pub(crate) fn timeout_arg(v: Option<&Value>) -> Result<Option<Duration>, Fail> {
    match v {
        None | Some(Value::None) => Ok(None),
        Some(Value::Int(n)) => Ok(Some(Duration::from_secs((*n).max(0) as u64))),
        Some(Value::Float(f)) if f.is_finite() => Ok(Some(Duration::from_secs_f64(f.max(0.0)))),
        Some(Value::Float(_)) => Ok(None),
        Some(_) => Err(Fail::type_error("timeout must be a number or None")),
    }
}

/// An integer argument.
pub(crate) fn int_arg(v: &Value) -> Result<i64, Fail> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(Fail::type_error("expected an int")),
    }
}
