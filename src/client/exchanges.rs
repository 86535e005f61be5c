//! Exchanges: routing records to the topics bound to them (see the proto's
//! `Exchanges` service).

use tonic::Status;

use super::{every_page, Channel, MAX_MESSAGE};
use crate::grpc::pb::{self, exchanges_client::ExchangesClient};

/// Exchange administration and publishing.
#[derive(Clone)]
pub struct Exchanges {
    inner: ExchangesClient<Channel>,
}

impl Exchanges {
    pub(super) fn new(channel: Channel) -> Exchanges {
        let inner = ExchangesClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Exchanges { inner }
    }

    /// Creates an exchange of `kind`: "direct", "topic" or "fanout".
    pub async fn create(&mut self, name: &str, kind: &str) -> Result<(), Status> {
        let request = pb::CreateExchangeRequest {
            name: name.into(),
            r#type: kind.into(),
        };
        self.inner.create_exchange(request).await.map(drop)
    }

    pub async fn delete(&mut self, name: &str) -> Result<(), Status> {
        let request = pb::DeleteExchangeRequest { name: name.into() };
        self.inner.delete_exchange(request).await.map(drop)
    }

    /// Binds `topic` with `key`: true if the binding is new.
    pub async fn bind(&mut self, exchange: &str, topic: &str, key: &str) -> Result<bool, Status> {
        let request = pb::BindRequest {
            exchange: exchange.into(),
            topic: topic.into(),
            key: key.into(),
        };
        Ok(self.inner.bind(request).await?.into_inner().created)
    }

    /// Removes a binding: true if there was one.
    pub async fn unbind(&mut self, exchange: &str, topic: &str, key: &str) -> Result<bool, Status> {
        let request = pb::UnbindRequest {
            exchange: exchange.into(),
            topic: topic.into(),
            key: key.into(),
        };
        Ok(self.inner.unbind(request).await?.into_inner().removed)
    }

    pub async fn describe(&mut self, name: &str) -> Result<pb::DescribeExchangeResponse, Status> {
        let request = pb::DescribeExchangeRequest { name: name.into() };
        Ok(self.inner.describe_exchange(request).await?.into_inner())
    }

    /// Every exchange, every page of the listing.
    pub async fn list(&mut self) -> Result<Vec<pb::ExchangeListing>, Status> {
        let pages = every_page(|page_token| {
            let mut inner = self.inner.clone();
            async move {
                let request = pb::ListExchangesRequest {
                    page_size: 0,
                    page_token,
                };
                let mut page = inner.list_exchanges(request).await?.into_inner();
                let next = std::mem::take(&mut page.next_page_token);
                Ok((page.exchanges, next))
            }
        })
        .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// Publishes `records` with `routing_key`: appended to every topic a binding of
    /// the exchange takes it to, or refused (FAILED_PRECONDITION) if none does.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        records: Vec<pb::Record>,
        durability: pb::Durability,
    ) -> Result<pb::PublishResponse, Status> {
        let request = pb::PublishRequest {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            records,
            durability: durability as i32,
            ..Default::default()
        };
        self.publish_request(request).await
    }

    /// Sends a publish as given (to set `drop_unroutable`, say).
    pub async fn publish_request(
        &mut self,
        request: pb::PublishRequest,
    ) -> Result<pb::PublishResponse, Status> {
        Ok(self.inner.publish(request).await?.into_inner())
    }
}
