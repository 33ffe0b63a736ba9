//! Typed proxies for the containers: `dict`, `list`, `Value`, `Array`,
//! `Namespace`.

use super::proxy::{BaseProxy, arg};
use crate::error::{Error, Result};
use crate::pickle::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed proxy: a [`BaseProxy`] with methods.
pub trait Proxy: Sized {
    /// The type id a [`Manager`](super::Manager) creates it with (e.g. `"dict"`).
    const TYPEID: &'static str;
    /// Wraps an untyped proxy.
    fn from_base(base: BaseProxy) -> Self;
    /// The untyped proxy.
    fn base(&self) -> &BaseProxy;
}

macro_rules! proxy_type {
    ($(#[$m:meta])* $name:ident <$($t:ident),*>, $typeid:expr) => {
        $(#[$m])*
        pub struct $name<$($t = Value),*> {
            base: BaseProxy,
            _t: std::marker::PhantomData<fn() -> ($($t,)*)>,
        }

        impl<$($t),*> Proxy for $name<$($t),*> {
            const TYPEID: &'static str = $typeid;
            fn from_base(base: BaseProxy) -> Self {
                $name { base, _t: std::marker::PhantomData }
            }
            fn base(&self) -> &BaseProxy {
                &self.base
            }
        }

        impl<$($t),*> Clone for $name<$($t),*> {
            /// A new proxy with its own reference and connection.
            ///
            /// # Panics
            /// When the manager cannot be reached.
            fn clone(&self) -> Self {
                Self::from_base(self.base.clone())
            }
        }

        impl<$($t),*> std::fmt::Debug for $name<$($t),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.base.fmt(f)
            }
        }

        impl<$($t),*> serde::Serialize for $name<$($t),*> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.base.serialize(s)
            }
        }

        impl<'de, $($t),*> serde::Deserialize<'de> for $name<$($t),*> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                BaseProxy::deserialize(d).map(Self::from_base)
            }
        }
    };
    ($(#[$m:meta])* $name:ident, $typeid:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            base: BaseProxy,
        }

        impl Proxy for $name {
            const TYPEID: &'static str = $typeid;
            fn from_base(base: BaseProxy) -> Self {
                $name { base }
            }
            fn base(&self) -> &BaseProxy {
                &self.base
            }
        }
    };
}
pub(crate) use proxy_type;

/// True for a `KeyError` from the manager.
fn is_key_error(e: &Error) -> bool {
    matches!(e, Error::Remote { kind, .. } if kind == "KeyError")
}

proxy_type!(
    /// A managed `dict` with keys `K` and values `V` (Python's `DictProxy`).
    ///
    /// Keys and values travel as plain Python values (see
    /// [`to_value`](super::to_value)), so a Python client sees an ordinary
    /// `dict`.
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, i64>()?;
    /// d.set("a".to_string(), 1)?;
    /// assert_eq!(d.get(&"a".to_string())?, Some(1));
    /// assert_eq!(d.len()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    DictProxy<K, V>, "dict"
);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// `d[key]`, or `None` when the key is missing.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        match self.base.call("__getitem__", vec![arg(key)?]) {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_key_error(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `d[key]` for many keys, with the requests in flight together
    /// ([`BaseProxy::call_pipelined`]).
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn get_many<'k>(&self, keys: impl IntoIterator<Item = &'k K>) -> Result<Vec<Option<V>>>
    where
        K: 'k,
    {
        let calls = keys
            .into_iter()
            .map(|k| Ok(("__getitem__", vec![arg(k)?])))
            .collect::<Result<Vec<_>>>()?;
        self.base
            .call_pipelined(calls)?
            .into_iter()
            .map(|r| match r {
                Ok(v) => super::from_value(v).map(Some),
                Err(e) if is_key_error(&e) => Ok(None),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// `d[key] = value` for many pairs, with the requests in flight
    /// together ([`BaseProxy::call_pipelined`]); unlike
    /// [`update`](Self::update), each pair is its own `__setitem__` call.
    ///
    /// # Errors
    /// The first error of any call (the others still happened).
    pub fn set_many(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let calls = pairs
            .into_iter()
            .map(|(k, v)| Ok(("__setitem__", vec![arg(&k)?, arg(&v)?])))
            .collect::<Result<Vec<_>>>()?;
        for r in self.base.call_pipelined(calls)? {
            r?;
        }
        Ok(())
    }

    /// `d[key] = value`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn set(&self, key: K, value: V) -> Result<()> {
        self.base
            .call("__setitem__", vec![arg(&key)?, arg(&value)?])
    }

    /// `del d[key]`; `false` when the key was missing.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn del(&self, key: &K) -> Result<bool> {
        match self.base.call::<()>("__delitem__", vec![arg(key)?]) {
            Ok(()) => Ok(true),
            Err(e) if is_key_error(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `key in d`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn contains(&self, key: &K) -> Result<bool> {
        self.base.call("__contains__", vec![arg(key)?])
    }

    /// `len(d)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn len(&self) -> Result<usize> {
        self.base.call("__len__", vec![])
    }

    /// `len(d) == 0`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `list(d.keys())`, in insertion order.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn keys(&self) -> Result<Vec<K>> {
        self.base.call("keys", vec![])
    }

    /// `list(d.values())`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn values(&self) -> Result<Vec<V>> {
        self.base.call("values", vec![])
    }

    /// `list(d.items())`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.base.call("items", vec![])
    }

    /// `d.update(pairs)`: many keys in one round trip.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn update(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        // Sent as a dict (one pair after another, no tuple per pair); a
        // key given twice ends with its last value, as with pairs.
        let items = pairs
            .into_iter()
            .map(|(k, v)| Ok((arg(&k)?, arg(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.base.call("update", vec![Value::Dict(items)])
    }

    /// `d.pop(key)`, or `None` when the key is missing.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn pop(&self, key: &K) -> Result<Option<V>> {
        match self.base.call("pop", vec![arg(key)?]) {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_key_error(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `d.popitem()` (the last inserted), or `None` when empty.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn popitem(&self) -> Result<Option<(K, V)>> {
        match self.base.call("popitem", vec![]) {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_key_error(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `d.setdefault(key, default)`: the value, inserting `default` first
    /// when the key is missing.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn setdefault(&self, key: K, default: V) -> Result<V> {
        self.base
            .call("setdefault", vec![arg(&key)?, arg(&default)?])
    }

    /// `d.clear()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn clear(&self) -> Result<()> {
        self.base.call("clear", vec![])
    }

    /// `d.copy()`: the pairs, in insertion order.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn copy(&self) -> Result<Vec<(K, V)>> {
        let v = self.base.call_method("copy", vec![])?;
        let Value::Dict(items) = v else {
            return Err(Error::Decode("copy() did not return a dict".into()));
        };
        items
            .into_iter()
            .map(|(k, v)| Ok((super::from_value(k)?, super::from_value(v)?)))
            .collect()
    }
}

proxy_type!(
    /// A managed `list` of `T` (Python's `ListProxy`).
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<i32>()?;
    /// l.extend([3, 1, 2])?;
    /// l.sort()?;
    /// assert_eq!(l.to_vec()?, [1, 2, 3]);
    /// assert_eq!(l.slice(1, 3)?, [2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ListProxy<T>, "list"
);

fn slice(start: isize, end: isize) -> Value {
    Value::call(
        "builtins",
        "slice",
        vec![
            Value::Int(start as i64),
            Value::Int(end as i64),
            Value::None,
        ],
    )
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// `l.append(item)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn append(&self, item: T) -> Result<()> {
        self.base.call("append", vec![arg(&item)?])
    }

    /// `l.extend(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let v = items
            .into_iter()
            .map(|i| arg(&i))
            .collect::<Result<Vec<_>>>()?;
        self.base.call("extend", vec![Value::List(v)])
    }

    /// `l[index]` (negative counts from the end).
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError` out of range; as for [`BaseProxy::call`].
    pub fn get(&self, index: isize) -> Result<T> {
        self.base
            .call("__getitem__", vec![Value::Int(index as i64)])
    }

    /// `l[index] = item`.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub fn set(&self, index: isize, item: T) -> Result<()> {
        self.base
            .call("__setitem__", vec![Value::Int(index as i64), arg(&item)?])
    }

    /// `del l[index]`.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub fn del(&self, index: isize) -> Result<()> {
        self.base
            .call("__delitem__", vec![Value::Int(index as i64)])
    }

    /// `l[start:end]`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn slice(&self, start: isize, end: isize) -> Result<Vec<T>> {
        self.base.call("__getitem__", vec![slice(start, end)])
    }

    /// `l[start:end] = items`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn set_slice(
        &self,
        start: isize,
        end: isize,
        items: impl IntoIterator<Item = T>,
    ) -> Result<()> {
        let v = items
            .into_iter()
            .map(|i| arg(&i))
            .collect::<Result<Vec<_>>>()?;
        self.base
            .call("__setitem__", vec![slice(start, end), Value::List(v)])
    }

    /// `del l[start:end]`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn del_slice(&self, start: isize, end: isize) -> Result<()> {
        self.base.call("__delitem__", vec![slice(start, end)])
    }

    /// `len(l)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn len(&self) -> Result<usize> {
        self.base.call("__len__", vec![])
    }

    /// `len(l) == 0`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `item in l`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn contains(&self, item: &T) -> Result<bool> {
        self.base.call("__contains__", vec![arg(item)?])
    }

    /// `l.count(item)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn count(&self, item: &T) -> Result<usize> {
        self.base.call("count", vec![arg(item)?])
    }

    /// `l.index(item)`, or `None` when absent.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn index(&self, item: &T) -> Result<Option<usize>> {
        match self.base.call("index", vec![arg(item)?]) {
            Ok(i) => Ok(Some(i)),
            Err(Error::Remote { kind, .. }) if kind == "ValueError" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `l.insert(index, item)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn insert(&self, index: isize, item: T) -> Result<()> {
        self.base
            .call("insert", vec![Value::Int(index as i64), arg(&item)?])
    }

    /// `l.pop()`, or `None` when empty.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn pop(&self) -> Result<Option<T>> {
        match self.base.call("pop", vec![]) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Remote { kind, .. }) if kind == "IndexError" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `l.pop(index)`.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub fn pop_at(&self, index: isize) -> Result<T> {
        self.base.call("pop", vec![Value::Int(index as i64)])
    }

    /// `l.remove(item)`; `false` when absent.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn remove(&self, item: &T) -> Result<bool> {
        match self.base.call::<()>("remove", vec![arg(item)?]) {
            Ok(()) => Ok(true),
            Err(Error::Remote { kind, .. }) if kind == "ValueError" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `l.reverse()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn reverse(&self) -> Result<()> {
        self.base.call("reverse", vec![])
    }

    /// `l.sort()` (Python's ordering of numbers, strings, bytes, tuples).
    ///
    /// # Errors
    /// [`Error::Remote`] `TypeError` for items that do not compare.
    pub fn sort(&self) -> Result<()> {
        self.base.call("sort", vec![])
    }

    /// The whole list (`l[:]`).
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.base.call("__getitem__", vec![slice(0, isize::MAX)])
    }
}

proxy_type!(
    /// A managed `Value` holding a `T` (Python's `ValueProxy`).
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let v = m.value(1.5f64)?;
    /// v.set(2.5)?;
    /// assert_eq!(v.get()?, 2.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ValueProxy<T>, "Value"
);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// `v.value`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn get(&self) -> Result<T> {
        self.base.call("get", vec![])
    }

    /// `v.value = value`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn set(&self, value: T) -> Result<()> {
        self.base.call("set", vec![arg(&value)?])
    }
}

proxy_type!(
    /// A managed fixed-length `Array` of `T` (Python's `ArrayProxy`).
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let a = m.array("i", vec![0i32; 4])?;
    /// a.set(2, 7)?;
    /// assert_eq!(a.to_vec()?, [0, 0, 7, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ArrayProxy<T>, "Array"
);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// `a[index]`.
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError` out of range.
    pub fn get(&self, index: isize) -> Result<T> {
        self.base
            .call("__getitem__", vec![Value::Int(index as i64)])
    }

    /// `a[index] = value`.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub fn set(&self, index: isize, value: T) -> Result<()> {
        self.base
            .call("__setitem__", vec![Value::Int(index as i64), arg(&value)?])
    }

    /// `len(a)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn len(&self) -> Result<usize> {
        self.base.call("__len__", vec![])
    }

    /// `len(a) == 0`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `a[:]`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.base.call("__getitem__", vec![slice(0, isize::MAX)])
    }
}

proxy_type!(
    /// A managed `Namespace`: attributes of any plain type (Python's
    /// `NamespaceProxy`).
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("x", 5)?;
    /// assert_eq!(ns.get::<i32>("x")?, Some(5));
    /// assert_eq!(ns.get::<i32>("y")?, None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    NamespaceProxy, "Namespace"
);

impl NamespaceProxy {
    /// `ns.name`, or `None` when it is not set.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.base.call("__getattribute__", vec![Value::from(name)]) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Remote { kind, .. }) if kind == "AttributeError" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ns.name = value`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn set<T: Serialize>(&self, name: &str, value: T) -> Result<()> {
        self.base
            .call("__setattr__", vec![Value::from(name), arg(&value)?])
    }

    /// `del ns.name`; `false` when it was not set.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn del(&self, name: &str) -> Result<bool> {
        match self.base.call::<()>("__delattr__", vec![Value::from(name)]) {
            Ok(()) => Ok(true),
            Err(Error::Remote { kind, .. }) if kind == "AttributeError" => Ok(false),
            Err(e) => Err(e),
        }
    }
}
