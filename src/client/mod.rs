//! The Rust client: `Admin` for topics, `Producer` (batching, keyed partitioning,
//! retries, pipelining over `ProduceStream`), a partition `Consumer`, a consumer-group
//! member (`GroupConsumer`), a share-group (queue) member (`Worker`) and `Exchanges`
//! (routing, and publishing to them).

mod channel;
mod consumer;
mod direct;
mod exchanges;
mod group;
mod producer;
mod worker;

pub use channel::{Channel, ClientTls, ConnectError, ConnectOptions};
pub(crate) use consumer::bounds;
pub use consumer::{ConsumedRecord, Consumer, OffsetReset, Start};
pub use direct::Subscription;
pub use exchanges::Exchanges;
pub use group::{Batch, GroupConfig, GroupConsumer};
pub use producer::{retriable, Ack, Producer, ProducerConfig, RECORD_OVERHEAD};
pub use worker::{Job, Worker, WorkerConfig};

/// A failure of the connection rather than of the request, which asking again mends:
/// the server restarting or unreachable for a moment, a connection broken (a SIGKILLed
/// server's streams end in transport errors, UNKNOWN or INTERNAL). A group consumer's
/// fetchers and `strom work` wait these out.
pub fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
    )
}

use std::collections::BTreeMap;

use tonic::Status;

use crate::grpc::pb::{
    self, admin_client::AdminClient, groups_client::GroupsClient, log_client::LogClient,
    queues_client::QueuesClient,
};

/// The largest message the client sends or accepts.
const MAX_MESSAGE: usize = 64 << 20;

/// The most a consumer's Fetch asks for, whatever it was configured with. An answer
/// holds at most what was asked or one batch (16 MiB at most), whichever is larger,
/// and must fit in `MAX_MESSAGE`: a server whose --max-fetch-bytes is above it could
/// otherwise send more than the client accepts, and the client's OUT_OF_RANGE looked
/// like the server's (records deleted), so the consumer asked again for ever.
pub(crate) fn fetch_ask(max_bytes: u32) -> u32 {
    max_bytes.min((MAX_MESSAGE - (16 << 20)) as u32)
}

/// A connection to a strom server, cheap to clone (one HTTP/2 connection underneath).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to `address` (`host:port`, `http://host:port`, or `https://host:port`
    /// for TLS trusting the system's roots).
    pub async fn connect(address: &str) -> Result<Client, ConnectError> {
        let tls = address.starts_with("https://").then(ClientTls::default);
        let options = ConnectOptions { tls, token: None };
        Client::connect_with(address, options).await
    }

    /// Connects to `address`, over TLS if `options.tls` is given (whatever scheme the
    /// address names), each call carrying `options.token` if there is one. The server's
    /// certificate must name the host of `address` (a DNS name, or an IP address among
    /// its names).
    pub async fn connect_with(
        address: &str,
        options: ConnectOptions,
    ) -> Result<Client, ConnectError> {
        let channel = channel::connect(address, options).await?;
        Ok(Client { channel })
    }

    /// The connection, for generated clients this one has no method for (the health
    /// service's Watch, reflection): its calls carry the token too.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Asks the server whether it is serving (gRPC's health check): a connection the
    /// server refuses (plaintext to a TLS port, TLS without the client certificate it
    /// requires) fails only at its first call, and this makes that call.
    pub async fn check(&self) -> Result<(), Status> {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let request = tonic_health::pb::HealthCheckRequest::default();
        health.check(request).await.map(drop)
    }

    /// A client that connects on first use, for tests of the client's own state.
    #[cfg(test)]
    pub(crate) fn lazy(address: &str) -> Client {
        Client {
            channel: channel::lazy(address),
        }
    }

    pub fn log(&self) -> LogClient<Channel> {
        LogClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The generated client of the Groups service (offsets, describe, reset, ...).
    pub fn groups(&self) -> GroupsClient<Channel> {
        GroupsClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// A consumer group as DescribeGroup tells it, every page put together: its members
    /// with their assignments, and its committed offsets with their lag, with the
    /// state and epoch that the last page saw (a group can change between pages).
    pub async fn describe_group(&self, group: &str) -> Result<pb::DescribeGroupResponse, Status> {
        let pages = every_page(|page_token| {
            let mut groups = self.groups();
            let request = pb::DescribeGroupRequest {
                group: group.to_string(),
                page_size: 0,
                page_token,
            };
            async move {
                let page = groups.describe_group(request).await?.into_inner();
                let next = page.next_page_token.clone();
                Ok((page, next))
            }
        })
        .await?;
        let mut whole = pb::DescribeGroupResponse::default();
        for page in pages {
            whole.members.extend(page.members);
            whole.offsets.extend(page.offsets);
            (whole.group, whole.state, whole.group_epoch) =
                (page.group, page.state, page.group_epoch);
        }
        Ok(whole)
    }

    /// The generated client of the Queues service (share groups).
    pub fn queues(&self) -> QueuesClient<Channel> {
        QueuesClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Exchanges: their bindings, and publishing to them.
    pub fn exchanges(&self) -> Exchanges {
        Exchanges::new(self.channel.clone())
    }

    pub fn admin(&self) -> Admin {
        Admin {
            inner: AdminClient::new(self.channel.clone()),
        }
    }
}

/// Every page of a listing: `list(token)` asks for the page after `token` (empty for
/// the first) and gives that page and its `next_page_token` (empty after the last).
pub async fn every_page<T, F, Fut>(mut list: F) -> Result<Vec<T>, Status>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(T, String), Status>>,
{
    let (mut pages, mut token) = (Vec::new(), String::new());
    loop {
        let (page, next) = list(token.clone()).await?;
        pages.push(page);
        match next_page(&token, next)? {
            Some(next) => token = next,
            None => return Ok(pages),
        }
    }
}

/// The token of a listing's next page, or None after its last; refuses a token that
/// does not go past the previous one (listings are by name), which would loop for ever.
fn next_page(previous: &str, next: String) -> Result<Option<String>, Status> {
    match next.as_str() {
        "" => Ok(None),
        ahead if previous.is_empty() || ahead > previous => Ok(Some(next)),
        _ => Err(Status::internal(format!(
            "the server's listing went back: page token {next:?} after {previous:?}"
        ))),
    }
}

/// Topic administration.
#[derive(Clone)]
pub struct Admin {
    inner: AdminClient<Channel>,
}

impl Admin {
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        config: BTreeMap<String, String>,
    ) -> Result<pb::TopicDescription, Status> {
        let request = pb::CreateTopicRequest {
            name: name.into(),
            partitions,
            config: config.into_iter().collect(),
        };
        Ok(self
            .inner
            .create_topic(request)
            .await?
            .into_inner()
            .topic
            .unwrap_or_default())
    }

    pub async fn delete_topic(&mut self, name: &str) -> Result<(), Status> {
        self.inner
            .delete_topic(pb::DeleteTopicRequest { name: name.into() })
            .await?;
        Ok(())
    }

    pub async fn list_topics(&mut self) -> Result<Vec<String>, Status> {
        Ok(self.list_all_topics().await?.names)
    }

    /// The topics being served, and those whose files could not be opened, with why:
    /// every page of the listing.
    pub async fn list_all_topics(&mut self) -> Result<pb::ListTopicsResponse, Status> {
        let pages = every_page(|page_token| {
            let mut admin = self.inner.clone();
            async move {
                let page = pb::ListTopicsRequest {
                    page_size: 0,
                    page_token,
                };
                let mut listed = admin.list_topics(page).await?.into_inner();
                let next = std::mem::take(&mut listed.next_page_token);
                Ok((listed, next))
            }
        })
        .await?;
        let mut all = pb::ListTopicsResponse::default();
        for mut page in pages {
            all.names.append(&mut page.names);
            all.unavailable.append(&mut page.unavailable);
        }
        Ok(all)
    }

    pub async fn describe_topic(&mut self, name: &str) -> Result<pb::TopicDescription, Status> {
        let response = self
            .inner
            .describe_topic(pb::DescribeTopicRequest { name: name.into() })
            .await?;
        Ok(response.into_inner().topic.unwrap_or_default())
    }

    /// Deletes the records of a partition below `before` (the high watermark if None);
    /// returns the new log start offset.
    pub async fn delete_records(
        &mut self,
        topic: &str,
        partition: u32,
        before: Option<u64>,
    ) -> Result<u64, Status> {
        let before_offset = match before {
            None => -1,
            Some(offset) => i64::try_from(offset)
                .map_err(|_| Status::invalid_argument(format!("offset {offset} is past i64")))?,
        };
        let request = pb::DeleteRecordsRequest {
            topic: topic.into(),
            partition,
            before_offset,
        };
        Ok(self
            .inner
            .delete_records(request)
            .await?
            .into_inner()
            .log_start_offset)
    }

    pub async fn alter_topic_config(
        &mut self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<pb::TopicDescription, Status> {
        let request = pb::AlterTopicConfigRequest {
            name: name.into(),
            config: config.into_iter().collect(),
        };
        Ok(self
            .inner
            .alter_topic_config(request)
            .await?
            .into_inner()
            .topic
            .unwrap_or_default())
    }

    /// Gives the topic `partitions` partitions in all (adding, never removing); with
    /// `validate_only`, only checks that it could.
    pub async fn add_partitions(
        &mut self,
        name: &str,
        partitions: u32,
        validate_only: bool,
    ) -> Result<pb::TopicDescription, Status> {
        let request = pb::AddPartitionsRequest {
            name: name.into(),
            partitions,
            validate_only,
        };
        Ok(self
            .inner
            .add_partitions(request)
            .await?
            .into_inner()
            .topic
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::next_page;

    /// A listing's pages end at an empty token, and a token that does not go past the
    /// previous one is refused rather than followed for ever.
    #[test]
    fn page_tokens_must_go_forward() {
        assert_eq!(next_page("", "b".into()).unwrap().as_deref(), Some("b"));
        assert_eq!(next_page("b", "c".into()).unwrap().as_deref(), Some("c"));
        assert_eq!(next_page("c", String::new()).unwrap(), None);
        assert!(next_page("c", "c".into()).is_err());
        assert!(next_page("c", "a".into()).is_err());
    }
}
