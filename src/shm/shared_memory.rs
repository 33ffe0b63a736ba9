//! `SharedMemory`: named POSIX shared memory (Python's
//! `multiprocessing.shared_memory.SharedMemory`).
#![allow(unsafe_code)]

use super::atomic;
use super::tracker;
use crate::codec::Handle;
use crate::error::{Error, Result};
use crate::sys::{self, Mapping};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// The longest name accepted (NAME_MAX less the leading `/`).
const MAX_NAME: usize = 250;

fn c_name(name: &str) -> Result<CString> {
    CString::new(format!("/{name}"))
        .map_err(|_| Error::InvalidArgument("shared memory name contains a NUL byte".into()))
}

fn check_name(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(Error::InvalidArgument("empty shared memory name".into()));
    }
    if bare.contains('\0') {
        return Err(Error::InvalidArgument(
            "shared memory name contains a NUL byte".into(),
        ));
    }
    if bare.contains('/') {
        return Err(Error::InvalidArgument(format!(
            "shared memory name {bare:?} contains '/'"
        )));
    }
    if bare.len() > MAX_NAME {
        return Err(Error::InvalidArgument(format!(
            "shared memory name is longer than {MAX_NAME} bytes"
        )));
    }
    Ok(bare.to_string())
}

pub(crate) fn unlink_name(name: &str) -> Result<()> {
    sys::shm_unlink(&c_name(name)?)?;
    Ok(())
}

/// A block of named shared memory (in `/dev/shm`), which unrelated
/// processes can attach to by name.
///
/// The creator registers the name with a tracker process, so the name is
/// removed once every process that holds the block (the creator and those
/// it sent the block to) has exited, even if they were killed: call
/// [`unlink`](Self::unlink) when done, and a crash still leaks nothing.
/// If the tracker itself is killed, the next creation or unlink starts a new
/// one (with a warning on stderr) and hands it every name this process
/// created and has not unlinked.
/// Dropping or [`close`](Self::close)-ing only unmaps it here, as in Python.
///
/// [`write_at`](Self::write_at), [`read_at`](Self::read_at) and
/// [`to_vec`](Self::to_vec) are sound while other processes use the block
/// (they use relaxed atomic accesses of whole words) but not synchronized:
/// a copy racing with a writer may see some bytes old and others new.
///
/// For memory shared only between related processes, [`RawArray`](crate::RawArray)
/// needs no name at all.
///
/// # Examples
/// ```
/// use multiproc::{Process, SharedMemory};
///
/// fn write(name: String) {
///     let shm = SharedMemory::attach(&name).unwrap();
///     shm.write_at(0, b"howdy").unwrap();
/// }
///
/// let shm = SharedMemory::create_auto(64)?;
/// let mut p = Process::new(write, (shm.name().to_string(),));
/// p.start()?;
/// p.join()?;
/// let mut buf = [0u8; 5];
/// shm.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"howdy");
/// shm.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SharedMemory {
    name: String,
    map: Mapping,
    size: usize,
}

impl SharedMemory {
    fn create_exact(name: String, size: usize) -> Result<Self> {
        let cname = c_name(&name)?;
        let fd = sys::shm_open(&cname, true)?;
        let made =
            sys::set_len(fd.as_fd(), size).and_then(|_| Mapping::new(fd.as_fd(), size, false));
        let map = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = sys::shm_unlink(&cname);
                return Err(e.into());
            }
        };
        if let Err(e) = tracker::register(&name) {
            let _ = sys::shm_unlink(&cname);
            return Err(e.into());
        }
        Ok(SharedMemory { name, map, size })
    }

    /// Creates a block of `size` bytes (zero-filled) named `name` (with or
    /// without a leading `/`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a size of 0 or a bad name (empty,
    /// containing `/` or NUL, too long); [`Error::Io`] with
    /// [`io::ErrorKind::AlreadyExists`] when the name is taken.
    ///
    /// # Examples
    /// ```
    /// use multiproc::SharedMemory;
    /// let name = format!("mp-doc-create-{}", std::process::id());
    /// let a = SharedMemory::create(&name, 512)?;
    /// assert!(SharedMemory::create(&name, 512).is_err());
    /// assert!(SharedMemory::create("x", 0).is_err());
    /// a.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create(name: &str, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::InvalidArgument(
                "size must be positive when creating shared memory".into(),
            ));
        }
        SharedMemory::create_exact(check_name(name)?, size)
    }

    /// Creates a block of `size` bytes under a fresh random name (retrying
    /// on the rare collision).
    ///
    /// # Errors
    /// As [`create`](Self::create).
    ///
    /// # Examples
    /// ```
    /// let shm = multiproc::SharedMemory::create_auto(4096)?;
    /// assert!(shm.name().starts_with("mproc_"));
    /// assert_eq!(shm.size(), 4096);
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_auto(size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::InvalidArgument(
                "size must be positive when creating shared memory".into(),
            ));
        }
        loop {
            let mut r = [0u8; 8];
            sys::random_bytes(&mut r)?;
            let name = format!("mproc_{:016x}", u64::from_le_bytes(r));
            match SharedMemory::create_exact(name, size) {
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                other => return other,
            }
        }
    }

    /// Attaches to the existing block `name`.
    ///
    /// # Errors
    /// [`Error::Io`] with [`io::ErrorKind::NotFound`] when there is none;
    /// [`Error::InvalidArgument`] for a bad name.
    ///
    /// # Examples
    /// ```
    /// let e = multiproc::SharedMemory::attach("mp-doc-missing").unwrap_err();
    /// assert!(matches!(e, multiproc::Error::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<Self> {
        let name = check_name(name)?;
        let fd = sys::shm_open(&c_name(&name)?, false)?;
        let size = sys::file_len(fd.as_fd())?;
        if size == 0 {
            return Err(Error::InvalidArgument(format!(
                "shared memory {name:?} has size 0"
            )));
        }
        let map = Mapping::new(fd.as_fd(), size, false)?;
        Ok(SharedMemory { name, map, size })
    }

    /// The name (without the leading `/`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The first byte in this process's mapping, valid for
    /// [`size`](Self::size) bytes while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    fn range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "range {offset}..{} outside shared memory of {} bytes",
                offset.saturating_add(len),
                self.size
            ))),
        }
    }

    /// Copies `bytes` into the block at `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range passes the end.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.range(offset, bytes.len())?;
        // SAFETY: the range lies inside the mapping (checked), which is
        // made of whole pages and lives as long as `self`; other processes
        // may write the block at any time, so it is only touched through
        // `atomic` (or, unsafely, through `as_slice`/`as_mut_slice`, whose
        // callers exclude writers). `bytes` is ordinary memory of this
        // process and cannot overlap it.
        unsafe { atomic::store(bytes.as_ptr(), self.as_ptr().add(offset), bytes.len()) };
        Ok(())
    }

    /// Copies bytes from `offset` into `buf`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range passes the end.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.range(offset, buf.len())?;
        // SAFETY: as in `write_at`, in the other direction.
        unsafe { atomic::load(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// A copy of the whole block.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.size];
        // SAFETY: `v` holds exactly `size` bytes, the mapping too; as in
        // `read_at`.
        unsafe { atomic::load(self.as_ptr(), v.as_mut_ptr(), self.size) };
        v
    }

    /// The block as bytes (Python's `buf`).
    ///
    /// # Safety
    /// No process may write the block while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: mapped, initialized memory of `size` bytes; the caller
        // excludes writers.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.size) }
    }

    /// The block as mutable bytes.
    ///
    /// # Safety
    /// Nobody else (thread or process) may read or write the block while the
    /// slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, with exclusivity from the caller.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.size) }
    }

    /// Unmaps the block in this process (the same as dropping it); the name
    /// stays until [`unlink`](Self::unlink).
    pub fn close(self) {}

    /// Removes the name, so nobody can attach any more; mappings stay valid
    /// until closed. Call it once, from any process.
    ///
    /// # Errors
    /// [`Error::Io`] with [`io::ErrorKind::NotFound`] when the name is
    /// already gone.
    ///
    /// # Examples
    /// ```
    /// let shm = multiproc::SharedMemory::create_auto(16)?;
    /// shm.unlink()?;
    /// assert!(multiproc::SharedMemory::attach(shm.name()).is_err());
    /// assert!(shm.unlink().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<()> {
        unlink_name(&self.name)?;
        tracker::unregister(&self.name);
        Ok(())
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedMemory({:?}, size={})", self.name, self.size)
    }
}

/// Sent as its name (the receiver attaches by name, as Python does) plus
/// the sender's tracker pipe, so that the tracker also waits for the
/// receiver before unlinking.
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.name, tracker::share().map(Handle)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (name, tracker_fd): (String, Option<Handle<OwnedFd>>) = Deserialize::deserialize(d)?;
        if let Some(Handle(fd)) = tracker_fd {
            tracker::adopt(fd);
        }
        SharedMemory::attach(&name).map_err(serde::de::Error::custom)
    }
}
