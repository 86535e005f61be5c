//! Tests of `subscriptions.rs`.

use super::*;
use crate::groups::coordinator::Heartbeat;

/// A list of 1,000 names of 200 bytes, different for each `seed`.
fn long_list(seed: usize) -> Subscription {
    let names = (0..1_000).map(|i| format!("{seed:04}-{i:04}-{}", "x".repeat(190)));
    Subscription::Topics(names.collect())
}

/// A heartbeat of `id` (empty to join) at `epoch`, subscribing with `sub`.
fn heartbeat(id: &str, epoch: i64, sub: Subscription, instance: Option<&str>) -> Heartbeat {
    Heartbeat {
        member_id: id.into(),
        member_epoch: epoch,
        subscription: sub,
        instance_id: instance.map(String::from),
        session_timeout_ms: 10_000,
        owned: Vec::new(),
    }
}

#[test]
fn members_subscribing_alike_share_one_copy() {
    let mut subs = Subscriptions::default();
    let first = subs.intern("g", long_list(0), None).unwrap();
    for _ in 0..999 {
        let again = subs.intern("g", long_list(0), None).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }
    assert_eq!(subs.bytes, first.footprint());
    assert_eq!(subs.distinct().count(), 1);
}

#[test]
fn different_subscriptions_are_refused_past_the_cap_until_room_is_freed() {
    let mut subs = Subscriptions::default();
    let size = long_list(0).footprint();
    let fit = MAX_SUBSCRIPTION_BYTES / size;
    let held: Vec<_> = (0..fit)
        .map(|seed| subs.intern("g", long_list(seed), None).unwrap())
        .collect();
    let err = subs.intern("g", long_list(fit), None).unwrap_err();
    assert!(
        matches!(&err, Error::LimitReached(m) if m.contains("group \"g\"") && m.contains("topic_pattern")),
        "{err}"
    );
    // A member alone with its list may swap it for another of the same size.
    let swapped = subs.intern("g", long_list(fit), Some(&held[0])).unwrap();
    subs.release(&held[0]);
    // Two members share the next one: one leaving frees nothing.
    let shared = subs.intern("g", long_list(1), None).unwrap();
    subs.release(&shared);
    assert!(subs.intern("g", long_list(fit + 1), None).is_err());
    // Its last member leaving does.
    subs.release(&held[1]);
    subs.intern("g", long_list(fit + 1), None).unwrap();
    assert_eq!(subs.distinct().count(), fit);
    drop(swapped);
}

/// Through the coordinator: a join refused for the cap changes nothing; a member
/// refused a change of subscription is removed (fenced).
#[test]
fn a_refused_join_changes_nothing_and_a_refused_change_removes_the_member() {
    use crate::groups::coordinator::Membership;
    use crate::groups::TopicsView;
    let view = Arc::new(TopicsView::default());
    let mut group = Membership::new("g", 1_000, Arc::clone(&view));
    let fit = MAX_SUBSCRIPTION_BYTES / long_list(0).footprint();
    let mut answers = Vec::new();
    for seed in 0..fit {
        let hb = heartbeat("", 0, long_list(seed), None);
        answers.push(
            group
                .heartbeat(hb, &view, 0, || format!("m{seed}"))
                .unwrap(),
        );
    }
    let epoch = group.epoch();
    let hb = heartbeat("", 0, long_list(fit), None);
    let err = group.heartbeat(hb, &view, 0, || "late".into()).unwrap_err();
    assert!(matches!(err, Error::LimitReached(_)), "{err}");
    assert_eq!((group.members().count(), group.epoch()), (fit, epoch));
    // Joining with a list the group has costs nothing: m0's list now has two members.
    let hb = heartbeat("", 0, long_list(0), None);
    group.heartbeat(hb, &view, 0, || "twin".into()).unwrap();
    let epoch = group.epoch();
    // So m0 changing to a new list would keep both: refused, and m0 is fenced (kept
    // on, it would hold its partitions without hearing its assignment).
    let m0 = &answers[0];
    let hb = heartbeat(&m0.member_id, m0.member_epoch, long_list(fit), None);
    let err = group.heartbeat(hb, &view, 1, String::new).unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("removed") && m.contains("topic_pattern")),
        "{err}"
    );
    assert!(group.members().all(|m| &*m.id != "m0"));
    assert_eq!(group.epoch(), epoch + 1);
    let epoch = group.epoch();
    let kept = |group: &Membership, id: &str| {
        let member = group.members().find(|m| &*m.id == id).unwrap();
        Subscription::clone(&member.subscription)
    };
    // m1 is alone with its list: it may swap it for a new one.
    let m1 = &answers[1];
    let hb = heartbeat(&m1.member_id, m1.member_epoch, long_list(fit), None);
    group.heartbeat(hb, &view, 1, String::new).unwrap();
    assert!(kept(&group, "m1") == long_list(fit));
    assert_eq!(group.epoch(), epoch + 1);
}

/// A static member that left, then sent a late heartbeat with a subscription the
/// group refuses, has still left: its restart takes its place (the refusal counted
/// it as back, and the restart was told it "has not left").
#[test]
fn a_refused_late_heartbeat_does_not_bring_a_static_member_back() {
    use crate::groups::coordinator::Membership;
    use crate::groups::TopicsView;
    let view = Arc::new(TopicsView::default());
    let mut group = Membership::new("g", 1_000, Arc::clone(&view));
    let fit = MAX_SUBSCRIPTION_BYTES / long_list(0).footprint();
    for seed in 1..fit {
        let hb = heartbeat("", 0, long_list(seed), None);
        group
            .heartbeat(hb, &view, 0, || format!("m{seed}"))
            .unwrap();
    }
    let hb = heartbeat("", 0, long_list(0), Some("i"));
    let s = group.heartbeat(hb, &view, 0, || "s".into()).unwrap();
    let hb = heartbeat("", 0, long_list(0), None);
    group.heartbeat(hb, &view, 0, || "twin".into()).unwrap();
    group.leave("s", &view);
    let late = heartbeat("s", s.member_epoch, long_list(fit), Some("i"));
    assert!(group.heartbeat(late, &view, 1, String::new).is_err());
    let restart = heartbeat("", 0, long_list(0), Some("i"));
    group.heartbeat(restart, &view, 2, || "s2".into()).unwrap();
}

/// Groups share the server's cap: a group is refused once the others hold it, and
/// gets room back as they release theirs or are dropped.
#[test]
fn groups_share_the_servers_cap() {
    let size = long_list(0).footprint();
    let server = Arc::new(SubscriptionTally::new(3 * size));
    let mut a = Subscriptions::counted_in(Arc::clone(&server));
    let mut b = Subscriptions::counted_in(Arc::clone(&server));
    let held = a.intern("a", long_list(0), None).unwrap();
    a.intern("a", long_list(1), None).unwrap();
    b.intern("b", long_list(2), None).unwrap();
    let err = b.intern("b", long_list(3), None).unwrap_err();
    assert!(
        matches!(&err, Error::LimitReached(m) if m.contains("server")),
        "{err}"
    );
    // A member alone with its list may swap it at the cap.
    let swapped = a.intern("a", long_list(4), Some(&held)).unwrap();
    a.release(&held);
    assert!(b.intern("b", long_list(5), None).is_err());
    a.release(&swapped);
    b.intern("b", long_list(5), None).unwrap();
    assert!(b.intern("b", long_list(6), None).is_err());
    drop(a);
    b.intern("b", long_list(6), None).unwrap();
    drop(b);
    assert_eq!(server.bytes.load(Ordering::Relaxed), 0);
}

/// Through the coordinator: a member fenced for the server's cap is told so.
#[test]
fn a_member_refused_for_the_servers_cap_is_told_which_cap() {
    use crate::groups::coordinator::Membership;
    use crate::groups::TopicsView;
    let view = Arc::new(TopicsView::default());
    let server = Arc::new(SubscriptionTally::new(2 * long_list(0).footprint()));
    let mut groups: Vec<Membership> = ["a", "b"]
        .iter()
        .map(|g| Membership::new(g, 1_000, Arc::clone(&view)).counted_in(Arc::clone(&server)))
        .collect();
    let m = groups[0]
        .heartbeat(heartbeat("", 0, long_list(0), None), &view, 0, || {
            "m".into()
        })
        .unwrap();
    groups[0]
        .heartbeat(heartbeat("", 0, long_list(0), None), &view, 0, || {
            "twin".into()
        })
        .unwrap();
    groups[1]
        .heartbeat(heartbeat("", 0, long_list(1), None), &view, 0, || {
            "n".into()
        })
        .unwrap();
    let hb = heartbeat("m", m.member_epoch, long_list(2), None);
    let err = groups[0].heartbeat(hb, &view, 1, String::new).unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("removed") && m.contains("the server keeps")),
        "{err}"
    );
}
