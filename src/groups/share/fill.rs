//! One partition's part of a ShareFetch: the partition's window made or brought up to
//! date with the log, then records read from the log and locked to the member, as many
//! as the request, the window and the server's cap on windows (`tally.rs`) allow.

use std::sync::Arc;

use super::config::Start;
use super::fetch::{parse, Delivered};
use super::window::{Change, MemberIdx, Offered, SharePartition, Totals, Want};
use super::Group;
use crate::broker::Partition;
use crate::error::Result;
use crate::groups::{TopicId, Tp};

impl Group {
    /// Starts the group's window of `tp` at `offset`, journaled.
    fn start_at(&mut self, tp: Tp, offset: u64) {
        self.state
            .partitions
            .insert(tp, SharePartition::new(offset));
        self.restored.insert(tp);
        self.record(
            tp,
            vec![Change::Reset {
                offset,
                totals: Totals::default(),
            }],
        );
    }

    /// The partitions of topic `tid` (of `partitions`, made at `created`) that the
    /// group has no window for and that were made after every one it has a window for:
    /// added to the topic since the group began reading it. None on the group's first
    /// fetch of the topic. A partition the group has no window for otherwise (one that
    /// could not be read at that first fetch) is not new, and starts where `start` says.
    pub(super) fn added_since(
        &self,
        tid: TopicId,
        partitions: &[Arc<Partition>],
        created: impl FnOnce() -> Vec<i64>,
    ) -> Vec<u32> {
        let known = |p: &Arc<Partition>| self.state.partitions.contains_key(&(tid, p.id));
        if partitions.iter().all(known) {
            return Vec::new();
        }
        let created = created();
        let at = |p: &Arc<Partition>| created.get(p.id as usize).copied().unwrap_or(0);
        let Some(newest) = partitions.iter().filter(|p| known(p)).map(at).max() else {
            return Vec::new();
        };
        let added = partitions.iter().filter(|p| !known(p) && at(p) > newest);
        added.map(|p| p.id).collect()
    }

    /// Starts a window at its first offset for each partition of `added`
    /// (`added_since`), whether or not this fetch's answer has room for its records: a
    /// fetch that filled up before it got round to one left it without a window, and
    /// the next fetch, seeing others added at the same moment with windows, would have
    /// taken it for an old one and started it at its end. A partition that cannot be
    /// read now is left to `fill`, which is told it is added.
    pub(super) fn start_added(
        &mut self,
        tid: TopicId,
        partitions: &[Arc<Partition>],
        added: &[u32],
    ) {
        for &id in added {
            let Some(partition) = partitions.get(id as usize) else {
                continue;
            };
            if self.state.partitions.contains_key(&(tid, id)) {
                continue;
            }
            match partition.offsets() {
                Ok(bounds) => self.start_at((tid, id), bounds.log_start),
                Err(err) => {
                    tracing::warn!(topic = %partition.topic, partition = id, %err, "added partition's window not started yet")
                }
            }
        }
    }

    /// Locks up to `want` of one partition to member `idx`, into `out`.
    pub(super) async fn fill(
        &mut self,
        tp: Tp,
        partition: &Arc<Partition>,
        idx: MemberIdx,
        (want, added): (Want, bool),
        now: i64,
        out: &mut Vec<Delivered>,
    ) -> Result<()> {
        let bounds = partition.offsets()?;
        let mut changes = Vec::new();
        if !self.state.partitions.contains_key(&tp) {
            // A partition added to the topic since the group began reading it holds
            // only records from after that: all of them are the group's, whatever its
            // `start` (records produced to it before a fetch got round to it would
            // otherwise be skipped).
            let offset = match self.config.start {
                _ if added => bounds.log_start,
                Start::Earliest => bounds.log_start,
                Start::Latest => bounds.high_watermark,
            };
            self.start_at(tp, offset);
        }
        let sp = self.state.partitions.get_mut(&tp).expect("inserted");
        sp.fit_to_log(bounds.high_watermark, &mut changes);
        sp.lose_below(bounds.log_start, &mut changes);
        // Recorded before the reads below: a fetch cancelled at one of them must not
        // drop changes already made in memory.
        self.record(tp, std::mem::take(&mut changes));
        if !self.restored.contains(&tp) {
            // After a load: keys and delivery times of the window, read back.
            let (start, end) = {
                let sp = &self.state.partitions[&tp];
                (sp.start(), sp.end())
            };
            let mut candidates = Vec::new();
            let mut at = start;
            while at < end {
                let (read, _) = partition.read(at, 1 << 20).await?;
                if read.chunks.is_empty() {
                    break;
                }
                let (c, _) = parse(&read, at, now)?;
                candidates.extend(c.into_iter().filter(|c| c.offset < end));
                at = read.next_offset.max(at + 1);
            }
            let sp = self.state.partitions.get_mut(&tp).expect("inserted");
            sp.restore_records(&candidates, &mut changes);
            self.record(tp, std::mem::take(&mut changes));
            self.restored.insert(tp);
        }
        let sp = &self.state.partitions[&tp];
        // The window grows by at most what the server's cap leaves (`tally.rs`), past
        // the room it has already.
        let room = self.room(sp.spare()) as u64;
        let reach = bounds.high_watermark.min(sp.end().saturating_add(room));
        let Some(from) = sp.next_candidate(now, &self.config, reach) else {
            if room == 0
                && sp.end() < bounds.high_watermark
                && sp.allocated() < self.config.max_in_flight as usize
            {
                self.held_back = true;
                self.tally.held_back(&self.name);
            }
            return Ok(());
        };
        let (read, _) = partition
            .read(from, want.bytes.clamp(64 << 10, 1 << 20))
            .await?;
        let (mut candidates, records) = parse(&read, from, now)?;
        // The room once more, after the read's await: from here until the window has
        // grown nothing awaits, so at most one fetch per worker thread can count on the
        // same room, and the cap is overshot by at most that (and by a window's doubling).
        let sp = &self.state.partitions[&tp];
        // An empty window starts at its next record, past any compaction gap.
        let base = match sp.is_empty() {
            true => candidates.iter().map(|c| c.offset).find(|&o| o >= sp.end()),
            false => None,
        };
        let room = self.room(sp.spare());
        let reach = base.unwrap_or(sp.end()).saturating_add(room as u64);
        candidates.retain(|c| c.offset < reach);
        let offered = Offered {
            from,
            end: read.next_offset.min(reach),
            records: &candidates,
        };
        let sp = self.state.partitions.get_mut(&tp).expect("inserted");
        let before = sp.allocated();
        let got = sp.acquire(idx, offered, want, now, &self.config, &mut changes);
        let after = sp.allocated();
        self.tally_change(before, after);
        self.record(tp, changes);
        let mut records = records.into_iter().peekable();
        for (offset, count) in got {
            while records.peek().is_some_and(|r| r.offset < offset) {
                records.next();
            }
            if let Some(mut r) = records.next() {
                r.partition = tp.1;
                r.delivery_count = count;
                out.push(r);
            }
        }
        Ok(())
    }
}
