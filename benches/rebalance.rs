//! A consumer group's rebalance, in the coordinator alone: `cargo bench --bench rebalance`.
//!
//! A group of 999 members over 1,000 single-partition topics; each iteration one member
//! joins and leaves again, so each costs two new target assignments (what a join or a
//! leave costs the request thread that carries it). Members subscribe by one pattern
//! that matches every topic, or each by a list of all 1,000 names.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use strom::broker::TopicMeta;
use strom::groups::{subscription, Heartbeat, Membership, Subscription, TopicsView};

const MEMBERS: usize = 999;
const TOPICS: usize = 1_000;

fn view() -> Arc<TopicsView> {
    let metas = (0..TOPICS)
        .map(|i| TopicMeta {
            name: format!("t{i:04}"),
            id: format!("{:032x}", i + 1),
            partitions: 1,
        })
        .collect();
    Arc::new(TopicsView::new(1, metas))
}

fn join(group: &mut Membership, view: &Arc<TopicsView>, sub: &Subscription, id: String) {
    let hb = Heartbeat {
        member_id: String::new(),
        member_epoch: 0,
        subscription: sub.clone(),
        instance_id: None,
        session_timeout_ms: 45_000,
        owned: Vec::new(),
    };
    group.heartbeat(hb, view, 0, || id).expect("joins");
}

fn rebalance(c: &mut Criterion, name: &str, sub: Subscription) {
    let view = view();
    let mut group = Membership::new("g", 5_000, Arc::clone(&view));
    for m in 0..MEMBERS {
        join(&mut group, &view, &sub, format!("m{m:04}"));
    }
    c.bench_function(name, |b| {
        b.iter(|| {
            join(&mut group, &view, &sub, "joiner".into());
            group.leave("joiner", &view);
            black_box(group.epoch())
        })
    });
}

fn benches(c: &mut Criterion) {
    let pattern = subscription(Vec::new(), "t.*").expect("valid");
    rebalance(c, "join+leave, 1000 members, 1000 topics, pattern", pattern);
    let names = (0..TOPICS).map(|i| format!("t{i:04}")).collect();
    let names = subscription(names, "").expect("valid");
    rebalance(c, "join+leave, 1000 members, 1000 topics, names", names);
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(group);
