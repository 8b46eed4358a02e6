//! ApiVersions: advertises exactly the table in `protocol::SUPPORTED_APIS`.

use super::Ctx;
use crate::protocol::{self, errors::ErrorCode};
use crate::protocol::{Piece, Response};
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

fn body(error: ErrorCode) -> ApiVersionsResponse {
    let keys = protocol::SUPPORTED_APIS
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect();
    // Tagged fields (supported/finalized features) stay at their defaults, so none are written:
    // librdkafka before 2.2 mis-skips tagged fields.
    ApiVersionsResponse::default()
        .with_error_code(error.0)
        .with_api_keys(keys)
}

pub fn handle(ctx: &Ctx, _body: &mut Bytes) -> Result<Response, Response> {
    // The request body (client software name/version) is informational only.
    Ok(ctx.respond(&body(ErrorCode::NONE)))
}

/// The answer to an ApiVersions request of a version we do not know: v0 encoding,
/// UNSUPPORTED_VERSION, and our table, so the client retries with a version we support.
pub fn unsupported(correlation_id: i32) -> Response {
    match protocol::encode_response(correlation_id, 0, &body(ErrorCode::UNSUPPORTED_VERSION), 0) {
        Ok(b) => Response::Frame(vec![Piece::Bytes(b)]),
        Err(e) => Response::Close(format!("encoding ApiVersions v0: {e}")),
    }
}
