//! `Value<T>` and `RawValue<T>`: one `ShmSafe` value in shared memory.
#![allow(unsafe_code)]

use super::atomic;
use super::pod::{ShmSafe, locked_tag, type_tag};
use crate::error::Result;
use crate::mem::segment::{Shared, ShmLayout, shm_layout};
use crate::sync::{Lock, LockError, LockGuard, LockResult};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
shm_layout!(unsafe impl DataState => Value);

/// One `T` in shared memory, without a lock (Python's `RawValue`).
///
/// Reads and writes use relaxed atomic accesses of whole machine words, so
/// they are sound whatever other processes do at the same time, but a value
/// wider than 8 bytes may be seen half written: use a [`Value`] when several
/// processes write and readers must see whole values.
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
    /// clone) lives; other processes may write it at any time, so any access
    /// through the pointer must be atomic (this type uses relaxed
    /// `AtomicU64` accesses of the aligned words that hold the value).
    pub fn as_ptr(&self) -> *mut T {
        self.shm.tail().0.cast()
    }

    /// Reads the value.
    #[inline]
    pub fn get(&self) -> T {
        let mut v = std::mem::MaybeUninit::<T>::uninit();
        // SAFETY: the tail holds `size_of::<T>()` bytes (checked at creation
        // and receipt) in a page-granular mapping that lives as long as
        // `self`, and every process touches a `RawValue`'s memory only
        // through `atomic` (a `Value` has a segment of its own, refused
        // here by its type tag). `v` is a local.
        unsafe {
            atomic::load(
                self.as_ptr().cast(),
                v.as_mut_ptr().cast(),
                std::mem::size_of::<T>(),
            );
        }
        // SAFETY: every byte was written, and every bit pattern is a valid
        // `T` (`ShmSafe`).
        unsafe { v.assume_init() }
    }

    /// Writes the value.
    #[inline]
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`; `value` is a local whose bytes are all
        // initialized (`ShmSafe` types have no padding) and `T` has no drop
        // glue, so overwriting is fine.
        unsafe {
            atomic::store(
                (&raw const value).cast(),
                self.as_ptr().cast(),
                std::mem::size_of::<T>(),
            );
        }
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
/// [`lock`](Self::lock) holds it across a read-modify-write. The memory is
/// reachable only with the lock held (there is no way to a `Value`'s memory
/// without it, unlike Python's `get_obj()`; the guard's
/// [`get_obj`](ValueGuard::get_obj) is the equivalent), so the guard can
/// hand out a plain `&mut T`:
///
/// ```compile_fail
/// let v = multiproc::Value::new(0u64)?;
/// let mut g = v.lock().unwrap();
/// v.get_obj().set(1); // no unlocked access to a `Value`
/// *g += 1;
/// # Ok::<(), multiproc::Error>(())
/// ```
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
    shm: Shared<DataState>,
    lock: Lock,
    _t: PhantomData<T>,
}

impl<T: ShmSafe> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            shm: self.shm.clone(),
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe> Value<T> {
    /// A new shared value with its own lock.
    ///
    /// # Errors
    /// When the shared memory cannot be created or mapped.
    pub fn new(value: T) -> Result<Self> {
        Value::with_lock(value, Lock::new()?)
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
        const { assert!(std::mem::align_of::<T>() <= 64) };
        let shm = Shared::create(std::mem::size_of::<T>(), locked_tag::<T>(), |_| {})?;
        // SAFETY: nobody else can see the fresh segment yet; its tail holds
        // a `T`, 64-aligned.
        unsafe { shm.tail().0.cast::<T>().write(value) };
        Ok(Value {
            shm,
            lock,
            _t: PhantomData,
        })
    }

    #[inline]
    fn ptr(&self) -> *mut T {
        self.shm.tail().0.cast()
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Reads the value under the lock. A lock left by a dead holder is
    /// taken over silently; use [`lock`](Self::lock) to be told.
    pub fn get(&self) -> T {
        let _g = self.lock.acquire().unwrap_or_else(recover);
        // SAFETY: the lock is held (see `ValueGuard`).
        unsafe { self.ptr().read() }
    }

    /// Writes the value under the lock (a dead holder is handled as in
    /// [`get`](Self::get)).
    pub fn set(&self, value: T) {
        let _g = self.lock.acquire().unwrap_or_else(recover);
        // SAFETY: the lock is held (see `ValueGuard`); no drop glue.
        unsafe { self.ptr().write(value) }
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
        self.guard(self.lock.acquire())
    }

    #[inline]
    fn guard<'a>(&'a self, acquired: LockResult<LockGuard<'a>>) -> LockResult<ValueGuard<'a, T>> {
        let wrap = |guard| ValueGuard {
            _guard: guard,
            // SAFETY: see `ValueGuard`: the lock is held, and the pointer is
            // valid and aligned for as long as `self` lives, which outlives
            // the guard.
            value: unsafe { &mut *self.ptr() },
        };
        match acquired {
            Ok(g) => Ok(wrap(g)),
            Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(wrap(g))),
            Err(LockError::WouldBlock) => Err(LockError::WouldBlock),
            Err(LockError::Timeout) => Err(LockError::Timeout),
        }
    }

    /// As [`lock`](Self::lock), waiting at most `timeout` (Python's
    /// `get_lock().acquire(timeout=...)` followed by access to the value).
    ///
    /// # Errors
    /// [`LockError::Timeout`] when the time ran out; otherwise as
    /// [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let v = multiproc::Value::new(1u8)?;
    /// let g = v.lock().unwrap();
    /// assert!(v.lock_timeout(Duration::from_millis(10)).is_err());
    /// drop(g);
    /// *v.lock_timeout(Duration::from_secs(1)).unwrap() += 1;
    /// assert_eq!(v.get(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: std::time::Duration) -> LockResult<ValueGuard<'_, T>> {
        self.guard(self.lock.acquire_timeout(timeout))
    }

    fn check(shm: Shared<DataState>, lock: Lock) -> std::result::Result<Self, &'static str> {
        if shm.tail().1 < std::mem::size_of::<T>() {
            return Err("received value segment is too small");
        }
        Ok(Value {
            shm,
            lock,
            _t: PhantomData,
        })
    }
}

fn recover(e: LockError<LockGuard<'_>>) -> LockGuard<'_> {
    match e {
        LockError::OwnerDied(g) => g,
        // `acquire` waits forever: it reports nothing else.
        _ => unreachable!("a blocking acquire neither times out nor would block"),
    }
}

/// Shows the value if the lock is free (taking it for the read), or
/// `<locked>`: formatting a value whose guard this process holds must not
/// deadlock.
impl<T: ShmSafe + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock.try_acquire() {
            Ok(_g) | Err(LockError::OwnerDied(_g)) => {
                // SAFETY: the lock is held (see `ValueGuard`).
                let v = unsafe { self.ptr().read() };
                write!(f, "Value({v:?})")
            }
            Err(_) => write!(f, "Value(<locked>)"),
        }
    }
}

impl<T: ShmSafe> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.shm, &self.lock).serialize(s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (LockedSegment(shm, _), lock): (LockedSegment<DataState, T>, Lock) =
            Deserialize::deserialize(d)?;
        Value::check(shm, lock).map_err(serde::de::Error::custom)
    }
}

/// The segment of a locked `Value` or `Array` of `T`, received with the
/// locked tag (a `Raw` segment is refused, and the other way round).
pub(super) struct LockedSegment<L: ShmLayout, T>(pub(super) Shared<L>, pub(super) PhantomData<T>);

impl<'de, L: ShmLayout, T: ShmSafe> Deserialize<'de> for LockedSegment<L, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(LockedSegment(
            Shared::deserialize_fd(d, locked_tag::<T>())?,
            PhantomData,
        ))
    }
}

/// Access to a [`Value`] while its lock is held.
///
/// The `&mut T` points into shared memory and is exclusive: a `Value`'s
/// memory is only reachable with its lock held, and a lock held by a guard
/// cannot be released by anybody else ([`Lock::release`] only releases a
/// [leaked](LockGuard::leak) hold).
#[must_use = "the lock is released when the guard is dropped; `let _ = ...` drops it at once, bind it to a named variable such as `_guard`"]
pub struct ValueGuard<'a, T: ShmSafe> {
    value: &'a mut T,
    _guard: LockGuard<'a>,
}

impl<T: ShmSafe> ValueGuard<'_, T> {
    /// The value (Python's `get_obj()`, which needs the lock held to be
    /// used safely; the guard derefs to the same place).
    ///
    /// # Examples
    /// ```
    /// let v = multiproc::Value::new(1.5f32)?;
    /// *v.lock().unwrap().get_obj() = 2.5;
    /// assert_eq!(v.get(), 2.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_obj(&mut self) -> &mut T {
        self.value
    }
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
