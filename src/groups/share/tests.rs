//! The share-partition state machine: scenarios, and a model test over random fetches,
//! acknowledgements, time, departures and restarts (replayed from the journal bytes).

use std::collections::HashMap;

use proptest::prelude::*;

use super::config::ShareConfig;
use super::state::ShareState;
use super::window::{
    key_hash, Ack, Candidate, Change, MemberIdx, Offered, Refusal, SharePartition, Want,
};
use crate::groups::store::Journaled;

fn cfg() -> ShareConfig {
    ShareConfig {
        lock_ms: 1000,
        max_deliveries: 3,
        max_in_flight: 100,
        ..ShareConfig::default()
    }
}

fn plain(offsets: std::ops::Range<u64>) -> Vec<Candidate> {
    offsets
        .map(|offset| Candidate {
            offset,
            key: 0,
            deliver_at: 0,
            size: 10,
        })
        .collect()
}

/// Records at offsets 0, 1, ... with these key hashes (0: no key).
fn keyed(keys: &[u64]) -> Vec<Candidate> {
    keys.iter()
        .enumerate()
        .map(|(i, &key)| Candidate {
            offset: i as u64,
            key,
            deliver_at: 0,
            size: 10,
        })
        .collect()
}

/// `acquire` of `records` as a read of exactly their offsets, with no byte limit.
fn acq(
    p: &mut SharePartition,
    member: MemberIdx,
    records: &[Candidate],
    max: usize,
    now: i64,
    c: &ShareConfig,
    ch: &mut Vec<Change>,
) -> Vec<(u64, u16)> {
    let offered = Offered {
        from: records.first().map_or(0, |r| r.offset),
        end: records.last().map_or(0, |r| r.offset + 1),
        records,
    };
    p.acquire(member, offered, Want::records(max), now, c, ch)
}

#[test]
fn a_record_goes_to_one_member_until_its_lock_ends_then_to_another_with_its_count_up() {
    let (c, mut ch) = (cfg(), Vec::new());
    let mut p = SharePartition::new(0);
    assert_eq!(
        acq(&mut p, 1, &plain(0..3), 10, 0, &c, &mut ch),
        [(0, 1), (1, 1), (2, 1)]
    );
    assert!(acq(&mut p, 2, &plain(0..3), 10, 500, &c, &mut ch).is_empty());
    assert_eq!(p.next_wake(500), Some(1000));
    assert!(p.expire(1000, &c, &mut ch));
    assert_eq!(
        acq(&mut p, 2, &plain(0..3), 2, 1000, &c, &mut ch),
        [(0, 2), (1, 2)]
    );
    // The first member's lock is gone: its acknowledgement is refused.
    assert_eq!(
        p.acknowledge(1, 0, Ack::Accept, 1001, &c, &mut ch),
        Err(Refusal::NotHeld)
    );
    p.acknowledge(2, 0, Ack::Accept, 1001, &c, &mut ch).unwrap();
    assert_eq!(p.start(), 1);
    assert_eq!(
        p.acknowledge(2, 0, Ack::Accept, 1001, &c, &mut ch),
        Err(Refusal::Finished)
    );
    assert_eq!(
        p.acknowledge(2, 50, Ack::Accept, 1001, &c, &mut ch),
        Err(Refusal::NotDelivered)
    );
}

fn dying(p: &mut SharePartition) -> Vec<(u64, u16, bool)> {
    p.dying()
        .iter()
        .map(|d| (d.offset, d.count, d.rejected))
        .collect()
}

#[test]
fn release_reject_and_the_delivery_limit() {
    let c = ShareConfig {
        backoff_ms: 100,
        ..cfg()
    };
    let mut ch = Vec::new();
    let mut p = SharePartition::new(0);
    assert_eq!(
        acq(&mut p, 1, &plain(0..2), 10, 0, &c, &mut ch),
        [(0, 1), (1, 1)]
    );
    p.acknowledge(1, 1, Ack::Reject, 1, &c, &mut ch).unwrap();
    assert_eq!(dying(&mut p), [(1, 1, true)]);
    p.acknowledge(1, 0, Ack::Release, 1, &c, &mut ch).unwrap();
    // The backoff doubles per delivery: 100 ms, then 200.
    assert!(acq(&mut p, 1, &plain(0..2), 10, 100, &c, &mut ch).is_empty());
    assert_eq!(acq(&mut p, 1, &plain(0..2), 10, 101, &c, &mut ch), [(0, 2)]);
    p.acknowledge(1, 0, Ack::Release, 101, &c, &mut ch).unwrap();
    assert!(acq(&mut p, 1, &plain(0..2), 10, 300, &c, &mut ch).is_empty());
    assert_eq!(acq(&mut p, 1, &plain(0..2), 10, 301, &c, &mut ch), [(0, 3)]);
    p.acknowledge(1, 0, Ack::Release, 301, &c, &mut ch).unwrap();
    // Third delivery released: out of deliveries, dead-lettered, not handed out.
    assert_eq!(dying(&mut p), [(0, 3, false), (1, 1, true)]);
    assert!(acq(&mut p, 1, &plain(0..2), 10, 99_999, &c, &mut ch).is_empty());
    p.dead_lettered(0, &mut ch);
    p.dead_lettered(1, &mut ch);
    assert_eq!(p.start(), 2);
    assert_eq!(p.counts(0, 2).dead_lettered, 2);
}

#[test]
fn a_lock_taken_back_is_available_at_once_with_its_delivery_uncounted() {
    let (c, mut ch) = (cfg(), Vec::new());
    let mut p = SharePartition::new(0);
    assert_eq!(
        acq(&mut p, 1, &plain(0..2), 10, 0, &c, &mut ch),
        [(0, 1), (1, 1)]
    );
    assert!(!p.unacquire(2, 0, &mut ch), "not member 2's");
    assert!(p.unacquire(1, 0, &mut ch));
    assert!(!p.unacquire(1, 0, &mut ch), "taken back already");
    assert_eq!(p.in_flight(), 1);
    assert_eq!(acq(&mut p, 2, &plain(0..2), 10, 1, &c, &mut ch), [(0, 1)]);
    // The journal keeps the counts: each record was delivered once (locks end at a
    // restart).
    let mut journal = vec![Change::Reset {
        offset: 0,
        totals: Default::default(),
    }];
    journal.append(&mut ch);
    let mut back = replayed(&journal);
    assert_eq!(
        acq(&mut back, 3, &plain(0..2), 10, 2, &c, &mut ch),
        [(0, 2), (1, 2)]
    );
}

#[test]
fn renew_extends_a_lock() {
    let (c, mut ch) = (cfg(), Vec::new());
    let mut p = SharePartition::new(0);
    acq(&mut p, 1, &plain(0..1), 10, 0, &c, &mut ch);
    p.acknowledge(1, 0, Ack::Renew, 900, &c, &mut ch).unwrap();
    p.expire(1500, &c, &mut ch);
    p.acknowledge(1, 0, Ack::Accept, 1800, &c, &mut ch).unwrap();
}

#[test]
fn the_window_bounds_what_is_handed_out_past_an_unfinished_record() {
    let c = ShareConfig {
        max_in_flight: 3,
        ..cfg()
    };
    let mut ch = Vec::new();
    let mut p = SharePartition::new(10);
    assert_eq!(acq(&mut p, 1, &plain(10..20), 10, 0, &c, &mut ch).len(), 3);
    assert_eq!(p.next_candidate(0, &c, 20), None);
    p.acknowledge(1, 11, Ack::Accept, 1, &c, &mut ch).unwrap();
    assert_eq!(
        p.next_candidate(1, &c, 20),
        None,
        "10 still holds the window"
    );
    p.acknowledge(1, 10, Ack::Accept, 1, &c, &mut ch).unwrap();
    assert_eq!(p.start(), 12);
    assert_eq!(p.next_candidate(1, &c, 20), Some(13));
}

#[test]
fn key_order_holds_back_later_records_of_a_key() {
    let c = ShareConfig {
        key_ordered: true,
        ..cfg()
    };
    let (a, b) = (key_hash(Some(b"a")), key_hash(Some(b"b")));
    let records = keyed(&[a, a, b, a, 0]);
    let mut ch = Vec::new();
    let mut p = SharePartition::new(0);
    let got: Vec<u64> = acq(&mut p, 1, &records, 10, 0, &c, &mut ch)
        .iter()
        .map(|g| g.0)
        .collect();
    assert_eq!(got, [0, 2, 4]);
    assert!(acq(&mut p, 2, &records, 10, 0, &c, &mut ch).is_empty());
    p.acknowledge(1, 0, Ack::Accept, 1, &c, &mut ch).unwrap();
    assert_eq!(acq(&mut p, 2, &records, 10, 1, &c, &mut ch), [(1, 1)]);
}

#[test]
fn delayed_records_wait_for_their_time() {
    let (c, mut ch) = (cfg(), Vec::new());
    let mut p = SharePartition::new(0);
    let records = [
        Candidate {
            offset: 0,
            key: 0,
            deliver_at: 5000,
            size: 10,
        },
        Candidate {
            offset: 1,
            key: 0,
            deliver_at: 0,
            size: 10,
        },
    ];
    assert_eq!(acq(&mut p, 1, &records, 10, 0, &c, &mut ch), [(1, 1)]);
    assert_eq!(p.next_wake(0), Some(1000));
    assert_eq!(acq(&mut p, 1, &records, 10, 4999, &c, &mut ch), []);
    assert_eq!(acq(&mut p, 1, &records, 10, 5000, &c, &mut ch), [(0, 1)]);
}

#[test]
fn retention_past_the_start_counts_what_was_lost() {
    let (c, mut ch) = (cfg(), Vec::new());
    let mut p = SharePartition::new(0);
    acq(&mut p, 1, &plain(0..4), 10, 0, &c, &mut ch);
    p.acknowledge(1, 1, Ack::Accept, 0, &c, &mut ch).unwrap();
    p.lose_below(6, &mut ch);
    // 0, 2, 3 were locked and 4, 5 never handed out: 5 lost; 1 was accepted.
    let counts = p.counts(0, 6);
    assert_eq!((counts.start, counts.lost, counts.accepted), (6, 5, 1));
    assert_eq!(p.in_flight(), 0);
}

/// The journal of `changes`, replayed into a fresh state, as a restart does.
fn replayed(changes: &[Change]) -> SharePartition {
    let tp = (7u128, 0u32);
    let entries: Vec<_> = changes.iter().map(|c| (tp, *c)).collect();
    let bytes = ShareState::encode_record(0, &entries);
    let (records, _, _) = ShareState::replay(&bytes, 0);
    let mut state = ShareState::default();
    for r in records {
        state.apply(r);
    }
    state.partitions.remove(&tp).unwrap_or_default()
}

#[derive(Debug, Clone)]
enum Op {
    Fetch {
        member: u32,
        max: usize,
    },
    Ack {
        member: u32,
        pick: usize,
        ack: u8,
    },
    /// A fetch that locked records and never answered takes its lock back.
    Unacquire {
        member: u32,
        pick: usize,
    },
    Tick(i64),
    Leave(u32),
    Restart {
        snapshot: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..4, 1usize..5).prop_map(|(member, max)| Op::Fetch { member, max }),
        5 => (1u32..4, 0usize..64, 0u8..4).prop_map(|(member, pick, ack)| Op::Ack { member, pick, ack }),
        1 => (1u32..4, 0usize..64).prop_map(|(member, pick)| Op::Unacquire { member, pick }),
        3 => (1i64..1500).prop_map(Op::Tick),
        1 => (1u32..4).prop_map(Op::Leave),
        1 => any::<bool>().prop_map(|snapshot| Op::Restart { snapshot }),
    ]
}

/// What the model knows of each record.
#[derive(Debug, Clone, Default)]
struct Known {
    holder: Option<(u32, i64)>,
    count: u16,
    accepted: bool,
    dead: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn model(
        keys in proptest::collection::vec(0u64..4, 24),
        delays in proptest::collection::vec(prop_oneof![4 => Just(0i64), 1 => 1i64..3000], 24),
        key_ordered in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let c = ShareConfig { key_ordered, backoff_ms: 50, max_in_flight: 10, ..cfg() };
        let records: Vec<Candidate> = keys.iter().zip(&delays).enumerate().map(|(i, (&k, &d))| Candidate {
            offset: i as u64,
            key: if k == 0 { 0 } else { key_hash(Some(&[k as u8])) },
            deliver_at: d,
            size: 10,
        }).collect();
        let hw = records.len() as u64;
        let mut p = SharePartition::new(0);
        // As the server does, the partition's first journaled change is its start.
        let mut journal: Vec<Change> = vec![Change::Reset { offset: 0, totals: Default::default() }];
        let mut known: HashMap<u64, Known> = HashMap::new();
        let mut now = 0i64;
        // Members get a new number after a restart, as the server's do.
        let mut epoch = 0u32;
        let idx = |m: u32, epoch: u32| epoch * 10 + m;
        for op in ops {
            let mut ch = Vec::new();
            // The driver ends expired locks before every operation.
            p.expire(now, &c, &mut ch);
            for k in known.values_mut() {
                if k.holder.is_some_and(|(_, until)| until <= now) {
                    k.holder = None;
                    k.dead |= k.count >= c.max_deliveries;
                }
            }
            match op {
                Op::Fetch { member, max } => {
                    let Some(from) = p.next_candidate(now, &c, hw) else { continue };
                    let offered = Offered { from, end: hw, records: &records[from as usize..] };
                    for (offset, count) in p.acquire(idx(member, epoch), offered, Want::records(max), now, &c, &mut ch) {
                        let k = known.get(&offset).cloned().unwrap_or_default();
                        prop_assert!(k.holder.is_none(), "{offset} handed out while locked");
                        prop_assert!(!k.accepted && !k.dead, "{offset} handed out after it finished");
                        prop_assert_eq!(count, k.count + 1);
                        prop_assert!(count <= c.max_deliveries);
                        let r = records[offset as usize];
                        prop_assert!(k.count > 0 || now >= r.deliver_at, "{offset} before its time");
                        if key_ordered && r.key != 0 {
                            for earlier in &records[..offset as usize] {
                                if earlier.key == r.key {
                                    let e = known.get(&earlier.offset).cloned().unwrap_or_default();
                                    prop_assert!(e.accepted || e.dead, "{offset} before {} of its key", earlier.offset);
                                }
                            }
                        }
                        let k = known.entry(offset).or_default();
                        k.count = count;
                        k.holder = Some((idx(member, epoch), now + c.lock_ms as i64));
                    }
                }
                Op::Ack { member, pick, ack } => {
                    let offset = (pick % records.len()) as u64;
                    let ack = [Ack::Accept, Ack::Release, Ack::Reject, Ack::Renew][ack as usize];
                    let me = idx(member, epoch);
                    let result = p.acknowledge(me, offset, ack, now, &c, &mut ch);
                    let k = known.entry(offset).or_default();
                    let holds = k.holder.is_some_and(|(m, until)| m == me && until > now);
                    prop_assert_eq!(result.is_ok(), holds, "ack {:?} of {} by {}: {:?}", ack, offset, me, result);
                    if holds {
                        match ack {
                            Ack::Accept => { k.accepted = true; k.holder = None; }
                            Ack::Reject => { k.dead = true; k.holder = None; }
                            Ack::Release => { k.holder = None; k.dead = k.count >= c.max_deliveries; }
                            Ack::Renew => k.holder = Some((me, now + c.lock_ms as i64)),
                        }
                    }
                }
                Op::Unacquire { member, pick } => {
                    let offset = (pick % records.len()) as u64;
                    let me = idx(member, epoch);
                    let k = known.entry(offset).or_default();
                    let holds = k.holder.is_some_and(|(m, _)| m == me);
                    prop_assert_eq!(p.unacquire(me, offset, &mut ch), holds, "unacquire of {} by {}", offset, me);
                    if holds {
                        k.holder = None;
                        k.count -= 1;
                    }
                }
                Op::Tick(ms) => now += ms,
                Op::Leave(member) => {
                    let me = idx(member, epoch);
                    p.release_members(&std::collections::HashSet::from([me]), now, &c, &mut ch);
                    for k in known.values_mut() {
                        if k.holder.is_some_and(|(m, _)| m == me) {
                            k.holder = None;
                            k.dead |= k.count >= c.max_deliveries;
                        }
                    }
                }
                Op::Restart { snapshot } => {
                    journal.append(&mut ch);
                    if snapshot {
                        journal.clear();
                        p.snapshot(&mut journal);
                    }
                    p = replayed(&journal);
                    let start = p.start();
                    let window: Vec<Candidate> = records[start as usize..p.end() as usize].to_vec();
                    p.restore_records(&window, &mut journal);
                    epoch += 1;
                    for k in known.values_mut() {
                        // A record locked on its last delivery is out of deliveries.
                        k.dead |= k.holder.is_some() && k.count >= c.max_deliveries;
                        k.holder = None;
                    }
                }
            }
            // Owed dead letters are delivered at once (no dead-letter topic).
            for d in p.dying() {
                p.dead_lettered(d.offset, &mut ch);
            }
            journal.append(&mut ch);
            for (offset, k) in &known {
                if *offset < p.start() {
                    prop_assert!(k.accepted || k.dead || k.count == 0, "{offset} below the start unfinished: {k:?}");
                }
            }
            prop_assert!(p.end() - p.start() <= c.max_in_flight as u64);
        }
    }
}

#[test]
fn a_damaged_journal_cannot_make_a_window_of_billions_of_slots() {
    let far = Change::Slot {
        offset: u64::MAX - 5,
        state: super::window::State::Accepted,
        count: 1,
        until: 0,
    };
    let reset = Change::Reset {
        offset: 10,
        totals: Default::default(),
    };
    let p = replayed(&[reset, far]);
    assert_eq!((p.start(), p.end()), (10, 10));
}

#[test]
fn slots_whose_records_were_compacted_away_are_finished_when_read_past() {
    let (c, mut ch) = (cfg(), Vec::new());
    let mut p = SharePartition::new(0);
    assert_eq!(acq(&mut p, 1, &plain(0..3), 10, 0, &c, &mut ch).len(), 3);
    p.acknowledge(1, 1, Ack::Release, 0, &c, &mut ch).unwrap();
    p.acknowledge(1, 0, Ack::Accept, 0, &c, &mut ch).unwrap();
    // Compaction removed offset 1 since: a read of 1..5 has only 2, 3 and 4.
    let read = [plain(3..5)].concat();
    let offered = Offered {
        from: 1,
        end: 5,
        records: &read,
    };
    let got = p.acquire(2, offered, Want::records(10), 1, &c, &mut ch);
    assert_eq!(got, [(3, 1), (4, 1)]);
    assert_eq!(p.start(), 2, "1 is finished, 2 is still locked");
}

#[test]
fn a_byte_budget_bounds_what_one_fetch_takes_but_never_below_one_record() {
    let (c, mut ch) = (cfg(), Vec::new());
    let mut p = SharePartition::new(0);
    let records = plain(0..10); // 10 bytes each
    let offered = Offered {
        from: 0,
        end: 10,
        records: &records,
    };
    let want = |bytes, first_may_exceed| Want {
        records: 100,
        bytes,
        first_may_exceed,
    };
    assert_eq!(
        p.acquire(1, offered, want(35, true), 0, &c, &mut ch).len(),
        3
    );
    let rest = &records[3..];
    let offered = Offered {
        from: 3,
        end: 10,
        records: rest,
    };
    // A later partition of an answer that has records already: nothing over the bytes
    // left, or three partitions of 7 MiB records made a 21 MiB answer the server could
    // not send (a review).
    assert!(p
        .acquire(1, offered, want(1, false), 0, &c, &mut ch)
        .is_empty());
    assert_eq!(
        p.acquire(1, offered, want(1, true), 0, &c, &mut ch).len(),
        1
    );
}

#[test]
fn a_log_shorter_than_the_window_cuts_it_back() {
    let (c, mut ch) = (cfg(), Vec::new());
    let mut p = SharePartition::new(0);
    acq(&mut p, 1, &plain(0..6), 10, 0, &c, &mut ch);
    p.acknowledge(1, 0, Ack::Accept, 0, &c, &mut ch).unwrap();
    // A power cut took back offsets 4 and 5 (never fsynced).
    p.fit_to_log(4, &mut ch);
    assert_eq!((p.start(), p.end(), p.in_flight()), (1, 4, 3));
    assert_eq!(p.counts(0, 4).lost, 2);
    // Replay agrees.
    let mut journal = vec![Change::Reset {
        offset: 0,
        totals: Default::default(),
    }];
    journal.extend(ch);
    let again = replayed(&journal);
    assert_eq!((again.start(), again.end()), (1, 4));
    // All of it gone: the window starts again at the log's end.
    p.fit_to_log(0, &mut Vec::new());
    assert_eq!((p.start(), p.end(), p.in_flight()), (0, 0, 0));
}

#[test]
fn a_key_blocked_record_does_not_hide_the_records_after_it() {
    let c = ShareConfig {
        key_ordered: true,
        ..cfg()
    };
    let a = key_hash(Some(b"a"));
    let records = keyed(&[a, a, 0]);
    let mut ch = Vec::new();
    let mut p = SharePartition::new(0);
    assert_eq!(acq(&mut p, 1, &records[..2], 10, 0, &c, &mut ch), [(0, 1)]);
    // 1 waits for 0; the next read starts past it, at 2.
    assert_eq!(p.next_candidate(0, &c, 3), Some(2));
}

#[test]
fn a_member_that_joined_again_is_not_removed_by_its_old_stream() {
    let mut m = super::members::Members::default();
    let (_, old) = m.join("w", 0).unwrap();
    // The worker's stream broke; it connects again before the old stream is cleaned up.
    let (_, new, replaced) = m.rejoin("w", 1).unwrap();
    assert_eq!(replaced, Some(old));
    assert_ne!(new, old);
    assert_eq!(
        m.leave("w", old),
        None,
        "the old stream's end removes nothing"
    );
    assert_eq!(m.leave("w", new), Some(new));
}

/// A stream's member does not expire while its stream is open, however long it sends
/// nothing (a worker on a long job); a member of unary fetches does.
#[test]
fn a_streams_member_does_not_expire_while_the_stream_is_open() {
    let mut m = super::members::Members::default();
    let (_, streamed, _) = m.rejoin("s", 0).unwrap();
    m.join("u", 0).unwrap();
    let gone: Vec<String> = m
        .expire(60_000, 1_000)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(gone, ["u"]);
    assert_eq!(
        m.leave("s", streamed),
        Some(streamed),
        "its stream's end removes it"
    );
}

#[test]
fn member_ids_with_control_characters_are_refused() {
    let mut m = super::members::Members::default();
    for bad in ["a\0b", "line\nforged", "\u{1b}[31m"] {
        let err = m.join(bad, 0).unwrap_err().to_string();
        assert!(err.contains("control characters"), "{bad:?}: {err}");
    }
    m.join("worker-1 é", 0).unwrap();
}

/// A stream's member that the group lost (reloaded after a failed fsync) joins again
/// from the stream's next fetch as a stream's member, which does not expire.
#[test]
fn a_stream_member_joining_again_from_its_fetch_is_a_streams_member() {
    let mut m = super::members::Members::default();
    m.join_as("s", 0, true).unwrap();
    m.join("s", 10).unwrap(); // a unary fetch with the same id changes nothing
    assert!(m.expire(60_000, 1_000).is_empty());
}
