//! Shared, immutable buffers that cross processes without being copied:
//! [`SharedSlice`] / [`SharedBytes`], built in place with [`SharedSliceMut`]
//! / [`SharedBytesMut`].
//!
//! The bytes live in an anonymous memory file (`memfd`) sealed against
//! writes and resizing before it can leave the process; a message carries
//! only its descriptor (through the codec's handle table, `SCM_RIGHTS`), and
//! the receiver checks the seals and maps the file read-only.

use super::pod::{self, ShmSafe};
use crate::codec;
use crate::error::{Error, Result};
use crate::mem::segment::type_tag;
use crate::sys::{SealedFile, UnsealedFile};
use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

/// The name the memory files carry in `/proc/<pid>/fd` and `/proc/<pid>/maps`.
const NAME: &std::ffi::CStr = c"multiproc-shared";

/// The size in bytes of `n` elements of `T`; a zero-sized `T` is refused at
/// compile time.
fn byte_len<T>(n: usize) -> Result<usize> {
    const { assert!(std::mem::size_of::<T>() != 0, "zero-sized elements") };
    n.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
        Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{n} elements do not fit the address space"),
        ))
    })
}

/// A shared, immutable slice of plain-old-data values that crosses
/// processes as a handle: sending it through a [`Pipe`](crate::Pipe), a
/// [`Queue`](crate::Queue), as a [`Process`](crate::Process) argument or
/// result, or as a pool task or result passes one descriptor, whatever its
/// size, and the receiver maps the same memory.
///
/// The memory is an anonymous memory file sealed against writes, shrinking
/// and growing *before* it leaves the creating process: no process, not even
/// the sender, can change the bytes or the size afterwards, so every holder
/// sees the same bytes for as long as it holds them. A receiver checks the
/// seals before it maps the file (read-only) and refuses a descriptor that
/// is not such a sealed file with [`Error::Decode`] — a peer cannot hand it
/// memory that changes, or shrinks under it.
///
/// Cloning is cheap (a reference count); the file is freed when the last
/// holder in the last process drops it. The elements are
/// [`ShmSafe`](crate::ShmSafe) types (numbers, arrays and `#[repr(C)]`
/// structs of them); zero-sized ones are refused at compile time.
/// [`SharedBytes`] is `SharedSlice<u8>`.
///
/// Where the data comes from decides the cost: [`SharedSliceMut`] builds it
/// in place (no copy at all), while [`from_slice`](Self::from_slice) and
/// `From<Vec<T>>` copy it once into the file. Receiving never copies; the
/// pages are mapped on first access. Other serde formats than this crate's
/// codec cannot carry it (an error when serializing).
///
/// # Examples
/// ```
/// use multiproc::{Pipe, SharedSlice};
///
/// let (a, b) = Pipe::new()?;
/// let v: SharedSlice<f64> = SharedSlice::from_slice(&[1.0, 2.5, 4.0])?;
/// a.send(&v)?;
/// let w: SharedSlice<f64> = b.recv()?;
/// assert_eq!(&w[..], &[1.0, 2.5, 4.0]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SharedSlice<T: ShmSafe> {
    file: Arc<SealedFile>,
    _t: PhantomData<T>,
}

/// A shared, immutable byte buffer that crosses processes as a handle: a
/// [`SharedSlice`] of bytes.
///
/// # Examples
/// ```
/// use multiproc::{Pipe, SharedBytes, SharedBytesMut};
///
/// // Built in place, then sealed.
/// let mut m = SharedBytesMut::with_len(1 << 20)?;
/// m.fill(7);
/// let big: SharedBytes = m.freeze()?;
///
/// let (a, b) = Pipe::new()?;
/// a.send(&big)?;
/// let got: SharedBytes = b.recv()?;
/// assert_eq!(got.len(), 1 << 20);
/// assert!(got.iter().all(|&x| x == 7));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type SharedBytes = SharedSlice<u8>;

/// A [`SharedSliceMut`] of bytes: the builder of [`SharedBytes`].
pub type SharedBytesMut = SharedSliceMut<u8>;

impl<T: ShmSafe> SharedSlice<T> {
    fn from_file(file: SealedFile) -> Result<Self> {
        // The mapping is page aligned and the length a whole number of
        // elements wherever the file comes from (checked for received ones).
        if pod::from_bytes::<T>(file.bytes()).is_none() {
            return Err(Error::Decode(format!(
                "a shared buffer of {} bytes is not a whole number of {}",
                file.bytes().len(),
                std::any::type_name::<T>()
            )));
        }
        Ok(SharedSlice {
            file: Arc::new(file),
            _t: PhantomData,
        })
    }

    /// A sealed copy of `data`: one copy of the bytes, written into a new
    /// memory file.
    ///
    /// # Errors
    /// When the memory file cannot be created, sized, written or mapped
    /// ([`Error::Io`], e.g. out of memory).
    ///
    /// # Examples
    /// ```
    /// let s = multiproc::SharedBytes::from_slice(b"hello")?;
    /// assert_eq!(&s[..], b"hello");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_slice(data: &[T]) -> Result<Self> {
        byte_len::<T>(data.len())?;
        Self::from_file(SealedFile::from_slice(NAME, pod::as_bytes(data))?)
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        pod::from_bytes(self.file.bytes()).expect("checked when built")
    }

    /// The descriptor of the sealed memory file (for instance to map it
    /// elsewhere, or to pass it on by other means).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.fd()
    }
}

impl<T: ShmSafe> TryFrom<Vec<T>> for SharedSlice<T> {
    type Error = Error;

    /// A sealed copy of the vector's elements (one copy: a `Vec`'s heap
    /// memory cannot be shared, build with [`SharedSliceMut`] to avoid it).
    ///
    /// # Errors
    /// As [`SharedSlice::from_slice`].
    fn try_from(v: Vec<T>) -> Result<Self> {
        Self::from_slice(&v)
    }
}

impl<T: ShmSafe> TryFrom<&[T]> for SharedSlice<T> {
    type Error = Error;

    /// As [`SharedSlice::from_slice`].
    fn try_from(v: &[T]) -> Result<Self> {
        Self::from_slice(v)
    }
}

impl<T: ShmSafe> Clone for SharedSlice<T> {
    fn clone(&self) -> Self {
        SharedSlice {
            file: Arc::clone(&self.file),
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe> Deref for SharedSlice<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: ShmSafe> AsRef<[T]> for SharedSlice<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for SharedSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 16;
        let s = self.as_slice();
        let mut l = f.debug_list();
        l.entries(s.iter().take(SHOWN));
        if s.len() > SHOWN {
            l.entry(&format_args!("… {} more", s.len() - SHOWN));
        }
        l.finish()
    }
}

impl<T: ShmSafe + PartialEq> PartialEq for SharedSlice<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// What travels: the descriptor (by index in the handle table), the length
/// in bytes and the element type's tag, so that a buffer is received as the
/// type it was sent as.
#[derive(serde::Serialize)]
#[serde(rename = "multiproc::SharedSlice")]
struct WireOut<'a> {
    #[serde(serialize_with = "codec::handle::serialize")]
    fd: BorrowedFd<'a>,
    len: u64,
    tag: u64,
}

#[derive(serde::Deserialize)]
#[serde(rename = "multiproc::SharedSlice")]
struct WireIn {
    #[serde(deserialize_with = "codec::handle::deserialize")]
    fd: OwnedFd,
    len: u64,
    tag: u64,
}

impl<T: ShmSafe> Serialize for SharedSlice<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireOut {
            fd: self.file.fd(),
            len: self.file.bytes().len() as u64,
            tag: type_tag::<T>(),
        }
        .serialize(s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for SharedSlice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        if w.tag != type_tag::<T>() {
            return Err(codec::de_error(format!(
                "a shared buffer of another element type arrived where SharedSlice<{}> was expected",
                std::any::type_name::<T>()
            )));
        }
        let file = SealedFile::from_fd(w.fd)
            .map_err(|e| codec::de_error(format!("received shared buffer refused: {e}")))?;
        if file.bytes().len() as u64 != w.len {
            return Err(codec::de_error(format!(
                "received shared buffer holds {} bytes, its message says {}",
                file.bytes().len(),
                w.len
            )));
        }
        Self::from_file(file).map_err(|e| codec::de_error(e.to_string()))
    }
}

/// The builder of a [`SharedSlice`]: a zero-filled buffer this process
/// writes in place, then seals with [`freeze`](Self::freeze) — the data is
/// never copied.
///
/// It cannot be sent (it is not `Serialize`): only the frozen, sealed form
/// leaves the process.
///
/// # Examples
/// ```
/// use multiproc::{SharedSlice, SharedSliceMut};
///
/// let mut m = SharedSliceMut::<u32>::with_len(1000)?;
/// for (i, x) in m.iter_mut().enumerate() {
///     *x = i as u32;
/// }
/// let s: SharedSlice<u32> = m.freeze()?;
/// assert_eq!(s[999], 999);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SharedSliceMut<T: ShmSafe> {
    file: UnsealedFile,
    _t: PhantomData<T>,
}

impl<T: ShmSafe> SharedSliceMut<T> {
    /// A buffer of `len` elements, all bits zero, with its memory already
    /// allocated (the pages are faulted in at once).
    ///
    /// # Errors
    /// When the size overflows or the memory file cannot be created, sized
    /// or mapped ([`Error::Io`]).
    pub fn with_len(len: usize) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        Ok(SharedSliceMut {
            file: UnsealedFile::new(NAME, bytes)?,
            _t: PhantomData,
        })
    }

    /// Seals the buffer against every change and turns it into a
    /// [`SharedSlice`] (mapped read-only from then on).
    ///
    /// # Errors
    /// When sealing or mapping fails ([`Error::Io`]).
    pub fn freeze(self) -> Result<SharedSlice<T>> {
        SharedSlice::from_file(self.file.seal()?)
    }
}

impl<T: ShmSafe> Deref for SharedSliceMut<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        pod::from_bytes(self.file.bytes()).expect("page aligned, whole elements")
    }
}

impl<T: ShmSafe> DerefMut for SharedSliceMut<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        pod::from_bytes_mut(self.file.bytes_mut()).expect("page aligned, whole elements")
    }
}

impl<T: ShmSafe> fmt::Debug for SharedSliceMut<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSliceMut")
            .field("len", &self.len())
            .finish()
    }
}
