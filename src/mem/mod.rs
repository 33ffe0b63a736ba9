//! Shared-memory infrastructure that `sync`, `shm` and `queue` build on:
//! the anonymous segments every primitive lives in (`segment.rs`), the
//! robust cross-process lock with owner-death detection (`robust_lock.rs`)
//! and the atomics, futex waits and process identities those cores use,
//! real or modelled for loom (`shim.rs`).
//!
//! Nothing here is public; the layers above wrap it in Python's types.

pub(crate) mod robust_lock;
pub(crate) mod segment;
pub(crate) mod shim;
