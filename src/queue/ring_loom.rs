//! Loom models of the queue protocol (`cargo test --lib` with
//! `RUSTFLAGS="--cfg loom"`, see `.ci/run`): the real `Core` put/get code
//! runs on a ring whose every 8-byte word is a loom cell, so that loom
//! checks, over all interleavings it explores, that no consumer reads
//! bytes a producer has not published (and the reverse), that no item is
//! lost, duplicated or reordered, and that no sleeper misses its wake
//! (a lost wake is a deadlock loom reports; see `sync/shim.rs` for the
//! futex model). Records are 8-byte aligned and padded, so word cells
//! match what the protocol hands out exactly.
#![allow(unsafe_code)]

use super::{Core, QueueState, RingMem};
use crate::mem::shim::Ordering;
use crate::mem::shim::model;
use crate::sys;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

struct ModelMem {
    state: QueueState,
    words: Box<[UnsafeCell<u64>]>,
}

// SAFETY: `ring_len` is the bytes of `words`, owned by the value.
unsafe impl RingMem for ModelMem {
    fn state(&self) -> &QueueState {
        &self.state
    }

    fn ring_len(&self) -> usize {
        self.words.len() * 8
    }

    unsafe fn write(&self, off: usize, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let pos = off + done;
            let (w, b) = (pos / 8, pos % 8);
            let n = (8 - b).min(data.len() - done);
            self.words[w].with_mut(|p| {
                // SAFETY: loom checks that this access does not race with
                // any other access to the word (the point of the model);
                // `b + n <= 8` stays inside the word.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr().add(done), p.cast::<u8>().add(b), n)
                }
            });
            done += n;
        }
    }

    unsafe fn read(&self, off: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let pos = off + done;
            let (w, b) = (pos / 8, pos % 8);
            let n = (8 - b).min(out.len() - done);
            self.words[w].with(|p| {
                // SAFETY: as in `write`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        p.cast::<u8>().add(b),
                        out.as_mut_ptr().add(done),
                        n,
                    )
                }
            });
            done += n;
        }
    }

    // The loom cells cannot be lent as one slice: the protocol copies.
    unsafe fn slice(&self, _: usize, _: usize) -> Option<&[u8]> {
        None
    }

    unsafe fn slice_mut(&self, _: usize, _: usize) -> Option<&mut [u8]> {
        None
    }
}

/// A queue with a `cap`-byte ring (no item limit), in model memory.
fn queue(cap: u64) -> Arc<Core<ModelMem>> {
    let state = QueueState::default();
    state.cap.store(cap, Ordering::Relaxed);
    let words = (0..cap / 8).map(|_| UnsafeCell::new(0)).collect();
    let (fd_tx, fd_rx) = sys::socketpair(sys::SocketKind::SeqPacket).expect("socketpair");
    let notify = sys::eventfd().expect("eventfd");
    let mem = ModelMem { state, words };
    Arc::new(Core::from_parts(mem, fd_tx, fd_rx, notify).expect("valid ring"))
}

fn item(i: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| i.wrapping_mul(31).wrapping_add(k as u8))
        .collect()
}

fn put(q: &Core<ModelMem>, bytes: &[u8]) {
    assert!(q.put(bytes, &[], None).is_ok(), "put failed");
}

fn get(q: &Core<ModelMem>) -> Vec<u8> {
    match q.get(None, |b, _| Ok(b.to_vec())) {
        Ok(v) => v,
        Err(_) => panic!("get failed"),
    }
}

/// One producer, one consumer, a 64-byte ring and two 40-byte records:
/// the second wraps around the end of the ring and needs the space the
/// consumer frees (the producer sleeps for it while the consumer sleeps
/// for data at first).
#[test]
fn loom_ring_publish_consume_wraps() {
    loom::model(|| {
        let q = queue(64);
        let p = q.clone();
        let producer = thread::spawn(move || {
            model::be(2);
            put(&p, &item(1, 16));
            put(&p, &item(2, 16));
        });
        assert_eq!(get(&q), item(1, 16));
        assert_eq!(get(&q), item(2, 16));
        producer.join().unwrap();
        assert!(q.is_empty());
        assert_eq!(q.qsize(), 0);
    });
}

/// Two producers race for the put lock and the room in a ring that holds
/// one of their items at a time; the consumer gets both, whole, once each.
#[test]
fn loom_ring_two_producers() {
    loom::model(|| {
        let q = queue(64);
        let producers: Vec<_> = (0..2u8)
            .map(|i| {
                let p = q.clone();
                thread::spawn(move || {
                    model::be(2 + u32::from(i));
                    put(&p, &item(i, 24));
                })
            })
            .collect();
        let mut got = vec![get(&q), get(&q)];
        for p in producers {
            p.join().unwrap();
        }
        got.sort();
        let mut want = vec![item(0, 24), item(1, 24)];
        want.sort();
        assert_eq!(got, want);
    });
}

/// An item larger than the ring is streamed in chunks while the consumer
/// drains it: the consumer assembles it exactly.
#[test]
fn loom_ring_streamed_item() {
    loom::model(|| {
        let q = queue(64);
        let p = q.clone();
        let producer = thread::spawn(move || {
            model::be(2);
            put(&p, &item(7, 48));
        });
        assert_eq!(get(&q), item(7, 48));
        producer.join().unwrap();
        assert!(q.is_empty());
    });
}
