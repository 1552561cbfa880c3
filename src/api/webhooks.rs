//! `/api/v1/webhooks`: create, create-or-update, list, read, JSON Patch, delete, restore.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{BaseUrl, JsonBody, JsonPatchBody, QueryParams, path_id};
use super::schemas::{JsonPatch, WebhookInput};
use crate::domain::str_enum;
use crate::domain::token::Permission;
use crate::domain::webhook::{Webhook, WebhookName, WebhookStatus, WebhookType, WebhookView};
use crate::service::{Cursor, Include, Saved, WebhookQuery, parse, parse_webhook_spec};

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(
            create_webhook,
            create_or_update_webhook,
            list_webhooks
        ))
        .routes(routes!(get_webhook, patch_webhook, delete_webhook))
        .routes(routes!(get_webhook_by_name))
        .routes(routes!(restore_webhook))
}

/// A page of webhooks.
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookView>,
    pub paging: Paging,
}

/// Cursors to the neighbouring pages, and how many webhooks match in all.
#[derive(Serialize, ToSchema)]
pub struct Paging {
    pub before: Option<String>,
    pub after: Option<String>,
    pub total: i64,
}

/// Query parameters of the list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters; QueryParams parses them strictly
struct ListParams {
    /// Page size (default 10).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Cursor from `paging.after`: the page after it. Not with `before`.
    #[param(min_length = 1, pattern = r"^[A-Za-z0-9_-]+$")]
    after: Option<String>,
    /// Cursor from `paging.before`: the page before it. Not with `after`.
    #[param(min_length = 1, pattern = r"^[A-Za-z0-9_-]+$")]
    before: Option<String>,
    /// Only webhooks in this status.
    status: Option<WebhookStatus>,
    /// Only webhooks of this type.
    #[serde(rename = "webhookType")]
    webhook_type: Option<WebhookType>,
    include: Option<IncludeDeleted>,
    /// `true`: only webhooks whose delivery is failing (enabled, and neither `active` nor
    /// `disabled`: `awaitingRetry`, `retryLimitReached` or `failed`).
    failing: Option<bool>,
}

str_enum! {
    /// Which webhooks a read sees: `non-deleted` (the default), `deleted` (only
    /// soft-deleted ones) or `all`.
    pub enum IncludeDeleted { NonDeleted => "non-deleted", Deleted => "deleted", All => "all" }
}

impl From<IncludeDeleted> for Include {
    fn from(include: IncludeDeleted) -> Self {
        match include {
            IncludeDeleted::NonDeleted => Include::NonDeleted,
            IncludeDeleted::Deleted => Include::Deleted,
            IncludeDeleted::All => Include::All,
        }
    }
}

fn parse_include(params: &QueryParams) -> Result<Include, ApiError> {
    Ok(params
        .get::<IncludeDeleted>("include")?
        .map_or(Include::NonDeleted, Include::from))
}

fn created(webhook: &Webhook, base: &BaseUrl) -> Response {
    let view = webhook.view(&base.0);
    (
        StatusCode::CREATED,
        [(header::LOCATION, view.href.clone())],
        Json(view),
    )
        .into_response()
}

/// Create a webhook.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks",
    request_body(content = WebhookInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = WebhookView,
            headers(("Location" = String, description = "The new webhook's URL"))),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "A field is invalid; details name it", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Permission::Manage)?;
    let spec = parse_webhook_spec(body)?;
    let webhook = state.service.create_webhook(spec, &caller).await?;
    Ok(created(&webhook, &base))
}

/// Create a webhook, or update the one with this name.
#[utoipa::path(put, path = "/api/v1/webhooks", tag = "webhooks",
    request_body(content = WebhookInput, content_type = "application/json",
        description = "A secretKey of '********' keeps the current secret; an absent one removes it"),
    responses(
        (status = 200, description = "Updated (or unchanged)", body = WebhookView),
        (status = 201, description = "Created", body = WebhookView,
            headers(("Location" = String, description = "The new webhook's URL"))),
        (status = 409, description = "Soft-deleted under that name, or changed concurrently", body = ErrorBody),
        (status = 422, description = "A field is invalid; details name it", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_or_update_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Permission::Manage)?;
    let spec = parse_webhook_spec(body)?;
    Ok(
        match state
            .service
            .create_or_update_webhook(spec, &caller)
            .await?
        {
            Saved::Created(webhook) => created(&webhook, &base),
            Saved::Updated(webhook) => Json(webhook.view(&base.0)).into_response(),
        },
    )
}

/// List webhooks, ordered by name, with cursor paging.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", params(ListParams),
    responses((status = 200, body = WebhookList),
        (status = 400, description = "A query parameter is unknown, repeated or invalid", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_webhooks(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    params: QueryParams,
) -> Result<Json<WebhookList>, ApiError> {
    caller.require(Permission::Read)?;
    let params = params.only(&[
        "limit",
        "after",
        "before",
        "status",
        "webhookType",
        "include",
        "failing",
    ])?;
    let limit = params.limit()?;
    let decode = |name: &str| -> Result<Option<String>, ApiError> {
        params
            .get::<String>(name)?
            .map(|c| decode_cursor(name, &c))
            .transpose()
    };
    let cursor = match (decode("after")?, decode("before")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give 'after' or 'before', not both".into(),
            ));
        }
        (Some(after), None) => Some(Cursor::After(after)),
        (None, Some(before)) => Some(Cursor::Before(before)),
        (None, None) => None,
    };
    let query = WebhookQuery {
        status: params.get("status")?,
        webhook_type: params.get("webhookType")?,
        include: parse_include(params)?,
        failing: params.get::<bool>("failing")?.unwrap_or(false),
        name_contains: None,
        limit,
        cursor,
    };
    let page = state.service.webhooks(&query).await?;
    Ok(Json(WebhookList {
        data: page.items.iter().map(|w| w.view(&base.0)).collect(),
        paging: Paging {
            before: page.before.as_deref().map(encode_cursor),
            after: page.after.as_deref().map(encode_cursor),
            total: page.total,
        },
    }))
}

/// Cursors are opaque to clients: the base64url of the boundary name.
fn encode_cursor(name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

/// A cursor decodes to a webhook name; anything else (control characters included, which
/// PostgreSQL refuses in text) was not made by [`encode_cursor`].
fn decode_cursor(param: &str, cursor: &str) -> Result<String, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|name| WebhookName::try_from(name.clone()).is_ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "query parameter '{param}': not a cursor from paging"
            ))
        })
}

/// Read one webhook by id.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path), ("include" = Option<IncludeDeleted>, Query)),
    responses((status = 200, body = WebhookView),
        (status = 400, description = "The id is not a UUID, or a query parameter is invalid", body = ErrorBody),
        (status = 404, description = "No such webhook (among those `include` shows)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
    params: QueryParams,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Permission::Read)?;
    let include = parse_include(params.only(&["include"])?)?;
    let id = path_id(&id)?;
    let webhook = state.service.webhook(id, include).await?;
    Ok(Json(webhook.view(&base.0)))
}

/// Read one webhook by name.
#[utoipa::path(get, path = "/api/v1/webhooks/name/{name}", tag = "webhooks",
    params(("name" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$",
            description = "A webhook name (no control characters)"),
        ("include" = Option<IncludeDeleted>, Query)),
    responses((status = 200, body = WebhookView),
        (status = 400, description = "Not a webhook name, or a query parameter is invalid", body = ErrorBody),
        (status = 404, description = "No such webhook (among those `include` shows)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_webhook_by_name(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    Path(name): Path<String>,
    params: QueryParams,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Permission::Read)?;
    let include = parse_include(params.only(&["include"])?)?;
    // A name that no webhook can have (NUL and other control characters among them, which
    // PostgreSQL refuses in text) is answered here, not sent to the store.
    let name = WebhookName::try_from(name)
        .map_err(|e| ApiError::BadRequest(format!("name: not a webhook name: {e}")))?;
    let webhook = state.service.webhook_named(&name, include).await?;
    Ok(Json(webhook.view(&base.0)))
}

/// Change a webhook with an RFC 6902 JSON Patch. The patched document is validated like a
/// create; server-owned fields are read-only except `status`, which may be set to `active`
/// (resume delivery) or `disabled`. Nothing changes unless the whole patch applies.
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path)),
    request_body(content = JsonPatch, content_type = "application/json-patch+json",
        description = "RFC 6902 operations, e.g. [{\"op\":\"replace\",\"path\":\"/enabled\",\"value\":false}]"),
    responses((status = 200, body = WebhookView),
        (status = 400, description = "The id is not a UUID, or the body is not a JSON Patch", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 409, description = "A `test` operation failed, the name is taken, or a concurrent change", body = ErrorBody),
        (status = 422, description = "The patched webhook is invalid, or a server-owned field was patched", body = ErrorBody)),
    security(("bearer" = [])))]
async fn patch_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
    JsonPatchBody(patch): JsonPatchBody,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Permission::Manage)?;
    let id = path_id(&id)?;
    let webhook = state
        .service
        .patch_webhook(id, &patch, &base.0, &caller)
        .await?;
    Ok(Json(webhook.view(&base.0)))
}

/// Delete a webhook: soft by default (hidden, delivery stops, restorable), or for good.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path), ("hardDelete" = Option<bool>, Query, description = "Remove for good (default false)")),
    responses((status = 200, description = "The webhook as it was deleted", body = WebhookView),
        (status = 400, description = "The id is not a UUID, or a query parameter is invalid", body = ErrorBody),
        (status = 404, description = "No such webhook (soft-deleted ones count only for hardDelete)", body = ErrorBody),
        (status = 409, description = "Changed concurrently", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
    params: QueryParams,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Permission::Manage)?;
    let hard = params
        .only(&["hardDelete"])?
        .get::<bool>("hardDelete")?
        .unwrap_or(false);
    let id = path_id(&id)?;
    let gone = state.service.delete_webhook(id, hard, &caller).await?;
    Ok(Json(gone.view(&base.0)))
}

/// Which webhook to restore.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub id: Uuid,
}

/// Restore a soft-deleted webhook; delivery resumes where it stopped.
#[utoipa::path(put, path = "/api/v1/webhooks/restore", tag = "webhooks",
    request_body(content = RestoreRequest, content_type = "application/json"),
    responses((status = 200, body = WebhookView),
        (status = 404, description = "No soft-deleted webhook with that id", body = ErrorBody),
        (status = 409, description = "Changed concurrently", body = ErrorBody),
        (status = 422, description = "The id is missing or not a UUID", body = ErrorBody)),
    security(("bearer" = [])))]
async fn restore_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    base: BaseUrl,
    JsonBody(body): JsonBody,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Permission::Manage)?;
    let RestoreRequest { id } = parse(body)?;
    let webhook = state.service.restore_webhook(id, &caller).await?;
    Ok(Json(webhook.view(&base.0)))
}
