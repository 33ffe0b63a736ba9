//! The one codec for arguments, return values and messages.
//!
//! Values are serialized with serde into a compact binary form (postcard).
//! OS handles ride inside values: while a value is being encoded, each handle
//! it contains is duplicated into a side table and only its index is written;
//! the table travels next to the bytes as `SCM_RIGHTS` ancillary data. The
//! decoder installs the received descriptors in the same kind of table and
//! each handle takes its own back by index. Descriptors that no value claims
//! are closed.
//!
//! Decoding has a nesting limit (see [`set_max_decode_depth`]): a message
//! nested deeper than the limit is [`Error::Decode`], so that no message,
//! however hostile, can overflow the receiver's stack.

/// Calls `$m!` with every visitor-taking method of serde's `Deserializer`,
/// as `name(arg: Type, ...)`: the list a deserializer that wraps another one
/// forwards ([`catch`] and [`depth`] both do).
macro_rules! deserializer_methods {
    ($m:ident) => {
        $m!(
            deserialize_any(),
            deserialize_bool(),
            deserialize_i8(),
            deserialize_i16(),
            deserialize_i32(),
            deserialize_i64(),
            deserialize_i128(),
            deserialize_u8(),
            deserialize_u16(),
            deserialize_u32(),
            deserialize_u64(),
            deserialize_u128(),
            deserialize_f32(),
            deserialize_f64(),
            deserialize_char(),
            deserialize_str(),
            deserialize_string(),
            deserialize_bytes(),
            deserialize_byte_buf(),
            deserialize_option(),
            deserialize_unit(),
            deserialize_unit_struct(name: &'static str),
            deserialize_newtype_struct(name: &'static str),
            deserialize_seq(),
            deserialize_tuple(len: usize),
            deserialize_tuple_struct(name: &'static str, len: usize),
            deserialize_map(),
            deserialize_struct(name: &'static str, fields: &'static [&'static str]),
            deserialize_enum(name: &'static str, variants: &'static [&'static str]),
            deserialize_identifier(),
            deserialize_ignored_any(),
        );
    };
}

/// Calls `$m!` with every `Visitor` method that takes one leaf value, as
/// `name(Type)`; the rest (none, unit, containers) each wrapper writes out.
macro_rules! visitor_leaf_methods {
    ($m:ident) => {
        $m!(
            visit_bool(bool),
            visit_i8(i8),
            visit_i16(i16),
            visit_i32(i32),
            visit_i64(i64),
            visit_i128(i128),
            visit_u8(u8),
            visit_u16(u16),
            visit_u32(u32),
            visit_u64(u64),
            visit_u128(u128),
            visit_f32(f32),
            visit_f64(f64),
            visit_char(char),
            visit_str(&str),
            visit_borrowed_str(&'de str),
            visit_string(String),
            visit_bytes(&[u8]),
            visit_borrowed_bytes(&'de [u8]),
            visit_byte_buf(Vec<u8>),
        );
    };
}

mod catch;
mod depth;
pub(crate) mod le;
mod spill;

pub use spill::SPILL_MIN;
pub(crate) use spill::{decode_message, encode_message};

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// The default nesting limit for decoding received values (see
/// [`set_max_decode_depth`]).
pub const DEFAULT_MAX_DECODE_DEPTH: u32 = 256;

static MAX_DECODE_DEPTH: AtomicU32 = AtomicU32::new(DEFAULT_MAX_DECODE_DEPTH);

/// Sets this process's nesting limit for decoding received values; the
/// default is [`DEFAULT_MAX_DECODE_DEPTH`].
///
/// Every value this crate decodes (messages, queue items, process arguments
/// and results, pool tasks and their results) is decoded within a nesting
/// limit: each `Some`, newtype struct, sequence, tuple, struct, map and enum
/// variant entered costs one level, and a value that needs more levels than
/// the limit is [`Error::Decode`] instead of a stack overflow. The limit
/// bounds the stack a decode can use, so raise it only together with the
/// stack of the threads that receive.
///
/// The setting is read when a decode starts. Queues, processes and pools
/// use it directly; a [`Connection`](crate::Connection) takes it when it is
/// created and can be given its own with
/// [`Connection::set_max_decode_depth`](crate::Connection::set_max_decode_depth).
/// It is per process: a forked child inherits it, a child started by spawn
/// or forkserver starts with the default (set it there too when its
/// arguments or tasks need more).
///
/// The encoder has no limit: a value this process builds is its own to
/// encode, and a receiver refuses what it cannot decode.
///
/// # Examples
/// ```
/// use multiproc::{Error, Pipe};
///
/// multiproc::set_max_decode_depth(4);
/// let (a, b) = Pipe::new()?;
/// a.send(&vec![vec![vec![vec![vec![1u8]]]]])?;
/// assert!(matches!(b.recv::<Vec<Vec<Vec<Vec<Vec<u8>>>>>>(), Err(Error::Decode(_))));
/// multiproc::set_max_decode_depth(multiproc::DEFAULT_MAX_DECODE_DEPTH);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn set_max_decode_depth(levels: u32) {
    MAX_DECODE_DEPTH.store(levels, Ordering::Relaxed);
}

/// This process's nesting limit for decoding (see [`set_max_decode_depth`]).
pub fn max_decode_depth() -> u32 {
    MAX_DECODE_DEPTH.load(Ordering::Relaxed)
}

thread_local! {
    /// The message of the last handle error, which the binary format's own
    /// error type cannot carry.
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Restores the previous side table when an encode or decode ends, so that
/// nested use and panics leave no table behind.
struct TableGuard<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    previous: Option<T>,
}

impl<T: 'static> TableGuard<T> {
    fn install(key: &'static std::thread::LocalKey<RefCell<Option<T>>>, table: T) -> Self {
        let previous = key.with(|t| t.borrow_mut().replace(table));
        TableGuard { key, previous }
    }

    fn take(mut self) -> T {
        let prev = self.previous.take();
        let mine = self
            .key
            .with(|t| std::mem::replace(&mut *t.borrow_mut(), prev));
        std::mem::forget(self);
        mine.expect("side table present")
    }
}

impl<T: 'static> Drop for TableGuard<T> {
    fn drop(&mut self) {
        let prev = self.previous.take();
        self.key.with(|t| *t.borrow_mut() = prev);
    }
}

/// Serializes `value`, appending its bytes to `buf` and the handles it holds
/// (duplicated) to `fds`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
) -> Result<()> {
    LAST_ERROR.with(|l| l.borrow_mut().take());
    let guard = TableGuard::install(&OUTGOING, std::mem::take(fds));
    let res = postcard::serialize_with_flavor(value, VecFlavor(buf));
    *fds = guard.take();
    res.map_err(|e| Error::Encode(explain_encode(e, value)))
}

/// Appends to a `Vec` directly: serde writes many values a byte at a time
/// (every array element), and a plain `push` is the cheapest way to take
/// them.
struct VecFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The size of `value`'s encoding (handles are duplicated into a table that
/// is thrown away).
pub(crate) fn encoded_size<T: Serialize + ?Sized>(value: &T) -> Result<usize> {
    LAST_ERROR.with(|l| l.borrow_mut().take());
    let guard = TableGuard::install(&OUTGOING, Vec::new());
    let res = postcard::experimental::serialized_size(value);
    drop(guard.take());
    res.map_err(|e| Error::Encode(explain_encode(e, value)))
}

/// Serializes `value` into exactly `buf` (whose length is its
/// [`encoded_size`]), appending the handles it holds to `fds`.
pub(crate) fn encode_exact<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<()> {
    LAST_ERROR.with(|l| l.borrow_mut().take());
    let want = buf.len();
    let guard = TableGuard::install(&OUTGOING, std::mem::take(fds));
    let res = postcard::to_slice(value, buf).map(|used| used.len());
    *fds = guard.take();
    match res {
        Ok(n) if n == want => Ok(()),
        Ok(n) => Err(Error::Encode(format!(
            "value encoded to {n} bytes after measuring {want}"
        ))),
        Err(e) => Err(Error::Encode(explain_encode(e, value))),
    }
}

/// [`explain`] for an encode error: a custom error from the value's own
/// `Serialize` impl, whose message the format drops, is recovered by
/// serializing the value once more into a serializer that keeps it (only
/// on this error path; handles go to a table that is thrown away).
fn explain_encode<T: Serialize + ?Sized>(e: postcard::Error, value: &T) -> String {
    if let Some(why) = LAST_ERROR.with(|l| l.borrow_mut().take()) {
        return why;
    }
    if matches!(e, postcard::Error::SerdeSerCustom) {
        let guard = TableGuard::install(&OUTGOING, Vec::new());
        let caught = catch::message(value);
        drop(guard.take());
        LAST_ERROR.with(|l| l.borrow_mut().take());
        if let Some(why) = caught {
            return why;
        }
    }
    e.to_string()
}

/// The handle error recorded during this call, or the format's message.
fn explain(e: postcard::Error) -> String {
    LAST_ERROR
        .with(|l| l.borrow_mut().take())
        .unwrap_or_else(|| e.to_string())
}

/// A deserialization error whose message survives the binary format (which
/// keeps only its own error kinds).
pub(crate) fn de_error<E: serde::de::Error>(why: String) -> E {
    record(why, E::custom)
}

fn record<E>(why: String, make: impl FnOnce(String) -> E) -> E {
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(why.clone()));
    make(why)
}

/// Deserializes a `T` from `bytes`, giving it the received `fds`. Trailing
/// bytes are an error: a frame holds exactly one value. Nesting is limited
/// to [`max_decode_depth`] levels.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    decode_limited(bytes, fds, max_decode_depth())
}

/// [`decode`] with nesting limited to `depth` levels.
pub(crate) fn decode_limited<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    depth: u32,
) -> Result<T> {
    decode_in_limited(bytes, &mut fds.into_iter().map(Some).collect(), depth)
}

/// Deserializes a `T` from `bytes`, taking its handles from `table`, which
/// several values of one message share (handles are indexed across the
/// message). Claimed descriptors are taken out of the table. Nesting is
/// limited to [`max_decode_depth`] levels.
pub(crate) fn decode_in<T: DeserializeOwned>(
    bytes: &[u8],
    table: &mut Vec<Option<OwnedFd>>,
) -> Result<T> {
    decode_in_limited(bytes, table, max_decode_depth())
}

/// The one decode path: every value this crate receives goes through here.
fn decode_in_limited<T: DeserializeOwned>(
    bytes: &[u8],
    table: &mut Vec<Option<OwnedFd>>,
    depth: u32,
) -> Result<T> {
    LAST_ERROR.with(|l| l.borrow_mut().take());
    let guard = TableGuard::install(&INCOMING, std::mem::take(table));
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let res = T::deserialize(depth::Depth(&mut de, depth::Budget::new(depth)))
        .and_then(|v| Ok((v, de.finalize()?)));
    *table = guard.take();
    match res {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Error::Decode(format!(
            "{} unexpected trailing bytes",
            rest.len()
        ))),
        Err(postcard::Error::SerdeDeCustom) => Err(Error::Decode(
            LAST_ERROR
                .with(|l| l.borrow_mut().take())
                .or_else(|| {
                    // The format dropped the message: decode again (only on
                    // this error path) through a layer that keeps it.
                    let m = catch::decode_message::<T>(bytes, depth);
                    LAST_ERROR.with(|l| l.borrow_mut().take());
                    m
                })
                .unwrap_or_else(|| {
                    format!(
                        "the Deserialize impl of {} rejected the data",
                        std::any::type_name::<T>()
                    )
                }),
        )),
        Err(e) => Err(Error::Decode(explain(e))),
    }
}

const HANDLE_NAME: &str = "multiproc::Handle";

/// Serde support for OS handles inside messages, for use with
/// `#[serde(with = "multiproc::handle")]` on any field whose type is
/// `AsFd + From<OwnedFd>` (`File`, `TcpStream`, `UnixStream`, `OwnedFd`, …).
///
/// Sending duplicates the descriptor; the sender's copy stays open until the
/// sender drops it. Serializing a handle with any other serde format is an
/// error.
///
/// # Examples
/// ```
/// use serde::{Deserialize, Serialize};
/// use std::fs::File;
///
/// #[derive(Serialize, Deserialize)]
/// struct Job {
///     name: String,
///     #[serde(with = "multiproc::handle")]
///     log: File,
/// }
/// ```
pub mod handle {
    use super::*;

    /// Serializes a handle by duplicating it into the outgoing side table.
    ///
    /// # Errors
    /// Outside this crate's codec, or when `dup` fails.
    pub fn serialize<H: AsFd, S: Serializer>(h: &H, s: S) -> Result<S::Ok, S::Error> {
        let dup = h.as_fd().try_clone_to_owned().map_err(|e| {
            record(
                format!("cannot duplicate handle: {e}"),
                serde::ser::Error::custom,
            )
        })?;
        let index = OUTGOING.with(|t| {
            t.borrow_mut().as_mut().map(|table| {
                table.push(dup);
                (table.len() - 1) as u32
            })
        });
        match index {
            Some(i) => s.serialize_newtype_struct(HANDLE_NAME, &i),
            None => Err(record(
                "OS handles can only be serialized by multiproc's codec (Connection, Queue, Process arguments)"
                    .into(),
                serde::ser::Error::custom,
            )),
        }
    }

    /// Deserializes a handle by taking its descriptor from the incoming side
    /// table.
    ///
    /// # Errors
    /// Outside this crate's codec, or when the index names no received
    /// descriptor (or one already taken).
    pub fn deserialize<'de, H: From<OwnedFd>, D: Deserializer<'de>>(d: D) -> Result<H, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "multiproc::Handle")]
        struct Index(u32);
        if catch::rerunning() {
            // The descriptors went to the first attempt; see `catch`.
            return Err(serde::de::Error::custom(catch::NO_HANDLES_IN_RERUN));
        }
        let Index(i) = Index::deserialize(d)?;
        let fd = INCOMING.with(|t| {
            t.borrow_mut()
                .as_mut()
                .and_then(|table| table.get_mut(i as usize).and_then(Option::take))
        });
        fd.map(H::from).ok_or_else(|| {
            record(
                format!("message refers to handle #{i}, which did not arrive with it"),
                serde::de::Error::custom,
            )
        })
    }
}

/// An OS handle that can travel inside messages and process arguments.
///
/// `Handle<File>`, `Handle<TcpStream>`, `Handle<UnixStream>` and
/// `Handle<OwnedFd>` serialize by passing the descriptor itself (SCM_RIGHTS);
/// the receiver gets a working handle to the same open file or socket.
///
/// # Examples
/// ```
/// use multiproc::{Handle, Pipe};
/// use std::io::{Read, Seek, Write};
///
/// let (a, b) = Pipe::new()?;
/// let mut file = tempfile_in_tmp()?;
/// a.send(&Handle(file.try_clone()?))?;
/// let Handle(mut same): Handle<std::fs::File> = b.recv()?;
/// same.write_all(b"hello")?;
/// file.rewind()?;
/// let mut s = String::new();
/// file.read_to_string(&mut s)?;
/// assert_eq!(s, "hello");
/// # fn tempfile_in_tmp() -> std::io::Result<std::fs::File> {
/// #     let p = std::env::temp_dir().join(format!("mp-doc-{}", std::process::id()));
/// #     let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p)?;
/// #     std::fs::remove_file(&p)?;
/// #     Ok(f)
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Handle<H>(pub H);

impl<H: AsFd> Serialize for Handle<H> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        handle::serialize(&self.0, s)
    }
}

impl<'de, H: From<OwnedFd>> Deserialize<'de> for Handle<H> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        handle::deserialize(d).map(Handle)
    }
}

impl<H> Handle<H> {
    /// The handle inside.
    pub fn into_inner(self) -> H {
        self.0
    }
}
