//! Shared, sealed buffers (`SharedBytes`, `SharedSlice<T>`): every path a
//! value takes between processes (Pipe, Queue, Process arguments and
//! results, pool tasks and results), the seals a sender cannot undo, and
//! descriptors from a hostile peer that the receiver refuses.

mod common;

use multiproc::*;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const MIB: usize = 1 << 20;

fn pattern(len: usize) -> SharedBytes {
    let mut m = SharedBytesMut::with_len(len).unwrap();
    for (i, b) in m.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    m.freeze().unwrap()
}

fn check_pattern(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8)
}

/// The inode of the memory file behind a buffer: the receiver maps the very
/// same file, not a copy.
fn inode(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    std::os::unix::fs::MetadataExt::ino(&meta)
}

#[test]
fn built_in_place_and_sealed() -> Result<()> {
    let mut m = SharedSliceMut::<f64>::with_len(1000)?;
    assert!(m.iter().all(|&x| x == 0.0));
    for (i, x) in m.iter_mut().enumerate() {
        *x = i as f64 / 2.0;
    }
    let s = m.freeze()?;
    assert_eq!(s.len(), 1000);
    assert_eq!(s[999], 499.5);
    let fd = s.as_fd().as_raw_fd();
    // SAFETY: plain syscalls on a live descriptor owned by `s`, with a
    // valid one-byte buffer.
    let (w, t) = unsafe {
        (
            libc::pwrite(fd, [1u8].as_ptr().cast(), 1, 0),
            libc::ftruncate(fd, 8),
        )
    };
    assert_eq!(w, -1, "a sealed buffer accepted a write");
    assert_eq!(t, -1, "a sealed buffer accepted a resize");
    assert_eq!(s[0], 0.0);

    let e = SharedBytes::from_slice(&[])?;
    assert!(e.is_empty());
    let v = SharedSlice::<u16>::try_from(vec![1u16, 2, 3])?;
    assert_eq!(&v[..], &[1, 2, 3]);
    assert_eq!(v.clone(), v);
    Ok(())
}

fn echo_back(c: Connection) {
    let b: SharedBytes = c.recv().unwrap();
    assert!(check_pattern(&b));
    let r = SharedSlice::<u64>::from_slice(&[b.len() as u64, 7, 8]).unwrap();
    c.send(&(b, r)).unwrap();
}

#[test]
fn through_a_pipe_both_ways() -> Result<()> {
    let (a, b) = Pipe::new()?;
    let mut p = Process::new(echo_back, (b,));
    p.start()?;
    let big = pattern(8 * MIB + 3);
    a.send(&big)?;
    let (same, r): (SharedBytes, SharedSlice<u64>) = a.recv()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(inode(same.as_fd()), inode(big.as_fd()));
    assert!(check_pattern(&same));
    assert_eq!(&r[..], &[(8 * MIB + 3) as u64, 7, 8]);
    Ok(())
}

fn put_buffers(q: Queue<SharedBytes>, n: usize) {
    for i in 0..n {
        let mut m = SharedBytesMut::with_len(MIB).unwrap();
        m.fill(i as u8);
        q.put(m.freeze().unwrap()).unwrap();
    }
}

#[test]
fn through_a_queue() -> Result<()> {
    let q: Queue<SharedBytes> = Queue::new()?;
    let mut p = Process::new(put_buffers, (q.clone(), 20));
    p.start()?;
    for i in 0..20 {
        let b = q.get_timeout(Duration::from_secs(30))?;
        assert_eq!(b.len(), MIB);
        assert!(b.iter().all(|&x| x == i as u8));
    }
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));
    Ok(())
}

fn sum_and_double(v: SharedSlice<u32>) -> (u64, SharedSlice<u32>) {
    let sum = v.iter().map(|&x| u64::from(x)).sum();
    let mut m = SharedSliceMut::<u32>::with_len(v.len()).unwrap();
    for (d, s) in m.iter_mut().zip(v.iter()) {
        *d = s * 2;
    }
    (sum, m.freeze().unwrap())
}

fn process_argument_and_result_with(method: StartMethod) {
    let v: Vec<u32> = (0..1_000_000).collect();
    let s = SharedSlice::from_slice(&v).unwrap();
    let mut p = Process::new(sum_and_double, (s.clone(),)).start_method(method);
    p.start().unwrap();
    p.join().unwrap();
    let (sum, doubled) = p.take_result().unwrap();
    assert_eq!(sum, v.iter().map(|&x| u64::from(x)).sum::<u64>());
    assert!(doubled.iter().zip(&v).all(|(d, x)| *d == x * 2));
}

#[test]
fn as_process_argument_and_result() {
    common::for_each_method(process_argument_and_result_with);
}

fn first_and_len(b: SharedBytes) -> (u8, usize) {
    (b[0], b.len())
}

#[test]
fn as_pool_tasks_and_results() -> Result<()> {
    let pool = Pool::new(2)?;
    let s = SharedSlice::from_slice(&(0..100_000u32).collect::<Vec<_>>())?;
    let (sum, doubled) = pool.apply(sum_and_double, (s.clone(),))?;
    assert_eq!(sum, (0..100_000u64).sum::<u64>());
    assert_eq!(doubled[99_999], 199_998);

    let items: Vec<SharedBytes> = (0..40u8)
        .map(|i| {
            let mut m = SharedBytesMut::with_len(64 << 10).unwrap();
            m.fill(i);
            m.freeze().unwrap()
        })
        .collect();
    let out = pool.map(first_and_len, items.clone())?;
    assert_eq!(out, (0..40u8).map(|i| (i, 64 << 10)).collect::<Vec<_>>());
    let out = pool.map_chunked(first_and_len, items, 7)?;
    assert_eq!(out.len(), 40);
    pool.close();
    pool.join()?;
    Ok(())
}

// ------------------------------------------------------------ hostile peers

/// The wire shape of a shared buffer, as a hostile peer would forge it.
#[derive(Serialize, Deserialize)]
struct Forged {
    #[serde(with = "multiproc::handle")]
    fd: OwnedFd,
    len: u64,
    tag: u64,
}

/// The element tag a genuine `SharedBytes` carries.
fn genuine_tag() -> u64 {
    let (a, b) = Pipe::new().unwrap();
    a.send(&SharedBytes::from_slice(b"x").unwrap()).unwrap();
    b.recv::<Forged>().unwrap().tag
}

fn memfd(len: usize, seals: i32) -> OwnedFd {
    // SAFETY: memfd_create with a NUL-terminated name; the result is
    // checked and then owned.
    let fd = unsafe {
        libc::memfd_create(
            c"forged".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain fcntl/ftruncate on the live descriptor.
    unsafe {
        assert_eq!(libc::ftruncate(fd.as_raw_fd(), len as i64), 0);
        if seals != 0 {
            assert_eq!(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals), 0);
        }
    }
    fd
}

fn refused(fd: OwnedFd, len: u64, tag: u64) -> String {
    let (a, b) = Pipe::new().unwrap();
    a.send(&Forged { fd, len, tag }).unwrap();
    match b.recv::<SharedBytes>() {
        Err(Error::Decode(m)) => m,
        other => panic!("a forged buffer was not refused: {other:?}"),
    }
}

#[test]
fn a_forged_descriptor_is_refused() {
    let tag = genuine_tag();
    let all = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    // Unsealed: the sender could write it or shrink it (SIGBUS) later.
    let m = refused(memfd(4096, 0), 4096, tag);
    assert!(m.contains("not sealed"), "{m}");
    // Sealed against resizing but still writable.
    let m = refused(
        memfd(4096, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW),
        4096,
        tag,
    );
    assert!(m.contains("not sealed"), "{m}");
    // Write-sealed but may still shrink.
    let m = refused(
        memfd(4096, libc::F_SEAL_WRITE | libc::F_SEAL_GROW),
        4096,
        tag,
    );
    assert!(m.contains("not sealed"), "{m}");
    // Not a memory file at all.
    let (x, _y) = std::os::unix::net::UnixStream::pair().unwrap();
    let m = refused(x.into(), 0, tag);
    assert!(m.contains("not a sealable memory file"), "{m}");
    // Sealed, but the message lies about the length.
    let m = refused(memfd(4096, all), 8192, tag);
    assert!(m.contains("4096 bytes"), "{m}");
    // Sealed, but of another element type.
    let m = refused(memfd(4096, all), 4096, tag ^ 1);
    assert!(m.contains("another element type"), "{m}");
    // A properly sealed one is accepted.
    let (a, b) = Pipe::new().unwrap();
    a.send(&Forged {
        fd: memfd(4096, all),
        len: 4096,
        tag,
    })
    .unwrap();
    let ok: SharedBytes = b.recv().unwrap();
    assert_eq!(ok.len(), 4096);
    assert!(ok.iter().all(|&x| x == 0));
}

#[test]
fn a_wrong_element_size_is_refused() {
    // 4 KiB + 1 bytes are not a whole number of u32s, whatever the tag says.
    let (a, b) = Pipe::new().unwrap();
    a.send(&SharedBytes::from_slice(&[0u8; 4097]).unwrap())
        .unwrap();
    assert!(matches!(
        b.recv::<SharedSlice<u32>>(),
        Err(Error::Decode(_))
    ));
}

#[test]
fn other_serde_formats_cannot_carry_it() {
    let s = SharedBytes::from_slice(b"abc").unwrap();
    assert!(serde_json::to_string(&s).is_err());
    let _ = s.as_fd();
}

// ------------------------------------------------- large messages (spilled)

fn echo_len_and_back(v: Vec<f64>) -> (usize, Vec<f64>) {
    (v.len(), v)
}

fn large_values_as_argument_and_result_with(method: StartMethod) {
    // 8 MiB of f64: past SPILL_MIN both ways.
    let v: Vec<f64> = (0..(1 << 20)).map(|i| i as f64).collect();
    assert!(v.len() * 8 >= SPILL_MIN);
    let mut p = Process::new(echo_len_and_back, (v.clone(),)).start_method(method);
    p.start().unwrap();
    p.join().unwrap();
    let (n, back) = p.take_result().unwrap();
    assert_eq!(n, v.len());
    assert_eq!(back, v);
}

#[test]
fn large_values_travel_as_arguments_and_results() {
    common::for_each_method(large_values_as_argument_and_result_with);
}

fn echo_bytes(c: Connection) {
    while let Ok(b) = c.recv::<serde_bytes::ByteBuf>() {
        if b.is_empty() {
            return;
        }
        c.send(&b).unwrap();
    }
}

#[test]
fn large_messages_through_a_pipe_with_handles() -> Result<()> {
    let (a, b) = Pipe::new()?;
    let mut p = Process::new(echo_bytes, (b,));
    p.start()?;
    for len in [SPILL_MIN - 1, SPILL_MIN, 3 * SPILL_MIN + 5, 10] {
        let v = serde_bytes::ByteBuf::from(vec![(len % 255) as u8; len]);
        a.send(&v)?;
        assert_eq!(a.recv::<serde_bytes::ByteBuf>()?, v);
    }
    // A spilled message keeps the handles it carries.
    let s = pattern(4096);
    let (x, y) = Pipe::new()?;
    x.send(&(vec![3u8; SPILL_MIN], s.clone()))?;
    let (big, same): (Vec<u8>, SharedBytes) = y.recv()?;
    assert_eq!(big.len(), SPILL_MIN);
    assert_eq!(same, s);
    // The receiver's limit applies to the spilled size.
    y.set_max_message_size(1 << 20);
    x.send(&serde_bytes::ByteBuf::from(vec![0u8; SPILL_MIN]))?;
    assert!(matches!(
        y.recv::<serde_bytes::ByteBuf>(),
        Err(Error::MessageTooLarge { .. })
    ));
    a.send(&serde_bytes::ByteBuf::new())?;
    p.join()?;
    Ok(())
}

/// A message forged to look like a spilled one: its 28 bytes are the
/// envelope (the handle's index, 0, is the last byte), and the handle is
/// the descriptor it names.
fn forged_envelope(fd: OwnedFd, len: u64) -> ([u8; 27], Handle<OwnedFd>) {
    let mut b = [0u8; 27];
    b[..16].copy_from_slice(b"\xa7mp\x00spill\x00\x93\x1c\x5e\xd2\x04\xb8");
    b[20..27].copy_from_slice(&len.to_le_bytes()[..7]);
    (b, Handle(fd))
}

#[test]
fn a_forged_large_message_is_refused() {
    let (a, b) = Pipe::new().unwrap();
    for (fd, want) in [
        (memfd(4096, 0), "not sealed"),
        (memfd(4096, libc::F_SEAL_WRITE), "not sealed"),
        (
            std::os::unix::net::UnixStream::pair().unwrap().0.into(),
            "not a sealable memory file",
        ),
    ] {
        a.send(&forged_envelope(fd, 4096)).unwrap();
        match b.recv::<serde_bytes::ByteBuf>() {
            Err(Error::Decode(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("a forged large message was not refused: {other:?}"),
        }
    }
    let all = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    a.send(&forged_envelope(memfd(4096, all), 8192)).unwrap();
    assert!(matches!(
        b.recv::<serde_bytes::ByteBuf>(),
        Err(Error::Decode(_))
    ));
    // A sealed file with a valid encoding is simply decoded.
    let f = memfd(4096, 0);
    // SAFETY: plain pwrite/fcntl on a live descriptor with a valid buffer.
    unsafe {
        let enc = [3u8, 1, 2, 3];
        assert_eq!(libc::pwrite(f.as_raw_fd(), enc.as_ptr().cast(), 4, 0), 4);
        assert_eq!(libc::ftruncate(f.as_raw_fd(), 4), 0);
        assert_eq!(libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, all), 0);
    }
    a.send(&forged_envelope(f, 4)).unwrap();
    assert_eq!(b.recv::<Vec<u8>>().unwrap(), vec![1, 2, 3]);
}
