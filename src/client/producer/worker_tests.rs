//! Tests of `worker.rs`.

use super::super::queue::batch;
use super::*;

/// A producer asked for no request in flight takes one: with none, its task took no
/// command, and every send waited for ever.
#[tokio::test]
async fn a_producer_with_no_request_in_flight_still_answers() {
    let config = ProducerConfig {
        max_in_flight: 0,
        delivery_timeout: std::time::Duration::from_millis(200),
        ..ProducerConfig::default()
    };
    // Nothing listens on port 1: the record fails after the delivery timeout.
    let producer = super::super::Producer::new(Client::lazy("127.0.0.1:1"), config);
    let ack = producer.send("t", Some(0), pb::Record::default()).await;
    let answered = tokio::time::timeout(std::time::Duration::from_secs(20), ack).await;
    assert!(answered.expect("answered").unwrap().is_err());
}

/// A partition that cannot take an identity sends nothing: the partitions after it
/// must still be tried in the same turn, not only as many as requests are free.
#[tokio::test]
async fn a_failed_identity_does_not_keep_the_partitions_after_it_waiting() {
    let config = ProducerConfig {
        max_in_flight: 2,
        ..ProducerConfig::default()
    };
    let room = Arc::new(Semaphore::new(1));
    // Nothing listens on port 1: InitProducer fails at once, worth a retry.
    let mut worker = Worker::new(Client::lazy("127.0.0.1:1"), config, room);
    for p in 0..5 {
        worker.queues.push(("t".to_string(), p), batch(1));
    }
    worker.pump().await;
    let tried: Vec<bool> = worker
        .queues
        .busy()
        .map(|(_, q)| q.paused_until.is_some() && q.batches[0].last_error.is_some())
        .collect();
    assert_eq!(tried, [true; 5], "every partition asked for an identity");
    assert!(worker.in_flight.is_empty());
}
