//! `Listener` / `Client`: wire compatibility with Python's
//! `multiprocessing.connection`, the authkey handshake, and hostile peers.
//!
//! Scenarios N07–N11, N13, N15 and N18 are ported from CPython's
//! `Lib/test/_test_multiprocessing.py` (`_TestListener`,
//! `_TestListenerClient`, `_TestPoll`, `OtherTest`, `ChallengeResponseTest`,
//! `TestInvalidFamily`, `TestInvalidHandle`) in Rust terms. The interop tests
//! run the `python3` found on `PATH` with `multiprocessing.connection`.

use hmac::{Hmac, KeyInit, Mac};
use multiproc::connection::{answer_challenge, deliver_challenge, wait};
use multiproc::{Address, Client, Connection, Error, Listener, Pipe, Process};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const KEY: &[u8] = b"shared secret";
const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

/// A fresh, unique address of each family, all local to this machine.
fn addresses() -> Vec<Address> {
    vec![
        "127.0.0.1:0".parse().unwrap(),
        Address::Unix(sock_path("l")),
        Address::Abstract(unique("abs").into_bytes()),
    ]
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "multiproc-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A socket path in the temp directory; listeners remove their file.
fn sock_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.sock", unique(tag)))
}

/// The address as the Python scripts below take it on the command line.
fn py_addr(a: &Address) -> String {
    match a {
        Address::Tcp(t) => format!("tcp:{t}"),
        other => other.to_string(),
    }
}

/// Python code that turns `sys.argv[1]` into a `multiprocessing` address.
const PY_ADDR: &str = r#"
import sys, os, hmac
def parse(a):
    if a.startswith('tcp:'):
        h, p = a[4:].rsplit(':', 1)
        return (h, int(p))
    if a.startswith('@'):
        return '\0' + a[1:]
    return a
"#;

fn python(script: &str, args: &[&str]) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(format!("{PY_ADDR}\n{script}"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run the interop tests")
}

/// Waits for the Python child (killing it after `LIMIT`) and returns its
/// exit code and everything it printed.
fn finish(mut child: Child, mut out: Option<BufReader<ChildStdout>>) -> (i32, String, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("python child hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    match out.as_mut() {
        Some(r) => r.read_to_string(&mut stdout).unwrap(),
        None => child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap(),
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stdout, stderr)
}

/// Accepts one peer, failing instead of hanging if none comes.
fn accept(l: &Listener) -> multiproc::Result<Connection> {
    assert_eq!(
        wait([l], Some(LIMIT)).unwrap(),
        [0],
        "no peer connected to {}",
        l.address()
    );
    l.accept()
}

fn big_message() -> Vec<u8> {
    // Over 64 KiB, not a multiple of the read buffer.
    (0..200_003u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn read_frame(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let n = i32::from_be_bytes(h);
    assert!(n >= 0, "negative length from our side");
    let mut b = vec![0u8; n as usize];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn hmac_of(digest: &str, key: &[u8], msg: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <M as KeyInit>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    match digest {
        "md5" => run::<Hmac<md5::Md5>>(key, msg),
        "sha256" => run::<Hmac<sha2::Sha256>>(key, msg),
        "sha384" => run::<Hmac<sha2::Sha384>>(key, msg),
        _ => unreachable!(),
    }
}

// ------------------------------------------------- Python as the client

const PY_CLIENT: &str = r#"
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError
addr = parse(sys.argv[1])
key = None if sys.argv[2] == '-' else sys.argv[2].encode()
try:
    c = Client(addr, authkey=key)
except AuthenticationError as e:
    print('AuthenticationError', e, flush=True)
    sys.exit(3)
big = bytes((i * 7 % 251) for i in range(200003))
c.send_bytes(b'hello from python')
c.send_bytes(b'')
c.send_bytes(big)
assert c.recv_bytes() == b'HELLO FROM PYTHON'
assert c.recv_bytes() == b''
assert c.recv_bytes() == big[::-1]
for m in (b'a', b'b', b'cd'):
    c.send_bytes(m)
assert c.recv_bytes() == b'done'
print('OK', flush=True)
"#;

fn serve_python_client(conn: &Connection) {
    // N11: an empty message polls true and arrives as b''; big ones whole.
    let hello = conn.recv_bytes().unwrap();
    assert_eq!(hello, b"hello from python");
    assert!(conn.poll(Some(LIMIT)).unwrap());
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    let big = conn.recv_bytes().unwrap();
    assert_eq!(big, big_message());
    conn.send_bytes(&hello.to_ascii_uppercase()).unwrap();
    conn.send_bytes(b"").unwrap();
    let mut rev = big.clone();
    rev.reverse();
    conn.send_bytes(&rev).unwrap();
    // Messages are never merged.
    for want in [&b"a"[..], b"b", b"cd"] {
        assert_eq!(conn.recv_bytes().unwrap(), want);
    }
    conn.send_bytes(b"done").unwrap();
}

/// N09 with Python as the client, for every family (N08: abstract names),
/// with and without an authkey (Python 3.11 answers our SHA256 challenge
/// with legacy HMAC-MD5 and sends a legacy challenge we must answer).
#[test]
fn python_client_talks_to_our_listener() {
    for addr in addresses() {
        for key in [Some(KEY), None] {
            let l = Listener::bind(&addr, key).unwrap();
            let keyarg = key.map_or("-".to_string(), |k| String::from_utf8(k.to_vec()).unwrap());
            let child = python(PY_CLIENT, &[&py_addr(l.address()), &keyarg]);
            let conn = accept(&l).unwrap();
            serve_python_client(&conn);
            let (code, out, err) = finish(child, None);
            assert_eq!((code, out.trim()), (0, "OK"), "python stderr: {err}");
            // After the peer is gone: EOF.
            assert!(conn.recv_bytes().unwrap_err().is_eof());
        }
    }
}

/// A wrong authkey is an authentication error on both sides.
#[test]
fn python_client_with_wrong_key_fails_both_sides() {
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let child = python(PY_CLIENT, &[&py_addr(l.address()), "not the key"]);
    let err = accept(&l).unwrap_err();
    assert!(err.is_authentication(), "{err}");
    let (code, out, err) = finish(child, None);
    assert_eq!(code, 3, "stdout: {out} stderr: {err}");
    assert!(out.starts_with("AuthenticationError"), "{out}");
    // The listener still serves the next (good) client.
    let child = python(PY_CLIENT, &[&py_addr(l.address()), "shared secret"]);
    serve_python_client(&accept(&l).unwrap());
    let (code, _, err) = finish(child, None);
    assert_eq!(code, 0, "{err}");
}

// ------------------------------------------------- Python as the listener

const PY_LISTENER: &str = r#"
from multiprocessing.connection import Listener
from multiprocessing import AuthenticationError
addr = parse(sys.argv[1])
key = None if sys.argv[2] == '-' else sys.argv[2].encode()
with Listener(addr, authkey=key) as l:
    a = l.address
    print(f'tcp:{a[0]}:{a[1]}' if isinstance(a, tuple) else 'ready', flush=True)
    try:
        c = l.accept()
    except AuthenticationError as e:
        print('AuthenticationError', e, flush=True)
        sys.exit(3)
    m = c.recv_bytes(); c.send_bytes(m.upper())
    m = c.recv_bytes(); c.send_bytes(m[::-1])
    got = [c.recv_bytes() for _ in range(3)]
    assert got == [b'a', b'', b'cd'], got
    for m in (b'x', b'', b'yz'):
        c.send_bytes(m)
    assert c.recv_bytes() == b'bye'
    print('OK', flush=True)
"#;

/// Starts the Python listener and returns the address to connect to.
fn python_listener(addr: &Address, key: &str) -> (Child, BufReader<ChildStdout>, Address) {
    let mut child = python(PY_LISTENER, &[&py_addr(addr), key]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let line = line.trim();
    let target = match line.strip_prefix("tcp:") {
        Some(t) => t.parse().unwrap(),
        None => {
            assert_eq!(line, "ready", "python listener did not start");
            addr.clone()
        }
    };
    (child, out, target)
}

/// N09 with our client and a Python listener, for every family.
#[test]
fn our_client_talks_to_python_listener() {
    for addr in addresses() {
        for key in ["shared secret", "-"] {
            let (child, out, target) = python_listener(&addr, key);
            let k = (key != "-").then_some(key.as_bytes());
            let c = Client::connect_timeout(&target, k, LIMIT).unwrap();
            c.send_bytes(b"from rust").unwrap();
            assert_eq!(c.recv_bytes().unwrap(), b"FROM RUST");
            let big = big_message();
            c.send_bytes(&big).unwrap();
            let back = c.recv_bytes().unwrap();
            assert_eq!(back.len(), big.len());
            assert!(back.iter().eq(big.iter().rev()));
            for m in [&b"a"[..], b"", b"cd"] {
                c.send_bytes(m).unwrap();
            }
            for want in [&b"x"[..], b"", b"yz"] {
                assert_eq!(c.recv_bytes().unwrap(), want);
            }
            c.send_bytes(b"bye").unwrap();
            let (code, rest, err) = finish(child, Some(out));
            assert_eq!((code, rest.trim()), (0, "OK"), "python stderr: {err}");
        }
    }
}

#[test]
fn our_client_with_wrong_key_fails_both_sides() {
    let addr: Address = "127.0.0.1:0".parse().unwrap();
    let (child, out, target) = python_listener(&addr, "shared secret");
    let err = Client::connect_timeout(&target, Some(b"wrong"), LIMIT).unwrap_err();
    assert!(err.is_authentication(), "{err}");
    let (code, rest, err) = finish(child, Some(out));
    assert_eq!(code, 3, "{rest} {err}");
    assert!(rest.starts_with("AuthenticationError"), "{rest}");
}

// ------------------------------ the Python 3.12+ handshake, both roles

/// A peer speaking the 3.12+ protocol, written against the protocol
/// description (the installed Python is 3.11, whose own handshake is the
/// legacy one). `sys.argv[3]` is the digest this peer asks for.
const PY_MODERN_CLIENT: &str = r#"
from multiprocessing.connection import Client
addr, key, dig = parse(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
c = Client(addr)  # no authkey: the handshake is done by hand below
m = c.recv_bytes(256)
assert m.startswith(b'#CHALLENGE#{sha256}') and len(m) == 11 + 8 + 40, m
c.send_bytes(b'{%s}' % dig.encode() + hmac.new(key, m[11:], dig).digest())
assert c.recv_bytes(256) == b'#WELCOME#'
mine = b'{%s}' % dig.encode() + os.urandom(40)
c.send_bytes(b'#CHALLENGE#' + mine)
r = c.recv_bytes(256)
ok = r == b'{%s}' % dig.encode() + hmac.new(key, mine, dig).digest()
c.send_bytes(b'#WELCOME#' if ok else b'#FAILURE#')
assert ok, r
c.send_bytes(b'modern ' + dig.encode())
print('OK', flush=True)
"#;

const PY_MODERN_LISTENER: &str = r#"
from multiprocessing.connection import Listener
addr, key = parse(sys.argv[1]), sys.argv[2].encode()
with Listener(addr) as l:
    a = l.address
    print(f'tcp:{a[0]}:{a[1]}', flush=True)
    c = l.accept()
    mine = b'{sha256}' + os.urandom(40)
    c.send_bytes(b'#CHALLENGE#' + mine)
    r = c.recv_bytes(256)
    ok = r == b'{sha256}' + hmac.new(key, mine, 'sha256').digest()
    c.send_bytes(b'#WELCOME#' if ok else b'#FAILURE#')
    assert ok, r
    m = c.recv_bytes(256)
    assert m.startswith(b'#CHALLENGE#{sha256}') and len(m) == 11 + 8 + 40, m
    c.send_bytes(b'{sha256}' + hmac.new(key, m[11:], 'sha256').digest())
    assert c.recv_bytes(256) == b'#WELCOME#'
    c.send_bytes(c.recv_bytes().upper())
    print('OK', flush=True)
"#;

#[test]
fn modern_python_peer_as_client() {
    for digest in ["sha256", "sha384"] {
        let l = Listener::bind(Address::Unix(sock_path("m")), Some(KEY)).unwrap();
        let child = python(
            PY_MODERN_CLIENT,
            &[&py_addr(l.address()), "shared secret", digest],
        );
        let conn = accept(&l).unwrap();
        assert_eq!(
            conn.recv_bytes().unwrap(),
            format!("modern {digest}").as_bytes()
        );
        let (code, out, err) = finish(child, None);
        assert_eq!((code, out.trim()), (0, "OK"), "python stderr: {err}");
    }
}

#[test]
fn modern_python_peer_as_listener() {
    let mut child = python(PY_MODERN_LISTENER, &["tcp:127.0.0.1:0", "shared secret"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let target: Address = line.trim().strip_prefix("tcp:").unwrap().parse().unwrap();
    let c = Client::connect_timeout(&target, Some(KEY), LIMIT).unwrap();
    c.send_bytes(b"modern").unwrap();
    assert_eq!(c.recv_bytes().unwrap(), b"MODERN");
    let (code, rest, err) = finish(child, Some(out));
    assert_eq!((code, rest.trim()), (0, "OK"), "python stderr: {err}");
}

/// N13: the exact bytes of the 3.12+ handshake, built by hand on a raw
/// socket, against our listener; then a bad digest is refused.
#[test]
fn handshake_bytes_by_hand() {
    let path = sock_path("h");
    let l = Listener::bind(path.as_path(), Some(KEY)).unwrap();
    // A good 3.12+ client.
    let server = std::thread::scope(|s| {
        let t = s.spawn(|| accept(&l));
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.set_read_timeout(Some(LIMIT)).unwrap();
        let m = read_frame(&mut raw).unwrap();
        assert_eq!(&m[..19], b"#CHALLENGE#{sha256}");
        assert_eq!(m.len(), 19 + 40);
        let mut answer = b"{sha256}".to_vec();
        answer.extend(hmac_of("sha256", KEY, &m[11..]));
        raw.write_all(&frame(&answer)).unwrap();
        assert_eq!(read_frame(&mut raw).unwrap(), b"#WELCOME#");
        let mine = b"{sha256}0123456789012345678901234567890123456789";
        raw.write_all(&frame(&[&b"#CHALLENGE#"[..], mine].concat()))
            .unwrap();
        let r = read_frame(&mut raw).unwrap();
        assert_eq!(&r[..8], b"{sha256}");
        assert_eq!(r[8..], hmac_of("sha256", KEY, mine)[..]);
        // N10: WELCOME and the first messages in one write; the accepted
        // connection must see them at once although they were read during
        // the handshake.
        let mut burst = frame(b"#WELCOME#");
        burst.extend(frame(b"first"));
        burst.extend(frame(b""));
        raw.write_all(&burst).unwrap();
        let conn = t.join().unwrap().unwrap();
        assert!(conn.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(wait([&conn], Some(Duration::ZERO)).unwrap(), [0]);
        assert_eq!(conn.recv_bytes().unwrap(), b"first");
        assert!(conn.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(conn.recv_bytes().unwrap(), b"");
        assert!(!conn.poll(Some(Duration::ZERO)).unwrap());
        conn.send_bytes(b"reply").unwrap();
        assert_eq!(read_frame(&mut raw).unwrap(), b"reply");
        conn
    });
    drop(server);

    // A legacy (Python <= 3.11) answer: raw HMAC-MD5 of the whole message.
    std::thread::scope(|s| {
        let t = s.spawn(|| accept(&l));
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.set_read_timeout(Some(LIMIT)).unwrap();
        let m = read_frame(&mut raw).unwrap();
        raw.write_all(&frame(&hmac_of("md5", KEY, &m[11..])))
            .unwrap();
        assert_eq!(read_frame(&mut raw).unwrap(), b"#WELCOME#");
        // A legacy challenge: 20 bytes, no prefix; we must answer raw MD5.
        let mine = [9u8; 20];
        raw.write_all(&frame(&[&b"#CHALLENGE#"[..], &mine].concat()))
            .unwrap();
        assert_eq!(read_frame(&mut raw).unwrap(), hmac_of("md5", KEY, &mine));
        raw.write_all(&frame(b"#WELCOME#")).unwrap();
        t.join().unwrap().unwrap();
    });

    // Bad digests: wrong MAC, wrong length, unknown digest, no prefix.
    let bad_answers: Vec<Vec<u8>> = vec![
        [&b"{sha256}"[..], &[0u8; 32]].concat(),
        [&b"{sha256}"[..], &[0u8; 31]].concat(),
        [&b"{whirlpool}"[..], &[0u8; 32]].concat(),
        vec![0u8; 16],
        b"garbage of some other length".to_vec(),
    ];
    for bad in bad_answers {
        std::thread::scope(|s| {
            let t = s.spawn(|| accept(&l));
            let mut raw = UnixStream::connect(&path).unwrap();
            raw.set_read_timeout(Some(LIMIT)).unwrap();
            read_frame(&mut raw).unwrap();
            raw.write_all(&frame(&bad)).unwrap();
            assert_eq!(read_frame(&mut raw).unwrap(), b"#FAILURE#");
            let err = t.join().unwrap().unwrap_err();
            assert!(err.is_authentication(), "{err}");
        });
    }
}

// --------------------------------------------------------- hostile peers

/// Garbage, absurd lengths, a negative length and silence during the
/// handshake: each is an error quickly, never a big allocation or a hang.
#[test]
fn hostile_clients_get_errors_not_hangs() {
    let mut l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    l.set_handshake_timeout(Some(Duration::from_millis(300)));
    let Address::Tcp(addr) = *l.address() else {
        unreachable!()
    };
    // (what the peer sends after reading the challenge, whether we expect a
    // timeout rather than an authentication error)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
        (
            "absurd length",
            0x7fff_ffffi32.to_be_bytes().to_vec(),
            false,
        ),
        (
            "huge 64-bit length",
            [&(-1i32).to_be_bytes()[..], &u64::MAX.to_be_bytes()].concat(),
            false,
        ),
        ("negative length", (-7i32).to_be_bytes().to_vec(), false),
        ("silence", Vec::new(), true),
        ("half a header", vec![0, 0], true),
        (
            "truncated answer",
            [&200i32.to_be_bytes()[..], b"short"].concat(),
            true,
        ),
    ];
    for (what, bytes, timeout) in cases {
        let start = Instant::now();
        let err = std::thread::scope(|s| {
            let t = s.spawn(|| accept(&l));
            let mut raw = TcpStream::connect(addr).unwrap();
            raw.set_read_timeout(Some(LIMIT)).unwrap();
            read_frame(&mut raw).unwrap();
            raw.write_all(&bytes).unwrap();
            t.join().unwrap().unwrap_err()
        });
        if timeout {
            assert!(err.is_timeout(), "{what}: unexpected {err}");
        } else {
            assert!(err.is_authentication(), "{what}: unexpected {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} took too long"
        );
    }
    // A peer that connects and hangs up at once.
    drop(TcpStream::connect(addr).unwrap());
    let err = accept(&l).unwrap_err();
    assert!(err.is_eof() || matches!(err, Error::Io(_)), "{err}");
}

/// After the handshake (or without one) the connection's size limit holds:
/// an absurd length is [`Error::MessageTooLarge`] without allocating, and
/// the 64-bit header form (`-1` then `!Q`) is understood.
#[test]
fn absurd_lengths_after_handshake() {
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    let Address::Tcp(addr) = *l.address() else {
        unreachable!()
    };
    let mut raw = TcpStream::connect(addr).unwrap();
    let conn = accept(&l).unwrap();
    conn.set_max_message_size(1 << 20);
    // The long header form with a small length is valid Python framing.
    raw.write_all(&[&(-1i32).to_be_bytes()[..], &5u64.to_be_bytes(), b"hello"].concat())
        .unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
    raw.write_all(&[&(-1i32).to_be_bytes()[..], &(1u64 << 40).to_be_bytes()].concat())
        .unwrap();
    let err = conn.recv_bytes().unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { size, .. } if size == 1 << 40),
        "{err}"
    );
    // The stream position is lost: later receives fail at once, no hang.
    assert!(matches!(conn.recv_bytes().unwrap_err(), Error::BadFrame(_)));

    // A peer that dies mid-message: Truncated, not a hang.
    let mut raw = TcpStream::connect(addr).unwrap();
    let conn = accept(&l).unwrap();
    raw.write_all(&[&100i32.to_be_bytes()[..], b"only part"].concat())
        .unwrap();
    drop(raw);
    assert!(matches!(conn.recv_bytes().unwrap_err(), Error::Truncated));
}

/// Our client against servers that misbehave during the handshake.
#[test]
fn hostile_servers_get_errors_not_hangs() {
    let raw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = raw.local_addr().unwrap();
    let replies: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "not a challenge",
            frame(b"#HELLO#12345678901234567890"),
            false,
        ),
        ("short challenge", frame(b"#CHALLENGE#tooshort"), false),
        (
            "absurd length",
            0x7fff_ff00i32.to_be_bytes().to_vec(),
            false,
        ),
        ("silence", Vec::new(), true),
    ];
    for (what, bytes, timeout) in replies {
        let start = Instant::now();
        let t = std::thread::spawn({
            let raw = raw.try_clone().unwrap();
            move || {
                let (mut s, _) = raw.accept().unwrap();
                s.write_all(&bytes).unwrap();
                // Hold the connection open until the client gives up.
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        });
        let err = Client::connect_timeout(addr, Some(KEY), Duration::from_millis(300)).unwrap_err();
        if timeout {
            assert!(err.is_timeout(), "{what}: unexpected {err}");
        } else {
            assert!(err.is_authentication(), "{what}: unexpected {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} took too long"
        );
        t.join().unwrap();
    }
}

// ------------------------------------------ our Listener and our Client

fn child_client(addr: String, key: Vec<u8>) -> String {
    let c = Client::connect(addr.as_str(), Some(&key)).unwrap();
    c.send(&format!("child {}", std::process::id())).unwrap();
    let reply: Vec<u64> = c.recv().unwrap();
    format!("{reply:?}")
}

/// N09 between two of our processes, for every family, with typed values.
#[test]
fn our_client_in_a_child_process() {
    for addr in addresses() {
        let l = Listener::bind(&addr, Some(KEY)).unwrap();
        let mut p = Process::new(child_client, (l.address().to_string(), KEY.to_vec()));
        p.start().unwrap();
        let conn = accept(&l).unwrap();
        let hello: String = conn.recv().unwrap();
        assert_eq!(hello, format!("child {}", p.pid().unwrap()));
        conn.send(&vec![1u64, 2, 3]).unwrap();
        assert!(p.join_timeout(LIMIT).unwrap());
        assert_eq!(p.take_result().unwrap(), "[1, 2, 3]");
    }
}

/// N11 on our own pair: order kept, no merging, empty messages poll true.
#[test]
fn framing_keeps_messages_apart() {
    let l = Listener::bind(Address::Abstract(unique("frames").into_bytes()), Some(b"")).unwrap();
    let addr = l.address().clone();
    let t = std::thread::spawn(move || {
        let c = Client::connect(&addr, Some(b"")).unwrap();
        for i in 0..1000u32 {
            c.send_bytes(i.to_string().as_bytes()).unwrap();
        }
        for m in [&b"a"[..], b"b", b"cd", b""] {
            c.send_bytes(m).unwrap();
        }
        c
    });
    let conn = accept(&l).unwrap();
    for i in 0..1000u32 {
        assert_eq!(conn.recv_bytes().unwrap(), i.to_string().as_bytes());
    }
    for m in [&b"a"[..], b"b", b"cd", b""] {
        assert!(conn.poll(Some(LIMIT)).unwrap());
        assert_eq!(conn.recv_bytes().unwrap(), m);
    }
    let mut buf = [0u8; 1];
    let c = t.join().unwrap();
    c.send_bytes(b"toolong").unwrap();
    match conn.recv_bytes_into(&mut buf).unwrap_err() {
        Error::BufferTooShort { message, .. } => assert_eq!(message, b"toolong"),
        e => panic!("{e}"),
    }
}

/// Handles cannot travel over Listener/Client connections: a clear error.
#[test]
fn handles_are_refused_over_listener_connections() {
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    let c = Client::connect(l.address(), None).unwrap();
    let (a, _b) = multiproc::Pipe::new().unwrap();
    let err = c.send(&a).unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err}");
    // The connection is still usable.
    c.send_bytes(b"still fine").unwrap();
    assert_eq!(accept(&l).unwrap().recv_bytes().unwrap(), b"still fine");
}

/// A listener without an authkey and a client with one: the client is told
/// nothing and gives up at its deadline (as Python's would hang), and the
/// reverse is refused by the listener.
#[test]
fn mismatched_key_presence() {
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    let err =
        Client::connect_timeout(l.address(), Some(KEY), Duration::from_millis(200)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(accept(&l).unwrap());

    let mut l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    l.set_handshake_timeout(Some(Duration::from_secs(5)));
    let addr = l.address().clone();
    let t = std::thread::spawn(move || {
        let c = Client::connect(&addr, None).unwrap();
        c.send_bytes(b"no handshake from me").unwrap();
        // Python's client would misread the challenge as data: so do we.
        c.recv_bytes().unwrap()
    });
    let err = accept(&l).unwrap_err();
    assert!(err.is_authentication(), "{err}");
    assert!(t.join().unwrap().starts_with(b"#CHALLENGE#"));
}

// ------------------------------------------ N07, N15, N18: lifecycle

/// N07: a second listener on the same address fails; closing frees it and
/// removes the socket file; nobody is listening afterwards.
#[test]
fn address_in_use_and_close() {
    for addr in addresses() {
        let l = Listener::bind(&addr, None).unwrap();
        let bound = l.address().clone();
        let err = Listener::bind(&bound, None).unwrap_err();
        assert!(
            matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::AddrInUse),
            "{err}"
        );
        if let Address::Unix(p) = &bound {
            assert!(p.exists());
        }
        l.close();
        if let Address::Unix(p) = &bound {
            assert!(!p.exists(), "socket file left behind");
        }
        // A program another test spawns at this moment holds a copy of
        // every descriptor of this process until its `exec` (which closes
        // them): the closed address may answer, or stay taken, for that
        // long, but not for seconds.
        let end = Instant::now() + Duration::from_secs(5);
        let refused = loop {
            match Client::connect(&bound, None) {
                Err(Error::Io(_)) => break true,
                Err(e) => panic!("connecting to a closed listener: {e}"),
                Ok(_) if Instant::now() >= end => break false,
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        assert!(refused, "{bound} still accepts after close");
        // The address is free again.
        let end = Instant::now() + Duration::from_secs(5);
        while Listener::bind(&bound, None).is_err() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        Listener::bind(&bound, None).unwrap();
    }
}

/// N15/N18: addresses that belong to no family here, and a descriptor that
/// is not a socket.
#[test]
fn invalid_addresses_and_handles() {
    for bad in ["", r"\\.\pipe\multiproc", "@"] {
        assert!(
            matches!(Listener::bind(bad, None).unwrap_err(), Error::Address(_)),
            "{bad:?}"
        );
        assert!(
            matches!(Client::connect(bad, None).unwrap_err(), Error::Address(_)),
            "{bad:?}"
        );
    }
    let long = Address::Abstract(vec![b'x'; 200]);
    assert!(matches!(
        Listener::bind(&long, None).unwrap_err(),
        Error::Io(_)
    ));
    let f = std::fs::File::open("/dev/null").unwrap();
    assert!(Connection::from_fd(f.into()).is_err());
}

#[test]
fn address_parsing() {
    assert_eq!(
        "@name".parse::<Address>().unwrap(),
        Address::Abstract(b"name".to_vec())
    );
    assert_eq!(
        "\0name".parse::<Address>().unwrap(),
        Address::Abstract(b"name".to_vec())
    );
    assert_eq!(
        "rel/x.sock".parse::<Address>().unwrap(),
        Address::Unix("rel/x.sock".into())
    );
    assert!(matches!("[::1]:80".parse::<Address>().unwrap(), Address::Tcp(a) if a.is_ipv6()));
    let Address::Tcp(a) = "localhost:7".parse::<Address>().unwrap() else {
        panic!()
    };
    assert!(a.ip().is_loopback() && a.port() == 7);
}

// --------------------------------------------- pickled plain values

const PY_PICKLE: &str = r#"
from multiprocessing.connection import Client
c = Client(parse(sys.argv[1]), authkey=sys.argv[2].encode())
value = {'none': None, 'flags': [True, False], 'ints': [0, 255, 65536, -1, 2**40, -2**63],
         'float': 1.5, 'text': 'héllo', 'raw': b'\x00\xff', 'tuple': (1, 'two'),
         'empty': ([], {}, (), '', b'')}
shared = [1]
c.send(value)                      # Python's own pickling, default protocol
c.send([shared, shared])           # memo references
got = c.recv()                     # our pickle
assert got == {'from': 'rust', 'n': [-5, 3.25, None, True], 'b': b'xyz', 't': (1,)}, got
print('OK', flush=True)
"#;

/// The optional pickle codec against Python's own `Connection.send`/`recv`.
#[test]
fn pickled_plain_values_with_python() {
    use multiproc::pickle::{Value, dumps, loads};
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let child = python(PY_PICKLE, &[&py_addr(l.address()), "shared secret"]);
    let conn = accept(&l).unwrap();
    let s = Value::from;
    let ints = [0, 255, 65536, -1, 1 << 40, i64::MIN]
        .map(Value::Int)
        .to_vec();
    let want = Value::Dict(vec![
        (s("none"), Value::None),
        (
            s("flags"),
            Value::List(vec![Value::Bool(true), Value::Bool(false)]),
        ),
        (s("ints"), Value::List(ints)),
        (s("float"), Value::Float(1.5)),
        (s("text"), s("héllo")),
        (s("raw"), Value::Bytes(vec![0, 0xff])),
        (s("tuple"), Value::Tuple(vec![Value::Int(1), s("two")])),
        (
            s("empty"),
            Value::Tuple(vec![
                Value::List(vec![]),
                Value::Dict(vec![]),
                Value::Tuple(vec![]),
                s(""),
                Value::Bytes(vec![]),
            ]),
        ),
    ]);
    assert_eq!(loads(&conn.recv_bytes().unwrap()).unwrap(), want);
    let one = Value::List(vec![Value::Int(1)]);
    assert_eq!(
        loads(&conn.recv_bytes().unwrap()).unwrap(),
        Value::List(vec![one.clone(), one])
    );
    let reply = Value::Dict(vec![
        (s("from"), s("rust")),
        (
            s("n"),
            Value::List(vec![
                Value::Int(-5),
                Value::Float(3.25),
                Value::None,
                Value::Bool(true),
            ]),
        ),
        (s("b"), Value::Bytes(b"xyz".to_vec())),
        (s("t"), Value::Tuple(vec![Value::Int(1)])),
    ]);
    conn.send_bytes(&dumps(&reply)).unwrap();
    let (code, out, err) = finish(child, None);
    assert_eq!((code, out.trim()), (0, "OK"), "python stderr: {err}");
}

#[test]
fn last_accepted_is_the_peer_address() {
    let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    assert_eq!(listener.last_accepted(), None);
    let Address::Tcp(addr) = listener.address().clone() else {
        panic!("not tcp")
    };
    for _ in 0..2 {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let _conn = listener.accept().unwrap();
        assert_eq!(
            listener.last_accepted(),
            Some(Address::Tcp(stream.local_addr().unwrap()))
        );
    }
    // A Unix client without an address of its own has none to report.
    let name = format!("@multiproc-test-last-accepted-{}", std::process::id());
    let unix = Listener::bind(name.as_str(), None).unwrap();
    let _client = Client::connect(name.as_str(), None).unwrap();
    let _conn = unix.accept().unwrap();
    assert_eq!(unix.last_accepted(), None);
}

/// Two ends of a TCP connection made without `Listener`/`Client`, wrapped
/// as `Connection`s.
fn tcp_connections() -> (Connection, Connection) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (
        Connection::from_fd(a.into()).unwrap(),
        Connection::from_fd(b.into()).unwrap(),
    )
}

#[test]
fn challenge_functions_authenticate_a_custom_transport() {
    use multiproc::connection::{answer_challenge_deadline, deliver_challenge_deadline};
    let (server, client) = tcp_connections();
    let t = std::thread::spawn(move || {
        answer_challenge(&client, b"key")?;
        deliver_challenge(&client, b"key")?;
        client.recv::<String>()
    });
    deliver_challenge(&server, b"key").unwrap();
    answer_challenge(&server, b"key").unwrap();
    server.send("welcome").unwrap();
    assert_eq!(t.join().unwrap().unwrap(), "welcome");

    // Different keys: both sides are told.
    let (server, client) = tcp_connections();
    let t = std::thread::spawn(move || answer_challenge(&client, b"other"));
    let e = deliver_challenge(&server, b"key").unwrap_err();
    assert!(e.is_authentication(), "{e}");
    assert!(t.join().unwrap().unwrap_err().is_authentication());

    // A silent peer: the deadline forms return by their deadline.
    let (server, _client) = tcp_connections();
    let start = Instant::now();
    let e = deliver_challenge_deadline(&server, b"key", start + Duration::from_millis(200))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let e = answer_challenge_deadline(&server, b"key", Instant::now() + Duration::from_millis(200))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

fn answer_then_deliver(conn: Connection, key: Vec<u8>) -> multiproc::Result<u32> {
    answer_challenge(&conn, &key)?;
    deliver_challenge(&conn, &key)?;
    conn.recv()
}

#[test]
fn challenge_functions_across_processes() {
    for (key, ok) in [(b"same".to_vec(), true), (b"different".to_vec(), false)] {
        let (here, there) = Pipe::new().unwrap();
        let mut p = Process::new(answer_then_deliver, (there, key));
        p.start().unwrap();
        let r = deliver_challenge(&here, b"same").and_then(|()| answer_challenge(&here, b"same"));
        if ok {
            r.unwrap();
            here.send(&7u32).unwrap();
        } else {
            assert!(r.unwrap_err().is_authentication());
        }
        drop(here);
        p.join().unwrap();
        match p.take_result().unwrap() {
            Ok(v) => assert!(ok && v == 7),
            Err(e) => assert!(!ok && e.is_authentication(), "{e}"),
        }
    }
}

/// A clone of a Listener/Client connection speaks the same (Python's)
/// framing: a large message sent through it arrives whole.
#[test]
fn a_cloned_client_connection_keeps_python_framing() {
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    let c = Client::connect(l.address(), None).unwrap();
    let c2 = c.try_clone().unwrap();
    let big = vec![7u8; 300_000];
    c2.send_bytes(&big).unwrap();
    c.send_bytes(b"after").unwrap();
    let s = accept(&l).unwrap();
    assert_eq!(s.recv_bytes().unwrap(), big);
    assert_eq!(s.recv_bytes().unwrap(), b"after");
    s.send_bytes(b"back").unwrap();
    assert_eq!(c2.recv_bytes().unwrap(), b"back");
}
