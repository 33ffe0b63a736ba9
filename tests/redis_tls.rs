//! `rediss://` against a real `redis-server` listening with TLS (Debian's
//! build links OpenSSL), with a CA and a server certificate made at test
//! time by the `openssl` command. Skipped (with a message) when `openssl`
//! is missing.
#![cfg(feature = "redis")]

mod redis_support;

use multiproc::Error;
use multiproc::distributed::{Backend, CA_ENV};
use redis_support::{PASSWORD, RedisServer};
use std::process::{Command, Stdio};

fn server() -> Option<RedisServer> {
    let s = RedisServer::start_tls();
    if s.is_none() {
        eprintln!("skipped: no openssl command to make a test certificate");
    }
    s
}

fn assert_hidden(e: &Error) {
    let (shown, debug) = (e.to_string(), format!("{e:?}"));
    assert!(!shown.contains(PASSWORD), "password in Display: {shown}");
    assert!(!debug.contains(PASSWORD), "password in Debug: {debug}");
}

#[test]
fn tls_with_a_private_ca_carries_a_queue() {
    let Some(s) = server() else { return };
    let ca = std::fs::read(s.dir.join("ca.pem")).unwrap();
    let b = Backend::open_with_ca(&s.tls_url(), &ca)
        .unwrap()
        .with_prefix("tls");
    let q = b.queue::<String>("q").unwrap();
    q.put("over tls".to_string()).unwrap();
    assert_eq!(q.get().unwrap(), "over tls");
    assert!(!format!("{b:?}").contains(PASSWORD));
    // The same server seen without TLS holds the item's stream: the TLS
    // port is the same server, not a stand-in.
    let plain = Backend::connect(&s.url()).unwrap().with_prefix("tls");
    let q2 = plain.queue::<String>("q").unwrap();
    q.put("again".to_string()).unwrap();
    assert_eq!(q2.get().unwrap(), "again");
}

#[test]
fn tls_server_of_an_unknown_ca_is_refused_and_the_password_never_shown() {
    let Some(s) = server() else { return };
    // The system roots do not know the test CA.
    let e = Backend::connect(&s.tls_url()).unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e:?}");
    assert_hidden(&e);
    assert!(e.to_string().contains("***"), "{e}");
    // A CA file that is not PEM.
    let e = Backend::open_with_ca(&s.tls_url(), b"not a certificate").unwrap_err();
    assert_hidden(&e);
    // A CA for a plain URL.
    let e = Backend::open_with_ca(&s.url(), b"").unwrap_err();
    assert!(matches!(e, Error::Address(_)), "{e:?}");
    assert_hidden(&e);
    // A URL that does not parse.
    let e = Backend::open(&format!("rediss://:{PASSWORD}@127.0.0.1:notaport/0")).unwrap_err();
    assert_hidden(&e);
    // A plain client on the TLS port gets an error, not a hang.
    let port = s.tls_port.unwrap();
    let e = Backend::connect(&format!("redis://:{PASSWORD}@127.0.0.1:{port}/0")).unwrap_err();
    assert_hidden(&e);
}

#[test]
fn tls_wrong_password_is_an_authentication_error() {
    let Some(s) = server() else { return };
    let ca = std::fs::read(s.dir.join("ca.pem")).unwrap();
    let url = s.tls_url().replace(PASSWORD, "wrong-pw-123");
    let e = Backend::open_with_ca(&url, &ca)
        .and_then(|b| b.queue::<u8>("q").map(|_| ()))
        .unwrap_err();
    assert!(matches!(e, Error::Authentication(_)), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("wrong-pw-123"));
}

/// Not a test of its own: a program that connects with the CA taken from
/// the environment, as a worker on another machine would.
#[test]
fn tls_env_child() {
    let Ok(url) = std::env::var("TEST_TLS_URL") else {
        return;
    };
    let b = Backend::connect(&url).expect("connect with the CA of MULTIPROC_REDIS_CA");
    let q = b.with_prefix("tlsenv").queue::<u32>("q").unwrap();
    q.put(42).unwrap();
}

#[test]
fn tls_ca_file_from_the_environment() {
    let Some(s) = server() else { return };
    let exe = std::env::current_exe().unwrap();
    let run = |ca: &std::path::Path| {
        Command::new(&exe)
            .args(["--exact", "tls_env_child", "--test-threads", "1"])
            .env("TEST_TLS_URL", s.tls_url())
            .env(CA_ENV, ca)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert!(run(&s.dir.join("ca.pem")).success());
    let plain = Backend::connect(&s.url()).unwrap().with_prefix("tlsenv");
    assert_eq!(plain.queue::<u32>("q").unwrap().get_nowait().unwrap(), 42);
    // A CA file that does not exist: the child fails.
    assert!(!run(&s.dir.join("missing.pem")).success());
}
