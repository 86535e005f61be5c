use super::*;
use crate::log::format::ProducerInfo;

const MAX: usize = 100;

fn p(id: i64, epoch: i16, seq: i32) -> ProducerInfo {
    ProducerInfo {
        id,
        epoch,
        base_sequence: seq,
    }
}

/// Checks and, if new, records a batch of `n` records at `*next` (the log's end).
fn send(s: &mut ProducerStates, info: ProducerInfo, n: u32, next: &mut u64) -> Result<(u64, bool)> {
    match s.check(&info, n)? {
        Verdict::New => {
            s.record(&info, n, *next, 0, MAX);
            *next += u64::from(n);
            Ok((*next - u64::from(n), false))
        }
        Verdict::Duplicate(b) => Ok((b.first_offset, true)),
    }
}

fn message(r: Result<(u64, bool)>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn a_retry_of_any_of_the_last_five_batches_gets_its_first_offsets() {
    let (mut s, mut next) = (ProducerStates::default(), 0);
    for i in 0..7 {
        assert_eq!(
            send(&mut s, p(1, 0, i * 3), 3, &mut next).unwrap(),
            (u64::from(i as u32) * 3, false)
        );
    }
    // Batches 2..7 are remembered; each retry is answered with its offsets.
    for i in 2..7 {
        assert_eq!(
            send(&mut s, p(1, 0, i * 3), 3, &mut next).unwrap(),
            (i as u64 * 3, true)
        );
    }
    assert_eq!(next, 21, "retries wrote nothing");
    // Batch 1 is older than the window: refused, not written twice.
    let err = message(send(&mut s, p(1, 0, 3), 3, &mut next));
    assert!(
        err.contains("expected sequence 21, got 3") && err.contains("written already"),
        "{err}"
    );
    // A retry with other records than the first attempt is refused.
    let err = message(send(&mut s, p(1, 0, 18), 2, &mut next));
    assert!(err.contains("resend exactly the records"), "{err}");
}

#[test]
fn gaps_are_refused_and_say_what_was_expected() {
    let (mut s, mut next) = (ProducerStates::default(), 0);
    send(&mut s, p(9, 0, 0), 10, &mut next).unwrap();
    let err = message(send(&mut s, p(9, 0, 11), 1, &mut next));
    assert!(
        err.contains("expected sequence 10, got 11") && err.contains("missing"),
        "{err}"
    );
    assert_eq!(
        send(&mut s, p(9, 0, 10), 1, &mut next).unwrap(),
        (10, false)
    );
}

#[test]
fn a_new_producer_starts_anywhere_and_producers_are_independent() {
    let (mut s, mut next) = (ProducerStates::default(), 0);
    // No state (new, expired or trimmed): any sequence is taken (Kafka's KIP-360).
    send(&mut s, p(1, 0, 500), 1, &mut next).unwrap();
    send(&mut s, p(2, 0, 0), 1, &mut next).unwrap();
    send(&mut s, p(1, 0, 501), 1, &mut next).unwrap();
    assert_eq!(send(&mut s, p(2, 0, 0), 1, &mut next).unwrap(), (1, true));
}

#[test]
fn epochs_fence_older_ones_and_start_at_sequence_zero() {
    let (mut s, mut next) = (ProducerStates::default(), 0);
    send(&mut s, p(4, 1, 0), 5, &mut next).unwrap();
    let err = message(send(&mut s, p(4, 2, 5), 1, &mut next));
    assert!(
        err.contains("expected sequence 0") && err.contains("new epoch"),
        "{err}"
    );
    send(&mut s, p(4, 2, 0), 1, &mut next).unwrap();
    let err = message(send(&mut s, p(4, 1, 5), 1, &mut next));
    assert!(
        err.contains("epoch 1 is fenced") && err.contains("epoch 2"),
        "{err}"
    );
    // A retry of the old epoch's batch is fenced too, not answered as a duplicate.
    assert!(message(send(&mut s, p(4, 1, 0), 5, &mut next)).contains("fenced"));
}

#[test]
fn sequences_wrap_after_i32_max() {
    let (mut s, mut next) = (ProducerStates::default(), 0);
    send(&mut s, p(3, 0, i32::MAX - 1), 4, &mut next).unwrap();
    assert_eq!(s.get(3).unwrap().batches[0].last_seq, 1);
    let err = message(send(&mut s, p(3, 0, 3), 1, &mut next));
    assert!(err.contains("expected sequence 2"), "{err}");
    assert_eq!(send(&mut s, p(3, 0, 2), 1, &mut next).unwrap(), (4, false));
    assert_eq!(
        send(&mut s, p(3, 0, i32::MAX - 1), 4, &mut next).unwrap(),
        (0, true)
    );
}

#[test]
fn bad_input_is_refused_with_what_to_do() {
    let s = ProducerStates::default();
    for bad in [p(1, -1, 0), p(1, 0, -5)] {
        let err = s.check(&bad, 1).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    // No producer id: nothing is checked or kept.
    assert_eq!(s.check(&crate::log::NO_PRODUCER, 1).unwrap(), Verdict::New);
}

#[test]
fn past_the_limit_the_producer_idle_longest_is_forgotten() {
    let mut s = ProducerStates::default();
    for id in 0..3 {
        s.record(&p(id, 0, 0), 1, id as u64, 100 - id, 3);
    }
    // Producer 2 appended least recently (at 98): it makes room for producer 9.
    s.record(&p(9, 0, 0), 1, 3, 200, 3);
    assert_eq!(s.len(), 3);
    assert!(s.get(2).is_none() && s.get(9).is_some() && s.get(0).is_some());
    // Known producers are never the ones evicted for themselves.
    s.record(&p(0, 0, 1), 1, 4, 300, 3);
    assert_eq!(s.len(), 3);
}

#[test]
fn expiry_and_retention_forget_producers() {
    let mut s = ProducerStates::default();
    s.record(&p(1, 0, 0), 10, 0, 1_000, MAX);
    s.record(&p(2, 0, 0), 10, 10, 5_000, MAX);
    s.record(&p(3, 0, 0), 10, 20, 9_000, MAX);
    assert_eq!(s.expire(10_000, 6_000), 1);
    assert!(s.get(1).is_none());
    s.trim_below(20);
    assert!(s.get(2).is_none() && s.get(3).is_some());
}

#[test]
fn snapshots_round_trip_and_reject_damage() {
    let mut s = ProducerStates::default();
    let mut next = 0;
    for id in 0..4 {
        for i in 0..(id + 2) as i32 {
            s.record(&p(id, id as i16, i * 2), 2, next, 77 + id, MAX);
            next += 2;
        }
    }
    let bytes = snapshot::encode(next, &s);
    assert_eq!(snapshot::decode(&bytes).unwrap(), (next, s.clone()));
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x04;
        assert!(snapshot::decode(&bad).is_err(), "flipped byte {i}");
    }
    for len in 0..bytes.len() {
        assert!(snapshot::decode(&bytes[..len]).is_err(), "cut at {len}");
    }
    // A well-formed snapshot whose batches lie past its own offset is refused.
    assert!(snapshot::decode(&snapshot::encode(next - 1, &s))
        .unwrap_err()
        .contains("impossible"));
}

/// At its own cap a partition makes room by forgetting the idlest hundredth of its
/// producers at once (at least one), so the scan that finds them runs once per that
/// many new producers, not at each one's append; `record` alone forgets exactly one.
#[test]
fn a_new_producer_at_the_cap_forgets_the_idlest_hundredth() {
    let full = |n: i64| {
        let mut states = ProducerStates::default();
        for id in 0..n {
            states.record(&p(id, 0, 0), 1, id as u64, 1000 + id, n as usize);
        }
        states
    };
    let mut states = full(200);
    states.make_room(500, 200);
    states.record(&p(500, 0, 0), 1, 500, 5000, 200);
    assert_eq!(states.len(), 199, "two forgotten, one taken");
    assert!(states.get(0).is_none() && states.get(1).is_none());
    assert!(states.get(2).is_some() && states.get(500).is_some());
    states.make_room(501, 200);
    assert_eq!(states.len(), 199, "room left: nothing forgotten");
    // A known producer makes no room; below a hundred, one at a time.
    let mut states = full(200);
    states.make_room(7, 200);
    assert_eq!(states.len(), 200);
    let mut small = full(3);
    small.make_room(9, 3);
    small.record(&p(9, 0, 0), 1, 9, 5000, 3);
    assert_eq!(small.len(), 3);
    assert!(small.get(0).is_none() && small.get(1).is_some());
    // Without make_room (under the server's cap), exactly one goes.
    let mut states = full(200);
    states.record(&p(500, 0, 0), 1, 500, 5000, 200);
    assert_eq!(states.len(), 200);
    assert!(states.get(0).is_none() && states.get(1).is_some());
}
