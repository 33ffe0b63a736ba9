//! The folder-copy tool: copies a directory tree with a pool of worker
//! processes, one progress bar, every file verified.
//!
//! The parent walks the source, creates the directories and symbolic links,
//! and hands each regular file to the pool. A worker opens the file and its
//! copy once each, copies with `io::copy` (which uses `copy_file_range`, so
//! the kernel moves the bytes), sets the permissions and modification time
//! on the open copy, then reads both back through the same handles and
//! compares sizes and a 64-bit hash (four independent lanes, so hashing
//! runs near memory speed). Every failure — an
//! unreadable or special source file, a full disk, a worker that died — is
//! reported with its path, and the exit code is 1: a copy is either
//! complete and verified, or says exactly what is missing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use multiproc::Pool;
use std::ffi::OsString;
use std::fs::{self, File, FileTimes};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub jobs: usize,
    pub progress: bool,
}

/// What a copy did.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub bytes: u64,
    pub dirs: usize,
    pub links: usize,
    pub errors: Vec<String>,
}

const USAGE: &str = "usage: copytree [-j N] [--no-progress] SOURCE DEST

Copies the directory tree SOURCE to DEST (created if missing) with N worker
processes (default: the number of CPUs), keeping permissions and
modification times, and verifies every copied file. Exits with 1 and lists
every file that could not be copied or verified.";

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Options, String> {
    let mut jobs = multiproc::cpu_count();
    let mut progress = true;
    let mut paths = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-h") | Some("--help") => return Err(USAGE.to_string()),
            Some("-j") | Some("--jobs") => {
                let n = args.next().ok_or("-j needs a number")?;
                jobs = n
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .ok_or("-j needs a positive number")?;
            }
            Some("--no-progress") => progress = false,
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s}\n\n{USAGE}"));
            }
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let [source, dest]: [PathBuf; 2] = paths
        .try_into()
        .map_err(|_| format!("expected SOURCE and DEST\n\n{USAGE}"))?;
    Ok(Options {
        source,
        dest,
        jobs,
        progress,
    })
}

/// A 64-bit hash of everything `f` still has to read (not cryptographic:
/// it detects damaged or incomplete copies, not tampering). Returns the
/// length and the hash. `buf` is reused between calls.
pub fn hash_reader(f: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<(u64, u64)> {
    if buf.is_empty() {
        buf.resize(1 << 20, 0);
    }
    const K: u64 = 0x9fb2_1c65_1e98_df25;
    // Four independent lanes over 32-byte blocks, so the multiplies do not
    // wait on each other; the tail goes through the first lane.
    let mut lanes: [u64; 4] = [0x9e37_79b9_7f4a_7c15, 1, 2, 3];
    let mut len: u64 = 0;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        let mut blocks = buf[..n].chunks_exact(32);
        for block in &mut blocks {
            for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
                let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
                *lane = (*lane ^ w).wrapping_mul(K).rotate_left(29);
            }
        }
        for &b in blocks.remainder() {
            lanes[0] = (lanes[0] ^ u64::from(b)).wrapping_mul(K);
        }
    }
    let h = lanes
        .iter()
        .fold(len, |acc, &l| (acc ^ l).wrapping_mul(K).rotate_left(31));
    Ok((len, h))
}

thread_local! {
    /// The hashing buffer of this worker, allocated once.
    static HASH_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The task: copy one file, keep its mode and times, verify it. Returns
/// the bytes copied, or what went wrong.
///
/// Each file is opened once on each side: the bytes move in the kernel
/// (`io::copy` between files uses `copy_file_range`), mode and times are set
/// on the open copy, and both are then read back through the same handles
/// to compare their hashes.
pub fn copy_one(src: PathBuf, dst: PathBuf) -> Result<u64, String> {
    let fail = |what: &str, e: io::Error| format!("{}: {what}: {e}", src.display());
    // Checked before opening: opening a FIFO would wait for a writer.
    let meta = fs::symlink_metadata(&src).map_err(|e| fail("cannot read metadata", e))?;
    if !meta.is_file() {
        return Err(format!(
            "{}: not a regular file (type {:?}); not copied",
            src.display(),
            meta.file_type()
        ));
    }
    let mut from = File::open(&src).map_err(|e| fail("cannot open", e))?;
    let mut to = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&dst)
        .map_err(|e| fail("cannot create the copy", e))?;
    // Leave no partial file that could pass for a copy.
    let undo = |what: &str, e: io::Error| {
        let _ = fs::remove_file(&dst);
        fail(what, e)
    };
    let copied = io::copy(&mut from, &mut to).map_err(|e| undo("cannot copy", e))?;
    let times = FileTimes::new()
        .set_modified(
            meta.modified()
                .map_err(|e| undo("no modification time", e))?,
        )
        .set_accessed(meta.accessed().map_err(|e| undo("no access time", e))?);
    to.set_times(times)
        .and_then(|()| to.set_permissions(meta.permissions()))
        .map_err(|e| undo("cannot set the copy's mode and times", e))?;
    let hashes = HASH_BUF.with(|buf| {
        let buf = &mut buf.borrow_mut();
        from.seek(SeekFrom::Start(0))?;
        to.seek(SeekFrom::Start(0))?;
        Ok::<_, io::Error>((hash_reader(&mut from, buf)?, hash_reader(&mut to, buf)?))
    });
    let ((src_len, src_hash), (dst_len, dst_hash)) =
        hashes.map_err(|e| undo("cannot verify the copy", e))?;
    if src_len != dst_len || src_hash != dst_hash || copied != src_len {
        let _ = fs::remove_file(&dst);
        return Err(format!(
            "{}: verification failed: source {src_len} bytes, copy {dst_len} bytes{}",
            src.display(),
            if src_hash != dst_hash {
                ", contents differ"
            } else {
                ""
            }
        ));
    }
    Ok(copied)
}

struct Plan {
    files: Vec<(PathBuf, PathBuf, u64)>,
    dirs: Vec<(PathBuf, fs::Metadata)>,
}

/// Walks `src`, creating directories and symbolic links under `dst` and
/// listing the files to copy.
fn plan(src: &Path, dst: &Path, plan: &mut Plan, report: &mut Report) {
    let meta = match fs::metadata(src) {
        Ok(m) => m,
        Err(e) => return report.errors.push(format!("{}: {e}", src.display())),
    };
    if let Err(e) = fs::create_dir_all(dst) {
        return report
            .errors
            .push(format!("{}: cannot create directory: {e}", dst.display()));
    }
    report.dirs += 1;
    plan.dirs.push((dst.to_path_buf(), meta));
    let entries = match fs::read_dir(src) {
        Ok(it) => it,
        Err(e) => return report.errors.push(format!("{}: {e}", src.display())),
    };
    let mut entries: Vec<_> = entries
        .filter_map(|e| match e {
            Ok(e) => Some(e),
            Err(err) => {
                report.errors.push(format!("{}: {err}", src.display()));
                None
            }
        })
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                report.errors.push(format!("{}: {e}", from.display()));
                continue;
            }
        };
        if ft.is_dir() {
            self::plan(&from, &to, plan, report);
        } else if ft.is_symlink() {
            let made = fs::read_link(&from).and_then(|target| {
                let _ = fs::remove_file(&to);
                std::os::unix::fs::symlink(target, &to)
            });
            match made {
                Ok(()) => report.links += 1,
                Err(e) => report
                    .errors
                    .push(format!("{}: cannot copy link: {e}", from.display())),
            }
        } else {
            // Regular files, and special files the worker will refuse with
            // a clear message.
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            plan.files.push((from, to, size));
        }
    }
}

/// Copies the tree as `opts` says; the report lists every failure.
pub fn copy_tree(opts: &Options) -> Report {
    let mut report = Report::default();
    let mut p = Plan {
        files: Vec::new(),
        dirs: Vec::new(),
    };
    if !opts.source.is_dir() {
        report
            .errors
            .push(format!("{}: not a directory", opts.source.display()));
        return report;
    }
    plan(&opts.source, &opts.dest, &mut p, &mut report);
    let total_bytes: u64 = p.files.iter().map(|f| f.2).sum();
    let bar = ProgressBar::with_draw_target(
        Some(total_bytes),
        if opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let nfiles = p.files.len();
    let pool = match Pool::new(opts.jobs) {
        Ok(pool) => pool,
        Err(e) => {
            report
                .errors
                .push(format!("cannot start the worker pool: {e}"));
            return report;
        }
    };
    let sizes: Vec<u64> = p.files.iter().map(|f| f.2).collect();
    let work: Vec<(PathBuf, PathBuf)> = p.files.into_iter().map(|(a, b, _)| (a, b)).collect();
    let names: Vec<PathBuf> = work.iter().map(|w| w.0.clone()).collect();
    // Small files travel in chunks; the bar still moves file by file.
    let chunk = if nfiles > 1000 { 8 } else { 1 };
    let mut done = 0usize;
    let mut next_file = 0usize;
    for res in pool.imap_chunked(copy_pair, work, chunk) {
        match res {
            Ok(Ok(bytes)) => {
                report.files += 1;
                report.bytes += bytes;
                bar.inc(bytes);
            }
            Ok(Err(why)) => {
                report.errors.push(why);
                bar.inc(sizes[next_file]);
            }
            Err(e) => {
                // The whole chunk failed (e.g. its worker died): name its files.
                let start = next_file;
                let end = (start + chunk).min(nfiles);
                for name in &names[start..end] {
                    report
                        .errors
                        .push(format!("{}: not copied: {e}", name.display()));
                }
                next_file = end;
                done += end - start;
                bar.set_message(format!("{done}/{nfiles} files"));
                continue;
            }
        }
        next_file += 1;
        done += 1;
        if done % 64 == 0 || done == nfiles {
            bar.set_message(format!("{done}/{nfiles} files"));
        }
    }
    pool.close();
    let _ = pool.join();
    // Directory times last: creating entries changed them.
    for (dir, meta) in p.dirs.iter().rev() {
        let kept = fs::set_permissions(dir, meta.permissions()).and_then(|_| {
            let times = FileTimes::new().set_modified(meta.modified()?);
            File::open(dir)?.set_times(times)
        });
        if let Err(e) = kept {
            report.errors.push(format!(
                "{}: cannot keep directory attributes: {e}",
                dir.display()
            ));
        }
    }
    bar.finish_with_message(format!("{done}/{nfiles} files"));
    report
}

fn copy_pair((src, dst): (PathBuf, PathBuf)) -> Result<u64, String> {
    copy_one(src, dst)
}

/// Runs the tool; returns the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return 2;
        }
    };
    let started = std::time::Instant::now();
    let report = copy_tree(&opts);
    for e in &report.errors {
        eprintln!("copytree: error: {e}");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "copytree: {} files ({:.1} MiB), {} directories, {} links in {:.2} s ({:.1} MiB/s), {} errors",
        report.files,
        report.bytes as f64 / (1 << 20) as f64,
        report.dirs,
        report.links,
        secs,
        report.bytes as f64 / (1 << 20) as f64 / secs.max(1e-9),
        report.errors.len()
    );
    if report.errors.is_empty() {
        0
    } else {
        eprintln!(
            "copytree: the copy of {} is INCOMPLETE: {} problem(s) above",
            opts.source.display(),
            report.errors.len()
        );
        1
    }
}
