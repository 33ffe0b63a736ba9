//! The manager server's bookkeeping: the special (server-level) methods
//! `create`, `incref`, `decref`, … and the references they count per
//! client process, with the reaper that releases those of dead clients.

use super::object::Args;
use super::server::{Entry, REAP_EVERY, State, lock, traceback};
use super::wire::{self, Fail};
use crate::pickle::Value;
use crate::sys;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Drops references held by local client processes that have died.
fn reaper(state: &State, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) && !state.stop.load(Ordering::SeqCst) {
        std::thread::sleep(REAP_EVERY);
        let dead: Vec<u32> = {
            let watched = lock(&state.watched);
            watched
                .iter()
                .filter(|(_, fd)| {
                    sys::wait_readable(fd.as_fd(), Some(Instant::now())).unwrap_or(true)
                })
                .map(|(pid, _)| *pid)
                .collect()
        };
        if dead.is_empty() {
            continue;
        }
        let mut dropped = Vec::new();
        {
            let mut objects = lock(&state.objects);
            for e in objects.values_mut() {
                for pid in &dead {
                    e.refs.remove(pid);
                }
            }
            state.removals.fetch_add(1, Ordering::SeqCst);
            objects.retain(|_, e| {
                let keep = e.total() > 0;
                if !keep {
                    dropped.push(e.obj.clone());
                }
                keep
            });
            let mut watched = lock(&state.watched);
            for pid in &dead {
                watched.remove(pid);
            }
        }
        // Objects are dropped outside the lock: one may hold proxies.
        drop(dropped);
    }
}

fn ident_arg(args: &Args) -> std::result::Result<String, Fail> {
    match args.args.first() {
        Some(Value::Str(s)) => Ok(s.clone()),
        _ => Err(traceback("expected an object id")),
    }
}

fn watch(state: &State, pid: u32) {
    if pid == 0 || pid == std::process::id() {
        return;
    }
    let mut watched = lock(&state.watched);
    if let std::collections::hash_map::Entry::Vacant(slot) = watched.entry(pid) {
        if let Ok(fd) = sys::pidfd_open(pid) {
            slot.insert(fd);
        }
    }
    drop(watched);
    state.reaper.call_once(|| {
        let Some(st) = state.me.upgrade() else {
            return;
        };
        let stop = st.outer_stop.clone();
        // Without the thread, the references of dead clients stay (as
        // they would over TCP); the server itself goes on.
        let _ = std::thread::Builder::new()
            .name("manager-reaper".into())
            .spawn(move || reaper(&st, &stop));
    });
}

pub(super) fn incref(state: &State, ident: &str, pid: u32) -> std::result::Result<(), Fail> {
    let mut objects = lock(&state.objects);
    let e = objects
        .get_mut(ident)
        .ok_or_else(|| traceback(format!("KeyError: {ident:?} is not a live object")))?;
    *e.refs.entry(pid).or_insert(0) += 1;
    drop(objects);
    watch(state, pid);
    Ok(())
}

/// Makes a new object of `typeid` holding one reference of `pid`
/// (Python's `Server.create`); returns its id and exposed methods.
pub(super) fn create(
    state: &State,
    typeid: &str,
    args: Args,
    pid: u32,
) -> std::result::Result<(String, Vec<String>), Fail> {
    let factory = state
        .types
        .get(typeid)
        .cloned()
        .ok_or_else(|| traceback(format!("KeyError: type id {typeid:?} is not registered")))?;
    let obj = catch_unwind(AssertUnwindSafe(|| factory(args))).map_err(|p| panic_fail(&p))??;
    let ident = format!("{:x}", Arc::as_ptr(&obj) as *const () as usize);
    let exposed: Vec<String> = obj.exposed().iter().map(|s| s.to_string()).collect();
    let mut objects = lock(&state.objects);
    let e = objects.entry(ident.clone()).or_insert_with(|| Entry {
        obj,
        typeid: typeid.to_string(),
        exposed: exposed.clone(),
        refs: HashMap::new(),
    });
    *e.refs.entry(pid).or_insert(0) += 1;
    drop(objects);
    watch(state, pid);
    Ok((ident, exposed))
}

/// A method result registered as a new object of `typeid` (Python's
/// `method_to_typeid`): the payload of a `#PROXY` reply,
/// `(exposed, Token(typeid, address, id))`. The caller's proxy owns the
/// reference taken here.
pub(super) fn new_object(
    state: &State,
    typeid: &str,
    args: Vec<Value>,
    pid: u32,
) -> std::result::Result<Value, Fail> {
    let (id, exposed) = create(state, typeid, Args { args, kwds: vec![] }, pid)?;
    let token = wire::Token {
        typeid: typeid.to_string(),
        address: state.address.clone(),
        id,
    };
    Ok(Value::Tuple(vec![
        Value::Tuple(exposed.into_iter().map(Value::Str).collect()),
        token.to_python(),
    ]))
}

pub(super) fn special(
    state: &Arc<State>,
    method: &str,
    mut args: Args,
    pid: u32,
) -> std::result::Result<Value, Fail> {
    match method {
        "dummy" => Ok(Value::None),
        "create" => {
            if args.args.is_empty() {
                return Err(traceback("create needs a type id"));
            }
            let Value::Str(typeid) = args.args.remove(0) else {
                return Err(traceback("the type id is not a str"));
            };
            let (ident, exposed) = create(state, &typeid, args, pid)?;
            Ok(Value::Tuple(vec![
                Value::Str(ident),
                Value::Tuple(exposed.into_iter().map(Value::Str).collect()),
            ]))
        }
        "incref" => incref(state, &ident_arg(&args)?, pid).map(|()| Value::None),
        "decref" => {
            let ident = ident_arg(&args)?;
            let mut objects = lock(&state.objects);
            let e = objects
                .get_mut(&ident)
                .ok_or_else(|| traceback(format!("KeyError: {ident:?} is not a live object")))?;
            let from = if e.refs.get(&pid).is_some_and(|n| *n > 0) {
                pid
            } else {
                // A reference taken elsewhere (e.g. over TCP, or by a
                // process that handed it over): release any.
                *e.refs
                    .iter()
                    .find(|(_, n)| **n > 0)
                    .map(|(p, _)| p)
                    .ok_or_else(|| traceback("AssertionError: refcount is already 0"))?
            };
            let n = e.refs.get_mut(&from).expect("found above");
            *n -= 1;
            if *n == 0 {
                e.refs.remove(&from);
            }
            let dead = (e.total() == 0).then(|| {
                state.removals.fetch_add(1, Ordering::SeqCst);
                objects.remove(&ident)
            });
            drop(objects);
            drop(dead);
            Ok(Value::None)
        }
        "number_of_objects" => Ok(Value::Int(lock(&state.objects).len() as i64)),
        "debug_info" => {
            let objects = lock(&state.objects);
            let mut s = String::new();
            for (id, e) in objects.iter() {
                let mut r = e.obj.repr();
                r.truncate(75);
                s.push_str(&format!(
                    "  {id}:       refcount={} ({})\n    {r}\n",
                    e.total(),
                    e.typeid
                ));
            }
            Ok(Value::Str(s))
        }
        "get_methods" => {
            let token = args
                .args
                .first()
                .ok_or_else(|| traceback("get_methods needs a token"))?;
            let id = wire::Token::from_python(token)
                .map_err(|e| traceback(e.to_string()))?
                .id;
            let objects = lock(&state.objects);
            let e = objects
                .get(&id)
                .ok_or_else(|| traceback(format!("KeyError: {id:?}")))?;
            Ok(Value::Tuple(
                e.exposed.iter().map(|s| Value::Str(s.clone())).collect(),
            ))
        }
        other => Err(traceback(format!("AssertionError: {other:?} unrecognized"))),
    }
}

pub(super) fn panic_fail(p: &Box<dyn std::any::Any + Send>) -> Fail {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    Fail::builtin("RuntimeError", format!("panicked: {msg}"))
}

/// Proxies in the arguments that name objects of this server keep those
/// objects alive as long as the server runs (they may be stored in a
/// container and read back later by any process).
pub(super) fn pin_nested(state: &State, v: &Value) {
    match v {
        Value::List(items) | Value::Tuple(items) => items.iter().for_each(|i| pin_nested(state, i)),
        Value::Dict(items) => items.iter().for_each(|(k, v)| {
            pin_nested(state, k);
            pin_nested(state, v)
        }),
        Value::Object(o) => {
            let args = &o.args;
            if let Some(token) = args.iter().find_map(|a| wire::Token::from_python(a).ok()) {
                let _ = incref(state, &token.id, 0);
            }
            args.iter().for_each(|a| pin_nested(state, a));
        }
        _ => {}
    }
}
