//! Pool workers measure a task's resource use only when the caller can see
//! it (or a CPU limit needs it). A measured task that follows unmeasured
//! ones must not be charged with what they used.

use multiproc::Pool;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn touch(mib: usize) -> usize {
    let v = vec![1u8; mib * MIB];
    std::hint::black_box(v).len()
}

/// Spins until this thread has used `ms` milliseconds of CPU time (not wall
/// time: on a loaded machine a wall-clock loop gets only part of a core).
fn burn(ms: u64) -> u64 {
    let cpu = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    let start = cpu();
    let mut x = 0u64;
    while cpu() - start < Duration::from_millis(ms) {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    x
}

#[test]
fn a_measured_task_after_a_plain_map_reports_only_its_own_use() {
    let pool = Pool::new(1).unwrap();
    // A measured task first, so that the worker has figures to carry over.
    let r = pool.apply_async(touch, (1,)).unwrap();
    r.wait();
    assert!(r.usage().is_some());
    // Plain maps: nobody can see their usage, so it is not measured.
    assert_eq!(pool.map(touch, [200]).unwrap(), [200 * MIB]);
    assert_eq!(pool.map_chunked(burn, [300u64], 1).unwrap().len(), 1);
    let r = pool.apply_async(touch, (1,)).unwrap();
    r.wait();
    let used = r.usage().expect("an apply_async is measured");
    assert!(used.peak_rss < 100 * MIB as u64, "{used:?}");
    assert!(used.cpu_time < Duration::from_millis(200), "{used:?}");
    r.get().unwrap();
    // A map_async is measured too.
    let r = pool.map_async(burn, [100u64]).unwrap();
    r.wait();
    let used = r.usage().unwrap();
    assert!(used.cpu_time >= Duration::from_millis(50), "{used:?}");
}
