//! `ShareStream`: a worker's one stream. Credits and acknowledgements come up, records
//! go down, never more than the credits given.
//!
//! Three parts run at once, so that no one waits for another: the reader takes the
//! client's messages; fetches run one at a time on a spawned task (not cancelled by a
//! slow stream: the records a fetch locks reach the stream; one still running when the
//! stream ends is stopped, and gives back what it had locked, uncounted);
//! acknowledgements go to an applier that applies everything
//! that arrived while the previous batch waited for its fsync, so a worker that accepts
//! records one by one shares fsyncs and the group's lock across many of them. When the
//! client goes away the member leaves, and its records return to the queue at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};

use super::auth::Access;
use super::pb::{self, share_stream_request::Body};
use super::queues::{acks, may_consume, refused, shared};
use super::quota::{self, Quota, Taken};
use super::status;
use crate::error::{Error, Result};
use crate::groups::share::{AckBatch, Fetched, ShareGroups, MAX_ACK_OFFSETS};

/// How long one fetch of the stream waits before it is made again (with the credits
/// given since).
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// About the most record bytes one message of the stream carries.
pub(super) const STREAM_MESSAGE_BYTES: usize = 1 << 20;

/// Acknowledgements read and not yet applied, at most (counted as `check_acks` counts
/// them). Past it the stream reads no further until some are applied: a client that
/// does not read its answers stalls the applier, and the server would otherwise hold
/// everything it sends. Twice one message's most, so that one batch is applied while
/// the next gathers.
const QUEUED_ACKS: usize = 2 * MAX_ACK_OFFSETS;

type Out = mpsc::Sender<Result<pb::ShareStreamResponse, Status>>;
/// A message's acknowledgements, holding their places in `QUEUED_ACKS` until applied.
type Queued = (Vec<AckBatch>, OwnedSemaphorePermit);

pub(super) async fn run(
    queues: Arc<ShareGroups>,
    open: pb::ShareStreamOpen,
    mut inbound: Streaming<pb::ShareStreamRequest>,
    out: Out,
    (access, quota): (Access, Option<Quota>),
) {
    let (group, topic) = (open.group, open.topic);
    // Join first, so the member has an id before any ack can come.
    let (member, idx) = match queues.join(&group, &open.member_id, &topic).await {
        Ok((member_id, idx)) => {
            let first = pb::ShareStreamResponse {
                member_id: member_id.clone(),
                records: Vec::new(),
                refused: Vec::new(),
            };
            if out.send(Ok(first)).await.is_err() {
                let _ = queues.leave(&group, &member_id, idx).await;
                return;
            }
            (member_id, idx)
        }
        Err(err) => {
            let _ = out.send(Err(status(err))).await;
            return;
        }
    };
    // Unbounded in messages, bounded by the places each takes.
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Queued>();
    let places = Arc::new(Semaphore::new(QUEUED_ACKS));
    // An error ends the stream once the acknowledgements read before it are applied,
    // so that their refusals reach the client before it.
    let mut ending: Option<Status> = None;
    // The member's number: a fetch that joins it again (its group lost it, reloaded
    // after a failed fsync) notes the new one here at once, so that the leave at the
    // end names the member it is now, even if that fetch is then cut short.
    let joined = Arc::new(AtomicU32::new(idx));
    let applier = tokio::spawn(apply_acks(
        Arc::clone(&queues),
        group.clone(),
        (member.clone(), Arc::clone(&joined)),
        topic.clone(),
        ack_rx,
        out.clone(),
    ));
    let mut credits: u64 = 0;
    let mut fetching: Option<JoinHandle<Result<Fetched>>> = None;
    // A stopping server ends the stream (UNAVAILABLE, after the acknowledgements read
    // are applied), or a client that keeps it open would hold up the stop, and each
    // fetch, ended at once by the stop, would be made again and again meanwhile.
    let mut stopping = queues.shutting_down();
    let mut stopped = false;
    loop {
        if fetching.is_none() && credits > 0 {
            let (q, g, m, t) = (
                Arc::clone(&queues),
                group.clone(),
                member.clone(),
                topic.clone(),
            );
            let want = credits.min(u32::MAX as u64) as u32;
            let joined = Arc::clone(&joined);
            let access = access.clone();
            let quota = quota.clone();
            fetching = Some(tokio::spawn(async move {
                // Its client's turn, before records are locked to it, and no more bytes
                // than its allowance (`quota::share_turn`; a stream ended meanwhile
                // aborts this task, and what it took goes back).
                let taken = match &quota {
                    Some(quota) => quota::share_turn(quota, STREAM_MESSAGE_BYTES).await,
                    None => None,
                };
                let bytes = taken.as_ref().map_or(STREAM_MESSAGE_BYTES, Taken::bytes);
                let limits = (want, FETCH_WAIT, bytes);
                // Each round checks the grant again, dead-letter topic included: a
                // grant taken away (a new acl read on SIGHUP) ends the stream with
                // the fetch's error before it locks another record to the member.
                let still = |dead_letters: Option<&str>| may_consume(&access, &g, &t, dead_letters);
                let fetched = q.stream_fetch(&g, &m, &t, limits, &joined, &still).await;
                if let (Some(taken), Ok(fetched)) = (taken, &fetched) {
                    taken.settle(fetched.records.iter().map(|r| r.size()).sum());
                }
                fetched
            }));
        }
        tokio::select! {
            // The guard `wait_for` returns is not `Send`: dropped inside.
            () = async { let _ = stopping.wait_for(|stopping| *stopping).await; } => {
                stopped = true;
                break;
            }
            message = inbound.message() => match message {
                Ok(Some(pb::ShareStreamRequest { body: Some(Body::Credits(n)) })) => {
                    credits = credits.saturating_add(n as u64);
                }
                Ok(Some(pb::ShareStreamRequest { body: Some(Body::Acks(a)) })) => {
                    let checked = acks(a.acks).and_then(|batch| {
                        let n = queues.check_acks(&topic, &batch).map_err(status)?;
                        Ok((batch, n))
                    });
                    match checked {
                        Ok((batch, n)) => {
                            // An empty message takes a place too, or a client could
                            // queue them without end.
                            let n = u32::try_from(n.max(1)).expect("at most MAX_ACK_OFFSETS");
                            let place = Arc::clone(&places)
                                .acquire_many_owned(n)
                                .await
                                .expect("never closed");
                            if ack_tx.send((batch, place)).is_err() { break }
                        }
                        Err(s) => { ending = Some(s); break; }
                    }
                }
                Ok(Some(_)) => {
                    let err = Error::InvalidArgument(
                        "after its open message a ShareStream carries credits or acks".into(),
                    );
                    ending = Some(status(err));
                    break;
                }
                Ok(None) => break,
                // A message that does not decode, or is over the size limit, says why (a
                // client gone does not read it).
                Err(s) => { ending = Some(s); break; }
            },
            done = async { fetching.as_mut().expect("guarded").await }, if fetching.is_some() => {
                fetching = None;
                match done.expect("fetch task does not panic") {
                    Ok(fetched) if fetched.records.is_empty() => {}
                    Ok(fetched) => {
                        credits = credits.saturating_sub(fetched.records.len() as u64);
                        let message = pb::ShareStreamResponse {
                            member_id: String::new(),
                            records: fetched.records.into_iter().map(shared).collect(),
                            refused: Vec::new(),
                        };
                        if out.send(Ok(message)).await.is_err() { break }
                    }
                    Err(err) => { ending = Some(status(err)); break; }
                }
            }
        }
    }
    // Acknowledgements already read are applied before the member leaves.
    drop(ack_tx);
    let _ = applier.await;
    if let Some(ending) = ending {
        let _ = out.send(Err(ending)).await;
    } else if stopped {
        let status = Status::unavailable(
            "server shutting down: records not acknowledged go back to the queue; open the \
             stream again after reconnecting",
        );
        let _ = out.send(Err(status)).await;
    }
    // A fetch still running is stopped: it gives back, uncounted, what it had locked
    // (ShareFetch's rule for a cancelled call). The leave below returns the records of
    // the fetches that answered, counted: they were sent, or the client went first.
    if let Some(fetch) = fetching {
        fetch.abort();
        let _ = fetch.await;
    }
    let idx = joined.load(Ordering::Relaxed);
    if let Err(err) = queues.leave(&group, &member, idx).await {
        tracing::debug!(%err, "share stream member leave");
    }
}

/// Applies acknowledgements in the order sent, each time all that arrived meanwhile.
async fn apply_acks(
    queues: Arc<ShareGroups>,
    group: String,
    (member, joined): (String, Arc<AtomicU32>),
    topic: String,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    out: Out,
) {
    let mut next: Option<Queued> = None;
    loop {
        let (mut batch, place) = match next.take() {
            Some(queued) => queued,
            None => match rx.recv().await {
                Some(queued) => queued,
                None => return,
            },
        };
        // Each message holds as many places as it counts.
        let mut count = place.num_permits();
        let mut places = vec![place];
        while let Ok((more, place)) = rx.try_recv() {
            let n = place.num_permits();
            if count + n > MAX_ACK_OFFSETS {
                next = Some((more, place));
                break;
            }
            count += n;
            batch.extend(more);
            places.push(place);
        }
        let as_joined = (member.as_str(), &*joined);
        let applied = queues
            .stream_acknowledge(&group, as_joined, &topic, &batch)
            .await;
        drop((batch, places));
        match applied {
            Ok(r) if r.is_empty() => {}
            Ok(r) => {
                let message = pb::ShareStreamResponse {
                    member_id: String::new(),
                    records: Vec::new(),
                    refused: refused(r),
                };
                if out.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                let _ = out.send(Err(status(err))).await;
                return;
            }
        }
    }
}
