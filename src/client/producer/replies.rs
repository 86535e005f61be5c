//! The producer's stream and its answers: opening the stream, acknowledgements,
//! failures worth a retry (back to waiting, in order), failures for good, the delivery
//! timeout, and a broken stream.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::batches::Key;
use super::queue::Queued;
use super::retriable;
use super::worker::{bounded, Worker};
use crate::grpc::pb::{self, produce_stream_response::Result as Reply};
use crate::grpc::PRODUCER_FENCED;

/// How long a closing producer waits for the server to end its stream.
const STREAM_END_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Worker {
    /// Opens the ProduceStream (a failure leaves it down, to be tried again).
    pub(super) async fn connect(&mut self) {
        let (tx, rx) = mpsc::channel(self.config.max_in_flight.max(1) * 2);
        let mut log = self.client.log();
        let opened = bounded("ProduceStream", async {
            log.produce_stream(ReceiverStream::new(rx)).await
        });
        match opened.await {
            Ok(response) => {
                self.requests = Some(tx);
                self.replies = Some(response.into_inner());
            }
            Err(status) => {
                self.requests = None;
                self.replies = None;
                tracing::warn!(%status, "cannot open produce stream");
            }
        }
    }

    /// Ends the stream as a finished call once every batch is answered: the requests
    /// are closed and the replies read to their status. Dropping both at once would
    /// hang up on the server, which then counts the call CANCELLED, a failure on its
    /// dashboards. Bounded: a server that does not end the call is left.
    pub(super) async fn end_stream(&mut self) {
        self.requests = None;
        if let Some(mut replies) = self.replies.take() {
            let drained = async { while let Ok(Some(_)) = replies.message().await {} };
            let _ = tokio::time::timeout(STREAM_END_WAIT, drained).await;
        }
    }

    /// Fails batches unacknowledged past the delivery timeout: waiting, or sent and never
    /// answered (a server that hangs must not hang `flush`).
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let timeout = self.config.delivery_timeout;
        let expired: Vec<Key> = self
            .queues
            .busy()
            .filter(|(_, q)| {
                q.batches
                    .front()
                    .is_some_and(|b| b.enqueued + timeout <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            let last = self.queues.get(&key).expect("listed").batches[0]
                .last_error
                .clone();
            let status = match last {
                // The last failure says more than the timeout does.
                Some(last) => Status::new(
                    last.code(),
                    format!(
                        "{} (retried for the delivery timeout of {timeout:?})",
                        last.message()
                    ),
                ),
                None => Status::deadline_exceeded(format!(
                    "not sent within the producer's delivery timeout of {timeout:?}"
                )),
            };
            self.fail_partition(&key, 0, &status);
        }
    }

    pub(super) fn on_reply(&mut self, reply: Option<Result<pb::ProduceStreamResponse, Status>>) {
        let reply = match reply {
            Some(Ok(reply)) => reply,
            Some(Err(status)) => return self.stream_broken(status),
            None => {
                return self
                    .stream_broken(Status::unavailable("produce stream closed by the server"))
            }
        };
        let Some(key) = self.in_flight.remove(&reply.correlation_id) else {
            return;
        };
        let Some(i) = self
            .queues
            .get(&key)
            .and_then(|q| q.position(reply.correlation_id))
        else {
            return;
        };
        match reply.result {
            Some(Reply::Response(ok)) => {
                let queue = self.queues.get_mut(&key).expect("found above");
                let acks = std::mem::take(&mut queue.batches[i].batch.acks);
                queue.acknowledged(i);
                acks.acknowledge(ok.partition, ok.base_offset);
            }
            Some(Reply::Error(err)) if err.reason == PRODUCER_FENCED => {
                let status = Status::new(Code::from(err.code), err.message);
                tracing::error!(%status, "this producer was fenced by a newer instance of its name: it sends nothing more");
                self.fenced = Some(status.clone());
                self.fail_partition(&key, i, &status);
            }
            Some(Reply::Error(err)) => {
                self.failed(&key, i, Status::new(Code::from(err.code), err.message))
            }
            None => self.failed(&key, i, Status::internal("empty produce reply")),
        }
    }

    /// The stream is gone: every unanswered batch waits to be sent again on a new one.
    /// Whatever status ended it (one bad message ends the whole stream, and the server
    /// still appends the requests it had read), the batches on it are retried: failing
    /// them would report records as lost that the server may hold.
    /// A refusal of a message by the server keeps its code: a batch that runs out of
    /// its delivery timeout this way fails with it (a message over the server's
    /// max_request_bytes: RESOURCE_EXHAUSTED), not as if the server had been away
    /// (UNAVAILABLE, which `strom produce` passes over as a passing failure). What a
    /// broken connection gives (h2's INTERNAL among them) stays UNAVAILABLE.
    pub(super) fn stream_broken(&mut self, status: Status) {
        self.requests = None;
        self.replies = None;
        let refused = matches!(
            status.code(),
            Code::InvalidArgument | Code::ResourceExhausted | Code::FailedPrecondition
        );
        let status = Status::new(
            if refused {
                status.code()
            } else {
                Code::Unavailable
            },
            format!(
                "the produce stream broke ({:?}: {})",
                status.code(),
                status.message()
            ),
        );
        for (id, key) in std::mem::take(&mut self.in_flight) {
            if let Some(i) = self.queues.get(&key).and_then(|q| q.position(id)) {
                self.retry(&key, i, status.clone());
            }
        }
    }

    pub(super) fn failed(&mut self, key: &Key, i: usize, status: Status) {
        if status.code() == Code::NotFound {
            // The topic went (perhaps to come back with other partitions): its
            // partition count is asked for again before the next record is placed.
            self.partition_counts.remove(&key.0);
        }
        let config = &self.config;
        let queue = self.queues.get_mut(key).expect("failed batches are queued");
        // Refused as out of order behind a batch that is being retried: the echo of
        // that batch's failure. Sent again after it, without counting an attempt.
        let echo =
            config.idempotent && status.code() == Code::FailedPrecondition && queue.has_earlier(i);
        if echo {
            queue.requeue(i);
            let pause = Instant::now() + config.backoff;
            queue.paused_until = Some(queue.paused_until.map_or(pause, |t| t.max(pause)));
            return;
        }
        if retriable(&status) {
            return self.retry(key, i, status);
        }
        self.fail_partition(key, i, &status);
    }

    /// Batch `i` of `key` waits to be sent again, after a backoff that doubles with
    /// each attempt; `status` is what it fails with if its delivery timeout runs out.
    fn retry(&mut self, key: &Key, i: usize, status: Status) {
        let config = &self.config;
        let queue = self.queues.get_mut(key).expect("failed batches are queued");
        let batch = &mut queue.batches[i];
        batch.attempts += 1;
        let wait = config
            .backoff
            .saturating_mul(2u32.saturating_pow(batch.attempts - 1))
            .min(config.max_backoff);
        tracing::debug!(%status, attempt = batch.attempts, "retrying produce");
        batch.last_error = Some(status);
        queue.requeue(i);
        queue.paused_until = Some(Instant::now() + wait);
    }

    /// Batch `i` of `key` failed for good: it and every batch behind it in that
    /// partition fail with `status`. An idempotent producer then takes a new identity:
    /// the server may or may not hold the failed batch, so its sequences cannot go on.
    pub(super) fn fail_partition(&mut self, key: &Key, i: usize, status: &Status) {
        let queue = self.queues.get_mut(key).expect("failed batches are queued");
        // Without idempotence the batches behind it are independent.
        let end = if self.config.idempotent {
            queue.batches.len()
        } else {
            i + 1
        };
        let gone: Vec<Queued> = queue.batches.drain(i..end).collect();
        // Without idempotence, batches behind it may have been answered already (durable
        // requests are answered as their fsyncs end): they held their place behind this
        // one, and would otherwise hold up flushes until their delivery timeout.
        queue.drop_answered_front();
        let stale = gone.iter().any(|q| q.numbered.is_some());
        for q in gone {
            if let Some(id) = q.sent {
                self.in_flight.remove(&id);
            }
            q.batch.fail(status);
        }
        if self.config.idempotent && stale {
            self.identity_stale = true;
        }
    }
}

/// The stream's next reply; never, while there is no stream.
pub(super) async fn next_reply(
    replies: &mut Option<tonic::Streaming<pb::ProduceStreamResponse>>,
) -> Option<Result<pb::ProduceStreamResponse, Status>> {
    match replies {
        Some(stream) => stream.message().await.transpose(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::super::queue::batch;
    use super::super::ProducerConfig;
    use super::Worker;
    use crate::client::Client;

    /// Without idempotence a batch that fails for good goes alone; one behind it that
    /// was already answered must leave with it, or it holds flushes (and `close`) until
    /// its delivery timeout.
    #[tokio::test]
    async fn an_answered_batch_behind_a_failed_one_leaves_with_it() {
        let config = ProducerConfig {
            idempotent: false,
            ..ProducerConfig::default()
        };
        let room = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let mut worker = Worker::new(Client::lazy("127.0.0.1:1"), config, room);
        let key = ("t".to_string(), 0);
        worker.queues.push(key.clone(), batch(1));
        worker.queues.push(key.clone(), batch(1));
        let queue = worker.queues.get_mut(&key).unwrap();
        queue.send(0, 1, None);
        queue.send(1, 2, None);
        queue.acknowledged(1);
        assert_eq!(queue.batches.len(), 2, "held behind the unanswered one");
        worker.fail_partition(&key, 0, &Status::invalid_argument("refused"));
        assert_eq!(worker.queued(), 0);
    }
}
