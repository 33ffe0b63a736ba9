//! Shared state: Value, Array (and raw forms), SharedMemory and its
//! tracker.
//!
//! Scenarios V01–V07, SM01–SM05, SM07–SM09, R01 and R02 are ported from CPython's
//! `Lib/test/_test_multiprocessing.py` (see `CPYTHON_SCENARIOS.md`), in
//! Rust terms and across real processes.

use multiproc::*;
use std::io::ErrorKind;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(20);

fn run<R>(mut p: Process<R>) -> R
where
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    p.start().unwrap();
    assert!(p.join_timeout(LONG).unwrap(), "child did not finish");
    p.take_result().unwrap()
}

fn io_kind(e: &Error) -> Option<ErrorKind> {
    match e {
        Error::Io(io) => Some(io.kind()),
        _ => None,
    }
}

fn unique(tag: &str) -> String {
    format!("mp-test-{tag}-{}", std::process::id())
}

fn in_dev_shm(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

fn gone_eventually(name: &str) -> bool {
    let end = Instant::now() + LONG;
    while Instant::now() < end {
        if !in_dev_shm(name) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

// ---------------------------------------------------------------- Value

fn change_values(a: Value<i32>, b: Value<f64>, c: Value<i16>, d: RawValue<u8>) {
    a.set(-7);
    b.set(2.5);
    *c.lock().unwrap() -= 3;
    d.set(b'x');
}

#[test]
fn v01_values_changed_by_child() {
    let a = Value::new(25i32).unwrap();
    let b = Value::new(1.25f64).unwrap();
    let c = Value::new(100i16).unwrap();
    let d = RawValue::new(b'a').unwrap();
    run(Process::new(
        change_values,
        (a.clone(), b.clone(), c.clone(), d.clone()),
    ));
    assert_eq!((a.get(), b.get(), c.get(), d.get()), (-7, 2.5, 97, b'x'));
}

#[test]
fn v02_get_lock_and_get_obj() {
    let v = Value::new(1u32).unwrap();
    let w = Value::new(2u32).unwrap();
    assert!(!v.get_lock().same_as(w.get_lock()));
    let shared = Lock::new().unwrap();
    let x = Value::with_lock(3u64, shared.clone()).unwrap();
    let y = Value::with_lock(4u64, shared.clone()).unwrap();
    assert!(x.get_lock().same_as(y.get_lock()));
    {
        let mut g = x.lock().unwrap();
        assert!(shared.is_locked() && y.get_lock().is_locked());
        // The object is reached through the guard (Python's `get_obj()`
        // under `with get_lock()`).
        *g.get_obj() += 10;
    }
    assert!(!shared.is_locked());
    assert_eq!((x.get(), y.get()), (13, 4));
}

fn negate(a: Array<i32>) {
    for x in a.lock().unwrap().iter_mut() {
        *x = -*x;
    }
}

#[test]
fn v03_array_slices_and_child_negation() {
    let seq = [672, 123, 5, 42, 0, 9];
    let a = Array::from_slice(&seq).unwrap();
    assert_eq!(a.len(), 6);
    assert_eq!(a.get(3), Some(42));
    assert_eq!(a.get(6), None);
    {
        let mut g = a.lock().unwrap();
        assert_eq!(&g[1..3], [123, 5]);
        g[2..4].copy_from_slice(&[7, 8]);
    }
    assert_eq!(a.to_vec(), [672, 123, 7, 8, 0, 9]);
    assert!(a.set(6, 1).is_err());
    run(Process::new(negate, (a.clone(),)));
    assert_eq!(a.to_vec(), [-672, -123, -7, -8, 0, -9]);
}

#[test]
fn v04_zero_filled_and_raw_array() {
    let a = Array::<u64>::new(10).unwrap();
    assert_eq!(a.to_vec(), [0; 10]);
    a.set(9, 5).unwrap();
    assert_eq!(a.get(9), Some(5));
    let r = RawArray::<f32>::new(4).unwrap();
    assert_eq!(r.to_vec(), [0.0; 4]);
    r.write_at(1, &[1.0, 2.0]).unwrap();
    let mut out = [0.0f32; 3];
    r.read_at(1, &mut out).unwrap();
    assert_eq!(out, [1.0, 2.0, 0.0]);
    assert!(r.write_at(3, &[1.0, 2.0]).is_err());
    assert!(r.read_at(usize::MAX, &mut out).is_err());
    let empty = RawArray::<u8>::new(0).unwrap();
    assert!(empty.is_empty());
    assert!(empty.to_vec().is_empty());
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}

// SAFETY: two f64 fields, repr(C), no padding; every bit pattern is valid.
unsafe impl ShmSafe for Point {}

fn mutate_all(
    x: Value<i32>,
    y: Value<f64>,
    z: Value<i64>,
    p: Value<Point>,
    arr: Array<f64>,
    s: Value<[u8; 8]>,
) {
    x.set(x.get() * 2);
    y.set(y.get() * 2.0);
    z.set(z.get() * 2);
    let mut g = p.lock().unwrap();
    g.x *= 4.0;
    g.y *= 8.0;
    drop(g);
    for v in arr.lock().unwrap().iter_mut() {
        *v *= 2.0;
    }
    let mut t = s.get();
    t.reverse();
    s.set(t);
}

#[test]
fn v06_structs_arrays_and_strings() {
    let x = Value::new(7i32).unwrap();
    let y = Value::new(1.0 / 3.0).unwrap();
    let z = Value::new(1i64 << 40).unwrap();
    let p = Value::new(Point { x: 1.0, y: -1.7 }).unwrap();
    let arr = Array::from_slice(&[0.0, 1.0, 2.0, 3.0, 4.0]).unwrap();
    let s = Value::new(*b"abcdefgh").unwrap();
    run(Process::new(
        mutate_all,
        (
            x.clone(),
            y.clone(),
            z.clone(),
            p.clone(),
            arr.clone(),
            s.clone(),
        ),
    ));
    assert_eq!(x.get(), 14);
    assert_eq!(y.get(), 2.0 / 3.0);
    assert_eq!(z.get(), 1i64 << 41);
    assert_eq!(
        p.get(),
        Point {
            x: 4.0,
            y: -1.7 * 8.0
        }
    );
    assert_eq!(arr.to_vec(), [0.0, 2.0, 4.0, 6.0, 8.0]);
    assert_eq!(&s.get(), b"hgfedcba");
}

#[test]
fn v07_copies_are_independent() {
    let arr = Array::from_slice(&[1u16, 2, 3]).unwrap();
    let mut copy = arr.to_vec();
    copy[0] = 99;
    assert_eq!(arr.get(0), Some(1));
    // A clone is the same memory, not a copy.
    let same = arr.clone();
    same.set(0, 42).unwrap();
    assert_eq!(arr.get(0), Some(42));
}

#[test]
fn element_type_is_checked_on_receipt() {
    let (a, b) = Pipe::new().unwrap();
    a.send(&Value::new(1u32).unwrap()).unwrap();
    let e = b.recv::<Value<u64>>().unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "{e}");
    // A Lock is not an Event either.
    a.send(&Lock::new().unwrap()).unwrap();
    assert!(matches!(b.recv::<Event>(), Err(Error::Decode(_))));
}

// ---------------------------------------------------------------- SharedMemory

#[test]
fn sm01_basics() {
    let name = unique("sm01");
    let shm = SharedMemory::create(&name, 512).unwrap();
    assert_eq!(shm.name(), name);
    assert_eq!(shm.size(), 512);
    assert!(in_dev_shm(&name));
    shm.write_at(0, b"hello").unwrap();
    // Attach by name: the same bytes.
    let other = SharedMemory::attach(&name).unwrap();
    assert_eq!(other.size(), 512);
    assert_eq!(&other.to_vec()[..5], b"hello");
    other.write_at(500, &[7; 12]).unwrap();
    let mut tail = [0u8; 12];
    shm.read_at(500, &mut tail).unwrap();
    assert_eq!(tail, [7; 12]);
    assert!(shm.write_at(501, &[0; 12]).is_err());
    // Existing name on create; also with a leading slash.
    let e = SharedMemory::create(&name, 64).unwrap_err();
    assert_eq!(io_kind(&e), Some(ErrorKind::AlreadyExists));
    let e = SharedMemory::create(&format!("/{name}"), 64).unwrap_err();
    assert_eq!(io_kind(&e), Some(ErrorKind::AlreadyExists));
    assert!(format!("{shm:?}").contains(&name));
    other.close();
    shm.unlink().unwrap();
    assert!(!in_dev_shm(&name));
    // Unlinked: attach fails, a second unlink too; our mapping still works.
    let e = SharedMemory::attach(&name).unwrap_err();
    assert_eq!(io_kind(&e), Some(ErrorKind::NotFound));
    assert_eq!(
        io_kind(&shm.unlink().unwrap_err()),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(&shm.to_vec()[..5], b"hello");
}

#[test]
fn sm02_auto_names() {
    let a = SharedMemory::create_auto(100).unwrap();
    let b = SharedMemory::create_auto(100).unwrap();
    assert_ne!(a.name(), b.name());
    assert!(in_dev_shm(a.name()) && in_dev_shm(b.name()));
    a.unlink().unwrap();
    b.unlink().unwrap();
    assert!(!in_dev_shm(a.name()) && !in_dev_shm(b.name()));
}

#[test]
fn sm03_invalid_creation() {
    let bad = |r: Result<SharedMemory>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(bad(SharedMemory::create(&unique("zero"), 0)));
    assert!(bad(SharedMemory::create_auto(0)));
    assert!(bad(SharedMemory::create("with\0nul", 10)));
    assert!(bad(SharedMemory::attach("with\0nul")));
    assert!(bad(SharedMemory::create("a/b", 10)));
    assert!(bad(SharedMemory::create("", 10)));
    assert!(bad(SharedMemory::create(&"x".repeat(300), 10)));
    let e = SharedMemory::attach(&unique("missing")).unwrap_err();
    assert_eq!(io_kind(&e), Some(ErrorKind::NotFound));
}

fn write_howdy_by_name(name: String) {
    SharedMemory::attach(&name)
        .unwrap()
        .write_at(0, b"howdy")
        .unwrap();
}

fn write_through_object(shm: SharedMemory) -> String {
    shm.write_at(5, b"HOWDY").unwrap();
    shm.name().to_string()
}

#[test]
fn sm04_sm05_across_processes() {
    let shm = SharedMemory::create_auto(64).unwrap();
    run(Process::new(write_howdy_by_name, (shm.name().to_string(),)));
    let first = shm.name().to_string();
    assert_eq!(run(Process::new(write_through_object, (shm,))), first);
    // The object was moved into the arguments; attach again to read.
    let again = SharedMemory::attach(&first).unwrap();
    assert_eq!(&again.to_vec()[..10], b"howdyHOWDY");
    again.unlink().unwrap();
    let name = {
        let (a, b) = Pipe::new().unwrap();
        let shm = SharedMemory::create_auto(16).unwrap();
        a.send(&shm).unwrap();
        let same: SharedMemory = b.recv().unwrap();
        assert_eq!(same.name(), shm.name());
        same.write_at(0, b"x").unwrap();
        let mut c = [0u8];
        shm.read_at(0, &mut c).unwrap();
        assert_eq!(&c, b"x");
        // Sent after unlink: the receiver cannot attach.
        shm.unlink().unwrap();
        a.send(&shm).unwrap();
        let e = b.recv::<SharedMemory>().unwrap_err();
        assert!(matches!(e, Error::Decode(_)), "{e}");
        shm.name().to_string()
    };
    assert!(!in_dev_shm(&name));
}

#[test]
fn sm05_child_writes_parent_reads() {
    let shm = SharedMemory::create_auto(64).unwrap();
    run(Process::new(write_howdy_by_name, (shm.name().to_string(),)));
    assert_eq!(&shm.to_vec()[..5], b"howdy");
    shm.unlink().unwrap();
}

/// Creates a named segment, hands it to the peer (which then also holds the
/// tracker), tells the parent, and waits to be killed.
fn create_and_hang(name: String, peer: Connection, ready: Event) {
    let shm = SharedMemory::create(&name, 4096).unwrap();
    peer.send(&shm).unwrap();
    ready.set();
    thread::sleep(LONG * 3);
}

fn hold_received(peer: Connection, ready: Event, exit: Event) -> bool {
    let shm: SharedMemory = peer.recv().unwrap();
    shm.write_at(0, b"still here").unwrap();
    ready.set();
    exit.wait_timeout(LONG)
}

#[test]
fn sm09_r01_sigkilled_creator_leaves_nothing_once_users_are_gone() {
    let name = unique("sm09");
    let (a, b) = Pipe::new().unwrap();
    let (created, received, exit) = (
        Event::new().unwrap(),
        Event::new().unwrap(),
        Event::new().unwrap(),
    );
    let mut creator = Process::new(create_and_hang, (name.clone(), a, created.clone()));
    creator.start().unwrap();
    let mut user = Process::new(hold_received, (b, received.clone(), exit.clone()));
    user.start().unwrap();
    assert!(created.wait_timeout(LONG) && received.wait_timeout(LONG));
    creator.kill().unwrap();
    assert!(creator.join_timeout(LONG).unwrap());
    // The other user still holds it: the name stays, and attaching works.
    assert!(in_dev_shm(&name));
    let mut buf = [0u8; 10];
    SharedMemory::attach(&name)
        .unwrap()
        .read_at(0, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"still here");
    exit.set();
    assert!(user.join_timeout(LONG).unwrap());
    assert!(user.take_result().unwrap());
    assert!(gone_eventually(&name), "{name} left behind in /dev/shm");
}

fn create_and_forget(name: String) {
    let shm = SharedMemory::create(&name, 128).unwrap();
    shm.close();
}

#[test]
fn creator_exiting_without_unlink_leaves_nothing() {
    let name = unique("forgotten");
    run(Process::new(create_and_forget, (name.clone(),)));
    assert!(gone_eventually(&name), "{name} left behind in /dev/shm");
}

/// The state letter of process `pid` (`R`, `S`, `Z`…), or `None` once it
/// is gone.
fn proc_state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()
        .map(String::from)
}

/// The shared-memory trackers that are children of this process.
fn my_trackers() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let mut after = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let (state, ppid) = (after.next(), after.next());
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(me.as_str())
            && state != Some("Z")
            && cmd.starts_with(b"multiproc-shm-tracker")
        {
            out.push(pid);
        }
    }
    out
}

/// [`my_trackers`] once there is one: a process fresh from `exec` shows an
/// empty command line for a moment.
fn my_trackers_eventually() -> Vec<u32> {
    let end = Instant::now() + LONG;
    loop {
        let found = my_trackers();
        if !found.is_empty() || Instant::now() > end {
            return found;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// R02: creates `a`, kills the tracker with SIGKILL, creates `b` (a new
/// tracker is started and told about `a` too), and exits without
/// unlinking either.
fn outlive_the_tracker(a: String, b: String) -> bool {
    let _a = SharedMemory::create(&a, 64).unwrap();
    let first = my_trackers_eventually();
    assert_eq!(first.len(), 1, "{first:?}");
    // SAFETY: kill(2) with integer arguments, on our own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(first[0] as i32, libc::SIGKILL);
    }
    // Dead once a zombie (or reaped): by then its end of the pipe is
    // closed. (Its command line empties earlier, while it still holds it.)
    let end = Instant::now() + LONG;
    while proc_state(first[0]).is_some_and(|s| s != "Z") && Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
    let _b = SharedMemory::create(&b, 64).unwrap();
    let second = my_trackers_eventually();
    assert!(
        second.len() == 1 && second != first,
        "{first:?} then {second:?}"
    );
    // The dead tracker was reaped, not left as a zombie.
    proc_state(first[0]).is_none()
}

#[test]
fn r02_a_killed_tracker_is_replaced_and_still_nothing_leaks() {
    let (a, b) = (unique("before-kill"), unique("after-kill"));
    assert!(run(Process::new(
        outlive_the_tracker,
        (a.clone(), b.clone())
    )));
    // The creator exited without unlinking: the new tracker unlinks both.
    assert!(gone_eventually(&a), "{a} left behind in /dev/shm");
    assert!(gone_eventually(&b), "{b} left behind in /dev/shm");
}

fn unlink_in_child(name: String) -> bool {
    SharedMemory::attach(&name).unwrap().unlink().is_ok()
}

#[test]
fn unlink_from_another_process() {
    let shm = SharedMemory::create_auto(32).unwrap();
    assert!(run(Process::new(
        unlink_in_child,
        (shm.name().to_string(),)
    )));
    assert!(!in_dev_shm(shm.name()));
    assert_eq!(
        io_kind(&shm.unlink().unwrap_err()),
        Some(ErrorKind::NotFound)
    );
}

// ---------------------------------------------------------------- ShareableList

#[test]
fn sm07_shareable_list_basics() {
    let items: Vec<Item> = vec![
        "howdy".into(),
        Item::Bytes(b"HoWdY".to_vec()),
        Item::Float(-273.154),
        Item::Int(100),
        Item::None,
        Item::Bool(true),
        Item::Int(42),
    ];
    let name = unique("sm07");
    let sl = ShareableList::with_name(&name, &items).unwrap();
    assert_eq!(sl.len(), 7);
    assert_eq!(sl.to_vec().unwrap(), items);
    assert_eq!(sl.get(-1).unwrap(), Item::Int(42));
    assert_eq!(sl.get(-7).unwrap(), Item::from("howdy"));
    assert!(sl.get(7).is_err() && sl.get(-8).is_err());
    assert_eq!(sl.index(&Item::Int(100)).unwrap(), Some(3));
    assert_eq!(sl.index(&Item::Int(7)).unwrap(), None);
    assert_eq!(sl.count(&Item::Bool(true)).unwrap(), 1);
    // Within the room of the slot (5 bytes, rounded up to 8): fine; beyond: error.
    sl.set(0, "encodés".into()).unwrap();
    assert_eq!(sl.get(0).unwrap(), Item::from("encodés"));
    assert!(matches!(
        sl.set(0, "far too long for it".into()),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(sl.get(0).unwrap(), Item::from("encodés"));
    // Any fixed-size kind fits anywhere.
    sl.set(1, Item::Float(1.5)).unwrap();
    sl.set(3, Item::None).unwrap();
    assert_eq!(sl.get(1).unwrap(), Item::Float(1.5));
    // Attach by name: the same list; a new list is a copy.
    let other = ShareableList::attach(&name).unwrap();
    other.set(6, Item::Int(-1)).unwrap();
    assert_eq!(sl.get(6).unwrap(), Item::Int(-1));
    let copy = ShareableList::new(&sl.to_vec().unwrap()).unwrap();
    copy.set(6, Item::Int(5)).unwrap();
    assert_eq!(sl.get(6).unwrap(), Item::Int(-1));
    copy.shm().unlink().unwrap();
    // Not a list.
    let raw = SharedMemory::create_auto(64).unwrap();
    assert!(matches!(
        ShareableList::attach(raw.name()),
        Err(Error::InvalidArgument(_))
    ));
    raw.unlink().unwrap();
    // Empty.
    let empty = ShareableList::new(&[]).unwrap();
    assert!(empty.is_empty());
    assert!(empty.to_vec().unwrap().is_empty());
    empty.shm().unlink().unwrap();
    sl.shm().unlink().unwrap();
    assert!(!in_dev_shm(&name));
}

fn edit_list(list: ShareableList) -> usize {
    list.set(0, Item::Int(99)).unwrap();
    list.len()
}

#[test]
fn sm08_shareable_list_travels() {
    let sl = ShareableList::new(&[Item::Int(1), "x".into()]).unwrap();
    assert_eq!(
        run(Process::new(edit_list, (sl.clone_handle().unwrap(),))),
        2
    );
    assert_eq!(sl.get(0).unwrap(), Item::Int(99));
    // The message carries the name, not the data.
    let (a, b) = Pipe::new().unwrap();
    a.send(&sl).unwrap();
    let there: ShareableList = b.recv().unwrap();
    there.set(1, "y".into()).unwrap();
    assert_eq!(sl.get(1).unwrap(), Item::from("y"));
    // A dead segment cannot be received.
    sl.shm().unlink().unwrap();
    a.send(&sl).unwrap();
    assert!(b.recv::<ShareableList>().is_err());
    assert!(!in_dev_shm(sl.shm().name()));
}

// ------------------------------------- soundness of locked and raw memory

#[test]
fn locked_memory_cannot_be_received_as_raw() {
    // A `Value`/`Array` hands out `&mut` under its lock, so its memory must
    // not be reachable without the lock: a locked one received as a raw one
    // (which reads and writes without the lock) is refused, and a raw one
    // cannot pose as a locked one either.
    let (a, b) = Pipe::new().unwrap();
    let v = Value::new(7u64).unwrap();
    a.send(&v).unwrap();
    assert!(b.recv::<RawValue<u64>>().is_err());
    a.send(&(RawValue::new(7u64).unwrap(), Lock::new().unwrap()))
        .unwrap();
    assert!(b.recv::<Value<u64>>().is_err());
    let arr = Array::<u32>::new(4).unwrap();
    a.send(&arr).unwrap();
    assert!(b.recv::<RawArray<u32>>().is_err());
    a.send(&(RawArray::<u32>::new(4).unwrap(), Lock::new().unwrap()))
        .unwrap();
    assert!(b.recv::<Array<u32>>().is_err());
    // The right types still travel.
    a.send(&v).unwrap();
    assert_eq!(b.recv::<Value<u64>>().unwrap().get(), 7);
    a.send(&arr).unwrap();
    assert_eq!(b.recv::<Array<u32>>().unwrap().to_vec(), [0; 4]);
}

fn count_locked(v: Value<u64>, a: Array<u64>, n: u64) {
    for i in 0..n {
        *v.lock().unwrap() += 1;
        a.lock().unwrap()[(i % 3) as usize] += 1;
    }
}

#[test]
fn locked_counter_increments_from_four_processes_sum_exactly() {
    let n = 5_000;
    let v = Value::new(0u64).unwrap();
    let a = Array::<u64>::new(3).unwrap();
    let mut ps: Vec<_> = (0..4)
        .map(|_| Process::new(count_locked, (v.clone(), a.clone(), n)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        assert!(p.join_timeout(LONG).unwrap(), "child did not finish");
        assert_eq!(p.exitcode(), Some(0));
    }
    assert_eq!(v.get(), 4 * n);
    assert_eq!(a.to_vec().iter().sum::<u64>(), 4 * n);
}

/// Writes byte `k + 4 * round` into every element `i` with `i % 4 == k`,
/// one element at a time, then raises the shared value to `k`.
fn raw_writer(a: RawArray<u8>, v: RawValue<u64>, k: usize, rounds: u8) -> u64 {
    let len = a.len();
    for r in 0..rounds {
        let b = k as u8 + 4 * r;
        for i in (k..len).step_by(4) {
            a.set(i, b).unwrap();
        }
        assert_eq!(a.get(k), Some(b));
    }
    // The value is written by all, racing (any of their values will do).
    v.set(v.get().max(k as u64));
    v.get()
}

fn bulk_writer(a: RawArray<u16>, k: usize, rounds: u16) {
    let q = a.len() / 4;
    let mine = vec![k as u16 + 1; q];
    let mut back = vec![0u16; q];
    for _ in 0..rounds {
        a.write_at(k * q, &mine).unwrap();
        a.read_at(k * q, &mut back).unwrap();
        assert_eq!(back, mine);
    }
}

#[test]
fn raw_get_set_and_bulk_from_several_processes() {
    // Neighbouring bytes share machine words: each process writes every
    // fourth byte, so every word is written by all four at once, and no
    // write may lose a neighbour's byte.
    let a = RawArray::<u8>::new(1003).unwrap();
    let v = RawValue::new(0u64).unwrap();
    let mut ps: Vec<_> = (0..4)
        .map(|k| Process::new(raw_writer, (a.clone(), v.clone(), k, 50)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        assert!(p.join_timeout(LONG).unwrap(), "child did not finish");
        assert!(p.take_result().unwrap() <= 3);
    }
    let got = a.to_vec();
    for (i, b) in got.iter().enumerate() {
        assert_eq!(*b as usize, i % 4 + 4 * 49, "byte {i}");
    }
    // Quarters that start and end inside words (odd element counts).
    let b = RawArray::<u16>::new(4 * 257).unwrap();
    let mut ps: Vec<_> = (0..4)
        .map(|k| Process::new(bulk_writer, (b.clone(), k, 200)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        assert!(p.join_timeout(LONG).unwrap(), "child did not finish");
        assert_eq!(p.exitcode(), Some(0));
    }
    let want: Vec<u16> = (0..4 * 257).map(|i| (i / 257) as u16 + 1).collect();
    assert_eq!(b.to_vec(), want);
    let mut mid = [0u16; 5];
    b.read_at(255, &mut mid).unwrap();
    assert_eq!(mid, [1, 1, 2, 2, 2]);
}
