//! Little-endian fields of the crate's binary headers (frames, pool
//! batches, queue records, fork-server replies, shareable lists): one
//! reader, so that every header reads its fields the same way.
//!
//! Callers check the length of what they read first; a field out of range
//! is a bug in the caller, not bad input, and panics.

/// The `u32` at `b[at..at + 4]`.
#[inline]
#[track_caller]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The `i32` at `b[at..at + 4]`.
#[inline]
#[track_caller]
pub(crate) fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The `u64` at `b[at..at + 8]`.
#[inline]
#[track_caller]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_little_endian_at_their_offset() {
        let b = [0xff, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(u32_at(&b, 1), 1);
        assert_eq!(i32_at(&[0xfe, 0xff, 0xff, 0xff], 0), -2);
        assert_eq!(u64_at(&b, 5), 2);
    }

    #[test]
    #[should_panic(expected = "range")]
    fn a_field_past_the_end_is_a_caller_bug() {
        u64_at(&[0; 8], 1);
    }
}
