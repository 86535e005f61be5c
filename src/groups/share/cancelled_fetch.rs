//! A ShareFetch dropped after it locked records and before it answered (its client
//! went away while it read the next partition, or wrote the group's snapshot): the
//! records it locked are given back, their deliveries uncounted, not held for `lock.ms`
//! by a member that never saw them; and that is journaled and fsynced at once, so a
//! crash or power loss next does not count them either.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::{group, ShareGroups};
use crate::broker::{Broker, Limits, ProduceTarget};

/// A current-thread runtime with one blocking thread: a test holds that thread to stop
/// a request where it waits for it.
pub(super) fn one_blocking_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap()
}

/// Appends one batch of `n` records of `value` to partition `partition` of topic t, on
/// disk before it returns.
pub(super) async fn append_to_t(broker: &Broker, partition: u32, value: Bytes, n: usize) {
    let target = ProduceTarget {
        topic: "t".into(),
        partition: Some(partition),
        durability: None,
        producer: None,
    };
    let mut writer = broker.begin_produce(target, n, 0).unwrap();
    for _ in 0..n {
        writer
            .push(None, value.clone(), std::iter::empty(), 0)
            .unwrap();
    }
    let appended = writer.finish().unwrap().append().await.unwrap();
    appended.durable().await.unwrap();
}

/// 12 records of 100 KB in each partition: in 1 MiB segments, reads from offset 0
/// touch a sealed segment, and sealed segments are read on a blocking thread.
async fn fill(broker: &Broker, partitions: u32) {
    for p in 0..partitions {
        for _ in 0..12 {
            append_to_t(broker, p, Bytes::from(vec![b'x'; 100_000]), 1).await;
        }
    }
}

/// The end of group q's journal.
async fn journaled(queues: &ShareGroups) -> u64 {
    let (_, mut guard) = queues.lock("q", false, super::Admit::Always).await.unwrap();
    group(&mut guard).files.durability().written()
}

/// Waits (up to 10 s) until group q's journal is on disk to its end, with no request
/// to make it so: a power loss must not bring back what a dropped fetch gave back.
async fn synced_unasked(queues: &ShareGroups) {
    let durability = {
        let (_, mut guard) = queues.lock("q", false, super::Admit::Always).await.unwrap();
        group(&mut guard).files.durability()
    };
    until(|| durability.synced() >= durability.written()).await;
}

/// Whether a future polled with it was woken since.
#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls `f` once with a waker that sets `woken`.
fn poll_with<F: Future>(f: &mut Pin<Box<F>>, woken: &Arc<Woken>) -> Poll<F::Output> {
    let waker = Waker::from(Arc::clone(woken));
    f.as_mut().poll(&mut Context::from_waker(&waker))
}

type Blocker = (
    tokio::task::JoinHandle<Result<(), std::sync::mpsc::RecvError>>,
    std::sync::mpsc::Sender<()>,
);

/// A blocking task that holds its thread until sent to; queued behind what is queued.
fn blocker_queued() -> Blocker {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    (tokio::task::spawn_blocking(move || wait.recv()), release)
}

/// A blocker that holds the blocking thread when this returns.
async fn blocker() -> Blocker {
    let (started, is_started) = std::sync::mpsc::channel::<()>();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let task = tokio::task::spawn_blocking(move || {
        started.send(()).unwrap();
        wait.recv()
    });
    until(|| is_started.try_recv().is_ok()).await;
    (task, release)
}

/// Waits (up to 10 s) until `done` holds.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not in 10 s");
}

#[test]
fn a_fetch_dropped_between_partitions_gives_back_what_it_locked() {
    one_blocking_thread().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        let config = BTreeMap::from([("segment.bytes".to_string(), (1u64 << 20).to_string())]);
        broker.create_topic("t", 2, &config).await.unwrap();
        fill(&broker, 2).await;
        let queues = ShareGroups::open(Arc::clone(&broker), super::MAX_WINDOW_RECORDS).unwrap();
        let earliest = BTreeMap::from([("start".to_string(), "earliest".to_string())]);
        queues.alter_config("q", &earliest).await.unwrap();
        // The runtime has one blocking thread, and its queue runs in order. A first
        // blocker holds the thread while the fetch asks for its first read; a second
        // is queued behind that read. Let go, the first lets the read run, and the
        // second then holds the thread: the fetch locks the first partition's records
        // and waits at the second partition's read. (Unconstrained: tokio's budget
        // must not stop the fetch early.)
        let before = journaled(&queues).await;
        let (first, release_first) = blocker().await;
        let mut fetch = Box::pin(tokio::task::unconstrained(queues.fetch(
            "q",
            "",
            "t",
            100,
            Duration::ZERO,
            0,
        )));
        let first_read = Arc::new(Woken::default());
        assert!(poll_with(&mut fetch, &first_read).is_pending());
        let (second, release_second) = blocker_queued();
        release_first.send(()).unwrap();
        first.await.unwrap().unwrap();
        until(|| first_read.0.load(Ordering::SeqCst)).await;
        let second_read = Arc::new(Woken::default());
        assert!(poll_with(&mut fetch, &second_read).is_pending());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !second_read.0.load(Ordering::SeqCst),
            "the second read waits"
        );
        drop(fetch); // the client went away
        release_second.send(()).unwrap();
        second.await.unwrap().unwrap();
        // It had locked records: it journaled, as it was dropped, the locks it gave back.
        assert!(
            journaled(&queues).await > before,
            "the dropped fetch locked records"
        );
        synced_unasked(&queues).await;
        let other = queues
            .fetch("q", "", "t", 100, Duration::ZERO, 0)
            .await
            .unwrap();
        let firsts: Vec<(u32, u16)> = other
            .records
            .iter()
            .filter(|r| r.offset == 0)
            .map(|r| (r.partition, r.delivery_count))
            .collect();
        assert_eq!(
            firsts.len(),
            2,
            "both partitions' first records: {firsts:?}"
        );
        assert!(
            other.records.iter().all(|r| r.delivery_count == 1),
            "{:?}",
            other
                .records
                .iter()
                .map(|r| (r.partition, r.offset, r.delivery_count))
                .collect::<Vec<_>>()
        );
    });
}

/// Dropped while it writes the group's snapshot, a fetch has journaled its locks; the
/// locks it takes back must be journaled before it lets the group go, or a crash then
/// restores them (review finding): each record's delivery counted, or held for
/// `lock.ms`, by a member that never saw it.
#[test]
fn a_fetch_dropped_at_the_snapshot_journals_what_it_gave_back() {
    one_blocking_thread().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
        broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
        const BATCH: usize = 10_000;
        for _ in 0..10 {
            let target = ProduceTarget {
                topic: "t".into(),
                partition: Some(0),
                durability: None,
                producer: None,
            };
            let mut writer = broker.begin_produce(target, BATCH, 0).unwrap();
            for _ in 0..BATCH {
                writer
                    .push(None, Bytes::from_static(b"x"), std::iter::empty(), 0)
                    .unwrap();
            }
            let _ = writer.finish().unwrap().append().await.unwrap();
        }
        let queues = ShareGroups::open(Arc::clone(&broker), super::MAX_WINDOW_RECORDS).unwrap();
        let config = BTreeMap::from([
            ("start".to_string(), "earliest".to_string()),
            ("max.in.flight".to_string(), "100000".to_string()),
        ]);
        queues.alter_config("q", &config).await.unwrap();
        // Fetch 10,000 records at a time, each as a new member, while the blocking
        // thread is held: the records are in the active segment (read on this thread),
        // so the one fetch that stops is the one whose locks grew the journal past the
        // snapshot threshold, at the snapshot's write.
        let mut taken = 0;
        let mut fetch = loop {
            let (held, release) = blocker().await;
            let mut fetch = Box::pin(tokio::task::unconstrained(queues.fetch(
                "q",
                "",
                "t",
                BATCH as u32,
                Duration::ZERO,
                0,
            )));
            let poll = poll_with(&mut fetch, &Arc::new(Woken::default()));
            release.send(()).unwrap();
            held.await.unwrap().unwrap();
            let Poll::Ready(fetched) = poll else {
                break fetch;
            };
            assert_eq!(fetched.unwrap().records.len(), BATCH, "ran out of records");
            taken += BATCH as u64;
        };
        let (held, release) = blocker_queued();
        let waiting = poll_with(&mut fetch, &Arc::new(Woken::default()));
        assert!(
            waiting.is_pending(),
            "the fetch waits for the snapshot's write"
        );
        drop(fetch); // the client went away
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        synced_unasked(&queues).await;
        // The snapshot's write ran on (queued before this), then the server crashed:
        // the group is read again from its files.
        tokio::task::spawn_blocking(|| ()).await.unwrap();
        drop(queues);
        let queues = ShareGroups::open(Arc::clone(&broker), super::MAX_WINDOW_RECORDS).unwrap();
        // A restart hands out again what was locked: those handed out before once more
        // (their second delivery), the dropped fetch's for the first time.
        let mut counts = BTreeMap::new();
        loop {
            let fetched = queues
                .fetch("q", "", "t", BATCH as u32, Duration::ZERO, 0)
                .await
                .unwrap();
            counts.extend(fetched.records.iter().map(|r| (r.offset, r.delivery_count)));
            if fetched.records.is_empty() || counts.len() as u64 >= taken + BATCH as u64 {
                break;
            }
        }
        let count = |range: std::ops::Range<u64>| -> std::collections::BTreeSet<Option<u16>> {
            range.map(|o| counts.get(&o).copied()).collect()
        };
        assert_eq!(count(0..taken), [Some(2)].into(), "handed out before");
        let dropped = taken..taken + BATCH as u64;
        assert_eq!(
            count(dropped),
            [Some(1)].into(),
            "delivered once, counted once"
        );
    });
}
