//! Dead letters: records rejected, or out of deliveries, are appended to the group's
//! `dead.letter.topic` (created with one partition if it is missing) with headers naming
//! where they came from and why, and only then marked finished. Without a dead-letter
//! topic they are only marked (archived, as Kafka does).
//!
//! Each append is fsynced, whatever the topic's durability (a partition's owed records
//! are appended one after another and synced together), before the journal record that
//! finishes the record: a crash in between appends it again after the restart (at
//! least once, never lost). An append that fails for a while (a full disk) leaves the
//! record owed, and the sweeper retries it; one the dead-letter topic can never take (a
//! keyless record for a compacted topic, one over its max.message.bytes, too many
//! headers) is logged as an error and archived without it, rather than block the queue.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::window::{Change, Dying};
use super::{Group, ShareGroups};
use crate::broker::{Appended, Durability, Partition, ProduceTarget};
use crate::error::{Error, Result};
use crate::groups::{topic_id, Tp};
use crate::log::record::chunk_records;

/// Headers a dead letter carries besides its own.
pub const DLQ_TOPIC: &str = "strom-dlq-topic";
pub const DLQ_PARTITION: &str = "strom-dlq-partition";
pub const DLQ_OFFSET: &str = "strom-dlq-offset";
pub const DLQ_DELIVERY_COUNT: &str = "strom-dlq-delivery-count";
pub const DLQ_REASON: &str = "strom-dlq-reason";

impl ShareGroups {
    /// Dead-letters every record owed; true if any was finished. Failures are logged,
    /// and the records stay owed.
    pub(super) async fn flush_dead_letters(&self, g: &mut Group) -> bool {
        let owed: Vec<(Tp, Vec<Dying>)> = g
            .state
            .partitions
            .iter_mut()
            .map(|(tp, p)| (*tp, p.dying()))
            .filter(|(_, dying)| !dying.is_empty())
            .collect();
        let mut any = false;
        for (tp, dying) in owed {
            // Appended one after another, synced together: the first sync covers
            // every append before it (group commit), so a REJECT of ten thousand
            // records costs about one fsync, not ten thousand.
            let mut appended = Vec::new();
            let mut finished = Vec::new();
            // The source's log start once a dying record is found below it (deleted by
            // retention or DeleteRecords while it was locked): such records are lost,
            // not dead-lettered, as for records deleted before they were handed out
            // (a SIGKILL soak found them counted as dead letters that no topic held).
            let mut deleted_below = None;
            // Where they go and come from, looked up once for the partition's records.
            let target = match &g.config.dead_letter_topic {
                None => None,
                Some(dlq) => match self.dead_letter_source(dlq, tp).await {
                    Ok(source) => Some((dlq, source)),
                    Err(err) => {
                        tracing::warn!(group = %g.name, %err, "dead letters not appended yet; retrying");
                        continue;
                    }
                },
            };
            for d in dying {
                let result = match &target {
                    None | Some((_, None)) => Ok(None),
                    Some((dlq, Some((name, from)))) => {
                        self.append_dead_letter(dlq, name, from, d).await
                    }
                };
                let source = match &target {
                    Some((_, Some((_, from)))) => Some(from),
                    _ => None,
                };
                match result {
                    Ok(Some(append)) => appended.push((d.offset, append)),
                    Ok(None) => match source.and_then(|from| from.offsets().ok()) {
                        Some(bounds) if bounds.log_start > d.offset => {
                            deleted_below = Some(bounds.log_start);
                        }
                        _ => finished.push(d.offset),
                    },
                    Err(err @ (Error::InvalidArgument(_) | Error::TooLarge { .. })) => {
                        tracing::error!(group = %g.name, partition = tp.1, offset = d.offset, %err, "the dead-letter topic refuses this record; archived without it");
                        finished.push(d.offset);
                    }
                    Err(err) => {
                        tracing::warn!(group = %g.name, %err, "dead letter not appended yet; retrying");
                        break; // in order: the next ones wait for this one
                    }
                }
            }
            for (offset, append) in appended {
                match append.durable().await {
                    Ok(_) => finished.push(offset),
                    Err(err) => {
                        // Appended, not known to be on disk: owed still (at least once).
                        tracing::warn!(group = %g.name, %err, "dead letter not synced; retrying");
                        break;
                    }
                }
            }
            let mut changes: Vec<Change> = Vec::new();
            if let Some(p) = g.state.partitions.get_mut(&tp) {
                for offset in &finished {
                    p.dead_lettered(*offset, &mut changes);
                }
                if let Some(log_start) = deleted_below {
                    p.lose_below(log_start, &mut changes);
                }
            }
            any |= !finished.is_empty() || deleted_below.is_some();
            g.record(tp, changes);
        }
        any
    }

    /// The source partition of a share partition's dead letters (`None` if its topic is
    /// gone, and its records with it), after making sure the dead-letter topic exists.
    async fn dead_letter_source(
        &self,
        dlq: &str,
        (tid, partition): Tp,
    ) -> Result<Option<(String, Arc<Partition>)>> {
        let (_, metas) = self.broker.topic_metas();
        let Some(source) = metas
            .into_iter()
            .find(|m| topic_id(&m.id).ok() == Some(tid))
        else {
            return Ok(None);
        };
        if let Err(Error::TopicNotFound { .. }) = self.broker.topic(dlq) {
            match self.broker.create_topic(dlq, 1, &BTreeMap::new()).await {
                Ok(_) | Err(Error::TopicExists { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        let from = self.broker.partition(&source.name, partition)?;
        Ok(Some((source.name, from)))
    }

    /// Appends one dead letter of `from` (a partition of topic `source`), not yet
    /// synced; `None` if its record is gone.
    async fn append_dead_letter(
        &self,
        dlq: &str,
        source: &str,
        from: &Partition,
        d: Dying,
    ) -> Result<Option<Appended>> {
        let partition = from.id;
        let read = match from.read(d.offset, 1).await {
            Ok((read, _)) => read,
            // Deleted by retention meanwhile: nothing left to append.
            Err(Error::OffsetOutOfRange { .. }) => return Ok(None),
            Err(Error::InPartition { source, .. })
                if matches!(*source, Error::OffsetOutOfRange { .. }) =>
            {
                return Ok(None)
            }
            Err(err) => return Err(err),
        };
        let Some(chunk) = read.chunks.first() else {
            return Ok(None);
        };
        let views = chunk_records(chunk).map_err(|reason| Error::Corruption {
            path: "dead letter read".into(),
            position: d.offset,
            reason,
        })?;
        let Some(v) = views.into_iter().find(|v| v.offset == d.offset) else {
            return Ok(None); // compacted away
        };
        let (partition_s, offset_s, count_s) = (
            partition.to_string(),
            d.offset.to_string(),
            d.count.to_string(),
        );
        let reason = if d.rejected {
            "rejected"
        } else {
            "max.deliveries"
        };
        let ours = [
            (DLQ_TOPIC, source.as_bytes()),
            (DLQ_PARTITION, partition_s.as_bytes()),
            (DLQ_OFFSET, offset_s.as_bytes()),
            (DLQ_DELIVERY_COUNT, count_s.as_bytes()),
            (DLQ_REASON, reason.as_bytes()),
        ];
        let mut headers: Vec<(&str, &[u8])> = v.headers().collect();
        headers.extend(ours);
        let value: Bytes = chunk.slice_ref(v.value);
        let target = ProduceTarget {
            topic: dlq.to_string(),
            partition: None,
            // Synced whatever the topic says: the record is finished once this returns.
            durability: Some(Durability::Fsync),
            producer: None,
        };
        let mut writer = self.broker.begin_produce(target, 1, 0)?;
        writer.push(v.key, value, headers.iter().copied(), v.timestamp_ms)?;
        Ok(Some(writer.finish()?.append().await?))
    }
}
