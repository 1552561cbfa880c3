//! `POST /api/v1/events`: the event bus's entry (SPEC §4).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, FieldError};
use super::extract::JsonBody;
use super::schemas::PublishBody;
use crate::domain::event::NewEvent;
use crate::domain::token::Permission;
use crate::service::Published;

/// The largest publish request body.
pub const MAX_PUBLISH_BYTES: usize = 16 * 1024 * 1024;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(publish_events))
}

/// Publish one ChangeEvent, or an array of them. All or nothing: if any event is invalid,
/// none is stored and every bad one is listed by index and field.
#[utoipa::path(post, path = "/api/v1/events", tag = "events",
    request_body(content = PublishBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Committed to the event log", body = Published),
        (status = 400, description = "The body is not JSON, nor an event object or an array", body = ErrorBody),
        (status = 413, description = "Body over 16 MiB, or more events than allowed per request", body = ErrorBody),
        (status = 422, description = "Invalid events, each named by index and field", body = ErrorBody),
        (status = 429, description = "Rate limit or daily quota of the token", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 503, description = "The event log cannot be written (the database does not answer, or outhook is stopping)",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))),
    security(("bearer" = [])))]
async fn publish_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<MAX_PUBLISH_BYTES>,
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
    let items = match body {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(ApiError::BadRequest(
                "the body must be an event object or an array of events".into(),
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::invalid("body", "the array holds no events"));
    }
    if items.len() > state.max_events_per_request {
        return Err(ApiError::TooLarge(format!(
            "at most {} events per request (got {})",
            state.max_events_per_request,
            items.len()
        )));
    }
    let now = state.clock.now_ms();
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match NewEvent::parse(item, now) {
            Ok(event) => events.push(event),
            Err(e) => errors.push(FieldError {
                index: Some(index),
                field: if e.field.is_empty() {
                    "event".into()
                } else {
                    e.field
                },
                message: e.message,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let published = state.service.publish(events).await?;
    Ok((StatusCode::ACCEPTED, Json(published)))
}
