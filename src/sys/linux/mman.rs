//! Shared memory: anonymous (`memfd_create`) and named (`shm_open`) files,
//! and their `MAP_SHARED` mappings.
#![allow(unsafe_code)]

use super::retry;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mm::{Advice, MapFlags, ProtFlags};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;

/// Creates an anonymous memory file of `len` bytes (zero-filled),
/// close-on-exec. It lives as long as a descriptor or mapping refers to it,
/// and has no name anywhere in the file system.
///
/// # References
/// memfd_create(2), ftruncate(2)
pub(crate) fn memfd_create(name: &CStr, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
    set_len(std::os::fd::AsFd::as_fd(&fd), len)?;
    Ok(fd)
}

/// Sets the size of a memory file.
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    // The kernel takes a signed `off_t`.
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    retry(|| rustix::fs::ftruncate(fd, len as u64))
}

/// The size in bytes of the file behind `fd`.
pub(crate) fn file_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(rustix::fs::fstat(fd)?.st_size.max(0) as usize)
}

/// Where the C library keeps POSIX shared-memory objects.
const SHM_DIR: &str = "/dev/shm/";

/// The path of shared-memory object `name`, checked as glibc's `shm_open`
/// checks it: leading slashes dropped, then a non-empty file name other
/// than `.` and `..`, without `/`, of at most `NAME_MAX` bytes.
fn shm_path(name: &CStr) -> io::Result<CString> {
    let bytes = name.to_bytes();
    let start = bytes.iter().take_while(|&&b| b == b'/').count();
    let file = &bytes[start..];
    if file.is_empty() || file == b"." || file == b".." || file.contains(&b'/') {
        return Err(Errno::INVAL.into());
    }
    if file.len() > 255 {
        return Err(Errno::NAMETOOLONG.into());
    }
    let mut path = Vec::with_capacity(SHM_DIR.len() + file.len() + 1);
    path.extend_from_slice(SHM_DIR.as_bytes());
    path.extend_from_slice(file);
    // `file` comes from a `CStr`, so it holds no NUL.
    CString::new(path).map_err(|_| Errno::INVAL.into())
}

/// Opens the POSIX shared-memory object `name` (which starts with `/`),
/// creating it exclusively with mode 0600 when `create` is true.
/// Close-on-exec, and never through a symbolic link (`O_NOFOLLOW`), as
/// glibc's `shm_open` opens it.
///
/// # References
/// shm_open(3)
pub(crate) fn shm_open(name: &CStr, create: bool) -> io::Result<OwnedFd> {
    let path = shm_path(name)?;
    let mut flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if create {
        flags |= OFlags::CREATE | OFlags::EXCL;
    }
    retry(|| rustix::fs::open(path.as_c_str(), flags, Mode::RUSR | Mode::WUSR))
}

/// Removes the name of a POSIX shared-memory object; mappings stay valid.
///
/// # References
/// shm_unlink(3)
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::unlink(shm_path(name)?.as_c_str())?)
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
        let mut flags = MapFlags::SHARED;
        if populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint), of a
        // descriptor we borrow for the call; it aliases no Rust object.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                0,
            )
        }?;
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Faults every page in for writing now (page tables populated,
    /// memory allocated), so that later accesses take no page faults.
    ///
    /// # References
    /// madvise(2) (`MADV_POPULATE_WRITE`, Linux 5.14)
    pub(crate) fn populate(&self) -> io::Result<()> {
        // SAFETY: the advice only faults in pages of our own live mapping;
        // it does not change their contents.
        unsafe {
            rustix::mm::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                Advice::LinuxPopulateWrite,
            )
        }?;
        Ok(())
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
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::shm_path;

    #[test]
    fn shm_names_are_checked_as_glibc_checks_them() {
        assert_eq!(shm_path(c"/abc").unwrap().as_bytes(), b"/dev/shm/abc");
        assert_eq!(shm_path(c"//abc").unwrap().as_bytes(), b"/dev/shm/abc");
        assert_eq!(shm_path(c"abc").unwrap().as_bytes(), b"/dev/shm/abc");
        for bad in [c"", c"/", c"/.", c"/..", c"/a/b"] {
            let e = shm_path(bad).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
        let long = std::ffi::CString::new(format!("/{}", "x".repeat(256))).unwrap();
        assert_eq!(
            shm_path(&long).unwrap_err().raw_os_error(),
            Some(libc::ENAMETOOLONG)
        );
    }
}
