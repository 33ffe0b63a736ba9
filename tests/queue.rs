//! Queue acceptance tests: CPython's queue scenarios (Q01–Q11, Q14) and the
//! issue's own (many producers and consumers, SIGKILL of a consumer and of
//! a producer, a 100 MiB item, handles inside items, exit with items
//! queued), across real processes.

mod common;

use common::{eventually, for_each_method};
use multiproc::*;
use serde::{Deserialize, Serialize, Serializer};
use serde_bytes::ByteBuf;
use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---------------------------------------------------------------- Q01, Q02

fn drain_after(q: Queue<u32>, start: Event) -> Vec<u32> {
    start.wait();
    let mut out = Vec::new();
    while let Ok(n) = q.get_timeout(secs(5.0)) {
        out.push(n);
        if out.len() == 6 {
            break;
        }
    }
    out
}

/// Q01: a bounded queue fills with every put form; then full(), put_nowait
/// is Full at once and put_timeout after about its timeout; a consumer
/// child drains it and it is empty.
#[test]
fn q01_put_forms_until_full() -> Result<()> {
    let q = Queue::with_maxsize(6)?;
    let start = Event::new()?;
    let mut consumer = Process::new(drain_after, (q.clone(), start.clone()));
    consumer.start()?;
    q.put(1)?;
    q.put(2)?;
    q.put_timeout(3, secs(1.0))?;
    q.put_deadline(4, Instant::now() + secs(1.0))?;
    q.put_nowait(5)?;
    q.put(6)?;
    assert!(q.is_full());
    assert_eq!(q.qsize(), 6);
    let t = Instant::now();
    assert!(matches!(q.put_nowait(7), Err(PutError::Full(7))));
    assert!(t.elapsed() < secs(0.5));
    let t = Instant::now();
    assert!(matches!(
        q.put_timeout(8, secs(0.2)),
        Err(PutError::Full(8))
    ));
    assert!(t.elapsed() >= secs(0.19) && t.elapsed() < secs(5.0));
    start.set();
    consumer.join()?;
    assert_eq!(consumer.take_result()?, vec![1, 2, 3, 4, 5, 6]);
    assert!(q.is_empty());
    assert!(!q.is_full());
    assert_eq!(q.qsize(), 0);
    Ok(())
}

/// Q02: the get forms return items in FIFO order; on an empty queue
/// get_nowait is Empty at once and get_timeout after about its timeout.
/// Q04/Q07: qsize tracks puts and gets; get_timeout(0.2) on an empty queue
/// is Empty after at least 0.1 s.
#[test]
fn q02_q04_q07_get_forms_qsize_timeout() -> Result<()> {
    let q = Queue::new()?;
    assert_eq!(q.qsize(), 0);
    q.put("a".to_string())?;
    assert_eq!(q.qsize(), 1);
    q.put("b".to_string())?;
    q.put("c".to_string())?;
    q.put("d".to_string())?;
    assert_eq!(q.qsize(), 4);
    assert_eq!(q.get_nowait()?, "a");
    assert_eq!(q.get()?, "b");
    assert_eq!(q.get_timeout(secs(1.0))?, "c");
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get_deadline(Instant::now() + secs(1.0))?, "d");
    assert_eq!(q.qsize(), 0);
    let t = Instant::now();
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    assert!(t.elapsed() < secs(0.5));
    let t = Instant::now();
    assert!(matches!(q.get_timeout(secs(0.2)), Err(Error::Empty)));
    assert!(t.elapsed() >= secs(0.1) && t.elapsed() < secs(5.0));
    Ok(())
}

// --------------------------------------------------------------------- Q03

fn fill(q: Queue<u64>, n: u64) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

fn q03_scenario(method: StartMethod) {
    let q = Queue::new().unwrap();
    let mut p = get_context(method).process(fill, (q.clone(), 1000u64));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0), "under {method}");
    for i in 0..1000u64 {
        assert_eq!(q.get_nowait().unwrap(), i, "under {method}");
    }
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

/// Q03 (every start method): a queue filled by a child is read after the
/// child exited: all items, in order, then Empty. Also: a child that exits
/// with items still queued exits at once.
#[test]
fn q03_filled_by_child_read_after_exit() {
    for_each_method(q03_scenario);
}

// --------------------------------------------------------------------- Q05

fn task_worker(q: JoinableQueue<u32>, done: Queue<u32>) {
    while let Ok(n) = q.get() {
        std::thread::sleep(Duration::from_millis(5));
        done.put(n).unwrap();
        q.task_done().unwrap();
    }
}

/// Q05: JoinableQueue with 4 worker processes calling task_done: join
/// returns once all 10 items are done; one task_done too many is an error.
#[test]
fn q05_joinable_task_done() -> Result<()> {
    let q = JoinableQueue::new()?;
    let done = Queue::new()?;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut p = Process::new(task_worker, (q.clone(), done.clone())).daemon(true);
        p.start()?;
        workers.push(p);
    }
    for n in 0..10 {
        q.put(n)?;
    }
    assert!(q.join_timeout(secs(20.0)));
    assert_eq!(q.unfinished_tasks(), 0);
    let mut got: Vec<u32> = (0..10).map(|_| done.get_nowait().unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(q.task_done().is_err());
    for p in &mut workers {
        p.terminate()?;
        p.join()?;
    }
    Ok(())
}

// ------------------------------------------------------------ Q08, Q10, Q11

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Job {
    #[serde(serialize_with = "fail_if_negative")]
    n: i64,
}

fn fail_if_negative<S: Serializer>(n: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if *n < 0 {
        Err(serde::ser::Error::custom("negative jobs cannot be encoded"))
    } else {
        s.serialize_i64(*n)
    }
}

/// Q08: an item that cannot be encoded is an error for that put (the item
/// comes back) and nothing else: the next good item arrives, and qsize /
/// empty / full stay right with maxsize=1.
#[test]
fn q08_unencodable_item() -> Result<()> {
    let q = Queue::with_maxsize(1)?;
    match q.put(Job { n: -1 }) {
        // The message of the item's own Serialize impl survives.
        Err(PutError::Failed(job, Error::Encode(why))) => {
            assert_eq!(job, Job { n: -1 });
            assert!(why.contains("negative jobs cannot be encoded"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(q.is_empty());
    assert_eq!(q.qsize(), 0);
    assert!(!q.is_full());
    q.put(Job { n: 2 })?;
    assert!(q.is_full());
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get()?, Job { n: 2 });
    assert!(q.is_empty());
    Ok(())
}

/// Q10: after close(), put and get on that handle fail with a closed
/// error (the item comes back); other handles go on. Q11: SimpleQueue
/// empty before and after put/get; close is idempotent.
#[test]
fn q10_q11_close_and_simple_queue() -> Result<()> {
    let q = Queue::new()?;
    let other = q.clone();
    q.put(1u8)?;
    q.close();
    assert!(q.is_closed());
    assert!(matches!(q.put(2), Err(PutError::Closed(2))));
    assert!(matches!(q.get(), Err(Error::Closed)));
    assert!(matches!(q.get_nowait(), Err(Error::Closed)));
    let e: Error = q.put(3).unwrap_err().into();
    assert!(e.to_string().contains("closed"));
    assert_eq!(other.get()?, 1);

    let s = SimpleQueue::new()?;
    assert!(s.is_empty());
    s.put(vec![1u16, 2])?;
    assert!(!s.is_empty());
    assert_eq!(s.get()?, vec![1, 2]);
    assert!(s.is_empty());
    s.close();
    s.close();
    assert!(s.is_closed());
    assert!(matches!(s.get(), Err(Error::Closed)));
    Ok(())
}

// --------------------------------------------------------------------- Q14

fn grandchild(q: Queue<String>) {
    q.put(format!("from grandchild {}", std::process::id()))
        .unwrap();
}

fn child_passes_on(q: Queue<String>) -> u32 {
    let mut p = Process::new(grandchild, (q.clone(),));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    p.join().unwrap();
    q.put("from child".into()).unwrap();
    pid
}

/// Q14: a child passes its queue argument on to a grandchild, which uses
/// it.
#[test]
fn q14_queue_passed_to_grandchild() -> Result<()> {
    let q = Queue::new()?;
    let mut p = Process::new(child_passes_on, (q.clone(),));
    p.start()?;
    p.join()?;
    let gpid = p.take_result()?;
    assert_eq!(q.get_timeout(secs(5.0))?, format!("from grandchild {gpid}"));
    assert_eq!(q.get_timeout(secs(5.0))?, "from child");
    Ok(())
}

// ------------------------------------------------------- many to many

fn producer(q: Queue<u64>, id: u64, n: u64) {
    for i in 0..n {
        q.put(id << 32 | i).unwrap();
    }
}

/// Returns the items received, and checks FIFO per producer on the way.
fn consumer(q: Queue<u64>, producers: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut last = vec![None::<u64>; producers as usize];
    loop {
        let v = q.get_timeout(secs(30.0)).unwrap();
        if v == u64::MAX {
            return out;
        }
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        if let Some(prev) = last[p] {
            assert!(i > prev, "producer {p}: item {i} after {prev}");
        }
        last[p] = Some(i);
        out.push(v);
    }
}

/// 4 producers and 4 consumers move 1,000,000 items (200,000 in debug
/// builds): none lost, none duplicated, FIFO per producer.
#[test]
fn many_producers_many_consumers() -> Result<()> {
    let total: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let per = total / 4;
    let q = Queue::new()?;
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let mut c = Process::new(consumer, (q.clone(), 4u64));
        c.start()?;
        consumers.push(c);
    }
    let mut producers = Vec::new();
    for id in 0..4 {
        let mut p = Process::new(producer, (q.clone(), id, per));
        p.start()?;
        producers.push(p);
    }
    for p in &mut producers {
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    for _ in 0..4 {
        q.put(u64::MAX)?;
    }
    let mut all = Vec::with_capacity(total as usize);
    for c in &mut consumers {
        c.join()?;
        all.extend(c.take_result()?);
    }
    assert_eq!(all.len() as u64, total);
    all.sort_unstable();
    let expected: Vec<u64> = (0..4u64)
        .flat_map(|id| (0..per).map(move |i| id << 32 | i))
        .collect();
    assert!(all == expected, "items lost or duplicated");
    assert!(q.is_empty());
    Ok(())
}

// ---------------------------------------------------------- SIGKILL cases

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Big(ByteBuf),
    Small(u64),
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A verified big item: 8 bytes of seed, then `pattern(seed)`.
fn big_item(seed: u64, len: usize) -> Msg {
    let mut v = seed.to_le_bytes().to_vec();
    v.extend(pattern(seed, len - 8));
    Msg::Big(ByteBuf::from(v))
}

fn verify(m: &Msg) -> bool {
    match m {
        Msg::Big(b) => {
            let seed = u64::from_le_bytes(b[..8].try_into().unwrap());
            b[8..] == pattern(seed, b.len() - 8)[..]
        }
        Msg::Small(_) => true,
    }
}

fn put_msgs(q: Queue<Msg>, msgs: Vec<(u64, usize)>) {
    for (seed, len) in msgs {
        let m = if len == 0 {
            Msg::Small(seed)
        } else {
            big_item(seed, len)
        };
        q.put(m).unwrap();
    }
}

fn get_one(q: Queue<Msg>) -> bool {
    q.get().is_ok()
}

fn block_in_get(q: Queue<Msg>) {
    let _ = q.get();
}

/// A consumer killed with SIGKILL in the middle of a get leaves the queue
/// usable: (1) one killed while assembling a streamed 64 MiB item (the rest
/// of that item is skipped, the next item arrives whole); (2) one killed
/// while it holds the consumer lock waiting on an empty queue.
#[test]
fn consumer_killed_mid_get() -> Result<()> {
    let q: Queue<Msg> = Queue::with_config(0, 64 << 10)?;
    // The big item cannot fit the 64 KiB ring: the producer streams it in
    // a thousand chunks and blocks until a consumer drains it.
    let mut prod = Process::new(put_msgs, (q.clone(), vec![(1, 64 << 20), (2, 0)]));
    prod.start()?;
    assert!(eventually(secs(60.0), || q.qsize() == 1));
    // A consumer that starts taking it; kill it once it has taken the first
    // chunk (the item count drops) and before it could finish.
    let mut c = Process::new(get_one, (q.clone(),));
    c.start()?;
    assert!(eventually(secs(10.0), || q.qsize() == 0 || !c.is_alive()));
    c.kill()?;
    c.join()?;
    // It had taken the first chunk (the count dropped) and not returned:
    // it died in the middle of assembling the item.
    assert_eq!(
        c.exitcode(),
        Some(-9),
        "the consumer finished before the kill"
    );
    // Whatever the timing, the next get gets a whole, verified item and the
    // small item is never lost.
    let mut small_seen = false;
    while !small_seen {
        let m = q.get_timeout(secs(10.0))?;
        assert!(verify(&m), "torn item received");
        small_seen = matches!(m, Msg::Small(2));
    }
    prod.join()?;
    assert_eq!(prod.exitcode(), Some(0));

    // (2) A consumer asleep in get holds the consumer lock; kill it.
    let mut c = Process::new(block_in_get, (q.clone(),));
    c.start()?;
    std::thread::sleep(Duration::from_millis(300));
    c.kill()?;
    c.join()?;
    q.put(Msg::Small(3))?;
    let t = Instant::now();
    assert!(matches!(q.get_timeout(secs(10.0))?, Msg::Small(3)));
    assert!(t.elapsed() < secs(5.0));
    Ok(())
}

/// A producer killed with SIGKILL in the middle of streaming a 64 MiB item
/// never leaves a torn item: the consumer skips the partial item (with no
/// other producer, and when a new producer comes), and only gets whole,
/// verified items.
#[test]
fn producer_killed_mid_put() -> Result<()> {
    let q: Queue<Msg> = Queue::with_config(0, 1 << 20)?;
    let mut prod = Process::new(put_msgs, (q.clone(), vec![(7, 64 << 20)]));
    prod.start()?;
    // The item has started to enter the ring (counted) and cannot be
    // complete: it is 64 times the ring and nobody consumes.
    assert!(eventually(secs(60.0), || q.qsize() == 1));
    std::thread::sleep(Duration::from_millis(50));
    prod.kill()?;
    prod.join()?;
    // Nobody else produces: the consumer drains the partial item, sees the
    // producer is dead, and reports Empty (no torn item, no hang).
    let t = Instant::now();
    assert!(matches!(q.get_timeout(secs(1.0)), Err(Error::Empty)));
    assert!(t.elapsed() < secs(5.0));

    // Again, and this time a new producer takes over the producer lock.
    let mut prod = Process::new(put_msgs, (q.clone(), vec![(8, 64 << 20)]));
    prod.start()?;
    assert!(eventually(secs(10.0), || q.qsize() >= 1));
    std::thread::sleep(Duration::from_millis(50));
    prod.kill()?;
    prod.join()?;
    let mut next = Process::new(put_msgs, (q.clone(), vec![(9, 3 << 20), (10, 0)]));
    next.start()?;
    let first = q.get_timeout(secs(20.0))?;
    assert!(
        matches!(&first, Msg::Big(b) if b.len() == 3 << 20),
        "{first:?}"
    );
    assert!(verify(&first));
    assert!(matches!(q.get_timeout(secs(10.0))?, Msg::Small(10)));
    next.join()?;
    assert!(q.is_empty());
    Ok(())
}

// --------------------------------------------------------------- big items

fn echo(rx: Queue<ByteBuf>, tx: Queue<ByteBuf>) {
    let item = rx.get().unwrap();
    tx.put(item).unwrap();
}

/// A 100 MiB item goes to a child and comes back intact (streamed through
/// the 4 MiB rings both ways); a 0-byte item too.
#[test]
fn hundred_mib_item_round_trip() -> Result<()> {
    let there = Queue::new()?;
    let back = Queue::new()?;
    let mut p = Process::new(echo, (there.clone(), back.clone()));
    p.start()?;
    let data = ByteBuf::from(pattern(42, 100 << 20));
    there.put(data.clone())?;
    let got = back.get_timeout(secs(60.0))?;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "100 MiB item corrupted");
    p.join()?;

    let unit = Queue::new()?;
    unit.put(())?;
    unit.get()?;
    Ok(())
}

// ----------------------------------------------------------------- handles

#[derive(Serialize, Deserialize)]
struct Parcel {
    file: Handle<std::fs::File>,
    conn: Connection,
    reply: Queue<String>,
    note: String,
}

fn handle_user(q: Queue<Parcel>) {
    let Parcel {
        file: Handle(mut file),
        conn,
        reply,
        note,
    } = q.get().unwrap();
    file.write_all(note.as_bytes()).unwrap();
    conn.send(&"via connection").unwrap();
    reply.put("via inner queue".into()).unwrap();
}

/// Items carry a file, a connection and another queue to a child, which
/// uses all three.
#[test]
fn handles_inside_items() -> Result<()> {
    let q = Queue::new()?;
    let reply = Queue::new()?;
    let (here, there) = Pipe::new()?;
    let path = std::env::temp_dir().join(format!("mp-queue-test-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    let mut p = Process::new(handle_user, (q.clone(),));
    p.start()?;
    q.put(Parcel {
        file: Handle(file.try_clone()?),
        conn: there,
        reply: reply.clone(),
        note: "via file".into(),
    })
    .map_err(Error::from)?;
    assert_eq!(here.recv_timeout::<String>(secs(10.0))?, "via connection");
    assert_eq!(reply.get_timeout(secs(10.0))?, "via inner queue");
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    file.rewind()?;
    let mut s = String::new();
    file.read_to_string(&mut s)?;
    assert_eq!(s, "via file");
    Ok(())
}

/// A queue received as another item type is refused with a clear error.
#[test]
fn wrong_item_type_is_refused() -> Result<()> {
    let q: Queue<u32> = Queue::new()?;
    let (a, b) = Pipe::new()?;
    a.send(&q)?;
    let e = b.recv::<Queue<String>>().unwrap_err();
    assert!(e.to_string().contains("another element type"), "{e}");
    a.send(&q)?;
    let same: Queue<u32> = b.recv()?;
    same.put(5)?;
    assert_eq!(q.get()?, 5);
    Ok(())
}

// -------------------------------------------------------------------- wait

fn put_later(q: Queue<u8>, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    q.put(1).unwrap();
}

/// connection::wait over queues (and a pipe): nothing ready, then the
/// queue a child puts into.
#[test]
fn wait_on_queues() -> Result<()> {
    let a: Queue<u8> = Queue::new()?;
    let b: Queue<u8> = Queue::new()?;
    let (rx, _tx) = Pipe::new()?;
    let objs: [&dyn Waitable; 3] = [&a, &b, &rx];
    assert!(connection::wait(objs, Some(Duration::ZERO))?.is_empty());
    let mut p = Process::new(put_later, (b.clone(), 100));
    p.start()?;
    assert_eq!(connection::wait(objs, Some(secs(10.0)))?, [1]);
    assert_eq!(b.get_nowait()?, 1);
    a.put(2)?;
    assert_eq!(connection::wait(objs, Some(secs(10.0)))?, [0]);
    p.join()?;
    Ok(())
}

// ------------------------------------------------------------ exit, queued

/// Fills the queue until it is full; returns how many items went in.
fn fill_until_full(q: Queue<u64>) -> u64 {
    let mut n = 0;
    while q.put_nowait(n).is_ok() {
        n += 1;
    }
    n
}

/// A process that exits with items still queued (here: the ring full, no
/// consumer anywhere) exits at once, and every item its puts accepted is
/// still delivered after it is gone.
#[test]
fn exit_with_items_queued_does_not_hang() -> Result<()> {
    let q = Queue::with_config(0, 64 << 10)?;
    let mut p = Process::new(fill_until_full, (q.clone(),));
    p.start()?;
    assert!(p.join_timeout(secs(20.0))?, "the child did not exit");
    assert_eq!(p.exitcode(), Some(0));
    let n = p.take_result()?;
    assert!(n > 1000, "only {n} items fit");
    assert!(q.is_full());
    for i in 0..n {
        assert_eq!(q.get_nowait()?, i);
    }
    assert!(q.is_empty());
    Ok(())
}

// ------------------------------------------------------ large items, wrap

#[derive(Serialize, Deserialize)]
struct Blob {
    data: Msg,
    file: Option<Handle<std::fs::File>>,
}

fn put_blobs(q: Queue<Blob>, n: u64, file: Handle<std::fs::File>) {
    for i in 0..n {
        let len = 70_000 + (i as usize * 7919) % 50_000;
        let file = (i % 5 == 0).then(|| Handle(file.0.try_clone().unwrap()));
        q.put(Blob {
            data: big_item(i, len),
            file,
        })
        .unwrap();
    }
}

/// Items of 70–120 KiB through a 256 KiB ring (encoded in place, or through
/// a buffer where the space wraps), some with a handle: all arrive whole
/// and in order.
#[test]
fn large_items_wrap_the_ring() -> Result<()> {
    let q = Queue::with_config(0, 256 << 10)?;
    let file = std::fs::File::open("/proc/self/exe")?;
    let mut p = Process::new(put_blobs, (q.clone(), 60u64, Handle(file)));
    p.start()?;
    for i in 0..60u64 {
        let b = q.get_timeout(secs(20.0))?;
        assert!(verify(&b.data), "item {i} corrupted");
        match &b.data {
            Msg::Big(v) => assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), i),
            Msg::Small(_) => panic!("unexpected small item"),
        }
        assert_eq!(b.file.is_some(), i % 5 == 0, "item {i}");
        if let Some(Handle(f)) = b.file {
            // The clones share one file offset: read at 0.
            let mut magic = [0u8; 4];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut magic, 0)?;
            assert_eq!(&magic, b"\x7fELF");
        }
    }
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    Ok(())
}

fn double(x: u32) -> u32 {
    x * 2
}

fn feed_back(q: Queue<u32>, n: u32) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

/// Q15: in a process whose standard input is closed (a daemon started with
/// `<&-`), starting children, a queue between them and a pool all work,
/// under every start method.
fn closed_stdin(method: StartMethod) {
    // SAFETY: close(2) on fd 0, in the test's own scenario child, which
    // never reads standard input.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(0);
    }
    let q = Queue::new().unwrap();
    let mut p = Process::new(feed_back, (q.clone(), 100)).start_method(method);
    p.start().unwrap();
    let got: Vec<u32> = (0..100).map(|_| q.get().unwrap()).collect();
    p.join().unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .unwrap();
    assert_eq!(
        pool.map(double, 0..10).unwrap(),
        (0..10).map(double).collect::<Vec<_>>()
    );
}

#[test]
fn q15_children_queues_and_pools_with_stdin_closed() {
    for_each_method(closed_stdin);
}

fn put_deep_then_fine(q: Queue<common::Nest>) {
    q.put(common::Nest {
        depth: common::HOSTILE_DEPTH,
    })
    .unwrap();
    q.put(common::Nest { depth: 3 }).unwrap();
}

// A queue item nested 100,000 deep, put by another process, is a decode
// error for the getter (not a stack overflow); the queue goes on.
#[test]
fn deep_items_are_decode_errors() {
    let q: Queue<common::Nest> = Queue::new().unwrap();
    let mut p = Process::new(put_deep_then_fine, (q.clone(),));
    p.start().unwrap();
    match q.get_timeout(Duration::from_secs(60)) {
        Err(Error::Decode(why)) => assert!(why.contains("nests deeper"), "{why}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(
        q.get_timeout(Duration::from_secs(60)).unwrap(),
        common::Nest { depth: 3 }
    );
    p.join().unwrap();
    p.take_result().unwrap();
}

// ------------------------------------------------- timeouts in mid-item

/// Whether `pid` is stopped (state `T` in `/proc/PID/stat`).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            == Some("T")
    })
}

/// Sends SIGCONT to `pid` after `after` unless told not to first: a stuck
/// test then fails on its assertions instead of hanging.
fn guard(pid: u32, after: Duration) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(after) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            common::signal(pid, libc::SIGCONT);
        }
    });
    tx
}

/// A get with a timeout: (whether it ended in `Empty`, milliseconds taken,
/// the small item it got if any).
fn get_within(q: Queue<Msg>, ms: u64) -> (bool, u64, Option<u64>) {
    let t = Instant::now();
    let r = q.get_timeout(Duration::from_millis(ms));
    let took = t.elapsed().as_millis() as u64;
    match r {
        Err(Error::Empty) => (true, took, None),
        Ok(Msg::Small(n)) => (false, took, Some(n)),
        _ => (false, took, None),
    }
}

/// A consumer whose timed get started a streamed item and whose producer
/// stalls (SIGSTOP) in the middle of it returns `Empty` by its deadline;
/// another consumer process is not blocked past its own deadline; after
/// SIGCONT the next get on the same handle returns the whole item, and the
/// other consumer gets the item after it.
#[test]
fn get_timeout_mid_item_with_stalled_producer() -> Result<()> {
    // 1 MiB through a 64 KiB ring: sixteen rings' worth, streamed.
    let q: Queue<Msg> = Queue::with_config(0, 64 << 10)?;
    let mut prod = Process::new(put_msgs, (q.clone(), vec![(5, 1 << 20), (6, 0)]));
    prod.start()?;
    let pid = prod.pid().expect("started");
    // The first chunk is published (counted) and the ring is full: the
    // producer waits for room in the middle of the item. Stop it there.
    assert!(eventually(secs(10.0), || q.qsize() == 1 && q.is_full()));
    common::signal(pid, libc::SIGSTOP);
    assert!(eventually(secs(10.0), || is_stopped(pid)));
    let cont = guard(pid, secs(10.0));

    // This get takes what is in the ring, then would wait for the stopped
    // producer: it returns Empty at its deadline instead.
    for _ in 0..2 {
        let t = Instant::now();
        let r = q.get_timeout(secs(0.3));
        assert!(matches!(r, Err(Error::Empty)), "not Empty: {:?}", r.err());
        assert!(t.elapsed() < secs(3.0), "took {:?}", t.elapsed());
    }
    // Another consumer process keeps to its deadline as well.
    let mut other = Process::new(get_within, (q.clone(), 300u64));
    other.start()?;
    other.join()?;
    let (empty, ms, _) = other.take_result()?;
    assert!(empty && ms < 3000, "other consumer: empty {empty}, {ms} ms");
    // One more consumer waits for the next item meanwhile.
    let mut next = Process::new(get_within, (q.clone(), 30_000u64));
    next.start()?;

    let _ = cont.send(());
    common::signal(pid, libc::SIGCONT);
    let m = q.get_timeout(secs(30.0))?;
    assert!(
        matches!(&m, Msg::Big(b) if b.len() == 1 << 20),
        "wrong item"
    );
    assert!(verify(&m), "torn item received");
    next.join()?;
    assert_eq!(next.take_result()?.2, Some(6));
    prod.join()?;
    assert_eq!(prod.exitcode(), Some(0));
    assert!(q.is_empty());
    assert_eq!(q.qsize(), 0);
    Ok(())
}

/// A consumer that gave up mid-item and then ends (drops its queue, or is
/// killed) does not block the other consumers: the item it had started is
/// lost, as when a consumer dies mid-item, and the next one arrives.
#[test]
fn consumer_that_gave_up_mid_item_then_exits() -> Result<()> {
    let q: Queue<Msg> = Queue::with_config(0, 64 << 10)?;
    let mut prod = Process::new(put_msgs, (q.clone(), vec![(5, 1 << 20), (6, 0)]));
    prod.start()?;
    let pid = prod.pid().expect("started");
    assert!(eventually(secs(10.0), || q.qsize() == 1 && q.is_full()));
    common::signal(pid, libc::SIGSTOP);
    assert!(eventually(secs(10.0), || is_stopped(pid)));
    let cont = guard(pid, secs(10.0));
    // A child gives up on the item and returns (its handle is dropped).
    let mut quitter = Process::new(get_within, (q.clone(), 300u64));
    quitter.start()?;
    quitter.join()?;
    let (empty, ms, _) = quitter.take_result()?;
    assert!(empty && ms < 3000, "quitter: empty {empty}, {ms} ms");
    let _ = cont.send(());
    common::signal(pid, libc::SIGCONT);
    // The rest of the started item is skipped; the next item arrives.
    let r = get_within(q.clone(), 30_000);
    assert_eq!(r.2, Some(6), "{r:?}");
    prod.join()?;
    assert!(q.is_empty());
    Ok(())
}

fn get_verified(q: Queue<Msg>) -> Option<(usize, bool)> {
    match q.get_timeout(secs(30.0)) {
        Ok(m @ Msg::Big(_)) => Some((
            match &m {
                Msg::Big(b) => b.len(),
                Msg::Small(_) => 0,
            },
            verify(&m),
        )),
        _ => None,
    }
}

/// A producer streaming an item larger than the ring while the consumers
/// stall (SIGSTOP) returns `Full` with its item by its deadline; the part
/// already in the ring is withdrawn (the consumer drops it), nothing torn
/// or duplicated arrives, and the same item put again arrives whole, once.
#[test]
fn put_timeout_mid_item_with_stalled_consumer() -> Result<()> {
    let q: Queue<Msg> = Queue::with_config(0, 64 << 10)?;
    // A consumer asleep in get on the empty queue, then stopped.
    let mut cons = Process::new(get_verified, (q.clone(),));
    cons.start()?;
    let pid = cons.pid().expect("started");
    std::thread::sleep(Duration::from_millis(300));
    common::signal(pid, libc::SIGSTOP);
    assert!(eventually(secs(10.0), || is_stopped(pid)));
    let cont = guard(pid, secs(10.0));

    let item = big_item(9, 1 << 20);
    let t = Instant::now();
    let r = q.put_timeout(item, secs(0.3));
    assert!(t.elapsed() < secs(3.0), "took {:?}", t.elapsed());
    let item = match r {
        Err(PutError::Full(item)) => item,
        other => panic!("expected Full, got {other:?}"),
    };
    assert!(verify(&item));
    // The withdrawn part fills the ring until a consumer drops it; puts
    // keep to their deadlines meanwhile.
    let t = Instant::now();
    assert!(
        q.put_timeout(Msg::Small(1), secs(0.3))
            .unwrap_err()
            .is_full()
    );
    assert!(t.elapsed() < secs(3.0));

    let _ = cont.send(());
    common::signal(pid, libc::SIGCONT);
    // The consumer drops the withdrawn part and gets the item put again,
    // whole.
    q.put(item)?;
    cons.join()?;
    assert_eq!(cons.take_result()?, Some((1 << 20, true)));
    assert!(matches!(q.get_timeout(secs(1.0)), Err(Error::Empty)));
    assert!(q.is_empty());
    Ok(())
}

/// A withdrawn item of a `JoinableQueue` does not count as a task.
#[test]
fn joinable_put_timeout_mid_item_counts_no_task() -> Result<()> {
    let q: JoinableQueue<ByteBuf> = JoinableQueue::new()?;
    // Twice the 4 MiB ring, and no consumer.
    let big = ByteBuf::from(pattern(3, 8 << 20));
    // Should the put not return, a consumer comes after 10 s and the test
    // fails instead of hanging.
    let (stop, rx) = std::sync::mpsc::channel::<()>();
    let drain = q.clone();
    std::thread::spawn(move || {
        if rx.recv_timeout(secs(10.0)).is_err() {
            let _ = drain.get_timeout(secs(30.0));
        }
    });
    let t = Instant::now();
    let r = q.put_timeout(big.clone(), secs(0.3));
    let _ = stop.send(());
    assert!(t.elapsed() < secs(3.0), "took {:?}", t.elapsed());
    assert!(
        matches!(&r, Err(PutError::Full(b)) if *b == big),
        "not Full with the item: {:?}",
        r.as_ref().err().map(PutError::is_full)
    );
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.join_timeout(secs(1.0)));
    // The withdrawn part fills the ring until a get drops it (and finds
    // nothing else).
    assert!(q.is_full());
    assert!(matches!(q.get_timeout(secs(1.0)), Err(Error::Empty)));
    assert!(q.is_empty());
    q.put(ByteBuf::from(vec![1, 2, 3]))?;
    assert_eq!(q.get_timeout(secs(5.0))?.as_slice(), [1, 2, 3]);
    q.task_done()?;
    assert!(q.join_timeout(secs(1.0)));
    Ok(())
}

/// The item a timed get parked is resumed by a get on another thread of
/// the same process (here an untimed one, which must not wait for the
/// consumer lock its own process keeps for the parked item).
#[test]
fn parked_item_resumed_by_another_thread() -> Result<()> {
    let q: Queue<Msg> = Queue::with_config(0, 64 << 10)?;
    let mut prod = Process::new(put_msgs, (q.clone(), vec![(5, 1 << 20)]));
    prod.start()?;
    let pid = prod.pid().expect("started");
    assert!(eventually(secs(10.0), || q.qsize() == 1 && q.is_full()));
    common::signal(pid, libc::SIGSTOP);
    assert!(eventually(secs(10.0), || is_stopped(pid)));
    let cont = guard(pid, secs(10.0));
    assert!(matches!(q.get_timeout(secs(0.2)), Err(Error::Empty)));
    let other = q.clone();
    let t = std::thread::spawn(move || other.get().map(|m| verify(&m)));
    std::thread::sleep(Duration::from_millis(300));
    let _ = cont.send(());
    common::signal(pid, libc::SIGCONT);
    assert!(t.join().unwrap()?, "torn item received");
    prod.join()?;
    assert!(q.is_empty());
    Ok(())
}
