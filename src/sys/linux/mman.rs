//! Shared memory: anonymous (`memfd_create`) and named (`shm_open`) files,
//! and their `MAP_SHARED` mappings.
#![allow(unsafe_code)]

use super::{cvt, cvt_r};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// Creates an anonymous memory file of `len` bytes (zero-filled),
/// close-on-exec. It lives as long as a descriptor or mapping refers to it,
/// and has no name anywhere in the file system.
///
/// # References
/// memfd_create(2), ftruncate(2)
pub(crate) fn memfd_create(name: &CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a NUL-terminated string; flags are plain integers.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_len(std::os::fd::AsFd::as_fd(&fd), len)?;
    Ok(fd)
}

/// Sets the size of a memory file.
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: ftruncate on a borrowed descriptor with a non-negative length.
    cvt_r(|| unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(())
}

/// The size in bytes of the file behind `fd`.
pub(crate) fn file_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: an all-zero `stat` is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, writable stat buffer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_size.max(0) as usize)
}

/// Opens the POSIX shared-memory object `name` (which starts with `/`),
/// creating it exclusively with mode 0600 when `create` is true.
/// Close-on-exec.
///
/// # References
/// shm_open(3)
pub(crate) fn shm_open(name: &CStr, create: bool) -> io::Result<OwnedFd> {
    let flags = if create {
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC
    } else {
        libc::O_RDWR | libc::O_CLOEXEC
    };
    // SAFETY: `name` is NUL-terminated; flags and mode are plain integers.
    let fd = cvt_r(|| unsafe { libc::shm_open(name.as_ptr(), flags, 0o600 as libc::mode_t) })?;
    // SAFETY: a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the name of a POSIX shared-memory object; mappings stay valid.
///
/// # References
/// shm_unlink(3)
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) })?;
    Ok(())
}

/// A `MAP_SHARED`, read-write mapping of a whole memory file, unmapped on
/// drop.
///
/// The memory may be written by other processes at any time; everything
/// built on it goes through atomics, volatile accesses or a cross-process
/// lock.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is plain memory owned by this value; moving it to
// another thread or sharing `&Mapping` hands out nothing but the raw
// pointer, whose uses are the callers' responsibility.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write. With `populate`, the
    /// pages are faulted in at once (`MAP_POPULATE`).
    ///
    /// # References
    /// mmap(2)
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize, populate: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map 0 bytes",
            ));
        }
        let mut flags = libc::MAP_SHARED;
        if populate {
            flags |= libc::MAP_POPULATE;
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint), of a
        // descriptor we borrow for the call; it aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `Mapping::new` and
        // unmapped only here; borrows of it cannot outlive `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
