//! Copies into and out of memory that other processes may write at any
//! time, without a data race.
//!
//! Under the Rust memory model a plain access that races with any other
//! access (plain, volatile or atomic, from this or another process) is
//! undefined behaviour. Memory that is shared without a lock (`RawValue`,
//! `RawArray`, `SharedMemory`) is therefore only touched here, with relaxed
//! atomic accesses, and always with the same width: whole 8-aligned
//! `AtomicU64` words. (Mixed-size atomic accesses that race are not allowed
//! either, so a partial word at either end of a range is written with a
//! compare-exchange on its whole word, keeping the bytes outside the range.)
//!
//! Every access is atomic, but a copy is not: a value that spans several
//! words, or several values, may be seen half old and half new. The types
//! copied are valid for every bit pattern, so a torn value is still a value.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

const WORD: usize = 8;

/// The word that holds address `a`, rounded down.
///
/// # Safety
/// The 8-aligned word at or below `a` must be mapped shared memory that is
/// only ever accessed atomically.
#[inline(always)]
unsafe fn word<'a>(a: usize) -> &'a AtomicU64 {
    // SAFETY: aligned to 8 by construction; the caller guarantees the word
    // is mapped and only accessed atomically.
    unsafe { AtomicU64::from_ptr((a & !(WORD - 1)) as *mut u64) }
}

/// Copies `n` bytes from shared memory at `src` into private memory at
/// `dst`.
///
/// # Safety
/// - `src..src + n` lies in a mapping of whole pages (so the 8-aligned
///   words around it are mapped too) that stays mapped during the call, and
///   that every process only accesses through this module or through other
///   relaxed-or-stronger `AtomicU64` accesses of aligned words;
/// - `dst` is valid for `n` bytes of writes and does not overlap `src`.
#[inline]
pub(crate) unsafe fn load(src: *const u8, dst: *mut u8, n: usize) {
    if n == 0 {
        return;
    }
    let start = src as usize;
    let end = start + n;
    let mut a = start;
    let mut out = dst;
    // A partial first word.
    if a % WORD != 0 || end - a < WORD {
        // SAFETY: the word holding `a` is in the mapping (caller).
        let w = unsafe { word(a) }.load(Ordering::Relaxed).to_ne_bytes();
        let lo = a % WORD;
        let hi = (end - (a - lo)).min(WORD);
        // SAFETY: `hi - lo <= n` bytes fit in `dst`; `w` is a local.
        unsafe { std::ptr::copy_nonoverlapping(w.as_ptr().add(lo), out, hi - lo) };
        // SAFETY: stays within (or one past) `dst`.
        out = unsafe { out.add(hi - lo) };
        a += hi - lo;
    }
    // Whole words.
    while end - a >= WORD {
        // SAFETY: `a` is 8-aligned here and the word is inside the range.
        let v = unsafe { word(a) }.load(Ordering::Relaxed);
        // SAFETY: 8 more bytes of `dst` remain; unaligned is fine.
        unsafe {
            out.cast::<u64>().write_unaligned(v);
            out = out.add(WORD);
        }
        a += WORD;
    }
    // A partial last word.
    if a < end {
        // SAFETY: the word holding `a` is in the mapping (caller).
        let w = unsafe { word(a) }.load(Ordering::Relaxed).to_ne_bytes();
        // SAFETY: `end - a < 8` bytes remain in `dst`.
        unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), out, end - a) };
    }
}

/// Writes `part` into the word holding `a`, starting at byte `a % 8`,
/// keeping the word's other bytes.
///
/// # Safety
/// As for [`store`]; `a % 8 + part.len() <= 8`.
#[inline]
unsafe fn store_partial(a: usize, part: &[u8]) {
    let lo = a % WORD;
    // SAFETY: the word holding `a` is in the mapping (caller).
    let w = unsafe { word(a) };
    let merge = |old: u64| {
        let mut b = old.to_ne_bytes();
        b[lo..lo + part.len()].copy_from_slice(part);
        Some(u64::from_ne_bytes(b))
    };
    // `merge` always returns `Some`, so this cannot fail.
    let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, merge);
}

/// Copies `n` bytes from private memory at `src` into shared memory at
/// `dst`.
///
/// # Safety
/// As for [`load`], with the roles of `src` and `dst` swapped: `dst..dst+n`
/// is the shared range, `src` is valid for `n` bytes of reads.
#[inline]
pub(crate) unsafe fn store(src: *const u8, dst: *mut u8, n: usize) {
    if n == 0 {
        return;
    }
    // SAFETY: the caller guarantees `src` is valid for `n` bytes of reads.
    let src = unsafe { std::slice::from_raw_parts(src, n) };
    let end = dst as usize + n;
    let mut a = dst as usize;
    let mut i = 0;
    if a % WORD != 0 || n < WORD {
        let k = (WORD - a % WORD).min(n);
        // SAFETY: as for `store`; `a % 8 + k <= 8`.
        unsafe { store_partial(a, &src[..k]) };
        a += k;
        i = k;
    }
    while end - a >= WORD {
        let v = u64::from_ne_bytes(src[i..i + WORD].try_into().unwrap_or_default());
        // SAFETY: `a` is 8-aligned here and the word is inside the range.
        unsafe { word(a) }.store(v, Ordering::Relaxed);
        a += WORD;
        i += WORD;
    }
    if a < end {
        // SAFETY: as for `store`; `a` is 8-aligned and `end - a < 8`.
        unsafe { store_partial(a, &src[i..]) };
    }
}
