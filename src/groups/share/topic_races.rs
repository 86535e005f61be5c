//! Share groups against a real broker. A topic deleted while a request on a share group
//! waits for the group's lock: the lock forgets the deleted topic's partitions, so
//! whatever the request looked up before it must not add them back (they would stay,
//! held and written into every snapshot, until some other topic was made or deleted).
//! And the cap on groups loaded at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::{group, ShareGroups};
use crate::broker::{Broker, Limits};
use crate::error::Error;
use crate::groups::{topic_id, ResetTo, TopicId};

/// Polls `f` once: it runs up to its first wait.
async fn poll_once<F: Future>(f: &mut Pin<Box<F>>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
}

async fn setup() -> (tempfile::TempDir, Arc<Broker>, ShareGroups, TopicId) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(dir.path(), Limits::default()).unwrap());
    broker.create_topic("t", 1, &BTreeMap::new()).await.unwrap();
    let tid = topic_id(&broker.topic("t").unwrap().id).unwrap();
    let queues = ShareGroups::open(Arc::clone(&broker), super::MAX_WINDOW_RECORDS).unwrap();
    // The group exists, is loaded, and has t's partition.
    queues
        .fetch("q", "", "t", 1, Duration::ZERO, 0)
        .await
        .unwrap();
    (dir, broker, queues, tid)
}

/// The partitions of topic `tid` the group keeps.
async fn kept(queues: &ShareGroups, tid: TopicId) -> usize {
    let (_, mut guard) = queues.lock("q", false, super::Admit::Always).await.unwrap();
    let g = group(&mut guard);
    g.state.partitions.keys().filter(|(t, _)| *t == tid).count()
}

#[tokio::test]
async fn a_reset_that_waited_for_the_group_while_its_topic_went_adds_nothing_back() {
    let (_dir, broker, queues, tid) = setup().await;
    let held = queues.lock("q", false, super::Admit::Always).await.unwrap();
    // It looks the topic and its targets up, then waits for the group.
    let mut reset = Box::pin(queues.reset("q", "t", ResetTo::Earliest));
    assert!(poll_once(&mut reset).await.is_pending());
    broker.delete_topic("t").await.unwrap();
    drop(held);
    let answer = reset.await;
    assert_eq!(kept(&queues, tid).await, 0, "{answer:?}");
    assert!(
        matches!(answer, Err(Error::TopicNotFound { .. })),
        "{answer:?}"
    );
}

/// The window is between the delete taking the topic out of the broker's map (and
/// changing its version) and marking its partitions deleted, which a blocking task
/// does: the runtime's one blocking thread is kept busy to hold it open.
#[test]
fn a_fetch_that_waited_for_the_group_while_its_topic_went_adds_nothing_back() {
    super::cancelled_fetch::one_blocking_thread().block_on(async {
        let (_dir, broker, queues, tid) = setup().await;
        let held = queues.lock("q", false, super::Admit::Always).await.unwrap();
        let mut fetch = Box::pin(queues.fetch("q", "", "t", 1, Duration::ZERO, 0));
        assert!(poll_once(&mut fetch).await.is_pending());
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::task::spawn_blocking(move || wait.recv());
        let mut delete = Box::pin(broker.delete_topic("t"));
        assert!(poll_once(&mut delete).await.is_pending());
        assert!(matches!(
            broker.topic("t"),
            Err(Error::TopicNotFound { .. })
        ));
        drop(held);
        let answer = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .expect("the fetch needs no blocking thread");
        go.send(()).unwrap();
        delete.await.unwrap();
        blocker.await.unwrap().unwrap();
        assert_eq!(kept(&queues, tid).await, 0, "{answer:?}");
        assert!(
            matches!(answer, Err(Error::TopicNotFound { .. })),
            "{answer:?}"
        );
    });
}

/// Past `MAX_LOADED` groups in memory with none idle (each has a member), loading one
/// more is refused rather than opening its journal: 20,000 one-member groups took every
/// descriptor the server had (hostile-client finding). A refused new group is not left
/// listed, and a place comes back when a group goes idle.
#[tokio::test]
async fn past_the_loaded_groups_with_none_idle_a_new_group_is_refused() {
    let (_dir, broker, mut queues, _) = setup().await;
    drop(broker);
    queues.max_loaded = 3;
    for name in ["q2", "q3"] {
        queues
            .fetch(name, "m", "t", 1, Duration::ZERO, 0)
            .await
            .unwrap();
    }
    let refused = queues
        .fetch("q4", "m", "t", 1, Duration::ZERO, 0)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::LimitReached(why) if why.contains("3 share groups are active")),
        "{refused:?}"
    );
    let page = crate::broker::page::Page {
        after: None,
        limit: 100,
        only: None,
    };
    assert_eq!(queues.list(&page).entries.len(), 3, "q4 is not listed");
    // Administration is not refused at the cap: a group made by its configuration.
    let config = BTreeMap::from([("lock.ms".to_string(), "5000".to_string())]);
    queues.alter_config("q5", &config).await.unwrap();
    queues.describe("q5").await.unwrap();
    queues.unload_idle(); // q5 has no members: it goes
    assert_eq!(queues.loaded.load(std::sync::atomic::Ordering::Relaxed), 3);
    // q2's member leaves, and nothing is owed: q2 is idle and makes room.
    let (_, mut guard) = queues
        .lock("q2", false, super::Admit::Always)
        .await
        .unwrap();
    let members = &mut group(&mut guard).members;
    let idx = members.touch("m", "q2", 0).unwrap();
    assert_eq!(members.leave("m", idx), Some(idx));
    drop(guard);
    queues
        .fetch("q4", "m", "t", 1, Duration::ZERO, 0)
        .await
        .unwrap();
}

/// A ShareStream's fetch of a member the group does not know (it lost it in a reload)
/// joins it as a stream's member, which does not expire; a unary fetch's does.
#[tokio::test]
async fn a_streams_fetch_joins_a_member_that_does_not_expire() {
    let (_dir, _broker, queues, _) = setup().await;
    let joined = std::sync::atomic::AtomicU32::new(0);
    queues
        .stream_fetch("q", "s", "t", (1, Duration::ZERO, 0), &joined, &|_| Ok(()))
        .await
        .unwrap();
    queues
        .fetch("q", "u", "t", 1, Duration::ZERO, 0)
        .await
        .unwrap();
    let (_, mut guard) = queues.lock("q", false, super::Admit::Always).await.unwrap();
    let gone: Vec<String> = group(&mut guard)
        .members
        .expire(i64::MAX, 1_000)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(gone.iter().any(|id| id == "u"), "{gone:?}");
    assert!(!gone.iter().any(|id| id == "s"), "{gone:?}");
}

/// A stream's fetch that joins its member again (the group lost it in a reload after a
/// failed fsync) and is then cut short by the stream's end: the stream leaves as the
/// member it is now. It left under its old number, which removed nothing, and the
/// member, a stream's that never expires, stayed for the server's life.
#[tokio::test]
async fn a_streams_fetch_cut_short_after_joining_again_leaves_as_the_member_it_is_now() {
    let (_dir, _broker, queues, _) = setup().await;
    let (_, old) = queues.join("q", "s", "t").await.unwrap();
    {
        // The reload: the group is read again from its files, without its members.
        let (_, mut guard) = queues.lock("q", false, super::Admit::Always).await.unwrap();
        *guard = super::SlotState::Unloaded;
        queues
            .loaded
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    let joined = std::sync::atomic::AtomicU32::new(old);
    let mut fetch = Box::pin(queues.stream_fetch(
        "q",
        "s",
        "t",
        (1, Duration::from_secs(10), 0),
        &joined,
        &|_| Ok(()),
    ));
    // Up to its wait for records (the log is empty): it has joined by then. The stream
    // ends: the fetch is dropped, and the member leaves.
    for _ in 0..100 {
        if joined.load(std::sync::atomic::Ordering::Relaxed) != old {
            break;
        }
        assert!(poll_once(&mut fetch).await.is_pending());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(fetch);
    let now = joined.load(std::sync::atomic::Ordering::Relaxed);
    assert_ne!(now, old, "joined again under a new number");
    queues.leave("q", "s", now).await.unwrap();
    let members = queues.describe("q").await.unwrap().members;
    assert!(!members.iter().any(|m| m.member_id == "s"), "{members:?}");
}

/// A worker that connected again on a new stream, its old stream not yet ended (the
/// server has not noticed the broken connection): the old stream's next fetch is
/// refused and locks nothing, and its end does not remove the new stream's member. It
/// fetched as the new member (the id's member now), sending that member's records on
/// the dead stream, and left as it, removing the live stream's member.
#[tokio::test]
async fn an_old_streams_fetch_after_the_worker_joined_again_is_refused() {
    let (_dir, broker, queues, _) = setup().await;
    let x = bytes::Bytes::from_static(b"x");
    super::cancelled_fetch::append_to_t(&broker, 0, x, 3).await;
    let (_, old) = queues.join("q", "w", "t").await.unwrap();
    let (_, new) = queues.join("q", "w", "t").await.unwrap();
    assert_ne!(old, new);
    let joined = std::sync::atomic::AtomicU32::new(old);
    let err = queues
        .stream_fetch("q", "w", "t", (10, Duration::ZERO, 0), &joined, &|_| Ok(()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another stream"), "{err}");
    assert_eq!(joined.load(std::sync::atomic::Ordering::Relaxed), old);
    queues.leave("q", "w", old).await.unwrap();
    let described = queues.describe("q").await.unwrap();
    let w: Vec<_> = described
        .members
        .iter()
        .filter(|m| m.member_id == "w")
        .collect();
    assert_eq!(w.len(), 1, "the new stream's member stays");
    assert_eq!(w[0].records_held, 0, "the old stream locked nothing");
    // The new stream's fetch gets the records.
    let fetched = queues
        .stream_fetch(
            "q",
            "w",
            "t",
            (10, Duration::ZERO, 0),
            &std::sync::atomic::AtomicU32::new(new),
            &|_| Ok(()),
        )
        .await
        .unwrap();
    assert_eq!(fetched.records.len(), 3);
    // And the old stream's acknowledgements do not act as the new member.
    let release = [super::AckBatch {
        partition: 0,
        offsets: vec![fetched.records[0].offset],
        ack: super::Ack::Release,
    }];
    let err = queues
        .stream_acknowledge(
            "q",
            ("w", &std::sync::atomic::AtomicU32::new(old)),
            "t",
            &release,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another stream"), "{err}");
    let accept = [super::AckBatch {
        ack: super::Ack::Accept,
        ..release[0].clone()
    }];
    let refused = queues
        .stream_acknowledge(
            "q",
            ("w", &std::sync::atomic::AtomicU32::new(new)),
            "t",
            &accept,
        )
        .await
        .unwrap();
    assert!(
        refused.is_empty(),
        "the record was the new member's still: {refused:?}"
    );
}
