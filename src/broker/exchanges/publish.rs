//! A publish: its records appended to each topic the exchange routes them to, one
//! batch a topic.
//!
//! To more than one topic, every topic's batch is first built and checked (record
//! sizes, keys, the partition it goes to and whether that partition takes writes), on a
//! blocking thread, and dropped; then each is built again, under the configuration and
//! with the partition of the first pass, and appended, one at a time. So a publish
//! refused for its records, or for a partition that cannot be written, writes nothing
//! (a configuration altered in between does not refuse it halfway: a hostile client
//! made that happen); the server holds one batch of it at a time, however many topics
//! it goes to; and building twice costs a second encoding (BENCHMARKS.md,
//! "Exchanges"). What can still fail between the two passes (a topic deleted, a failed
//! write, a stop) fails the publish after the topics before it took the records:
//! `Error::PublishedPartly` says how many.
//!
//! A publish to several topics writes at most `MAX_FIELDS` fields of records and
//! `MAX_COPIED_BYTES` bytes over all of them (a request of 100,000 empty records to a
//! thousand topics took 2.3 s of a core), and its bytes must fit above the free-disk
//! floor, as far as the server counts (records' bytes, not their framing or a new
//! segment's preallocation).

use std::sync::Arc;

use crate::broker::{BatchWriter, Broker, Durability, ProduceTarget, Produced, Topic, TopicConfig};
use crate::error::{quote, Error, Result};

/// Records and their fields (headers' own included) a publish may write, over all the
/// topics it goes to: a million records of a few fields each.
pub const MAX_FIELDS: usize = 4_000_000;
/// Bytes of records a publish may write, over all the topics it goes to.
pub const MAX_COPIED_BYTES: usize = 1 << 30;

/// What a publish asks for.
#[derive(Debug, Clone)]
pub struct Publish {
    pub exchange: String,
    pub routing_key: String,
    /// None: each topic's default.
    pub durability: Option<Durability>,
    /// Acknowledge a publish no binding takes (stored nowhere) rather than refuse it.
    pub drop_unroutable: bool,
    /// How many records.
    pub records: usize,
    /// Their bytes as received.
    pub bytes: usize,
    /// About how many bytes building a batch of them copies (as for
    /// `Broker::begin_produce`).
    pub copied: usize,
}

/// Where a publish's records went in one topic.
#[derive(Debug, Clone)]
pub struct Published {
    pub topic: String,
    pub produced: Produced,
    /// The bytes of the batch stored there.
    pub stored_bytes: usize,
}

impl Publish {
    fn target(&self, topic: &Topic, partition: Option<u32>) -> ProduceTarget {
        ProduceTarget {
            topic: topic.name.clone(),
            partition,
            durability: self.durability,
            producer: None,
        }
    }
}

impl Broker {
    /// Appends a publish's records, which `fill` pushes into a batch (it is called once
    /// or twice per topic), to every topic the exchange routes it to. The answer, in
    /// the order of topic names, comes once every batch is appended, and on disk if
    /// the durability asks for it.
    /// `fields` counts what building one batch walks (`MAX_FIELDS`); it is asked only
    /// of a publish to several topics.
    pub async fn publish<F>(
        self: &Arc<Self>,
        publish: Publish,
        fill: F,
        fields: impl FnOnce() -> usize,
    ) -> Result<Vec<Published>>
    where
        F: Fn(&mut BatchWriter) -> Result<()> + Send + Sync + 'static,
    {
        if publish.records == 0 {
            return Err(Error::InvalidArgument(
                "a publish needs at least one record".into(),
            ));
        }
        let topics = self.route(&publish.exchange, &publish.routing_key)?;
        if topics.is_empty() {
            if publish.drop_unroutable {
                return Ok(Vec::new());
            }
            return Err(Error::FailedPrecondition(format!(
                "no binding of exchange {} takes the routing key {}; nothing was stored (bind a topic with a key that takes it, or set drop_unroutable to have such publishes dropped)",
                quote(&publish.exchange),
                quote(&publish.routing_key)
            )));
        }
        let n = topics.len();
        // A fan-out is bounded in the work it does and the disk it takes. Its bytes are
        // held against the free-disk floor until its appends are done: the second pass
        // does not measure the topics against the floor again.
        let room = match n {
            1 => None,
            _ => {
                let fields = fields();
                let over = |each: usize, most| each.saturating_mul(n) > most;
                if over(fields, MAX_FIELDS) || over(publish.bytes, MAX_COPIED_BYTES) {
                    return Err(Error::LimitReached(format!(
                        "this publish would write its {} records ({fields} records and fields, {} bytes) to each of {n} topics; a publish writes at most {MAX_FIELDS} records and fields and {MAX_COPIED_BYTES} bytes over all its topics: send fewer a request",
                        publish.records, publish.bytes
                    )));
                }
                Some(
                    self.disk
                        .admit_bytes(publish.bytes.saturating_mul(n) as u64)?,
                )
            }
        };
        let fill = Arc::new(fill);
        let checked: Vec<Option<Checked>> = match n {
            // One topic: one pass, as a produce (nothing else to leave half done).
            1 => vec![None],
            _ => {
                let (me, topics, publish, fill) = (
                    Arc::clone(self),
                    topics.clone(),
                    publish.clone(),
                    Arc::clone(&fill),
                );
                let check = move || me.check_publish(&topics, &publish, &*fill);
                tokio::task::spawn_blocking(check)
                    .await
                    .expect("a publish's check does not panic")?
            }
        };
        let mut appended = Vec::with_capacity(n);
        for (i, (topic, checked)) in topics.iter().zip(checked).enumerate() {
            let (records, copied, topic_arc) = (publish.records, publish.copied, Arc::clone(topic));
            let append = async {
                let mut writer = match checked {
                    None => {
                        let target = publish.target(topic, None);
                        self.begin_produce_to(topic_arc, target, records, copied)?
                    }
                    Some(Checked { config, partition }) => {
                        let target = publish.target(topic, Some(partition));
                        self.begin_produce_checked(topic_arc, config, target, records, copied)?
                    }
                };
                fill(&mut writer)?;
                let prepared = writer.finish()?;
                let bytes = prepared.len_bytes();
                Ok::<_, Error>((prepared.append().await?, bytes))
            };
            match append.await {
                Ok((done, bytes)) => appended.push((topic.name.clone(), done, bytes)),
                Err(err) => {
                    return Err(partly(
                        err,
                        format!(
                            "{i} of the {n} topics the publish goes to took its records before it failed, those before {} in name order",
                            quote(&topic.name)
                        ),
                        i > 0,
                    ))
                }
            }
            // Each topic's batch is built on this worker: let other calls in between.
            tokio::task::yield_now().await;
        }
        // Appended: the bytes are counted as written now.
        drop(room);
        // Those owed an fsync wait together: their syncs overlap.
        let synced = futures_util::future::join_all(
            appended
                .into_iter()
                .map(|(topic, done, bytes)| async move { (topic, done.durable().await, bytes) }),
        )
        .await;
        let mut published = Vec::with_capacity(synced.len());
        let mut failed = None;
        for (topic, result, stored_bytes) in synced {
            match result {
                Ok(produced) => published.push(Published {
                    topic,
                    produced,
                    stored_bytes,
                }),
                Err(err) => {
                    failed.get_or_insert((topic, err));
                }
            }
        }
        match failed {
            None => Ok(published),
            Some((topic, err)) => Err(partly(
                err,
                format!(
                    "every topic the publish goes to took its records, but those of {} (at least) are not on disk",
                    quote(&topic)
                ),
                n > 1,
            )),
        }
    }

    /// The first pass of a publish to several topics: each topic's batch built and
    /// checked, its partition picked and asked whether it takes writes. Builds batches:
    /// call on a blocking thread.
    fn check_publish(
        &self,
        topics: &[Arc<Topic>],
        publish: &Publish,
        fill: &(dyn Fn(&mut BatchWriter) -> Result<()> + Send + Sync),
    ) -> Result<Vec<Option<Checked>>> {
        topics
            .iter()
            .map(|topic| {
                let target = publish.target(topic, None);
                let (records, copied) = (publish.records, publish.copied);
                let mut writer =
                    self.begin_produce_to(Arc::clone(topic), target, records, copied)?;
                fill(&mut writer)?;
                let partition = writer.pick_partition();
                // Not the directory's path or the cause, which the log has: the caller
                // may have no grant on the topic.
                topic
                    .partition(partition)?
                    .with_log(|_| Ok(()))
                    .map_err(|err| match err {
                        Error::TopicNotFound { .. } => err,
                        _ => Error::Unavailable {
                            what: format!(
                                "topic {} partition {partition}, bound to the exchange,",
                                quote(&topic.name)
                            ),
                            reason: "its files cannot be opened (the server's log says why)".into(),
                        },
                    })?;
                let config = writer.config().clone();
                Ok(Some(Checked { config, partition }))
            })
            .collect()
    }
}

/// What the first pass found for one topic: its configuration then, and the partition.
struct Checked {
    config: TopicConfig,
    partition: u32,
}

/// A publish's failure after other topics took its records, or `err` as it is if none
/// did (as for a produce).
fn partly(err: Error, detail: String, others_took: bool) -> Error {
    match others_took {
        false => err,
        true => Error::PublishedPartly {
            detail,
            source: Box::new(err),
        },
    }
}
