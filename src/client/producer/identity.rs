//! The producer's identity (from InitProducer) and what it allows: the generation a
//! batch numbered now gets, and how many batches of a partition may be unanswered.

use tonic::Status;

use super::queue::{Identity, PartitionQueue};
use super::worker::{bounded, Worker, PER_PARTITION};
use crate::grpc::pb;

impl Worker {
    /// The generation a batch numbered now gets: the next one if the current identity
    /// was given up.
    pub(super) fn generation_next(&self) -> u64 {
        self.generations + u64::from(self.identity_stale || self.identity.is_none())
    }

    /// Batches of `queue` that may be unanswered at once. One at a time until the
    /// partition has acknowledged one under this identity: the server takes a producer
    /// it does not know (new, or forgotten) at any sequence, so a second batch could
    /// otherwise be appended before a first one that failed and is retried.
    pub(super) fn window(&self, queue: &PartitionQueue, generation: u64) -> usize {
        match self.config.idempotent {
            true if queue.confirmed == Some(generation) => PER_PARTITION,
            true => 1,
            false => self.config.max_in_flight,
        }
    }

    /// Takes an identity from InitProducer if there is none (or it was given up).
    pub(super) async fn ensure_identity(&mut self) -> Result<(), Status> {
        if let Some(fenced) = &self.fenced {
            return Err(fenced.clone());
        }
        if self.identity.is_some() && !self.identity_stale {
            return Ok(());
        }
        // A named producer's next identity is its next epoch, which fences the old one:
        // batches of the old one still being retried in other partitions would fail.
        // They finish first.
        let old_batches = self
            .queues
            .busy()
            .any(|(_, q)| q.batches.iter().any(|b| b.numbered.is_some()));
        if self.config.name.is_some() && old_batches {
            return Err(Status::unavailable(
                "waiting for the previous producer epoch's batches to finish before taking the next",
            ));
        }
        let request = pb::InitProducerRequest {
            producer_name: self.config.name.clone().unwrap_or_default(),
        };
        let mut log = self.client.log();
        match bounded("InitProducer", async {
            log.init_producer(request).await.map(|r| r.into_inner())
        })
        .await
        {
            Ok(answer) => {
                self.generations += 1;
                self.identity = Some(Identity {
                    id: answer.producer_id,
                    epoch: answer.producer_epoch as i16,
                    generation: self.generations,
                });
                self.identity_stale = false;
                Ok(())
            }
            Err(status) => {
                tracing::debug!(%status, "InitProducer failed");
                Err(status)
            }
        }
    }
}
