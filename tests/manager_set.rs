//! Python 3.14's managed `set` and the iterators that `__iter__` answers
//! with (`#PROXY` replies), used from children of every start method.

mod common;

use common::for_each_method;
use multiproc::manager::{DictProxy, IteratorProxy, Proxy, SetProxy};
use multiproc::{Error, Manager, Process, StartMethod};

fn use_set(s: SetProxy<i64>, d: DictProxy<String, i64>) -> (Vec<i64>, Vec<String>) {
    s.add(10).unwrap();
    s.update([1, 2, 3]).unwrap();
    // 1.0 is 1 under Python's equality: no new item.
    s.base()
        .call_method("add", vec![multiproc::pickle::Value::Float(1.0)])
        .unwrap();
    s.discard(&3).unwrap();
    let items = s
        .iter()
        .unwrap()
        .collect::<multiproc::Result<Vec<_>>>()
        .unwrap();
    let keys = d
        .iter()
        .unwrap()
        .collect::<multiproc::Result<Vec<_>>>()
        .unwrap();
    (items, keys)
}

fn set_scenario(method: StartMethod) {
    let m = Manager::start_with(method).unwrap();
    let s = m.set::<i64>().unwrap();
    let d = m.dict::<String, i64>().unwrap();
    d.set("b".into(), 2).unwrap();
    d.set("a".into(), 1).unwrap();
    s.add(0).unwrap();
    let mut p = Process::new(use_set, (s.clone(), d.clone())).start_method(method);
    p.start().unwrap();
    p.join().unwrap();
    let (items, keys) = p.take_result().unwrap();
    assert_eq!(items, [0, 10, 1, 2], "{method:?}");
    assert_eq!(keys, ["b", "a"], "{method:?}");
    assert_eq!(s.len().unwrap(), 4);
    assert!(s.contains(&10).unwrap());
    assert!(!s.contains(&3).unwrap());
    // Every iterator the child made was released when its proxy dropped.
    assert_eq!(m.number_of_objects().unwrap(), 2, "{method:?}");
}

#[test]
fn set_and_iterators_from_children_of_every_start_method() {
    for_each_method(set_scenario);
}

#[test]
fn set_methods_follow_python() {
    let m = Manager::start().unwrap();
    let s = m.set::<i64>().unwrap();
    assert!(s.is_empty().unwrap());
    assert_eq!(s.pop().unwrap(), None);
    s.update([1, 2, 3, 4]).unwrap();
    assert_eq!(s.union([4, 5]).unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(s.intersection([4, 2, 9]).unwrap(), [2, 4]);
    assert_eq!(s.difference([1, 2]).unwrap(), [3, 4]);
    assert_eq!(s.symmetric_difference([4, 5]).unwrap(), [1, 2, 3, 5]);
    assert!(s.isdisjoint([7, 8]).unwrap());
    assert!(!s.isdisjoint([4]).unwrap());
    assert!(s.issubset([0, 1, 2, 3, 4]).unwrap());
    assert!(s.issuperset([1, 4]).unwrap());
    assert!(!s.issuperset([1, 9]).unwrap());
    assert_eq!(
        s.len().unwrap(),
        4,
        "the non-mutating methods left it alone"
    );
    s.difference_update([1]).unwrap();
    s.intersection_update([2, 3, 4, 9]).unwrap();
    s.symmetric_difference_update([4, 6]).unwrap();
    assert_eq!(s.to_vec().unwrap(), [2, 3, 6]);
    assert!(s.remove(&6).unwrap());
    assert!(!s.remove(&6).unwrap());
    assert_eq!(s.pop().unwrap(), Some(3));
    // Operators through the plain call, as a Python client sends them.
    let b = s.base();
    let list = |v: &[i64]| multiproc::pickle::Value::List(v.iter().map(|&i| i.into()).collect());
    assert_eq!(
        b.call::<Vec<i64>>("__or__", vec![list(&[5])]).unwrap(),
        [2, 5]
    );
    assert_eq!(
        b.call::<Vec<i64>>("__rsub__", vec![list(&[2, 7])]).unwrap(),
        [7]
    );
    assert!(b.call::<bool>("__lt__", vec![list(&[2, 7])]).unwrap());
    assert!(!b.call::<bool>("__gt__", vec![list(&[2])]).unwrap());
    b.call::<()>("__ior__", vec![list(&[8])]).unwrap();
    assert_eq!(s.to_vec().unwrap(), [2, 8]);
    // Unhashable items are a TypeError, as in Python.
    let e = b
        .call_method("add", vec![multiproc::pickle::Value::List(vec![])])
        .unwrap_err();
    assert!(
        matches!(&e, Error::Remote { kind, .. } if kind == "TypeError"),
        "{e:?}"
    );
    s.clear().unwrap();
    assert_eq!(s.len().unwrap(), 0);
}

#[test]
fn iterators_are_proxies_that_end_and_release_their_objects() {
    let m = Manager::start().unwrap();
    let d = m.dict::<i64, i64>().unwrap();
    d.update((0..5).map(|i| (i, i))).unwrap();
    let it: IteratorProxy<i64> = d.iter().unwrap();
    // The iterator works on the keys as they were.
    d.set(99, 99).unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 2);
    assert_eq!(
        it.collect::<multiproc::Result<Vec<_>>>().unwrap(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(
        m.number_of_objects().unwrap(),
        1,
        "a used-up iterator was dropped"
    );
    // A proxy reply through the plain call is refused and released.
    let e = d.base().call_method("__iter__", vec![]).unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "{e:?}");
    assert_eq!(m.number_of_objects().unwrap(), 1);
    // And a plain answer is not a proxy.
    assert!(
        d.base()
            .call_proxy::<IteratorProxy<i64>>("keys", vec![])
            .is_err()
    );
}

#[test]
fn pipelined_batches_of_large_values_do_not_stall() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, String>().unwrap();
    let big = "x".repeat(100 << 10);
    // 300 requests of 100 KiB each way: batches are cut by size, so
    // neither side waits on a full socket buffer while the other does.
    d.set_many((0..300).map(|k| (k, big.clone()))).unwrap();
    assert_eq!(d.len().unwrap(), 300);
    let keys: Vec<u32> = (0..300).collect();
    let got = d.get_many(keys.iter()).unwrap();
    assert!(got.iter().all(|v| v.as_deref() == Some(big.as_str())));
    assert_eq!(d.get_many([&1000]).unwrap(), [None]);
}
