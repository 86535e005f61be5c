//! ShareFetch: join (or touch) the member, lock available records of a topic to it,
//! and if there are none, wait for the log to grow or for records to come back.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::window::{key_hash, Candidate, MemberIdx, Want};
use super::{group, Admit, Guard, ShareGroups, Slot};
use crate::broker::now_ms;
use crate::error::{quote, Error, Result};
use crate::groups::{topic_id, TopicId};
use crate::log::record::chunk_records;

/// What a fetch checks before each round locks records, given the group's dead-letter
/// topic: Ok while the caller may go on (`fetch_while`).
pub type Still<'a> = dyn Fn(Option<&str>) -> Result<()> + Sync + 'a;
use crate::log::ReadBatches;

/// Most records one ShareFetch hands out.
pub const MAX_FETCH_RECORDS: usize = 10_000;
/// Records handed out when a fetch does not say.
pub const DEFAULT_FETCH_RECORDS: usize = 500;
/// The header that holds a record's delivery time (ms since the epoch, ASCII digits).
pub const DELIVER_AT_HEADER: &str = "strom-deliver-at";
/// The furthest ahead a record's delivery time counts (a day).
pub const MAX_DELIVERY_DELAY_MS: i64 = 24 * 3600 * 1000;

/// A record handed to a member, with its partition and delivery count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub partition: u32,
    pub delivery_count: u16,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub member_id: String,
    /// The member's number now: a member whose session ended meanwhile joined again
    /// under its id with a new one.
    pub member_idx: MemberIdx,
    pub records: Vec<Delivered>,
}

/// Which partition a fetch looks at first, turning, so no partition starves.
static TURN: AtomicUsize = AtomicUsize::new(0);

/// `strom-deliver-at` of a record, if it has a valid one, at most
/// `MAX_DELIVERY_DELAY_MS` from `now`: a delayed record holds a place in its partition's
/// window, and a time in the far future must not hold it for ever.
fn deliver_at(headers: &[(String, Bytes)], now: i64) -> i64 {
    headers
        .iter()
        .find(|(name, _)| name == DELIVER_AT_HEADER)
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<i128>().ok())
        .map_or(0, |at| {
            at.clamp(0, i128::from(now.saturating_add(MAX_DELIVERY_DELAY_MS))) as i64
        })
}

/// The records of `read` at or after `from`: as candidates, and each one's bytes
/// (sliced from the read, not copied) should it be handed out.
pub(super) fn parse(
    read: &ReadBatches,
    from: u64,
    now: i64,
) -> Result<(Vec<Candidate>, Vec<Delivered>)> {
    let (mut candidates, mut delivered) = (Vec::new(), Vec::new());
    for chunk in &read.chunks {
        let views = chunk_records(chunk).map_err(|reason| Error::Corruption {
            path: "share fetch read".into(),
            position: from,
            reason,
        })?;
        for v in views.into_iter().filter(|v| v.offset >= from) {
            let headers: Vec<(String, Bytes)> = v
                .headers()
                .map(|(n, val)| (n.to_string(), chunk.slice_ref(val)))
                .collect();
            let d = Delivered {
                partition: 0,
                delivery_count: 0,
                offset: v.offset,
                timestamp_ms: v.timestamp_ms,
                key: v.key.map(|k| chunk.slice_ref(k)),
                value: chunk.slice_ref(v.value),
                headers,
            };
            candidates.push(Candidate {
                offset: v.offset,
                key: key_hash(v.key),
                deliver_at: deliver_at(&d.headers, now),
                size: d.size().min(u32::MAX as usize) as u32,
            });
            delivered.push(d);
        }
    }
    Ok((candidates, delivered))
}

impl ShareGroups {
    /// Locks up to `max_records` available records of `topic` to the member (joining it
    /// if `member_id` is empty or unknown), about `max_bytes` at most (0: the server's
    /// max_fetch_bytes); waits up to `max_wait` for some.
    pub async fn fetch(
        &self,
        group_name: &str,
        member_id: &str,
        topic: &str,
        max_records: u32,
        max_wait: Duration,
        max_bytes: usize,
    ) -> Result<Fetched> {
        let limits = (max_records, max_wait, max_bytes);
        self.fetch_while(group_name, member_id, topic, limits, &|_| Ok(()))
            .await
    }

    /// As `fetch`, checking `still` (given the group's dead-letter topic, where the
    /// records the member fails go) before each round locks records: a fetch that
    /// waits stops with its error (the caller's grant taken away meanwhile) rather
    /// than lock records for a caller no longer allowed them.
    pub async fn fetch_while(
        &self,
        group_name: &str,
        member_id: &str,
        topic: &str,
        limits: (u32, Duration, usize),
        still: &Still<'_>,
    ) -> Result<Fetched> {
        self.fetch_as(None, group_name, member_id, topic, limits, still)
            .await
    }

    /// As `fetch`, for a ShareStream's member: if the group lost it (reloaded after a
    /// failed fsync), it joins again as a stream's member, which does not expire, and
    /// its number goes into `joined` at once, so that the stream's end leaves as the
    /// member it is now even when this fetch is cut short.
    /// `limits`: as `fetch`'s `max_records`, `max_wait` and `max_bytes`; `still`: as
    /// `fetch_while`'s.
    pub async fn stream_fetch(
        &self,
        group_name: &str,
        member_id: &str,
        topic: &str,
        limits: (u32, Duration, usize),
        joined: &AtomicU32,
        still: &Still<'_>,
    ) -> Result<Fetched> {
        self.fetch_as(Some(joined), group_name, member_id, topic, limits, still)
            .await
    }

    /// `stream`: a stream's fetch, and where it notes the member's number; `still`:
    /// checked before each round.
    async fn fetch_as(
        &self,
        stream: Option<&AtomicU32>,
        group_name: &str,
        member_id: &str,
        topic: &str,
        (max_records, max_wait, max_bytes): (u32, Duration, usize),
        still: &Still<'_>,
    ) -> Result<Fetched> {
        let max_records = match max_records as usize {
            0 => DEFAULT_FETCH_RECORDS,
            n => n.min(MAX_FETCH_RECORDS),
        };
        let deadline = tokio::time::Instant::now() + max_wait.min(self.broker.limits().max_wait);
        let mut stopping = self.broker.shutting_down();
        // Checked before the group is made: a refused fetch must not leave one.
        self.broker.topic(topic)?;
        super::members::check_id(member_id)?;
        let mut member_id = member_id.to_string();
        let mut first = true;
        loop {
            // Room freed under the server's cap on windows, for a round held back by
            // it: registered before the round looks, so no wakeup is lost.
            let room = self.tally.freed.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Created by the first round only: a group deleted while this fetch waited
            // stays deleted (the fetch ends with NOT_FOUND).
            let (slot, guard) = self.lock(group_name, first, Admit::Capped).await?;
            let mut h = Handing {
                guard,
                slot: Arc::clone(&slot),
                tid: 0,
                member: 0,
                out: Vec::new(),
            };
            first = false;
            // Looked up each time round, so a topic deleted meanwhile ends the wait; and
            // after the lock, which forgot the topics deleted before it: a topic looked
            // up before the lock and deleted while this waited for it would have its
            // partitions added to the group again, after they were forgotten.
            let topic = self.broker.topic(topic)?;
            let tid = topic_id(&topic.id)?;
            let g = group(&mut h.guard);
            if g.config.dead_letter_topic.as_deref() == Some(topic.name.as_str()) {
                return Err(Error::FailedPrecondition(format!(
                    "topic {} is share group {}'s dead-letter topic; it cannot also be its source (set another dead.letter.topic)",
                    quote(&topic.name),
                    quote(group_name)
                )));
            }
            // Before each round locks anything: the caller may still consume (a
            // grant taken away while it waited), dead letters included.
            still(g.config.dead_letter_topic.as_deref())?;
            let now = now_ms();
            let (id, idx) = match stream {
                Some(joined) => {
                    let expected = joined.load(Ordering::Relaxed);
                    let idx = g.members.stream_member(&member_id, expected, now)?;
                    joined.store(idx, Ordering::Relaxed);
                    (member_id.clone(), idx)
                }
                None => g.members.join(&member_id, now)?,
            };
            (h.tid, h.member) = (tid, idx);
            let g_session_ms = g.config.session_timeout_ms;
            member_id = id;
            slot.members.store(g.members.len(), Ordering::Relaxed);
            let mut freed = g.expire_locks(now);
            let out = &mut h.out;
            let mut wake: Option<i64> = None;
            // This round's partitions: one added meanwhile is in the next round's, and
            // ends this round's wait.
            let mut more = topic.watch_count();
            let partitions = topic.partitions();
            let added = g.added_since(tid, &partitions, || topic.created_times(partitions.len()));
            g.start_added(tid, &partitions, &added);
            let mut watches = Vec::with_capacity(partitions.len());
            let n = partitions.len();
            let first = TURN.fetch_add(1, Ordering::Relaxed);
            // The answer stays within what the server may send in one message.
            let limit = self.broker.limits().max_fetch_bytes;
            let mut budget = if max_bytes == 0 {
                limit
            } else {
                max_bytes.min(limit)
            };
            let mut failed = None;
            for k in 0..n {
                let partition = &partitions[(first + k) % n];
                watches.push(partition.watch());
                let tp = (tid, partition.id);
                if out.len() < max_records && budget > 0 {
                    // One partition that cannot be read (damaged, being trimmed) does
                    // not keep the others' records, already locked, from the member.
                    let before = out.len();
                    let want = Want {
                        records: max_records - out.len(),
                        bytes: budget,
                        first_may_exceed: out.is_empty(),
                    };
                    let new = added.contains(&partition.id);
                    if let Err(err) = g.fill(tp, partition, idx, (want, new), now, out).await {
                        tracing::warn!(group = %group_name, topic = %topic.name, partition = partition.id, %err, "share fetch skipped a partition");
                        failed = Some(err);
                    }
                    let taken: usize = out[before..].iter().map(Delivered::size).sum();
                    budget = budget.saturating_sub(taken);
                }
                if let Some(at) = g.state.partitions.get(&tp).and_then(|p| p.next_wake(now)) {
                    wake = Some(wake.map_or(at, |w: i64| w.min(at)));
                }
            }
            freed |= self.flush_dead_letters(g).await;
            g.journal().await?;
            if freed {
                slot.available.notify_waiters();
            }
            if let (Some(err), true) = (failed, out.is_empty()) {
                return Err(err); // nothing to hand out, and a reason why
            }
            let now_i = tokio::time::Instant::now();
            if !out.is_empty() || now_i >= deadline || *stopping.borrow() {
                return Ok(Fetched {
                    member_id,
                    member_idx: idx,
                    records: std::mem::take(out), // answered: the locks stay
                });
            }
            // Nothing yet: wait for the log to grow, for records to come back (woken
            // by whoever frees them, or at the next lock end or delivery time), for
            // the deadline. Registered before the lock is let go: no lost wakeup.
            let notified = slot.available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let held_back = std::mem::take(&mut group(&mut h.guard).held_back);
            drop(h);
            // A waiting member is heard from: it comes round (and is marked seen)
            // at least three times a session.
            let session = Duration::from_millis(g_session_ms / 3);
            let until = match wake {
                Some(at) => {
                    let in_ms = at.saturating_sub(now_ms()).max(0) as u64;
                    deadline.min(now_i + Duration::from_millis(in_ms))
                }
                None => deadline,
            }
            .min(now_i + session);
            let grown = futures_util::future::select_all(
                watches
                    .iter_mut()
                    .map(|w| Box::pin(async move { w.changed().await.is_ok() })),
            );
            // A deleted topic ends the wait at once (the next round's lookup says
            // NOT_FOUND): its partitions' watches never fire again.
            let deleted = partitions[0].deleted();
            tokio::select! {
                _ = grown => {}
                _ = more.changed() => {}
                () = deleted => {}
                () = &mut notified => {}
                () = &mut room, if held_back => {}
                () = tokio::time::sleep_until(until) => {}
                _ = stopping.changed() => {}
            }
        }
    }
}

/// The group's lock while a fetch hands records out, and the records it locked so far.
/// A fetch dropped before it answers (its client went away while it read the next
/// partition, dead-lettered or journaled) or one that fails takes those locks back,
/// uncounted, rather than leave them held for `lock.ms` by a member that never saw the
/// records; and appends that to the journal before it lets the group go, since the
/// locks may be there already (a fetch dropped at the snapshot's write): a crash next
/// must not bring them back. Emptied once the answer is certain.
struct Handing {
    guard: Guard,
    slot: Arc<Slot>,
    tid: TopicId,
    member: MemberIdx,
    out: Vec<Delivered>,
}

impl Drop for Handing {
    fn drop(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let g = group(&mut self.guard);
        for r in self.out.drain(..) {
            let tp = (self.tid, r.partition);
            let mut changes = Vec::new();
            if let Some(p) = g.state.partitions.get_mut(&tp) {
                p.unacquire(self.member, r.offset, &mut changes);
            }
            g.record(tp, changes);
        }
        g.journal_unawaited();
        self.slot.available.notify_waiters();
    }
}

/// Bytes a delivered record's message takes in an answer beside its contents, at most:
/// the tags, lengths and fixed fields of the `SharedRecord` and `Record` around them.
pub const RECORD_FRAMING: usize = 64;

/// Likewise for each of its headers: a record of many empty headers is small to count
/// by contents alone, and 10,000 of them made an answer the server could not send.
pub const HEADER_FRAMING: usize = 18;

impl Delivered {
    /// Bytes it takes in an answer, at most: key, value and headers, with the framing
    /// of each (`grpc::queues` checks this against the encoded message).
    pub fn size(&self) -> usize {
        RECORD_FRAMING
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| HEADER_FRAMING + n.len() + v.len())
                .sum::<usize>()
    }
}
