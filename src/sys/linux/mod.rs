//! Linux implementation of the OS layer.
//!
//! System calls go through `rustix`, which takes `BorrowedFd` and returns
//! `OwnedFd`; what it does not offer (fork with the C library's atfork
//! handlers, posix_spawn, closing descriptor ranges, signal dispositions,
//! the C environment, dl_iterate_phdr) is in [`libc_only`].

mod eventfd;
mod fd;
mod fiemap;
mod futex;
mod ident;
mod libc_only;
mod mman;
mod process;
mod socket;

pub(crate) use eventfd::*;
pub(crate) use fd::*;
pub(crate) use fiemap::*;
pub(crate) use futex::*;
pub(crate) use ident::*;
pub(crate) use libc_only::*;
pub(crate) use mman::*;
pub(crate) use process::*;
pub(crate) use socket::*;

use rustix::io::Errno;
use std::io;

/// Runs a `rustix` call, retrying while it fails with `EINTR`.
pub(crate) fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Turns a `-1` return into the current `errno` as an [`io::Error`].
pub(crate) fn cvt<T: IsMinusOne>(ret: T) -> io::Result<T> {
    if ret.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) trait IsMinusOne {
    fn is_minus_one(&self) -> bool;
}

macro_rules! impl_is_minus_one {
    ($($t:ty)*) => ($(impl IsMinusOne for $t {
        fn is_minus_one(&self) -> bool { *self == -1 }
    })*)
}
impl_is_minus_one! { i32 i64 isize }
