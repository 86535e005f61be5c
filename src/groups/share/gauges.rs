//! What the metrics endpoint (`server::metrics`) shows of share groups: per group and
//! topic, the records available, locked, accepted, dead-lettered and lost, summed over
//! the partitions (`Window::counts`, as DescribeShareGroup gives them per partition).
//! Only groups in memory are read (a scrape never loads one from disk), and nothing is
//! changed: what retention deleted before the group finished it is counted as lost by
//! the group's next fetch or describe, not by a scrape.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::window::Counts;
use super::{ShareGroups, SlotState};
use crate::broker::now_ms;
use crate::groups::topic_id;

/// One share group, as a scrape sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGauges {
    pub group: String,
    pub members: usize,
    /// Per topic, by name: the sums of its partitions' counts (`start` and `end` are
    /// left 0).
    pub topics: Vec<(String, Counts)>,
}

impl ShareGroups {
    /// Every share group in memory, by name. Waits for each group's lock in turn: call
    /// on a blocking thread.
    pub fn gauges(&self) -> Vec<ShareGauges> {
        let slots: Vec<_> = self.slots().values().cloned().collect();
        let (_, metas) = self.broker.topic_metas();
        let names: BTreeMap<u128, &str> = metas
            .iter()
            .filter_map(|m| Some((topic_id(&m.id).ok()?, m.name.as_str())))
            .collect();
        let now = now_ms();
        let mut out = Vec::new();
        for slot in slots {
            let guard = slot.state.blocking_lock();
            let SlotState::Loaded(group) = &*guard else {
                continue;
            };
            let mut topics: BTreeMap<&str, Counts> = BTreeMap::new();
            for ((id, partition), window) in &group.state.partitions {
                let Some(name) = names.get(id) else {
                    continue; // a deleted topic
                };
                let end = self
                    .broker
                    .partition(name, *partition)
                    .and_then(|p| p.offsets())
                    .map_or(window.end(), |o| o.high_watermark);
                let c = window.counts(now, end);
                let sum = topics.entry(name).or_default();
                sum.available += c.available;
                sum.in_flight += c.in_flight;
                sum.accepted += c.accepted;
                sum.dead_lettered += c.dead_lettered;
                sum.lost += c.lost;
            }
            out.push(ShareGauges {
                group: slot.name.clone(),
                members: slot.members.load(Ordering::Relaxed),
                topics: topics
                    .into_iter()
                    .map(|(name, counts)| (name.to_string(), counts))
                    .collect(),
            });
        }
        out
    }
}
