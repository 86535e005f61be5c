//! A partition's idempotent producers at their cap: `cargo bench --bench producers`.
//!
//! A partition remembers at most 20,000 producers (the default `max_producers`); a
//! batch from a producer it does not know makes it forget one to make room. That runs
//! under the partition's lock at the append, so its cost is what a client inventing
//! ids can make every append of that partition wait for. Each iteration records one
//! batch of a new producer on a full partition, as an append does (`make_room`, then
//! `record`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use strom::log::{ProducerInfo, ProducerStates};

const CAP: usize = 20_000;

fn producer(id: i64) -> ProducerInfo {
    ProducerInfo {
        id,
        epoch: 0,
        base_sequence: 0,
    }
}

fn full_partition(c: &mut Criterion) {
    let mut states = ProducerStates::default();
    for id in 0..CAP as i64 {
        states.record(&producer(id), 1, id as u64, id, CAP);
    }
    let mut next = CAP as i64;
    c.bench_function("record a new producer at the cap of 20,000", |b| {
        b.iter(|| {
            states.make_room(next, CAP);
            states.record(black_box(&producer(next)), 1, next as u64, next, CAP);
            next += 1;
        })
    });
    assert!(states.len() <= CAP);
}

criterion_group!(benches, full_partition);
criterion_main!(benches);
