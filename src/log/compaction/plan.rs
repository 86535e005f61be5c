//! Step 1 of a pass: which segments it compacts, and from where it maps keys.

use super::CompactionPlan;
use super::CompactionPolicy;
use crate::log::log::Log;
use crate::log::retention::SegmentSummary;

impl Log {
    /// Which segments a compaction pass would rewrite now (no I/O); None when nothing
    /// new is cleanable and no tombstone is due. `tombstone_due` is what the last pass
    /// reported (None when unknown, as after a restart: then a pass runs).
    pub fn plan_compaction(
        &self,
        policy: &CompactionPolicy,
        now_ms: i64,
        tombstone_due: Option<Option<i64>>,
    ) -> Option<CompactionPlan> {
        let start = self.log_start_offset();
        let lag = i64::try_from(policy.min_lag_ms).unwrap_or(i64::MAX);
        let inputs: Vec<(u64, u64, SegmentSummary)> = self
            .sealed
            .iter()
            .map(|(&base, summary)| (base, self.sealed_end(base), *summary))
            .filter(|&(_, end, _)| end > start)
            .take_while(|(_, _, s)| {
                s.newest(policy.timestamp_after_max_ms) <= now_ms.saturating_sub(lag)
            })
            // Only segments wholly before the recovery checkpoint's: a crash recovery
            // scans from the checkpoint's position in its segment, which must still be
            // the file it was taken in (and segments before it are synced).
            .take_while(|&(_, end, _)| end <= self.checkpoint.segment_base)
            .collect();
        // New segments to compact, or keys of compacted ones that no pass has mapped
        // yet (the last pass's map filled before the end of its last segment): either
        // way, an input ending past where mapping resumes (`mapped_upto` is at most
        // `cleaned_upto`). Not merely `mapped_upto < cleaned_upto`: with the segments
        // past it no longer cleanable (a raised min.compaction.lag.ms), passes would map
        // nothing, again and again.
        let dirty = inputs.iter().any(|&(_, end, _)| end > self.mapped_upto);
        let due = match tombstone_due {
            None => true,
            Some(Some(at)) => at <= now_ms,
            Some(None) => false,
        };
        if inputs.is_empty() || !(dirty || due) {
            return None;
        }
        // The map covers what no pass has mapped yet, from where the last one's map
        // filled, so every pass makes progress however many keys the log holds (a pass
        // that mapped from the end of the segment where the map filled left that
        // segment's later keys unmapped for good, and their older values on disk: a
        // hostile-client finding). A pass for a due tombstone maps from the start, since
        // a tombstone is removed only when the map knows it is its key's newest record.
        let (map_from, map_from_offset) = if due {
            (0, 0)
        } else {
            let at = inputs
                .iter()
                .position(|&(_, end, _)| end > self.mapped_upto)
                .unwrap_or(0);
            (at, self.mapped_upto)
        };
        Some(CompactionPlan {
            dir: self.dir.clone(),
            opener: self.opener(),
            limits: Self::limits(&self.config, true),
            inputs,
            map_from,
            map_from_offset,
            start,
            generation: self.generation,
        })
    }
}
