//! The access control list (`acl`): a call is refused PERMISSION_DENIED unless a line
//! grants its principal (a token's name, or a client certificate's common name) what
//! it does, on every path; listings show only what the caller may see; a reload takes
//! a grant away from the streams already open.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::principals::{as_principal, write_tokens};
use common::requests::{produce, record};
use common::server::TestServer;
use common::tls::Certs;
use strom::broker::Limits;
use strom::client::{Client, ConnectOptions};
use strom::grpc::auth::file_line;
use strom::grpc::pb;
use strom::server::{Acl, ServeOptions, Tokens};
use tokio_stream::StreamExt;
use tonic::{Code, Status};

const ACL: &str = "\
# who      may          on what
writer     write        topic:orders producer:writer-*
reader     read         topic:orders group:billing
auditor    read         topic:*
ops        all          topic:* group:* producer:*
queue-op   admin        group:work
queue-op   admin        topic:work.dlq
* read topic:public.*
";

/// A server with tokens for each principal of `ACL` (each token is its name, twice)
/// and the list in `dir/acl`.
async fn server(dir: &Path) -> (TestServer, Acl) {
    let tokens = dir.join("tokens");
    let names = ["writer", "reader", "auditor", "ops", "queue-op", "nobody"];
    write_tokens(&tokens, &names);
    std::fs::write(dir.join("acl"), ACL).unwrap();
    let acl = Acl::load(&dir.join("acl")).unwrap();
    let options = ServeOptions {
        tokens: Some(Tokens::load(&tokens).unwrap()),
        acl: Some(acl.clone()),
        ..Default::default()
    };
    let server =
        TestServer::start_with_options(&dir.join("data"), Limits::default(), options).await;
    (server, acl)
}

fn denied<T: std::fmt::Debug>(result: Result<T, Status>, says: &str) {
    let status = result.expect_err("granted what no line grants");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(says), "{status:?}");
}

/// A ShareStream of `client` on `group` and `topic`, past its joining answer, and the
/// sender of its later messages.
async fn open_share_stream(
    client: &Client,
    group: &str,
    topic: &str,
) -> (
    tokio::sync::mpsc::Sender<pb::ShareStreamRequest>,
    tonic::Streaming<pb::ShareStreamResponse>,
) {
    let (sender, messages) = tokio::sync::mpsc::channel(4);
    let open = pb::ShareStreamOpen {
        group: group.into(),
        topic: topic.into(),
        ..Default::default()
    };
    sender
        .send(pb::ShareStreamRequest {
            body: Some(pb::share_stream_request::Body::Open(open)),
        })
        .await
        .unwrap();
    let mut stream = client
        .queues()
        .share_stream(tokio_stream::wrappers::ReceiverStream::new(messages))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("the joining answer");
    (sender, stream)
}

fn credit(n: u32) -> pb::ShareStreamRequest {
    pb::ShareStreamRequest {
        body: Some(pb::share_stream_request::Body::Credits(n)),
    }
}

fn fetch(topic: &str) -> pb::FetchRequest {
    pb::FetchRequest {
        topic: topic.into(),
        ..Default::default()
    }
}

fn subscribe(topic: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        topic: topic.into(),
        start: Some(pb::subscribe_request::Start::Earliest(true)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_needs_a_grant_and_listings_show_only_what_the_caller_may_see() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _acl) = server(dir.path()).await;
    let ops = as_principal(&server, "ops").await;
    for topic in ["orders", "secret", "public.news"] {
        ops.admin()
            .create_topic(topic, 1, Default::default())
            .await
            .unwrap();
    }
    let (writer, reader, auditor, nobody) = (
        as_principal(&server, "writer").await,
        as_principal(&server, "reader").await,
        as_principal(&server, "auditor").await,
        as_principal(&server, "nobody").await,
    );

    // Topic administration needs admin.
    denied(
        writer
            .admin()
            .create_topic("mine", 1, Default::default())
            .await,
        r#""writer" may not admin topic "mine""#,
    );
    denied(writer.admin().delete_topic("orders").await, "may not admin");
    denied(
        reader.admin().delete_records("orders", 0, None).await,
        "may not admin",
    );
    denied(
        auditor
            .admin()
            .alter_topic_config("orders", [("retention.ms".into(), "1".into())].into())
            .await,
        "may not admin",
    );
    denied(
        writer.admin().add_partitions("orders", 8, false).await,
        "may not admin",
    );
    denied(
        reader.admin().add_partitions("orders", 8, true).await,
        "may not admin",
    );

    // Writing needs write: unary Produce, and each message of a ProduceStream.
    writer
        .log()
        .produce(produce("orders", Some(0), vec![record("o1")]))
        .await
        .unwrap();
    denied(
        writer
            .log()
            .produce(produce("secret", Some(0), vec![record("s")]))
            .await,
        r#"may not write topic "secret": no line of the server's acl grants it (a line `writer write topic:secret` would)"#,
    );
    denied(
        reader
            .log()
            .produce(produce("orders", Some(0), vec![record("r")]))
            .await,
        "may not write",
    );
    let streamed = |id: u64, topic: &str| pb::ProduceStreamRequest {
        correlation_id: id,
        request: Some(produce(
            topic,
            Some(0),
            vec![record(&format!("stream {id}"))],
        )),
    };
    let replies: Vec<_> = writer
        .log()
        .produce_stream(tokio_stream::iter([
            streamed(1, "orders"),
            streamed(2, "secret"),
            streamed(3, "orders"),
        ]))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    // By correlation id: a durable request's reply may come after later ones.
    let mut outcomes: Vec<_> = replies
        .into_iter()
        .map(|reply| {
            let reply = reply.unwrap();
            let code = match reply.result.unwrap() {
                pb::produce_stream_response::Result::Response(_) => Code::Ok,
                pb::produce_stream_response::Result::Error(e) => Code::from(e.code),
            };
            (reply.correlation_id, code)
        })
        .collect();
    outcomes.sort_by_key(|(id, _)| *id);
    assert_eq!(
        outcomes,
        [(1, Code::Ok), (2, Code::PermissionDenied), (3, Code::Ok)]
    );

    // Reading needs read: Fetch and Subscribe. A topic that does not exist is refused
    // as one that does: a refused caller learns nothing of what is there.
    let orders = reader.fetch(fetch("orders")).await.unwrap();
    assert_eq!(orders.records.iter().count(), 3);
    denied(writer.fetch(fetch("orders")).await, "may not read");
    denied(reader.fetch(fetch("secret")).await, "may not read");
    denied(reader.fetch(fetch("no-such-topic")).await, "may not read");
    denied(
        reader.subscribe(subscribe("secret")).await.map(drop),
        "may not read",
    );
    let mut everyone = nobody.subscribe(subscribe("public.news")).await.unwrap();
    ops.log()
        .produce(produce("public.news", Some(0), vec![record("n")]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), everyone.next())
        .await
        .expect("a * line grants everyone")
        .unwrap()
        .unwrap();
    denied(
        nobody.fetch(fetch("orders")).await,
        r#""nobody" may not read"#,
    );

    // Describing and listing need any grant on the topic.
    writer.admin().describe_topic("orders").await.unwrap();
    denied(
        writer.admin().describe_topic("secret").await,
        r#""writer" has no access to topic "secret""#,
    );
    denied(
        writer
            .log()
            .list_offsets(pb::ListOffsetsRequest {
                topic: "secret".into(),
                spec: Some(pb::list_offsets_request::Spec::Latest(true)),
                ..Default::default()
            })
            .await,
        "has no access",
    );
    assert_eq!(
        writer.admin().list_topics().await.unwrap(),
        ["orders", "public.news"]
    );
    assert_eq!(nobody.admin().list_topics().await.unwrap(), ["public.news"]);
    assert_eq!(auditor.admin().list_topics().await.unwrap().len(), 3);
    // Paging skips what is hidden: one name a page, and paging ends after the last
    // name the caller may see.
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = pb::ListTopicsRequest {
            page_size: 1,
            page_token,
        };
        let listed = pb::admin_client::AdminClient::new(writer.channel())
            .list_topics(page)
            .await
            .unwrap()
            .into_inner();
        pages.push(listed.names);
        page_token = listed.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, [["orders"], ["public.news"]]);

    // Producer names: InitProducer with a name needs write on producer:NAME; without
    // one, write on some topic.
    let init = |name: &str| pb::InitProducerRequest {
        producer_name: name.into(),
    };
    writer.log().init_producer(init("writer-1")).await.unwrap();
    writer.log().init_producer(init("")).await.unwrap();
    denied(
        writer.log().init_producer(init("orders-api")).await,
        r#"may not write producer "orders-api""#,
    );
    denied(
        reader.log().init_producer(init("")).await,
        r#""reader" may not write any topic"#,
    );

    // Consumer groups: read on the group and on its topics.
    let heartbeat = |group: &str, topic: &str| pb::HeartbeatRequest {
        group: group.into(),
        topics: vec![topic.into()],
        ..Default::default()
    };
    let joined = reader
        .groups()
        .heartbeat(heartbeat("billing", "orders"))
        .await
        .unwrap()
        .into_inner();
    denied(
        reader
            .groups()
            .heartbeat(heartbeat("other", "orders"))
            .await,
        r#"may not read group "other""#,
    );
    denied(
        reader
            .groups()
            .heartbeat(heartbeat("billing", "secret"))
            .await,
        r#"may not read topic "secret""#,
    );
    // A pattern is matched only against topics the member may read: ".*" gives the
    // reader public.news, and never secret (nor its name).
    let mut patterned = pb::HeartbeatRequest {
        group: "billing".into(),
        topic_pattern: ".*".into(),
        ..Default::default()
    };
    let mut given = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let answer = reader
            .groups()
            .heartbeat(patterned.clone())
            .await
            .unwrap()
            .into_inner();
        patterned.member_id = answer.member_id;
        patterned.member_epoch = answer.member_epoch;
        given.extend(answer.assignment.into_iter().map(|t| t.topic));
    }
    assert!(given.contains("public.news"), "{given:?}");
    assert!(!given.contains("secret"), "{given:?}");
    let commit = |topic: &str| pb::CommitOffsetsRequest {
        group: "billing".into(),
        member_id: joined.member_id.clone(),
        member_epoch: joined.member_epoch,
        offsets: vec![pb::OffsetCommit {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            ..Default::default()
        }],
    };
    denied(
        reader.groups().commit_offsets(commit("secret")).await,
        r#"may not read topic "secret""#,
    );
    denied(
        writer
            .groups()
            .fetch_offsets(pb::FetchOffsetsRequest {
                group: "billing".into(),
                ..Default::default()
            })
            .await,
        r#"has no access to group "billing""#,
    );
    denied(writer.describe_group("billing").await, "has no access");
    denied(
        reader
            .groups()
            .delete_group(pb::DeleteGroupRequest {
                group: "billing".into(),
            })
            .await,
        r#"may not admin group "billing""#,
    );
    denied(
        reader
            .groups()
            .reset_offsets(pb::ResetOffsetsRequest {
                group: "billing".into(),
                topic: "orders".into(),
                to: Some(pb::reset_offsets_request::To::Earliest(true)),
                ..Default::default()
            })
            .await,
        "may not admin",
    );
    denied(
        reader
            .groups()
            .delete_offsets(pb::DeleteOffsetsRequest {
                group: "billing".into(),
                topic: "orders".into(),
                ..Default::default()
            })
            .await,
        "may not admin",
    );
    let groups = |client: Client| async move {
        let listed = client
            .groups()
            .list_groups(pb::ListGroupsRequest::default())
            .await
            .unwrap()
            .into_inner();
        listed
            .groups
            .into_iter()
            .map(|g| g.group)
            .collect::<Vec<_>>()
    };
    ops.groups()
        .heartbeat(heartbeat("hidden", "secret"))
        .await
        .unwrap();
    // A group's description shows a caller only the topics it has a grant on.
    let mut ops_member = heartbeat("billing", "secret");
    for _ in 0..3 {
        let answer = ops
            .groups()
            .heartbeat(ops_member.clone())
            .await
            .unwrap()
            .into_inner();
        ops_member.member_id = answer.member_id;
        ops_member.member_epoch = answer.member_epoch;
    }
    let by_ops = format!("{:?}", ops.describe_group("billing").await.unwrap());
    let by_reader = format!("{:?}", reader.describe_group("billing").await.unwrap());
    assert!(by_ops.contains("secret"), "{by_ops}");
    assert!(!by_reader.contains("secret"), "{by_reader}");
    assert!(by_reader.contains("orders"), "{by_reader}");
    assert_eq!(groups(reader.clone()).await, ["billing"]);
    assert_eq!(groups(ops.clone()).await, ["billing", "hidden"]);
    assert!(groups(writer.clone()).await.is_empty());

    // Queues: read on the group and the topic; admin to configure; write on a dead
    // letter topic the configuration names.
    let share_fetch = |group: &str, topic: &str| pb::ShareFetchRequest {
        group: group.into(),
        topic: topic.into(),
        max_records: 10,
        ..Default::default()
    };
    reader
        .queues()
        .share_fetch(share_fetch("billing", "orders"))
        .await
        .unwrap();
    denied(
        reader
            .queues()
            .share_fetch(share_fetch("work", "orders"))
            .await,
        r#"may not read group "work""#,
    );
    let configure = |dead_letters: &str| pb::AlterShareGroupConfigRequest {
        group: "work".into(),
        config: HashMap::from([("dead.letter.topic".to_string(), dead_letters.to_string())]),
    };
    denied(
        reader
            .queues()
            .alter_share_group_config(configure(""))
            .await,
        r#"may not admin group "work""#,
    );
    let queue_op = as_principal(&server, "queue-op").await;
    queue_op
        .queues()
        .alter_share_group_config(configure(""))
        .await
        .unwrap();
    // A dead-letter topic gets the records the group's members hold: only one who may
    // read every topic the group consumes may choose it.
    ops.queues()
        .share_fetch(share_fetch("work", "orders"))
        .await
        .unwrap();
    denied(
        queue_op
            .queues()
            .alter_share_group_config(configure("work.dlq"))
            .await,
        r#""queue-op" may not read topic "orders""#,
    );
    ops.queues()
        .alter_share_group_config(configure("work.dlq"))
        .await
        .unwrap();
    // Admin on a group is not membership: leaving needs read, as joining does.
    denied(
        queue_op
            .groups()
            .leave_group(pb::LeaveGroupRequest {
                group: "work".into(),
                member_id: "m".into(),
            })
            .await,
        r#""queue-op" may not read group "work""#,
    );
    denied(
        queue_op
            .queues()
            .alter_share_group_config(configure("orders"))
            .await,
        r#""queue-op" may not admin topic "orders""#,
    );
    let share_groups = |client: Client| async move {
        let listed = client
            .queues()
            .list_share_groups(pb::ListShareGroupsRequest::default())
            .await
            .unwrap()
            .into_inner();
        listed
            .groups
            .into_iter()
            .map(|g| g.group)
            .collect::<Vec<_>>()
    };
    assert_eq!(share_groups(queue_op.clone()).await, ["work"]);
    assert_eq!(share_groups(reader.clone()).await, ["billing"]);
    ops.queues()
        .share_fetch(share_fetch("billing", "secret"))
        .await
        .unwrap();
    let share_described = |client: Client| async move {
        let described = client
            .queues()
            .describe_share_group(pb::DescribeShareGroupRequest {
                group: "billing".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let topics: Vec<String> = described.partitions.into_iter().map(|p| p.topic).collect();
        topics
    };
    assert_eq!(share_described(ops.clone()).await, ["orders", "secret"]);
    assert_eq!(share_described(reader.clone()).await, ["orders"]);
    denied(
        reader
            .queues()
            .describe_share_group(pb::DescribeShareGroupRequest {
                group: "work".into(),
            })
            .await,
        "has no access",
    );
    denied(
        reader
            .queues()
            .share_stream(tokio_stream::iter([pb::ShareStreamRequest {
                body: Some(pb::share_stream_request::Body::Open(pb::ShareStreamOpen {
                    group: "billing".into(),
                    topic: "secret".into(),
                    ..Default::default()
                })),
            }]))
            .await,
        r#"may not read topic "secret""#,
    );

    // A dead-letter topic is written on the members' behalf: one that may not write
    // it may not consume the group (nor a group's admin route its records there).
    let dead_letters = |topic: &str| pb::AlterShareGroupConfigRequest {
        group: "billing".into(),
        config: HashMap::from([("dead.letter.topic".to_string(), topic.to_string())]),
    };
    ops.queues()
        .alter_share_group_config(dead_letters("billing.dlq"))
        .await
        .unwrap();
    denied(
        reader
            .queues()
            .share_fetch(share_fetch("billing", "orders"))
            .await,
        r#""reader" may not write topic "billing.dlq""#,
    );
    let (credits, mut stream) = open_share_stream(&reader, "billing", "orders").await;
    credits.send(credit(10)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream neither delivered nor ended");
    denied(ended, r#""reader" may not write topic "billing.dlq""#);
    ops.queues()
        .alter_share_group_config(dead_letters(""))
        .await
        .unwrap();

    // Nothing refused was stored: orders holds o1 and the stream's 1 and 3.
    let stored: Vec<String> = common::fetch_all(&ops, "orders", 0)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(stored, ["o1", "stream 1", "stream 3"]);
    assert!(common::fetch_all(&ops, "secret", 0).await.is_empty());
    server.stop().await.unwrap();
}

/// A reload of the list takes a grant away from the streams already open: a
/// ProduceStream's next request is refused, a Subscribe ends before its next record,
/// a ShareStream before its next fetch; and a new grant serves at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_takes_grants_away_from_open_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (server, acl) = server(dir.path()).await;
    let ops = as_principal(&server, "ops").await;
    ops.admin()
        .create_topic("orders", 1, Default::default())
        .await
        .unwrap();
    let (writer, reader) = (
        as_principal(&server, "writer").await,
        as_principal(&server, "reader").await,
    );
    let (requests, queued) = tokio::sync::mpsc::channel(4);
    let mut replies = writer
        .log()
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await
        .unwrap()
        .into_inner();
    let streamed = |id: u64| pb::ProduceStreamRequest {
        correlation_id: id,
        request: Some(produce("orders", Some(0), vec![record(&format!("r{id}"))])),
    };
    requests.send(streamed(1)).await.unwrap();
    let first = replies.message().await.unwrap().unwrap();
    assert!(matches!(
        first.result,
        Some(pb::produce_stream_response::Result::Response(_))
    ));
    let mut subscription = reader.subscribe(subscribe("orders")).await.unwrap();
    subscription.next().await.unwrap().unwrap();
    // The queue starts at the earliest record: a fetch would have r1 to lock.
    ops.queues()
        .alter_share_group_config(pb::AlterShareGroupConfigRequest {
            group: "billing".into(),
            config: HashMap::from([("start".to_string(), "earliest".to_string())]),
        })
        .await
        .unwrap();
    let (acks, mut shared) = open_share_stream(&reader, "billing", "orders").await;
    // One credit: r1 comes at once, then the stream is quiet (no fetch of its waits).
    acks.send(credit(1)).await.unwrap();
    let first = shared.message().await.unwrap().expect("r1");
    assert_eq!(first.records.len(), 1);

    // A member subscribed by pattern is given what it may read: orders, not other.
    ops.admin()
        .create_topic("other", 1, Default::default())
        .await
        .unwrap();
    let mut patterned = pb::HeartbeatRequest {
        group: "billing".into(),
        topic_pattern: "orders|other".into(),
        ..Default::default()
    };
    let beat = |client: Client, mut request: pb::HeartbeatRequest| async move {
        let mut given = Vec::new();
        for _ in 0..5 {
            let answer = client
                .groups()
                .heartbeat(request.clone())
                .await
                .unwrap()
                .into_inner();
            request.member_id = answer.member_id;
            request.member_epoch = answer.member_epoch;
            request.owned = answer.assignment.clone();
            given = answer.assignment.into_iter().map(|t| t.topic).collect();
        }
        (given, request)
    };
    let given;
    (given, patterned) = beat(reader.clone(), patterned).await;
    assert_eq!(given, ["orders"]);

    // Long polls that wait for what the reload will take away: a Fetch past the end,
    // and a ShareFetch while r1 is locked to the stream.
    let long_fetch = {
        let reader = reader.clone();
        tokio::spawn(async move {
            let request = pb::FetchRequest {
                topic: "orders".into(),
                offset: 1,
                max_wait_ms: 10_000,
                ..Default::default()
            };
            reader
                .fetch(request)
                .await
                .map(|r| r.records.iter().count())
        })
    };
    let long_share_fetch = {
        let reader = reader.clone();
        tokio::spawn(async move {
            let request = pb::ShareFetchRequest {
                group: "billing".into(),
                topic: "orders".into(),
                max_records: 10,
                max_wait_ms: 10_000,
                ..Default::default()
            };
            let answer = reader.queues().share_fetch(request).await;
            answer.map(|a| a.into_inner().records.len())
        })
    };
    // The share fetch is waiting once its member has joined (the stream's is the other).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let described = ops
            .queues()
            .describe_share_group(pb::DescribeShareGroupRequest {
                group: "billing".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if described.members.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the share fetch never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Writer and reader lose orders.
    std::fs::write(
        dir.path().join("acl"),
        ACL.replace("topic:orders", "topic:other"),
    )
    .unwrap();
    acl.reload().unwrap();
    requests.send(streamed(2)).await.unwrap();
    let refused = replies.message().await.unwrap().unwrap();
    match refused.result {
        Some(pb::produce_stream_response::Result::Error(e)) => {
            assert_eq!(Code::from(e.code), Code::PermissionDenied, "{e:?}");
        }
        other => panic!("a request after the grant was taken away: {other:?}"),
    }
    // The subscription has nothing to deliver: the reload itself ends it.
    let ended = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a quiet subscription outlived its grant")
        .expect("the subscription ended without a status");
    denied(ended.map(drop), r#""reader" may not read topic "orders""#);
    // So does the quiet share stream (no fetch of its own to find out).
    let ended = tokio::time::timeout(Duration::from_secs(10), shared.message())
        .await
        .expect("a quiet share stream outlived its grant");
    denied(ended, r#""reader" may not read topic "orders""#);
    ops.log()
        .produce(produce("orders", Some(0), vec![record("by ops")]))
        .await
        .unwrap();
    // The long polls woke (by ops's record; by r1, which the share stream's end
    // released) and answered nothing.
    denied(long_fetch.await.unwrap(), "may not read");
    denied(long_share_fetch.await.unwrap(), "may not read");
    // The pattern member loses orders and gains other at its next heartbeats.
    let (given, _) = beat(reader.clone(), patterned).await;
    assert_eq!(given, ["other"]);
    // A grant given back serves the next call.
    std::fs::write(dir.path().join("acl"), ACL).unwrap();
    acl.reload().unwrap();
    let read = reader.fetch(fetch("orders")).await.unwrap();
    let values: Vec<String> = read
        .records
        .iter()
        .map(|r| String::from_utf8(r.unwrap().value.to_vec()).unwrap())
        .collect();
    assert_eq!(values, ["r1", "by ops"], "r2 was refused, not stored");
    server.stop().await.unwrap();
}

/// With mutual TLS and no tokens, a client is the common name of its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificates_common_name_is_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    std::fs::write(
        dir.path().join("acl"),
        "client all topic:*\nreader read topic:*\n",
    )
    .unwrap();
    let acl = Acl::load(&dir.path().join("acl")).unwrap();
    let options = ServeOptions {
        tls: Some(certs.server(true)),
        acl: Some(acl.clone()),
        ..Default::default()
    };
    let server =
        TestServer::start_with_options(&dir.path().join("data"), Limits::default(), options).await;
    let connect = |cert: &Path, key: &Path| {
        let options = ConnectOptions {
            tls: Some(certs.client(&certs.ca, Some((cert, key)))),
            token: None,
        };
        let address = format!("https://localhost:{}", server.addr.port());
        async move { Client::connect_with(&address, options).await.unwrap() }
    };
    let client = connect(&certs.client_cert, &certs.client_key).await;
    let reader = connect(&certs.reader_cert, &certs.reader_key).await;
    client
        .admin()
        .create_topic("t", 1, Default::default())
        .await
        .unwrap();
    client
        .log()
        .produce(produce("t", Some(0), vec![record("a")]))
        .await
        .unwrap();
    reader.fetch(fetch("t")).await.unwrap();
    denied(
        reader
            .log()
            .produce(produce("t", Some(0), vec![record("b")]))
            .await,
        r#""reader" may not write topic "t""#,
    );
    // Without tokens too, a reload ends a quiet subscription whose grant went.
    let mut subscription = reader.subscribe(subscribe("t")).await.unwrap();
    subscription.next().await.unwrap().unwrap();
    std::fs::write(dir.path().join("acl"), "client all topic:*\n").unwrap();
    acl.reload().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a quiet subscription outlived its grant")
        .expect("the subscription ended without a status");
    denied(ended.map(drop), r#""reader" may not read topic "t""#);
    server.stop().await.unwrap();

    // With tokens as well, the token names the caller, not the certificate.
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, file_line("robot", "robot-token").unwrap()).unwrap();
    std::fs::write(
        dir.path().join("acl"),
        "robot read topic:*\nclient all topic:*\n",
    )
    .unwrap();
    let options = ServeOptions {
        tls: Some(certs.server(true)),
        tokens: Some(Tokens::load(&tokens).unwrap()),
        acl: Some(Acl::load(&dir.path().join("acl")).unwrap()),
        ..Default::default()
    };
    let server =
        TestServer::start_with_options(&dir.path().join("data"), Limits::default(), options).await;
    let options = ConnectOptions {
        tls: Some(certs.client(&certs.ca, Some((&certs.client_cert, &certs.client_key)))),
        token: Some("robot-token".into()),
    };
    let address = format!("https://localhost:{}", server.addr.port());
    let robot = Client::connect_with(&address, options).await.unwrap();
    robot.fetch(fetch("t")).await.unwrap();
    denied(
        robot.admin().create_topic("u", 1, Default::default()).await,
        r#""robot" may not admin topic "u""#,
    );
    server.stop().await.unwrap();
}

/// `strom serve --acl` as a process: refused at start without a way to tell callers
/// apart, or with a bad line; the CLI's commands refused with the line that would
/// grant them; SIGHUP reads the list again.
#[test]
fn strom_serve_with_an_acl_and_the_cli_through_it() {
    use common::cli::{Serve, STROM};
    let dir = tempfile::tempdir().unwrap();
    let (tokens, acl) = (dir.path().join("tokens"), dir.path().join("acl"));
    std::fs::write(
        &tokens,
        format!(
            "{}\n{}\n",
            file_line("ops", "ops-token").unwrap(),
            file_line("ci", "ci-token").unwrap()
        ),
    )
    .unwrap();
    std::fs::write(&acl, "ops all topic:*\n").unwrap();
    let start_refused = |args: &[&str], says: &str| {
        let mut command = std::process::Command::new(STROM);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("refused"))
            .args(args);
        let out = common::process::run_within(&mut command, b"", Duration::from_secs(30));
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    };
    start_refused(
        &["--acl", acl.to_str().unwrap()],
        "acl needs auth_tokens or tls_client_ca",
    );
    let bad = dir.path().join("bad-acl");
    std::fs::write(&bad, "ops all topic:*\nci reed topic:t\n").unwrap();
    start_refused(
        &[
            "--auth-tokens",
            tokens.to_str().unwrap(),
            "--acl",
            bad.to_str().unwrap(),
        ],
        "line 2: \"reed\" is not an operation",
    );

    let serve = Serve::start_with_args(
        &dir.path().join("data"),
        &[
            "--auth-tokens",
            tokens.to_str().unwrap(),
            "--acl",
            acl.to_str().unwrap(),
        ],
    );
    let logged = serve.stderr.lock().unwrap().join("\n");
    assert!(
        logged.contains("(tokens required, acl enforced)"),
        "{logged}"
    );
    serve.ok(&["topic", "create", "t", "--token", "ops-token"], b"");
    serve.ok(&["topic", "create", "hidden", "--token", "ops-token"], b"");
    let refused = serve.run(&["produce", "-t", "t", "--token", "ci-token"], b"x\n");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(r#""ci" has no access to topic "t""#)
            && stderr.contains("PermissionDenied"),
        "{stderr}"
    );
    assert_eq!(
        serve.ok(&["topic", "list", "--token", "ci-token"], b""),
        b""
    );
    // A grant by SIGHUP: read, so the CLI may describe the topic, but not write.
    std::fs::write(&acl, "ops all topic:*\nci read topic:t\n").unwrap();
    serve.hang_up_until_logged("acl reloaded");
    let refused = serve.run(&["produce", "-t", "t", "--token", "ci-token"], b"x\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    // The CLI asks for a producer id first (idempotent produce): write on some topic.
    assert!(
        stderr.contains(r#""ci" may not write any topic"#) && stderr.contains("0 were stored"),
        "{stderr}"
    );
    std::fs::write(&acl, "ops all topic:*\nci read,write topic:t\n").unwrap();
    serve.hang_up_until_logged("acl reloaded");
    serve.ok(&["produce", "-t", "t", "--token", "ci-token"], b"x\n");
    let out = serve.ok(
        &[
            "consume", "-t", "t", "--from", "earliest", "--token", "ci-token",
        ],
        b"",
    );
    assert_eq!(out, b"x\n");
    assert_eq!(
        serve.ok(&["topic", "list", "--token", "ci-token"], b""),
        b"t\n"
    );
}

/// Every page of a listing: its rows, and the tokens that led past the first page.
async fn every_page<F, Fut>(mut page: F) -> (Vec<String>, Vec<String>)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = (Vec<String>, String)>,
{
    let (mut rows, mut tokens, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let (mut got, next) = page(token).await;
        rows.append(&mut got);
        if next.is_empty() {
            return (rows, tokens);
        }
        tokens.push(next.clone());
        token = next;
    }
}

/// A group's pages (DescribeGroup, FetchOffsets) skip the topics the caller may not
/// see before they count: no page is spent on them, and no page token names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_pages_never_name_topics_the_caller_may_not_see() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let lines = [
        file_line("ops", "opsops").unwrap(),
        file_line("reader", "readerreader").unwrap(),
    ];
    std::fs::write(&tokens, lines.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("acl"),
        "ops all topic:* group:*\nreader read topic:a topic:c group:g\n",
    )
    .unwrap();
    let options = ServeOptions {
        tokens: Some(Tokens::load(&tokens).unwrap()),
        acl: Some(Acl::load(&dir.path().join("acl")).unwrap()),
        ..Default::default()
    };
    let server =
        TestServer::start_with_options(&dir.path().join("data"), Limits::default(), options).await;
    let ops = as_principal(&server, "ops").await;
    let reader = as_principal(&server, "reader").await;
    // b, hidden from the reader, sorts between a and c.
    for topic in ["a", "b", "c"] {
        ops.admin()
            .create_topic(topic, 2, Default::default())
            .await
            .unwrap();
        ops.groups()
            .reset_offsets(pb::ResetOffsetsRequest {
                group: "g".into(),
                topic: topic.into(),
                to: Some(pb::reset_offsets_request::To::Earliest(true)),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let groups = reader.groups();
    let (rows, tokens) = every_page(|page_token| {
        let mut groups = groups.clone();
        async move {
            let request = pb::FetchOffsetsRequest {
                group: "g".into(),
                page_size: 1,
                page_token,
                ..Default::default()
            };
            let page = groups.fetch_offsets(request).await.unwrap().into_inner();
            let rows = page
                .offsets
                .iter()
                .map(|o| format!("{}/{}", o.topic, o.partition));
            (rows.collect(), page.next_page_token)
        }
    })
    .await;
    assert_eq!(rows, ["a/0", "a/1", "c/0", "c/1"]);
    assert!(tokens.iter().all(|t| !t.contains("b,")), "{tokens:?}");
    let (rows, tokens) = every_page(|page_token| {
        let mut groups = groups.clone();
        async move {
            let request = pb::DescribeGroupRequest {
                group: "g".into(),
                page_size: 1,
                page_token,
            };
            let page = groups.describe_group(request).await.unwrap().into_inner();
            let rows = page
                .offsets
                .iter()
                .map(|o| format!("{}/{}", o.topic, o.partition));
            (rows.collect(), page.next_page_token)
        }
    })
    .await;
    assert_eq!(rows, ["a/0", "a/1", "c/0", "c/1"]);
    assert!(tokens.iter().all(|t| !t.contains("b,")), "{tokens:?}");
    server.stop().await.unwrap();
}

/// A token moved to another name in the tokens file no longer stands for the streams it
/// opened: their grants were the old name's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_moved_to_another_name_ends_its_streams() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens");
    let lines = |victim_named: &str| {
        format!(
            "{}\n{}\n",
            file_line("ops", "opsops").unwrap(),
            file_line(victim_named, "victim-token").unwrap()
        )
    };
    std::fs::write(&tokens_file, lines("victim")).unwrap();
    std::fs::write(
        dir.path().join("acl"),
        "ops all topic:*\nvictim read topic:t\n",
    )
    .unwrap();
    let tokens = Tokens::load(&tokens_file).unwrap();
    let options = ServeOptions {
        tokens: Some(tokens.clone()),
        acl: Some(Acl::load(&dir.path().join("acl")).unwrap()),
        ..Default::default()
    };
    let server =
        TestServer::start_with_options(&dir.path().join("data"), Limits::default(), options).await;
    let ops = as_principal(&server, "ops").await;
    ops.admin()
        .create_topic("t", 1, Default::default())
        .await
        .unwrap();
    let victim = Client::connect_with(
        &server.addr.to_string(),
        ConnectOptions {
            tls: None,
            token: Some("victim-token".into()),
        },
    )
    .await
    .unwrap();
    let mut subscription = victim.subscribe(subscribe("t")).await.unwrap();
    // The same token, now another name's (one with no grant).
    std::fs::write(&tokens_file, lines("nogrant")).unwrap();
    tokens.reload().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a quiet subscription outlived its token's name")
        .expect("the subscription ended without a status");
    let status = ended.map(drop).unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    denied(
        victim.fetch(fetch("t")).await,
        r#""nogrant" may not read topic "t""#,
    );
    server.stop().await.unwrap();
}
