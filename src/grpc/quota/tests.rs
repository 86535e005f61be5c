use std::net::{IpAddr, Ipv4Addr};

use super::*;

fn quotas(text: &str) -> (tempfile::TempDir, Quotas) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quotas"), text).unwrap();
    let quotas = Quotas::load(&dir.path().join("quotas")).unwrap();
    (dir, quotas)
}

#[tokio::test]
async fn the_sweep_drops_only_full_buckets_no_call_holds() {
    let (_dir, quotas) = quotas("* produce=1KiB\n");
    let address = |i: u32| Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
    // One client in debt, one held by a call, the rest idle and full.
    quotas.of(None, address(0)).charge(Flow::Produce, 10_000);
    let held = quotas.of(None, address(1));
    for i in 2..FIRST_SWEEP as u32 {
        quotas.of(None, address(i));
    }
    assert_eq!(quotas.clients(), FIRST_SWEEP);
    // The next new client goes past the first sweep's mark.
    quotas.of(None, address(FIRST_SWEEP as u32 + 1));
    assert_eq!(
        quotas.clients(),
        3,
        "the one in debt, the one held and the new one are kept"
    );
    // The client in debt is still in debt: its bucket was kept, not made anew.
    assert!(!quotas.of(None, address(0)).wait(Flow::Produce, 0).is_zero());
    drop(held);
}

#[test]
fn a_taken_allowance_is_settled_or_given_back() {
    let (_dir, quotas) = quotas("reader fetch=1000\n");
    let reader = Principal("reader".into());
    let quota = quotas.of(Some(&reader), None);
    // The whole bucket, at most what is asked, at least one byte.
    let taken = quota.take(Flow::Fetch, 600).unwrap();
    assert_eq!(taken.bytes(), 600);
    assert_eq!(quota.take(Flow::Fetch, usize::MAX).unwrap().bytes(), 400);
    // (That one was dropped unsettled: its 400 came back.)
    assert_eq!(quota.allowance(Flow::Fetch), Some(400));
    // Settled for more than was taken: the rest is charged.
    taken.settle(1500);
    assert_eq!(quota.allowance(Flow::Fetch), Some(1), "at least one byte");
    assert!(!quota.wait(Flow::Fetch, 0).is_zero());
    assert_eq!(quota.take(Flow::Fetch, 10).unwrap().bytes(), 1);
    // Without a limit, nothing is taken or waited for.
    let other = quotas.of(Some(&Principal("other".into())), None);
    assert!(other.take(Flow::Fetch, 10).is_none());
    assert!(other.wait(Flow::Fetch, 0).is_zero());
    assert!(other.try_take(Flow::Produce, 1 << 30).is_zero());
}

#[test]
fn a_turn_is_taken_only_by_a_client_that_owes_nothing() {
    let (_dir, quotas) = quotas("* produce=1000\n");
    let quota = quotas.of(None, None);
    assert!(quota.try_take(Flow::Produce, 900).is_zero());
    assert!(
        quota.try_take(Flow::Produce, 900).is_zero(),
        "not in debt yet"
    );
    // Now it owes 800: refused, and not charged for asking.
    let wait = quota.try_take(Flow::Produce, 900);
    assert!(wait > Duration::from_millis(700), "{wait:?}");
    assert!(quota.try_take(Flow::Produce, 900) <= wait);
    quota.refund(Flow::Produce, 900);
    assert!(quota.try_take(Flow::Produce, 1).is_zero());
}
