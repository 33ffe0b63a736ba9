use multiproc::*;

fn add(a: i32, b: i32) -> i32 {
    a + b
}
fn boom() -> i32 {
    panic!("kaboom {}", 7)
}

#[test]
fn smoke_all_methods() {
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let t = std::time::Instant::now();
        let mut p = Process::new(add, (2, 3)).start_method(m);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(p.take_result().unwrap(), 5);
        let mut q = Process::new(boom, ()).start_method(m);
        q.start().unwrap();
        q.join().unwrap();
        assert_eq!(q.exitcode(), Some(1));
        let e = q.take_result().unwrap_err();
        eprintln!("{m}: {e} ({:?})", t.elapsed());
    }
}
