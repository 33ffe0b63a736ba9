//! CPython's manager protocol: requests, replies, tokens and exceptions as
//! pickles (MANAGER-WIRE.md §3–§8).

use crate::connection::{Address, Client, Connection};
use crate::error::{Error, Result};
use crate::pickle::{self, Object, Value};
use std::time::Duration;

/// The longest frame a manager connection accepts (requests on the server,
/// replies on a client). Longer frames close that connection.
pub(crate) const MAX_FRAME: u64 = 256 << 20;
/// How long connecting plus the handshake may take for a manager call.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A failure of a method in the server, as the client will see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    /// An exception raised by the method (`#ERROR`): a Python exception
    /// `module.name(message)` (e.g. `builtins.KeyError`); a Rust client
    /// gets [`Error::Remote`] with `kind = name` ([`Error::Empty`] and
    /// [`Error::Full`] for the queue's `Empty`/`Full`).
    Raise {
        /// Module of the exception class, e.g. `"builtins"`.
        module: String,
        /// Its name, e.g. `"KeyError"`.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// A protocol-level refusal (`#TRACEBACK`; Python's `RemoteError`).
    Traceback(String),
}

impl Fail {
    /// A Python builtin exception with one message, e.g.
    /// `Fail::builtin("ValueError", "bad")`.
    pub fn builtin(name: &str, message: impl Into<String>) -> Fail {
        Fail::Raise {
            module: "builtins".into(),
            name: name.into(),
            args: vec![Value::Str(message.into())],
        }
    }

    /// `KeyError(key)`.
    pub fn key_error(key: Value) -> Fail {
        Fail::Raise {
            module: "builtins".into(),
            name: "KeyError".into(),
            args: vec![key],
        }
    }

    /// `TypeError(message)`, for arguments of the wrong shape.
    pub fn type_error(message: impl Into<String>) -> Fail {
        Fail::builtin("TypeError", message)
    }

    pub(crate) fn empty() -> Fail {
        Fail::Raise {
            module: "_queue".into(),
            name: "Empty".into(),
            args: vec![],
        }
    }

    pub(crate) fn full() -> Fail {
        Fail::Raise {
            module: "queue".into(),
            name: "Full".into(),
            args: vec![],
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::type_error(e.to_string())
    }
}

/// What identifies a managed object: its type, its manager's address and
/// its id (Python's `Token`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The registered type name, e.g. `"dict"` or `"get_queue"`.
    pub typeid: String,
    /// Where the manager listens.
    pub address: Address,
    /// The object's id in that manager.
    pub id: String,
}

/// An address as Python writes it: `(host, port)` or a path string
/// (abstract names start with NUL).
pub(crate) fn address_to_python(a: &Address) -> Value {
    match a {
        Address::Tcp(s) => Value::Tuple(vec![
            Value::Str(s.ip().to_string()),
            Value::Int(s.port().into()),
        ]),
        Address::Unix(p) => Value::Str(p.to_string_lossy().into_owned()),
        Address::Abstract(n) => Value::Str(format!("\0{}", String::from_utf8_lossy(n))),
    }
}

pub(crate) fn address_from_python(v: &Value) -> Result<Address> {
    match v {
        Value::Tuple(t) | Value::List(t) if t.len() == 2 => match (&t[0], &t[1]) {
            (Value::Str(h), Value::Int(p)) => format!("{h}:{p}").parse(),
            _ => Err(Error::Decode("bad (host, port) address".into())),
        },
        Value::Str(s) => s.parse(),
        Value::Bytes(b) if b.first() == Some(&0) => Ok(Address::Abstract(b[1..].to_vec())),
        _ => Err(Error::Decode("bad manager address".into())),
    }
}

impl Token {
    /// Python's pickle form: `Token.__new__` with state `(typeid, address, id)`.
    pub(crate) fn to_python(&self) -> Value {
        Value::Object(Box::new(Object {
            callable: Value::global("multiprocessing.managers", "Token"),
            args: vec![],
            new: true,
            state: Some(Value::Tuple(vec![
                Value::Str(self.typeid.clone()),
                address_to_python(&self.address),
                Value::Str(self.id.clone()),
            ])),
        }))
    }

    pub(crate) fn from_python(v: &Value) -> Result<Token> {
        let bad = || Error::Decode("not a multiprocessing.managers.Token".into());
        let Value::Object(o) = v else {
            return Err(bad());
        };
        let Some(Value::Tuple(t)) = &o.state else {
            return Err(bad());
        };
        match t.as_slice() {
            [Value::Str(typeid), addr, Value::Str(id)] => Ok(Token {
                typeid: typeid.clone(),
                address: address_from_python(addr)?,
                id: id.clone(),
            }),
            _ => Err(bad()),
        }
    }
}

/// Encodes a reply.
pub(crate) fn reply(result: std::result::Result<Value, Fail>) -> Vec<u8> {
    let v = match result {
        Ok(v) => Value::Tuple(vec![Value::from("#RETURN"), v]),
        Err(Fail::Raise { module, name, args }) => Value::Tuple(vec![
            Value::from("#ERROR"),
            Value::call(&module, &name, args),
        ]),
        Err(Fail::Traceback(t)) => Value::Tuple(vec![Value::from("#TRACEBACK"), Value::Str(t)]),
    };
    pickle::dumps(&v)
}

fn describe(args: &[Value]) -> String {
    args.iter()
        .map(|a| match a {
            Value::Str(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns what CPython's reducers put on the wire back into plain values:
/// `builtins.list(...)` (dict views), `builtins.set`, `frozenset`.
pub(crate) fn normalize(v: Value) -> Value {
    match v {
        Value::Object(mut o)
            if !o.new
                && o.state.is_none()
                && o.args.len() == 1
                && matches!(
                    o.callable.as_global(),
                    Some(("builtins", "list" | "set" | "frozenset"))
                ) =>
        {
            match o.args.pop().expect("one") {
                Value::List(items) | Value::Tuple(items) => {
                    Value::List(items.into_iter().map(normalize).collect())
                }
                other => normalize(other),
            }
        }
        Value::List(items) => Value::List(items.into_iter().map(normalize).collect()),
        Value::Tuple(items) => Value::Tuple(items.into_iter().map(normalize).collect()),
        Value::Dict(items) => Value::Dict(
            items
                .into_iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Decodes a reply frame into the value or the error it carries.
pub(crate) fn parse_reply(frame: &[u8]) -> Result<Value> {
    parse_reply_kind(frame).map(|r| match r {
        Reply::Return(v) | Reply::Proxy(v) => v,
    })
}

/// A reply that is not an error.
pub(crate) enum Reply {
    /// `#RETURN`: the value.
    Return(Value),
    /// `#PROXY`: `(exposed, Token)` of a new object the caller now holds
    /// one reference to.
    Proxy(Value),
}

/// Decodes a reply frame, telling `#RETURN` from `#PROXY`.
pub(crate) fn parse_reply_kind(frame: &[u8]) -> Result<Reply> {
    if let Some((kind, v)) = super::fast::decode_reply(frame) {
        // Plain values need no normalizing.
        match kind {
            "#RETURN" => return Ok(Reply::Return(v)),
            "#TRACEBACK" | "#UNSERIALIZABLE" => {
                return Err(Error::Remote {
                    kind: "RemoteError".into(),
                    message: describe(&[v]),
                });
            }
            _ => {}
        }
    }
    let v = super::fast::decode(frame)?;
    let Value::Tuple(mut t) = v else {
        return Err(Error::Decode("manager reply is not a tuple".into()));
    };
    if t.len() != 2 {
        return Err(Error::Decode("manager reply is not a pair".into()));
    }
    let payload = t.pop().expect("two");
    let Value::Str(kind) = t.pop().expect("two") else {
        return Err(Error::Decode("manager reply kind is not a str".into()));
    };
    match kind.as_str() {
        "#RETURN" => Ok(Reply::Return(normalize(payload))),
        "#PROXY" => Ok(Reply::Proxy(payload)),
        "#ERROR" => Err(match payload {
            Value::Object(o) => match o.callable.as_global() {
                Some((_, "Empty")) => Error::Empty,
                Some((_, "Full")) => Error::Full,
                Some((_, name)) => Error::Remote {
                    kind: name.to_string(),
                    message: describe(&o.args),
                },
                None => Error::Remote {
                    kind: "Exception".into(),
                    message: describe(&o.args),
                },
            },
            other => Error::Remote {
                kind: "Exception".into(),
                message: describe(&[other]),
            },
        }),
        "#TRACEBACK" | "#UNSERIALIZABLE" => Err(Error::Remote {
            kind: "RemoteError".into(),
            message: describe(&[payload]),
        }),
        other => Err(Error::Decode(format!(
            "unrecognized manager message type {other:?}"
        ))),
    }
}

/// Sends one request on `conn` and waits for its reply.
pub(crate) fn call(
    conn: &Connection,
    ident: Option<&str>,
    method: &str,
    args: Vec<Value>,
    kwds: Vec<(Value, Value)>,
) -> Result<Value> {
    let mut buf = Vec::new();
    super::fast::request(&mut buf, ident, method, &args, &kwds)?;
    conn.send_bytes(&buf[4..])?;
    conn.recv_with(|frame, _| parse_reply(frame))
}

/// Opens an authenticated connection to a manager.
pub(crate) fn connect(address: &Address, authkey: &[u8]) -> Result<Connection> {
    connect_timeout(address, authkey, CONNECT_TIMEOUT)
}

fn connect_timeout(address: &Address, authkey: &[u8], timeout: Duration) -> Result<Connection> {
    let conn = Client::connect_timeout(address, Some(authkey), timeout)?;
    conn.set_max_message_size(MAX_FRAME);
    Ok(conn)
}

/// A server-level ("special") call on a fresh connection, as CPython makes
/// them: `create`, `incref`, `decref`, `dummy`, `shutdown`, ….
pub(crate) fn special(
    address: &Address,
    authkey: &[u8],
    method: &str,
    args: Vec<Value>,
) -> Result<Value> {
    special_timeout(address, authkey, method, args, CONNECT_TIMEOUT)
}

/// [`special`] with a limit on connecting.
pub(crate) fn special_timeout(
    address: &Address,
    authkey: &[u8],
    method: &str,
    args: Vec<Value>,
    timeout: Duration,
) -> Result<Value> {
    let conn = connect_timeout(address, authkey, timeout)?;
    call(&conn, None, method, args, vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_pickle_matches_cpython() {
        // token_pickles.txt, protocol 4.
        let p: &[u8] = b"\x80\x04\x95\x58\x00\x00\x00\x00\x00\x00\x00\x8c\x18multiprocessing.managers\x94\x8c\x05Token\x94\x93\x94)\x81\x94\x8c\x09get_queue\x94\x8c\x09127.0.0.1\x94\x4d\x50\xc3\x86\x94\x8c\x0c7f0000000001\x94\x87\x94b.";
        let v = pickle::loads_objects(p).unwrap();
        let t = Token::from_python(&v).unwrap();
        assert_eq!(t.typeid, "get_queue");
        assert_eq!(t.address.to_string(), "127.0.0.1:50000");
        assert_eq!(t.id, "7f0000000001");
        assert_eq!(t.to_python(), v);
    }

    #[test]
    fn replies_round_trip() {
        assert_eq!(
            parse_reply(&reply(Ok(Value::Int(3)))).unwrap(),
            Value::Int(3)
        );
        assert!(matches!(
            parse_reply(&reply(Err(Fail::empty()))),
            Err(Error::Empty)
        ));
        let e = parse_reply(&reply(Err(Fail::key_error(Value::from("k"))))).unwrap_err();
        assert!(
            matches!(&e, Error::Remote { kind, message } if kind == "KeyError" && message == "k")
        );
        // ('#RETURN', ['a']) with keys() reduced to builtins.list (MANAGER-WIRE §4).
        let keys = b"\x80\x04\x95\x2c\x00\x00\x00\x00\x00\x00\x00\x8c\x07#RETURN\x94\x8c\x08builtins\x94\x8c\x04list\x94\x93\x94]\x94\x8c\x01a\x94a\x85\x94R\x94\x86\x94.";
        assert_eq!(
            parse_reply(keys).unwrap(),
            Value::List(vec![Value::from("a")])
        );
    }
}
