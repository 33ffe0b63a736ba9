//! The folder-copy tool (examples/copytree): an exact copy of a tree of
//! many small and a few large files, and clear failures.

#[path = "../examples/copytree/tool.rs"]
#[allow(dead_code)]
mod tool;

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

fn run(src: &Path, dst: &Path) -> (i32, tool::Report) {
    let opts = tool::Options {
        source: src.to_path_buf(),
        dest: dst.to_path_buf(),
        jobs: 2,
        progress: false,
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
    let mut seed = 0x1234_5678_9abc_def0u64;
    for i in 0..3 {
        let mut big = vec![0u8; 20 << 20];
        for chunk in big.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
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

    let dst = base.join("dst");
    let (code, report) = run(&src, &dst);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(code, 0);
    assert_eq!(report.files, 2003);
    let a = files_under(&src);
    let b = files_under(&dst);
    assert_eq!(a.len(), 2003);
    assert_eq!(
        a.iter()
            .map(|p| p.strip_prefix(&src).unwrap())
            .collect::<Vec<_>>(),
        b.iter()
            .map(|p| p.strip_prefix(&dst).unwrap())
            .collect::<Vec<_>>()
    );
    for (x, y) in a.iter().zip(&b) {
        // Byte for byte, independent of the tool's own hash.
        assert!(
            fs::read(x).unwrap() == fs::read(y).unwrap(),
            "{x:?} differs"
        );
        let (mx, my) = (fs::metadata(x).unwrap(), fs::metadata(y).unwrap());
        assert_eq!(mx.permissions().mode(), my.permissions().mode(), "{x:?}");
        assert_eq!(mx.modified().unwrap(), my.modified().unwrap(), "{x:?}");
    }
    let copied = dst.join("dir00/sub/f000.txt");
    assert_eq!(fs::metadata(&copied).unwrap().modified().unwrap(), old);
    assert_eq!(
        fs::metadata(&copied).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn unreadable_or_special_source_files_fail_clearly() {
    let base = scratch("unreadable");
    let src = base.join("src");
    fs::create_dir_all(&src).unwrap();
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
    let base = scratch("full");
    let src = base.join("src");
    fs::create_dir_all(&src).unwrap();
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
    let _ = std::process::Command::new("umount").arg(&mnt).status();
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
