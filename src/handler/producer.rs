//! InitProducerId for idempotent producers: a fresh producer id (epoch 0) from shard 0.
//! Transactional producers are refused until transactions exist.

use super::{decode, Ctx};
use crate::net::Response;
use crate::protocol::errors::ErrorCode;
use crate::shard::{Req, Resp, Shard};
use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use std::rc::Rc;

pub async fn init_producer_id(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: InitProducerIdRequest = decode(ctx, body)?;
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        // Not retriable, so the client fails at once instead of retrying until its timeout.
        return Ok(ctx.respond(&resp.with_error_code(ErrorCode::INVALID_REQUEST.0)));
    }
    // Kafka gives an idempotent producer that asks again (KIP-360) a new id as well.
    let resp = match shard.call(0, Req::AllocProducerId).await {
        Resp::ProducerId(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Resp::Failed(m) => {
            tracing::warn!("allocating a producer id: {m}");
            resp.with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.0)
        }
        _ => resp.with_error_code(ErrorCode::UNKNOWN_SERVER_ERROR.0),
    };
    Ok(ctx.respond(&resp))
}
