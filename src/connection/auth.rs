//! The authkey handshake of Python's `multiprocessing.connection`.
//!
//! Both sides prove that they know the same key without sending it. The
//! serving side ([`Listener::accept`](crate::Listener::accept)) first
//! *delivers* a challenge and then *answers* one; the connecting side
//! ([`Client::connect`](crate::Client::connect)) does the same in the other
//! order. Every step is one message in Python's framing:
//!
//! | step | sender | bytes |
//! | --- | --- | --- |
//! | 1 | challenger | `#CHALLENGE#` + `{sha256}` + 40 random bytes |
//! | 2 | answerer | `{sha256}` + HMAC-SHA256(key, everything after `#CHALLENGE#`) |
//! | 3 | challenger | `#WELCOME#`, or `#FAILURE#` and the connection is dropped |
//!
//! Compatibility with Python 3.11 and older, which only know HMAC-MD5:
//! - an old challenger sends exactly 20 random bytes with no `{digest}`
//!   prefix; the answer is then the raw 16-byte HMAC-MD5, no prefix;
//! - an old answerer takes our whole prefixed challenge as the message and
//!   returns a raw 16-byte HMAC-MD5 of it, which we accept: a 16-byte (or
//!   20-byte) answer means MD5, anything else must carry a `{digest}` prefix.
//!
//! The MAC always covers the whole challenge including its `{digest}` prefix,
//! so an answerer cannot pick a weaker digest than the one asked for without
//! the MAC failing. Digests known here: `md5`, `sha256`, `sha384`; Python
//! also allows `sha3_256` and `sha3_384`, which we reject with a clear
//! [`Error::Authentication`] (Python never picks them by default).
//!
//! Handshake messages are limited to 256 bytes, as in Python, and every read
//! gives up at the caller's deadline, so a silent or lying peer costs neither
//! memory nor a hang.

use super::Connection;
use crate::error::{Error, Result};
use crate::sys;
use hmac::{Hmac, KeyInit, Mac};
use std::time::Instant;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a challenge (Python 3.12+: `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// Length of a legacy challenge (Python ≤ 3.11).
const LEGACY_MESSAGE_LENGTH: usize = 20;
/// Length of a raw HMAC-MD5.
const MD5_LEN: usize = 16;
/// Longest digest name Python allows (`sha3_256`).
const MAX_DIGEST_NAME: usize = 8;
/// Largest handshake message accepted (Python's `recv_bytes(256)`).
const MAX_HANDSHAKE_MESSAGE: u64 = 256;

/// A MAC digest of the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length; the error arm cannot happen.
            let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
        }
    }

    /// Checks `tag` against the MAC of `message` in constant time.
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
            m.update(message);
            m.verify_slice(tag).is_ok()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message, tag),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, tag),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message, tag),
        }
    }

    fn len(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
        }
    }
}

fn auth_error(what: impl Into<String>) -> Error {
    Error::Authentication(what.into())
}

/// Splits a challenge or an answer into its digest and payload. `None`
/// means the legacy protocol (raw HMAC-MD5, no prefix).
fn split_digest(message: &[u8]) -> Result<(Option<Digest>, &[u8])> {
    if message.len() == LEGACY_MESSAGE_LENGTH || message.len() == MD5_LEN {
        return Ok((None, message));
    }
    if message.first() == Some(&b'{') {
        let window = &message[1..message.len().min(MAX_DIGEST_NAME + 2)];
        if let Some(end) = window.iter().position(|&b| b == b'}') {
            let name = &window[..end];
            let payload = &message[end + 2..];
            return match name {
                b"md5" => Ok((Some(Digest::Md5), payload)),
                b"sha256" => Ok((Some(Digest::Sha256), payload)),
                b"sha384" => Ok((Some(Digest::Sha384), payload)),
                b"sha3_256" | b"sha3_384" => Err(auth_error(format!(
                    "the peer asked for digest {}, which is not supported here",
                    String::from_utf8_lossy(name)
                ))),
                _ => Err(auth_error(format!(
                    "unsupported digest {:?}",
                    String::from_utf8_lossy(name)
                ))),
            };
        }
    }
    Err(auth_error(format!(
        "message of {} bytes has neither a legacy length nor a {{digest}} prefix",
        message.len()
    )))
}

/// The answer to a challenge `message` (the bytes after `#CHALLENGE#`).
fn create_response(key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    match split_digest(message)?.0 {
        None => Ok(Digest::Md5.mac(key, message)),
        Some(d) => {
            let mut out = format!("{{{}}}", d.name()).into_bytes();
            out.extend_from_slice(&d.mac(key, message));
            Ok(out)
        }
    }
}

/// Checks an answer to our challenge `message`.
fn verify_response(key: &[u8], message: &[u8], response: &[u8]) -> Result<()> {
    let (digest, mac) = split_digest(response)?;
    let digest = digest.unwrap_or(Digest::Md5);
    if mac.len() != digest.len() {
        return Err(auth_error(format!(
            "expected a {} MAC of {} bytes, got {} bytes",
            digest.name(),
            digest.len(),
            mac.len()
        )));
    }
    if !digest.verify(key, message, mac) {
        return Err(auth_error("digest received was wrong"));
    }
    Ok(())
}

/// Receives one handshake message, turning protocol violations into
/// authentication errors.
fn recv(conn: &Connection, deadline: Option<Instant>) -> Result<Vec<u8>> {
    conn.recv_bytes_strict(MAX_HANDSHAKE_MESSAGE, deadline)
        .map_err(|e| match e {
            Error::MessageTooLarge { size, max } => auth_error(format!(
                "handshake message of {size} bytes is over the {max}-byte limit"
            )),
            Error::BadFrame(why) => auth_error(format!("bad handshake frame: {why}")),
            other => other,
        })
}

/// Sends a challenge and checks the answer (Python's `deliver_challenge`).
pub(crate) fn deliver_challenge_impl(
    conn: &Connection,
    key: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let mut message = b"{sha256}".to_vec();
    let mut random = [0u8; MESSAGE_LENGTH];
    sys::random_bytes(&mut random)?;
    message.extend_from_slice(&random);
    let mut challenge = CHALLENGE.to_vec();
    challenge.extend_from_slice(&message);
    conn.send_bytes(&challenge)?;
    let response = recv(conn, deadline)?;
    match verify_response(key, &message, &response) {
        Ok(()) => conn.send_bytes(WELCOME),
        Err(e) => {
            // Best effort: the peer may already be gone.
            let _ = conn.send_bytes(FAILURE);
            Err(e)
        }
    }
}

/// Answers the peer's challenge (Python's `answer_challenge`).
pub(crate) fn answer_challenge_impl(
    conn: &Connection,
    key: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let message = recv(conn, deadline)?;
    let Some(message) = message.strip_prefix(CHALLENGE) else {
        return Err(auth_error("protocol error: expected a #CHALLENGE# message"));
    };
    if message.len() < LEGACY_MESSAGE_LENGTH {
        return Err(auth_error(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    let response = create_response(key, message)?;
    conn.send_bytes(&response)?;
    let reply = recv(conn, deadline)?;
    if reply != WELCOME {
        return Err(auth_error("digest sent was rejected"));
    }
    Ok(())
}

/// Sends a challenge on `conn` and checks the peer's answer, as the
/// serving side of Python's handshake does (Python's
/// `multiprocessing.connection.deliver_challenge`). Pair it with
/// [`answer_challenge`] on the other side, for a transport that
/// [`Listener`](crate::Listener) and [`Client`](crate::Client) do not make:
/// a socket from elsewhere wrapped with
/// [`Connection::from_fd`](crate::Connection::from_fd), or a [`Pipe`](crate::Pipe).
///
/// The server in Python's protocol delivers first then answers; the client
/// answers first then delivers. Waits as long as the peer takes, as in
/// Python; [`deliver_challenge_deadline`] gives up at a deadline.
///
/// # Errors
/// [`Error::Authentication`] when the peer's key differs or it does not
/// speak the protocol (it is told `#FAILURE#`); [`Error::Eof`] when it hangs
/// up; [`Error::Io`] for OS errors.
///
/// # Examples
/// ```
/// use multiproc::connection::{answer_challenge, deliver_challenge};
/// use multiproc::{Pipe, Process};
///
/// fn client(conn: multiproc::Connection) -> multiproc::Result<String> {
///     answer_challenge(&conn, b"secret")?;
///     deliver_challenge(&conn, b"secret")?;
///     conn.recv()
/// }
///
/// let (here, there) = Pipe::new()?;
/// let mut p = Process::new(client, (there,));
/// p.start()?;
/// deliver_challenge(&here, b"secret")?;
/// answer_challenge(&here, b"secret")?;
/// here.send("authenticated")?;
/// p.join()?;
/// assert_eq!(p.take_result()??, "authenticated");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn deliver_challenge(conn: &Connection, authkey: &[u8]) -> Result<()> {
    deliver_challenge_impl(conn, authkey, None)
}

/// [`deliver_challenge`], giving up at `deadline`.
///
/// # Errors
/// As [`deliver_challenge`], and [`Error::Timeout`] when the peer has not
/// finished by `deadline` (the connection should then be dropped: it is in
/// the middle of the handshake).
pub fn deliver_challenge_deadline(
    conn: &Connection,
    authkey: &[u8],
    deadline: Instant,
) -> Result<()> {
    deliver_challenge_impl(conn, authkey, Some(deadline))
}

/// Answers the challenge the peer sends on `conn`, as the connecting side
/// of Python's handshake does (Python's
/// `multiprocessing.connection.answer_challenge`); see
/// [`deliver_challenge`] for the protocol and an example. Waits as long as
/// the peer takes; [`answer_challenge_deadline`] gives up at a deadline.
///
/// # Errors
/// [`Error::Authentication`] when the peer rejects the answer (a different
/// key) or does not send a challenge; [`Error::Eof`] when it hangs up;
/// [`Error::Io`] for OS errors.
pub fn answer_challenge(conn: &Connection, authkey: &[u8]) -> Result<()> {
    answer_challenge_impl(conn, authkey, None)
}

/// [`answer_challenge`], giving up at `deadline`.
///
/// # Errors
/// As [`answer_challenge`], and [`Error::Timeout`] when the peer has not
/// finished by `deadline`.
pub fn answer_challenge_deadline(
    conn: &Connection,
    authkey: &[u8],
    deadline: Instant,
) -> Result<()> {
    answer_challenge_impl(conn, authkey, Some(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Framing;

    fn pair() -> (Connection, Connection) {
        let (a, b) = sys::socketpair(sys::SocketKind::Stream).unwrap();
        (
            Connection::with_framing(a, true, true, Framing::Python),
            Connection::with_framing(b, true, true, Framing::Python),
        )
    }

    // Vectors computed with Python's `hmac.new(key, msg, name).digest()`.
    const KEY: &[u8] = b"secret";

    #[test]
    fn legacy_challenge_gets_raw_md5() {
        let msg = [7u8; 20];
        let r = create_response(KEY, &msg).unwrap();
        assert_eq!(r, Digest::Md5.mac(KEY, &msg));
        assert_eq!(r.len(), 16);
        assert_eq!(
            hex(&r),
            "0f041f7b4aa172e4f28f6d14b678fa1c",
            "HMAC-MD5 of twenty 0x07 bytes under b'secret'"
        );
    }

    #[test]
    fn modern_challenge_gets_prefixed_sha256() {
        let mut msg = b"{sha256}".to_vec();
        msg.extend_from_slice(&[1u8; 40]);
        let r = create_response(KEY, &msg).unwrap();
        assert!(r.starts_with(b"{sha256}"));
        assert_eq!(r.len(), 8 + 32);
        assert_eq!(
            hex(&r[8..]),
            "2cb0ce6db2c48f73a3dc7d31930c4660d2fbae6b5624634c73e636715e1039f5",
            "HMAC-SHA256 of the prefixed challenge"
        );
        verify_response(KEY, &msg, &r).unwrap();
        // A legacy answerer's raw MD5 of the whole prefixed message is accepted.
        verify_response(KEY, &msg, &Digest::Md5.mac(KEY, &msg)).unwrap();
        // A wrong key is not.
        let bad = create_response(b"other", &msg).unwrap();
        assert!(
            verify_response(KEY, &msg, &bad)
                .unwrap_err()
                .is_authentication()
        );
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        for r in [
            &b"{sha3_256}0123456789012345678901234567890123"[..],
            b"{blake2}0123456789012345678901234567",
            b"no prefix and not a legacy length",
            b"{sha256}short",
            b"",
        ] {
            let e = verify_response(KEY, b"{sha256}whatever", r).unwrap_err();
            assert!(e.is_authentication(), "{e}");
        }
    }

    #[test]
    fn both_roles_over_a_socket() {
        let (a, b) = pair();
        let t = std::thread::spawn(move || {
            deliver_challenge_impl(&a, KEY, None)?;
            answer_challenge_impl(&a, KEY, None)
        });
        answer_challenge_impl(&b, KEY, None).unwrap();
        deliver_challenge_impl(&b, KEY, None).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (a, b) = pair();
        let t = std::thread::spawn(move || deliver_challenge_impl(&a, KEY, None));
        let mine = answer_challenge_impl(&b, b"wrong", None).unwrap_err();
        let theirs = t.join().unwrap().unwrap_err();
        assert!(mine.is_authentication(), "{mine}");
        assert!(theirs.is_authentication(), "{theirs}");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
