//! Manager-style shared state as Redis data structures: a dict is a hash,
//! a list is a list, a value is a string, a namespace is a hash of named
//! fields. Keys and values are encoded with the crate's codec, so any
//! serde type works and a planted entry can only fail to decode.
//!
//! Each call is one Redis command (atomic on its own); a read-modify-write
//! across calls needs a [`RedisLock`](super::RedisLock).

use super::{Backend, Conn};
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Mutex;

fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    crate::codec::encode_into(v, &mut buf, &mut fds)?;
    if !fds.is_empty() {
        return Err(Error::Encode("Redis state cannot hold OS handles".into()));
    }
    Ok(buf)
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    crate::codec::decode(b, Vec::new())
}

fn run<R>(
    conn: &Mutex<Conn>,
    f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
) -> Result<R> {
    conn.lock().unwrap_or_else(|p| p.into_inner()).run(f)
}

/// Marks the key and value types without owning either.
type Pair<K, V> = fn(K, V) -> (K, V);

/// A dict shared through Redis (a hash), with the method names of Python's
/// `dict`.
///
/// # Examples
/// ```no_run
/// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let d = b.dict::<String, u32>("ages")?;
/// d.set(&"ann".to_string(), &31)?;
/// assert_eq!(d.get(&"ann".to_string())?, Some(31));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisDict<K, V> {
    key: String,
    conn: Mutex<Conn>,
    _t: PhantomData<Pair<K, V>>,
}

/// A list shared through Redis, with the method names of Python's `list`.
///
/// # Examples
/// ```no_run
/// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let l = b.list::<u32>("log")?;
/// l.append(&1)?;
/// assert_eq!(l.len()?, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisList<T> {
    key: String,
    conn: Mutex<Conn>,
    _t: PhantomData<fn(T) -> T>,
}

/// One value shared through Redis, like a Manager's `Value`.
///
/// # Examples
/// ```no_run
/// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let v = b.value("answer", &0u64)?;
/// v.set(&42)?;
/// assert_eq!(v.get()?, 42);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisValue<T> {
    key: String,
    conn: Mutex<Conn>,
    _t: PhantomData<fn(T) -> T>,
}

/// Named attributes shared through Redis, like a Manager's `Namespace`.
///
/// # Examples
/// ```no_run
/// let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
/// let ns = b.namespace("config")?;
/// ns.setattr("workers", &4u32)?;
/// assert_eq!(ns.getattr::<u32>("workers")?, Some(4));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RedisNamespace {
    key: String,
    conn: Mutex<Conn>,
}

impl Backend {
    /// Opens the dict `name`.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for checks.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let d = b.dict::<u8, u8>("d")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dict<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<RedisDict<K, V>> {
        Ok(RedisDict {
            key: self.key("dict", name),
            conn: Mutex::new(self.conn()),
            _t: PhantomData,
        })
    }

    /// Opens the list `name`.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for checks.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let l = b.list::<u8>("l")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn list<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<RedisList<T>> {
        Ok(RedisList {
            key: self.key("list", name),
            conn: Mutex::new(self.conn()),
            _t: PhantomData,
        })
    }

    /// Opens the value `name`, setting it to `initial` if it does not exist.
    ///
    /// # Errors
    /// [`Error::Encode`], or [`Error::Io`] when the server cannot be
    /// reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let v = b.value("v", &1.5f64)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn value<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        initial: &T,
    ) -> Result<RedisValue<T>> {
        let v = RedisValue {
            key: self.key("value", name),
            conn: Mutex::new(self.conn()),
            _t: PhantomData,
        };
        let bytes = enc(initial)?;
        let key = &v.key;
        run(&v.conn, |c| {
            redis::cmd("SET")
                .arg(key)
                .arg(bytes)
                .arg("NX")
                .query::<()>(c)
        })?;
        Ok(v)
    }

    /// Opens the namespace `name`.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for checks.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let ns = b.namespace("ns")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn namespace(&self, name: &str) -> Result<RedisNamespace> {
        Ok(RedisNamespace {
            key: self.key("ns", name),
            conn: Mutex::new(self.conn()),
        })
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> RedisDict<K, V> {
    /// `d[key]`, or None.
    ///
    /// # Errors
    /// [`Error::Decode`] for an entry that is not a `V`, [`Error::Io`] when
    /// the server cannot be reached.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.dict::<u8, u8>("g")?.get(&1)?, None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let k = enc(key)?;
        let h = &self.key;
        let v: Option<Vec<u8>> = run(&self.conn, |c| redis::cmd("HGET").arg(h).arg(k).query(c))?;
        v.map(|b| dec(&b)).transpose()
    }

    /// `d[key] = value`.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.dict::<u8, u8>("s")?.set(&1, &2)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, key: &K, value: &V) -> Result<()> {
        let (k, v) = (enc(key)?, enc(value)?);
        let h = &self.key;
        run(&self.conn, |c| {
            redis::cmd("HSET").arg(h).arg(k).arg(v).query(c)
        })
    }

    /// Removes `key`, returning its value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.dict::<u8, u8>("p")?.pop(&1)?, None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pop(&self, key: &K) -> Result<Option<V>> {
        let k = enc(key)?;
        let h = &self.key;
        let (v,): (Option<Vec<u8>>,) = run(&self.conn, |c| {
            redis::pipe()
                .atomic()
                .cmd("HGET")
                .arg(h)
                .arg(&k)
                .cmd("HDEL")
                .arg(h)
                .arg(&k)
                .ignore()
                .query(c)
        })?;
        v.map(|b| dec(&b)).transpose()
    }

    /// True when `key` is present (`key in d`).
    ///
    /// # Errors
    /// [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(!b.dict::<u8, u8>("c")?.contains_key(&1)?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        let k = enc(key)?;
        let h = &self.key;
        run(&self.conn, |c| redis::cmd("HEXISTS").arg(h).arg(k).query(c))
    }

    /// The number of entries.
    ///
    /// # Errors
    /// [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.dict::<u8, u8>("n")?.len()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        let h = &self.key;
        run(&self.conn, |c| redis::cmd("HLEN").arg(h).query(c))
    }

    /// True when there is no entry.
    ///
    /// # Errors
    /// [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(b.dict::<u8, u8>("e")?.is_empty()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every entry (Python's `items()`), in no particular order.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let d = b.dict::<u8, u8>("i")?;
    /// d.set(&1, &2)?;
    /// assert_eq!(d.items()?, [(1, 2)]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let h = &self.key;
        let all: Vec<(Vec<u8>, Vec<u8>)> =
            run(&self.conn, |c| redis::cmd("HGETALL").arg(h).query(c))?;
        all.into_iter()
            .map(|(k, v)| Ok((dec(&k)?, dec(&v)?)))
            .collect()
    }

    /// Every key.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(b.dict::<u8, u8>("k")?.keys()?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<K>> {
        let h = &self.key;
        let all: Vec<Vec<u8>> = run(&self.conn, |c| redis::cmd("HKEYS").arg(h).query(c))?;
        all.iter().map(|k| dec(k)).collect()
    }

    /// Every value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(b.dict::<u8, u8>("v")?.values()?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn values(&self) -> Result<Vec<V>> {
        let h = &self.key;
        let all: Vec<Vec<u8>> = run(&self.conn, |c| redis::cmd("HVALS").arg(h).query(c))?;
        all.iter().map(|v| dec(v)).collect()
    }

    /// Removes every entry.
    ///
    /// # Errors
    /// [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.dict::<u8, u8>("x")?.clear()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        let h = &self.key;
        run(&self.conn, |c| redis::cmd("DEL").arg(h).query(c))
    }
}

impl<T: Serialize + DeserializeOwned> RedisList<T> {
    /// Appends `item`.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.list::<u8>("a")?.append(&1)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn append(&self, item: &T) -> Result<()> {
        let v = enc(item)?;
        let k = &self.key;
        run(&self.conn, |c| redis::cmd("RPUSH").arg(k).arg(v).query(c))
    }

    /// Appends every item of `items` in one command.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.list::<u8>("x")?.extend(&[1, 2])?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn extend(&self, items: &[T]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let vs = items.iter().map(enc).collect::<Result<Vec<_>>>()?;
        let k = &self.key;
        run(&self.conn, |c| redis::cmd("RPUSH").arg(k).arg(vs).query(c))
    }

    /// Removes and returns the last item.
    ///
    /// # Errors
    /// [`Error::Decode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.list::<u8>("p")?.pop()?, None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pop(&self) -> Result<Option<T>> {
        let k = &self.key;
        let v: Option<Vec<u8>> = run(&self.conn, |c| redis::cmd("RPOP").arg(k).query(c))?;
        v.map(|b| dec(&b)).transpose()
    }

    /// The item at `index` (negative counts from the end), or None.
    ///
    /// # Errors
    /// [`Error::Decode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.list::<u8>("g")?.get(0)?, None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, index: isize) -> Result<Option<T>> {
        let k = &self.key;
        let v: Option<Vec<u8>> = run(&self.conn, |c| {
            redis::cmd("LINDEX").arg(k).arg(index).query(c)
        })?;
        v.map(|b| dec(&b)).transpose()
    }

    /// Replaces the item at `index`.
    ///
    /// # Errors
    /// [`Error::Io`] (with Redis's message) for an index out of range.
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// let l = b.list::<u8>("s")?;
    /// l.append(&1)?;
    /// l.set(0, &2)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, index: isize, item: &T) -> Result<()> {
        let v = enc(item)?;
        let k = &self.key;
        run(&self.conn, |c| {
            redis::cmd("LSET").arg(k).arg(index).arg(v).query(c)
        })
    }

    /// The number of items.
    ///
    /// # Errors
    /// [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.list::<u8>("n")?.len()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        let k = &self.key;
        run(&self.conn, |c| redis::cmd("LLEN").arg(k).query(c))
    }

    /// True when there is no item.
    ///
    /// # Errors
    /// [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(b.list::<u8>("e")?.is_empty()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every item, in order.
    ///
    /// # Errors
    /// [`Error::Decode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(b.list::<u8>("t")?.to_vec()?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let k = &self.key;
        let all: Vec<Vec<u8>> = run(&self.conn, |c| {
            redis::cmd("LRANGE").arg(k).arg(0).arg(-1).query(c)
        })?;
        all.iter().map(|v| dec(v)).collect()
    }

    /// Removes every item.
    ///
    /// # Errors
    /// [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.list::<u8>("c")?.clear()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        let k = &self.key;
        run(&self.conn, |c| redis::cmd("DEL").arg(k).query(c))
    }
}

impl<T: Serialize + DeserializeOwned> RedisValue<T> {
    /// The current value.
    ///
    /// # Errors
    /// [`Error::State`] when the value was deleted behind our back,
    /// [`Error::Decode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.value("g", &5u8)?.get()?, 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        let k = &self.key;
        let v: Option<Vec<u8>> = run(&self.conn, |c| redis::cmd("GET").arg(k).query(c))?;
        dec(&v.ok_or(Error::State("the shared value no longer exists in Redis"))?)
    }

    /// Replaces the value.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.value("s", &5u8)?.set(&6)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, value: &T) -> Result<()> {
        let v = enc(value)?;
        let k = &self.key;
        run(&self.conn, |c| redis::cmd("SET").arg(k).arg(v).query(c))
    }
}

impl RedisNamespace {
    /// The attribute `name`, or None.
    ///
    /// # Errors
    /// [`Error::Decode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert_eq!(b.namespace("g")?.getattr::<u8>("x")?, None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn getattr<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let k = &self.key;
        let v: Option<Vec<u8>> = run(&self.conn, |c| redis::cmd("HGET").arg(k).arg(name).query(c))?;
        v.map(|b| dec(&b)).transpose()
    }

    /// Sets the attribute `name`.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// b.namespace("s")?.setattr("x", &1u8)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn setattr<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let v = enc(value)?;
        let k = &self.key;
        run(&self.conn, |c| {
            redis::cmd("HSET").arg(k).arg(name).arg(v).query(c)
        })
    }

    /// Removes the attribute `name`; true when it existed.
    ///
    /// # Errors
    /// [`Error::Io`].
    ///
    /// # Examples
    /// ```no_run
    /// # let b = multiproc::distributed::Backend::connect("redis://127.0.0.1:6379")?;
    /// assert!(!b.namespace("d")?.delattr("x")?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn delattr(&self, name: &str) -> Result<bool> {
        let k = &self.key;
        run(&self.conn, |c| redis::cmd("HDEL").arg(k).arg(name).query(c))
    }
}
