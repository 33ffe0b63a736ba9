//! Managers and Python, both directions, with the `python3` on `PATH`:
//! an unmodified CPython `BaseManager` client uses our queue and dict while
//! Rust proxies use the same objects, and our client uses the dict and
//! queue of a CPython `SyncManager` server.

use multiproc::manager::{self, DictProxy, QueueProxy, Server, objects};
use multiproc::{Error, Process};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn python(script: &str, args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed to run the interop tests")
}

const PY_CLIENT: &str = r#"
import sys, queue
from multiprocessing.managers import BaseManager
from multiprocessing import AuthenticationError

addr = sys.argv[1]
if ':' in addr:
    host, port = addr.rsplit(':', 1)
    addr = (host, int(port))
BaseManager.register('get_queue')
BaseManager.register('get_dict')

bad = BaseManager(address=addr, authkey=b'wrong')
try:
    bad.connect()
    print('wrong key accepted')
except AuthenticationError:
    print('wrong key rejected')

m = BaseManager(address=addr, authkey=sys.argv[2].encode())
m.connect()
q = m.get_queue()
d = m.get_dict()
print('from rust:', q.get(timeout=10))
try:
    q.get(timeout=0.1)
except queue.Empty:
    print('empty: queue.Empty')
q.put([1, 'two', 3.5, b'six', None, (7, 8), {'k': True}])
d['a'] = 1
print('d[a] =', d['a'])
print('keys:', sorted(d.keys()))
print('len:', len(d))
try:
    d['missing']
except KeyError:
    print('missing: KeyError')
try:
    d['s'] = {1, 2}
except Exception as e:
    print('set refused:', type(e).__name__)
print('still served:', d['rust'])
"#;

fn run_python_client(address: &str) {
    let mut server = Server::bind(address, b"interop").unwrap();
    server
        .register_shared("get_queue", objects::queue(0))
        .register_shared("get_dict", objects::dict());
    let addr = server.address().clone();
    let stop = server.stopper();
    let t = std::thread::spawn(move || server.serve_forever());

    let remote = manager::connect(&addr, b"interop").unwrap();
    let q = remote.get::<QueueProxy<String>>("get_queue").unwrap();
    let d = remote.get::<DictProxy<String, i64>>("get_dict").unwrap();
    q.put("hello from Rust".into()).unwrap();
    d.set("rust".into(), 42).unwrap();

    let out = python(PY_CLIENT, &[&addr.to_string(), "interop"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    for line in [
        "wrong key rejected",
        "from rust: hello from Rust",
        "d[a] = 1",
        "keys: ['a', 'rust']",
        "len: 2",
        "empty: queue.Empty",
        "missing: KeyError",
        "set refused: RemoteError",
        "still served: 42",
    ] {
        assert!(
            stdout.contains(line),
            "missing {line:?} in:\n{stdout}\n{stderr}"
        );
    }
    // What Python put, read through a Rust proxy.
    let item = remote
        .get::<QueueProxy<(
            i64,
            String,
            f64,
            serde_bytes::ByteBuf,
            Option<i32>,
            (i32, i32),
            std::collections::HashMap<String, bool>,
        )>>("get_queue")
        .unwrap()
        .get_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!((item.0, item.1.as_str(), item.2), (1, "two", 3.5));
    assert_eq!(item.3.as_slice(), b"six");
    assert_eq!((item.4, item.5, item.6["k"]), (None, (7, 8), true));
    assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
    // Python released its references when it exited; ours remain.
    assert_eq!(remote.number_of_objects().unwrap(), 2);
    drop((q, d));
    assert_eq!(remote.number_of_objects().unwrap(), 0);
    stop.stop();
    t.join().unwrap().unwrap();
}

#[test]
fn an_unmodified_cpython_client_shares_our_queue_and_dict_over_tcp() {
    run_python_client("127.0.0.1:0");
}

#[test]
fn an_unmodified_cpython_client_shares_our_queue_and_dict_over_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("mp-manager-py-{}.sock", std::process::id()));
    run_python_client(path.to_str().unwrap());
    assert!(
        !path.exists(),
        "the socket file is removed after the server stops"
    );
}

const PY_SERVER: &str = r#"
import sys, queue
from multiprocessing.managers import SyncManager, DictProxy
q = queue.Queue()
d = {}
SyncManager.register('get_queue', callable=lambda: q)
SyncManager.register('get_dict', callable=lambda: d, proxytype=DictProxy)
addr = sys.argv[1] if len(sys.argv) > 1 else ('127.0.0.1', 0)
m = SyncManager(address=addr, authkey=b'pykey')
s = m.get_server()
print(s.address if isinstance(s.address, str) else '%s:%d' % s.address, flush=True)
s.serve_forever()
"#;

/// Starts the CPython server of [`PY_SERVER`] (on a Unix socket at `unix`,
/// else on TCP) and returns it with its address.
fn python_server(unix: Option<&str>) -> (std::process::Child, String) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PY_SERVER)
        .args(unix)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run the interop tests");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_string())
}

/// Our local client asks a server for a pipe (and a queue for its put
/// inbox); a CPython server refuses, closes that connection, and our
/// client connects again and goes on over the socket.
#[test]
fn our_client_uses_a_cpython_server_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("mp-pyunix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.sock");
    let (mut child, addr) = python_server(Some(path.to_str().unwrap()));
    let result = std::panic::catch_unwind(|| {
        assert_eq!(addr, path.to_str().unwrap());
        let remote = manager::connect(addr.as_str(), b"pykey").unwrap();
        let d = remote.get::<DictProxy<String, i64>>("get_dict").unwrap();
        d.set("x".into(), 1).unwrap();
        assert_eq!(d.get(&"x".into()).unwrap(), Some(1));
        let q = remote.get::<QueueProxy<i64>>("get_queue").unwrap();
        for i in 0..20 {
            q.put(i).unwrap();
        }
        assert_eq!(q.qsize().unwrap(), 20);
        let got: Vec<i64> = (0..20).map(|_| q.get().unwrap()).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        let mut p = Process::new(use_python_dict, (remote.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.take_result().unwrap(), (Some(1), 2));
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn use_python_dict(remote: manager::RemoteManager) -> (Option<i64>, usize) {
    let d = remote.get::<DictProxy<String, i64>>("get_dict").unwrap();
    d.set("from child".into(), 7).unwrap();
    (d.get(&"x".into()).unwrap(), d.len().unwrap())
}

#[test]
fn our_client_uses_a_cpython_syncmanager_server() {
    let (mut child, addr) = python_server(None);
    let result = std::panic::catch_unwind(|| {
        assert!(
            manager::connect(addr.as_str(), b"nope")
                .unwrap_err()
                .is_authentication()
        );
        let remote = manager::connect(addr.as_str(), b"pykey").unwrap();
        // Registered names.
        let d = remote.get::<DictProxy<String, i64>>("get_dict").unwrap();
        d.set("x".into(), 1).unwrap();
        assert_eq!(d.get(&"x".into()).unwrap(), Some(1));
        assert_eq!(d.get(&"y".into()).unwrap(), None);
        let q = remote.get::<QueueProxy<Vec<String>>>("get_queue").unwrap();
        q.put(vec!["a".into(), "b".into()]).unwrap();
        assert_eq!(q.get().unwrap(), ["a", "b"]);
        assert!(matches!(
            q.get_timeout(Duration::from_millis(100)),
            Err(Error::Empty)
        ));
        // From a child process.
        let mut p = Process::new(use_python_dict, (remote.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.take_result().unwrap(), (Some(1), 2));
        assert_eq!(d.keys().unwrap(), ["x", "from child"]);
        // SyncManager's own type ids.
        let sd = remote.dict::<i64, String>().unwrap();
        sd.update([(1, "one".to_string()), (2, "two".to_string())])
            .unwrap();
        assert_eq!(sd.items().unwrap(), [(1, "one".into()), (2, "two".into())]);
        assert!(sd.del(&1).unwrap());
        assert_eq!(sd.len().unwrap(), 1);
        let sq = remote.queue::<i64>().unwrap();
        sq.put(5).unwrap();
        assert_eq!(sq.qsize().unwrap(), 1);
        assert_eq!(sq.get_nowait().unwrap(), 5);
        let l = remote.list::<i64>().unwrap();
        l.extend([3, 1, 2]).unwrap();
        l.sort().unwrap();
        assert_eq!(l.to_vec().unwrap(), [1, 2, 3]);
        let ns = remote.namespace().unwrap();
        ns.set("x", 5).unwrap();
        assert_eq!(ns.get::<i64>("x").unwrap(), Some(5));
        let ev = remote.event().unwrap();
        ev.set().unwrap();
        assert!(ev.is_set().unwrap());
        // A CPython server answers `__iter__` with `#PROXY`: our client
        // adopts the iterator it made (Python's IteratorProxy).
        let objects = remote.number_of_objects().unwrap();
        let keys = d
            .iter()
            .unwrap()
            .collect::<multiproc::Result<Vec<_>>>()
            .unwrap();
        assert_eq!(keys, ["x", "from child"]);
        let it = sd.iter().unwrap();
        assert_eq!(it.next_item().unwrap(), Some(2));
        assert_eq!(it.next_item().unwrap(), None);
        assert_eq!(remote.number_of_objects().unwrap(), objects + 1);
        drop(it);
        assert_eq!(remote.number_of_objects().unwrap(), objects);
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

const PY_ITER_CLIENT: &str = r#"
import sys
from multiprocessing.managers import BaseManager, SyncManager, IteratorProxy

addr = sys.argv[1]
host, port = addr.rsplit(':', 1)
addr = (host, int(port))
key = sys.argv[2].encode()

# SyncManager: dict() is a DictProxy whose __iter__ the server answers
# with #PROXY.
m = SyncManager(address=addr, authkey=key)
m.connect()
d = m.dict()
d['a'] = 1
d['b'] = 2
print('for:', [k for k in d])
it = iter(d)
print('next:', next(it), next(it))
try:
    next(it)
except StopIteration:
    print('stop: StopIteration')
del it
print('list:', list(d))

# A plain BaseManager client with the registered name and Iterator.
class C(BaseManager):
    pass
C.register('get_dict')
C.register('Iterator', proxytype=IteratorProxy, create_method=False)
c = C(address=addr, authkey=key)
c.connect()
g = c.get_dict()
print('shared:', sorted(k for k in g))
"#;

#[test]
fn an_unmodified_cpython_client_iterates_our_dict_through_a_proxy_reply() {
    let mut server = Server::bind("127.0.0.1:0", b"iter").unwrap();
    server
        .register_sync_types()
        .register_shared("get_dict", objects::dict());
    let addr = server.address().clone();
    let stop = server.stopper();
    let t = std::thread::spawn(move || server.serve_forever());

    let remote = manager::connect(&addr, b"iter").unwrap();
    let d = remote.get::<DictProxy<String, i64>>("get_dict").unwrap();
    d.set("rust".into(), 1).unwrap();
    d.set("python".into(), 2).unwrap();

    let out = python(PY_ITER_CLIENT, &[&addr.to_string(), "iter"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    for line in [
        "for: ['a', 'b']",
        "next: a b",
        "stop: StopIteration",
        "list: ['a', 'b']",
        "shared: ['python', 'rust']",
    ] {
        assert!(
            stdout.contains(line),
            "missing {line:?} in:\n{stdout}\n{stderr}"
        );
    }
    // Python released every object it made, iterators included: only our
    // dict is left.
    assert_eq!(remote.number_of_objects().unwrap(), 1);
    drop(d);
    stop.stop();
    t.join().unwrap().unwrap();
}

const PY_SET_CLIENT: &str = r#"
import sys
from multiprocessing.managers import BaseManager

BaseManager.register('get_set')
BaseManager.register('get_dict')
m = BaseManager(address=sys.argv[1], authkey=b'sets')
m.connect()
s = m.get_set()
s._callmethod('update', ({1, 2, 3},))
s._callmethod('difference_update', (frozenset({3}),))
print('has 2:', s._callmethod('__contains__', (2,)))
print('superset:', s._callmethod('issuperset', ({1, 2},)))
d = m.get_dict()
try:
    d['s'] = {1, 2}
    print('set stored in a dict')
except Exception as e:
    print('set refused:', type(e).__name__)
d['x'] = 1
print('still served:', d['x'])
"#;

/// CPython pickles set literals with the `EMPTY_SET`/`ADDITEMS` and
/// `FROZENSET` opcodes: a set takes them as arguments, a dict refuses them
/// (it has no set values), and the connection goes on.
#[test]
fn an_unmodified_cpython_client_passes_set_literals_to_our_set() {
    let path = std::env::temp_dir().join(format!("mp-manager-sets-{}.sock", std::process::id()));
    let mut server = Server::bind(path.to_str().unwrap(), b"sets").unwrap();
    let set = objects::set();
    server
        .register_shared("get_set", set.clone())
        .register_shared("get_dict", objects::dict());
    let addr = server.address().clone();
    let stop = server.stopper();
    let t = std::thread::spawn(move || server.serve_forever());

    let out = python(PY_SET_CLIENT, &[path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    for line in [
        "has 2: True",
        "superset: True",
        "set refused: RemoteError",
        "still served: 1",
    ] {
        assert!(
            stdout.contains(line),
            "missing {line:?} in:\n{stdout}\n{stderr}"
        );
    }
    let mut items = match set.value() {
        multiproc::pickle::Value::Object(o) => match o.args.into_iter().next() {
            Some(multiproc::pickle::Value::List(items)) => items,
            other => panic!("not a set's items: {other:?}"),
        },
        other => panic!("not a set: {other:?}"),
    };
    items.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(
        items,
        [
            multiproc::pickle::Value::Int(1),
            multiproc::pickle::Value::Int(2)
        ]
    );
    drop(addr);
    stop.stop();
    t.join().unwrap().unwrap();
}
