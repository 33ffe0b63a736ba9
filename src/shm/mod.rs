//! Shared state: [`Value`], [`Array`] (and their lock-free `Raw` forms) for
//! [`ShmSafe`] data, named [`SharedMemory`] and the [`ShareableList`] in it.
//!
//! ## Where the memory lives, and why nothing leaks
//!
//! `Value`, `Array` and every synchronization primitive live in anonymous
//! `memfd` segments passed between processes as descriptors. They have no
//! name, so there is nothing to unlink: the kernel frees the memory when
//! the last process holding it exits, however it exits.
//!
//! `SharedMemory` is named (unrelated processes attach by name), so a name
//! must be removed by somebody. Unlinking right after attaching would break
//! Python's model (attach later, by name); instead a small tracker process
//! per process family (see `tracker.rs`) holds the names that were created
//! and not yet unlinked, and removes them when every process that held its
//! pipe is gone, including a creator killed by `SIGKILL`.

mod array;
mod atomic;
mod buffer;
mod pod;
mod shareable_list;
mod shared_memory;
pub(crate) mod tracker;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use buffer::{SharedBytes, SharedBytesMut, SharedSlice, SharedSliceMut};
pub use pod::ShmSafe;
pub use shareable_list::{Item, ShareableList};
pub use shared_memory::SharedMemory;
pub use value::{RawValue, Value, ValueGuard};
