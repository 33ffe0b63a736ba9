//! The managed `set` (Python 3.14's `SyncManager.set`) and `Iterator`
//! (what a `dict`'s or `set`'s `__iter__` answers with, as a proxy).

use super::dict::PyDict;
use super::object::{Args, Call, Object};
use super::wire::Fail;
use crate::pickle::Value;
use std::sync::{Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A managed `set` of hashable plain values (insertion-ordered; `pop`
/// takes the last one added).
#[derive(Default)]
pub(crate) struct SetObj(Mutex<PyDict>);

/// CPython 3.14's `SetProxy` method list.
const SET_EXPOSED: &[&str] = &[
    "__and__",
    "__class_getitem__",
    "__contains__",
    "__iand__",
    "__ior__",
    "__isub__",
    "__iter__",
    "__ixor__",
    "__len__",
    "__or__",
    "__rand__",
    "__ror__",
    "__rsub__",
    "__rxor__",
    "__sub__",
    "__xor__",
    "__ge__",
    "__gt__",
    "__le__",
    "__lt__",
    "add",
    "clear",
    "copy",
    "difference",
    "difference_update",
    "discard",
    "intersection",
    "intersection_update",
    "isdisjoint",
    "issubset",
    "issuperset",
    "pop",
    "remove",
    "symmetric_difference",
    "symmetric_difference_update",
    "union",
    "update",
];

/// A set of the items of an iterable argument (a list, tuple, dict's keys
/// or a set as Python reduces it).
fn set_of(v: &Value) -> Result<PyDict, Fail> {
    let mut s = PyDict::default();
    match v {
        Value::List(items) | Value::Tuple(items) => {
            for i in items {
                s.set(i.clone(), Value::None)?;
            }
        }
        Value::Dict(items) => {
            for (k, _) in items {
                s.set(k.clone(), Value::None)?;
            }
        }
        _ => {
            return Err(Fail::type_error(
                "expected an iterable (list, tuple or set)",
            ));
        }
    }
    Ok(s)
}

/// A set as a reply: Python's `set(list)` (a Rust client reads a list).
pub(crate) fn set_value<'a>(items: impl Iterator<Item = &'a Value>) -> Value {
    Value::call(
        "builtins",
        "set",
        vec![Value::List(items.cloned().collect())],
    )
}

fn contains(s: &PyDict, k: &Value) -> Result<bool, Fail> {
    Ok(s.get(k)?.is_some())
}

fn union(a: &PyDict, b: &PyDict) -> Result<PyDict, Fail> {
    let mut out = PyDict::default();
    for k in a.keys().chain(b.keys()) {
        out.set(k.clone(), Value::None)?;
    }
    Ok(out)
}

fn filter(a: &PyDict, b: &PyDict, keep_common: bool) -> Result<PyDict, Fail> {
    let mut out = PyDict::default();
    for k in a.keys() {
        if contains(b, k)? == keep_common {
            out.set(k.clone(), Value::None)?;
        }
    }
    Ok(out)
}

fn sym_diff(a: &PyDict, b: &PyDict) -> Result<PyDict, Fail> {
    let mut out = filter(a, b, false)?;
    for k in b.keys() {
        if !contains(a, k)? {
            out.set(k.clone(), Value::None)?;
        }
    }
    Ok(out)
}

fn subset(a: &PyDict, b: &PyDict) -> Result<bool, Fail> {
    for k in a.keys() {
        if !contains(b, k)? {
            return Ok(false);
        }
    }
    Ok(true)
}

impl SetObj {
    pub(crate) fn from_items(v: Option<&Value>) -> Result<SetObj, Fail> {
        Ok(SetObj(Mutex::new(match v {
            Some(v) => set_of(v)?,
            None => PyDict::default(),
        })))
    }
}

impl Object for SetObj {
    fn takes_sets(&self) -> bool {
        true
    }

    fn exposed(&self) -> &[&'static str] {
        SET_EXPOSED
    }

    fn call(&self, method: &str, a: Args, _: &Call<'_>) -> Result<Value, Fail> {
        let mut s = lock(&self.0);
        // The other sets of a call: every positional argument.
        let others = || a.args.iter().map(set_of).collect::<Result<Vec<_>, Fail>>();
        let other = || set_of(a.required(0, "other")?);
        let result = |d: PyDict| Ok(set_value(d.keys()));
        match method {
            "__len__" => Ok(Value::Int(s.len() as i64)),
            "__contains__" => Ok(Value::Bool(contains(&s, a.required(0, "item")?)?)),
            "add" => s
                .set(a.required(0, "item")?.clone(), Value::None)
                .map(|()| Value::None),
            "discard" => s.remove(a.required(0, "item")?).map(|_| Value::None),
            "remove" => {
                let k = a.required(0, "item")?;
                match s.remove(k)? {
                    Some(_) => Ok(Value::None),
                    None => Err(Fail::key_error(k.clone())),
                }
            }
            "pop" => s
                .pop_last()
                .ok_or_else(|| Fail::key_error(Value::from("pop from an empty set"))),
            "clear" => {
                s.clear();
                Ok(Value::None)
            }
            "copy" | "__iter__" => Ok(match method {
                "copy" => set_value(s.keys()),
                _ => Value::List(s.keys().cloned().collect()),
            }),
            "update" | "__ior__" => {
                for o in others()? {
                    for k in o.keys() {
                        s.set(k.clone(), Value::None)?;
                    }
                }
                Ok(Value::None)
            }
            "difference_update" | "__isub__" => {
                for o in others()? {
                    for k in o.keys() {
                        s.remove(k)?;
                    }
                }
                Ok(Value::None)
            }
            "intersection_update" | "__iand__" => {
                for o in others()? {
                    *s = filter(&s, &o, true)?;
                }
                Ok(Value::None)
            }
            "symmetric_difference_update" | "__ixor__" => {
                *s = sym_diff(&s, &other()?)?;
                Ok(Value::None)
            }
            "union" | "__or__" | "__ror__" => {
                let mut out = union(&s, &PyDict::default())?;
                for o in others()? {
                    out = union(&out, &o)?;
                }
                result(out)
            }
            "intersection" | "__and__" | "__rand__" => {
                let mut out = union(&s, &PyDict::default())?;
                for o in others()? {
                    out = filter(&out, &o, true)?;
                }
                result(out)
            }
            "difference" | "__sub__" => {
                let mut out = union(&s, &PyDict::default())?;
                for o in others()? {
                    out = filter(&out, &o, false)?;
                }
                result(out)
            }
            "__rsub__" => result(filter(&other()?, &s, false)?),
            "symmetric_difference" | "__xor__" | "__rxor__" => result(sym_diff(&s, &other()?)?),
            "isdisjoint" => Ok(Value::Bool(filter(&s, &other()?, true)?.len() == 0)),
            "issubset" | "__le__" => Ok(Value::Bool(subset(&s, &other()?)?)),
            "issuperset" | "__ge__" => Ok(Value::Bool(subset(&other()?, &s)?)),
            "__lt__" => {
                let o = other()?;
                Ok(Value::Bool(s.len() < o.len() && subset(&s, &o)?))
            }
            "__gt__" => {
                let o = other()?;
                Ok(Value::Bool(s.len() > o.len() && subset(&o, &s)?))
            }
            other => Err(Fail::Traceback(format!("set has no method {other:?}"))),
        }
    }

    fn method_to_typeid(&self, method: &str) -> Option<&'static str> {
        (method == "__iter__").then_some("Iterator")
    }

    fn value(&self) -> Value {
        set_value(lock(&self.0).keys())
    }

    fn repr(&self) -> String {
        format!("set({:?})", lock(&self.0).keys().collect::<Vec<_>>())
    }
}

/// A managed iterator over a snapshot of values (Python's `Iterator`
/// type id, used through an `IteratorProxy`).
pub(crate) struct IterObj(Mutex<std::vec::IntoIter<Value>>);

impl IterObj {
    pub(crate) fn new(items: Option<&Value>) -> Result<IterObj, Fail> {
        let items = match items {
            Some(Value::List(l) | Value::Tuple(l)) => l.clone(),
            Some(Value::Dict(d)) => d.iter().map(|(k, _)| k.clone()).collect(),
            None => vec![],
            Some(_) => return Err(Fail::type_error("an Iterator needs a list")),
        };
        Ok(IterObj(Mutex::new(items.into_iter())))
    }
}

fn stop_iteration() -> Fail {
    Fail::Raise {
        module: "builtins".into(),
        name: "StopIteration".into(),
        args: vec![],
    }
}

impl Object for IterObj {
    fn exposed(&self) -> &[&'static str] {
        &["__next__", "send", "throw", "close"]
    }

    fn call(&self, method: &str, a: Args, _: &Call<'_>) -> Result<Value, Fail> {
        let mut it = lock(&self.0);
        match method {
            "__next__" => it.next().ok_or_else(stop_iteration),
            "send" => match a.args.first() {
                None | Some(Value::None) => it.next().ok_or_else(stop_iteration),
                Some(_) => Err(Fail::type_error(
                    "can't send a value to an iterator over a snapshot",
                )),
            },
            "throw" => Err(Fail::type_error(
                "can't throw into an iterator over a snapshot",
            )),
            "close" => {
                it.by_ref().for_each(drop);
                Ok(Value::None)
            }
            other => Err(Fail::Traceback(format!("Iterator has no method {other:?}"))),
        }
    }
}
