//! A consumer group's rebalance, in the coordinator alone: `cargo bench --bench rebalance`.
//!
//! A group of 999 members over 1,000 single-partition topics; each iteration one member
//! joins and leaves again, so each costs two new target assignments (what a join or a
//! leave costs the request thread that carries it). Members subscribe by one pattern
//! that matches every topic, or each by a list of all 1,000 names.
//!
//! Then, in the settled group: one member's heartbeat that changes nothing, and the
//! membership's bytes (`Membership::saved`), which the server makes after every
//! heartbeat to see whether the group's `members` file must be written again.

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

/// A member's epoch and what it owns, by topic name.
type Owned = (i64, Vec<(String, Vec<u32>)>);

/// Heartbeats every member with what it owns until a pass changes nothing.
fn settle(group: &mut Membership, view: &Arc<TopicsView>, sub: &Subscription) {
    let ids: Vec<String> = group.members().map(|m| m.id.to_string()).collect();
    let mut state: Vec<Owned> = vec![(0, Vec::new()); ids.len()];
    for (i, id) in ids.iter().enumerate() {
        state[i].0 = group.members().find(|m| &*m.id == id).unwrap().epoch;
    }
    for _ in 0..5 {
        for (i, id) in ids.iter().enumerate() {
            state[i] = beat(group, view, sub, id, &state[i]);
        }
    }
}

fn beat(
    group: &mut Membership,
    view: &Arc<TopicsView>,
    sub: &Subscription,
    id: &str,
    (epoch, owned): &Owned,
) -> Owned {
    let hb = Heartbeat {
        member_id: id.to_string(),
        member_epoch: *epoch,
        subscription: sub.clone(),
        instance_id: None,
        session_timeout_ms: 45_000,
        owned: owned.clone(),
    };
    let answer = group
        .heartbeat(hb, view, 0, || unreachable!())
        .expect("a member");
    let owned = answer
        .assignment
        .iter()
        .map(|(topic, p)| (view.name_of(*topic).unwrap().to_string(), vec![*p]))
        .collect();
    (answer.member_epoch, owned)
}

fn steady(c: &mut Criterion, name: &str, sub: Subscription) {
    let view = view();
    let mut group = Membership::new("g", 5_000, Arc::clone(&view));
    for m in 0..MEMBERS {
        join(&mut group, &view, &sub, format!("m{m:04}"));
    }
    settle(&mut group, &view, &sub);
    let first = group.members().next().unwrap();
    let mut state = (first.epoch, Vec::new());
    let id = first.id.to_string();
    state = beat(&mut group, &view, &sub, &id, &state);
    c.bench_function(&format!("steady heartbeat, {name}"), |b| {
        b.iter(|| black_box(beat(&mut group, &view, &sub, &id, &state)))
    });
    c.bench_function(&format!("saved(), {name}"), |b| {
        b.iter(|| black_box(group.saved().len()))
    });
    eprintln!("saved(), {name}: {} bytes", group.saved().len());
}

fn benches(c: &mut Criterion) {
    let pattern = subscription(Vec::new(), "t.*").expect("valid");
    rebalance(c, "join+leave, 1000 members, 1000 topics, pattern", pattern);
    let names = (0..TOPICS).map(|i| format!("t{i:04}")).collect();
    let names = subscription(names, "").expect("valid");
    rebalance(c, "join+leave, 1000 members, 1000 topics, names", names);
    let pattern = subscription(Vec::new(), "t.*").expect("valid");
    steady(c, "1000 members, 1000 topics, pattern", pattern);
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(group);
