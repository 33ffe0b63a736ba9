//! The block map of a file (`FIEMAP`): which physical extents of its
//! device hold which of its bytes.
//!
//! A copy tool uses it to check a clone (`FICLONE`) without reading it
//! back: a clone whose map reports, for every byte range, the source's own
//! extents marked shared holds the source's bytes. The map is the
//! filesystem's bookkeeping, not the bytes; see [`Extent::flags`] for the
//! extents whose physical address means nothing.

use crate::Result;
use std::os::fd::AsFd;

/// One extent of a file's block map: bytes
/// `logical..logical + length` of the file are stored at
/// `physical..physical + length` of its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extent {
    /// Its offset in the file, in bytes.
    pub logical: u64,
    /// Its offset on the device, in bytes (meaningless with
    /// [`Extent::UNKNOWN`] and the other flags that say so).
    pub physical: u64,
    /// Its length in bytes (whole blocks: the last extent may run past the
    /// end of the file).
    pub length: u64,
    /// `FIEMAP_EXTENT_*` flags: the associated constants of this type.
    pub flags: u32,
}

impl Extent {
    /// The file's last extent.
    pub const LAST: u32 = 0x1;
    /// Where the data is, is not known (its physical address means nothing).
    pub const UNKNOWN: u32 = 0x2;
    /// Not yet allocated (delayed allocation); also sets `UNKNOWN`.
    pub const DELALLOC: u32 = 0x4;
    /// The data is compressed or otherwise encoded: not readable as is.
    pub const ENCODED: u32 = 0x8;
    /// The data is encrypted; also sets `ENCODED`.
    pub const DATA_ENCRYPTED: u32 = 0x80;
    /// The extent's offsets are not block-aligned.
    pub const NOT_ALIGNED: u32 = 0x100;
    /// The data sits in a metadata block; also sets `NOT_ALIGNED`.
    pub const DATA_INLINE: u32 = 0x200;
    /// Several files' tails share a block; also sets `NOT_ALIGNED`.
    pub const DATA_TAIL: u32 = 0x400;
    /// Allocated but never written: reads as zeros.
    pub const UNWRITTEN: u32 = 0x800;
    /// The filesystem merged blocks into this extent for the report.
    pub const MERGED: u32 = 0x1000;
    /// Shared with another file or snapshot (a clone's extents are).
    pub const SHARED: u32 = 0x2000;

    /// Whether `flag` (one or more of the constants above) is set.
    ///
    /// # Examples
    /// ```
    /// use multiproc::fiemap::Extent;
    /// let e = Extent { flags: Extent::SHARED | Extent::LAST, ..Extent::default() };
    /// assert!(e.has(Extent::SHARED));
    /// assert!(!e.has(Extent::UNKNOWN));
    /// ```
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// The extents of `file` that overlap its bytes `start..start + len`, in
/// file order; holes have none. With `sync` the file's dirty pages are
/// written out first (`FIEMAP_FLAG_SYNC`), so that no extent is only in
/// memory still.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) with `EOPNOTSUPP` where the filesystem
/// keeps no block map (tmpfs, ...) or `ENOTTY` for something other than
/// a file; any other error of `ioctl(FS_IOC_FIEMAP)`.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("fiemap-doc-{}", std::process::id()));
/// std::fs::write(&path, vec![7u8; 1 << 16])?;
/// let file = std::fs::File::open(&path)?;
/// match multiproc::fiemap::extents(&file, 0, 1 << 16, true) {
///     Ok(map) => {
///         // Data that was written takes up at least one extent.
///         assert!(map.iter().map(|e| e.length).sum::<u64>() >= 1 << 16);
///     }
///     Err(e) => println!("no block map here: {e}"),
/// }
/// std::fs::remove_file(&path)?;
/// # Ok(())
/// # }
/// ```
pub fn extents(file: impl AsFd, start: u64, len: u64, sync: bool) -> Result<Vec<Extent>> {
    Ok(crate::sys::fiemap(file.as_fd(), start, len, sync)?
        .into_iter()
        .map(|e| Extent {
            logical: e.logical,
            physical: e.physical,
            length: e.length,
            flags: e.flags,
        })
        .collect())
}
