//! `POST /api/v1/events`: the event bus's entry (SPEC §4).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{RawJsonBody, parse_json};
use super::schemas::PublishBody;
use crate::domain::signature::OM_SIGNATURE_HEADER;
use crate::domain::token::Permission;
use crate::service::Published;

/// The largest publish request body.
pub const MAX_PUBLISH_BYTES: usize = 16 * 1024 * 1024;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(publish_events))
}

/// Publish one ChangeEvent, or an array of them. All or nothing: if any event is invalid,
/// none is stored and every bad one is listed by index and field. When the publisher's
/// token has a signing secret, the body must carry `X-OM-Signature: sha256=<base64
/// HMAC-SHA256(secret, body)>`, as OpenMetadata signs it.
#[utoipa::path(post, path = "/api/v1/events", tag = "events",
    request_body(content = PublishBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Committed to the event log", body = Published),
        (status = 400, description = "The body is not JSON, nor an event object or an array", body = ErrorBody),
        (status = 401, description = "No valid bearer token, or (a token with a signing secret) X-OM-Signature missing or not matching the body", body = ErrorBody),
        (status = 413, description = "Body over 16 MiB, or more events than allowed per request", body = ErrorBody),
        (status = 422, description = "Invalid events, each named by index and field", body = ErrorBody),
        (status = 429, description = "Rate limit or daily quota of the token", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 503, description = "The event log cannot be written (the database does not answer, or outhook is stopping)",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))),
    params(("X-OM-Signature" = Option<String>, Header,
        description = "sha256=<base64 HMAC-SHA256(signing secret, body)>: required when the token has a signing secret")),
    security(("bearer" = [])))]
async fn publish_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    RawJsonBody(raw): RawJsonBody<MAX_PUBLISH_BYTES>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    caller.require(Permission::Publish)?;
    state
        .limiter
        .check(caller.token_id, state.clock.now_ms())
        .map_err(|refusal| {
            state.metrics.publish_rejected();
            ApiError::TooManyRequests {
                reason: refusal.reason,
                retry_after_secs: refusal.retry_after_secs,
            }
        })?;
    let signature = headers
        .get(OM_SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    state.service.check_signature(&caller, signature, &raw)?;
    let body = parse_json(&raw)?;
    drop(raw);
    let events = state
        .service
        .read_events(body, state.max_events_per_request)?;
    let published = state.service.publish(events).await?;
    Ok((StatusCode::ACCEPTED, Json(published)))
}
