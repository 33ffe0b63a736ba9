//! The folder-copy tool (examples/copytree): an exact copy of a tree of
//! many small and a few large files, and clear failures.

#[path = "../examples/copytree/tool.rs"]
#[allow(dead_code)]
mod tool;

use multiproc::fiemap::Extent;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn scratch(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mp-copytree-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    p
}

/// A scratch directory and an empty `src` directory in it.
fn scratch_with_source(tag: &str) -> (PathBuf, PathBuf) {
    let base = scratch(tag);
    let src = base.join("src");
    fs::create_dir_all(&src).unwrap();
    (base, src)
}

fn run(src: &Path, dst: &Path) -> (i32, tool::Report) {
    let opts = tool::Options {
        source: src.to_path_buf(),
        dest: dst.to_path_buf(),
        jobs: 2,
        progress: false,
        // Small parts, so that the 20 MiB files are copied in parts.
        part_size: 4 << 20,
        offload: tool::Offload::Auto,
        clone_check: tool::CloneCheck::BlockMap,
    };
    let report = tool::copy_tree(&opts);
    let code = tool::main_with_args(
        ["-j", "2", "--no-progress"]
            .iter()
            .map(Into::into)
            .chain([src.as_os_str().to_owned(), dst.as_os_str().to_owned()]),
    );
    (code, report)
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn copies_many_small_and_a_few_large_files_exactly() {
    let base = scratch("exact");
    let src = base.join("src");
    for d in 0..20 {
        let dir = src.join(format!("dir{d:02}")).join("sub");
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let body = format!("file {d}/{f} ").repeat(f % 7 + 1);
            fs::write(dir.join(format!("f{f:03}.txt")), body).unwrap();
        }
    }
    let seed = 0x1234_5678_9abc_def0u64;
    for i in 0..3 {
        // Not a multiple of the part size or of the page size.
        let mut big = vec![0u8; (20 << 20) + i * 12_345];
        random_fill(&mut big, seed + i as u64);
        fs::write(src.join(format!("big{i}.bin")), big).unwrap();
    }
    let special = src.join("dir00/sub/f000.txt");
    fs::set_permissions(&special, fs::Permissions::from_mode(0o600)).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(&special)
        .unwrap()
        .set_modified(old)
        .unwrap();

    // Extended attributes on a small file, a file copied in parts and a
    // directory (as `cp -a` keeps them).
    let tagged = [
        src.join("dir03/sub/f007.txt"),
        src.join("big1.bin"),
        src.join("dir05"),
    ];
    let xattrs = tagged
        .iter()
        .all(|p| set_xattr(p, "user.multiproc.seed", b"15"));
    if !xattrs {
        eprintln!("not checking extended attributes: the filesystem has no user attributes");
    }

    let dst = base.join("dst");
    let (code, report) = run(&src, &dst);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(code, 0);
    assert_eq!(report.files, 2003);
    if xattrs {
        for p in &tagged {
            let copy = dst.join(p.strip_prefix(&src).unwrap());
            assert_eq!(
                get_xattr(&copy, "user.multiproc.seed").as_deref(),
                Some(&b"15"[..]),
                "{copy:?}"
            );
        }
    }
    assert_same_tree(&src, &dst, 2003);
    let copied = dst.join("dir00/sub/f000.txt");
    assert_eq!(fs::metadata(&copied).unwrap().modified().unwrap(), old);
    assert_eq!(
        fs::metadata(&copied).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fs::remove_dir_all(&base).unwrap();
}

/// Fills `buf` with xorshift bytes from `seed`.
fn random_fill(buf: &mut [u8], mut seed: u64) {
    for chunk in buf.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
    }
}

/// Whether two files hold the same bytes, compared a megabyte at a time.
fn same_contents(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut x, mut y) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut bx, mut by) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = x.read(&mut bx).unwrap();
        if n == 0 {
            return y.read(&mut by).unwrap() == 0;
        }
        if y.read_exact(&mut by[..n]).is_err() || bx[..n] != by[..n] {
            return false;
        }
    }
}

/// Sets the extended attribute `name` of `path`; false where the
/// filesystem has none.
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated path and name, and a value of `len` bytes, all
    // alive for the call.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    r == 0
}

/// The extended attribute `name` of `path`, if set.
fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: writes at most `buf.len()` bytes into `buf`; NUL-terminated
    // path and name.
    #[allow(unsafe_code)]
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// `dst` holds the `count` files of `src` under the same names, byte for
/// byte (independent of the tool's own check), with the same modes and
/// modification times.
fn assert_same_tree(src: &Path, dst: &Path, count: usize) {
    let (a, b) = (files_under(src), files_under(dst));
    assert_eq!(a.len(), count);
    let names = |files: &[PathBuf], root: &Path| -> Vec<PathBuf> {
        files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    };
    assert_eq!(names(&a, src), names(&b, dst));
    for (x, y) in a.iter().zip(&b) {
        assert!(same_contents(x, y), "{x:?} differs from its copy");
        let (mx, my) = (fs::metadata(x).unwrap(), fs::metadata(y).unwrap());
        assert_eq!(mx.permissions().mode(), my.permissions().mode(), "{x:?}");
        assert_eq!(mx.modified().unwrap(), my.modified().unwrap(), "{x:?}");
    }
}

/// The tree the folder-copy tool is made for, at full size: 10,000 small
/// files and three files of 200 MiB, copied with the default part size
/// (each large file in four parts, on both workers).
#[test]
fn copies_ten_thousand_small_files_and_three_200_mib_files_exactly() {
    let base = scratch("full-size");
    let free = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(&base)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<u64>().ok())
        });
    if free.is_some_and(|f| f < 3 << 30) {
        eprintln!("skipping: less than 3 GiB free under {}", base.display());
        fs::remove_dir_all(&base).unwrap();
        return;
    }
    let src = base.join("src");
    let mut body = vec![0u8; 4000];
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let n = 100 + (d * 100 + f) * 37 % 3900;
            random_fill(&mut body[..n], (d * 100 + f + 1) as u64);
            fs::write(dir.join(format!("f{f:03}")), &body[..n]).unwrap();
        }
    }
    let mut big = vec![0u8; 200 << 20];
    for i in 0..3u64 {
        random_fill(&mut big, 0x9e37_79b9 + i);
        fs::write(src.join(format!("big{i}.bin")), &big).unwrap();
    }
    drop(big);
    let dst = base.join("dst");
    let code = tool::main_with_args(
        ["-j", "2", "--no-progress"]
            .iter()
            .map(Into::into)
            .chain([src.as_os_str().to_owned(), dst.as_os_str().to_owned()]),
    );
    assert_eq!(code, 0);
    assert_same_tree(&src, &dst, 10_003);
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_source_that_changes_size_is_an_error_and_leaves_no_copy() {
    let base = scratch("changed");
    let src = base.join("grows.bin");
    fs::write(&src, vec![1u8; 3 << 20]).unwrap();
    let dst = base.join("copy.bin");
    // A part planned for a file of another size (as when the file grew or
    // shrank after the walk) is refused before any byte is copied.
    fs::write(&dst, vec![0u8; 4 << 20]).unwrap();
    let err =
        tool::copy_part(&src, &dst, 0, 1 << 20, 4 << 20, tool::Offload::Auto, None).unwrap_err();
    assert!(err.contains("changed size"), "{err}");
    // The buffered path (for filesystems that cannot map files) copies and
    // verifies a range, and refuses a source of another size.
    {
        let from = fs::File::open(&src).unwrap();
        let to = fs::File::options()
            .read(true)
            .write(true)
            .open(&dst)
            .unwrap();
        let start = (1 << 20) + 5;
        let n = tool::copy_range_buffered(&from, &to, start, 1 << 20, 3 << 20).unwrap();
        assert_eq!(n, 1 << 20);
        let copy = fs::read(&dst).unwrap();
        let s = start as usize;
        assert!(copy[s..s + (1 << 20)].iter().all(|&b| b == 1));
        assert!(copy[..s].iter().all(|&b| b == 0));
        let err = tool::copy_range_buffered(&from, &to, 0, 1, 5).unwrap_err();
        assert!(err.contains("changed size"), "{err}");
    }
    // A whole file is copied (by the kernel where it can, else through the
    // mapping path) and verified.
    let copied =
        tool::copy_file(&src, &dst, tool::Offload::Auto, tool::CloneCheck::BlockMap).unwrap();
    assert_eq!(copied.total(), 3 << 20);
    assert!(fs::read(&src).unwrap() == fs::read(&dst).unwrap());
    // A source that is not a regular file is refused; no copy is made.
    fs::remove_file(&dst).unwrap();
    let err =
        tool::copy_file(&base, &dst, tool::Offload::Auto, tool::CloneCheck::BlockMap).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    assert!(!dst.exists());
    fs::remove_dir_all(&base).unwrap();
}

/// A large source truncated while its parts are being copied: the copy
/// fails clearly (a part sees the new size, or a worker reading the mapping
/// past the new end dies of SIGBUS and the pool reports it) and no partial
/// copy is left. If the copy won the race, it is whole.
#[test]
fn a_source_truncated_during_the_copy_leaves_no_partial_copy() {
    let (base, src) = scratch_with_source("truncated");
    let big = src.join("big.bin");
    let mut body = vec![0u8; 128 << 20];
    random_fill(&mut body, 77);
    fs::write(&big, &body).unwrap();
    fs::write(src.join("small.txt"), "small").unwrap();
    let dst = base.join("dst");
    let opts = tool::Options {
        source: src.clone(),
        dest: dst.clone(),
        jobs: 2,
        progress: false,
        part_size: 2 << 20,
        offload: tool::Offload::Auto,
        clone_check: tool::CloneCheck::BlockMap,
    };
    let cutter = {
        let big = big.clone();
        let dst_big = dst.join("big.bin");
        std::thread::spawn(move || {
            // As soon as the copy exists, the parts are being written.
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while !dst_big.exists() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(5));
            fs::File::options()
                .write(true)
                .open(&big)
                .unwrap()
                .set_len(1 << 20)
                .unwrap();
        })
    };
    let report = tool::copy_tree(&opts);
    cutter.join().unwrap();
    assert_eq!(fs::read_to_string(dst.join("small.txt")).unwrap(), "small");
    if report.errors.is_empty() {
        eprintln!("the copy finished before the truncation");
        assert!(fs::read(dst.join("big.bin")).unwrap() == body);
    } else {
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let e = &report.errors[0];
        eprintln!("as expected: {e}");
        assert!(
            e.contains("big.bin") && (e.contains("changed size") || e.contains("SIGBUS")),
            "{e}"
        );
        assert!(!dst.join("big.bin").exists(), "a partial copy was left");
        assert_eq!(report.files, 1);
    }
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn unreadable_or_special_source_files_fail_clearly() {
    let (base, src) = scratch_with_source("unreadable");
    fs::write(src.join("good.txt"), "fine").unwrap();
    // A FIFO: not a file a copy can reproduce by reading (and reading it
    // would block). Works as root too, where chmod 000 stops nothing.
    let fifo = src.join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let locked = src.join("locked.txt");
    fs::write(&locked, "secret").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let root_can_read = fs::read(&locked).is_ok();

    let (code, report) = run(&src, &base.join("dst"));
    assert_eq!(code, 1);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("pipe") && e.contains("not a regular file")),
        "{:?}",
        report.errors
    );
    if !root_can_read {
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.contains("locked.txt") && e.contains("ermission")),
            "{:?}",
            report.errors
        );
    }
    assert_eq!(
        fs::read_to_string(base.join("dst/good.txt")).unwrap(),
        "fine"
    );
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_file_where_a_directory_belongs_fails_clearly() {
    let base = scratch("clash");
    let src = base.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/x"), "x").unwrap();
    let dst = base.join("dst");
    fs::create_dir_all(&dst).unwrap();
    fs::write(dst.join("d"), "in the way").unwrap();
    let (code, report) = run(&src, &dst);
    assert_eq!(code, 1);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("cannot create directory")),
        "{:?}",
        report.errors
    );
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_full_destination_fails_clearly() {
    let (base, src) = scratch_with_source("full");
    fs::write(src.join("small.txt"), "small").unwrap();
    fs::write(src.join("large.bin"), vec![5u8; 3 << 20]).unwrap();
    let mnt = base.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a 1 MiB tmpfs here (needs root)");
        fs::remove_dir_all(&base).unwrap();
        return;
    }
    let (code, report) = run(&src, &mnt.join("dst"));
    // The file that did not fit leaves nothing that could pass for a copy.
    let partial = mnt.join("dst/large.bin").exists();
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert!(!partial, "a partial copy of large.bin was left");
    assert_eq!(code, 1);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("large.bin") && e.contains("No space left")),
        "{:?}",
        report.errors
    );
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn bad_command_lines_are_refused() {
    assert!(tool::parse_args(["only-one".into()]).is_err());
    assert!(tool::parse_args(["-j".into(), "0".into(), "a".into(), "b".into()]).is_err());
    assert!(tool::parse_args(["--bogus".into(), "a".into(), "b".into()]).is_err());
    let o = tool::parse_args(["-j".into(), "3".into(), "a".into(), "b".into()]).unwrap();
    assert_eq!((o.jobs, o.source, o.dest), (3, "a".into(), "b".into()));
    assert_eq!(tool::main_with_args(["x".into()]), 2);
    let base = scratch("missing");
    let code = tool::main_with_args([
        "--no-progress".into(),
        base.join("nope").into_os_string(),
        base.join("out").into_os_string(),
    ]);
    assert_eq!(code, 1);
    fs::remove_dir_all(&base).unwrap();
}

/// A scratch directory on tmpfs (`/dev/shm`), if there is one and it is
/// another filesystem than the temporary directory.
fn shm_scratch(tag: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let shm = Path::new("/dev/shm");
    let tmp = fs::metadata(std::env::temp_dir()).ok()?;
    if fs::metadata(shm).ok()?.dev() == tmp.dev() {
        return None;
    }
    let p = shm.join(format!("mp-copytree-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).ok()?;
    Some(p)
}

/// Whether `copy_file_range` copies between two files of `dir` (it does
/// within every local filesystem of a current kernel, unless a sandbox
/// refuses the call).
fn kernel_copies_in(dir: &Path) -> bool {
    let (a, b) = (dir.join(".probe-a"), dir.join(".probe-b"));
    fs::write(&a, b"probe").unwrap();
    let from = fs::File::open(&a).unwrap();
    let to = fs::File::create(&b).unwrap();
    let ok = rustix::fs::copy_file_range(&from, None, &to, None, 5).is_ok_and(|n| n == 5);
    fs::remove_file(&a).unwrap();
    fs::remove_file(&b).unwrap();
    ok
}

/// Copies `src` to `dst` with 2 workers, parts of 4 MiB and `offload`;
/// the copy must succeed.
fn copy_ok(src: &Path, dst: &Path, offload: tool::Offload) -> tool::Report {
    let report = tool::copy_tree(&tool::Options {
        source: src.to_path_buf(),
        dest: dst.to_path_buf(),
        jobs: 2,
        progress: false,
        part_size: 4 << 20,
        offload,
        clone_check: tool::CloneCheck::BlockMap,
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.copied.total(), report.bytes);
    report
}

/// Writes a small file, a large file copied whole and one copied in parts
/// (sizes not multiples of the page size) into `src`; returns the bytes of
/// the two large ones.
fn write_mixed_tree(src: &Path, seed: u64) -> u64 {
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/small.txt"), "small").unwrap();
    let (whole, parts) = ((3 << 20) + 7, (9 << 20) + 4321);
    for (name, n) in [("whole.bin", whole), ("sub/parts.bin", parts)] {
        let mut body = vec![0u8; n];
        random_fill(&mut body, seed + n as u64);
        fs::write(src.join(name), body).unwrap();
    }
    (whole + parts) as u64
}

/// Between tmpfs and ext4 (or whatever holds the temporary directory) the
/// kernel cannot clone or copy (`EXDEV`): the tool falls back to copying
/// through the workers, and the copy is exact and verified both ways. On
/// one filesystem the kernel copies the large files.
#[test]
fn copies_across_and_within_filesystems_exactly() {
    let Some(shm) = shm_scratch("across") else {
        eprintln!("skipping: no /dev/shm apart from the temporary directory");
        return;
    };
    let disk = scratch("across");
    let large = write_mixed_tree(&shm.join("src"), 1);
    assert_eq!(write_mixed_tree(&disk.join("src"), 2), large);
    let pairs = [
        (shm.join("src"), disk.join("from-shm")),
        (disk.join("src"), shm.join("from-disk")),
        (shm.join("src"), shm.join("within-shm")),
        (disk.join("src"), disk.join("within-disk")),
    ];
    for (i, (src, dst)) in pairs.iter().enumerate() {
        let report = copy_ok(src, dst, tool::Offload::Auto);
        assert_eq!(report.files, 3);
        assert_same_tree(src, dst, 3);
        let offloaded = report.copied.kernel + report.copied.cloned;
        eprintln!(
            "{} -> {}: {:?}",
            src.display(),
            dst.display(),
            report.copied
        );
        if i >= 2 && kernel_copies_in(dst) {
            // Only the small file went through a worker's buffer.
            assert_eq!(offloaded, large, "{:?}", report.copied);
            assert_eq!(report.copied.user, 5);
        }
    }
    fs::remove_dir_all(&shm).unwrap();
    fs::remove_dir_all(&disk).unwrap();
}

/// A file larger than one `copy_file_range` call (the tool asks for
/// `CHUNK` bytes at a time) is copied in several calls, each verified;
/// whole and as a part at an offset.
#[test]
fn a_file_larger_than_one_kernel_copy_is_copied_exactly() {
    let base = scratch("chunks");
    let kernel = kernel_copies_in(&base);
    let size = 3 * tool::CHUNK + 12_345;
    let mut body = vec![0u8; size as usize];
    random_fill(&mut body, 3);
    let (src, dst) = (base.join("src.bin"), base.join("dst.bin"));
    fs::write(&src, &body).unwrap();
    let copied =
        tool::copy_file(&src, &dst, tool::Offload::Auto, tool::CloneCheck::BlockMap).unwrap();
    assert_eq!(copied.total(), size);
    if kernel {
        assert_eq!(copied.kernel + copied.cloned, size, "{copied:?}");
    }
    assert!(fs::read(&dst).unwrap() == body);
    // A part that starts at a page boundary and runs over several calls.
    fs::write(&dst, vec![0u8; size as usize]).unwrap();
    let (offset, len) = (tool::CHUNK / 2, 2 * tool::CHUNK + 99);
    let copied = tool::copy_part(&src, &dst, offset, len, size, tool::Offload::Auto, None).unwrap();
    assert_eq!(copied.total(), len);
    if kernel {
        assert_eq!(copied.kernel, len, "{copied:?}");
    }
    let copy = fs::read(&dst).unwrap();
    let (a, b) = (offset as usize, (offset + len) as usize);
    assert!(copy[a..b] == body[a..b]);
    assert!(copy[..a].iter().chain(&copy[b..]).all(|&x| x == 0));
    fs::remove_dir_all(&base).unwrap();
}

/// Empty files, a sparse file and a file that is one hole are copied
/// exactly, through the kernel and through the workers.
#[test]
fn sparse_and_empty_files_are_copied_exactly() {
    let (base, src) = scratch_with_source("sparse");
    fs::write(src.join("empty"), "").unwrap();
    let sparse = fs::File::create(src.join("sparse.bin")).unwrap();
    sparse.set_len(24 << 20).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let mut data = vec![0u8; 1 << 20];
        random_fill(&mut data, 4);
        sparse.write_all_at(&data, 8 << 20).unwrap();
        sparse.write_all_at(b"end", (24 << 20) - 3).unwrap();
    }
    drop(sparse);
    fs::File::create(src.join("hole.bin"))
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    for (name, offload) in [("auto", tool::Offload::Auto), ("off", tool::Offload::Off)] {
        let dst = base.join(name);
        let report = copy_ok(&src, &dst, offload);
        assert_eq!(report.files, 3);
        assert_same_tree(&src, &dst, 3);
        assert_eq!(fs::metadata(dst.join("empty")).unwrap().len(), 0);
        if offload == tool::Offload::Off {
            assert_eq!(report.copied.user, report.bytes);
        }
    }
    fs::remove_dir_all(&base).unwrap();
}

/// The fallback path, forced: with `Offload::StopAfter` the kernel's copy
/// of each range stops early as a short copy would, and the workers copy
/// the rest; with `Offload::Off` (`--no-offload`) they copy every byte.
/// Either way the copy is exact and verified.
#[test]
fn the_workers_take_over_where_the_kernel_copy_stops() {
    let base = scratch("fallback");
    let kernel = kernel_copies_in(&base);
    let src = base.join("src");
    let large = write_mixed_tree(&src, 5);
    // Not a multiple of the page size: the workers go on from the middle
    // of a page.
    let stop = (1 << 20) + 3;
    let report = copy_ok(&src, &base.join("short"), tool::Offload::StopAfter(stop));
    assert_same_tree(&src, &base.join("short"), 3);
    assert_eq!(report.copied.cloned, 0);
    if kernel {
        // One range for the file copied whole, three parts for the other.
        assert_eq!(report.copied.kernel, 4 * stop, "{:?}", report.copied);
        assert_eq!(report.copied.user, large + 5 - 4 * stop);
    }
    let report = copy_ok(&src, &base.join("off"), tool::Offload::Off);
    assert_same_tree(&src, &base.join("off"), 3);
    assert_eq!(report.copied.user, large + 5);
    // The command line's switch.
    let code = tool::main_with_args(
        ["--no-progress", "--no-offload"]
            .iter()
            .map(Into::into)
            .chain([src.into_os_string(), base.join("cli").into_os_string()]),
    );
    assert_eq!(code, 0);
    assert_same_tree(&base.join("src"), &base.join("cli"), 3);
    assert_eq!(
        tool::parse_args(["--no-offload".into(), "a".into(), "b".into()])
            .unwrap()
            .offload,
        tool::Offload::Off
    );
    fs::remove_dir_all(&base).unwrap();
}

/// A part of a clone, verified by block map where the maps prove it.
const MAP: Option<tool::CloneCheck> = Some(tool::CloneCheck::BlockMap);

/// What the kernel put in place (a clone, or its copy) is verified: a
/// "clone" whose block map is not the source's (here a copy with the same
/// bytes, or one byte changed) is read back and compared like any copy, so
/// a part whose copy differs from the source in one byte fails, naming the
/// bytes, and an equal one passes.
#[test]
fn what_the_kernel_placed_is_verified() {
    let base = scratch("verify-placed");
    let size = 3 * tool::CHUNK + 5;
    let mut body = vec![0u8; size as usize];
    random_fill(&mut body, 6);
    let (src, dst) = (base.join("src.bin"), base.join("dst.bin"));
    fs::write(&src, &body).unwrap();
    // Not a clone of the source but the same bytes: passes as one.
    fs::write(&dst, &body).unwrap();
    let copied = tool::copy_part(&src, &dst, 0, size, size, tool::Offload::Auto, MAP).unwrap();
    // Its map is not the source's: it was compared byte for byte.
    assert_eq!((copied.cloned, copied.mapped), (size, 0));
    let (offset, len) = (tool::CHUNK, 2 * tool::CHUNK + 5);
    let copied = tool::copy_part(&src, &dst, offset, len, size, tool::Offload::Auto, MAP).unwrap();
    assert_eq!((copied.cloned, copied.mapped), (len, 0));
    let bytes = Some(tool::CloneCheck::Bytes);
    let copied =
        tool::copy_part(&src, &dst, offset, len, size, tool::Offload::Auto, bytes).unwrap();
    assert_eq!((copied.cloned, copied.mapped), (len, 0));
    // One byte changed in the copy.
    let bad = 2 * tool::CHUNK + 300_000;
    body[bad as usize] ^= 1;
    fs::write(&dst, &body).unwrap();
    let err = tool::copy_part(&src, &dst, offset, len, size, tool::Offload::Auto, MAP).unwrap_err();
    assert!(err.contains("verification failed"), "{err}");
    let err =
        tool::copy_part(&src, &dst, offset, len, size, tool::Offload::Auto, bytes).unwrap_err();
    assert!(err.contains("verification failed"), "{err}");
    let piece = 256 << 10;
    let from = bad / piece * piece;
    assert!(
        err.contains(&format!("bytes {from}..{}", from + piece)),
        "{err}"
    );
    // A range before the changed byte still passes.
    tool::copy_part(&src, &dst, 0, tool::CHUNK, size, tool::Offload::Auto, MAP).unwrap();
    fs::remove_dir_all(&base).unwrap();
}

fn extent(logical: u64, physical: u64, length: u64, flags: u32) -> Extent {
    Extent {
        logical,
        physical,
        length,
        flags,
    }
}

/// The block-map comparison: the same extents, shared on the copy, prove
/// a clone however the maps split them; anything else does not.
#[test]
fn block_maps_prove_a_clone_only_when_they_agree() {
    const S: u32 = Extent::SHARED;
    const M: u64 = 1 << 20;
    let src = [
        extent(0, 100 * M, 4 * M, 0),
        // A hole at 4..6 MiB.
        extent(6 * M, 300 * M, 2 * M, Extent::LAST),
    ];
    let clone = [
        // Split in two where the source has one extent.
        extent(0, 100 * M, M, S),
        extent(M, 101 * M, 3 * M, S),
        extent(6 * M, 300 * M, 2 * M, S | Extent::LAST),
    ];
    assert!(tool::maps_share(&src, &clone, 0, 8 * M));
    // A range cut inside extents, and the hole alone.
    assert!(tool::maps_share(&src, &clone, M / 2, 6 * M));
    assert!(tool::maps_share(&src, &clone, 4 * M, 2 * M));
    // Not marked shared.
    let mut unshared = clone;
    unshared[1].flags = 0;
    assert!(!tool::maps_share(&src, &unshared, 0, 8 * M));
    // ...which matters only inside the range.
    assert!(tool::maps_share(&src, &unshared, 6 * M, 2 * M));
    // One block elsewhere (a block of the copy rewritten).
    let mut moved = clone;
    moved[1].physical += 4096;
    assert!(!tool::maps_share(&src, &moved, 0, 8 * M));
    // A hole where the source has data, and data where it has a hole.
    assert!(!tool::maps_share(&src, &clone[..2], 0, 8 * M));
    let filled = [clone[0], clone[1], extent(4 * M, 104 * M, 4 * M, S)];
    assert!(!tool::maps_share(&src, &filled, 0, 8 * M));
    // Addresses that mean nothing, on either side.
    for flag in [
        Extent::UNKNOWN,
        Extent::DELALLOC,
        Extent::ENCODED,
        Extent::DATA_ENCRYPTED,
        Extent::NOT_ALIGNED,
        Extent::DATA_INLINE,
        Extent::DATA_TAIL,
    ] {
        let mut odd = clone;
        odd[0].flags |= flag;
        assert!(!tool::maps_share(&src, &odd, 0, 8 * M), "{flag:#x}");
        let mut odd_src = src;
        odd_src[0].flags |= flag;
        assert!(!tool::maps_share(&odd_src, &clone, 0, 8 * M), "{flag:#x}");
    }
    // Unwritten (reads as zeros) on one side only.
    let mut unwritten = clone;
    unwritten[2].flags |= Extent::UNWRITTEN;
    assert!(!tool::maps_share(&src, &unwritten, 0, 8 * M));
    // Out of order.
    let swapped = [clone[1], clone[0], clone[2]];
    assert!(!tool::maps_share(&src, &swapped, 0, 8 * M));
}

/// A filesystem image mounted on a loop device; unmounted and removed when
/// dropped.
struct LoopMount {
    dir: PathBuf,
    base: PathBuf,
}

impl LoopMount {
    /// Makes a 512 MiB (sparse) `fs` image under a scratch directory and
    /// mounts it; `None`, with the reason printed, where `mkfs.<fs>`, loop
    /// devices or the right to mount are missing.
    fn new(fs: &str) -> Option<LoopMount> {
        use std::process::{Command, Stdio};
        let base = scratch(&format!("loop-{fs}"));
        let (image, dir) = (base.join("image"), base.join("mnt"));
        fs::create_dir_all(&dir).unwrap();
        fs::File::create(&image)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let ok = |c: &mut Command| {
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(Command::new(format!("mkfs.{fs}")).arg("-q").arg(&image)) {
            eprintln!("skipping {fs}: mkfs.{fs} is missing or failed");
            fs::remove_dir_all(&base).unwrap();
            return None;
        }
        if !ok(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&dir))
        {
            eprintln!("skipping {fs}: cannot mount a loop device here (needs root and /dev/loop*)");
            fs::remove_dir_all(&base).unwrap();
            return None;
        }
        Some(LoopMount { dir, base })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// On xfs and btrfs (loop-mounted) large files are cloned, and the clones
/// are verified by their block maps, whole and in parts; `--verify-bytes`
/// reads them back instead. A clone with one byte rewritten has that
/// block elsewhere: its map no longer proves it, the bytes are compared,
/// and verification fails, while a range without the byte still passes by
/// its map.
#[test]
fn clones_on_xfs_and_btrfs_are_verified_by_their_block_maps() {
    for name in ["xfs", "btrfs"] {
        let Some(mount) = LoopMount::new(name) else {
            continue;
        };
        let src = mount.dir.join("src");
        let large = write_mixed_tree(&src, 7);
        let report = copy_ok(&src, &mount.dir.join("mapped"), tool::Offload::Auto);
        assert_same_tree(&src, &mount.dir.join("mapped"), 3);
        eprintln!("{name}: {:?}", report.copied);
        assert_eq!(report.copied.cloned, large, "{name}: {:?}", report.copied);
        assert_eq!(report.copied.mapped, large, "{name}: {:?}", report.copied);

        let opts = tool::Options {
            source: src.clone(),
            dest: mount.dir.join("bytes"),
            jobs: 2,
            progress: false,
            part_size: 4 << 20,
            offload: tool::Offload::Auto,
            clone_check: tool::CloneCheck::Bytes,
        };
        let report = tool::copy_tree(&opts);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_same_tree(&src, &mount.dir.join("bytes"), 3);
        assert_eq!(report.copied.cloned, large, "{name}: {:?}", report.copied);
        assert_eq!(report.copied.mapped, 0, "{name}: {:?}", report.copied);

        // A real clone, then one byte of it rewritten.
        let (from, to) = (src.join("sub/parts.bin"), mount.dir.join("altered.bin"));
        let size = fs::metadata(&from).unwrap().len();
        let clone = fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&to)
            .unwrap();
        assert!(tool::clone(&fs::File::open(&from).unwrap(), &clone));
        let bad = 2 * tool::CHUNK + 300_000;
        {
            use std::os::unix::fs::FileExt;
            let mut b = [0u8];
            clone.read_exact_at(&mut b, bad).unwrap();
            clone.write_all_at(&[b[0] ^ 1], bad).unwrap();
        }
        drop(clone);
        let head =
            tool::copy_part(&from, &to, 0, tool::CHUNK, size, tool::Offload::Auto, MAP).unwrap();
        assert_eq!(
            (head.cloned, head.mapped),
            (tool::CHUNK, tool::CHUNK),
            "{name}"
        );
        let err = tool::copy_part(&from, &to, 0, size, size, tool::Offload::Auto, MAP).unwrap_err();
        assert!(err.contains("verification failed"), "{name}: {err}");
        let piece = 256 << 10;
        let start = bad / piece * piece;
        assert!(err.contains(&format!("bytes {start}..")), "{name}: {err}");

        // A file of 300 extents between holes: its map takes several
        // FIEMAP calls, and the clone's matches it.
        let (from, to) = (
            mount.dir.join("holes.bin"),
            mount.dir.join("holes-clone.bin"),
        );
        let holes = fs::File::create(&from).unwrap();
        let size = 300 * (64 << 10);
        holes.set_len(size).unwrap();
        for i in 0..300 {
            use std::os::unix::fs::FileExt;
            holes
                .write_all_at(&[i as u8 | 1; 4096], i * (64 << 10))
                .unwrap();
        }
        drop(holes);
        let map =
            multiproc::fiemap::extents(fs::File::open(&from).unwrap(), 0, size, true).unwrap();
        assert!(map.len() >= 300, "{name}: {} extents", map.len());
        let clone = fs::File::create(&to).unwrap();
        let src_file = fs::File::open(&from).unwrap();
        assert!(tool::clone(&src_file, &clone));
        assert!(
            tool::shares_blocks(&src_file, &clone, 0, size, size),
            "{name}"
        );
        // A range that starts and ends inside holes.
        assert!(
            tool::shares_blocks(&src_file, &clone, 10_000, size / 2, size),
            "{name}"
        );
        assert!(
            !tool::shares_blocks(&src_file, &src_file, 0, size, size + 1),
            "{name}"
        );
    }
}

/// `--verify-bytes` asks for byte comparison of clones; the block map is
/// the default.
#[test]
fn verify_bytes_is_a_command_line_switch() {
    let parse = |args: &[&str]| tool::parse_args(args.iter().map(Into::into)).unwrap();
    assert_eq!(parse(&["a", "b"]).clone_check, tool::CloneCheck::BlockMap);
    assert_eq!(
        parse(&["--verify-bytes", "a", "b"]).clone_check,
        tool::CloneCheck::Bytes
    );
}
