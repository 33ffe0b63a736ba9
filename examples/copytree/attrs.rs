//! The attributes of a copy: mode, times and extended attributes.

use std::fs::{self, File, FileTimes};
use std::io;
use std::os::fd::AsRawFd;

/// Sets the extended attributes of `from` and the mode and times of `meta`
/// on the open copy.
pub(super) fn keep_attributes(from: &File, to: &File, meta: &fs::Metadata) -> Result<(), String> {
    // Before the mode: a read-only mode would refuse them.
    copy_xattrs(from, to).map_err(|e| format!("cannot read extended attributes: {e}"))?;
    let times = FileTimes::new()
        .set_modified(
            meta.modified()
                .map_err(|e| format!("no modification time: {e}"))?,
        )
        .set_accessed(
            meta.accessed()
                .map_err(|e| format!("no access time: {e}"))?,
        );
    to.set_times(times)
        .and_then(|()| to.set_permissions(meta.permissions()))
        .map_err(|e| format!("cannot set the copy's mode and times: {e}"))
}

/// Calls `get(buf)` (a `*listxattr`/`*getxattr` call) with a buffer large
/// enough for its answer; returns the bytes it wrote.
fn sized(
    buf: &mut Vec<u8>,
    mut get: impl FnMut(*mut libc::c_void, usize) -> libc::ssize_t,
) -> io::Result<usize> {
    loop {
        let n = get(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
        // It grew between the two calls: ask for the size, then retry.
        let need = get(std::ptr::null_mut(), 0);
        if need < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.resize((need as usize).max(buf.len() * 2), 0);
    }
}

/// Copies the extended attributes of `from` to `to` (user attributes,
/// SELinux labels, file capabilities, ACLs), as `cp -a` does. As with
/// `cp -a`, an attribute the copy's filesystem or this user cannot set is
/// skipped without a word; failing to read the source's is an error.
pub(super) fn copy_xattrs(from: &File, to: &File) -> io::Result<()> {
    let (src, dst) = (from.as_raw_fd(), to.as_raw_fd());
    let mut names = vec![0u8; 256];
    // SAFETY: `flistxattr` writes at most `len` bytes to `p`, which points
    // into `names`, whose length `sized` passes as `len` (or is given a null
    // pointer and 0, to ask for the size); `src` is an open descriptor.
    let listed = sized(&mut names, |p, len| unsafe {
        libc::flistxattr(src, p.cast(), len)
    });
    let n = match listed {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut value = vec![0u8; 256];
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::ffi::CString::new(name) else {
            continue;
        };
        // SAFETY: as above, for `fgetxattr` writing into `value`; `name` is
        // a NUL-terminated string that outlives the call.
        let got = sized(&mut value, |p, len| unsafe {
            libc::fgetxattr(src, name.as_ptr(), p, len)
        });
        let len = match got {
            Ok(len) => len,
            // Removed meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: `fsetxattr` reads `len` bytes from `value`, which holds at
        // least that many; `name` is NUL-terminated; `dst` is open. Its
        // failure is ignored on purpose (see above).
        unsafe {
            libc::fsetxattr(dst, name.as_ptr(), value.as_ptr().cast(), len, 0);
        }
    }
    Ok(())
}
