"""CPython's multiprocessing on the operations of benches/sync.rs, for the
side-by-side table in BENCHMARKS.md. Run: python3 benches/cpython_sync.py"""
import multiprocessing as mp
import statistics
import time


def median_ns(fn, n, repeat=7):
    runs = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        fn(n)
        runs.append((time.perf_counter_ns() - t) / n)
    return statistics.median(runs)


def lock_loop(lock, n):
    for _ in range(n):
        lock.acquire()
        lock.release()


def value_loop(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def incr(v, start, n, out):
    start.wait()
    t = time.perf_counter_ns()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    out.put(time.perf_counter_ns() - t)


def pong(ping, pongev, start, n):
    start.wait()
    for _ in range(n):
        ping.wait()
        ping.clear()
        pongev.set()


def main():
    ctx = mp.get_context("forkserver")
    lock = ctx.Lock()
    print(f"uncontended Lock acquire+release: {median_ns(lambda n: lock_loop(lock, n), 200_000):.0f} ns")
    v = ctx.Value("q", 0)
    per = median_ns(lambda n: value_loop(v, n), 200_000)
    print(f"Value('q') increment under its lock: {per:.0f} ns = {1e9 / per / 1e6:.2f} M ops/s")

    times = []
    for _ in range(5):
        v = ctx.Value("q", 0)
        start, out = ctx.Barrier(2), ctx.Queue()
        ps = [ctx.Process(target=incr, args=(v, start, 100_000, out)) for _ in range(2)]
        for p in ps:
            p.start()
        times.append(max(out.get(), out.get()))
        for p in ps:
            p.join()
        assert v.value == 200_000
    print(f"2 processes x 100,000 locked increments: {statistics.median(times) / 1e6:.1f} ms")

    rounds = 20_000
    runs = []
    for _ in range(5):
        ping, pongev, start = ctx.Event(), ctx.Event(), ctx.Barrier(2)
        p = ctx.Process(target=pong, args=(ping, pongev, start, rounds))
        p.start()
        start.wait()
        t = time.perf_counter_ns()
        for _ in range(rounds):
            ping.set()
            pongev.wait()
            pongev.clear()
        runs.append((time.perf_counter_ns() - t) / rounds)
        p.join()
    print(f"Event ping-pong round trip: {statistics.median(runs) / 1000:.1f} us")


if __name__ == "__main__":
    main()
