//! Linux implementation of the OS layer.

mod eventfd;
mod fd;
mod futex;
mod ident;
mod init;
mod mman;
mod process;
mod socket;

pub(crate) use eventfd::*;
pub(crate) use fd::*;
pub(crate) use futex::*;
pub(crate) use ident::*;
pub(crate) use init::*;
pub(crate) use mman::*;
pub(crate) use process::*;
pub(crate) use socket::*;

use std::io;

/// Turns a `-1` return into the current `errno` as an [`io::Error`].
pub(crate) fn cvt<T: IsMinusOne>(ret: T) -> io::Result<T> {
    if ret.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`], retrying while the call fails with `EINTR`.
pub(crate) fn cvt_r<T: IsMinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
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
