//! The containers of Python's `SyncManager`, holding plain values: `dict`,
//! `list`, `Namespace`, `Value`, `Array` (and the type-id table).
//!
//! Each constructor returns an [`Object`] that a [`Server`](super::Server)
//! can serve, e.g. under a registered name with
//! [`register_shared`](super::Server::register_shared).

use super::dict::{Dict, PyDict, py_eq};
use super::object::{Args, Call, Object, int_arg};
use super::server::Factory;
use super::set::{IterObj, SetObj};
use super::sync_objects;
use super::wire::Fail;
use crate::pickle::Value;
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A managed `list`.
#[derive(Default)]
pub(crate) struct List(Mutex<Vec<Value>>);

const LIST_EXPOSED: &[&str] = &[
    "__add__",
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__len__",
    "__mul__",
    "__reversed__",
    "__rmul__",
    "__setitem__",
    "append",
    "count",
    "extend",
    "index",
    "insert",
    "pop",
    "remove",
    "reverse",
    "sort",
    "__imul__",
];

/// `(start, stop)` of a `slice(start, stop, None)` argument, clamped to `len`.
fn slice_of(v: &Value, len: usize) -> Option<Result<(usize, usize), Fail>> {
    let Value::Object(o) = v else {
        return None;
    };
    if !matches!(o.callable.as_global(), Some((_, "slice"))) {
        return None;
    }
    let args = &o.args;
    let clamp = |v: Option<&Value>, default: usize| -> Result<usize, Fail> {
        match v {
            None | Some(Value::None) => Ok(default),
            Some(x) => {
                let n = int_arg(x)?;
                let n = if n < 0 { n + len as i64 } else { n };
                Ok(n.clamp(0, len as i64) as usize)
            }
        }
    };
    if !matches!(args.get(2), None | Some(Value::None) | Some(Value::Int(1))) {
        return Some(Err(Fail::builtin(
            "ValueError",
            "only slices with step 1 are supported",
        )));
    }
    Some(clamp(args.first(), 0).and_then(|s| Ok((s, clamp(args.get(1), len)?.max(s)))))
}

fn index_of(v: &Value, len: usize) -> Result<usize, Fail> {
    let n = int_arg(v)?;
    let i = if n < 0 { n + len as i64 } else { n };
    if i < 0 || i >= len as i64 {
        return Err(Fail::builtin("IndexError", "list index out of range"));
    }
    Ok(i as usize)
}

fn items_of(v: &Value) -> Result<Vec<Value>, Fail> {
    match v {
        Value::List(l) | Value::Tuple(l) => Ok(l.clone()),
        _ => Err(Fail::type_error("expected a list")),
    }
}

fn py_cmp(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => x.partial_cmp(y),
        (Int(x), Float(y)) => (*x as f64).partial_cmp(y),
        (Float(x), Int(y)) => x.partial_cmp(&(*y as f64)),
        (Float(x), Float(y)) => x.partial_cmp(y),
        (Bool(x), Bool(y)) => x.partial_cmp(y),
        (Str(x), Str(y)) => x.partial_cmp(y),
        (Bytes(x), Bytes(y)) => x.partial_cmp(y),
        (List(x), List(y)) | (Tuple(x), Tuple(y)) => {
            for (a, b) in x.iter().zip(y) {
                match py_cmp(a, b)? {
                    std::cmp::Ordering::Equal => continue,
                    o => return Some(o),
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        _ => Option::None,
    }
}

impl Object for List {
    fn exposed(&self) -> &[&'static str] {
        LIST_EXPOSED
    }

    fn call(&self, method: &str, a: Args, _: &Call<'_>) -> Result<Value, Fail> {
        let mut l = lock(&self.0);
        let len = l.len();
        Ok(match method {
            "__len__" => Value::Int(len as i64),
            "__getitem__" => {
                let i = a.required(0, "index")?;
                match slice_of(i, len) {
                    Some(r) => {
                        let (s, e) = r?;
                        Value::List(l[s..e].to_vec())
                    }
                    None => l[index_of(i, len)?].clone(),
                }
            }
            "__setitem__" => {
                let i = a.required(0, "index")?;
                let v = a.required(1, "value")?.clone();
                match slice_of(i, len) {
                    Some(r) => {
                        let (s, e) = r?;
                        l.splice(s..e, items_of(&v)?);
                    }
                    None => {
                        let i = index_of(i, len)?;
                        l[i] = v;
                    }
                }
                Value::None
            }
            "__delitem__" => {
                let i = a.required(0, "index")?;
                match slice_of(i, len) {
                    Some(r) => {
                        let (s, e) = r?;
                        l.drain(s..e);
                    }
                    None => {
                        l.remove(index_of(i, len)?);
                    }
                }
                Value::None
            }
            "__contains__" => Value::Bool(l.iter().any(|x| py_eq(x, &a.args[0]))),
            "append" => {
                l.push(a.required(0, "object")?.clone());
                Value::None
            }
            "extend" | "__iadd__" => {
                let more = items_of(a.required(0, "iterable")?)?;
                l.extend(more);
                Value::None
            }
            "__add__" => {
                let mut out = l.clone();
                out.extend(items_of(a.required(0, "other")?)?);
                Value::List(out)
            }
            "__mul__" | "__rmul__" => {
                let n = int_arg(a.required(0, "n")?)?.max(0) as usize;
                Value::List(
                    l.iter()
                        .cloned()
                        .cycle()
                        .take(len.saturating_mul(n).min(1 << 28))
                        .collect(),
                )
            }
            "__imul__" => {
                let n = int_arg(a.required(0, "n")?)?.max(0) as usize;
                let out: Vec<Value> = l
                    .iter()
                    .cloned()
                    .cycle()
                    .take(len.saturating_mul(n).min(1 << 28))
                    .collect();
                *l = out;
                Value::None
            }
            "__reversed__" => Value::List(l.iter().rev().cloned().collect()),
            "count" => {
                let v = a.required(0, "value")?;
                Value::Int(l.iter().filter(|x| py_eq(x, v)).count() as i64)
            }
            "index" => {
                let v = a.required(0, "value")?;
                let start = a
                    .get(1, "start")
                    .map(int_arg)
                    .transpose()?
                    .unwrap_or(0)
                    .clamp(0, len as i64) as usize;
                let stop = a
                    .get(2, "stop")
                    .map(int_arg)
                    .transpose()?
                    .unwrap_or(len as i64)
                    .clamp(0, len as i64) as usize;
                let found = l[start..stop.max(start)].iter().position(|x| py_eq(x, v));
                Value::Int(
                    found
                        .map(|i| (i + start) as i64)
                        .ok_or_else(|| Fail::builtin("ValueError", "value is not in list"))?,
                )
            }
            "insert" => {
                let n = int_arg(a.required(0, "index")?)?;
                let i = if n < 0 { n + len as i64 } else { n }.clamp(0, len as i64) as usize;
                l.insert(i, a.required(1, "object")?.clone());
                Value::None
            }
            "pop" => {
                if len == 0 {
                    return Err(Fail::builtin("IndexError", "pop from empty list"));
                }
                let i = match a.get(0, "index") {
                    Some(v) => index_of(v, len)?,
                    None => len - 1,
                };
                l.remove(i)
            }
            "remove" => {
                let v = a.required(0, "value")?;
                let i = l
                    .iter()
                    .position(|x| py_eq(x, v))
                    .ok_or_else(|| Fail::builtin("ValueError", "list.remove(x): x not in list"))?;
                l.remove(i);
                Value::None
            }
            "reverse" => {
                l.reverse();
                Value::None
            }
            "sort" => {
                if a.get(99, "key").is_some_and(|k| *k != Value::None) {
                    return Err(Fail::type_error(
                        "sort(key=...) cannot be sent to a manager",
                    ));
                }
                let mut bad = false;
                l.sort_by(|x, y| {
                    py_cmp(x, y).unwrap_or_else(|| {
                        bad = true;
                        std::cmp::Ordering::Equal
                    })
                });
                if bad {
                    return Err(Fail::type_error("'<' not supported between these items"));
                }
                if a.get(99, "reverse").is_some_and(super::object::truthy) {
                    l.reverse();
                }
                Value::None
            }
            other => return Err(Fail::Traceback(format!("list has no method {other:?}"))),
        })
    }

    fn value(&self) -> Value {
        Value::List(lock(&self.0).clone())
    }

    fn repr(&self) -> String {
        format!("{:?}", lock(&self.0))
    }
}

/// A managed `Namespace`: named attributes.
#[derive(Default)]
pub(crate) struct Namespace(Mutex<PyDict>);

impl Object for Namespace {
    fn exposed(&self) -> &[&'static str] {
        &["__getattribute__", "__setattr__", "__delattr__"]
    }

    fn call(&self, method: &str, a: Args, _: &Call<'_>) -> Result<Value, Fail> {
        let mut d = lock(&self.0);
        let name = a.required(0, "name")?;
        let missing = || Fail::builtin("AttributeError", format!("no attribute {name:?}"));
        match method {
            "__getattribute__" => d.get(name)?.cloned().ok_or_else(missing),
            "__setattr__" => d
                .set(name.clone(), a.required(1, "value")?.clone())
                .map(|()| Value::None),
            "__delattr__" => d.remove(name)?.map(|_| Value::None).ok_or_else(missing),
            other => Err(Fail::Traceback(format!(
                "Namespace has no method {other:?}"
            ))),
        }
    }

    fn value(&self) -> Value {
        lock(&self.0).to_value()
    }
}

/// A managed `Value(typecode, value)`.
pub(crate) struct Cell(Mutex<Value>);

impl Object for Cell {
    fn exposed(&self) -> &[&'static str] {
        &["get", "set"]
    }

    fn call(&self, method: &str, a: Args, _: &Call<'_>) -> Result<Value, Fail> {
        let mut v = lock(&self.0);
        match method {
            "get" => Ok(v.clone()),
            "set" => {
                *v = a.required(0, "value")?.clone();
                Ok(Value::None)
            }
            other => Err(Fail::Traceback(format!("Value has no method {other:?}"))),
        }
    }

    fn value(&self) -> Value {
        lock(&self.0).clone()
    }
}

/// A managed `Array(typecode, sequence)`: fixed length.
pub(crate) struct ArrayObj(Mutex<Vec<Value>>);

impl Object for ArrayObj {
    fn exposed(&self) -> &[&'static str] {
        &["__len__", "__getitem__", "__setitem__"]
    }

    fn call(&self, method: &str, a: Args, _: &Call<'_>) -> Result<Value, Fail> {
        let mut l = lock(&self.0);
        let len = l.len();
        match method {
            "__len__" => Ok(Value::Int(len as i64)),
            "__getitem__" => {
                let i = a.required(0, "index")?;
                match slice_of(i, len) {
                    Some(r) => r.map(|(s, e)| Value::List(l[s..e].to_vec())),
                    None => Ok(l[index_of(i, len)?].clone()),
                }
            }
            "__setitem__" => {
                let i = index_of(a.required(0, "index")?, len)?;
                l[i] = a.required(1, "value")?.clone();
                Ok(Value::None)
            }
            other => Err(Fail::Traceback(format!("Array has no method {other:?}"))),
        }
    }

    fn value(&self) -> Value {
        Value::List(lock(&self.0).clone())
    }
}

/// A new managed `dict`.
pub fn dict() -> Arc<dyn Object> {
    Arc::new(Dict::default())
}

/// A new managed `list`.
pub fn list() -> Arc<dyn Object> {
    Arc::new(List::default())
}

/// A new empty managed `set`.
pub fn set() -> Arc<dyn Object> {
    Arc::new(SetObj::default())
}

/// A new managed queue (`maxsize` 0: unbounded), joinable.
pub fn queue(maxsize: usize) -> Arc<dyn Object> {
    Arc::new(sync_objects::QueueObj::new(maxsize))
}

fn factory<F>(f: F) -> Arc<Factory>
where
    F: Fn(Args) -> Result<Arc<dyn Object>, Fail> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The type ids of Python's `SyncManager` and their constructors.
pub(crate) fn sync_types() -> Vec<(&'static str, Arc<Factory>)> {
    vec![
        (
            "dict",
            factory(|a| {
                let d = Dict::default();
                if let Some(v) = a.args.into_iter().next() {
                    lock(&d.0).update_from(v)?;
                }
                for (k, v) in a.kwds {
                    lock(&d.0).set(k, v)?;
                }
                Ok(Arc::new(d))
            }),
        ),
        (
            "list",
            factory(|a| {
                let items = a
                    .args
                    .first()
                    .map(items_of)
                    .transpose()?
                    .unwrap_or_default();
                Ok(Arc::new(List(Mutex::new(items))))
            }),
        ),
        (
            "Namespace",
            factory(|a| {
                let ns = Namespace::default();
                for (k, v) in a.kwds {
                    lock(&ns.0).set(k, v)?;
                }
                Ok(Arc::new(ns))
            }),
        ),
        (
            "Value",
            factory(|a| {
                Ok(Arc::new(Cell(Mutex::new(
                    a.get(1, "value").cloned().unwrap_or(Value::None),
                ))))
            }),
        ),
        (
            "Array",
            factory(|a| {
                let items = match a.required(1, "sequence")? {
                    Value::Int(n) => vec![Value::Int(0); (*n).clamp(0, 1 << 24) as usize],
                    v => items_of(v)?,
                };
                Ok(Arc::new(ArrayObj(Mutex::new(items))))
            }),
        ),
        (
            "Queue",
            factory(|a| {
                let n = a.get(0, "maxsize").map(int_arg).transpose()?.unwrap_or(0);
                Ok(queue(n.max(0) as usize))
            }),
        ),
        (
            "set",
            factory(|a| Ok(Arc::new(SetObj::from_items(a.get(0, "iterable"))?))),
        ),
        (
            "Iterator",
            factory(|a| Ok(Arc::new(IterObj::new(a.args.first())?))),
        ),
        (
            "JoinableQueue",
            factory(|a| {
                let n = a.get(0, "maxsize").map(int_arg).transpose()?.unwrap_or(0);
                Ok(queue(n.max(0) as usize))
            }),
        ),
    ]
    .into_iter()
    .chain(sync_objects::sync_types())
    .collect()
}
