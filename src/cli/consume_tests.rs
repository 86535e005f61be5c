//! Tests of `consume.rs`.

use super::*;

fn partition(start: u64, end: u64) -> pb::PartitionDescription {
    pb::PartitionDescription {
        partition: 1,
        log_start_offset: start,
        high_watermark: end,
        ..Default::default()
    }
}

fn range(plan: Option<Plan>) -> Option<(Start, u64, Option<u64>)> {
    plan.map(|p| (p.start, p.skip_below, p.stop_offset))
}

#[test]
fn plans_clamp_to_the_log() {
    let p = partition(10, 50);
    let off = Start::Offset;
    assert_eq!(
        range(plan(&p, Start::Earliest, None, false)),
        Some((off(10), 0, Some(50)))
    );
    assert_eq!(
        range(plan(&p, off(5), None, false)),
        Some((off(10), 0, Some(50)))
    );
    assert_eq!(range(plan(&p, off(100), Some(off(200)), false)), None);
    assert_eq!(
        range(plan(&p, off(20), Some(off(30)), false)),
        Some((off(20), 0, Some(30)))
    );
    assert_eq!(
        range(plan(&p, off(20), Some(off(300)), false)),
        Some((off(20), 0, Some(50)))
    );
    assert_eq!(
        range(plan(&p, off(20), Some(Start::Latest), true)),
        Some((off(20), 0, Some(50)))
    );
    assert_eq!(
        range(plan(&p, off(20), None, true)),
        Some((off(20), 0, None))
    );
    assert_eq!(
        range(plan(&p, off(100), None, true)),
        Some((off(50), 100, None))
    );
    assert_eq!(range(plan(&p, Start::Latest, None, false)), None);
    assert_eq!(range(plan(&p, off(20), Some(Start::Earliest), false)), None);
}
