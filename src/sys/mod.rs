//! The one door to the operating system.
//!
//! Every system call goes through this module (`rustix`, and `libc` for
//! what `rustix` lacks); the rest of the crate sees safe functions taking
//! `BorrowedFd` and returning `OwnedFd`. Only Linux is implemented today;
//! another OS adds a sibling of `linux/` and a `cfg` arm here.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("multiproc currently supports Linux only");
