//! Python pickles of plain values, to exchange data with Python's
//! `Connection.send`/`recv` over a [`Listener`](crate::Listener) or
//! [`Client`](crate::Client) connection.
//!
//! Only plain data is understood: `None`, `bool`, `int` (within `i64`),
//! `float`, `str`, `bytes`, `list`, `tuple` and `dict`. [`dumps`] writes
//! pickle protocol 3, which every Python 3 reads; [`loads`] reads protocols 2
//! to 5 as Python writes them for such values (memo references and frames
//! included). Anything else — class instances, sets, `bytearray`, globals —
//! is refused with [`Error::Decode`]: no code is ever run and nothing is
//! looked up by name, so loading an untrusted pickle here is safe, unlike in
//! Python.
//!
//! # Examples
//! ```
//! use multiproc::pickle::{self, Value};
//!
//! let v = Value::Dict(vec![(Value::from("answer"), Value::Int(42))]);
//! let bytes = pickle::dumps(&v);
//! assert_eq!(pickle::loads(&bytes)?, v);
//! # Ok::<(), multiproc::Error>(())
//! ```

use crate::error::{Error, Result};
use std::collections::HashMap;

/// A plain Python value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` that fits in an `i64`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// A `list`.
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A reference to a Python global (a class or function) by name, as the
    /// `GLOBAL`/`STACK_GLOBAL` opcodes write it. Only [`loads_objects`]
    /// produces it; it is data, never looked up or called.
    Global(Box<Global>),
    /// An object a pickle rebuilds by calling `callable(*args)` (`REDUCE`,
    /// or `NEWOBJ` for `cls.__new__(cls, *args)`), then applying `state`
    /// (`BUILD`) when present. Only [`loads_objects`] produces it; nothing is
    /// called — it is kept as data, e.g. Python's exceptions and the tokens
    /// and proxies of `multiprocessing.managers`.
    Object(Box<Object>),
}

/// A reference to a Python global by name ([`Value::Global`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    /// The module, e.g. `"builtins"`.
    pub module: String,
    /// The qualified name, e.g. `"KeyError"`.
    pub name: String,
}

/// An object rebuilt by a call ([`Value::Object`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// What is called: usually a [`Value::Global`].
    pub callable: Value,
    /// The positional arguments.
    pub args: Vec<Value>,
    /// True for `NEWOBJ` (`cls.__new__(cls, *args)`), false for `REDUCE`.
    pub new: bool,
    /// The `BUILD` state, if any.
    pub state: Option<Value>,
}

impl Value {
    /// A [`Value::Global`] naming `module.name`.
    pub fn global(module: &str, name: &str) -> Value {
        Value::Global(Box::new(Global {
            module: module.to_string(),
            name: name.to_string(),
        }))
    }

    /// The global's `(module, name)` when this is a [`Value::Global`].
    pub fn as_global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global(g) => Some((&g.module, &g.name)),
            _ => None,
        }
    }

    /// A call of the global `module.name` with `args` (`REDUCE`), the form of
    /// Python's exceptions, e.g. `Value::call("builtins", "KeyError",
    /// vec![Value::from("k")])`.
    pub fn call(module: &str, name: &str, args: Vec<Value>) -> Value {
        Value::Object(Box::new(Object {
            callable: Value::global(module, name),
            args,
            new: false,
            state: None,
        }))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

/// Encodes `value` as a pickle (protocol 3), for Python's `pickle.loads` or
/// a Python `Connection.recv()`.
///
/// # Examples
/// ```
/// use multiproc::pickle::{dumps, Value};
///
/// // What Python's pickle.dumps(None, protocol=3) gives.
/// assert_eq!(dumps(&Value::None), b"\x80\x03N.");
/// ```
pub fn dumps(value: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 3];
    write_value(value, &mut out);
    out.push(b'.');
    out
}

/// Writes one value's opcodes (no header, no STOP): the short forms
/// where protocols 2 and 3 have them.
pub(crate) fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::None => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::Int(n) => write_int(*n, out),
        Value::Float(f) => {
            out.push(b'G');
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => write_str(s, out),
        Value::Bytes(b) => {
            if let Ok(n) = u8::try_from(b.len()) {
                out.extend_from_slice(&[b'C', n]);
            } else {
                out.push(b'B');
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            }
            out.extend_from_slice(b);
        }
        Value::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                items.iter().for_each(|i| write_value(i, out));
                out.push(b'e');
            }
        }
        Value::Tuple(items) => write_tuple(items, out),
        Value::Dict(items) => {
            out.push(b'}');
            if !items.is_empty() {
                out.push(b'(');
                for (k, v) in items {
                    write_value(k, out);
                    write_value(v, out);
                }
                out.push(b'u');
            }
        }
        Value::Global(g) => {
            out.push(b'c');
            out.extend_from_slice(g.module.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(g.name.as_bytes());
            out.push(b'\n');
        }
        Value::Object(o) => {
            write_value(&o.callable, out);
            write_tuple(&o.args, out);
            out.push(if o.new { 0x81 } else { b'R' });
            if let Some(st) = &o.state {
                write_value(st, out);
                out.push(b'b');
            }
        }
    }
}

/// Writes a tuple of `items` (TUPLE1..3 for short ones).
pub(crate) fn write_tuple(items: &[Value], out: &mut Vec<u8>) {
    match items.len() {
        0 => out.push(b')'),
        n @ 1..=3 => {
            items.iter().for_each(|i| write_value(i, out));
            out.push(0x84 + n as u8);
        }
        _ => {
            out.push(b'(');
            items.iter().for_each(|i| write_value(i, out));
            out.push(b't');
        }
    }
}

/// Writes a string (BINUNICODE).
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_int(n: i64, out: &mut Vec<u8>) {
    if (0..=0xff).contains(&n) {
        out.extend_from_slice(&[b'K', n as u8]);
    } else if (0..=0xffff).contains(&n) {
        out.push(b'M');
        out.extend_from_slice(&(n as u16).to_le_bytes());
    } else if let Ok(n) = i32::try_from(n) {
        out.push(b'J');
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        // LONG1: little-endian two's complement, as few bytes as keep the sign.
        let bytes = n.to_le_bytes();
        let mut len = 8;
        while len > 1 {
            let top = bytes[len - 1];
            let next_sign = bytes[len - 2] & 0x80;
            if (top == 0 && next_sign == 0) || (top == 0xff && next_sign != 0) {
                len -= 1;
            } else {
                break;
            }
        }
        out.extend_from_slice(&[0x8a, len as u8]);
        out.extend_from_slice(&bytes[..len]);
    }
}

/// A value under construction; containers refer to other nodes so that
/// memo references keep seeing later appends, as in Python.
enum Node {
    Leaf(Value),
    Object {
        callable: usize,
        args: usize,
        new: bool,
        state: Option<usize>,
    },
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    /// `EMPTY_SET` + `ADDITEMS`, or `FROZENSET`: read (objects only) as
    /// Python's protocol-2 form, `builtins.set([...])`.
    Set {
        items: Vec<usize>,
        frozen: bool,
    },
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(bad(format!(
                "truncated pickle: {n} bytes announced, {left} left"
            )));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N as u64)?.try_into().expect("N bytes"))
    }
}

fn bad(why: impl Into<String>) -> Error {
    Error::Decode(why.into())
}

/// Decodes a pickle of plain values (see the [module docs](self)).
///
/// # Errors
/// [`Error::Decode`] for truncated or malformed data, for objects other than
/// plain values, for integers outside `i64`, and for structures that nest
/// deeper than 500 levels or would expand to far more values than the input
/// holds (shared references used as a compression bomb).
///
/// # Examples
/// ```
/// use multiproc::pickle::{loads, Value};
///
/// // pickle.dumps([1, 'a', None], protocol=4) from Python 3.11.
/// let p = b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01\x8c\x01a\x94Ne.";
/// let v = loads(p)?;
/// assert_eq!(v, Value::List(vec![Value::Int(1), Value::from("a"), Value::None]));
/// assert!(loads(b"\x80\x04cos\nsystem\n.").is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn loads(data: &[u8]) -> Result<Value> {
    loads_inner(data, false)
}

/// Like [`loads`], but also accepts references to globals and the objects
/// rebuilt from them (`GLOBAL`, `STACK_GLOBAL`, `REDUCE`, `NEWOBJ`, `BUILD`),
/// as [`Value::Global`] and [`Value::Object`]. Nothing is imported or
/// called, so this is as safe as [`loads`]; the caller decides what such
/// values mean (Python's manager protocol carries exceptions and tokens this
/// way).
///
/// # Errors
/// As for [`loads`].
///
/// # Examples
/// ```
/// use multiproc::pickle::{dumps, loads_objects, Value};
///
/// let e = Value::call("builtins", "KeyError", vec![Value::from("k")]);
/// assert_eq!(loads_objects(&dumps(&e))?, e);
/// assert!(multiproc::pickle::loads(&dumps(&e)).is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn loads_objects(data: &[u8]) -> Result<Value> {
    loads_inner(data, true)
}

fn loads_inner(data: &[u8], objects: bool) -> Result<Value> {
    let mut r = Reader { data, pos: 0 };
    let mut nodes: Vec<Node> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u64, usize> = HashMap::new();
    let push_leaf = |nodes: &mut Vec<Node>, stack: &mut Vec<usize>, v: Value| {
        nodes.push(Node::Leaf(v));
        stack.push(nodes.len() - 1);
    };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if !(2..=5).contains(&proto) {
                    return Err(bad(format!("unsupported pickle protocol {proto}")));
                }
            }
            0x95 => {
                r.le::<8>()?; // FRAME: a length hint only
            }
            b'.' => break,
            b'N' => push_leaf(&mut nodes, &mut stack, Value::None),
            0x88 => push_leaf(&mut nodes, &mut stack, Value::Bool(true)),
            0x89 => push_leaf(&mut nodes, &mut stack, Value::Bool(false)),
            b'K' => {
                let n = r.u8()?;
                push_leaf(&mut nodes, &mut stack, Value::Int(n.into()))
            }
            b'M' => {
                let n = u16::from_le_bytes(r.le()?);
                push_leaf(&mut nodes, &mut stack, Value::Int(n.into()))
            }
            b'J' => {
                let n = i32::from_le_bytes(r.le()?);
                push_leaf(&mut nodes, &mut stack, Value::Int(n.into()))
            }
            0x8a | 0x8b => {
                let len = if op == 0x8a {
                    u64::from(r.u8()?)
                } else {
                    u64::from(u32::from_le_bytes(r.le()?))
                };
                let b = r.take(len)?;
                push_leaf(&mut nodes, &mut stack, Value::Int(long(b)?))
            }
            b'G' => {
                let f = f64::from_be_bytes(r.le()?);
                push_leaf(&mut nodes, &mut stack, Value::Float(f))
            }
            0x8c | b'X' | 0x8d | b'C' | b'B' | 0x8e => {
                let len = match op {
                    0x8c | b'C' => u64::from(r.u8()?),
                    b'X' | b'B' => u64::from(u32::from_le_bytes(r.le()?)),
                    _ => u64::from_le_bytes(r.le()?),
                };
                let b = r.take(len)?;
                let v = if matches!(op, 0x8c | b'X' | 0x8d) {
                    let s = std::str::from_utf8(b).map_err(|e| bad(format!("bad str: {e}")))?;
                    Value::Str(s.to_string())
                } else {
                    Value::Bytes(b.to_vec())
                };
                push_leaf(&mut nodes, &mut stack, v)
            }
            b']' | b')' | b'}' => {
                nodes.push(match op {
                    b']' => Node::List(Vec::new()),
                    b')' => Node::Tuple(Vec::new()),
                    _ => Node::Dict(Vec::new()),
                });
                stack.push(nodes.len() - 1);
            }
            b'(' => marks.push(stack.len()),
            b'a' | b'e' | b's' | b'u' => {
                let items = if matches!(op, b'a' | b's') {
                    let n = if op == b'a' { 1 } else { 2 };
                    if stack.len() < n + 1 {
                        return Err(bad("pickle stack underflow"));
                    }
                    stack.split_off(stack.len() - n)
                } else {
                    let m = marks.pop().ok_or_else(|| bad("pickle mark missing"))?;
                    if m == 0 || m > stack.len() {
                        return Err(bad("pickle stack underflow"));
                    }
                    stack.split_off(m)
                };
                let target = *stack.last().expect("checked above");
                match (&mut nodes[target], op) {
                    (Node::List(l), b'a' | b'e') => l.extend(items),
                    (Node::Dict(d), b's' | b'u') if items.len() % 2 == 0 => {
                        d.extend(items.chunks(2).map(|kv| (kv[0], kv[1])))
                    }
                    _ => return Err(bad("append or setitem on the wrong kind of object")),
                }
            }
            b't' | 0x85 | 0x86 | 0x87 => {
                let items = if op == b't' {
                    let m = marks.pop().ok_or_else(|| bad("pickle mark missing"))?;
                    if m > stack.len() {
                        return Err(bad("pickle stack underflow"));
                    }
                    stack.split_off(m)
                } else {
                    let n = usize::from(op - 0x84);
                    if stack.len() < n {
                        return Err(bad("pickle stack underflow"));
                    }
                    stack.split_off(stack.len() - n)
                };
                nodes.push(Node::Tuple(items));
                stack.push(nodes.len() - 1);
            }
            0x94 | b'q' | b'r' => {
                let key = match op {
                    0x94 => memo.len() as u64,
                    b'q' => u64::from(r.u8()?),
                    _ => u64::from(u32::from_le_bytes(r.le()?)),
                };
                let top = *stack
                    .last()
                    .ok_or_else(|| bad("memoize on an empty stack"))?;
                memo.insert(key, top);
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    u64::from(r.u8()?)
                } else {
                    u64::from(u32::from_le_bytes(r.le()?))
                };
                let node = *memo
                    .get(&key)
                    .ok_or_else(|| bad(format!("memo {key} missing")))?;
                stack.push(node);
            }
            // EMPTY_SET, FROZENSET (the items above the mark), ADDITEMS
            // (the items above the mark into the set below it).
            0x8f if objects => {
                nodes.push(Node::Set {
                    items: Vec::new(),
                    frozen: false,
                });
                stack.push(nodes.len() - 1);
            }
            0x90 | 0x91 if objects => {
                let m = marks.pop().ok_or_else(|| bad("pickle mark missing"))?;
                if m > stack.len() || (op == 0x90 && m == 0) {
                    return Err(bad("pickle stack underflow"));
                }
                let items = stack.split_off(m);
                if op == 0x91 {
                    nodes.push(Node::Set {
                        items,
                        frozen: true,
                    });
                    stack.push(nodes.len() - 1);
                } else {
                    let target = *stack.last().expect("checked above");
                    match &mut nodes[target] {
                        Node::Set {
                            items: set,
                            frozen: false,
                        } => set.extend(items),
                        _ => return Err(bad("ADDITEMS on something that is not a set")),
                    }
                }
            }
            b'c' if objects => {
                let mut line = || -> Result<String> {
                    let rest = &r.data[r.pos..];
                    let n = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or_else(|| bad("GLOBAL without a newline"))?;
                    let s = std::str::from_utf8(&rest[..n])
                        .map_err(|e| bad(format!("bad global name: {e}")))?
                        .to_string();
                    r.pos += n + 1;
                    Ok(s)
                };
                let module = line()?;
                let name = line()?;
                push_leaf(
                    &mut nodes,
                    &mut stack,
                    Value::Global(Box::new(Global { module, name })),
                )
            }
            0x93 if objects => {
                if stack.len() < 2 {
                    return Err(bad("pickle stack underflow"));
                }
                let parts = stack.split_off(stack.len() - 2);
                let text = |i: usize| match &nodes[i] {
                    Node::Leaf(Value::Str(s)) => Ok(s.clone()),
                    _ => Err(bad("STACK_GLOBAL needs two strings")),
                };
                let (module, name) = (text(parts[0])?, text(parts[1])?);
                push_leaf(
                    &mut nodes,
                    &mut stack,
                    Value::Global(Box::new(Global { module, name })),
                )
            }
            b'R' | 0x81 if objects => {
                if stack.len() < 2 {
                    return Err(bad("pickle stack underflow"));
                }
                let parts = stack.split_off(stack.len() - 2);
                if !matches!(nodes[parts[1]], Node::Tuple(_)) {
                    return Err(bad("REDUCE/NEWOBJ arguments are not a tuple"));
                }
                nodes.push(Node::Object {
                    callable: parts[0],
                    args: parts[1],
                    new: op == 0x81,
                    state: None,
                });
                stack.push(nodes.len() - 1);
            }
            b'b' if objects => {
                if stack.len() < 2 {
                    return Err(bad("pickle stack underflow"));
                }
                let st = stack.pop().expect("checked");
                let target = *stack.last().expect("checked");
                match &mut nodes[target] {
                    Node::Object { state, .. } if state.is_none() => *state = Some(st),
                    _ => return Err(bad("BUILD on something that is not an object")),
                }
            }
            other => {
                return Err(bad(format!(
                    "pickle opcode {other:#04x} is not part of plain data (None, bool, int, \
                     float, str, bytes, list, tuple, dict)"
                )));
            }
        }
    }
    if r.pos != data.len() {
        return Err(bad(format!(
            "{} bytes after the end of the pickle",
            data.len() - r.pos
        )));
    }
    let root = match (stack.len(), marks.is_empty()) {
        (1, true) => stack[0],
        _ => {
            return Err(bad(
                "malformed pickle: the stack does not end with one value",
            ));
        }
    };
    let mut budget = 16 * data.len() + 1024;
    build(&nodes, root, 0, &mut budget)
}

fn long(b: &[u8]) -> Result<i64> {
    if b.len() > 8 {
        return Err(bad(format!(
            "integer of {} bytes does not fit in i64",
            b.len()
        )));
    }
    if b.is_empty() {
        return Ok(0);
    }
    let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 8];
    full[..b.len()].copy_from_slice(b);
    Ok(i64::from_le_bytes(full))
}

fn build(nodes: &[Node], i: usize, depth: usize, budget: &mut usize) -> Result<Value> {
    if depth > 500 {
        return Err(bad("pickle nests too deep (or refers to itself)"));
    }
    if *budget == 0 {
        return Err(bad("pickle expands to too many values"));
    }
    *budget -= 1;
    // Plain loops rather than iterator adaptors: each level of nesting costs
    // one small frame, even in debug builds.
    let all = |ids: &[usize], budget: &mut usize| -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(ids.len());
        for &j in ids {
            out.push(build(nodes, j, depth + 1, budget)?);
        }
        Ok(out)
    };
    Ok(match &nodes[i] {
        Node::Leaf(v) => v.clone(),
        Node::Object {
            callable,
            args,
            new,
            state,
        } => build_object(nodes, [*callable, *args], *new, *state, depth, budget)?,
        Node::List(ids) => Value::List(all(ids, budget)?),
        Node::Set { items, frozen } => Value::call(
            "builtins",
            if *frozen { "frozenset" } else { "set" },
            vec![Value::List(all(items, budget)?)],
        ),
        Node::Tuple(ids) => Value::Tuple(all(ids, budget)?),
        Node::Dict(kvs) => {
            let mut out = Vec::with_capacity(kvs.len());
            for &(k, v) in kvs {
                out.push((
                    build(nodes, k, depth + 1, budget)?,
                    build(nodes, v, depth + 1, budget)?,
                ));
            }
            Value::Dict(out)
        }
    })
}

/// The `Node::Object` arm of [`build`], kept out of it so that the
/// recursion's stack frames stay small.
#[inline(never)]
fn build_object(
    nodes: &[Node],
    [callable, args]: [usize; 2],
    new: bool,
    state: Option<usize>,
    depth: usize,
    budget: &mut usize,
) -> Result<Value> {
    let args = match build(nodes, args, depth + 1, budget)? {
        Value::Tuple(a) => a,
        _ => return Err(bad("REDUCE/NEWOBJ arguments are not a tuple")),
    };
    Ok(Value::Object(Box::new(Object {
        callable: build(nodes, callable, depth + 1, budget)?,
        args,
        new,
        state: match state {
            Some(s) => Some(build(nodes, s, depth + 1, budget)?),
            None => None,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_opcodes_read_as_python_sets_only_with_objects() {
        // pickle.dumps({1, 2}, 4) and pickle.dumps([frozenset({3})], 4).
        let set = b"\x80\x04\x95\t\x00\x00\x00\x00\x00\x00\x00\x8f\x94(K\x01K\x02\x90.";
        let frozen = b"\x80\x04\x95\t\x00\x00\x00\x00\x00\x00\x00]\x94(K\x03\x91\x94a.";
        assert_eq!(
            loads_objects(set).unwrap(),
            Value::call(
                "builtins",
                "set",
                vec![Value::List(vec![Value::Int(1), Value::Int(2)])]
            )
        );
        assert_eq!(
            loads_objects(frozen).unwrap(),
            Value::List(vec![Value::call(
                "builtins",
                "frozenset",
                vec![Value::List(vec![Value::Int(3)])]
            )])
        );
        assert!(loads(set).is_err() && loads(frozen).is_err());
        // ADDITEMS on a frozenset or a list, or with no mark: refused.
        for bad in [
            &b"\x80\x04(K\x01\x91(K\x02\x90."[..],
            b"\x80\x04](K\x02\x90.",
            b"\x80\x04\x8fK\x02\x90.",
        ] {
            assert!(loads_objects(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ints_round_trip_at_every_width() {
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
            i32::MIN as i64,
            1 << 31,
            -(1 << 31) - 1,
            1 << 40,
            -(1 << 40),
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(loads(&dumps(&Value::Int(n))).unwrap(), Value::Int(n), "{n}");
        }
    }

    #[test]
    fn shared_references_see_later_appends() {
        // x = []; y = [x, x]; x.append(1) is impossible in a pickle, but
        // Python memoizes a list before filling it: [[1], same]
        // pickle.dumps((lambda x: [x, x])([1]), protocol=4)
        let p = b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94K\x01ah\x01e.";
        let one = Value::List(vec![Value::Int(1)]);
        assert_eq!(loads(p).unwrap(), Value::List(vec![one.clone(), one]));
    }

    #[test]
    fn hostile_pickles_are_errors() {
        // A list that contains itself.
        assert!(loads(b"\x80\x04]\x94h\x00a.").is_err());
        // Truncated, huge announced lengths, trailing bytes, empty.
        assert!(loads(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        assert!(loads(b"\x80\x04N.junk").is_err());
        assert!(loads(b"").is_err());
        assert!(loads(b"e.").is_err());
        assert!(loads(b"(e.").is_err());
        // Doubling bomb: L0 = [L1, L1], L1 = [L2, L2], ... 60 levels deep.
        let mut p = b"\x80\x04".to_vec();
        for _ in 0..60 {
            p.extend_from_slice(&[b']', 0x94, b'(']);
        }
        p.push(b'e');
        for i in (1..60u8).rev() {
            p.extend_from_slice(&[b'h', i, b'e']);
        }
        p.push(b'.');
        let e = loads(&p).unwrap_err();
        assert!(e.to_string().contains("too many values"), "{e}");
    }
}
