//! Clones (`FICLONE`) and their verification by block maps (`FIEMAP`).

use super::range::{Way, copy_range_with};
use super::{CloneCheck, Copied};
use multiproc::fiemap::Extent;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// Makes `to` a clone of `from` (`FICLONE`: the copy shares the source's
/// blocks); false where the filesystem cannot (ext4, tmpfs, two
/// filesystems, ...), and the file is then copied byte by byte. A clone
/// is verified by its block map or byte for byte ([`CloneCheck`]).
pub fn clone(from: &File, to: &File) -> bool {
    rustix::fs::ioctl_ficlone(to, from).is_ok()
}

/// Verifies bytes `offset..offset + len` of `to`, a clone of `from` (a file
/// of `size` bytes): by the block maps where `check` allows and they prove
/// that the copy shares the source's blocks ([`shares_blocks`]), else by
/// reading them back and comparing them with the source.
pub(super) fn verify_clone(
    from: &File,
    to: &File,
    offset: u64,
    len: u64,
    size: u64,
    check: CloneCheck,
) -> Result<Copied, String> {
    if check == CloneCheck::BlockMap && shares_blocks(from, to, offset, len, size) {
        return Ok(Copied {
            cloned: len,
            mapped: len,
            ..Copied::default()
        });
    }
    copy_range_with(from, to, offset, len, size, true, Way::Cloned)
}

/// Extent flags that make a physical address meaningless for a
/// comparison: unknown or not yet allocated, encoded (compressed,
/// encrypted), inline in metadata, packed with other tails, unaligned.
const MEANINGLESS: u32 = Extent::UNKNOWN
    | Extent::DELALLOC
    | Extent::ENCODED
    | Extent::DATA_ENCRYPTED
    | Extent::NOT_ALIGNED
    | Extent::DATA_INLINE
    | Extent::DATA_TAIL;

/// Whether bytes `offset..offset + len` of `to` are stored in the very
/// blocks of the same bytes of `from` (a file of `size` bytes): both on one
/// device and of length `size`, and their block maps, written out first
/// (`FIEMAP_FLAG_SYNC`), agree as [`maps_share`] says. False whenever that
/// cannot be shown (no block map on this filesystem, an error, a
/// difference): the caller then compares the bytes.
pub fn shares_blocks(from: &File, to: &File, offset: u64, len: u64, size: u64) -> bool {
    let (Ok(a), Ok(b)) = (from.metadata(), to.metadata()) else {
        return false;
    };
    if a.dev() != b.dev() || a.len() != size || b.len() != size {
        return false;
    }
    let map = |f: &File| multiproc::fiemap::extents(f, offset, len, true);
    match (map(from), map(to)) {
        (Ok(src), Ok(dst)) => maps_share(&src, &dst, offset, len),
        _ => false,
    }
}

/// Whether two block maps prove that bytes `offset..offset + len` of the
/// second file are stored in the same blocks as those of the first: cut
/// to the range and with adjacent extents joined where they continue each
/// other, both maps list the same extents (same offset, physical address,
/// length, and unwritten or not) and the same holes, every extent of the
/// second is marked shared, and no extent has a flag that makes its
/// address meaningless ([`MEANINGLESS`]).
pub fn maps_share(src: &[Extent], dst: &[Extent], offset: u64, len: u64) -> bool {
    let end = offset.saturating_add(len);
    match (runs(src, offset, end, false), runs(dst, offset, end, true)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The extents of `map` within `offset..end`, cut to it, as
/// (offset, physical address, length, unwritten), adjacent ones joined
/// where they continue each other. `None` if one has a meaningless
/// address, is not `shared` where that is required, or the map is out of
/// order.
fn runs(map: &[Extent], offset: u64, end: u64, shared: bool) -> Option<Vec<(u64, u64, u64, bool)>> {
    let mut out: Vec<(u64, u64, u64, bool)> = Vec::new();
    let mut seen = offset;
    for e in map {
        let (s, t) = (
            e.logical.max(offset),
            e.logical.saturating_add(e.length).min(end),
        );
        if s >= t {
            continue;
        }
        if s < seen || e.has(MEANINGLESS) || (shared && !e.has(Extent::SHARED)) {
            return None;
        }
        seen = t;
        let physical = e.physical.checked_add(s - e.logical)?;
        let unwritten = e.has(Extent::UNWRITTEN);
        match out.last_mut() {
            Some(last)
                if last.0 + last.2 == s
                    && last.1.checked_add(last.2) == Some(physical)
                    && last.3 == unwritten =>
            {
                last.2 += t - s
            }
            _ => out.push((s, physical, t - s, unwritten)),
        }
    }
    Some(out)
}
