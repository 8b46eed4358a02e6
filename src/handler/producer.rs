//! InitProducerId: idempotent producers get a fresh producer id (epoch 0) from shard 0;
//! transactional ones go to their transaction coordinator, which keeps the id of the
//! transactional id and bumps its epoch (fencing the previous producer).

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::Operation;
use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use std::rc::Rc;

pub async fn init_producer_id(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: InitProducerIdRequest = decode(ctx, body)?;
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(txn_id) = req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        let txn_id = txn_id.0.to_string();
        let r = match ctx.check_txn(broker, Operation::Write, &txn_id) {
            Ok(()) => {
                broker
                    .txns
                    .init_producer_id(txn_id, req.transaction_timeout_ms)
                    .await
            }
            Err(e) => Err(e),
        };
        let resp = match r {
            Ok(p) => resp
                .with_producer_id(ProducerId(p.producer_id))
                .with_producer_epoch(p.epoch),
            Err(e) => resp.with_error_code(e.0),
        };
        return Ok(ctx.respond(&resp));
    }
    // An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic
    // (KIP-679).
    if !ctx.allowed_cluster(broker, Operation::IdempotentWrite) && !ctx.may_write_some_topic(broker)
    {
        return Ok(ctx.respond(&resp.with_error_code(ErrorCode::CLUSTER_AUTHORIZATION_FAILED.0)));
    }
    // Kafka gives an idempotent producer that asks again (KIP-360) a new id as well.
    let resp = match broker.controller.alloc_producer_id().await {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(m) => {
            tracing::warn!("allocating a producer id: {m}");
            resp.with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.0)
        }
    };
    Ok(ctx.respond(&resp))
}
