//! `ShareableList`: a fixed-length list of small values in named shared
//! memory (Python's `multiprocessing.shared_memory.ShareableList`).
//!
//! Layout of the segment (little-endian):
//!
//! | offset | size | what |
//! | --- | --- | --- |
//! | 0 | 8 | magic `b"mprocSLS"` |
//! | 8 | 8 | number of slots `n` |
//! | 16 | `16 * n` | slot table: kind (u32), capacity in bytes (u32), data offset (u64) |
//! | after | … | data: 8 bytes for a number, bool or none; for text and bytes an 8-byte length then `capacity` bytes |
//!
//! A slot's capacity is fixed when the list is created (the value's own
//! size rounded up to 8 bytes, as in Python); a later value of any kind may
//! go in a slot as long as it fits.

use super::shared_memory::SharedMemory;
use crate::codec::le;
use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

const MAGIC: u64 = u64::from_le_bytes(*b"mprocSLS");
const HEAD: usize = 16;
const SLOT: usize = 16;

/// One element of a [`ShareableList`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// A 64-bit integer (Python `int` within that range).
    Int(i64),
    /// A float.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// UTF-8 text.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// Nothing (Python `None`).
    None,
}

impl Item {
    fn kind(&self) -> u32 {
        match self {
            Item::Int(_) => 1,
            Item::Float(_) => 2,
            Item::Bool(_) => 3,
            Item::Str(_) => 4,
            Item::Bytes(_) => 5,
            Item::None => 6,
        }
    }

    /// Bytes of payload after the length prefix (0 for fixed-size kinds).
    fn var_len(&self) -> Option<usize> {
        match self {
            Item::Str(s) => Some(s.len()),
            Item::Bytes(b) => Some(b.len()),
            _ => None,
        }
    }
}

impl From<i64> for Item {
    fn from(v: i64) -> Self {
        Item::Int(v)
    }
}
impl From<f64> for Item {
    fn from(v: f64) -> Self {
        Item::Float(v)
    }
}
impl From<bool> for Item {
    fn from(v: bool) -> Self {
        Item::Bool(v)
    }
}
impl From<&str> for Item {
    fn from(v: &str) -> Self {
        Item::Str(v.to_string())
    }
}
impl From<String> for Item {
    fn from(v: String) -> Self {
        Item::Str(v)
    }
}
impl From<&[u8]> for Item {
    fn from(v: &[u8]) -> Self {
        Item::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Item {
    fn from(v: Vec<u8>) -> Self {
        Item::Bytes(v)
    }
}

/// A fixed-length list of [`Item`]s (ints, floats, bools, text, bytes,
/// none) in named shared memory that other processes can attach to by
/// name (Python's `ShareableList`).
///
/// Each slot keeps the room it was created with: text and bytes may later
/// be replaced by values up to that size (rounded up to 8 bytes), any other
/// kind fits anywhere. Accesses are not synchronized; guard them with a
/// [`Lock`](crate::Lock) when several processes write.
///
/// # Examples
/// ```
/// use multiproc::{Item, Process, ShareableList};
///
/// fn shout(list: ShareableList) {
///     if let Item::Str(s) = list.get(0).unwrap() {
///         list.set(0, Item::Str(s.to_uppercase())).unwrap();
///     }
///     list.set(-1, Item::Int(42)).unwrap();
/// }
///
/// let list = ShareableList::new(&["howdy".into(), Item::Float(-273.154), Item::None])?;
/// let mut p = Process::new(shout, (list.clone_handle()?,));
/// p.start()?;
/// p.join()?;
/// assert_eq!(list.to_vec()?, ["HOWDY".into(), Item::Float(-273.154), Item::Int(42)]);
/// list.shm().unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ShareableList {
    shm: SharedMemory,
    len: usize,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

impl ShareableList {
    fn layout(items: &[Item]) -> (usize, Vec<(u32, usize)>) {
        let mut off = HEAD + SLOT * items.len();
        let mut slots = Vec::with_capacity(items.len());
        for item in items {
            let cap = item.var_len().map_or(0, |n| n.max(1).div_ceil(8) * 8);
            slots.push((cap as u32, off));
            off += 8 + cap;
        }
        (off, slots)
    }

    fn build(shm: SharedMemory, items: &[Item]) -> Result<Self> {
        let (_, slots) = ShareableList::layout(items);
        shm.write_at(0, &MAGIC.to_le_bytes())?;
        shm.write_at(8, &(items.len() as u64).to_le_bytes())?;
        for (i, (cap, off)) in slots.iter().enumerate() {
            let mut e = [0u8; SLOT];
            e[4..8].copy_from_slice(&cap.to_le_bytes());
            e[8..].copy_from_slice(&(*off as u64).to_le_bytes());
            shm.write_at(HEAD + SLOT * i, &e)?;
        }
        let list = ShareableList {
            shm,
            len: items.len(),
        };
        for (i, item) in items.iter().enumerate() {
            list.set(i as isize, item.clone())?;
        }
        Ok(list)
    }

    /// A new list holding `items`, under a fresh random name.
    ///
    /// # Errors
    /// When the shared memory cannot be created.
    pub fn new(items: &[Item]) -> Result<Self> {
        let (size, _) = ShareableList::layout(items);
        ShareableList::build(SharedMemory::create_auto(size)?, items)
    }

    /// A new list holding `items`, named `name`.
    ///
    /// # Errors
    /// As [`SharedMemory::create`] (existing name, bad name).
    pub fn with_name(name: &str, items: &[Item]) -> Result<Self> {
        let (size, _) = ShareableList::layout(items);
        ShareableList::build(SharedMemory::create(name, size)?, items)
    }

    /// Attaches to the list `name`.
    ///
    /// # Errors
    /// As [`SharedMemory::attach`]; [`Error::InvalidArgument`] when the
    /// memory does not hold a list.
    pub fn attach(name: &str) -> Result<Self> {
        ShareableList::from_shm(SharedMemory::attach(name)?)
    }

    fn from_shm(shm: SharedMemory) -> Result<Self> {
        let mut head = [0u8; HEAD];
        shm.read_at(0, &mut head)
            .map_err(|_| bad("shared memory too small for a ShareableList"))?;
        if le::u64_at(&head, 0) != MAGIC {
            return Err(bad(format!("{:?} is not a ShareableList", shm.name())));
        }
        let len = le::u64_at(&head, 8);
        let len = usize::try_from(len).map_err(|_| bad("corrupt ShareableList length"))?;
        len.checked_mul(SLOT)
            .and_then(|t| t.checked_add(HEAD))
            .filter(|&e| e <= shm.size())
            .ok_or_else(|| bad("corrupt ShareableList length"))?;
        Ok(ShareableList { shm, len })
    }

    /// The memory behind the list (for its name, and to unlink it).
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Another handle to the same list (attached by name), e.g. to send to
    /// a process while keeping this one.
    ///
    /// # Errors
    /// As [`attach`](Self::attach).
    pub fn clone_handle(&self) -> Result<Self> {
        ShareableList::attach(self.shm.name())
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no slots.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Resolves a Python-style index (negative counts from the end).
    fn slot_index(&self, index: isize) -> Result<usize> {
        let len = self.len as isize;
        let i = if index < 0 { index + len } else { index };
        if i < 0 || i >= len {
            return Err(bad(format!(
                "list index {index} out of range for length {len}"
            )));
        }
        Ok(i as usize)
    }

    fn slot(&self, i: usize) -> Result<(u32, usize, usize)> {
        let mut e = [0u8; SLOT];
        self.shm.read_at(HEAD + SLOT * i, &mut e)?;
        let kind = le::u32_at(&e, 0);
        let cap = le::u32_at(&e, 4) as usize;
        let off =
            usize::try_from(le::u64_at(&e, 8)).map_err(|_| bad("corrupt ShareableList slot"))?;
        Ok((kind, cap, off))
    }

    /// The item at `index` (negative counts from the end).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] out of range or for corrupt memory.
    pub fn get(&self, index: isize) -> Result<Item> {
        let (kind, cap, off) = self.slot(self.slot_index(index)?)?;
        let mut word = [0u8; 8];
        self.shm.read_at(off, &mut word)?;
        let var = |word: [u8; 8]| -> Result<Vec<u8>> {
            let n = u64::from_le_bytes(word) as usize;
            if n > cap {
                return Err(bad("corrupt ShareableList slot"));
            }
            let mut v = vec![0u8; n];
            self.shm.read_at(off + 8, &mut v)?;
            Ok(v)
        };
        Ok(match kind {
            1 => Item::Int(i64::from_le_bytes(word)),
            2 => Item::Float(f64::from_le_bytes(word)),
            3 => Item::Bool(word[0] != 0),
            4 => Item::Str(
                String::from_utf8(var(word)?).map_err(|_| bad("corrupt text in ShareableList"))?,
            ),
            5 => Item::Bytes(var(word)?),
            6 => Item::None,
            _ => return Err(bad("corrupt ShareableList slot")),
        })
    }

    /// Replaces the item at `index` (negative counts from the end).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] out of range, or when text or bytes do not
    /// fit the slot's room.
    pub fn set(&self, index: isize, item: Item) -> Result<()> {
        let i = self.slot_index(index)?;
        let (_, cap, off) = self.slot(i)?;
        if let Some(n) = item.var_len() {
            if n > cap {
                return Err(bad(format!(
                    "{n} bytes exceed the {cap} bytes available in slot {i}"
                )));
            }
        }
        match &item {
            Item::Int(v) => self.shm.write_at(off, &v.to_le_bytes())?,
            Item::Float(v) => self.shm.write_at(off, &v.to_le_bytes())?,
            Item::Bool(v) => self.shm.write_at(off, &u64::from(*v).to_le_bytes())?,
            Item::Str(s) => {
                self.shm.write_at(off + 8, s.as_bytes())?;
                self.shm.write_at(off, &(s.len() as u64).to_le_bytes())?;
            }
            Item::Bytes(b) => {
                self.shm.write_at(off + 8, b)?;
                self.shm.write_at(off, &(b.len() as u64).to_le_bytes())?;
            }
            Item::None => self.shm.write_at(off, &[0; 8])?,
        }
        self.shm
            .write_at(HEAD + SLOT * i, &item.kind().to_le_bytes())
    }

    /// All items.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn to_vec(&self) -> Result<Vec<Item>> {
        (0..self.len as isize).map(|i| self.get(i)).collect()
    }

    /// The position of the first item equal to `item`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn index(&self, item: &Item) -> Result<Option<usize>> {
        Ok(self.to_vec()?.iter().position(|x| x == item))
    }

    /// How many items equal `item`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn count(&self, item: &Item) -> Result<usize> {
        Ok(self.to_vec()?.iter().filter(|x| *x == item).count())
    }
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ShareableList({:?}, name={:?})",
            self.to_vec().unwrap_or_default(),
            self.shm.name()
        )
    }
}

/// Sent as its [`SharedMemory`] (by name, with the tracker).
impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let shm = SharedMemory::deserialize(d)?;
        ShareableList::from_shm(shm).map_err(serde::de::Error::custom)
    }
}
