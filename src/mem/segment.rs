//! Anonymous shared segments: the memory every primitive lives in.
//!
//! A segment is a `memfd` (no name anywhere, so nothing can leak in
//! `/dev/shm`) mapped `MAP_SHARED`. It travels inside messages and process
//! arguments as its descriptor (`SCM_RIGHTS`, through [`crate::handle`]);
//! the receiver maps it again, checks the header, and sees the same memory.
//! The memory is freed by the kernel when the last descriptor and mapping
//! are gone, in whatever order the processes die.
//!
//! Layout (all offsets from the start of the mapping, which is page
//! aligned):
//!
//! | offset | size | what |
//! | --- | --- | --- |
//! | 0 | 64 | [`Header`]: magic, layout version, kind, layout size, type tag |
//! | 64 | `size_of::<L>()` | the primitive's `#[repr(C)]` state `L` |
//! | 64 + `size_of::<L>()` rounded up to 64 | rest | the tail (the data of a `Value` or an `Array`) |
#![allow(unsafe_code)]

use crate::sys::{self, Mapping};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `b"mprocSHM"`: the first eight bytes of every segment.
const MAGIC: u64 = u64::from_le_bytes(*b"mprocSHM");
/// Bumped whenever a layout changes, so that two builds never misread each
/// other's segments.
const VERSION: u32 = 1;
/// Where the state starts; also the alignment of the state and the tail.
const STATE_OFFSET: usize = 64;

/// The header at the start of every segment. Written by the creator before
/// the segment is shared, read-only afterwards.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    kind: AtomicU32,
    state_size: AtomicU64,
    type_tag: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= STATE_OFFSET);

/// Every kind of segment, in one table: the number its header carries
/// (checked when a segment is received, so no two kinds may share one) and
/// its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Lock = 1,
    RLock = 2,
    Semaphore = 3,
    Condition = 4,
    Event = 5,
    Barrier = 6,
    Value = 7,
    Array = 8,
    Queue = 16,
}

impl Kind {
    /// A name for error messages and for `/proc/<pid>/fd` (`memfd:<name>`).
    pub(crate) const fn name(self) -> &'static CStr {
        match self {
            Kind::Lock => c"multiproc-lock",
            Kind::RLock => c"multiproc-rlock",
            Kind::Semaphore => c"multiproc-semaphore",
            Kind::Condition => c"multiproc-condition",
            Kind::Event => c"multiproc-event",
            Kind::Barrier => c"multiproc-barrier",
            Kind::Value => c"multiproc-value",
            Kind::Array => c"multiproc-array",
            Kind::Queue => c"multiproc-queue",
        }
    }
}

/// The state of a primitive, placed in shared memory. Implemented through
/// [`shm_layout!`].
///
/// # Safety
/// Implementors must be `#[repr(C)]`, valid for every bit pattern
/// (a fresh segment is all zeros, and any process may write any bytes),
/// aligned to at most 64 bytes, and mutated only through atomics, so that
/// `&Self` can be shared between threads and processes.
pub(crate) unsafe trait ShmLayout: Sync + Send + 'static {
    /// Which primitive this is.
    const KIND: Kind;
}

/// `shm_layout!(unsafe impl State => Kind)`: declares `State` the shared
/// state of segments of kind `Kind`. Each invocation carries the `SAFETY:`
/// argument that `State` meets [`ShmLayout`]'s contract.
macro_rules! shm_layout {
    (unsafe impl $state:ty => $kind:ident) => {
        // SAFETY: argued at the invocation.
        unsafe impl $crate::mem::segment::ShmLayout for $state {
            const KIND: $crate::mem::segment::Kind = $crate::mem::segment::Kind::$kind;
        }
    };
}
pub(crate) use shm_layout;

/// `segment_serde!(Type)`: a primitive whose only field is `shm:
/// Shared<_>` travels as its segment's descriptor.
macro_rules! segment_serde {
    ($($t:ident),+) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.shm.serialize_fd(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($t {
                    shm: $crate::mem::segment::Shared::deserialize_fd(d, 0)?,
                })
            }
        }
    )+};
}
pub(crate) use segment_serde;

/// A tag that tells the types inside segments apart when a segment is
/// received (the `T` of a `Value<T>`, an `Array<T>`, a `Queue<T>`): size,
/// alignment and a hash of the type's name.
pub(crate) fn type_tag<T>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::any::type_name::<T>().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ ((std::mem::size_of::<T>() as u64) << 48) ^ ((std::mem::align_of::<T>() as u64) << 40)
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn tail_offset<L>() -> usize {
    STATE_OFFSET + round_up(std::mem::size_of::<L>().max(1), STATE_OFFSET)
}

struct Segment {
    fd: OwnedFd,
    map: Mapping,
}

/// A segment holding an `L`, shared by clones in this process (`Arc`) and
/// by other processes (the memfd).
pub(crate) struct Shared<L: ShmLayout> {
    seg: Arc<Segment>,
    _layout: PhantomData<L>,
}

impl<L: ShmLayout> Clone for Shared<L> {
    fn clone(&self) -> Self {
        Shared {
            seg: self.seg.clone(),
            _layout: PhantomData,
        }
    }
}

impl<L: ShmLayout> fmt::Debug for Shared<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("kind", &L::KIND.name())
            .field("len", &self.seg.map.len())
            .finish()
    }
}

impl<L: ShmLayout> Shared<L> {
    /// A new zero-filled segment with room for `L` and a `tail` of bytes.
    /// `init` runs on the state before anybody else can see it.
    pub(crate) fn create(tail: usize, type_tag: u64, init: impl FnOnce(&L)) -> io::Result<Self> {
        const { assert!(std::mem::align_of::<L>() <= STATE_OFFSET) };
        let len = tail_offset::<L>()
            .checked_add(tail)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        let fd = sys::memfd_create(L::KIND.name(), len)?;
        let map = Mapping::new(fd.as_fd(), len, false)?;
        let shared = Shared {
            seg: Arc::new(Segment { fd, map }),
            _layout: PhantomData,
        };
        let h = shared.header();
        h.version.store(VERSION, Ordering::Relaxed);
        h.kind.store(L::KIND as u32, Ordering::Relaxed);
        h.state_size
            .store(std::mem::size_of::<L>() as u64, Ordering::Relaxed);
        h.type_tag.store(type_tag, Ordering::Relaxed);
        init(shared.get());
        // The magic last: a half-written segment is never taken for a good one.
        h.magic.store(MAGIC, Ordering::Release);
        Ok(shared)
    }

    /// Maps a received segment, checking that it really holds an `L` with
    /// `type_tag`.
    pub(crate) fn from_fd(fd: OwnedFd, type_tag: u64) -> Result<Self, String> {
        let what = L::KIND.name().to_string_lossy();
        let len =
            sys::file_len(fd.as_fd()).map_err(|e| format!("cannot size {what} segment: {e}"))?;
        if len < tail_offset::<L>() {
            return Err(format!("{what} segment too small ({len} bytes)"));
        }
        let map = Mapping::new(fd.as_fd(), len, false)
            .map_err(|e| format!("cannot map {what} segment: {e}"))?;
        let shared = Shared {
            seg: Arc::new(Segment { fd, map }),
            _layout: PhantomData,
        };
        let h = shared.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.version.load(Ordering::Relaxed) != VERSION
            || h.kind.load(Ordering::Relaxed) != L::KIND as u32
            || h.state_size.load(Ordering::Relaxed) != std::mem::size_of::<L>() as u64
        {
            return Err(format!(
                "received memory is not a {what} segment of this version of multiproc"
            ));
        }
        if h.type_tag.load(Ordering::Relaxed) != type_tag {
            return Err(format!(
                "received {what} segment holds another element type"
            ));
        }
        Ok(shared)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least `tail_offset::<L>() >= 64` bytes
        // (checked on both paths that build a `Shared`), page aligned, and
        // lives as long as `self`; `Header` is made of atomics, valid for any
        // bit pattern and safe to share.
        unsafe { &*self.seg.map.as_ptr().cast::<Header>() }
    }

    /// The state.
    #[inline]
    pub(crate) fn get(&self) -> &L {
        // SAFETY: offset 64 is inside the mapping and 64-aligned (the
        // mapping is page aligned and `align_of::<L>() <= 64`), the mapping
        // holds `size_of::<L>()` bytes there (checked at creation or
        // receipt) and outlives `&self`; `ShmLayout` guarantees every bit
        // pattern is a valid `L` that is only mutated through atomics.
        unsafe { &*self.seg.map.as_ptr().add(STATE_OFFSET).cast::<L>() }
    }

    /// The tail: its first byte (64-aligned) and its length.
    #[inline]
    pub(crate) fn tail(&self) -> (*mut u8, usize) {
        let off = tail_offset::<L>();
        // SAFETY: `off <= len` was checked when the segment was built, so the
        // pointer stays inside (or one past the end of) the mapping.
        let p = unsafe { self.seg.map.as_ptr().add(off) };
        (p, self.seg.map.len() - off)
    }

    /// Faults the whole mapping in for writing (see `Mapping::populate`).
    pub(crate) fn populate(&self) -> io::Result<()> {
        self.seg.map.populate()
    }

    /// Whether two handles are the same segment in this process.
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.seg, &other.seg)
    }

    /// Serializes the segment as its descriptor.
    pub(crate) fn serialize_fd<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::handle::serialize(&self.seg.fd, s)
    }

    /// Deserializes a segment sent with [`serialize_fd`](Self::serialize_fd).
    pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(
        d: D,
        type_tag: u64,
    ) -> Result<Self, D::Error> {
        let fd: OwnedFd = crate::handle::deserialize(d)?;
        Shared::from_fd(fd, type_tag).map_err(serde::de::Error::custom)
    }
}

impl<L: ShmLayout> Serialize for Shared<L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_fd(s)
    }
}

impl<'de, L: ShmLayout> Deserialize<'de> for Shared<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Shared::deserialize_fd(d, 0)
    }
}
