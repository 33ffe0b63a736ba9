//! The per-call hot path of the manager protocol: requests and replies
//! written straight into a reusable, pre-framed buffer, and a one-pass
//! pickle reader for frames of plain values.
//!
//! [`pickle::loads_objects`] builds a node graph so that memo references
//! keep Python's sharing, then copies it out; that is several allocations
//! per string and most of a call's CPU time. Manager frames are small
//! trees of plain values, so [`decode`] reads them with one value stack
//! and no copies. A frame it does not handle (a memo *reference*, a global,
//! an object) is handed to the general reader instead, so both give the
//! same values and the same errors.

use super::wire::Fail;
use crate::error::{Error, Result};
use crate::pickle::{self, Value, write_str, write_tuple, write_value};

/// Deepest nesting accepted (as `pickle::loads`).
const MAX_DEPTH: u32 = 500;

/// Starts a frame in `out`: a length placeholder and the pickle header.
/// Returns where the frame starts, for [`end_frame`].
fn begin_frame(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, 0x80, 2]);
    at
}

/// Ends the frame begun at `at`: the STOP opcode and the length.
fn end_frame(out: &mut Vec<u8>, at: usize) -> Result<()> {
    out.push(b'.');
    let len = out.len() - at - 4;
    let len = i32::try_from(len).map_err(|_| {
        out.truncate(at);
        Error::Encode("a manager message over 2 GiB".into())
    })?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends one framed request `(ident, method, args, kwds)` to `out`.
///
/// # Errors
/// [`Error::Encode`] for a request over 2 GiB (nothing is appended).
pub(crate) fn request(
    out: &mut Vec<u8>,
    ident: Option<&str>,
    method: &str,
    args: &[Value],
    kwds: &[(Value, Value)],
) -> Result<()> {
    let at = begin_frame(out);
    out.push(b'(');
    match ident {
        Some(s) => write_str(s, out),
        None => out.push(b'N'),
    }
    write_str(method, out);
    write_tuple(args, out);
    out.push(b'}');
    if !kwds.is_empty() {
        out.push(b'(');
        for (k, v) in kwds {
            write_value(k, out);
            write_value(v, out);
        }
        out.push(b'u');
    }
    out.push(b't');
    end_frame(out, at)
}

/// Appends one framed reply to `out`. A reply over 2 GiB becomes an
/// `#UNSERIALIZABLE` reply (as CPython does when a result does not pickle).
pub(crate) fn reply(out: &mut Vec<u8>, result: std::result::Result<Value, Fail>) {
    let at = begin_frame(out);
    match result {
        Ok(v) => {
            write_str("#RETURN", out);
            write_value(&v, out);
            out.push(0x86);
        }
        Err(Fail::Raise { module, name, args }) => {
            write_str("#ERROR", out);
            write_value(&Value::call(&module, &name, args), out);
            out.push(0x86);
        }
        Err(Fail::Traceback(t)) => {
            write_str("#TRACEBACK", out);
            write_str(&t, out);
            out.push(0x86);
        }
    }
    if end_frame(out, at).is_err() {
        let at = begin_frame(out);
        write_str("#UNSERIALIZABLE", out);
        write_str("the result is over 2 GiB", out);
        out.push(0x86);
        let _ = end_frame(out, at);
    }
}

/// Appends one framed `('#PROXY', (exposed, token))` reply to `out`:
/// the result is a new object in the server, to be used through a proxy.
pub(crate) fn proxy_reply(out: &mut Vec<u8>, payload: &Value) {
    let at = begin_frame(out);
    write_str("#PROXY", out);
    write_value(payload, out);
    out.push(0x86);
    if end_frame(out, at).is_err() {
        reply(
            out,
            Err(Fail::Traceback("the proxy reply is over 2 GiB".into())),
        );
    }
}

/// Why the one-pass reader gave up: the frame needs the general reader.
struct Fallback;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Fallback> {
        let s = self
            .data
            .get(self.pos..self.pos.checked_add(n).ok_or(Fallback)?)
            .ok_or(Fallback)?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> std::result::Result<u8, Fallback> {
        Ok(self.take(1)?[0])
    }

    fn arr<const N: usize>(&mut self) -> std::result::Result<[u8; N], Fallback> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
}

/// The value stack, with how deep each value nests beside it.
#[derive(Default)]
struct Stack {
    values: Vec<Value>,
    depths: Vec<u32>,
}

impl Stack {
    fn push(&mut self, v: Value, depth: u32) -> std::result::Result<(), Fallback> {
        if depth > MAX_DEPTH {
            return Err(Fallback);
        }
        self.values.push(v);
        self.depths.push(depth);
        Ok(())
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    /// How deep a container of the values from `from` on nests.
    fn depth_over(&self, from: usize) -> u32 {
        1 + self.depths[from..].iter().copied().max().unwrap_or(0)
    }

    /// The values from `from` on, as a new tuple on the stack.
    fn tuple(&mut self, from: usize) -> std::result::Result<(), Fallback> {
        let depth = self.depth_over(from);
        let items: Vec<Value> = self.values.drain(from..).collect();
        self.depths.truncate(from);
        self.push(Value::Tuple(items), depth)
    }

    /// Moves the values from `from` on into the list or dict below them.
    fn extend(&mut self, from: usize, dict: bool) -> std::result::Result<(), Fallback> {
        let depth = self.depth_over(from);
        let (head, tail) = self.values.split_at_mut(from);
        let target = head.last_mut().ok_or(Fallback)?;
        let take = |v: &mut Value| std::mem::replace(v, Value::None);
        match (target, dict) {
            (Value::List(l), false) => l.extend(tail.iter_mut().map(take)),
            (Value::Dict(d), true) if tail.len() % 2 == 0 => {
                d.extend(tail.chunks_exact_mut(2).map(|kv| {
                    let (k, v) = kv.split_at_mut(1);
                    (take(&mut k[0]), take(&mut v[0]))
                }))
            }
            _ => return Err(Fallback),
        }
        self.values.truncate(from);
        self.depths.truncate(from);
        let d = &mut self.depths[from - 1];
        *d = (*d).max(depth);
        if *d > MAX_DEPTH {
            return Err(Fallback);
        }
        Ok(())
    }
}

/// The one-pass reader: plain values only, memo stores ignored, anything
/// else (memo loads, globals, objects, errors) is a [`Fallback`].
fn decode_plain(data: &[u8]) -> std::result::Result<Value, Fallback> {
    let mut r = Reader { data, pos: 0 };
    let mut stack = Stack::default();
    let mut marks: Vec<usize> = Vec::new();
    run(&mut r, &mut stack, &mut marks, End::Stop)?;
    if r.pos != data.len() || stack.len() != 1 || !marks.is_empty() {
        return Err(Fallback);
    }
    Ok(stack.values.pop().expect("one"))
}

/// Reads a string opcode and the memo store that may follow it.
fn str_op<'a>(r: &mut Reader<'a>) -> std::result::Result<&'a str, Fallback> {
    let len = match r.u8()? {
        0x8c => usize::from(r.u8()?),
        b'X' => u32::from_le_bytes(r.arr()?) as usize,
        _ => return Err(Fallback),
    };
    let s = std::str::from_utf8(r.take(len)?).map_err(|_| Fallback)?;
    skip_memo(r)?;
    Ok(s)
}

/// Reads a string opcode into `into`; when it holds the same text already
/// (the same object and method as the last request), nothing is checked
/// or copied.
fn str_into(r: &mut Reader<'_>, into: &mut String) -> std::result::Result<(), Fallback> {
    let at = r.pos;
    let len = match r.u8()? {
        0x8c => usize::from(r.u8()?),
        b'X' => u32::from_le_bytes(r.arr()?) as usize,
        _ => return Err(Fallback),
    };
    if r.take(len)? == into.as_bytes() {
        return skip_memo(r);
    }
    r.pos = at;
    let s = str_op(r)?;
    into.clear();
    into.push_str(s);
    Ok(())
}

fn skip_memo(r: &mut Reader<'_>) -> std::result::Result<(), Fallback> {
    loop {
        match r.data.get(r.pos) {
            Some(0x94) => r.pos += 1,
            Some(b'q') => {
                r.take(2)?;
            }
            Some(b'r') => {
                r.take(5)?;
            }
            _ => return Ok(()),
        }
    }
}

/// The parts of a request `(ident, method, args, kwds)` that are read
/// into reused buffers.
pub(crate) struct RequestHead {
    /// Whether `ident` is a str (else `None`: a server-level call).
    pub(crate) has_ident: bool,
    pub(crate) args: Vec<Value>,
    pub(crate) kwds: Vec<(Value, Value)>,
}

/// The reader's stacks, kept between requests so that reading one
/// allocates only for the values it holds.
#[derive(Default)]
pub(crate) struct Scratch {
    stack: Stack,
    marks: Vec<usize>,
}

/// Reads a request of plain values in one pass, its ident and method
/// into `ident` and `method` (no allocation once they have grown).
/// `None` when the frame needs the general reader.
pub(crate) fn decode_request(
    data: &[u8],
    ident: &mut String,
    method: &mut String,
    scratch: &mut Scratch,
) -> Option<RequestHead> {
    if scratch.stack.values.capacity() > 4096 {
        // A big request (an `update`) grew them: do not keep that.
        *scratch = Scratch::default();
    }
    let Scratch { stack, marks } = scratch;
    stack.values.clear();
    stack.depths.clear();
    marks.clear();
    let mut r = Reader { data, pos: 0 };
    let head = (|| -> std::result::Result<RequestHead, Fallback> {
        if r.u8()? != 0x80 || !(2..=5).contains(&r.u8()?) {
            return Err(Fallback);
        }
        if r.data.get(r.pos) == Some(&0x95) {
            r.take(9)?;
        }
        if r.u8()? != b'(' {
            return Err(Fallback);
        }
        let has_ident = if r.data.get(r.pos) == Some(&b'N') {
            r.pos += 1;
            ident.clear();
            false
        } else {
            str_into(&mut r, ident)?;
            true
        };
        str_into(&mut r, method)?;
        run(&mut r, stack, marks, End::Tuple)?;
        skip_memo(&mut r)?;
        if r.u8()? != b'.' || r.pos != data.len() || stack.len() != 2 {
            return Err(Fallback);
        }
        let kwds = stack.values.pop().expect("two");
        let args = stack.values.pop().expect("two");
        match (args, kwds) {
            (Value::Tuple(args), Value::Dict(kwds)) => Ok(RequestHead {
                has_ident,
                args,
                kwds,
            }),
            _ => Err(Fallback),
        }
    })();
    head.ok()
}

/// Where [`run`] stops.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// At STOP.
    Stop,
    /// At a TUPLE with no mark open: the end of a request, whose MARK the
    /// caller read.
    Tuple,
    /// At a TUPLE2 over the one value on the stack: the end of a reply,
    /// whose kind the caller read.
    Pair,
}

/// Reads a reply `(kind, value)` of plain values in one pass: the kind
/// (`"#RETURN"`, `"#ERROR"`, …) and the value. `None` when the frame
/// needs the general reader.
pub(crate) fn decode_reply(data: &[u8]) -> Option<(&str, Value)> {
    let mut r = Reader { data, pos: 0 };
    let reply = (|| -> std::result::Result<(&str, Value), Fallback> {
        if r.u8()? != 0x80 || !(2..=5).contains(&r.u8()?) {
            return Err(Fallback);
        }
        if r.data.get(r.pos) == Some(&0x95) {
            r.take(9)?;
        }
        let kind = str_op(&mut r)?;
        // Most replies are one scalar: read it without a stack.
        let at = r.pos;
        let op = r.u8()?;
        if let Some(v) = scalar(op, &mut r)? {
            skip_memo(&mut r)?;
            if r.data.get(r.pos) == Some(&0x86) {
                r.pos += 1;
                skip_memo(&mut r)?;
                if r.u8()? != b'.' || r.pos != data.len() {
                    return Err(Fallback);
                }
                return Ok((kind, v));
            }
        }
        r.pos = at;
        let mut stack = Stack::default();
        let mut marks = Vec::new();
        run(&mut r, &mut stack, &mut marks, End::Pair)?;
        skip_memo(&mut r)?;
        if r.u8()? != b'.' || r.pos != data.len() {
            return Err(Fallback);
        }
        Ok((kind, stack.values.pop().expect("one")))
    })();
    reply.ok()
}

/// Reads the scalar (None, bool, int, float, str, bytes) that opcode
/// `op` starts; `None` when `op` is not one.
fn scalar(op: u8, r: &mut Reader<'_>) -> std::result::Result<Option<Value>, Fallback> {
    Ok(Some(match op {
        b'N' => Value::None,
        0x88 => Value::Bool(true),
        0x89 => Value::Bool(false),
        b'K' => Value::Int(r.u8()?.into()),
        b'M' => Value::Int(u16::from_le_bytes(r.arr()?).into()),
        b'J' => Value::Int(i32::from_le_bytes(r.arr()?).into()),
        0x8a => {
            let n = usize::from(r.u8()?);
            let b = r.take(n)?;
            if n > 8 {
                return Err(Fallback);
            }
            let fill = if b.last().is_some_and(|x| x & 0x80 != 0) {
                0xff
            } else {
                0
            };
            let mut full = [fill; 8];
            full[..n].copy_from_slice(b);
            Value::Int(i64::from_le_bytes(full))
        }
        b'G' => Value::Float(f64::from_be_bytes(r.arr()?)),
        0x8c | b'X' | 0x8d | b'C' | b'B' | 0x8e => {
            let len = match op {
                0x8c | b'C' => u64::from(r.u8()?),
                b'X' | b'B' => u64::from(u32::from_le_bytes(r.arr()?)),
                _ => u64::from_le_bytes(r.arr()?),
            };
            let b = r.take(usize::try_from(len).map_err(|_| Fallback)?)?;
            if matches!(op, 0x8c | b'X' | 0x8d) {
                Value::Str(std::str::from_utf8(b).map_err(|_| Fallback)?.to_owned())
            } else {
                Value::Bytes(b.to_vec())
            }
        }
        _ => return Ok(None),
    }))
}

/// Runs opcodes until `end`.
fn run(
    r: &mut Reader<'_>,
    stack: &mut Stack,
    marks: &mut Vec<usize>,
    end: End,
) -> std::result::Result<(), Fallback> {
    loop {
        let op = r.u8()?;
        if let Some(v) = scalar(op, r)? {
            stack.push(v, 0)?;
            continue;
        }
        match op {
            0x80 => {
                if !(2..=5).contains(&r.u8()?) {
                    return Err(Fallback);
                }
                continue;
            }
            0x95 => {
                r.take(8)?;
                continue;
            }
            b'.' => break,
            // Memo stores: nothing refers back unless a memo load follows,
            // which falls back.
            0x94 => continue,
            b'q' => {
                r.take(1)?;
                continue;
            }
            b'r' => {
                r.take(4)?;
                continue;
            }
            b']' | b')' | b'}' => {
                stack.push(
                    match op {
                        b']' => Value::List(Vec::new()),
                        b')' => Value::Tuple(Vec::new()),
                        _ => Value::Dict(Vec::new()),
                    },
                    1,
                )?;
                continue;
            }
            b'(' => {
                marks.push(stack.len());
                continue;
            }
            b't' if end == End::Tuple && marks.is_empty() => return Ok(()),
            // A TUPLE2 over one value cannot be part of it.
            0x86 if end == End::Pair && marks.is_empty() && stack.len() == 1 => return Ok(()),
            b't' | 0x85 | 0x86 | 0x87 => {
                let from = if op == b't' {
                    marks.pop().ok_or(Fallback)?
                } else {
                    stack
                        .len()
                        .checked_sub(usize::from(op - 0x84))
                        .ok_or(Fallback)?
                };
                if from > stack.len() || marks.last().is_some_and(|&m| m > from) {
                    return Err(Fallback);
                }
                stack.tuple(from)?;
                continue;
            }
            b'a' | b'e' | b's' | b'u' => {
                let from = match op {
                    b'a' => stack.len().checked_sub(1).ok_or(Fallback)?,
                    b's' => stack.len().checked_sub(2).ok_or(Fallback)?,
                    _ => marks.pop().ok_or(Fallback)?,
                };
                if from == 0 || from > stack.len() || marks.last().is_some_and(|&m| m > from) {
                    return Err(Fallback);
                }
                stack.extend(from, matches!(op, b's' | b'u'))?;
                continue;
            }
            _ => return Err(Fallback),
        }
    }
    if end != End::Stop {
        // STOP inside an unfinished request or reply.
        return Err(Fallback);
    }
    Ok(())
}

/// Decodes a manager frame: plain values in one pass, anything else with
/// [`pickle::loads_objects`].
///
/// # Errors
/// As for [`pickle::loads_objects`].
pub(crate) fn decode(data: &[u8]) -> Result<Value> {
    match decode_plain(data) {
        Ok(v) => Ok(v),
        Err(Fallback) => pickle::loads_objects(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(v: &Value) {
        let mut out = Vec::new();
        let at = begin_frame(&mut out);
        write_value(v, &mut out);
        end_frame(&mut out, at).unwrap();
        let body = &out[4..];
        assert_eq!(&decode_plain(body).ok().unwrap(), v);
        assert_eq!(&pickle::loads_objects(body).unwrap(), v);
    }

    #[test]
    fn plain_values_round_trip_in_one_pass() {
        for n in [
            0,
            1,
            255,
            256,
            65535,
            65536,
            -1,
            -129,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            round(&Value::Int(n));
        }
        round(&Value::Tuple(vec![]));
        round(&Value::Tuple(vec![
            Value::Int(1),
            Value::Tuple(vec![Value::None; 2]),
        ]));
        round(&Value::Tuple(vec![Value::from("x"); 5]));
        round(&Value::List(vec![
            Value::Bytes(vec![1; 300]),
            Value::Str("é".repeat(200)),
            Value::Float(2.5),
            Value::Bool(true),
            Value::Dict(vec![(Value::from("k"), Value::List(vec![]))]),
        ]));
        let call = Value::call(
            "builtins",
            "slice",
            vec![Value::Int(1), Value::None, Value::None],
        );
        let mut out = Vec::new();
        request(
            &mut out,
            Some("ab"),
            "__getitem__",
            std::slice::from_ref(&call),
            &[],
        )
        .unwrap();
        assert_eq!(
            decode(&out[4..]).unwrap(),
            Value::Tuple(vec![
                Value::from("ab"),
                Value::from("__getitem__"),
                Value::Tuple(vec![call]),
                Value::Dict(vec![]),
            ])
        );
    }

    #[test]
    fn cpython_frames_with_memo_stores_decode_in_one_pass() {
        // ('7f46a0c00c00', '__setitem__', ('a', 1), {}) from CPython 3.11.
        let p = b"\x80\x04\x95\x2b\x00\x00\x00\x00\x00\x00\x00(\x8c\x0c7f46a0c00c00\x94\x8c\x0b__setitem__\x94\x8c\x01a\x94K\x01\x86\x94}\x94t\x94.";
        let v = decode_plain(p).ok().unwrap();
        assert_eq!(v, pickle::loads_objects(p).unwrap());
    }

    #[test]
    fn requests_are_read_into_reused_names() {
        let (mut ident, mut method) = (String::new(), String::new());
        let mut out = Vec::new();
        let kw = [(Value::from("block"), Value::Bool(false))];
        request(&mut out, Some("7f01"), "get", &[Value::Int(1)], &kw).unwrap();
        let h =
            decode_request(&out[4..], &mut ident, &mut method, &mut Scratch::default()).unwrap();
        assert!(h.has_ident);
        assert_eq!((ident.as_str(), method.as_str()), ("7f01", "get"));
        // The same names again are kept; others replace them.
        let h =
            decode_request(&out[4..], &mut ident, &mut method, &mut Scratch::default()).unwrap();
        assert_eq!(
            (ident.as_str(), method.as_str(), h.args.len()),
            ("7f01", "get", 1)
        );
        out.clear();
        request(&mut out, Some("7f0"), "getx", &[], &[]).unwrap();
        decode_request(&out[4..], &mut ident, &mut method, &mut Scratch::default()).unwrap();
        assert_eq!((ident.as_str(), method.as_str()), ("7f0", "getx"));
        assert_eq!((h.args, h.kwds), (vec![Value::Int(1)], kw.to_vec()));
        // CPython 3.11's frames, with memo stores.
        let p = b"\x80\x04\x95\x2b\x00\x00\x00\x00\x00\x00\x00(\x8c\x0c7f46a0c00c00\x94\x8c\x0b__setitem__\x94\x8c\x01a\x94K\x01\x86\x94}\x94t\x94.";
        let h = decode_request(p, &mut ident, &mut method, &mut Scratch::default()).unwrap();
        assert_eq!(
            (ident.as_str(), method.as_str()),
            ("7f46a0c00c00", "__setitem__")
        );
        assert_eq!(h.args, [Value::from("a"), Value::Int(1)]);
        let p = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00(N\x8c\x05dummy\x94)}\x94t\x94.";
        let h = decode_request(p, &mut ident, &mut method, &mut Scratch::default()).unwrap();
        assert!(!h.has_ident && h.args.is_empty() && h.kwds.is_empty());
        assert_eq!(method, "dummy");
        // Not a request: left to the general path, which reports it.
        for bad in [
            &b"\x80\x02(N\x8c\x01m)}."[..],
            b"\x80\x02(N\x8c\x01m})t.",
            b"\x80\x02(N\x8c\x01m)}tK\x01.",
            b"\x80\x02(NK\x01)}t.",
            b"\x80\x02(N\x8c\x05m",
        ] {
            assert!(
                decode_request(bad, &mut ident, &mut method, &mut Scratch::default()).is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn replies_are_read_in_one_pass() {
        for v in [
            Value::Int(1),
            Value::Tuple(vec![Value::Int(1), Value::Int(2)]),
            Value::Tuple(vec![Value::Tuple(vec![Value::None]); 2]),
            Value::List(vec![Value::Tuple(vec![Value::Int(1), Value::Int(2)])]),
        ] {
            let mut out = Vec::new();
            reply(&mut out, Ok(v.clone()));
            assert_eq!(decode_reply(&out[4..]), Some(("#RETURN", v)));
        }
        // ('#RETURN', 1) from CPython 3.11.
        let p = b"\x80\x04\x95\x0f\x00\x00\x00\x00\x00\x00\x00\x8c\x07#RETURN\x94K\x01\x86\x94.";
        assert_eq!(decode_reply(p), Some(("#RETURN", Value::Int(1))));
        // Errors and proxies hold objects: the general reader's.
        let mut out = Vec::new();
        reply(&mut out, Err(Fail::empty()));
        assert_eq!(decode_reply(&out[4..]), None);
        assert_eq!(decode_reply(b"\x80\x02\x8c\x01xK\x01K\x02\x86."), None);
    }

    #[test]
    fn what_it_cannot_read_goes_to_the_general_reader() {
        // A memo load: [x, x] sharing one list.
        let p = b"\x80\x04]\x94(]\x94h\x01e.";
        assert!(decode_plain(p).is_err());
        assert_eq!(decode(p).unwrap(), pickle::loads_objects(p).unwrap());
        // Garbage gets the general reader's error.
        assert!(decode(b"\x80\x04(t").is_err());
        assert!(decode(b"\x80\x02K").is_err());
        // Too deep.
        let mut deep = vec![0x80, 2];
        deep.extend(std::iter::repeat_n(b']', 600));
        deep.extend(std::iter::repeat_n(b'a', 599));
        deep.push(b'.');
        assert!(decode(&deep).is_err());
    }
}
