//! Code addresses that mean the same in every process running this build:
//! how a parent names the function a child, a pool worker or a barrier's
//! action should run.
//!
//! A function travels as its offset from [`anchor`], which does not depend
//! on where ASLR placed the binary. A received offset is accepted only when
//! the resulting address lies inside the executable segment of the object
//! that holds this crate's code; the callers check beforehand that the
//! sender runs this same build ([`build_identity`]).
#![allow(unsafe_code)]

use crate::sys;

/// The fixed point entry offsets are measured from.
#[inline(never)]
pub(crate) fn anchor() -> u32 {
    std::hint::black_box(0x6d70_726f)
}

/// Identifies this build of the binary: the distance between two functions
/// of this crate plus the crate version.
pub(crate) fn build_identity() -> u64 {
    type SpawnSelf =
        fn(&std::ffi::CStr, &[(&str, &str)], std::os::fd::BorrowedFd<'_>) -> std::io::Result<u32>;
    let a = anchor as fn() -> u32 as usize as u64;
    let b = sys::spawn_self as SpawnSelf as usize as u64;
    let mut h = b.wrapping_sub(a);
    for byte in env!("CARGO_PKG_VERSION").bytes() {
        h = h.rotate_left(5) ^ u64::from(byte);
    }
    h
}

/// The distance of a code address (a function pointer cast to `usize`)
/// from [`anchor`]: the same in every process running this build, wherever
/// ASLR placed it.
#[inline]
pub(crate) fn code_offset(addr: usize) -> u64 {
    addr.wrapping_sub(anchor as fn() -> u32 as usize) as u64
}

/// The executable segment holding this crate's code, found once: it does
/// not move while the process lives, and a process forked after the first
/// call (the fork server's children) inherits the answer.
pub(crate) fn code_segment() -> Option<(usize, usize)> {
    static SEGMENT: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *SEGMENT.get_or_init(|| sys::code_segment_containing(anchor as fn() -> u32 as usize))
}

/// Checks that `offset` from [`anchor`] lands inside this crate's
/// executable segment and returns the address.
fn resolve_code(offset: u64) -> Result<usize, String> {
    let base = anchor as fn() -> u32 as usize;
    let addr = base.wrapping_add(offset as usize);
    let (start, end) =
        code_segment().ok_or_else(|| "cannot locate this binary's code segment".to_string())?;
    if !(start..end).contains(&addr) {
        return Err(format!(
            "entry offset {offset:#x} points outside the code segment"
        ));
    }
    Ok(addr)
}

/// Turns an offset made by [`code_offset`] of a function pointer of type
/// `F` back into that pointer, refusing any address outside this crate's
/// executable segment.
///
/// # Safety
/// `F` must be a function pointer type, and `offset` must have been
/// produced by [`code_offset`] of an `F` in a process running this same
/// build (callers check the build identity and receive the offset on a
/// channel no other process can write to).
pub(crate) unsafe fn resolve_fn<F: Copy>(offset: u64) -> Result<F, String> {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
    let addr = resolve_code(offset)?;
    // SAFETY: `F` has the size of a code address (asserted at compile
    // time); the address lies inside our own executable segment and, by the
    // caller's obligation, is that of a function of type `F` of this build.
    Ok(unsafe { std::mem::transmute_copy::<usize, F>(&addr) })
}
