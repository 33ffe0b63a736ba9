//! The managed `dict`: an insertion-ordered map of plain values under
//! Python's key equality (`1 == 1.0 == True`).

use super::object::{Args, Call, Object};
use super::wire::Fail;
use crate::pickle::{self, Value};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The hash key of a value under Python's equality (`1 == 1.0 == True`);
/// `None` for unhashable values (lists, dicts).
fn key_of(v: &Value) -> Option<Vec<u8>> {
    fn canon(v: &Value) -> Option<Value> {
        Some(match v {
            Value::Bool(b) => Value::Int(i64::from(*b)),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Value::Int(*f as i64),
            Value::Tuple(t) => Value::Tuple(t.iter().map(canon).collect::<Option<_>>()?),
            Value::List(_) | Value::Dict(_) => return None,
            other => other.clone(),
        })
    }
    canon(v).map(|c| pickle::dumps(&c))
}

/// Python's `==` between plain values.
pub(crate) fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| py_eq(a, b))
        }
        (Value::Dict(x), Value::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| py_eq(k, k2) && py_eq(v, v2)))
        }
        _ => match (key_of(a), key_of(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn unhashable(v: &Value) -> Fail {
    Fail::type_error(format!("unhashable type: {v:?}"))
}

/// An insertion-ordered dict of plain values.
#[derive(Default)]
pub(crate) struct PyDict {
    entries: Vec<(Value, Value)>,
    index: HashMap<Vec<u8>, usize>,
}

impl PyDict {
    pub(crate) fn get(&self, k: &Value) -> Result<Option<&Value>, Fail> {
        let key = key_of(k).ok_or_else(|| unhashable(k))?;
        Ok(self.index.get(&key).map(|&i| &self.entries[i].1))
    }

    pub(crate) fn set(&mut self, k: Value, v: Value) -> Result<(), Fail> {
        let key = key_of(&k).ok_or_else(|| unhashable(&k))?;
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = v,
            None => {
                self.index.insert(key, self.entries.len());
                self.entries.push((k, v));
            }
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, k: &Value) -> Result<Option<Value>, Fail> {
        let key = key_of(k).ok_or_else(|| unhashable(k))?;
        let Some(i) = self.index.remove(&key) else {
            return Ok(None);
        };
        let (_, v) = self.entries.remove(i);
        for idx in self.index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        Ok(Some(v))
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
    }

    pub(crate) fn to_value(&self) -> Value {
        Value::Dict(self.entries.clone())
    }

    pub(crate) fn update_from(&mut self, v: &Value) -> Result<(), Fail> {
        match v {
            Value::Dict(items) => {
                for (k, v) in items {
                    self.set(k.clone(), v.clone())?;
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                for item in items {
                    match item {
                        Value::List(kv) | Value::Tuple(kv) if kv.len() == 2 => {
                            self.set(kv[0].clone(), kv[1].clone())?
                        }
                        _ => return Err(Fail::type_error("update needs (key, value) pairs")),
                    }
                }
            }
            Value::None => {}
            _ => {
                return Err(Fail::type_error(
                    "update needs a dict or (key, value) pairs",
                ));
            }
        }
        Ok(())
    }
}

/// A managed `dict`.
#[derive(Default)]
pub(crate) struct Dict(pub(crate) Mutex<PyDict>);

const DICT_EXPOSED: &[&str] = &[
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__iter__",
    "__len__",
    "__setitem__",
    "clear",
    "copy",
    "get",
    "items",
    "keys",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "values",
];

impl Object for Dict {
    fn exposed(&self) -> &[&'static str] {
        DICT_EXPOSED
    }

    fn call(&self, method: &str, a: Args, _: &Call<'_>) -> Result<Value, Fail> {
        let mut d = lock(&self.0);
        let key = || a.required(0, "key");
        Ok(match method {
            "__getitem__" => {
                let k = key()?;
                d.get(k)?
                    .cloned()
                    .ok_or_else(|| Fail::key_error(k.clone()))?
            }
            "get" => d
                .get(key()?)?
                .cloned()
                .unwrap_or_else(|| a.get(1, "default").cloned().unwrap_or(Value::None)),
            "__setitem__" => {
                d.set(key()?.clone(), a.required(1, "value")?.clone())?;
                Value::None
            }
            "__delitem__" => {
                let k = key()?;
                d.remove(k)?.ok_or_else(|| Fail::key_error(k.clone()))?;
                Value::None
            }
            "__contains__" => Value::Bool(d.get(key()?)?.is_some()),
            "__len__" => Value::Int(d.entries.len() as i64),
            "keys" | "__iter__" => Value::List(d.entries.iter().map(|e| e.0.clone()).collect()),
            "values" => Value::List(d.entries.iter().map(|e| e.1.clone()).collect()),
            "items" => Value::List(
                d.entries
                    .iter()
                    .map(|(k, v)| Value::Tuple(vec![k.clone(), v.clone()]))
                    .collect(),
            ),
            "clear" => {
                d.clear();
                Value::None
            }
            "copy" => d.to_value(),
            "pop" => {
                let k = key()?;
                match d.remove(k)? {
                    Some(v) => v,
                    None => a
                        .get(1, "default")
                        .cloned()
                        .ok_or_else(|| Fail::key_error(k.clone()))?,
                }
            }
            "popitem" => {
                let (k, _) = d.entries.last().cloned().ok_or_else(|| {
                    Fail::key_error(Value::from("popitem(): dictionary is empty"))
                })?;
                let v = d.remove(&k)?.expect("present");
                Value::Tuple(vec![k, v])
            }
            "setdefault" => {
                let k = key()?;
                match d.get(k)? {
                    Some(v) => v.clone(),
                    None => {
                        let v = a.get(1, "default").cloned().unwrap_or(Value::None);
                        d.set(k.clone(), v.clone())?;
                        v
                    }
                }
            }
            "update" => {
                if let Some(v) = a.args.first() {
                    d.update_from(v)?;
                }
                for (k, v) in &a.kwds {
                    d.set(k.clone(), v.clone())?;
                }
                Value::None
            }
            other => return Err(Fail::Traceback(format!("dict has no method {other:?}"))),
        })
    }

    fn value(&self) -> Value {
        lock(&self.0).to_value()
    }

    fn repr(&self) -> String {
        format!("{:?}", lock(&self.0).to_value())
    }
}
