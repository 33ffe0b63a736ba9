//! Pipe and Connection tests, ported from CPython's
//! `Lib/test/_test_multiprocessing.py` (`_TestConnection`, `_TestPoll`,
//! `_TestPicklingConnections`, fd transfer) where they apply in Rust terms,
//! plus hostile-input tests of the frame decoder. Scenario ids (N01…) refer
//! to `CPYTHON_SCENARIOS.md`.

mod common;

use common::{HOSTILE_DEPTH, Nest, nest_bytes};
use multiproc::*;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn echo_until_eof(conn: Connection) -> usize {
    let mut n = 0;
    while let Ok(msg) = conn.recv_bytes() {
        conn.send_bytes(&msg).unwrap();
        n += 1;
    }
    n
}

fn temp_file(tag: &str) -> File {
    let path = std::env::temp_dir().join(format!("multiproc-test-{tag}-{}", std::process::id()));
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

// N01: objects and bytes both ways through a child; recv_bytes_into;
// BufferTooShort; poll forms; a large message; EOF when the peer is gone.
#[test]
fn duplex_pipe_with_a_child() {
    let (here, there) = Pipe::new().unwrap();
    let mut p = Process::new(echo_until_eof, (there,));
    p.start().unwrap();

    assert!(!here.poll(Some(Duration::ZERO)).unwrap());
    here.send_bytes(b"hello").unwrap();
    assert!(here.poll(None).unwrap());
    assert_eq!(here.recv_bytes().unwrap(), b"hello");

    here.send(&(1u8, "two", [3.0f64])).unwrap();
    let echoed: (u8, String, [f64; 1]) = here.recv().unwrap();
    assert_eq!(echoed, (1, "two".to_string(), [3.0]));

    let mut buf = [0u8; 16];
    here.send_bytes(b"into").unwrap();
    assert_eq!(here.recv_bytes_into(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"into");

    here.send_bytes(&[9u8; 40]).unwrap();
    match here.recv_bytes_into(&mut buf) {
        Err(Error::BufferTooShort { message, capacity }) => {
            assert_eq!(message, vec![9u8; 40]);
            assert_eq!(capacity, 16);
        }
        other => panic!("expected BufferTooShort, got {other:?}"),
    }

    let t = Instant::now();
    assert!(!here.poll(Some(Duration::from_millis(100))).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(90));

    // ~10 MB, bigger than any socket buffer, in both directions at once.
    let big: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
    here.send_bytes(&big).unwrap();
    assert_eq!(here.recv_bytes().unwrap(), big);

    drop(here);
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 5);
}

#[test]
fn eof_after_the_peer_closes() {
    let (a, b) = Pipe::new().unwrap();
    a.send_bytes(b"last").unwrap();
    drop(a);
    assert_eq!(b.recv_bytes().unwrap(), b"last");
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    assert!(matches!(b.recv::<u32>(), Err(Error::Eof)));
    // Writing to a closed peer is an error, never a SIGPIPE death.
    let err = b.send_bytes(b"x").unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
        "{err}"
    );
}

// N02: one-way pipes refuse the wrong direction.
#[test]
fn one_way_pipe_directions() {
    let (r, w) = Pipe::one_way().unwrap();
    assert!(r.readable() && !r.writable());
    assert!(w.writable() && !w.readable());
    assert!(matches!(r.send_bytes(b"x"), Err(Error::WrongDirection(_))));
    assert!(matches!(w.recv_bytes(), Err(Error::WrongDirection(_))));
    assert!(matches!(
        w.poll(Some(Duration::ZERO)),
        Err(Error::WrongDirection(_))
    ));
    w.send(&42u64).unwrap();
    assert_eq!(r.recv::<u64>().unwrap(), 42);
}

fn write_three(w: Connection) {
    for i in 0..3u32 {
        w.send(&i).unwrap();
    }
}

// N03: the parent drops the child's end; what the child writes arrives, then
// EOF once the child exits.
#[test]
fn child_end_closed_in_parent() {
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let (r, w) = Pipe::one_way().unwrap();
        let mut p = Process::new(write_three, (w,)).start_method(m);
        p.start().unwrap();
        for i in 0..3u32 {
            assert_eq!(r.recv::<u32>().unwrap(), i);
        }
        assert!(matches!(r.recv::<u32>(), Err(Error::Eof)));
        p.join().unwrap();
    }
}

fn write_into(file: Handle<File>, text: String) -> u64 {
    let mut f = file.into_inner();
    f.write_all(text.as_bytes()).unwrap();
    f.stream_position().unwrap()
}

// N05: descriptors travel to a child, including high-numbered ones.
#[test]
fn file_descriptors_travel_to_children() {
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let mut f = temp_file("fd");
        let mut p = Process::new(
            write_into,
            (Handle(f.try_clone().unwrap()), "from child".to_string()),
        )
        .start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.take_result().unwrap(), 10);
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "from child");
    }
    // A descriptor numbered above 256.
    let f = temp_file("high");
    // SAFETY: dup2 of an fd we own onto an unused high number.
    #[allow(unsafe_code)]
    let high = unsafe { libc::dup2(f.as_raw_fd(), 300) };
    assert_eq!(high, 300);
    // SAFETY: fd 300 was just created by dup2 and is owned here alone.
    #[allow(unsafe_code)]
    let high = unsafe { File::from_raw_fd(300) };
    let mut p = Process::new(write_into, (Handle(high), "high".to_string()));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 4);
}

// N05: a message that refers to a handle that did not arrive is an error.
#[test]
fn missing_handle_is_an_error() {
    let (a, b) = Pipe::new().unwrap();
    // Index 0 in the handle encoding, with no descriptor attached.
    a.send(&0u32).unwrap();
    let err = b.recv::<Handle<File>>().unwrap_err();
    assert!(
        matches!(err, Error::Decode(ref m) if m.contains("did not arrive")),
        "{err}"
    );
    // Handles cannot be serialized by other serde formats (here postcard
    // used directly, outside the crate's codec).
    let f = temp_file("other-format");
    assert!(postcard::to_allocvec(&Handle(f)).is_err());
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
enum Colour {
    Red,
    Green,
    Blue,
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Checked {
    #[serde(with = "multiproc::handle")]
    log: File,
    count: std::num::NonZeroU32,
}

/// A value that the receiving type's own `Deserialize` rejects is an error
/// that says why, not only that something failed.
#[test]
fn rejected_values_say_why() {
    let (a, b) = Pipe::new().unwrap();
    // Variant index 7 of a three-variant enum.
    a.send(&7u32).unwrap();
    let err = b.recv::<Colour>().unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.contains("variant index 0 <= i < 3")),
        "{err}"
    );
    // Zero where a NonZeroU32 is expected, behind an Option.
    a.send(&Some(0u32)).unwrap();
    let err = b.recv::<Option<std::num::NonZeroU32>>().unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.contains("nonzero")),
        "{err}"
    );
    // In a value holding a handle, the handle is taken once, by the first
    // attempt: the error names the type instead.
    #[derive(serde::Serialize)]
    struct Unchecked {
        #[serde(with = "multiproc::handle")]
        log: File,
        count: u32,
    }
    a.send(&Unchecked {
        log: temp_file("rejected"),
        count: 0,
    })
    .unwrap();
    let err = b.recv::<Checked>().unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.contains("Checked")),
        "{err}"
    );
    // The connection goes on.
    a.send(&Colour::Blue).unwrap();
    assert!(matches!(b.recv::<Colour>().unwrap(), Colour::Blue));
}

// More handles than one SCM_RIGHTS message can carry.
#[test]
fn hundreds_of_handles_in_one_message() {
    let (a, b) = Pipe::new().unwrap();
    let files: Vec<Handle<File>> = (0..600)
        .map(|_| Handle(File::open("/dev/null").unwrap()))
        .collect();
    a.send(&files).unwrap();
    a.send(&"after").unwrap();
    let got: Vec<Handle<File>> = b.recv().unwrap();
    assert_eq!(got.len(), 600);
    let ino = |f: &File| std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
    let _ = ino;
    for h in &got {
        let target = std::fs::read_link(format!("/proc/self/fd/{}", h.0.as_raw_fd())).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"));
    }
    assert_eq!(b.recv::<String>().unwrap(), "after");
}

// N06: dropping a Connection closes it; the peer sees EOF.
#[test]
fn drop_closes() {
    let (a, b) = Pipe::new().unwrap();
    a.close();
    assert!(b.poll(Some(Duration::from_secs(5))).unwrap());
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}

// N11: empty messages, order, no merging.
#[test]
fn framing_keeps_boundaries() {
    let (a, b) = Pipe::new().unwrap();
    a.send_bytes(b"").unwrap();
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(b.recv_bytes().unwrap(), b"");
    for m in [&b"a"[..], b"b", b"cd"] {
        a.send_bytes(m).unwrap();
    }
    assert_eq!(b.recv_bytes().unwrap(), b"a");
    assert_eq!(b.recv_bytes().unwrap(), b"b");
    assert_eq!(b.recv_bytes().unwrap(), b"cd");
    // A socket holds only a few hundred small unread messages (kernel
    // accounting per message), so a sender thread runs alongside.
    let t = std::thread::spawn(move || {
        for i in 0..1000u32 {
            a.send(&format!("message {i}")).unwrap();
        }
    });
    for i in 0..1000u32 {
        assert_eq!(b.recv::<String>().unwrap(), format!("message {i}"));
    }
    t.join().unwrap();
}

fn serve_on(conn: Connection, stream: Handle<UnixStream>) -> String {
    let msg: String = conn.recv().unwrap();
    let mut s = stream.into_inner();
    s.write_all(msg.to_uppercase().as_bytes()).unwrap();
    msg
}

fn forward(conn: Connection) -> u32 {
    // A Connection received inside a message is usable here.
    let inner: Connection = conn.recv().unwrap();
    let v: u32 = inner.recv().unwrap();
    inner.send(&(v * 2)).unwrap();
    v
}

// N12: connections and sockets travel to other processes, in arguments and
// inside messages.
#[test]
fn connections_and_sockets_travel() {
    let (mine, theirs) = Pipe::new().unwrap();
    let (mut s1, s2) = UnixStream::pair().unwrap();
    let mut p = Process::new(serve_on, (theirs, Handle(s2)));
    p.start().unwrap();
    mine.send("shout").unwrap();
    let mut got = String::new();
    s1.read_to_string(&mut got).unwrap();
    assert_eq!(got, "SHOUT");
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), "shout");

    let (ctl_here, ctl_there) = Pipe::new().unwrap();
    let mut p = Process::new(forward, (ctl_there,));
    p.start().unwrap();
    let (x, y) = Pipe::new().unwrap();
    ctl_here.send(&y).unwrap();
    drop(y);
    x.send(&21u32).unwrap();
    assert_eq!(x.recv::<u32>().unwrap(), 42);
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 21);
}

#[test]
fn recv_timeout_times_out() {
    let (a, b) = Pipe::new().unwrap();
    let t = Instant::now();
    assert!(matches!(
        b.recv_timeout::<u8>(Duration::from_millis(150)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(140));
    a.send(&5u8).unwrap();
    assert_eq!(b.recv_timeout::<u8>(Duration::from_secs(5)).unwrap(), 5);
    assert!(matches!(
        b.recv_bytes_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
}

#[test]
fn wrong_type_is_a_decode_error_and_the_stream_goes_on() {
    let (a, b) = Pipe::new().unwrap();
    a.send(&"not a number").unwrap();
    a.send(&7u16).unwrap();
    assert!(matches!(
        b.recv::<(u64, u64, u64, u64)>(),
        Err(Error::Decode(_))
    ));
    assert_eq!(b.recv::<u16>().unwrap(), 7);
}

fn raw_pair() -> (UnixStream, Connection) {
    let (raw, other) = UnixStream::pair().unwrap();
    (raw, Connection::from_fd(OwnedFd::from(other)).unwrap())
}

fn header(len: u64, nfds: u32) -> Vec<u8> {
    let mut h = len.to_le_bytes().to_vec();
    h.extend_from_slice(&nfds.to_le_bytes());
    h
}

// Hostile input: absurd lengths, lying descriptor counts, truncation and
// garbage give errors at once, never a huge allocation or a hang.
#[test]
fn corrupt_frames_are_errors() {
    // A length near 2^64: refused before anything is allocated.
    let (mut raw, conn) = raw_pair();
    raw.write_all(&header(u64::MAX - 1, 0)).unwrap();
    assert!(matches!(
        conn.recv_bytes(),
        Err(Error::MessageTooLarge { .. })
    ));
    // The stream position is lost: the connection stays unusable.
    assert!(matches!(conn.recv_bytes(), Err(Error::BadFrame(_))));

    // Over a configured limit.
    let (mut raw, conn) = raw_pair();
    conn.set_max_message_size(1024);
    raw.write_all(&header(2048, 0)).unwrap();
    assert!(matches!(
        conn.recv_bytes(),
        Err(Error::MessageTooLarge {
            size: 2048,
            max: 1024
        })
    ));

    // A large claimed length with little data, then the peer dies: the
    // receiver does not allocate the claim up front and reports truncation.
    let (mut raw, conn) = raw_pair();
    raw.write_all(&header(900 << 20, 0)).unwrap();
    raw.write_all(&[1u8; 1000]).unwrap();
    drop(raw);
    assert!(matches!(conn.recv_bytes(), Err(Error::Truncated)));

    // Descriptors announced but not attached.
    let (mut raw, conn) = raw_pair();
    raw.write_all(&header(1, 3)).unwrap();
    raw.write_all(&[0]).unwrap();
    assert!(matches!(conn.recv_bytes(), Err(Error::BadFrame(_))));

    // An absurd descriptor count.
    let (mut raw, conn) = raw_pair();
    raw.write_all(&header(1, u32::MAX)).unwrap();
    assert!(matches!(conn.recv_bytes(), Err(Error::BadFrame(_))));

    // Half a header, then EOF.
    let (mut raw, conn) = raw_pair();
    raw.write_all(&[1, 2, 3]).unwrap();
    drop(raw);
    assert!(matches!(conn.recv_bytes(), Err(Error::Truncated)));

    // Random garbage: every outcome is an error value, never a panic.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let (mut raw, conn) = raw_pair();
        conn.set_max_message_size(1 << 20);
        let n = (seed % 64) as usize;
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        raw.write_all(&bytes).unwrap();
        drop(raw);
        for _ in 0..4 {
            let _ = conn.recv::<(String, Vec<u64>, Option<bool>)>();
        }
    }
}

fn not_a_socket() -> Result<(), String> {
    let f = File::open("/dev/null").unwrap();
    match Connection::from_fd(OwnedFd::from(f)) {
        Ok(_) => Err("accepted a file".into()),
        Err(_) => Ok(()),
    }
}

// N18: an invalid handle is refused.
#[test]
fn from_fd_requires_a_socket() {
    not_a_socket().unwrap();
}

extern "C" fn on_usr1(_: libc::c_int) {}

// N17: signals that interrupt a blocking recv or poll are retried.
#[test]
fn signals_do_not_break_blocking_calls() {
    // SAFETY: installs a no-op handler without SA_RESTART, so that blocking
    // calls really see EINTR.
    #[allow(unsafe_code)]
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let (a, b) = Pipe::new().unwrap();
    // SAFETY: pthread_self has no preconditions.
    #[allow(unsafe_code)]
    let me = unsafe { libc::pthread_self() } as usize;
    let t = std::thread::spawn(move || {
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: signals the test thread, which is blocked in recv.
            #[allow(unsafe_code)]
            unsafe {
                libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR1);
            }
        }
        a.send(&"done").unwrap();
        a
    });
    assert_eq!(b.recv::<String>().unwrap(), "done");
    let a = t.join().unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        a.send(&1u8).unwrap();
    });
    for _ in 0..3 {
        // SAFETY: as above.
        #[allow(unsafe_code)]
        unsafe {
            libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR1);
        }
    }
    assert!(b.poll(Some(Duration::from_secs(10))).unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    t.join().unwrap();
}

#[test]
fn connections_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Connection>();
    check::<Process<String>>();
    check::<Error>();
}

#[test]
fn concurrent_senders_never_interleave() {
    let (a, b) = Pipe::new().unwrap();
    let a = std::sync::Arc::new(a);
    let threads: Vec<_> = (0..4u8)
        .map(|k| {
            let a = a.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    a.send_bytes(&vec![k; 70_000]).unwrap();
                }
            })
        })
        .collect();
    for _ in 0..800 {
        let m = b.recv_bytes().unwrap();
        assert_eq!(m.len(), 70_000);
        assert!(m.iter().all(|&x| x == m[0]));
    }
    for t in threads {
        t.join().unwrap();
    }
}

// Large messages into a caller's buffer: read straight in when they fit,
// returned whole in the error when they do not.
#[test]
fn recv_bytes_into_large_messages() {
    let (a, b) = Pipe::new().unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let t = std::thread::spawn(move || {
        a.send_bytes(&big).unwrap();
        a.send_bytes(&big).unwrap();
        a.send_bytes(b"small").unwrap();
        big
    });
    let mut buf = vec![0u8; 4_000_000];
    let n = b.recv_bytes_into(&mut buf).unwrap();
    let mut small = vec![0u8; 1000];
    let too_short = b.recv_bytes_into(&mut small);
    assert_eq!(b.recv_bytes_into(&mut small).unwrap(), 5);
    assert_eq!(&small[..5], b"small");
    let big = t.join().unwrap();
    assert_eq!(&buf[..n], &big[..]);
    match too_short {
        Err(Error::BufferTooShort { message, capacity }) => {
            assert_eq!(capacity, 1000);
            assert_eq!(message, big);
        }
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
}

// ------------------------------------------------------------ nesting limit

fn send_hostile_then_fine(conn: Connection) {
    // Hand-built bytes, as a hostile peer writes them.
    conn.send_bytes(&nest_bytes(HOSTILE_DEPTH)).unwrap();
    conn.send(&Nest { depth: 3 }).unwrap();
    // Wait for the parent to finish reading before closing.
    let _ = conn.recv_bytes();
}

// A peer process sends a value nested 100,000 deep: the receiver gets a
// decode error instead of overflowing its stack, and the connection goes on.
#[test]
fn deep_nesting_from_a_peer_is_a_decode_error() {
    let (here, there) = Pipe::new().unwrap();
    let mut p = Process::new(send_hostile_then_fine, (there,));
    p.start().unwrap();
    match here.recv::<Nest>() {
        Err(Error::Decode(why)) => assert!(why.contains("nests deeper"), "{why}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(here.recv::<Nest>().unwrap(), Nest { depth: 3 });
    here.send_bytes(b"done").unwrap();
    p.join().unwrap();
    p.take_result().unwrap();
}

#[test]
fn decode_depth_is_configurable_per_connection() {
    let (a, b) = Pipe::new().unwrap();
    assert_eq!(b.max_decode_depth(), DEFAULT_MAX_DECODE_DEPTH);
    const { assert!(DEFAULT_MAX_DECODE_DEPTH >= 128) };
    // The default takes a value as deep as the default allows.
    let deepest = DEFAULT_MAX_DECODE_DEPTH as usize;
    a.send(&Nest { depth: deepest }).unwrap();
    assert_eq!(b.recv::<Nest>().unwrap(), Nest { depth: deepest });
    a.send(&Nest { depth: deepest + 1 }).unwrap();
    assert!(matches!(b.recv::<Nest>(), Err(Error::Decode(_))));

    b.set_max_decode_depth(10);
    assert_eq!(b.max_decode_depth(), 10);
    assert_eq!(b.try_clone().unwrap().max_decode_depth(), 10);
    a.send(&Nest { depth: 10 }).unwrap();
    assert_eq!(b.recv::<Nest>().unwrap(), Nest { depth: 10 });
    a.send(&Nest { depth: 11 }).unwrap();
    assert!(matches!(b.recv::<Nest>(), Err(Error::Decode(_))));
    // Containers of every kind count: a struct in a Vec in a map.
    a.send(&vec![vec![vec![vec![vec![vec![vec![vec![vec![vec![
        vec![1u8],
    ]]]]]]]]]])
    .unwrap();
    assert!(matches!(
        b.recv::<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<u8>>>>>>>>>>>>(),
        Err(Error::Decode(_))
    ));
    a.send(&7u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 7);

    // A receiver at the limit does not need much stack: the default limit
    // fits a thread with a small stack.
    let (a, b) = Pipe::new().unwrap();
    a.send(&Nest { depth: deepest }).unwrap();
    a.send_bytes(&nest_bytes(HOSTILE_DEPTH)).unwrap();
    std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || {
            assert_eq!(b.recv::<Nest>().unwrap(), Nest { depth: deepest });
            assert!(matches!(b.recv::<Nest>(), Err(Error::Decode(_))));
        })
        .unwrap()
        .join()
        .unwrap();
}

// ------------------------------------------------- deadlines in mid-frame

/// Half a frame now, the rest later: `recv_timeout` gives up by its
/// deadline and the next receive finishes the same message.
fn half_then_rest(payload: &[u8], pause: Duration, check: impl FnOnce(&Connection)) {
    let (mut raw, conn) = raw_pair();
    let mut frame = header(payload.len() as u64, 0);
    frame.extend_from_slice(payload);
    let half = frame.len() / 2;
    let (first, rest) = (frame[..half].to_vec(), frame[half..].to_vec());
    let writer = std::thread::spawn(move || {
        raw.write_all(&first).unwrap();
        std::thread::sleep(pause);
        raw.write_all(&rest).unwrap();
        raw
    });
    let t = Instant::now();
    match conn.recv_bytes_timeout(Duration::from_millis(300)) {
        Err(Error::Timeout) => {}
        other => panic!("expected a timeout, got {:?}", other.map(|v| v.len())),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A second timed receive in the middle of the same frame.
    assert!(matches!(
        conn.recv_timeout::<u8>(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    check(&conn);
    drop(writer.join().unwrap());
}

#[test]
fn recv_timeout_is_bounded_in_the_middle_of_a_frame() {
    // A small frame (read into the connection's buffer).
    let small: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let expected = small.clone();
    half_then_rest(&small, Duration::from_secs(3), |conn| {
        assert_eq!(conn.recv_bytes().unwrap(), expected);
    });
    // A large frame (read into its own vector), finished by a timed
    // receive.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = big.clone();
    half_then_rest(&big, Duration::from_secs(3), |conn| {
        assert_eq!(
            conn.recv_bytes_timeout(Duration::from_secs(30)).unwrap(),
            expected
        );
    });
    // A large frame finished into a caller's buffer.
    let expected = big.clone();
    half_then_rest(&big, Duration::from_secs(3), |conn| {
        let mut buf = vec![0u8; expected.len()];
        assert_eq!(conn.recv_bytes_into(&mut buf).unwrap(), expected.len());
        assert_eq!(buf, expected);
    });
    // A typed value, finished by recv_deadline.
    let value = (String::from("x").repeat(100_000), 7u64);
    let bytes = {
        let (a, b) = Pipe::new().unwrap();
        let t = std::thread::spawn(move || a.send(&value).unwrap());
        let bytes = b.recv_bytes().unwrap();
        t.join().unwrap();
        bytes
    };
    half_then_rest(&bytes, Duration::from_secs(3), |conn| {
        let (s, n): (String, u64) = conn
            .recv_deadline(Instant::now() + Duration::from_secs(30))
            .unwrap();
        assert_eq!((s.len(), n), (100_000, 7));
    });
}

fn write_half_frame_then_rest(stream: Handle<UnixStream>, len: usize) {
    let mut raw = stream.into_inner();
    let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let mut frame = header(len as u64, 0);
    frame.extend_from_slice(&payload);
    raw.write_all(&frame[..frame.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    raw.write_all(&frame[frame.len() / 2..]).unwrap();
}

// The same with a peer process that stalls in the middle of a frame.
#[test]
fn recv_timeout_is_bounded_when_a_peer_process_stalls() {
    let (raw, other) = UnixStream::pair().unwrap();
    let conn = Connection::from_fd(OwnedFd::from(other)).unwrap();
    let len = 1_000_000;
    let mut p = Process::new(write_half_frame_then_rest, (Handle(raw), len));
    p.start().unwrap();
    let t = Instant::now();
    assert!(matches!(
        conn.recv_bytes_timeout(Duration::from_millis(300)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let got = conn.recv_bytes().unwrap();
    let expected: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    assert_eq!(got, expected);
    p.join().unwrap();
    p.take_result().unwrap();
}

// poll, wait and timed receives keep to their timeouts while another thread
// is blocked in recv on the same connection.
#[test]
fn poll_is_bounded_while_another_thread_receives() {
    let (a, b) = Pipe::new().unwrap();
    let b = std::sync::Arc::new(b);
    let receiver = {
        let b = b.clone();
        std::thread::spawn(move || b.recv::<u8>())
    };
    // Let the receiver block inside recv.
    std::thread::sleep(Duration::from_millis(200));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let b = b.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let polled = b.poll(Some(Duration::from_millis(200)));
            tx.send(("poll", polled.map(|r| r as usize), t.elapsed()))
                .unwrap();
            let t = Instant::now();
            let waited = connection::wait([&*b], Some(Duration::from_millis(200)));
            tx.send(("wait", waited.map(|r| r.len()), t.elapsed()))
                .unwrap();
            let t = Instant::now();
            let got = b.recv_timeout::<u8>(Duration::from_millis(200));
            tx.send(("recv_timeout", got.map(usize::from), t.elapsed()))
                .unwrap();
        });
    }
    for _ in 0..3 {
        let (what, res, took) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a call blocked past its timeout");
        assert!(took < Duration::from_secs(2), "{what} took {took:?}");
        match what {
            "recv_timeout" => assert!(matches!(res, Err(Error::Timeout)), "{res:?}"),
            _ => assert_eq!(res.unwrap(), 0, "{what}"),
        }
    }
    a.send(&9u8).unwrap();
    assert_eq!(receiver.join().unwrap().unwrap(), 9);
}

// Clones of one end made with `try_clone` share its send state: threads
// sending mid-sized messages (written to the socket in several pieces)
// through different clones never interleave them. (Before, each clone
// sent on its own and a 36 KiB message came out torn.)
#[test]
fn clones_sending_from_threads_never_interleave() {
    let (a, b) = Pipe::new().unwrap();
    let mut senders = Vec::new();
    for t in 0..3u8 {
        let a = a.try_clone().unwrap();
        senders.push(std::thread::spawn(move || {
            for i in 0..300u32 {
                let len = 20_000 + (i as usize * 97) % 44_000;
                let fill = t.wrapping_mul(50).wrapping_add(i as u8);
                a.send_bytes(&vec![fill; len]).unwrap();
            }
        }));
    }
    for k in 0..900 {
        if k % 50 == 0 {
            // Let the socket fill, so that senders block mid-message.
            std::thread::sleep(Duration::from_millis(5));
        }
        let m = b.recv_bytes_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            m.iter().all(|&x| x == m[0]),
            "a torn message of {} bytes",
            m.len()
        );
    }
    for s in senders {
        s.join().unwrap();
    }
    // A clone also sees what the other handle already read.
    a.send_bytes(b"one").unwrap();
    a.send_bytes(b"two").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"one");
    let b2 = b.try_clone().unwrap();
    assert_eq!(
        b2.recv_bytes_timeout(Duration::from_secs(5)).unwrap(),
        b"two"
    );
}

fn send_sizes(conn: Connection, sizes: Vec<usize>) {
    for (i, &n) in sizes.iter().enumerate() {
        let msg: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
        conn.send_bytes(&msg).unwrap();
    }
}

#[test]
fn frames_of_every_size_around_the_read_buffer_arrive_whole_and_in_order() {
    // Small frames first (the read buffer starts small), then frames
    // just under, at and over each buffer size, sent back to back by a
    // child so that several share one read.
    let mut sizes: Vec<usize> = (0..64).map(|i| i * 7).collect();
    for edge in [4096usize, 65536] {
        for d in [-13isize, -12, -11, -1, 0, 1, 12, 4000] {
            sizes.push((edge as isize + d) as usize);
        }
        sizes.extend([3, 1, 2]);
    }
    sizes.extend([200_000, 5, 70_000, 9]);
    let (a, b) = Pipe::new().unwrap();
    let mut p = Process::new(send_sizes, (b, sizes.clone()));
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    for (i, &n) in sizes.iter().enumerate() {
        let got = a.recv_bytes().unwrap();
        let want: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
        assert!(got == want, "message {i} of {n} bytes came back changed");
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}
