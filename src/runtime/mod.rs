//! Per-process services every layer above may use: who this process is
//! and how it was started (`current.rs`), the roles a re-executed copy of
//! this binary can take and the one function that starts them
//! (`role.rs`), code addresses that mean the same in every process of this
//! build (`entry.rs`), panics reported to a parent (`panic.rs`) and the
//! crate's logging (`logging.rs`).
//!
//! Nothing here knows any role's code: `boot.rs` alone dispatches roles.

pub(crate) mod current;
pub(crate) mod entry;
pub(crate) mod logging;
pub(crate) mod panic;
pub(crate) mod role;
