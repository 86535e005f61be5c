//! `strom.v1.Exchanges`: routing records to topics by routing key (see
//! `broker/exchanges/`), and the publishes themselves (`produce/publish.rs`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::{Kind, Operation};
use super::budget::Charge;
use super::pb::{self, exchanges_server::Exchanges};
use super::produce::publish;
use super::quota::Flow;
use super::{access, page, status};
use crate::broker::exchanges::ExchangeType;
use crate::broker::{now_ms, Broker};
use crate::error::Error;

pub struct ExchangesService {
    broker: Arc<Broker>,
}

impl ExchangesService {
    pub fn new(broker: Arc<Broker>) -> ExchangesService {
        ExchangesService { broker }
    }
}

#[tonic::async_trait]
impl Exchanges for ExchangesService {
    async fn create_exchange(
        &self,
        request: Request<pb::CreateExchangeRequest>,
    ) -> Result<Response<pb::CreateExchangeResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Exchange, &request.get_ref().name)
            .map_err(status)?;
        let r = request.into_inner();
        let kind: ExchangeType = r.r#type.parse().map_err(status)?;
        self.broker
            .create_exchange(&r.name, kind)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateExchangeResponse {}))
    }

    async fn delete_exchange(
        &self,
        request: Request<pb::DeleteExchangeRequest>,
    ) -> Result<Response<pb::DeleteExchangeResponse>, Status> {
        access(&request)
            .check(Operation::Admin, Kind::Exchange, &request.get_ref().name)
            .map_err(status)?;
        self.broker
            .delete_exchange(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteExchangeResponse {}))
    }

    async fn list_exchanges(
        &self,
        request: Request<pb::ListExchangesRequest>,
    ) -> Result<Response<pb::ListExchangesResponse>, Status> {
        let access = access(&request);
        let visible = access.visible(Kind::Exchange);
        let r = request.into_inner();
        // Each counts only the bindings DescribeExchange would show the caller.
        let shown = |topic: &str| access.shows(Kind::Topic, topic);
        let listed = self
            .broker
            .list_exchanges(&page(r.page_size, r.page_token, visible), shown);
        Ok(Response::new(pb::ListExchangesResponse {
            exchanges: listed
                .entries
                .into_iter()
                .map(|(name, kind, bindings)| pb::ExchangeListing {
                    name,
                    r#type: kind.as_str().into(),
                    bindings: bindings as u32,
                })
                .collect(),
            next_page_token: listed.next_after.unwrap_or_default(),
        }))
    }

    async fn describe_exchange(
        &self,
        request: Request<pb::DescribeExchangeRequest>,
    ) -> Result<Response<pb::DescribeExchangeResponse>, Status> {
        let access = access(&request);
        access
            .check_any(Kind::Exchange, &request.get_ref().name)
            .map_err(status)?;
        let name = request.into_inner().name;
        let exchange = self.broker.exchange(&name).map_err(status)?;
        // Bindings of topics the caller has no grant on are not shown, as a group's
        // description hides them.
        let bindings = exchange
            .bindings
            .into_iter()
            .filter(|b| access.shows(Kind::Topic, &b.topic))
            .map(|b| pb::Binding {
                topic: b.topic,
                key: b.key,
            })
            .collect();
        Ok(Response::new(pb::DescribeExchangeResponse {
            name,
            r#type: exchange.kind.as_str().into(),
            bindings,
        }))
    }

    async fn bind(
        &self,
        request: Request<pb::BindRequest>,
    ) -> Result<Response<pb::BindResponse>, Status> {
        let access = access(&request);
        let r = request.into_inner();
        // The binder routes others' publishes into the topic: it must be one that
        // the binder may write itself.
        access
            .check(Operation::Admin, Kind::Exchange, &r.exchange)
            .and_then(|()| access.check(Operation::Write, Kind::Topic, &r.topic))
            .map_err(status)?;
        let created = self
            .broker
            .bind(&r.exchange, &r.topic, &r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::BindResponse { created }))
    }

    async fn unbind(
        &self,
        request: Request<pb::UnbindRequest>,
    ) -> Result<Response<pb::UnbindResponse>, Status> {
        let access = access(&request);
        let r = request.into_inner();
        // The exchange's admin, or the topic's: an owner can stop records coming into
        // its topic whoever bound it.
        let exchange_admin = access.check(Operation::Admin, Kind::Exchange, &r.exchange);
        if let Err(refused) = &exchange_admin {
            if access
                .check(Operation::Admin, Kind::Topic, &r.topic)
                .is_err()
            {
                return Err(status(Error::PermissionDenied(refused.to_string())));
            }
        }
        let removed = match self.broker.unbind(&r.exchange, &r.topic, &r.key).await {
            Ok(removed) => removed,
            // The topic's admin alone learns nothing of which exchanges exist, as
            // ListExchanges shows it none.
            Err(Error::ExchangeNotFound { .. }) if exchange_admin.is_err() => false,
            Err(err) => return Err(status(err)),
        };
        Ok(Response::new(pb::UnbindResponse { removed }))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        // The request's share of the produce budget, held until it is answered.
        let charge = request
            .extensions()
            .get::<Charge>()
            .and_then(Charge::take_next);
        let access = access(&request);
        let exchange = &request.get_ref().exchange;
        access
            .check(Operation::Write, Kind::Exchange, exchange)
            .map_err(status)?;
        let quota = super::quota::of(request.extensions());
        let broker = Arc::clone(&self.broker);
        let r = request.into_inner();
        // Spawned so that a client hanging up cannot cancel the appends halfway.
        let published = tokio::spawn(async move {
            let wire = quota
                .as_ref()
                .map_or(0, |_| prost::Message::encoded_len(&r));
            let again = quota.map(|quota| charge_copies(&broker, quota, &r, wire));
            let published = publish(&broker, r).await;
            match (again, &published) {
                // Nothing written (a publish that failed partway keeps its charge).
                (Some((quota, copies)), Err(err)) => {
                    if !matches!(err, Error::PublishedPartly { .. }) {
                        quota.refund(Flow::Produce, copies);
                    }
                }
                // Charged a wire size a copy: what the batches were stored in beyond
                // it too (a tiny record's framing).
                (Some((quota, _)), Ok(published)) => {
                    let stored: usize = published.iter().map(|p| p.stored_bytes).sum();
                    let charged = wire.saturating_mul(published.len());
                    quota.charge(Flow::Produce, stored.saturating_sub(charged));
                }
                (None, _) => {}
            }
            drop(charge);
            published
        })
        .await
        .map_err(|e| Status::internal(format!("publish task failed: {e}")))?
        .map_err(status)?;
        let mut response = pb::PublishResponse {
            log_append_time_ms: published
                .first()
                .map_or_else(now_ms, |p| p.produced.log_append_time_ms),
            ..Default::default()
        };
        // Topics the caller has no grant on are counted, not named, as DescribeExchange
        // hides their bindings.
        for p in published {
            if !access.shows(Kind::Topic, &p.topic) {
                response.other_topics += 1;
                continue;
            }
            response.topics.push(pb::Published {
                topic: p.topic,
                partition: p.produced.partition,
                base_offset: p.produced.base_offset,
                last_offset: p.produced.last_offset,
            });
        }
        Ok(Response::new(response))
    }
}

/// Charges a publish's client for the copies it is about to write past the first: it
/// was charged once, by its size on the wire (`budget/`), and every other topic its
/// exchange routes it to writes it again. Charged before the appends, in the task that
/// makes them, so that a call cancelled meanwhile is charged too, and a publish that
/// fails partway is charged as if whole. The quota, and what it was charged.
fn charge_copies(
    broker: &Broker,
    quota: crate::grpc::quota::Quota,
    r: &pb::PublishRequest,
    wire: usize,
) -> (crate::grpc::quota::Quota, usize) {
    let topics = broker
        .route(&r.exchange, &r.routing_key)
        .map_or(0, |t| t.len());
    let copies = wire.saturating_mul(topics.saturating_sub(1));
    quota.charge(Flow::Produce, copies);
    (quota, copies)
}
