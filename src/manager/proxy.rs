//! The untyped proxy: a token, the manager's authkey, and this process's
//! connection to the manager.

use super::fast;
use super::inbox;
use super::local;
use super::value::{PROXY_MARK, from_value, to_value};
use super::wire::{self, Reply, Token};
use crate::connection::{Address, Connection};
use crate::error::{Error, Result};
use crate::pickle::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard};

/// A reference to an object in a manager (Python's `BaseProxy`), the base
/// of the typed proxies.
///
/// A proxy holds one reference to its object (the manager keeps the object
/// while any proxy anywhere refers to it), and its own connection to the
/// manager, opened at the first call in each process. Calls from several
/// threads on one proxy take turns on that connection; clone the proxy to
/// make blocking calls from several threads at once.
///
/// Proxies are `Serialize`/`Deserialize`: pass them to other processes in
/// `Process` arguments, queue items or pool tasks, or store them inside a
/// managed `dict` or `list`. The receiver takes its own reference. The
/// serialized form carries the manager's authkey, as Python's does while
/// spawning a child; do not send it where the key must not go.
pub struct BaseProxy {
    token: Token,
    authkey: Vec<u8>,
    /// The process that holds the reference (0: none, nothing to release).
    owner: u32,
    conn: Mutex<Option<Link>>,
}

/// This process's connection to the manager, for one proxy.
struct Link {
    pid: u32,
    conn: Connection,
    /// The same socket, for writing pre-framed requests; `None` on a local
    /// pipe ([`local`](super::local)), whose messages carry the frames.
    raw: Option<std::fs::File>,
    /// Requests are encoded here (kept between calls).
    buf: Vec<u8>,
    /// The put inbox of the queue, when this proxy is a queue's.
    inbox: inbox::Known,
    /// Replies received on a local pipe and not read yet.
    frames: local::Frames,
}

impl Link {
    /// Sends the requests in `buf` and reads one reply.
    fn round_trip(&mut self) -> Result<Reply> {
        let r = self.send_buf();
        self.buf.clear();
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        r?;
        self.recv_reply()
    }

    /// Reads the next reply.
    fn recv_reply(&mut self) -> Result<Reply> {
        if self.raw.is_some() {
            self.conn
                .recv_with(|frame, _| wire::parse_reply_kind(frame))
        } else {
            self.frames.next(&self.conn, wire::parse_reply_kind)?
        }
    }

    /// Sends the length-prefixed request frames in `buf`: as they are, on
    /// a socket or as one message of a pipe.
    fn send_buf(&self) -> Result<()> {
        use std::io::Write;
        match self.raw.as_ref() {
            Some(mut raw) => raw.write_all(&self.buf).map_err(Error::Io),
            None => self.conn.send_bytes(&self.buf),
        }
    }
}

/// How many pipelined requests are written before their replies are read.
const WINDOW: usize = 1024;
/// A batch of pipelined requests ends once it holds this many bytes: the
/// whole batch fits in the socket's buffer, so writing it never waits for
/// the server, which may itself be waiting to write replies.
const WINDOW_BYTES: usize = 48 << 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BaseProxy {
    /// A proxy for an object this process already holds one reference to
    /// (a fresh `create`).
    pub(crate) fn owned(token: Token, authkey: Vec<u8>) -> BaseProxy {
        BaseProxy {
            token,
            authkey,
            owner: crate::sys::self_ident().pid,
            conn: Mutex::new(None),
        }
    }

    /// A proxy that takes a new reference first (`incref`).
    pub(crate) fn attach(token: Token, authkey: Vec<u8>) -> Result<BaseProxy> {
        wire::special(
            &token.address,
            &authkey,
            "incref",
            vec![Value::Str(token.id.clone())],
        )?;
        Ok(BaseProxy::owned(token, authkey))
    }

    /// The token: type id, manager address, object id.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The manager's address.
    pub fn address(&self) -> &Address {
        &self.token.address
    }

    /// Calls `method` on the object with plain arguments and returns the
    /// plain result (Python's `_callmethod`).
    ///
    /// # Errors
    /// [`Error::Remote`] (or [`Error::Empty`]/[`Error::Full`]) for an
    /// exception in the method or a refusal by the server; [`Error::Eof`],
    /// [`Error::Io`] when the manager is gone (a later call tries to
    /// reconnect, and fails at once while it is down);
    /// [`Error::Authentication`] for a wrong key.
    pub fn call_method(&self, method: &str, args: Vec<Value>) -> Result<Value> {
        self.call_kw(method, args, vec![])
    }

    /// Like [`call_method`](Self::call_method), with keyword arguments.
    ///
    /// # Errors
    /// As for [`call_method`](Self::call_method).
    pub fn call_kw(
        &self,
        method: &str,
        args: Vec<Value>,
        kwds: Vec<(Value, Value)>,
    ) -> Result<Value> {
        match self.call_reply(method, &args, &kwds)? {
            Reply::Return(v) => Ok(v),
            Reply::Proxy(p) => {
                // Release the object made for this call, then say what to
                // use instead.
                drop(self.adopt(p)?);
                Err(Error::Decode(format!(
                    "{method} answers with a proxy: use call_proxy"
                )))
            }
        }
    }

    /// One call on this process's connection.
    fn call_reply(&self, method: &str, args: &[Value], kwds: &[(Value, Value)]) -> Result<Reply> {
        let mut slot = self.link()?;
        let link = slot.as_mut().expect("connected");
        fast::request(&mut link.buf, Some(&self.token.id), method, args, kwds)?;
        let r = link.round_trip();
        if let Err(e) = &r {
            if !is_reply_error(e) {
                // The stream may be out of step or gone: start afresh.
                *slot = None;
            }
        }
        r
    }

    /// Calls a method the server answers with a new object (a `#PROXY`
    /// reply, e.g. a dict's `__iter__`), returning a proxy that holds the
    /// reference the server took for it.
    ///
    /// # Errors
    /// [`Error::Decode`] when the method answers with a plain value; as
    /// for [`call_method`](Self::call_method).
    pub fn call_proxy<P: super::Proxy>(&self, method: &str, args: Vec<Value>) -> Result<P> {
        match self.call_reply(method, &args, &[])? {
            Reply::Proxy(p) => self.adopt(p).map(P::from_base),
            Reply::Return(_) => Err(Error::Decode(format!(
                "{method} answered with a value, not a proxy"
            ))),
        }
    }

    /// A proxy for the `(exposed, Token)` of a `#PROXY` reply, owning the
    /// reference it came with. As in Python, the token's address is
    /// replaced by this proxy's (the server may name itself otherwise).
    fn adopt(&self, payload: Value) -> Result<BaseProxy> {
        let bad = || Error::Decode("bad #PROXY reply".into());
        let Value::Tuple(t) = payload else {
            return Err(bad());
        };
        let token = t.get(1).ok_or_else(bad)?;
        let mut token = Token::from_python(token)?;
        token.address = self.token.address.clone();
        Ok(BaseProxy::owned(token, self.authkey.clone()))
    }

    /// The connection of this process, opened (with `accept_connection`)
    /// at the first call in each process.
    fn link(&self) -> Result<MutexGuard<'_, Option<Link>>> {
        let pid = crate::sys::self_ident().pid;
        let mut slot = lock(&self.conn);
        if slot.as_ref().is_none_or(|l| l.pid != pid) {
            *slot = None;
            let (conn, pipe) = super::local::connect(&self.token.address, &self.authkey)?;
            let raw = if pipe {
                None
            } else {
                Some(std::fs::File::from(conn.as_fd().try_clone_to_owned()?))
            };
            let mut link = Link {
                pid,
                conn,
                raw,
                buf: Vec::new(),
                inbox: inbox::Known::default(),
                frames: local::Frames::default(),
            };
            let name = crate::process::current_process().name().to_string();
            fast::request(
                &mut link.buf,
                None,
                "accept_connection",
                &[Value::Str(name)],
                &[],
            )?;
            link.round_trip()?;
            *slot = Some(link);
        }
        Ok(slot)
    }

    /// Puts `item` into the queue through its put inbox (see
    /// [`inbox`](super::inbox)) when it can go that way: this proxy's
    /// connection is a local pipe to this crate's server, the queue
    /// has no `maxsize`, and the item is small and plain. Asks for the
    /// inbox on the first put in each process. False: make the call.
    ///
    /// # Errors
    /// When the connection to the manager fails.
    pub(crate) fn inbox_put(&self, item: &Value) -> Result<bool> {
        if matches!(self.token.address, Address::Tcp(_)) {
            return Ok(false);
        }
        let mut slot = self.link()?;
        let link = slot.as_mut().expect("connected");
        if matches!(link.inbox, inbox::Known::Unasked) {
            link.inbox = if link.raw.is_some() {
                // Not a local pipe: no handles can come.
                inbox::Known::Refused
            } else {
                match inbox::ask(&link.conn, &self.token.id) {
                    Ok(Some(ring)) => inbox::Known::Open(ring),
                    Ok(None) => inbox::Known::Refused,
                    Err(e) => {
                        *slot = None;
                        return Err(e);
                    }
                }
            };
        }
        Ok(match &link.inbox {
            inbox::Known::Open(ring) => inbox::try_put(ring, link.conn.as_fd(), item),
            _ => false,
        })
    }

    /// Makes several calls with their requests in flight together on this
    /// proxy's connection (written in batches, replies read in order):
    /// one round trip per batch instead of one per call. Each call gets
    /// its own result.
    ///
    /// # Errors
    /// The outer error when the connection fails (the calls not answered
    /// are lost); each inner result as for
    /// [`call_method`](Self::call_method).
    pub fn call_pipelined(
        &self,
        calls: impl IntoIterator<Item = (&'static str, Vec<Value>)>,
    ) -> Result<Vec<Result<Value>>> {
        let mut slot = self.link()?;
        let link = slot.as_mut().expect("connected");
        let mut out = Vec::new();
        let mut calls = calls.into_iter().peekable();
        while calls.peek().is_some() {
            link.buf.clear();
            let mut n = 0;
            while n < WINDOW && link.buf.len() < WINDOW_BYTES {
                let Some((method, args)) = calls.next() else {
                    break;
                };
                if let Err(e) =
                    fast::request(&mut link.buf, Some(&self.token.id), method, &args, &[])
                {
                    // Nothing of this batch was sent: the stream is in step.
                    link.buf.clear();
                    return Err(e);
                }
                n += 1;
            }
            let sent = link.send_buf();
            let r = sent.and_then(|()| {
                for _ in 0..n {
                    let reply = link.recv_reply();
                    out.push(match reply {
                        Ok(Reply::Return(v)) => Ok(v),
                        Ok(Reply::Proxy(p)) => {
                            drop(self.adopt(p)?);
                            Err(Error::Decode(
                                "a pipelined call answered with a proxy".into(),
                            ))
                        }
                        Err(e) if is_reply_error(&e) => Err(e),
                        Err(e) => return Err(e),
                    });
                }
                Ok(())
            });
            if let Err(e) = r {
                *slot = None;
                return Err(e);
            }
        }
        link.buf.clear();
        Ok(out)
    }

    /// Calls `method` with Rust arguments (each converted to a plain
    /// value) and converts the result.
    ///
    /// # Errors
    /// As for [`call_method`](Self::call_method), plus [`Error::Encode`]
    /// and [`Error::Decode`] for values with no plain form or of the wrong
    /// shape.
    pub fn call<R: DeserializeOwned>(&self, method: &str, args: Vec<Value>) -> Result<R> {
        let v = self.call_method(method, args)?;
        if holds_object(&v) {
            with_authkey(&self.authkey, || from_value(v))
        } else {
            from_value(v)
        }
    }

    /// The object's current value as a plain value (Python's
    /// `proxy._getvalue()`).
    ///
    /// # Errors
    /// As for [`call_method`](Self::call_method).
    pub fn get_value(&self) -> Result<Value> {
        self.call_method("#GETVALUE", vec![])
    }

    /// A new proxy of the same object with its own reference and
    /// connection ([`Clone`], reporting failure instead of panicking).
    #[cfg(feature = "tokio")]
    pub(crate) fn try_clone(&self) -> Result<BaseProxy> {
        BaseProxy::attach(self.token.clone(), self.authkey.clone())
    }

    /// A duplicate of this process's connection socket (opened if need
    /// be): another thread may half-close it while a call waits on it.
    #[cfg(feature = "tokio")]
    pub(crate) fn socket(&self) -> Result<std::os::fd::OwnedFd> {
        let slot = self.link()?;
        let link = slot.as_ref().expect("connected");
        Ok(std::os::fd::AsFd::as_fd(&link.conn).try_clone_to_owned()?)
    }

    /// Forgets this process's connection; the next call opens a new one.
    #[cfg(feature = "tokio")]
    pub(crate) fn disconnect(&self) {
        *lock(&self.conn) = None;
    }
}

/// True when `v` holds an object (a proxy, perhaps), whose decoding may
/// need the authkey.
pub(super) fn holds_object(v: &Value) -> bool {
    match v {
        Value::Object(_) => true,
        Value::List(l) | Value::Tuple(l) => l.iter().any(holds_object),
        Value::Dict(d) => d.iter().any(|(k, v)| holds_object(k) || holds_object(v)),
        _ => false,
    }
}

/// Errors that come in a reply, leaving the connection in step.
fn is_reply_error(e: &Error) -> bool {
    matches!(e, Error::Remote { .. } | Error::Empty | Error::Full)
}

/// Converts an argument for a call.
pub(crate) fn arg<T: Serialize + ?Sized>(v: &T) -> Result<Value> {
    to_value(v)
}

thread_local! {
    static AUTHKEY: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `key` as the authkey for proxies decoded from a reply
/// whose pickle carries none (proxies stored by Python clients).
fn with_authkey<R>(key: &[u8], f: impl FnOnce() -> R) -> R {
    let old = AUTHKEY.with(|k| k.replace(Some(key.to_vec())));
    let r = f();
    AUTHKEY.with(|k| *k.borrow_mut() = old);
    r
}

impl Clone for BaseProxy {
    /// A new proxy with its own reference and connection.
    ///
    /// # Panics
    /// When the manager cannot be reached to take the new reference.
    fn clone(&self) -> Self {
        BaseProxy::attach(self.token.clone(), self.authkey.clone())
            .unwrap_or_else(|e| panic!("cannot clone a proxy of {}: {e}", self.token.address))
    }
}

impl Drop for BaseProxy {
    fn drop(&mut self) {
        // Only the process that took the reference gives it back (a copy
        // in a forked child did not take one).
        if self.owner != crate::sys::self_ident().pid {
            return;
        }
        *lock(&self.conn) = None;
        let _ = wire::special_timeout(
            &self.token.address,
            &self.authkey,
            "decref",
            vec![Value::Str(self.token.id.clone())],
            std::time::Duration::from_secs(5),
        );
    }
}

impl fmt::Debug for BaseProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("typeid", &self.token.typeid)
            .field("address", &self.token.address)
            .field("id", &self.token.id)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire(
    String,
    String,
    String,
    #[serde(with = "serde_bytes")] Vec<u8>,
);

impl Serialize for BaseProxy {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(
            PROXY_MARK,
            &Wire(
                self.token.typeid.clone(),
                self.token.address.to_string(),
                self.token.id.clone(),
                self.authkey.clone(),
            ),
        )
    }
}

impl<'de> Deserialize<'de> for BaseProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Wire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a manager proxy")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Wire, D::Error> {
                Wire::deserialize(d)
            }
        }
        let Wire(typeid, address, id, authkey) = d.deserialize_newtype_struct(PROXY_MARK, V)?;
        let address = address.parse().map_err(serde::de::Error::custom)?;
        BaseProxy::attach(
            Token {
                typeid,
                address,
                id,
            },
            authkey,
        )
        .map_err(serde::de::Error::custom)
    }
}

/// The plain form of a serialized proxy (`Wire` as a tuple) → Python's
/// `RebuildProxy(AutoProxy, Token, 'pickle', {'authkey': ...})`.
pub(crate) fn proxy_to_python(v: Value) -> Result<Value> {
    let Value::Tuple(t) = v else {
        return Err(Error::Encode("bad proxy form".into()));
    };
    let [
        Value::Str(typeid),
        Value::Str(address),
        Value::Str(id),
        Value::Bytes(authkey),
    ] = <[Value; 4]>::try_from(t).map_err(|_| Error::Encode("bad proxy form".into()))?
    else {
        return Err(Error::Encode("bad proxy form".into()));
    };
    let token = Token {
        typeid,
        address: address.parse()?,
        id,
    };
    Ok(Value::call(
        "multiprocessing.managers",
        "RebuildProxy",
        vec![
            Value::global("multiprocessing.managers", "AutoProxy"),
            token.to_python(),
            Value::from("pickle"),
            Value::Dict(vec![(Value::from("authkey"), Value::Bytes(authkey))]),
        ],
    ))
}

/// Python's `RebuildProxy(func, Token, serializer, kwds)` → the plain form
/// a [`BaseProxy`] deserializes from.
pub(crate) fn proxy_from_python(v: Value) -> Result<Value> {
    if let Value::Tuple(_) = v {
        return Ok(v);
    }
    let bad = || Error::Decode("expected a manager proxy (RebuildProxy)".into());
    let Value::Object(o) = &v else {
        return Err(bad());
    };
    let args = &o.args;
    let token = args
        .iter()
        .find_map(|a| Token::from_python(a).ok())
        .ok_or_else(bad)?;
    let from_kwds = args.iter().find_map(|a| match a {
        Value::Dict(kw) => kw.iter().find_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Bytes(b)) if k == "authkey" => Some(b.clone()),
            _ => None,
        }),
        _ => None,
    });
    let authkey = from_kwds
        .or_else(|| AUTHKEY.with(|k| k.borrow().clone()))
        .ok_or_else(|| Error::Decode("a proxy without an authkey".into()))?;
    Ok(Value::Tuple(vec![
        Value::Str(token.typeid),
        Value::Str(token.address.to_string()),
        Value::Str(token.id),
        Value::Bytes(authkey),
    ]))
}
