//! Typed proxies for the managed `set` (Python 3.14's `SetProxy`) and for
//! the iterators that `__iter__` answers with (`IteratorProxy`).

use super::proxies::{DictProxy, Proxy, proxy_type};
use super::proxy::{BaseProxy, arg};
use crate::error::{Error, Result};
use crate::pickle::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

proxy_type!(
    /// A managed `set` of `T` (Python 3.14's `SetProxy`). Items are plain
    /// hashable values under Python's equality (`1 == 1.0`); the order is
    /// the order of insertion.
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let s = m.set::<i32>()?;
    /// s.update([1, 2, 3])?;
    /// s.add(2)?;
    /// assert_eq!(s.len()?, 3);
    /// assert!(s.contains(&3)?);
    /// assert_eq!(s.intersection([2, 3, 4])?, [2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    SetProxy<T>, "set"
);

fn items<T: Serialize>(items: impl IntoIterator<Item = T>) -> Result<Value> {
    Ok(Value::List(
        items
            .into_iter()
            .map(|i| arg(&i))
            .collect::<Result<Vec<_>>>()?,
    ))
}

impl<T: Serialize + DeserializeOwned> SetProxy<T> {
    /// `s.add(item)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`] (`TypeError` for an unhashable item).
    pub fn add(&self, item: T) -> Result<()> {
        self.base().call("add", vec![arg(&item)?])
    }

    /// `s.discard(item)`: removes it if present.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn discard(&self, item: &T) -> Result<()> {
        self.base().call("discard", vec![arg(item)?])
    }

    /// `s.remove(item)`; `false` when it was absent.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn remove(&self, item: &T) -> Result<bool> {
        match self.base().call::<()>("remove", vec![arg(item)?]) {
            Ok(()) => Ok(true),
            Err(Error::Remote { kind, .. }) if kind == "KeyError" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `item in s`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn contains(&self, item: &T) -> Result<bool> {
        self.base().call("__contains__", vec![arg(item)?])
    }

    /// `len(s)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn len(&self) -> Result<usize> {
        self.base().call("__len__", vec![])
    }

    /// `len(s) == 0`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `s.pop()`, or `None` when empty.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn pop(&self) -> Result<Option<T>> {
        match self.base().call("pop", vec![]) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Remote { kind, .. }) if kind == "KeyError" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `s.clear()`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn clear(&self) -> Result<()> {
        self.base().call("clear", vec![])
    }

    /// `s.copy()`: the items.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.base().call("copy", vec![])
    }

    /// `s.update(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn update(&self, items_: impl IntoIterator<Item = T>) -> Result<()> {
        self.base().call("update", vec![items(items_)?])
    }

    /// `s.difference_update(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn difference_update(&self, items_: impl IntoIterator<Item = T>) -> Result<()> {
        self.base().call("difference_update", vec![items(items_)?])
    }

    /// `s.intersection_update(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn intersection_update(&self, items_: impl IntoIterator<Item = T>) -> Result<()> {
        self.base()
            .call("intersection_update", vec![items(items_)?])
    }

    /// `s.symmetric_difference_update(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn symmetric_difference_update(&self, items_: impl IntoIterator<Item = T>) -> Result<()> {
        self.base()
            .call("symmetric_difference_update", vec![items(items_)?])
    }

    /// `s.union(items)`, leaving `s` as it is.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn union(&self, items_: impl IntoIterator<Item = T>) -> Result<Vec<T>> {
        self.base().call("union", vec![items(items_)?])
    }

    /// `s.intersection(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn intersection(&self, items_: impl IntoIterator<Item = T>) -> Result<Vec<T>> {
        self.base().call("intersection", vec![items(items_)?])
    }

    /// `s.difference(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn difference(&self, items_: impl IntoIterator<Item = T>) -> Result<Vec<T>> {
        self.base().call("difference", vec![items(items_)?])
    }

    /// `s.symmetric_difference(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn symmetric_difference(&self, items_: impl IntoIterator<Item = T>) -> Result<Vec<T>> {
        self.base()
            .call("symmetric_difference", vec![items(items_)?])
    }

    /// `s.isdisjoint(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn isdisjoint(&self, items_: impl IntoIterator<Item = T>) -> Result<bool> {
        self.base().call("isdisjoint", vec![items(items_)?])
    }

    /// `s.issubset(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn issubset(&self, items_: impl IntoIterator<Item = T>) -> Result<bool> {
        self.base().call("issubset", vec![items(items_)?])
    }

    /// `s.issuperset(items)`.
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn issuperset(&self, items_: impl IntoIterator<Item = T>) -> Result<bool> {
        self.base().call("issuperset", vec![items(items_)?])
    }

    /// `iter(s)`: an iterator in the manager over the items as they are
    /// now.
    ///
    /// # Errors
    /// As for [`BaseProxy::call_proxy`].
    pub fn iter(&self) -> Result<IteratorProxy<T>> {
        self.base().call_proxy("__iter__", vec![])
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// `iter(d)`: an iterator in the manager over the keys as they are now
    /// (Python's `for k in d`, a `#PROXY` reply).
    ///
    /// # Errors
    /// As for [`BaseProxy::call_proxy`].
    ///
    /// # Examples
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, i32>()?;
    /// d.set("a".into(), 1)?;
    /// d.set("b".into(), 2)?;
    /// let keys = d.iter()?.collect::<multiproc::Result<Vec<_>>>()?;
    /// assert_eq!(keys, ["a", "b"]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn iter(&self) -> Result<IteratorProxy<K>> {
        self.base().call_proxy("__iter__", vec![])
    }
}

proxy_type!(
    /// An iterator living in a manager (Python's `IteratorProxy`), as a
    /// `dict`'s or `set`'s `__iter__` answers. It is an [`Iterator`] of
    /// `Result<T>`: each step is one call.
    IteratorProxy<T>, "Iterator"
);

impl<T: DeserializeOwned> IteratorProxy<T> {
    /// `next(it)`, or `None` when it is exhausted (`StopIteration`).
    ///
    /// # Errors
    /// As for [`BaseProxy::call`].
    pub fn next_item(&self) -> Result<Option<T>> {
        match self.base().call("__next__", vec![]) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Remote { kind, .. }) if kind == "StopIteration" => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl<T: DeserializeOwned> Iterator for IteratorProxy<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        self.next_item().transpose()
    }
}
