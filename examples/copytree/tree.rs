//! The parent's side: walking the source, splitting the files into jobs
//! for the pool, and collecting the results.

use super::attrs::{copy_xattrs, keep_attributes};
use super::clone::{clone, shares_blocks};
use super::range::reserve;
use super::{CloneCheck, Copied, Job, Offload, Options, Report, SMALL, copy_batch};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use multiproc::Pool;
use std::fs::{self, File, FileTimes};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Plan {
    files: Vec<(PathBuf, PathBuf, u64)>,
    /// Each directory: its copy, the source, and the source's metadata.
    dirs: Vec<(PathBuf, PathBuf, fs::Metadata)>,
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
    plan.dirs.push((dst.to_path_buf(), src.to_path_buf(), meta));
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

/// A file being copied, as the parent tracks it.
struct Tracked {
    src: PathBuf,
    dst: PathBuf,
    size: u64,
    /// Parts not yet verified (1 for a file copied whole).
    parts_left: usize,
    /// The source's metadata, for a file split into parts (the parent sets
    /// the copy's mode and times when the last part is in).
    meta: Option<fs::Metadata>,
    /// The parent cloned the file: its parts are only verified.
    cloned: bool,
    /// The bytes of its jobs so far.
    copied: Copied,
    failed: bool,
}

/// A batch of jobs for one task, and per job the index of its file and the
/// bytes it covers.
type Batch = (Vec<Job>, Vec<(usize, u64)>);

/// Splits the files into jobs and the jobs into batches: each part of a
/// large file is a batch of its own (they come first: they take longest),
/// small files travel several to a batch. A file split into parts that the
/// parent cloned and whose clone its block map proves (`CloneCheck::BlockMap`)
/// needs no job: its index goes to `verified`.
fn batches(
    files: &mut [Tracked],
    part_size: u64,
    jobs: usize,
    offload: Offload,
    clone_check: CloneCheck,
    report: &mut Report,
    verified: &mut Vec<usize>,
) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut whole = Vec::new();
    let mut split = Vec::new();
    for (i, f) in files.iter_mut().enumerate() {
        if f.size <= part_size {
            whole.push(i);
            continue;
        }
        // The copy is made at its full length here so that the parts can be
        // written into it in any order; or made a clone of the source, which
        // the parts then verify.
        let made = fs::symlink_metadata(&f.src).and_then(|meta| {
            let to = File::create(&f.dst)?;
            // (A source that cannot be opened is not cloned; its parts say why.)
            let from = File::open(&f.src).ok().filter(|_| offload == Offload::Auto);
            let cloned = from.as_ref().is_some_and(|from| clone(from, &to));
            if !cloned {
                reserve(&to, f.size)?;
            }
            // The whole clone proved by its map here: no worker reads it.
            let mapped = cloned
                && clone_check == CloneCheck::BlockMap
                && from
                    .as_ref()
                    .is_some_and(|from| shares_blocks(from, &to, 0, f.size, f.size));
            Ok((meta, cloned, mapped))
        });
        match made {
            Ok((meta, cloned, mapped)) => {
                f.meta = Some(meta);
                f.cloned = cloned;
                if mapped {
                    verified.push(i);
                    continue;
                }
            }
            Err(e) => {
                f.failed = true;
                report
                    .errors
                    .push(format!("{}: cannot create the copy: {e}", f.src.display()));
                let _ = fs::remove_file(&f.dst);
                continue;
            }
        }
        let parts = f.size.div_ceil(part_size);
        f.parts_left = parts as usize;
        split.push((0..parts).map(move |p| (i, p * part_size)));
    }
    // Parts in turn from each large file: workers running at the same time
    // then write different files, and do not wait for each other on one
    // file's write lock.
    while !split.is_empty() {
        split.retain_mut(|parts| match parts.next() {
            Some((i, offset)) => {
                let f = &files[i];
                let len = part_size.min(f.size - offset);
                out.push((
                    vec![Job::Part {
                        src: f.src.clone(),
                        dst: f.dst.clone(),
                        offset,
                        len,
                        size: f.size,
                        offload,
                        cloned: f.cloned.then_some(clone_check),
                    }],
                    vec![(i, len)],
                ));
                true
            }
            None => false,
        });
    }
    // Enough batches to keep every worker busy to the end, at most 16
    // files or 8 MiB in one.
    let per_batch = (whole.len() / (jobs * 8)).clamp(1, 16);
    let mut batch = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for i in whole {
        let f = &files[i];
        if !batch.0.is_empty() && (batch.0.len() == per_batch || bytes + f.size > 8 << 20) {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += f.size;
        batch.0.push(Job::File {
            src: f.src.clone(),
            dst: f.dst.clone(),
            offload,
            clone_check,
        });
        batch.1.push((i, f.size));
    }
    if !batch.0.is_empty() {
        out.push(batch);
    }
    out
}

/// Records the result of one job of file `f`; returns whether the file is
/// finished (all its parts in). A failed file's copy is removed; a file
/// copied in parts gets its mode and times when the last part is in.
fn finish(f: &mut Tracked, res: Result<Copied, String>, report: &mut Report) -> bool {
    match res {
        Ok(copied) => f.copied.add(copied),
        Err(why) if !f.failed => {
            f.failed = true;
            report.errors.push(format!("{}: {why}", f.src.display()));
            let _ = fs::remove_file(&f.dst);
        }
        Err(_) => {}
    }
    f.parts_left -= 1;
    if f.parts_left > 0 {
        return false;
    }
    if !f.failed {
        if let Some(meta) = &f.meta {
            let kept = File::open(&f.src)
                .map_err(|e| format!("cannot open: {e}"))
                .and_then(|from| {
                    let to = File::options()
                        .write(true)
                        .open(&f.dst)
                        .map_err(|e| format!("cannot open the copy: {e}"))?;
                    keep_attributes(&from, &to, meta)
                });
            if let Err(e) = kept {
                f.failed = true;
                report.errors.push(format!("{}: {e}", f.src.display()));
                let _ = fs::remove_file(&f.dst);
                return true;
            }
        }
        report.files += 1;
        report.bytes += f.size;
        report.copied.add(f.copied);
    }
    true
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
    let mut files: Vec<Tracked> = p
        .files
        .into_iter()
        .map(|(src, dst, size)| Tracked {
            src,
            dst,
            size,
            parts_left: 1,
            meta: None,
            cloned: false,
            copied: Copied::default(),
            failed: false,
        })
        .collect();
    let part_size = opts.part_size.max(SMALL);
    let mut verified = Vec::new();
    let batches = batches(
        &mut files,
        part_size,
        opts.jobs,
        opts.offload,
        opts.clone_check,
        &mut report,
        &mut verified,
    );
    let mut done = 0;
    for f in files.iter().filter(|f| f.failed) {
        done += 1;
        bar.inc(f.size);
    }
    for i in verified {
        let size = files[i].size;
        let copied = Copied {
            cloned: size,
            mapped: size,
            ..Copied::default()
        };
        bar.inc(size);
        finish(&mut files[i], Ok(copied), &mut report);
        done += 1;
    }
    let (jobs, owners): (Vec<_>, Vec<_>) = batches.into_iter().unzip();
    // No pool when there is nothing left for workers (every file a clone
    // that its map proved).
    let pool = match (!jobs.is_empty()).then(|| Pool::new(opts.jobs)) {
        None => None,
        Some(Ok(pool)) => Some(pool),
        Some(Err(e)) => {
            report
                .errors
                .push(format!("cannot start the worker pool: {e}"));
            // Leave nothing that could pass for a copy.
            for &(i, _) in owners.iter().flatten() {
                let _ = fs::remove_file(&files[i].dst);
            }
            return report;
        }
    };
    let mut owners = owners.into_iter();
    let results = pool.as_ref().map(|pool| pool.imap(copy_batch, jobs));
    for res in results.into_iter().flatten() {
        let owner = owners.next().expect("one owner list per batch");
        let results: Vec<Result<Copied, String>> = match res {
            Ok(results) if results.len() == owner.len() => results,
            Ok(results) => vec![
                Err(format!(
                    "the worker answered {} results for {} files",
                    results.len(),
                    owner.len()
                ));
                owner.len()
            ],
            // The whole batch failed (e.g. its worker died).
            Err(e) => {
                // A worker reading a mapping past the end of a file that
                // was cut short meanwhile dies of SIGBUS.
                let hint = if e.signal() == Some(libc::SIGBUS) {
                    " (a source file was probably cut short during the copy)"
                } else {
                    ""
                };
                vec![Err(format!("not copied: {e}{hint}")); owner.len()]
            }
        };
        for ((i, bytes), res) in owner.into_iter().zip(results) {
            bar.inc(bytes);
            if finish(&mut files[i], res, &mut report) {
                done += 1;
                if done % 64 == 0 || done == nfiles {
                    bar.set_message(format!("{done}/{nfiles} files"));
                }
            }
        }
    }
    // The workers exit while the directories get their attributes.
    if let Some(pool) = &pool {
        pool.close();
    }
    // Directory times last: creating entries changed them.
    for (dir, src, meta) in p.dirs.iter().rev() {
        let kept = File::open(dir).and_then(|copy| {
            copy_xattrs(&File::open(src)?, &copy)?;
            fs::set_permissions(dir, meta.permissions())?;
            copy.set_times(FileTimes::new().set_modified(meta.modified()?))
        });
        if let Err(e) = kept {
            report.errors.push(format!(
                "{}: cannot keep directory attributes: {e}",
                dir.display()
            ));
        }
    }
    if let Some(pool) = pool {
        let _ = pool.join();
    }
    bar.finish_with_message(format!("{done}/{nfiles} files"));
    report
}
