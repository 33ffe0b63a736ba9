//! `Array<T>` and `RawArray<T>`: a fixed-length run of `ShmSafe` values in
//! shared memory.
#![allow(unsafe_code)]

use super::atomic;
use super::pod::{ShmSafe, locked_tag, type_tag};
use super::value::LockedSegment;
use crate::error::{Error, Result};
use crate::mem::segment::{Shared, shm_layout};
use crate::sync::{Lock, LockError, LockGuard, LockResult};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

#[repr(C)]
#[derive(Default)]
pub(crate) struct ArrayState {
    len: AtomicU64,
}

// SAFETY: `#[repr(C)]`, one atomic, written before the segment is shared.
shm_layout!(unsafe impl ArrayState => Array);

fn out_of_range(what: &str, end: usize, len: usize) -> Error {
    Error::InvalidArgument(format!(
        "{what} {end} out of range for an array of length {len}"
    ))
}

/// A fixed-length array of `T` in shared memory, without a lock (Python's
/// `RawArray`).
///
/// Element access and bulk copies are safe but not synchronized: they use
/// relaxed atomic accesses of whole machine words, so they are sound
/// whatever other processes do at the same time, but a copy racing with a
/// writer may see some elements (or the words of one element wider than 8
/// bytes) old and others new. Use an [`Array`] (or your own [`Lock`]) when
/// several processes write.
///
/// # Examples
/// ```
/// use multiproc::{Process, RawArray};
///
/// fn fill(a: RawArray<i32>) {
///     let v: Vec<i32> = (0..a.len() as i32).map(|i| i * i).collect();
///     a.write_at(0, &v).unwrap();
/// }
///
/// let a = RawArray::<i32>::new(5)?;
/// let mut p = Process::new(fill, (a.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(a.to_vec(), [0, 1, 4, 9, 16]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawArray<T: ShmSafe> {
    shm: Shared<ArrayState>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: ShmSafe> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            shm: self.shm.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe> RawArray<T> {
    /// A zero-filled array of `len` elements.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the size overflows; otherwise when
    /// the shared memory cannot be created or mapped.
    pub fn new(len: usize) -> Result<Self> {
        RawArray::create(len, type_tag::<T>())
    }

    fn create(len: usize, tag: u64) -> Result<Self> {
        const { assert!(std::mem::align_of::<T>() <= 64) };
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            Error::InvalidArgument(format!("an array of {len} elements is too large"))
        })?;
        let shm = Shared::create(bytes, tag, |s: &ArrayState| {
            s.len.store(len as u64, Ordering::Relaxed)
        })?;
        Ok(RawArray {
            shm,
            len,
            _t: PhantomData,
        })
    }

    /// An array holding a copy of `values`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn from_slice(values: &[T]) -> Result<Self> {
        let a = RawArray::new(values.len())?;
        a.write_at(0, values)?;
        Ok(a)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first element in this process's mapping. Valid for `len()`
    /// elements as long as `self` (or a clone) lives; other processes may
    /// write them at any time, so any access through the pointer must be
    /// atomic (this type uses relaxed `AtomicU64` accesses of the aligned
    /// words that hold the elements).
    pub fn as_ptr(&self) -> *mut T {
        self.shm.tail().0.cast()
    }

    /// Faults the whole array in for writing in this process now, so that
    /// bulk writes run at memory speed instead of taking a page fault per
    /// 4 KiB (useful before timing-sensitive work on a large array).
    ///
    /// # Errors
    /// When the kernel refuses (older than Linux 5.14, or out of memory).
    ///
    /// # Examples
    /// ```
    /// let a = multiproc::RawArray::<f64>::new(1 << 16)?;
    /// a.prefault()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn prefault(&self) -> Result<()> {
        self.shm.populate()?;
        Ok(())
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let mut v = std::mem::MaybeUninit::<T>::uninit();
        // SAFETY: element `i` is inside the tail (checked at creation and
        // receipt) of a page-granular mapping that lives as long as `self`,
        // and every process touches a `RawArray`'s memory only through
        // `atomic` (an `Array` has a segment of its own, refused here by its
        // type tag). `v` is a local.
        unsafe {
            atomic::load(
                self.as_ptr().add(i).cast(),
                v.as_mut_ptr().cast(),
                std::mem::size_of::<T>(),
            );
        }
        // SAFETY: every byte was written; every bit pattern is a valid `T`.
        Some(unsafe { v.assume_init() })
    }

    /// Writes element `i`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] past the end.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        self.write_at(i, std::slice::from_ref(&value))
    }

    /// Copies `src` into the array starting at element `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it does not fit.
    pub fn write_at(&self, offset: usize, src: &[T]) -> Result<()> {
        offset
            .checked_add(src.len())
            .filter(|&e| e <= self.len)
            .ok_or_else(|| out_of_range("end", offset.saturating_add(src.len()), self.len))?;
        // SAFETY: as in `get`, for the elements `offset..offset + src.len()`
        // (inside the array, checked above); `src` is ordinary memory of
        // this process, fully initialized (`ShmSafe` types have no padding).
        unsafe {
            atomic::store(
                src.as_ptr().cast(),
                self.as_ptr().add(offset).cast(),
                std::mem::size_of_val(src),
            );
        }
        Ok(())
    }

    /// Copies elements starting at `offset` into `dst`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range passes the end.
    pub fn read_at(&self, offset: usize, dst: &mut [T]) -> Result<()> {
        offset
            .checked_add(dst.len())
            .filter(|&e| e <= self.len)
            .ok_or_else(|| out_of_range("end", offset.saturating_add(dst.len()), self.len))?;
        // SAFETY: as in `write_at`, in the other direction; any bytes are a
        // valid `T`.
        unsafe {
            atomic::load(
                self.as_ptr().add(offset).cast(),
                dst.as_mut_ptr().cast(),
                std::mem::size_of_val(dst),
            );
        }
        Ok(())
    }

    /// A copy of the whole array.
    pub fn to_vec(&self) -> Vec<T> {
        let mut v = Vec::<T>::with_capacity(self.len);
        // SAFETY: as in `read_at` for the whole array, into the vector's
        // capacity; then every element is initialized and the length is set
        // to match.
        unsafe {
            atomic::load(
                self.as_ptr().cast(),
                v.as_mut_ptr().cast(),
                self.len * std::mem::size_of::<T>(),
            );
            v.set_len(self.len);
        }
        v
    }

    /// The elements as a slice.
    ///
    /// # Safety
    /// No process or thread may write the array while the slice lives (hold
    /// a lock that every writer takes, or make sure writers are done).
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: valid, aligned, initialized memory of `len` elements; the
        // caller excludes concurrent writers.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The elements as a mutable slice.
    ///
    /// # Safety
    /// No other process or thread may read or write the array while the
    /// slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: as in `as_slice`, with exclusivity from the caller.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }

    fn check(shm: Shared<ArrayState>) -> std::result::Result<Self, String> {
        let len = shm.get().len.load(Ordering::Relaxed);
        let len = usize::try_from(len).map_err(|_| "received array is too long")?;
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or("received array is too long")?;
        if shm.tail().1 < bytes {
            return Err("received array segment is smaller than its length says".into());
        }
        Ok(RawArray {
            shm,
            len,
            _t: PhantomData,
        })
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawArray(len={})", self.len)
    }
}

impl<T: ShmSafe> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize_fd(s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let shm = Shared::deserialize_fd(d, type_tag::<T>())?;
        RawArray::check(shm).map_err(serde::de::Error::custom)
    }
}

/// A fixed-length array of `T` in shared memory with a [`Lock`] (Python's
/// `Array`).
///
/// [`lock`](Self::lock) gives the whole array as a `[T]` slice while the
/// lock is held: index it, slice it, `copy_from_slice` into it. The memory
/// is reachable only with the lock held (Python's `get_obj()` is
/// [`ArrayGuard::get_obj`] here), which is what makes the plain slice sound:
///
/// ```compile_fail
/// let a = multiproc::Array::<u8>::new(4)?;
/// let mut g = a.lock().unwrap();
/// a.get_obj().set(0, 1)?; // no unlocked access to an `Array`
/// g[0] += 1;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// # Examples
/// ```
/// use multiproc::{Array, Process};
///
/// fn double(a: Array<f64>) {
///     for x in a.lock().unwrap().iter_mut() {
///         *x *= 2.0;
///     }
/// }
///
/// let a = Array::from_slice(&[1.0, 2.0, 3.0])?;
/// let mut p = Process::new(double, (a.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(a.to_vec(), [2.0, 4.0, 6.0]);
/// assert_eq!(&a.lock().unwrap()[1..], [4.0, 6.0]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Array<T: ShmSafe> {
    raw: RawArray<T>,
    lock: Lock,
}

impl<T: ShmSafe> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            raw: self.raw.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: ShmSafe> Array<T> {
    /// A zero-filled array of `len` elements with its own lock.
    ///
    /// # Errors
    /// As [`RawArray::new`].
    pub fn new(len: usize) -> Result<Self> {
        Array::with_lock(len, Lock::new()?)
    }

    /// An array holding a copy of `values`, with its own lock.
    ///
    /// # Errors
    /// As [`RawArray::new`].
    pub fn from_slice(values: &[T]) -> Result<Self> {
        let a = Array::new(values.len())?;
        a.lock().unwrap_or_else(recover).copy_from_slice(values);
        Ok(a)
    }

    /// A zero-filled array guarded by an existing `lock`.
    ///
    /// # Errors
    /// As [`RawArray::new`].
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Array, Lock};
    /// let lock = Lock::new()?;
    /// let a = Array::<u8>::with_lock(4, lock.clone())?;
    /// assert!(a.get_lock().same_as(&lock));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(len: usize, lock: Lock) -> Result<Self> {
        // The raw array is private: its memory is only touched with the
        // lock held (see `ArrayGuard`), and its tag is not the one of a
        // `RawArray`, so it cannot be received as one.
        Ok(Array {
            raw: RawArray::create(len, locked_tag::<T>())?,
            lock,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Faults the array in for writing now (see [`RawArray::prefault`]).
    ///
    /// # Errors
    /// As [`RawArray::prefault`].
    pub fn prefault(&self) -> Result<()> {
        self.raw.prefault()
    }

    fn locked(&self) -> ArrayGuard<'_, T> {
        self.lock().unwrap_or_else(recover)
    }

    /// Element `i` read under the lock, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        self.locked().get(i).copied()
    }

    /// Writes element `i` under the lock.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] past the end.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        let len = self.len();
        let mut g = self.locked();
        *g.get_mut(i).ok_or_else(|| out_of_range("index", i, len))? = value;
        Ok(())
    }

    /// A copy of the whole array, taken under the lock.
    pub fn to_vec(&self) -> Vec<T> {
        self.locked().to_vec()
    }

    /// Takes the lock and gives the array as a slice until the guard drops.
    ///
    /// **Keep the guard in a named variable.** The lock is released when the
    /// guard is dropped, and `let _ = a.lock();` drops it at once (`_` binds
    /// nothing): write `let _guard = a.lock()` or `let g = …` and let it live
    /// as long as the lock must be held.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (with the guard) when the lock's previous
    /// holder died while holding it.
    ///
    /// # Examples
    /// ```
    /// let a = multiproc::Array::from_slice(&[3u32, 1, 2])?;
    /// a.lock().unwrap().sort();
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.lock.acquire())
    }

    #[inline]
    fn guard<'a>(&'a self, acquired: LockResult<LockGuard<'a>>) -> LockResult<ArrayGuard<'a, T>> {
        let wrap = |guard| ArrayGuard {
            // SAFETY: the lock is held, and an `Array`'s memory is reachable
            // only with it held (its `RawArray` is private and its segment
            // cannot be received as a `RawArray`), and a hold by a guard
            // cannot be released by anybody else (`Lock::release` releases
            // leaked holds only): nobody else touches the elements while the
            // guard lives. The memory stays mapped as long as `self`.
            slice: unsafe { self.raw.as_mut_slice() },
            _guard: guard,
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
    /// let a = multiproc::Array::<u8>::new(2)?;
    /// let g = a.lock().unwrap();
    /// assert!(a.lock_timeout(Duration::from_millis(10)).is_err());
    /// drop(g);
    /// a.lock_timeout(Duration::from_secs(1)).unwrap()[1] = 7;
    /// assert_eq!(a.to_vec(), [0, 7]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: std::time::Duration) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.lock.acquire_timeout(timeout))
    }
}

fn recover<G>(e: LockError<G>) -> G {
    match e {
        LockError::OwnerDied(g) => g,
        // `acquire` waits forever: it reports nothing else.
        _ => unreachable!("a blocking acquire neither times out nor would block"),
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Array(len={})", self.len())
    }
}

impl<T: ShmSafe> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.raw, &self.lock).serialize(s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (LockedSegment(shm, ..), lock): (LockedSegment<ArrayState, T>, Lock) =
            Deserialize::deserialize(d)?;
        let raw = RawArray::check(shm).map_err(serde::de::Error::custom)?;
        Ok(Array { raw, lock })
    }
}

/// The elements of an [`Array`] while its lock is held.
#[must_use = "the lock is released when the guard is dropped; `let _ = ...` drops it at once, bind it to a named variable such as `_guard`"]
pub struct ArrayGuard<'a, T: ShmSafe> {
    slice: &'a mut [T],
    _guard: LockGuard<'a>,
}

impl<T: ShmSafe> ArrayGuard<'_, T> {
    /// The elements (Python's `get_obj()`, which needs the lock held to be
    /// used safely; the guard derefs to the same slice).
    ///
    /// # Examples
    /// ```
    /// let a = multiproc::Array::<u16>::new(3)?;
    /// a.lock().unwrap().get_obj().copy_from_slice(&[1, 2, 3]);
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_obj(&mut self) -> &mut [T] {
        self.slice
    }
}

impl<T: ShmSafe> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

impl<T: ShmSafe> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.slice
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
