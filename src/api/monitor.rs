//! What happened to a webhook's deliveries, and acting on it: the delivery log, the
//! delivery status, a test message, resume, and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{BaseUrl, JsonBody, QueryParams, path_id};
use super::schemas::WebhookInput;
use crate::clock::Millis;
use crate::domain::delivery::{AttemptRecord, Outcome};
use crate::domain::token::Permission;
use crate::domain::webhook::{SecretKey, WebhookView};
use crate::service::{DeliveryStatus, Rotation, TestOutcome, parse, parse_webhook_spec};

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_deliveries))
        .routes(routes!(delivery_status))
        .routes(routes!(test_webhook))
        .routes(routes!(test_configuration))
        .routes(routes!(rotate_secret))
        .routes(routes!(resume_webhook))
        .routes(routes!(metrics))
}

/// A page of the delivery log.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<AttemptRecord>,
    pub paging: DeliveryPaging,
}

/// The cursor to older attempts.
#[derive(Serialize, ToSchema)]
pub struct DeliveryPaging {
    pub after: Option<String>,
}

/// Every delivery attempt of a webhook, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "deliveries",
    params(("id" = Uuid, Path),
        ("status" = Option<Outcome>, Query, description = "Only attempts with this outcome"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 10)"),
        ("after" = Option<String>, Query, pattern = r"^[0-9]+$",
            description = "Cursor from paging.after: the attempts older than it")),
    responses((status = 200, body = DeliveryList),
        (status = 400, description = "The id is not a UUID, or a query parameter is unknown, repeated or invalid", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    params: QueryParams,
) -> Result<Json<DeliveryList>, ApiError> {
    caller.require(Permission::Read)?;
    let params = params.only(&["status", "limit", "after"])?;
    let limit = params.limit()?;
    let id = path_id(&id)?;
    let before = params
        .get::<String>("after")?
        .map(|cursor| attempt_cursor(&cursor))
        .transpose()?;
    let outcome = params.get::<Outcome>("status")?;
    let page = state.service.attempts(id, outcome, limit, before).await?;
    Ok(Json(DeliveryList {
        data: page.attempts,
        paging: DeliveryPaging {
            after: page.older.map(|id| id.to_string()),
        },
    }))
}

/// A delivery-log cursor: the digits of an attempt id. One larger than any id (which
/// `i64` cannot hold) stands before all of them.
fn attempt_cursor(cursor: &str) -> Result<i64, ApiError> {
    if cursor.is_empty() || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest(
            "query parameter 'after': not a cursor from paging".into(),
        ));
    }
    Ok(cursor.parse().unwrap_or(i64::MAX))
}

/// A webhook's delivery status: state, failure details, position, pending events, last success.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/status", tag = "deliveries",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DeliveryStatus),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delivery_status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryStatus>, ApiError> {
    caller.require(Permission::Read)?;
    let id = path_id(&id)?;
    Ok(Json(state.service.delivery_status(id).await?))
}

/// Send a test message now, through the real path (format, sign, address policy, POST).
/// It is not an event: the webhook's position, status and delivery log do not change.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "deliveries",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "The test ran; see outcome", body = TestOutcome),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody)),
    security(("bearer" = [])))]
async fn test_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TestOutcome>, ApiError> {
    caller.require(Permission::Manage)?;
    let id = path_id(&id)?;
    Ok(Json(state.service.test_webhook(id, &caller).await?))
}

/// Send a test message for a configuration that is not saved (as OpenMetadata's
/// testDestination): the body is a webhook as for create, validated the same way.
#[utoipa::path(post, path = "/api/v1/webhooks/test", tag = "deliveries",
    request_body(content = WebhookInput, content_type = "application/json"),
    responses((status = 200, description = "The test ran; see outcome", body = TestOutcome),
        (status = 422, description = "A field is invalid; details name it", body = ErrorBody)),
    security(("bearer" = [])))]
async fn test_configuration(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<TestOutcome>, ApiError> {
    caller.require(Permission::Manage)?;
    let spec = parse_webhook_spec(body)?;
    Ok(Json(state.service.test_configuration(spec, &caller).await?))
}

/// A secret rotation.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; generated (and shown once in the answer) when absent. For
    /// standard-webhooks, a `whsec_` secret.
    secret_key: Option<SecretKey>,
    /// How long the current secret keeps signing too, in seconds (default 86400).
    #[schema(maximum = 604_800)]
    grace_period_seconds: Option<u32>,
}

/// The answer to a rotation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    pub webhook: WebhookView,
    /// The new secret when outhook generated it: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Until when the previous secret also signs (ms), if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_until: Option<Millis>,
}

/// Rotate a webhook's secret. Until the grace period ends, requests carry the signature
/// of the previous secret as well (see the README), so receivers can switch at their pace.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "deliveries",
    params(("id" = Uuid, Path)),
    request_body(content = RotateSecret, content_type = "application/json"),
    responses((status = 200, body = RotatedSecret),
        (status = 400, description = "The id is not a UUID, or the body is not JSON", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 409, description = "Changed concurrently", body = ErrorBody),
        (status = 422, description = "A field is invalid; details name it", body = ErrorBody)),
    security(("bearer" = [])))]
async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<RotatedSecret>, ApiError> {
    caller.require(Permission::Manage)?;
    let id = path_id(&id)?;
    let RotateSecret {
        secret_key,
        grace_period_seconds,
    } = parse(body)?;
    let rotation = Rotation {
        secret_key,
        grace_period_seconds,
    };
    let rotated = state.service.rotate_secret(id, rotation, &caller).await?;
    let webhook = rotated.webhook;
    Ok(Json(RotatedSecret {
        previous_secret_valid_until: webhook.previous_secret.as_ref().map(|p| p.until),
        webhook: webhook.view(&base.0),
        secret_key: rotated.generated_secret,
    }))
}

/// Resume delivery: a webhook in `retryLimitReached`, `failed` or `awaitingRetry` is set
/// `active` (and enabled) and its pending batch is sent again at once, from where it stopped.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/resume", tag = "deliveries",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 409, description = "Changed concurrently", body = ErrorBody)),
    security(("bearer" = [])))]
async fn resume_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Permission::Manage)?;
    let id = path_id(&id)?;
    let webhook = state.service.resume_webhook(id, &caller).await?;
    Ok(Json(webhook.view(&base.0)))
}

/// Prometheus metrics: events ingested, deliveries by outcome, delivery latency, and the
/// lag of the webhooks this instance delivers.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.service.metrics_text(),
    )
}
