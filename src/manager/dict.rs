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

/// Writes the canonical bytes of a value under Python's equality
/// (`1 == 1.0 == True`) to `out`; false for unhashable values (lists,
/// dicts).
fn key_into(v: &Value, out: &mut Vec<u8>) -> bool {
    let int = |out: &mut Vec<u8>, n: i64| {
        out.push(1);
        out.extend_from_slice(&n.to_le_bytes());
    };
    let sized = |out: &mut Vec<u8>, tag: u8, b: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    };
    match v {
        Value::None => out.push(0),
        Value::Bool(b) => int(out, i64::from(*b)),
        Value::Int(n) => int(out, *n),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => int(out, *f as i64),
        Value::Float(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => sized(out, 3, s.as_bytes()),
        Value::Bytes(b) => sized(out, 4, b),
        Value::Tuple(t) => {
            out.push(5);
            out.extend_from_slice(&(t.len() as u64).to_le_bytes());
            return t.iter().all(|x| key_into(x, out));
        }
        Value::List(_) | Value::Dict(_) => return false,
        other => sized(out, 6, &pickle::dumps(other)),
    }
    true
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with the canonical key bytes of `v` (no allocation once the
/// thread's scratch buffer has grown); `None` for unhashable values.
fn with_key<R>(v: &Value, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    SCRATCH.with(|s| {
        let mut buf = s.borrow_mut();
        buf.clear();
        let ok = key_into(v, &mut buf);
        let r = ok.then(|| f(&buf));
        if buf.capacity() > 1 << 16 {
            *buf = Vec::new();
        }
        r
    })
}

fn key_of(v: &Value) -> Option<Vec<u8>> {
    with_key(v, <[u8]>::to_vec)
}

/// A multiply-rotate hasher (as rustc's FxHash) with a per-dict random
/// seed: the keys are canonical bytes from authenticated clients.
#[derive(Clone, Copy)]
struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Self {
        use std::hash::BuildHasher;
        Seeded(std::collections::hash_map::RandomState::new().hash_one(0u8) | 1)
    }
}

struct Fx(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl std::hash::BuildHasher for Seeded {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(self.0)
    }
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
    index: HashMap<Box<[u8]>, usize, Seeded>,
}

impl PyDict {
    pub(crate) fn get(&self, k: &Value) -> Result<Option<&Value>, Fail> {
        let found = with_key(k, |key| self.index.get(key).copied()).ok_or_else(|| unhashable(k))?;
        Ok(found.map(|i| &self.entries[i].1))
    }

    pub(crate) fn set(&mut self, k: Value, v: Value) -> Result<(), Fail> {
        let next = self.entries.len();
        let index = &mut self.index;
        let slot = with_key(&k, |key| match index.get(key) {
            Some(&i) => i,
            None => {
                index.insert(key.into(), next);
                next
            }
        })
        .ok_or_else(|| unhashable(&k))?;
        if slot == next {
            self.entries.push((k, v));
        } else {
            self.entries[slot].1 = v;
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, k: &Value) -> Result<Option<Value>, Fail> {
        let index = &mut self.index;
        let Some(i) = with_key(k, |key| index.remove(key)).ok_or_else(|| unhashable(k))? else {
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

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
    }

    /// The keys, in insertion order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Value> {
        self.entries.iter().map(|e| &e.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Removes and returns the last inserted key.
    pub(crate) fn pop_last(&mut self) -> Option<Value> {
        let (k, _) = self.entries.last()?.clone();
        self.remove(&k).ok()?;
        Some(k)
    }

    pub(crate) fn to_value(&self) -> Value {
        Value::Dict(self.entries.clone())
    }

    /// `update(v)`: `v` a dict or a sequence of `(key, value)` pairs,
    /// whose keys and values are moved in (no copies).
    pub(crate) fn update_from(&mut self, v: Value) -> Result<(), Fail> {
        match v {
            Value::Dict(items) => {
                self.reserve(items.len());
                for (k, v) in items {
                    self.set(k, v)?;
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                self.reserve(items.len());
                for item in items {
                    match item {
                        Value::List(kv) | Value::Tuple(kv) if kv.len() == 2 => {
                            let mut kv = kv.into_iter();
                            let (k, v) = (kv.next().expect("two"), kv.next().expect("two"));
                            self.set(k, v)?
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

    /// Room for `n` more keys (at most a million at a time: the pairs
    /// may repeat keys).
    fn reserve(&mut self, n: usize) {
        let n = n.min(1 << 20);
        self.entries.reserve(n);
        self.index.reserve(n);
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
        if method == "update" {
            // The arguments are moved in.
            if let Some(v) = a.args.into_iter().next() {
                d.update_from(v)?;
            }
            for (k, v) in a.kwds {
                d.set(k, v)?;
            }
            return Ok(Value::None);
        }
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
            other => return Err(Fail::Traceback(format!("dict has no method {other:?}"))),
        })
    }

    fn method_to_typeid(&self, method: &str) -> Option<&'static str> {
        (method == "__iter__").then_some("Iterator")
    }

    fn value(&self) -> Value {
        lock(&self.0).to_value()
    }

    fn repr(&self) -> String {
        format!("{:?}", lock(&self.0).to_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_python_equality() {
        let mut d = PyDict::default();
        d.set(Value::Int(1), Value::from("int")).unwrap();
        d.set(Value::Float(1.0), Value::from("float")).unwrap();
        d.set(Value::Bool(true), Value::from("bool")).unwrap();
        assert_eq!(d.entries.len(), 1, "1, 1.0 and True are one key");
        assert_eq!(d.get(&Value::Int(1)).unwrap(), Some(&Value::from("bool")));
        let t = Value::Tuple(vec![Value::from("a"), Value::Int(2)]);
        d.set(t.clone(), Value::None).unwrap();
        d.set(Value::from("x"), Value::Int(0)).unwrap();
        assert!(
            d.get(&Value::Tuple(vec![Value::from("a"), Value::Float(2.0)]))
                .unwrap()
                .is_some()
        );
        assert!(d.set(Value::List(vec![]), Value::None).is_err());
        assert_eq!(d.remove(&t).unwrap(), Some(Value::None));
        // Indices after the removed entry moved down.
        assert_eq!(d.get(&Value::from("x")).unwrap(), Some(&Value::Int(0)));
        assert_eq!(d.remove(&t).unwrap(), None);
        assert!(py_eq(&Value::Int(3), &Value::Float(3.0)));
        assert!(!py_eq(&Value::from("3"), &Value::Int(3)));
    }
}
