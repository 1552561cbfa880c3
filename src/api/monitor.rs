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
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{BaseUrl, JsonBody, QueryParams};
use super::schemas::WebhookInput;
use crate::clock::Millis;
use crate::dispatch::format::test_event;
use crate::domain::delivery::{AttemptRecord, ErrorKind, Outcome};
use crate::domain::event::EventFacts;
use crate::domain::filter::webhook_matches;
use crate::domain::signature::{SignatureScheme, standard_webhooks_key};
use crate::domain::token::Permission;
use crate::domain::webhook::{
    FailureDetails, Resume, SecretKey, Webhook, WebhookStatus, WebhookView,
};

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

/// The undeleted webhook with this id (as the path gives it).
async fn find(state: &AppState, raw: &str) -> Result<Webhook, ApiError> {
    let id = super::extract::path_id(raw)?;
    super::webhooks::visible(
        state.store.webhook(id).await?,
        crate::store::Include::NonDeleted,
        id,
    )
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
    let limit = params.get::<u32>("limit")?.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "query parameter 'limit': must be 1–1000 (got {limit})"
        )));
    }
    let webhook = find(&state, &id).await?;
    let before = params
        .get::<String>("after")?
        .map(|cursor| attempt_cursor(&cursor))
        .transpose()?;
    let outcome = params.get::<Outcome>("status")?;
    let data = state
        .store
        .list_attempts(webhook.id, outcome, limit + 1, before)
        .await?;
    let more = data.len() > limit as usize;
    let data: Vec<_> = data.into_iter().take(limit as usize).collect();
    let after = if more {
        data.last().map(|a| a.id.to_string())
    } else {
        None
    };
    Ok(Json(DeliveryList {
        data,
        paging: DeliveryPaging { after },
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

/// The batch being delivered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub delivery_id: Uuid,
    pub event_ids: Vec<Uuid>,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Millis>,
}

/// Where a webhook's delivery stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    pub id: Uuid,
    pub name: String,
    pub status: WebhookStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_details: Option<FailureDetails>,
    /// Every event up to this log position was delivered or did not match.
    pub position: i64,
    /// The newest log position.
    pub log_head: i64,
    /// Matching events not delivered yet (the batch in flight included).
    pub pending_events: u64,
    /// True when there were too many to count exactly: `pendingEvents` is a lower bound.
    pub pending_is_lower_bound: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Millis>,
    /// The name of the instance delivering this webhook (`OUTHOOK_INSTANCE_NAME`, by
    /// default `<host name>:<pid>`); null while no live instance holds its lease.
    pub lease_holder: Option<String>,
}

/// Log rows read at most to count pending events.
const PENDING_SCAN_LIMIT: u32 = 20_000;

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
    let webhook = find(&state, &id).await?;
    let dispatch = state
        .store
        .dispatch_state(webhook.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("webhook {id} not found")))?;
    let log_head = state.store.log_head().await?;
    let in_batch = dispatch.batch.as_ref().map_or(0, |b| b.seqs.len() as u64);
    let mut from = dispatch
        .cursor
        .max(dispatch.batch.as_ref().map_or(0, |b| b.last_seq()));
    let (mut pending, mut scanned) = (in_batch, 0u32);
    while from < log_head && scanned < PENDING_SCAN_LIMIT {
        let rows = state.store.read_events(from, log_head, 1000).await?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            break;
        };
        scanned += rows.len() as u32;
        pending += rows
            .into_iter()
            .filter(|r| {
                webhook_matches(
                    &webhook.spec.event_filters.0,
                    &EventFacts::from_body(&r.body),
                )
            })
            .count() as u64;
        from = last;
    }
    Ok(Json(DeliveryStatus {
        id: webhook.id,
        name: webhook.spec.name.to_string(),
        status: webhook.shown_status(),
        failure_details: dispatch.failure_details,
        position: dispatch.cursor,
        log_head,
        pending_events: pending,
        pending_is_lower_bound: from < log_head,
        in_flight: dispatch.batch.map(|b| InFlight {
            delivery_id: b.delivery_id,
            event_ids: b.event_ids,
            attempts: b.attempts,
            next_attempt: dispatch.next_attempt_at,
        }),
        last_success_at: dispatch.last_success_at,
        lease_holder: state.dispatcher.lease_holder(webhook.id).await?,
    }))
}

/// How a test message went.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestOutcome {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub request_bytes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    let webhook = find(&state, &id).await?;
    let event = test_event(
        webhook.id,
        webhook.spec.name.as_str(),
        &caller.name,
        state.clock.now_ms(),
    );
    let (sent, request_bytes) = state.dispatcher.send_test(&webhook, event).await;
    Ok(Json(TestOutcome::from(sent, request_bytes)))
}

impl TestOutcome {
    fn from(sent: crate::dispatch::sender::Sent, request_bytes: i64) -> Self {
        Self {
            outcome: sent.result.outcome(),
            status_code: sent.result.status_code,
            duration_ms: sent.duration_ms,
            request_bytes,
            response_excerpt: sent.response_excerpt,
            error_kind: sent.result.error_kind,
            error: sent
                .result
                .reason
                .filter(|_| sent.result.error_kind.is_some()),
        }
    }
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
    let spec = super::webhooks::parse_spec(body)?;
    if spec
        .webhook_config
        .secret_key
        .as_ref()
        .is_some_and(|s| s.is_mask())
    {
        return Err(ApiError::invalid(
            "webhookConfig.secretKey",
            "give the secret itself to test with it",
        ));
    }
    let now = state.clock.now_ms();
    let webhook = Webhook::create(spec, &caller.name, now);
    let event = test_event(webhook.id, webhook.spec.name.as_str(), &caller.name, now);
    let (sent, request_bytes) = state.dispatcher.send_test(&webhook, event).await;
    Ok(Json(TestOutcome::from(sent, request_bytes)))
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
    let current = find(&state, &id).await?;
    let RotateSecret {
        secret_key,
        grace_period_seconds,
    } = super::extract::parse(body)?;
    let grace = grace_period_seconds.unwrap_or(86_400);
    if grace > 604_800 {
        return Err(ApiError::invalid(
            "gracePeriodSeconds",
            "must be at most 604800 (7 days)",
        ));
    }
    let scheme = current.spec.webhook_config.signature_scheme;
    let (secret, shown) = match secret_key {
        Some(s) if s.is_mask() => {
            return Err(ApiError::invalid(
                "secretKey",
                "give the new secret itself, or none to have one generated",
            ));
        }
        Some(s) => (s, None),
        None => {
            let fresh = generate_webhook_secret(scheme);
            (
                SecretKey::try_from(fresh.clone())
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?,
                Some(fresh),
            )
        }
    };
    if scheme == SignatureScheme::StandardWebhooks {
        standard_webhooks_key(secret.expose())
            .map_err(|e| ApiError::invalid("secretKey", e.to_string()))?;
    }
    let now = state.clock.now_ms();
    let next = current.with_rotated_secret(secret, i64::from(grace) * 1000, &caller.name, now);
    state
        .store
        .update_webhook(&next, current.version, false)
        .await?;
    state.dispatcher.webhook_changed(&next).await;
    tracing::info!(webhook.id = %next.id, by = %caller.name, grace, "secret rotated");
    Ok(Json(RotatedSecret {
        previous_secret_valid_until: next.previous_secret.as_ref().map(|p| p.until),
        webhook: next.view(&base.0),
        secret_key: shown,
    }))
}

/// A new random secret: `whsec_` + base64 for Standard Webhooks, else 32 random bytes hex.
fn generate_webhook_secret(scheme: SignatureScheme) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system has no random source");
    match scheme {
        SignatureScheme::StandardWebhooks => format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        _ => hex::encode(bytes),
    }
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
    let current = find(&state, &id).await?;
    let mut spec = current.spec.clone();
    spec.enabled = true;
    let Some(next) = current.updated(spec, Resume::Yes, &caller.name, state.clock.now_ms()) else {
        return Ok(Json(current.view(&base.0)));
    };
    state
        .store
        .update_webhook(&next, current.version, current.resumes_delivery(&next))
        .await?;
    state.dispatcher.webhook_changed(&next).await;
    tracing::info!(webhook.id = %next.id, by = %caller.name, "delivery resumed");
    Ok(Json(next.view(&base.0)))
}

/// Prometheus metrics: events ingested, deliveries by outcome, delivery latency, and the
/// lag of the webhooks this instance delivers.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.dispatcher.metrics_text(),
    )
}
