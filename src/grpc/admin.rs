//! `strom.v1.Admin`: topic administration.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::{Kind, Operation};
use super::pb::{self, admin_server::Admin};
use super::{access, page, status};
use crate::broker::{Broker, ListedTopic, Topic, TopicInfo};

pub struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    pub fn new(broker: Arc<Broker>) -> AdminService {
        AdminService { broker }
    }

    /// `topic` described, on a blocking thread: it reads each partition's first
    /// record, perhaps from disk.
    async fn described(&self, topic: Arc<Topic>) -> crate::Result<TopicInfo> {
        let broker = Arc::clone(&self.broker);
        tokio::task::spawn_blocking(move || broker.describe(&topic))
            .await
            .expect("describe does not panic")
    }
}

fn description(info: TopicInfo) -> pb::TopicDescription {
    pb::TopicDescription {
        name: info.name,
        id: info.id,
        config: info.config.into_iter().collect(),
        partitions: info
            .partitions
            .into_iter()
            .map(|p| pb::PartitionDescription {
                partition: p.partition,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
                segment_count: p.segment_count,
                oldest_timestamp_ms: p.oldest_timestamp_ms,
                next_deletion_ms: p.next_deletion_ms,
                created_ms: p.created_ms,
            })
            .collect(),
    }
}

fn sorted(map: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Topic, &request.get_ref().name)
            .map_err(status)?;
        let r = request.into_inner();
        let info = self
            .broker
            .create_topic(&r.name, r.partitions, &sorted(r.config))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(description(info)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Topic, &request.get_ref().name)
            .map_err(status)?;
        self.broker
            .delete_topic(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let visible = access(&request).visible(Kind::Topic);
        let request = request.into_inner();
        let listed = self
            .broker
            .list_topics(&page(request.page_size, request.page_token, visible));
        let mut response = pb::ListTopicsResponse {
            next_page_token: listed.next_after.unwrap_or_default(),
            ..Default::default()
        };
        for topic in listed.entries {
            match topic {
                ListedTopic::Live(name) => response.names.push(name),
                ListedTopic::Unavailable(t) => response.unavailable.push(pb::UnavailableTopic {
                    name: t.name,
                    reason: format!("{} ({})", t.reason, t.dir.display()),
                }),
            }
        }
        Ok(Response::new(response))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        access(&request)
            .check_any(Kind::Topic, &request.get_ref().name)
            .map_err(status)?;
        let topic = self
            .broker
            .topic(&request.into_inner().name)
            .map_err(status)?;
        let info = self.described(topic).await.map_err(status)?;
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(description(info)),
        }))
    }

    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Topic, &request.get_ref().name)
            .map_err(status)?;
        let r = request.into_inner();
        let info = self
            .broker
            .alter_topic_config(&r.name, sorted(r.config))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AlterTopicConfigResponse {
            topic: Some(description(info)),
        }))
    }

    async fn add_partitions(
        &self,
        request: Request<pb::AddPartitionsRequest>,
    ) -> Result<Response<pb::AddPartitionsResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Topic, &request.get_ref().name)
            .map_err(status)?;
        let r = request.into_inner();
        let info = if r.validate_only {
            let topic = self
                .broker
                .check_add_partitions(&r.name, r.partitions)
                .map_err(status)?;
            self.described(topic).await
        } else {
            let added = self.broker.add_partitions(&r.name, r.partitions).await;
            added.map(|(info, _)| info)
        };
        Ok(Response::new(pb::AddPartitionsResponse {
            topic: Some(description(info.map_err(status)?)),
        }))
    }

    async fn delete_records(
        &self,
        request: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Topic, &request.get_ref().topic)
            .map_err(status)?;
        let r = request.into_inner();
        let before = match r.before_offset {
            -1 => None,
            n if n >= 0 => Some(n as u64),
            n => {
                return Err(Status::invalid_argument(format!(
                    "before_offset {n}: use an offset from 0, or -1 for the high watermark"
                )))
            }
        };
        let deleted = self.broker.delete_records(&r.topic, r.partition, before);
        let log_start_offset = deleted.await.map_err(status)?;
        Ok(Response::new(pb::DeleteRecordsResponse {
            log_start_offset,
        }))
    }
}
