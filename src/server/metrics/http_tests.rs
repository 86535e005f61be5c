//! Tests of `http.rs`.
use super::*;

/// A render answers the requests of the next second; after that, a new one, unless
/// `MAX_RENDERS_HELD` renders are alive (the newest and those of unfinished
/// responses): then the newest while it is young enough, and then none (a 503), so
/// that scrapes nobody reads cannot pile up renders.
#[tokio::test]
async fn renders_are_shared_and_those_held_unread_are_bounded() {
    const AGES: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(400));
    let renders = Arc::new(Mutex::new(Renders::default()));
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let render = || {
        let (renders, made) = (Arc::clone(&renders), Arc::clone(&made));
        async move {
            let n = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rendered(renders, AGES, move || async move { format!("render {n}") }).await
        }
    };
    let first = render().await.unwrap();
    assert_eq!(render().await.unwrap(), first, "fresh: shared");
    let mut held = vec![first];
    for _ in 1..MAX_RENDERS_HELD {
        tokio::time::sleep(AGES.0).await;
        let next = render().await.unwrap();
        assert!(!held.contains(&next), "stale: rendered again");
        held.push(next);
    }
    tokio::time::sleep(AGES.0).await;
    let newest = held.last().unwrap().clone();
    assert_eq!(
        render().await.unwrap(),
        newest,
        "every render held: the newest"
    );
    tokio::time::sleep(AGES.1).await;
    assert_eq!(render().await, None, "the newest too old: none");
    held.truncate(1); // those responses finished
    let again = render().await.unwrap();
    assert!(!held.contains(&again), "room again: a new render");
}

/// A requester that hangs up while its render runs neither stops it nor lets a
/// second start beside it: the next request gets the first render. (With the turn
/// in the request's future, each hang-up started another: 3.1 GB, a review saw.)
#[tokio::test]
async fn a_request_that_hangs_up_leaves_its_render_to_the_next() {
    const AGES: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(60));
    let renders = Arc::new(Mutex::new(Renders::default()));
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let render = |made: Arc<std::sync::atomic::AtomicUsize>| async move {
        made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        "slow".to_string()
    };
    let hung_up = tokio::time::timeout(
        Duration::from_millis(20),
        rendered(Arc::clone(&renders), AGES, {
            let made = Arc::clone(&made);
            move || render(made)
        }),
    )
    .await;
    assert!(hung_up.is_err(), "gone before its render ended");
    let next = rendered(Arc::clone(&renders), AGES, {
        let made = Arc::clone(&made);
        move || render(made)
    })
    .await
    .unwrap();
    assert_eq!(&next[..], b"slow");
    assert_eq!(
        made.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one render"
    );
}

/// A body hands its render over in copies of at most `CHUNK` bytes.
#[tokio::test]
async fn a_scrape_body_is_copied_out_in_chunks() {
    use http_body_util::BodyExt;
    let text = Arc::new(Bytes::from(vec![b'x'; CHUNK * 2 + 10]));
    let mut body = Scrape::new(Arc::clone(&text));
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap().len());
    }
    drop(body);
    assert_eq!(frames, [CHUNK, CHUNK, 10]);
    assert_eq!(Arc::strong_count(&text), 1, "the body let its render go");
}
