//! One queue and one dict, two languages: a Rust manager serves them, and
//! an unmodified Python program (run by this example) puts into the queue
//! and reads the dict, while Rust uses the same objects through proxies.
//!
//! Run with `cargo run --example manager_python` (needs `python3` on PATH).

use multiproc::manager::{self, DictProxy, QueueProxy, Server, objects};
use multiproc::pickle::Value;
use std::process::Command;
use std::time::Duration;

const PYTHON: &str = r#"
import sys
from multiprocessing.managers import BaseManager

host, port = sys.argv[1].rsplit(':', 1)
BaseManager.register('get_queue')
BaseManager.register('get_dict')
m = BaseManager(address=(host, int(port)), authkey=sys.argv[2].encode())
m.connect()
q, d = m.get_queue(), m.get_dict()
print('python: dict from Rust =', dict(zip(d.keys(), d.values())), flush=True)
for i in range(3):
    q.put({'from': 'python', 'n': i, 'square': i * i})
q.put(None)
d['python'] = sys.version.split()[0]
print('python: put 3 items and a None into the queue', flush=True)
"#;

fn main() -> multiproc::Result<()> {
    let authkey = b"two languages";
    let mut server = Server::bind("127.0.0.1:0", authkey)?;
    server
        .register_shared("get_queue", objects::queue(0))
        .register_shared("get_dict", objects::dict());
    let address = server.address().clone();
    let stop = server.stopper();
    let serving = std::thread::spawn(move || server.serve_forever());
    println!("rust: manager serving on {address}");

    let remote = manager::connect(&address, authkey)?;
    let d = remote.get::<DictProxy<String, Value>>("get_dict")?;
    let q = remote.get::<QueueProxy<Value>>("get_queue")?;
    d.set("rust".into(), Value::from("1.85+"))?;
    d.set("answer".into(), Value::Int(42))?;

    let status = Command::new("python3")
        .arg("-c")
        .arg(PYTHON)
        .arg(address.to_string())
        .arg(std::str::from_utf8(authkey).expect("ASCII key"))
        .status()?;
    assert!(status.success(), "the Python client failed");

    loop {
        let item = q.get_timeout(Duration::from_secs(10))?;
        if item == Value::None {
            break;
        }
        println!("rust: got {item:?}");
    }
    println!("rust: dict now has keys {:?}", d.keys()?);
    drop((d, q));
    stop.stop();
    serving.join().expect("server thread")?;
    Ok(())
}
