//! ShareAcknowledge: accept, release, reject or renew records a member holds. Answered
//! once the changes are on disk; records the member does not hold are refused one by
//! one, and the rest still apply.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::window::{Ack, Refusal};
use super::{group, Admit, ShareGroups};
use crate::broker::{now_ms, Topic};
use crate::error::{Error, Result};
use crate::groups::topic_id;

/// Most offsets one ShareAcknowledge may carry.
pub const MAX_ACK_OFFSETS: usize = 10_000;

/// Acknowledgements of one kind for offsets of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckBatch {
    pub partition: u32,
    pub offsets: Vec<u64>,
    pub ack: Ack,
}

/// How many acknowledgements entries of these many offsets count for (an entry with
/// none counts as one: a million empty ones are no less work); refused past
/// `MAX_ACK_OFFSETS`.
pub fn count_acks(offsets: impl Iterator<Item = usize>) -> Result<usize> {
    let total: usize = offsets.map(|n| n.max(1)).sum();
    if total > MAX_ACK_OFFSETS {
        return Err(Error::InvalidArgument(format!(
            "{total} offsets in one acknowledgement; at most {MAX_ACK_OFFSETS}: send several"
        )));
    }
    Ok(total)
}

/// An acknowledgement that was not applied, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub partition: u32,
    pub offset: u64,
    pub reason: Refusal,
}

impl ShareGroups {
    /// Checks what needs no group: the number of acknowledgements, which it returns
    /// (`count_acks`), and that each partition exists. A stream checks each message as
    /// it reads it, so that a bad one fails alone, not with those it would be applied
    /// with.
    pub fn check_acks(&self, topic: &str, acks: &[AckBatch]) -> Result<usize> {
        self.checked_topic(topic, acks).map(|(_, total)| total)
    }

    /// `check_acks`, and the topic it looked up.
    fn checked_topic(&self, topic: &str, acks: &[AckBatch]) -> Result<(Arc<Topic>, usize)> {
        let total = count_acks(acks.iter().map(|a| a.offsets.len()))?;
        let topic = self.broker.topic(topic)?;
        for a in acks {
            topic.partition(a.partition)?;
        }
        Ok((topic, total))
    }

    /// Applies `acks` by `member_id` to records of `topic`; returns those refused.
    pub async fn acknowledge(
        &self,
        group_name: &str,
        member_id: &str,
        topic: &str,
        acks: &[AckBatch],
    ) -> Result<Vec<Refused>> {
        self.acknowledge_as(group_name, (member_id, None), topic, acks)
            .await
    }

    /// As `acknowledge`, for a ShareStream's member, which joined as number `joined`:
    /// refused if its id is another member's now (the worker connected again on a new
    /// stream), or the old stream's acknowledgements would act as the new member.
    pub async fn stream_acknowledge(
        &self,
        group_name: &str,
        (member_id, joined): (&str, &AtomicU32),
        topic: &str,
        acks: &[AckBatch],
    ) -> Result<Vec<Refused>> {
        self.acknowledge_as(group_name, (member_id, Some(joined)), topic, acks)
            .await
    }

    /// `joined`: read under the group's lock, after a fetch that joined the stream's
    /// member again (a reload) noted its new number there.
    async fn acknowledge_as(
        &self,
        group_name: &str,
        (member_id, joined): (&str, Option<&AtomicU32>),
        topic: &str,
        acks: &[AckBatch],
    ) -> Result<Vec<Refused>> {
        let (topic, _) = self.checked_topic(topic, acks)?;
        let tid = topic_id(&topic.id)?;
        let (slot, mut guard) = self.lock(group_name, false, Admit::Always).await?;
        let g = group(&mut guard);
        let now = now_ms();
        let idx = g.members.touch(member_id, group_name, now)?;
        if joined.is_some_and(|joined| joined.load(Ordering::Relaxed) != idx) {
            return Err(super::members::replaced(member_id));
        }
        // Locks that ended are ended first, so a late acknowledgement is refused.
        let mut freed = g.expire_locks(now);
        let mut refused = Vec::new();
        for a in acks {
            let tp = (tid, a.partition);
            let mut changes = Vec::new();
            match g.state.partitions.get_mut(&tp) {
                None => refused.extend(a.offsets.iter().map(|&offset| Refused {
                    partition: a.partition,
                    offset,
                    reason: Refusal::NotDelivered,
                })),
                Some(p) => {
                    for &offset in &a.offsets {
                        match p.acknowledge(idx, offset, a.ack, now, &g.config, &mut changes) {
                            // Any end of a lock may let a waiting fetch go on: a
                            // release, or a finished record that moves the window or
                            // unblocks the next of its key.
                            Ok(()) => freed |= a.ack != Ack::Renew,
                            Err(reason) => refused.push(Refused {
                                partition: a.partition,
                                offset,
                                reason,
                            }),
                        }
                    }
                }
            }
            g.record(tp, changes);
        }
        // The rejections are journaled before they are dead-lettered, so an append to
        // the dead-letter topic that fails (or a crash) leaves them owed, not lost.
        let seq = g.journal().await?;
        let durability = g.files.durability();
        freed |= self.flush_dead_letters(g).await;
        g.journal().await?;
        slot.members.store(g.members.len(), Ordering::Relaxed);
        drop(guard);
        if freed {
            slot.available.notify_waiters();
        }
        durability.wait(seq).await?;
        Ok(refused)
    }
}
