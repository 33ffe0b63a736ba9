//! Large messages through a sealed memory file instead of the socket.
//!
//! A message whose encoding reaches [`SPILL_MIN`] bytes is encoded into an
//! anonymous memory file, sealed against writes and resizing, and the frame
//! carries only an *envelope*: a 16-byte marker, the index of the file in
//! the message's handle table and the encoding's length (28 bytes). The
//! receiver checks the seals, maps the file read-only and decodes from the
//! mapping. Only this crate's own connections (`Pipe`, the channels of
//! processes) use it; Python framing carries no descriptors.
//!
//! What it saves is the socket: the kernel copies a stream socket's bytes in
//! and out in small pieces, with a wake-up for each buffer's worth, while a
//! memory file is written once by the sender and mapped by the receiver.
//! Measured on 2 loaded cores (a `Vec<u8>` sent to a child that answers
//! with its length): 64 KiB 0.28 ms through the socket against 0.6 ms
//! spilled, 256 KiB 0.56 against 0.96 ms (and one noisy run the other way
//! round), 1 MiB 3.4-7.9 against 3.2-5.6 ms, 4 MiB 49-55 against 26-39 ms,
//! 8 MiB 104 against 32-34 ms, 64 MiB 2.9-3.8 s against 0.34-0.88 s. So
//! the threshold is 4 MiB, where the gain is clear in every run.
//!
//! Below [`SPILL_MIN`], from 64 KiB of payload on, a message without
//! handles on a native connection goes through one of the sending end's
//! reused shared buffers instead (see `connection::bulk`): those are mapped
//! and faulted in once, so a 1 MiB message pays no page faults of a fresh
//! file, which is what made a fresh file no faster than the socket there.
//!
//! The value is still encoded and decoded: an owned `Vec<u8>` costs one
//! copy into the file and one out of it, like the socket's two (only
//! `SharedBytes` is independent of the size). When the last large message
//! sent by this thread was large, the size is measured first and the value
//! encoded straight into the file's mapping; otherwise it is encoded into
//! the frame buffer as usual and, if it turned out large, copied into the
//! file.

use super::{decode_in_limited, decode_limited, encode_exact, encode_into, encoded_size};
use crate::error::{Error, Result};
use crate::sys;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::Cell;
use std::os::fd::OwnedFd;

/// From this encoded size on (4 MiB), a message sent on a
/// [`Connection`](crate::Connection) between this crate's processes (a
/// [`Pipe`](crate::Pipe), process arguments and results) travels in an
/// anonymous memory file sealed against writes and resizing, whose
/// descriptor the frame carries, instead of through the socket's bytes.
///
/// The value is still encoded and decoded: an owned `Vec<u8>` costs a copy
/// into the file and one out of it, as through the socket; what it saves
/// is the socket's piecewise copying and wake-ups (a 64 MiB message
/// crossed 3-7x faster on 2 loaded cores; at 1 MiB a fresh file brought no
/// gain, so smaller messages, from 64 KiB on, go through shared buffers
/// each sending end reuses, already mapped on both sides, instead: see
/// [`Connection`](crate::Connection)). To hand over data without any copy, build it in a
/// [`SharedBytes`](crate::SharedBytes) or [`SharedSlice`](crate::SharedSlice).
/// The receiver's [`max_message_size`](crate::Connection::max_message_size)
/// applies to the spilled size. Listener/Client connections (Python
/// framing) never spill.
pub const SPILL_MIN: usize = 4 << 20;

/// The start of an envelope: 16 bytes no ordinary 28-byte message begins
/// with unless it carries this very marker.
const MARKER: [u8; 16] = *b"\xa7mp\x00spill\x00\x93\x1c\x5e\xd2\x04\xb8";

/// An envelope: marker, handle index (`u32`), encoded length (`u64`).
const ENVELOPE: usize = 16 + 4 + 8;

/// The name the memory files carry in `/proc/<pid>/fd`.
const NAME: &std::ffi::CStr = c"multiproc-message";

thread_local! {
    /// Whether the last message encoded by this thread was spilled.
    static LAST_SPILLED: Cell<bool> = const { Cell::new(false) };
}

/// Appends `fd` to `fds` and the envelope naming it to `buf`.
fn envelope(buf: &mut Vec<u8>, fds: &mut Vec<OwnedFd>, fd: OwnedFd, len: usize) {
    let index = fds.len() as u32;
    fds.push(fd);
    buf.extend_from_slice(&MARKER);
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&(len as u64).to_le_bytes());
}

/// Encodes `value` as one message: its bytes appended to `buf` and its
/// handles to `fds`, or, from [`SPILL_MIN`] bytes on, an envelope in `buf`
/// and a sealed memory file holding the bytes as the last of `fds`.
pub(crate) fn encode_message<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
) -> Result<()> {
    let start = buf.len();
    let io = |e: std::io::Error| Error::Encode(format!("cannot spill a large message: {e}"));
    if LAST_SPILLED.with(Cell::get) {
        let len = encoded_size(value)?;
        if len >= SPILL_MIN {
            let mut file = sys::UnsealedFile::new(NAME, len).map_err(io)?;
            let before = fds.len();
            if let Err(e) = encode_exact(value, file.bytes_mut(), fds) {
                fds.truncate(before);
                return Err(e);
            }
            let fd = file.seal_fd().map_err(io)?;
            envelope(buf, fds, fd, len);
            return Ok(());
        }
        LAST_SPILLED.with(|l| l.set(false));
    }
    encode_into(value, buf, fds)?;
    let len = buf.len() - start;
    if len >= SPILL_MIN {
        LAST_SPILLED.with(|l| l.set(true));
        let fd = sys::sealed_copy(NAME, &buf[start..]).map_err(io)?;
        buf.truncate(start);
        envelope(buf, fds, fd, len);
    }
    Ok(())
}

/// Decodes one message written by [`encode_message`] (or by
/// [`encode_into`]): an envelope is replaced by the sealed memory file it
/// names, which must hold at most `max` bytes.
///
/// # Errors
/// [`Error::Decode`] for an envelope whose file did not arrive, is not a
/// memory file sealed against writes and resizing, or is not as long as
/// the envelope says; [`Error::MessageTooLarge`] beyond `max`; else as
/// [`decode_limited`].
pub(crate) fn decode_message<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    depth: u32,
    max: u64,
) -> Result<T> {
    if bytes.len() != ENVELOPE || bytes[..16] != MARKER {
        return decode_limited(bytes, fds, depth);
    }
    let index = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    let len = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    if len > max {
        return Err(Error::MessageTooLarge { size: len, max });
    }
    let mut table: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let fd = table.get_mut(index).and_then(Option::take).ok_or_else(|| {
        Error::Decode(format!(
            "large message refers to handle #{index}, which did not arrive with it"
        ))
    })?;
    let file = sys::SealedFile::from_fd(fd)
        .map_err(|e| Error::Decode(format!("large message refused: {e}")))?;
    if file.bytes().len() as u64 != len {
        return Err(Error::Decode(format!(
            "large message holds {} bytes, its envelope says {len}",
            file.bytes().len()
        )));
    }
    decode_in_limited(file.bytes(), &mut table, depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + DeserializeOwned>(v: &T) -> (T, usize, usize) {
        let (mut buf, mut fds) = (Vec::new(), Vec::new());
        encode_message(v, &mut buf, &mut fds).unwrap();
        let (n, f) = (buf.len(), fds.len());
        (decode_message(&buf, fds, 64, u64::MAX).unwrap(), n, f)
    }

    #[test]
    fn large_messages_spill_and_small_ones_do_not() {
        let small = vec![7u8; 1000];
        let (back, n, f) = roundtrip(&small);
        assert_eq!((&back, f), (&small, 0));
        assert!(n > 1000);
        let big = serde_bytes::ByteBuf::from(vec![9u8; SPILL_MIN]);
        // Twice: the first is encoded into the buffer then copied, the
        // second (after a spilled one) straight into the file.
        for _ in 0..2 {
            let (back, n, f) = roundtrip(&big);
            assert_eq!((n, f), (ENVELOPE, 1));
            assert_eq!(back, big);
        }
        let (back, _, f) = roundtrip(&small);
        assert_eq!((back, f), (small, 0));
    }

    #[test]
    fn a_spilled_message_over_the_limit_is_refused() {
        let big = serde_bytes::ByteBuf::from(vec![1u8; SPILL_MIN]);
        let (mut buf, mut fds) = (Vec::new(), Vec::new());
        encode_message(&big, &mut buf, &mut fds).unwrap();
        let r = decode_message::<serde_bytes::ByteBuf>(&buf, fds, 64, 1 << 20);
        assert!(matches!(r, Err(Error::MessageTooLarge { .. })), "{r:?}");
    }
}
