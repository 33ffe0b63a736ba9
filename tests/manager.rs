//! Managers across real processes: every proxy type from children of every
//! start method and from pool workers, nested proxies, remote servers, and
//! the faults of issue 10 (kill -9 of the manager, of its owner, of a client
//! mid-call; garbage, oversized frames and wrong keys; 100 clients;
//! references of dead clients).

mod common;

use common::{eventually, for_each_method, pid_alive};
use multiproc::manager::Proxy;
use multiproc::manager::{
    self, BarrierProxy, ConditionProxy, DictProxy, EventProxy, ListProxy, LockProxy,
    NamespaceProxy, QueueProxy, Server, ValueProxy,
};
use multiproc::{Error, Manager, Pool, Process, StartMethod};
use std::time::{Duration, Instant};

fn fill(d: DictProxy<String, i64>, l: ListProxy<String>) {
    for i in 0..10 {
        d.set(format!("k{i}"), i).unwrap();
    }
    l.extend(["a".to_string(), "b".to_string()]).unwrap();
    l.append("c".to_string()).unwrap();
}

fn produce(q: QueueProxy<(u32, String)>, n: u32) {
    for i in 0..n {
        q.put((i, format!("item {i}"))).unwrap();
    }
}

fn produce_many(q: QueueProxy<u64>, n: u64) {
    q.put_many(0..n).unwrap();
}

#[test]
fn pipelined_puts_and_gets_across_processes() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u64>().unwrap();
    let mut p = Process::new(produce_many, (q.clone(), 1000));
    p.start().unwrap();
    let got = q.get_many(1000).unwrap();
    p.join().unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    // A failing call in a pipeline fails alone.
    let results = q
        .base()
        .call_pipelined([
            ("put", vec![multiproc::pickle::Value::Int(1)]),
            ("get_nowait", vec![]),
            ("get_nowait", vec![]),
            ("qsize", vec![]),
        ])
        .unwrap();
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().unwrap(),
        &multiproc::pickle::Value::Int(1)
    );
    assert!(matches!(results[2], Err(Error::Empty)));
    assert_eq!(
        results[3].as_ref().unwrap(),
        &multiproc::pickle::Value::Int(0)
    );
}

fn consume(q: QueueProxy<(u32, String)>, n: u32) -> Vec<u32> {
    (0..n).map(|_| q.get().unwrap().0).collect()
}

fn dict_list_queue_scenario(method: StartMethod) {
    let m = Manager::start_with(method).unwrap();
    let d = m.dict::<String, i64>().unwrap();
    let l = m.list::<String>().unwrap();
    let mut p = Process::new(fill, (d.clone(), l.clone())).start_method(method);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(d.len().unwrap(), 10);
    assert_eq!(d.get(&"k7".to_string()).unwrap(), Some(7));
    assert_eq!(l.to_vec().unwrap(), ["a", "b", "c"]);

    let q = m.queue::<(u32, String)>().unwrap();
    let mut consumer = Process::new(consume, (q.clone(), 50)).start_method(method);
    consumer.start().unwrap();
    let mut producer = Process::new(produce, (q.clone(), 50)).start_method(method);
    producer.start().unwrap();
    producer.join().unwrap();
    consumer.join().unwrap();
    assert_eq!(consumer.take_result().unwrap(), (0..50).collect::<Vec<_>>());
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

#[test]
fn dict_list_and_queue_from_children_of_every_start_method() {
    for_each_method(dict_list_queue_scenario);
}

#[test]
fn dict_methods_follow_python() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, i32>().unwrap();
    let k = |s: &str| s.to_string();
    assert!(d.is_empty().unwrap());
    d.update([(k("a"), 1), (k("b"), 2), (k("c"), 3)]).unwrap();
    assert_eq!(d.keys().unwrap(), ["a", "b", "c"]);
    assert_eq!(d.values().unwrap(), [1, 2, 3]);
    assert_eq!(d.items().unwrap()[1], (k("b"), 2));
    assert!(d.contains(&k("a")).unwrap());
    assert!(d.del(&k("a")).unwrap());
    assert!(!d.del(&k("a")).unwrap());
    assert_eq!(d.get(&k("a")).unwrap(), None);
    assert_eq!(d.pop(&k("b")).unwrap(), Some(2));
    assert_eq!(d.pop(&k("b")).unwrap(), None);
    assert_eq!(d.setdefault(k("z"), 9).unwrap(), 9);
    assert_eq!(d.setdefault(k("z"), 10).unwrap(), 9);
    assert_eq!(d.copy().unwrap(), [(k("c"), 3), (k("z"), 9)]);
    assert_eq!(
        d.get_many([&k("c"), &k("nope"), &k("z")]).unwrap(),
        [Some(3), None, Some(9)]
    );
    assert_eq!(d.popitem().unwrap(), Some((k("z"), 9)));
    d.clear().unwrap();
    assert_eq!(d.popitem().unwrap(), None);
    assert_eq!(d.len().unwrap(), 0);
    // A key given twice keeps its first place and its last value, as
    // Python's `update` of pairs does.
    d.update([(k("x"), 1), (k("y"), 2), (k("x"), 3)]).unwrap();
    assert_eq!(d.items().unwrap(), [(k("x"), 3), (k("y"), 2)]);
}

#[test]
fn list_methods_follow_python() {
    let m = Manager::start().unwrap();
    let l = m.list::<i64>().unwrap();
    l.extend([5, 3, 9, 3]).unwrap();
    assert_eq!(l.count(&3).unwrap(), 2);
    assert_eq!(l.index(&9).unwrap(), Some(2));
    assert_eq!(l.index(&7).unwrap(), None);
    assert_eq!(l.get(-1).unwrap(), 3);
    l.set(0, 1).unwrap();
    l.insert(1, 2).unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2, 3, 9, 3]);
    assert!(l.remove(&3).unwrap());
    l.sort().unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2, 3, 9]);
    l.reverse().unwrap();
    assert_eq!(l.slice(1, 3).unwrap(), [3, 2]);
    l.set_slice(0, 2, [7, 7, 7]).unwrap();
    assert_eq!(l.to_vec().unwrap(), [7, 7, 7, 2, 1]);
    l.del_slice(1, 3).unwrap();
    l.del(0).unwrap();
    assert_eq!(l.to_vec().unwrap(), [2, 1]);
    assert_eq!(l.pop_at(0).unwrap(), 2);
    assert_eq!(l.pop().unwrap(), Some(1));
    assert_eq!(l.pop().unwrap(), None);
    let e = l.get(5).unwrap_err();
    assert!(
        matches!(&e, Error::Remote { kind, .. } if kind == "IndexError"),
        "{e}"
    );
}

#[allow(clippy::too_many_arguments)]
fn use_everything(
    v: ValueProxy<f64>,
    ns: NamespaceProxy,
    lock: LockProxy,
    rlock: LockProxy,
    sem: LockProxy,
    ev: EventProxy,
    cond: ConditionProxy,
    barrier: BarrierProxy,
) -> String {
    v.set(v.get().unwrap() + 1.0).unwrap();
    ns.set("who", "child").unwrap();
    {
        let _g = lock.lock().unwrap();
        ns.set("locked", true).unwrap();
    }
    rlock.acquire().unwrap();
    rlock.acquire().unwrap();
    rlock.release().unwrap();
    rlock.release().unwrap();
    assert!(sem.try_acquire().unwrap());
    ev.wait().unwrap();
    cond.acquire().unwrap();
    ns.set("ready", 1).unwrap();
    cond.notify_all().unwrap();
    cond.release().unwrap();
    barrier.wait().unwrap();
    "done".into()
}

fn every_proxy_scenario(method: StartMethod) {
    let m = Manager::start_with(method).unwrap();
    let v = m.value(1.5f64).unwrap();
    let ns = m.namespace().unwrap();
    let lock = m.lock().unwrap();
    let rlock = m.rlock().unwrap();
    let sem = m.bounded_semaphore(1).unwrap();
    let ev = m.event().unwrap();
    let cond = m.condition().unwrap();
    let barrier = m.barrier(2).unwrap();
    let a = m.array("i", vec![0i32; 3]).unwrap();
    let jq = m.joinable_queue::<i32>().unwrap();
    cond.acquire().unwrap();
    let mut p = Process::new(
        use_everything,
        (
            v.clone(),
            ns.clone(),
            lock.clone(),
            rlock.clone(),
            sem.clone(),
            ev.clone(),
            cond.clone(),
            barrier.clone(),
        ),
    )
    .start_method(method);
    p.start().unwrap();
    ev.set().unwrap();
    assert!(
        cond.wait_for(
            || ns.get::<i32>("ready").unwrap() == Some(1),
            Some(Duration::from_secs(30))
        )
        .unwrap()
    );
    cond.release().unwrap();
    barrier.wait_timeout(Duration::from_secs(30)).unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), "done");
    assert_eq!(v.get().unwrap(), 2.5);
    assert_eq!(ns.get::<String>("who").unwrap().as_deref(), Some("child"));
    assert_eq!(ns.get::<bool>("locked").unwrap(), Some(true));
    assert!(!sem.try_acquire().unwrap());
    sem.release().unwrap();
    assert!(
        sem.release().is_err(),
        "a bounded semaphore refuses an extra release"
    );
    assert!(lock.try_acquire().unwrap());
    a.set(1, 5).unwrap();
    assert_eq!(a.to_vec().unwrap(), [0, 5, 0]);
    jq.put(1).unwrap();
    jq.get().unwrap();
    jq.task_done().unwrap();
    jq.join().unwrap();
}

#[test]
fn every_proxy_type_from_children_of_every_start_method() {
    for_each_method(every_proxy_scenario);
}

fn pool_task(q: QueueProxy<String>, d: DictProxy<u32, u32>, i: u32) -> u32 {
    d.set(i, i * i).unwrap();
    q.put(format!("task {i}")).unwrap();
    i
}

#[test]
fn proxies_in_pool_tasks() {
    let m = Manager::start().unwrap();
    let q = m.queue::<String>().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    let pool = Pool::new(2).unwrap();
    let results = (0..6)
        .map(|i| {
            pool.apply_async(pool_task, (q.clone(), d.clone(), i))
                .unwrap()
        })
        .collect::<Vec<_>>();
    for r in results {
        r.get().unwrap();
    }
    assert_eq!(q.qsize().unwrap(), 6);
    assert_eq!(d.get(&5).unwrap(), Some(25));
}

fn read_nested(d: DictProxy<String, QueueProxy<i32>>) -> i32 {
    let q = d.get(&"q".to_string()).unwrap().unwrap();
    q.get().unwrap()
}

#[test]
fn a_queue_proxy_stored_in_a_dict_works_in_another_process() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, QueueProxy<i32>>().unwrap();
    {
        let q = m.queue::<i32>().unwrap();
        q.put(41).unwrap();
        d.set("q".into(), q).unwrap();
        // The only proxy of the queue here is dropped: the dict keeps it.
    }
    let mut p = Process::new(read_nested, (d.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), 41);
}

fn mutate_inner(outer: ListProxy<ListProxy<i32>>) {
    outer.get(0).unwrap().append(3).unwrap();
    outer.get(1).unwrap().extend([5, 6]).unwrap();
}

#[test]
fn list_proxies_inside_a_list_proxy_see_mutations_m02() {
    let m = Manager::start().unwrap();
    let outer = m.list::<ListProxy<i32>>().unwrap();
    let a = m.list::<i32>().unwrap();
    let b = m.list::<i32>().unwrap();
    a.extend([1, 2]).unwrap();
    outer.append(a.clone()).unwrap();
    outer.append(b.clone()).unwrap();
    let mut p = Process::new(mutate_inner, (outer.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(a.to_vec().unwrap(), [1, 2, 3]);
    assert_eq!(b.to_vec().unwrap(), [5, 6]);
    assert_eq!(outer.get(0).unwrap().len().unwrap(), 3);
}

fn get_from_nested(l: ListProxy<QueueProxy<String>>) -> String {
    l.get(0).unwrap().get().unwrap()
}

#[test]
fn queue_proxies_inside_a_list_q12() {
    let m = Manager::start().unwrap();
    let l = m.list::<QueueProxy<String>>().unwrap();
    let q = m.queue::<String>().unwrap();
    q.put("nested".into()).unwrap();
    l.append(q).unwrap();
    let mut p = Process::new(get_from_nested, (l.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), "nested");
}

#[test]
fn every_proxy_type_from_a_pool_worker() {
    let m = Manager::start().unwrap();
    let v = m.value(1.5f64).unwrap();
    let ns = m.namespace().unwrap();
    let lock = m.lock().unwrap();
    let rlock = m.rlock().unwrap();
    let sem = m.bounded_semaphore(1).unwrap();
    let ev = m.event().unwrap();
    let cond = m.condition().unwrap();
    let barrier = m.barrier(2).unwrap();
    cond.acquire().unwrap();
    let pool = Pool::new(1).unwrap();
    let r = pool
        .apply_async(
            use_everything,
            (
                v.clone(),
                ns.clone(),
                lock.clone(),
                rlock.clone(),
                sem.clone(),
                ev.clone(),
                cond.clone(),
                barrier.clone(),
            ),
        )
        .unwrap();
    ev.set().unwrap();
    assert!(
        cond.wait_for(
            || ns.get::<i32>("ready").unwrap() == Some(1),
            Some(Duration::from_secs(30))
        )
        .unwrap()
    );
    cond.release().unwrap();
    barrier.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(r.get().unwrap(), "done");
    assert_eq!(v.get().unwrap(), 2.5);
    assert!(!sem.try_acquire().unwrap());
}

#[test]
fn shutdown_makes_proxies_fail_and_drop_stops_the_server() {
    let mut m = Manager::start().unwrap();
    let pid = m.pid().unwrap();
    let d = m.dict::<i32, i32>().unwrap();
    d.set(1, 2).unwrap();
    m.shutdown().unwrap();
    assert!(!pid_alive(pid));
    assert!(d.get(&1).is_err());
    m.shutdown().unwrap();
    let m2 = Manager::start().unwrap();
    let pid2 = m2.pid().unwrap();
    drop(m2);
    assert!(!pid_alive(pid2));
}

#[test]
fn manager_killed_fails_pending_and_later_calls() {
    let m = Manager::start().unwrap();
    let q = m.queue::<i32>().unwrap();
    let q2 = q.clone();
    let pid = m.pid().unwrap();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        (q2.get(), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let (r, _) = waiter.join().unwrap();
    assert!(r.is_err(), "a pending get fails when the manager dies");
    let t = Instant::now();
    assert!(q.put(1).is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// The owner binds the server's socket and hands it over: once the server
/// is gone, nothing may hold the socket, or a new call would wait in its
/// listen queue for nobody.
#[test]
fn a_manager_killed_before_it_serves_fails_new_calls_at_once() {
    for _ in 0..3 {
        let m = Manager::start().unwrap();
        let pid = m.pid().unwrap();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        while pid_alive(pid) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = Instant::now();
        assert!(m.dict::<i32, i32>().is_err());
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "a call to a dead manager took {:?}",
            t.elapsed()
        );
    }
}

fn own_a_manager(report: multiproc::Connection) {
    let m = Manager::start().unwrap();
    report.send(&m.pid().unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn manager_dies_with_its_owner_even_on_sigkill() {
    let (here, there) = multiproc::Pipe::new().unwrap();
    let mut owner = Process::new(own_a_manager, (there,));
    owner.start().unwrap();
    let server: u32 = here.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(pid_alive(server));
    owner.kill().unwrap();
    owner.join().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !pid_alive(server)),
        "the manager server outlived its killed owner"
    );
}

fn get_forever(q: QueueProxy<i32>) {
    let _ = q.get();
}

fn create_and_hold(m: manager::RemoteManager, report: multiproc::Connection) {
    let d = m.dict::<i32, i32>().unwrap();
    report.send(&1u8).unwrap();
    std::thread::sleep(Duration::from_secs(120));
    drop(d);
}

#[test]
fn a_client_killed_mid_call_leaves_the_server_serving_and_loses_no_item() {
    let m = Manager::start().unwrap();
    let q = m.queue::<i32>().unwrap();
    let mut victim = Process::new(get_forever, (q.clone(),));
    victim.start().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    victim.kill().unwrap();
    victim.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    q.put(7).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), 7);
}

#[test]
fn references_of_a_killed_client_are_released() {
    let m = Manager::start().unwrap();
    let base = m.number_of_objects().unwrap();
    let (here, there) = multiproc::Pipe::new().unwrap();
    let remote: manager::RemoteManager = (*m).clone();
    let mut p = Process::new(create_and_hold, (remote, there));
    p.start().unwrap();
    here.recv_timeout::<u8>(Duration::from_secs(30)).unwrap();
    assert_eq!(m.number_of_objects().unwrap(), base + 1);
    p.kill().unwrap();
    p.join().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || m.number_of_objects().unwrap()
            == base),
        "the dead client's dict is still referenced"
    );
}

#[test]
fn dropped_proxies_release_their_objects() {
    let m = Manager::start().unwrap();
    let base = m.number_of_objects().unwrap();
    let d = m.dict::<i32, i32>().unwrap();
    let d2 = d.clone();
    assert_eq!(m.number_of_objects().unwrap(), base + 1);
    drop(d);
    assert_eq!(m.number_of_objects().unwrap(), base + 1);
    drop(d2);
    assert_eq!(m.number_of_objects().unwrap(), base);
}

fn tcp_server() -> (
    multiproc::Address,
    manager::Stopper,
    std::thread::JoinHandle<multiproc::Result<()>>,
) {
    let mut server = Server::bind("127.0.0.1:0", b"key").unwrap();
    server
        .register_shared("get_queue", manager::objects::queue(0))
        .register_shared("get_dict", manager::objects::dict());
    let addr = server.address().clone();
    let stop = server.stopper();
    (
        addr,
        stop,
        std::thread::spawn(move || server.serve_forever()),
    )
}

#[test]
fn garbage_oversized_frames_and_wrong_keys_lose_only_their_connection() {
    use std::io::Write;
    let (addr, stop, t) = tcp_server();
    let remote = manager::connect(&addr, b"key").unwrap();
    let d = remote.get::<DictProxy<String, i32>>("get_dict").unwrap();
    d.set("x".into(), 1).unwrap();
    let sock = addr.to_string();
    // Garbage before the handshake.
    let mut g = std::net::TcpStream::connect(&sock).unwrap();
    let _ = g.write_all(b"GET / HTTP/1.1\r\n\r\n");
    // A frame claiming 2 GiB.
    let mut big = std::net::TcpStream::connect(&sock).unwrap();
    let _ = big.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
    // Wrong key.
    let e = manager::connect(&addr, b"wrong").unwrap_err();
    assert!(e.is_authentication(), "{e}");
    // Garbage after a good handshake.
    let c = multiproc::Client::connect(&addr, Some(b"key")).unwrap();
    c.send_bytes(b"\x80\x04not a pickle").unwrap();
    assert!(
        c.recv_bytes()
            .is_ok_and(|r| r.windows(10).any(|w| w == b"#TRACEBACK"))
    );
    // A whole frame that does not decode is refused, and the connection
    // goes on: (None, 'dummy', (), {}) in protocol 2.
    c.send_bytes(b"\x80\x02(NX\x05\x00\x00\x00dummy)}t.")
        .unwrap();
    let ok = c.recv_bytes().unwrap();
    assert!(ok.windows(7).any(|w| w == b"#RETURN"));
    let c2 = multiproc::Client::connect(&addr, Some(b"key")).unwrap();
    c2.send_bytes(&[0u8; 16]).unwrap();
    let _ = c2.recv_bytes();
    // Everyone else is still served.
    assert_eq!(d.get(&"x".to_string()).unwrap(), Some(1));
    drop((g, big, c, c2));
    stop.stop();
    t.join().unwrap().unwrap();
}

#[test]
fn a_hundred_clients_at_once() {
    let (addr, stop, t) = tcp_server();
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let remote = manager::connect(&addr, b"key").unwrap();
                let d = remote.get::<DictProxy<String, i32>>("get_dict").unwrap();
                let q = remote.get::<QueueProxy<i32>>("get_queue").unwrap();
                d.set(format!("c{i}"), i).unwrap();
                q.put(i).unwrap();
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let remote = manager::connect(&addr, b"key").unwrap();
    let d = remote.get::<DictProxy<String, i32>>("get_dict").unwrap();
    let q = remote.get::<QueueProxy<i32>>("get_queue").unwrap();
    assert_eq!(d.len().unwrap(), 100);
    assert_eq!(q.qsize().unwrap(), 100);
    stop.stop();
    t.join().unwrap().unwrap();
}

#[test]
fn a_remote_server_restarts_on_the_same_address_after_shutdown() {
    let (addr, _stop, t) = tcp_server();
    let remote = manager::connect(&addr, b"key").unwrap();
    remote.shutdown_server().unwrap();
    t.join().unwrap().unwrap();
    let mut again = Server::bind(&addr, b"key2").unwrap();
    again.register_shared("get_dict", manager::objects::dict());
    let stop = again.stopper();
    let t = std::thread::spawn(move || again.serve_forever());
    let remote = manager::connect(&addr, b"key2").unwrap();
    let d = remote.get::<DictProxy<i32, i32>>("get_dict").unwrap();
    d.set(1, 1).unwrap();
    stop.stop();
    t.join().unwrap().unwrap();
}

/// A custom registered type with a failing and a panicking method.
#[derive(Default)]
pub struct Account(std::sync::Mutex<i64>);

impl Account {
    fn deposit(&self, amount: i64) -> Result<i64, String> {
        if amount <= 0 {
            return Err(format!("deposit of {amount} refused"));
        }
        let mut b = self.0.lock().unwrap();
        *b += amount;
        Ok(*b)
    }

    fn balance(&self) -> Result<i64, manager::Fail> {
        Ok(*self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn explode(&self, why: String) -> Result<(), String> {
        panic!("exploded: {why}");
    }

    #[allow(dead_code)]
    fn secret(&self) -> Result<(), String> {
        Ok(())
    }
}

multiproc::managed_type! {
    /// A proxy for an [`Account`].
    pub AccountProxy for Account as "Account" {
        fn deposit(amount: i64) -> i64;
        fn balance() -> i64;
        fn explode(why: String) -> ();
    }
}

struct Bank;

impl manager::Registry for Bank {
    fn register(server: &mut Server) {
        server.register("Account", |a| {
            let start = match a.args.first() {
                Some(v) => manager::from_value::<i64>(v.clone())?,
                None => 0,
            };
            Ok(std::sync::Arc::new(Account(std::sync::Mutex::new(start))))
        });
    }
}

fn deposit_in_child(a: AccountProxy) -> (i64, String, String) {
    let ok = a.deposit(10).unwrap();
    let refused = a.deposit(-1).unwrap_err().to_string();
    let panicked = a.explode("child".into()).unwrap_err().to_string();
    (ok, refused, panicked)
}

fn custom_type_scenario(method: StartMethod) {
    let m = Manager::start_with_types::<Bank>().unwrap();
    let a: AccountProxy = m
        .new_proxy(vec![multiproc::pickle::Value::Int(100)])
        .unwrap();
    let mut p = Process::new(deposit_in_child, (a.clone(),)).start_method(method);
    p.start().unwrap();
    p.join().unwrap();
    let (ok, refused, panicked) = p.take_result().unwrap();
    assert_eq!(ok, 110);
    assert!(refused.contains("deposit of -1 refused"), "{refused}");
    assert!(panicked.contains("exploded: child"), "{panicked}");
    // The server went on, and the account is intact.
    assert_eq!(a.balance().unwrap(), 110);
    let e = a.explode("parent".into()).unwrap_err();
    assert!(
        matches!(&e, Error::Remote { kind, .. } if kind == "RuntimeError"),
        "{e}"
    );
    assert_eq!(a.deposit(1).unwrap(), 111);
    // Only the listed methods are exposed.
    let e = a.base().call_method("secret", vec![]).unwrap_err();
    assert!(
        matches!(&e, Error::Remote { kind, .. } if kind == "RemoteError"),
        "{e}"
    );
    // The SyncManager types are still there.
    assert_eq!(m.dict::<i32, i32>().unwrap().len().unwrap(), 0);
}

#[test]
fn a_custom_registered_type_reports_errors_and_panics_and_the_server_goes_on() {
    for_each_method(custom_type_scenario);
}

/// The `manager_server` example binary, built if needed.
fn manager_server_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let bin = dir.join("manager_server");
    if !bin.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = std::process::Command::new(cargo)
            .args(["build", "--example", "manager_server"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

#[test]
fn manager_server_example_serves_two_programs_and_exits_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let path = std::env::temp_dir().join(format!("mp-manager-example-{}.sock", std::process::id()));
    let mut server = std::process::Command::new(manager_server_binary())
        .arg(&path)
        .env("MULTIPROC_AUTHKEY", "example key")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("serving {}", path.display()));
    assert!(
        manager::connect(path.as_path(), b"wrong")
            .unwrap_err()
            .is_authentication()
    );
    let remote = manager::connect(path.as_path(), b"example key").unwrap();
    let q = remote.get::<QueueProxy<String>>("get_queue").unwrap();
    let d = remote
        .get::<DictProxy<String, Vec<i32>>>("get_dict")
        .unwrap();
    q.put("one".into()).unwrap();
    d.set("k".into(), vec![1, 2]).unwrap();
    // A second program (a child of its own) sees the same objects.
    let mut p = Process::new(read_remote, (remote.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.take_result().unwrap(), ("one".to_string(), vec![1, 2]));
    drop((q, d));
    let pid = server.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!path.exists(), "the socket file is left behind");
}

fn read_remote(remote: manager::RemoteManager) -> (String, Vec<i32>) {
    let q = remote.get::<QueueProxy<String>>("get_queue").unwrap();
    let d = remote
        .get::<DictProxy<String, Vec<i32>>>("get_dict")
        .unwrap();
    (q.get().unwrap(), d.get(&"k".into()).unwrap().unwrap())
}
