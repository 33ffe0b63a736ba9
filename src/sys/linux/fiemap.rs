//! The block map of a file (`FS_IOC_FIEMAP`): which physical extents of
//! its device hold which bytes. `rustix` has no wrapper for it.
#![allow(unsafe_code)]

use super::retry;
use rustix::ioctl::{Opcode, Updater, opcode};
use std::io;
use std::os::fd::BorrowedFd;

/// `struct fiemap` of `<linux/fiemap.h>` without its trailing array.
#[repr(C)]
#[derive(Default)]
struct FiemapHead {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// `struct fiemap_extent` of `<linux/fiemap.h>`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// Extents asked for per call.
const BATCH: usize = 64;

/// The head followed by room for `BATCH` extents, as the kernel expects.
#[repr(C)]
struct FiemapBuf {
    head: FiemapHead,
    extents: [FiemapExtent; BATCH],
}

/// `FS_IOC_FIEMAP`: `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: Opcode = opcode::read_write::<FiemapHead>(b'f', 11);
const _: () = assert!(FS_IOC_FIEMAP as u64 == 0xC020_660B);
const _: () = assert!(size_of::<FiemapHead>() == 32 && size_of::<FiemapExtent>() == 56);

/// `FIEMAP_FLAG_SYNC`: write the file's dirty pages out before mapping.
const FIEMAP_FLAG_SYNC: u32 = 1;
/// `FIEMAP_EXTENT_LAST`: the file's last extent.
const FIEMAP_EXTENT_LAST: u32 = 0x1;

/// One extent as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawExtent {
    pub(crate) logical: u64,
    pub(crate) physical: u64,
    pub(crate) length: u64,
    pub(crate) flags: u32,
}

/// The extents of `fd` that overlap bytes `start..start + len`, in order
/// (holes are absent). With `sync`, the file's dirty pages are written
/// first, so that no extent is still only in memory. Fails with
/// `EOPNOTSUPP` where the filesystem has no block map (tmpfs, ...).
///
/// # References
/// ioctl_fiemap(2), Documentation/filesystems/fiemap.rst
pub(crate) fn fiemap(
    fd: BorrowedFd<'_>,
    start: u64,
    len: u64,
    sync: bool,
) -> io::Result<Vec<RawExtent>> {
    let end = start.saturating_add(len);
    let mut out = Vec::new();
    let mut pos = start;
    let mut flags = if sync { FIEMAP_FLAG_SYNC } else { 0 };
    let mut buf = Box::new(FiemapBuf {
        head: FiemapHead::default(),
        extents: [FiemapExtent::default(); BATCH],
    });
    while pos < end {
        buf.head = FiemapHead {
            fm_start: pos,
            fm_length: end - pos,
            fm_flags: flags,
            fm_extent_count: BATCH as u32,
            ..FiemapHead::default()
        };
        retry(|| {
            // SAFETY: `FS_IOC_FIEMAP` reads the `struct fiemap` head at the
            // pointer and writes the head's `fm_mapped_extents` and at most
            // `fm_extent_count` (= `BATCH`) `struct fiemap_extent`s right
            // after it. `FiemapBuf` is `repr(C)`: the head (32 bytes, the
            // size the opcode encodes) followed by an array of `BATCH`
            // extents laid out as the kernel's (56 bytes each, asserted
            // above), so every byte the kernel writes is inside `*buf`,
            // which is exclusively borrowed for the call; all fields are
            // integers, valid for any bit pattern. `fd` is a borrowed open
            // descriptor.
            unsafe { rustix::ioctl::ioctl(fd, Updater::<FS_IOC_FIEMAP, FiemapBuf>::new(&mut buf)) }
        })?;
        flags = 0;
        let n = (buf.head.fm_mapped_extents as usize).min(BATCH);
        out.extend(buf.extents[..n].iter().map(|e| RawExtent {
            logical: e.fe_logical,
            physical: e.fe_physical,
            length: e.fe_length,
            flags: e.fe_flags,
        }));
        // Fewer than asked for, or the file's last: the range is mapped.
        // Else go on after the last one, which ends past `pos` (a map that
        // does not is refused rather than cut short).
        match buf.extents[..n].last() {
            Some(last) if n == BATCH && last.fe_flags & FIEMAP_EXTENT_LAST == 0 => {
                let next = last.fe_logical.saturating_add(last.fe_length);
                if next <= pos {
                    return Err(io::Error::other(
                        "FIEMAP returned a map that does not advance",
                    ));
                }
                pos = next;
            }
            _ => break,
        }
    }
    Ok(out)
}
