//! `ShmSafe`: the plain-old-data types that may live in shared memory.
#![allow(unsafe_code)]

/// A type whose values can live in memory shared between processes, as the
/// element of a [`Value`](crate::Value) or an [`Array`](crate::Array).
///
/// Implemented for the integer and float primitives and for arrays of
/// `ShmSafe` types. Pointers, references, `bool`, `char` and types with
/// `Drop` are ruled out at compile time:
///
/// ```compile_fail
/// let v = multiproc::Value::new(String::from("no"));
/// ```
/// ```compile_fail
/// let v = multiproc::Value::new(&5u8);
/// ```
///
/// # Safety
/// An implementor must be:
/// - `Copy` and without `Drop` glue: values are duplicated and forgotten by
///   plain memory copies in several processes;
/// - free of pointers, references and anything else whose meaning depends
///   on the address space (other processes map the memory elsewhere, and
///   read it in another address space altogether);
/// - valid for every bit pattern, including all zeros (a fresh segment),
///   since any process may write any bytes at any time;
/// - of a fixed layout (a primitive, an array, or `#[repr(C)]` /
///   `#[repr(transparent)]` of such fields, without padding bytes), so that
///   every process of the same build agrees on it;
/// - aligned to at most 64 bytes.
///
/// # Examples
/// ```
/// use multiproc::{ShmSafe, Value};
///
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point { x: f64, y: f64 }
/// // SAFETY: two f64 fields, repr(C), no padding, any bits are valid.
/// unsafe impl ShmSafe for Point {}
///
/// let v = Value::new(Point { x: 1.0, y: 2.0 })?;
/// assert_eq!(v.get(), Point { x: 1.0, y: 2.0 });
/// # Ok::<(), multiproc::Error>(())
/// ```
pub unsafe trait ShmSafe: Copy + Send + Sync + 'static {}

macro_rules! shm_safe {
    ($($t:ty)*) => {$(
        // SAFETY: a primitive number: Copy, no pointers, every bit pattern
        // valid, fixed layout, alignment at most 16.
        unsafe impl ShmSafe for $t {}
    )*};
}

shm_safe!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize f32 f64);

// SAFETY: an array of ShmSafe elements has no padding between elements and
// inherits all the element's properties.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

pub(crate) use crate::mem::segment::type_tag;

/// The tag of the segment behind a locked `Value` or `Array` of `T`: not
/// the tag of the `Raw` form, so that a locked one (whose memory is read
/// and written plainly under its lock) can never be received as a `Raw` one
/// (which reads and writes without the lock).
pub(crate) fn locked_tag<T>() -> u64 {
    type_tag::<T>() ^ 0x4c4f_434b_4544_0000 // "LOCKED"
}

/// The bytes of a slice of `ShmSafe` values.
pub(crate) fn as_bytes<T: ShmSafe>(s: &[T]) -> &[u8] {
    // SAFETY: a `ShmSafe` type has no padding bytes, so every byte of the
    // slice is initialized; `u8` has alignment 1; the length is the
    // slice's size in bytes, and the borrow keeps the memory alive.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// `bytes` as a slice of `T`, or `None` when they are not aligned for `T`
/// or not a whole number of `T`s. A zero-sized `T` gives an empty slice.
pub(crate) fn from_bytes<T: ShmSafe>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if size == 0 {
        return Some(&[]);
    }
    if bytes.len() % size != 0 || bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        return None;
    }
    // SAFETY: the pointer is aligned for `T` and the length is a whole
    // number of `T`s (both checked above); every bit pattern is a valid
    // `ShmSafe` value; the returned borrow has the lifetime of `bytes`, so
    // the memory stays alive and is not written through it.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

/// `bytes` as a mutable slice of `T`, on the terms of [`from_bytes`].
pub(crate) fn from_bytes_mut<T: ShmSafe>(bytes: &mut [u8]) -> Option<&mut [T]> {
    let size = std::mem::size_of::<T>();
    if size == 0 {
        return Some(&mut []);
    }
    if bytes.len() % size != 0 || bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        return None;
    }
    // SAFETY: as in `from_bytes`; in addition, any value written through
    // the result is plain bytes without padding, so the `u8` view stays
    // fully initialized, and the exclusive borrow is handed on.
    Some(unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<T>(), bytes.len() / size)
    })
}
