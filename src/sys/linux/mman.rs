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

/// The identity of the file behind `fd`: its device and inode numbers
/// (the same for every descriptor of one memory file, in any process).
pub(crate) fn file_identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev as u64, st.st_ino as u64))
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

/// The seals a sealed memory file carries: no write, no resize, no
/// further change of seals.
fn full_seals() -> rustix::fs::SealFlags {
    use rustix::fs::SealFlags;
    SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

/// Creates an anonymous memory file of `len` bytes (zero-filled),
/// close-on-exec, that can be sealed ([`seal_read_only`]).
///
/// # References
/// memfd_create(2) (`MFD_ALLOW_SEALING`), ftruncate(2)
pub(crate) fn memfd_create_sealable(name: &CStr, len: usize) -> io::Result<OwnedFd> {
    use rustix::fs::MemfdFlags;
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    set_len(std::os::fd::AsFd::as_fd(&fd), len)?;
    Ok(fd)
}

/// Writes all of `data` into the file behind `fd` at `offset`.
///
/// # References
/// pwrite(2)
pub(crate) fn write_all_at(fd: BorrowedFd<'_>, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    while !data.is_empty() {
        let n = retry(|| rustix::io::pwrite(fd, data, offset))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

/// A new memory file holding a copy of `data` (written with `pwrite`, so
/// nothing writable is ever mapped), sealed by [`seal_read_only`].
pub(crate) fn sealed_copy(name: &CStr, data: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create_sealable(name, data.len())?;
    write_all_at(std::os::fd::AsFd::as_fd(&fd), data, 0)?;
    seal_read_only(std::os::fd::AsFd::as_fd(&fd))?;
    Ok(fd)
}

/// Seals a memory file made by [`memfd_create_sealable`] against every
/// change: no write (through a descriptor or a mapping), no shrinking, no
/// growing, no change of the seals. Fails with `EBUSY` while a writable
/// shared mapping of it exists.
///
/// # References
/// fcntl(2) (`F_ADD_SEALS`), memfd_create(2)
pub(crate) fn seal_read_only(fd: BorrowedFd<'_>) -> io::Result<()> {
    retry(|| rustix::fs::fcntl_add_seals(fd, full_seals()))
}

/// Checks that `fd` is a memory file sealed against writes and against
/// changes of size (as [`seal_read_only`] seals it), and returns its size.
/// A file that is not a memory file, or lacks one of those seals, is an
/// error: its contents or its size could change under a mapping of it
/// (a shrunk file turns reads of its mapping into `SIGBUS`).
///
/// # References
/// fcntl(2) (`F_GET_SEALS`), memfd_create(2)
pub(crate) fn sealed_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    use rustix::fs::SealFlags;
    len_if_sealed(
        fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW,
        "writes and resizing",
    )
}

/// The size of the memory file `fd` if it carries the seals `need`
/// (`against` names them for the error), else an `InvalidData` error.
fn len_if_sealed(
    fd: BorrowedFd<'_>,
    need: rustix::fs::SealFlags,
    against: &str,
) -> io::Result<usize> {
    let seals = retry(|| rustix::fs::fcntl_get_seals(fd)).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a sealable memory file ({e})"),
        )
    })?;
    if !seals.contains(need) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("memory file is not sealed against {against} (seals {seals:?})"),
        ));
    }
    file_len(fd)
}

/// A read-only, `MAP_SHARED` mapping of a whole memory file sealed by
/// [`seal_read_only`] (checked with [`sealed_len`]), unmapped on drop.
///
/// Because of the seals nobody can write the file or change its size while
/// it is mapped, so its bytes may be read as ordinary immutable memory.
#[derive(Debug)]
pub(crate) struct SealedMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapped bytes are immutable for the mapping's whole life (the
// file is sealed against writes and resizing), so sharing or moving the
// mapping between threads cannot race.
unsafe impl Send for SealedMapping {}
// SAFETY: as above.
unsafe impl Sync for SealedMapping {}

impl SealedMapping {
    /// Maps the sealed memory file `fd`, after checking its seals, read-only.
    /// Returns `None` for an empty file (nothing to map).
    ///
    /// # Errors
    /// A file that is not a memory file sealed against writes and resizing
    /// (`InvalidData`), or a failed `mmap`.
    ///
    /// # References
    /// mmap(2)
    pub(crate) fn new(fd: BorrowedFd<'_>) -> io::Result<Option<SealedMapping>> {
        let len = sealed_len(fd)?;
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: a fresh read-only mapping chosen by the kernel (null
        // hint), of a descriptor we borrow for the call; it aliases no Rust
        // object. The seals checked above keep the file's bytes and size
        // fixed for as long as the mapping lives, so no access through it
        // can fault or see a change.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Some(SealedMapping { ptr, len }))
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe a live read-only mapping owned by
        // `self` (unmapped only on drop, which the borrow outlives not);
        // the file is sealed against writes, shrinking and growing, so the
        // bytes are initialized, stay in bounds and never change.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by
        // `SealedMapping::new` and unmapped only here; borrows of it cannot
        // outlive `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A memory file being filled by its creator, before it is sealed: the
/// descriptor never leaves this value until [`UnsealedFile::seal`], so the
/// writable mapping it holds is the only access to the file's bytes.
#[derive(Debug)]
pub(crate) struct UnsealedFile {
    fd: OwnedFd,
    map: Option<Mapping>,
}

impl UnsealedFile {
    /// A new, zero-filled, sealable memory file of `len` bytes, mapped
    /// read-write with its pages faulted in.
    pub(crate) fn new(name: &CStr, len: usize) -> io::Result<UnsealedFile> {
        let fd = memfd_create_sealable(name, len)?;
        let map = match len {
            0 => None,
            _ => Some(Mapping::new(std::os::fd::AsFd::as_fd(&fd), len, true)?),
        };
        Ok(UnsealedFile { fd, map })
    }

    /// The file's bytes, writable.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match &self.map {
            // SAFETY: the mapping covers the whole file and lives as long
            // as `self`; the descriptor has not left this value (it is
            // created in `new` and handed out only by `seal`, which first
            // drops the mapping), so no other mapping, descriptor or
            // process can read or write the file, and `&mut self` rules
            // out a second borrow through this one. A fresh memory file's
            // bytes are zeros, so they are initialized.
            Some(m) => unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), m.len()) },
            None => &mut [],
        }
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.map {
            // SAFETY: as in `bytes_mut`; `&self` rules out a writer.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) },
            None => &[],
        }
    }

    /// Unmaps the file, seals it against every change and maps it again,
    /// read-only.
    pub(crate) fn seal(self) -> io::Result<SealedFile> {
        SealedFile::from_fd(self.seal_fd()?)
    }

    /// Unmaps the file and seals it against every change; returns its
    /// descriptor (for a file this process only sends).
    pub(crate) fn seal_fd(self) -> io::Result<OwnedFd> {
        let UnsealedFile { fd, map } = self;
        // The write seal is refused while a writable mapping exists.
        drop(map);
        seal_read_only(std::os::fd::AsFd::as_fd(&fd))?;
        Ok(fd)
    }
}

/// A memory file sealed against writes and resizing, with a read-only
/// mapping of its bytes.
#[derive(Debug)]
pub(crate) struct SealedFile {
    // The mapping is dropped before the descriptor (field order).
    map: Option<SealedMapping>,
    fd: OwnedFd,
}

impl SealedFile {
    /// A sealed memory file holding a copy of `data` (written with
    /// `pwrite`, so the creator maps nothing writable).
    pub(crate) fn from_slice(name: &CStr, data: &[u8]) -> io::Result<SealedFile> {
        SealedFile::from_fd(sealed_copy(name, data)?)
    }

    /// Takes a memory file received from elsewhere, after checking that it
    /// is sealed against writes and resizing ([`sealed_len`]), and maps it
    /// read-only.
    ///
    /// # Errors
    /// `InvalidData` for a descriptor that is not such a sealed memory
    /// file; the error of a failed `mmap`.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<SealedFile> {
        let map = SealedMapping::new(std::os::fd::AsFd::as_fd(&fd))?;
        Ok(SealedFile { map, fd })
    }

    /// The file's bytes (page aligned).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], SealedMapping::bytes)
    }

    /// The descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}

/// Seals a memory file made by [`memfd_create_sealable`] against any
/// change of size (and of its seals), leaving it writable: a mapping of it
/// can then never turn into `SIGBUS` because someone shrank the file.
///
/// # References
/// fcntl(2) (`F_ADD_SEALS`), memfd_create(2)
pub(crate) fn seal_size(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::fs::SealFlags;
    retry(|| rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL))
}

/// Checks that `fd` is a memory file sealed against changes of size (as
/// [`seal_size`] seals it), and returns its size.
///
/// # References
/// fcntl(2) (`F_GET_SEALS`)
pub(crate) fn size_sealed_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    use rustix::fs::SealFlags;
    len_if_sealed(fd, SealFlags::SHRINK | SealFlags::GROW, "resizing")
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
