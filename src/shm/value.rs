//! `Value<T>` and `RawValue<T>`: one `ShmSafe` value in shared memory.
#![allow(unsafe_code)]

use super::pod::{ShmSafe, type_tag};
use super::segment::{Shared, ShmLayout};
use crate::error::Result;
use crate::sync::{Lock, LockError, LockGuard, LockResult};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::CStr;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// The state of a data segment: nothing but the header; the data is the
/// tail.
#[repr(C)]
#[derive(Default)]
pub(crate) struct DataState {
    _reserved: u64,
}

// SAFETY: `#[repr(C)]`, one integer never written after creation.
unsafe impl ShmLayout for DataState {
    const KIND: u32 = 7;
    const NAME: &'static CStr = c"multiproc-value";
}

/// One `T` in shared memory, without a lock (Python's `RawValue`).
///
/// Reads and writes are single volatile copies: not atomic for types wider
/// than the machine word, so use a [`Value`] (or your own [`Lock`]) when
/// several processes write.
///
/// # Examples
/// ```
/// use multiproc::{Process, RawValue};
///
/// fn put(v: RawValue<f64>) { v.set(2.5) }
///
/// let v = RawValue::new(0.0f64)?;
/// let mut p = Process::new(put, (v.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(v.get(), 2.5);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawValue<T: ShmSafe> {
    shm: Shared<DataState>,
    _t: PhantomData<T>,
}

impl<T: ShmSafe> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            shm: self.shm.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe> RawValue<T> {
    /// A new shared value.
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    pub fn new(value: T) -> Result<Self> {
        const { assert!(std::mem::align_of::<T>() <= 64) };
        let shm = Shared::create(std::mem::size_of::<T>(), type_tag::<T>(), |_| {})?;
        let v = RawValue {
            shm,
            _t: PhantomData,
        };
        v.set(value);
        Ok(v)
    }

    /// Where the value lives in this process. Valid as long as `self` (or a
    /// clone) lives; other processes may write it at any time.
    pub fn as_ptr(&self) -> *mut T {
        self.shm.tail().0.cast()
    }

    /// Reads the value.
    #[inline]
    pub fn get(&self) -> T {
        // SAFETY: the tail holds at least `size_of::<T>()` bytes (checked at
        // creation and receipt), is 64-aligned, and every bit pattern is a
        // valid `T` (`ShmSafe`); a volatile read tolerates concurrent writers.
        unsafe { self.as_ptr().read_volatile() }
    }

    /// Writes the value.
    #[inline]
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`; `T` has no drop glue, so overwriting is fine.
        unsafe { self.as_ptr().write_volatile(value) }
    }

    fn check(shm: Shared<DataState>) -> std::result::Result<Self, String> {
        if shm.tail().1 < std::mem::size_of::<T>() {
            return Err("received value segment is too small".into());
        }
        Ok(RawValue {
            shm,
            _t: PhantomData,
        })
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawValue({:?})", self.get())
    }
}

impl<T: ShmSafe> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize_fd(s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let shm = Shared::deserialize_fd(d, type_tag::<T>())?;
        RawValue::check(shm).map_err(serde::de::Error::custom)
    }
}

/// One `T` in shared memory with a [`Lock`] (Python's `Value`).
///
/// [`get`](Self::get) and [`set`](Self::set) take the lock for one access;
/// [`lock`](Self::lock) holds it across a read-modify-write.
///
/// # Examples
/// ```
/// use multiproc::{Process, Value};
///
/// fn add(v: Value<u64>, n: u64) {
///     for _ in 0..n {
///         *v.lock().unwrap() += 1;
///     }
/// }
///
/// let v = Value::new(0u64)?;
/// let mut ps: Vec<_> = (0..2).map(|_| Process::new(add, (v.clone(), 1000))).collect();
/// for p in &mut ps { p.start()?; }
/// for p in &mut ps { p.join()?; }
/// assert_eq!(v.get(), 2000);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Value<T: ShmSafe> {
    raw: RawValue<T>,
    lock: Lock,
}

impl<T: ShmSafe> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            raw: self.raw.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: ShmSafe> Value<T> {
    /// A new shared value with its own lock.
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    pub fn new(value: T) -> Result<Self> {
        Ok(Value {
            raw: RawValue::new(value)?,
            lock: Lock::new()?,
        })
    }

    /// A new shared value guarded by an existing `lock` (which may guard
    /// other values too).
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Lock, Value};
    /// let lock = Lock::new()?;
    /// let a = Value::with_lock(1u8, lock.clone())?;
    /// let b = Value::with_lock(2u8, lock.clone())?;
    /// assert!(a.get_lock().same_as(b.get_lock()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(value: T, lock: Lock) -> Result<Self> {
        Ok(Value {
            raw: RawValue::new(value)?,
            lock,
        })
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// The value without its lock (Python's `get_obj()`).
    ///
    /// # Examples
    /// ```
    /// let v = multiproc::Value::new(1.5f32)?;
    /// v.get_obj().set(2.5);
    /// assert_eq!(v.get(), 2.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_obj(&self) -> &RawValue<T> {
        &self.raw
    }

    /// Reads the value under the lock. A lock left by a dead holder is
    /// taken over silently; use [`lock`](Self::lock) to be told.
    pub fn get(&self) -> T {
        let _g = self.lock.acquire().unwrap_or_else(recover);
        self.raw.get()
    }

    /// Writes the value under the lock (a dead holder is handled as in
    /// [`get`](Self::get)).
    pub fn set(&self, value: T) {
        let _g = self.lock.acquire().unwrap_or_else(recover);
        self.raw.set(value)
    }

    /// Takes the lock and gives access to the value until the guard drops.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = v.lock();` drops it at once (`_` binds
    /// nothing): write `let _guard = v.lock()` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (with the guard) when the lock's previous
    /// holder died while holding it: the value may be half updated.
    ///
    /// # Examples
    /// ```
    /// let v = multiproc::Value::new(5i64)?;
    /// *v.lock().unwrap() *= 3;
    /// assert_eq!(v.get(), 15);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        let wrap = |guard| ValueGuard {
            _guard: guard,
            // SAFETY: see `ValueGuard`: the pointer is valid and aligned for
            // as long as `self` lives, which outlives the guard.
            value: unsafe { &mut *self.raw.as_ptr() },
        };
        match self.lock.acquire() {
            Ok(g) => Ok(wrap(g)),
            Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(wrap(g))),
            Err(LockError::WouldBlock) => Err(LockError::WouldBlock),
            Err(LockError::Timeout) => Err(LockError::Timeout),
        }
    }
}

fn recover(e: LockError<LockGuard<'_>>) -> LockGuard<'_> {
    match e {
        LockError::OwnerDied(g) => g,
        // `acquire` waits forever: it reports nothing else.
        _ => unreachable!("a blocking acquire neither times out nor would block"),
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({:?})", self.raw.get())
    }
}

impl<T: ShmSafe> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.raw, &self.lock).serialize(s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (raw, lock) = Deserialize::deserialize(d)?;
        Ok(Value { raw, lock })
    }
}

/// Access to a [`Value`] while its lock is held.
///
/// The `&mut T` points into shared memory: exclusive as long as every
/// process that writes the value does so under the lock.
#[must_use = "the lock is released when the guard is dropped; `let _ = ...` drops it at once, bind it to a named variable such as `_guard`"]
pub struct ValueGuard<'a, T: ShmSafe> {
    value: &'a mut T,
    _guard: LockGuard<'a>,
}

impl<T: ShmSafe> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: ShmSafe> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
