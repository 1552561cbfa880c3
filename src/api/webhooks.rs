//! `/api/v1/webhooks`: create, create-or-update, list, read, JSON Patch, delete, restore.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{BaseUrl, JsonBody, JsonPatchBody, QueryParams, parse, path_id};
use super::schemas::{JsonPatch, WebhookInput};
use crate::domain::str_enum;
use crate::domain::token::Permission;
use crate::domain::webhook::{
    Resume, Webhook, WebhookName, WebhookSpec, WebhookStatus, WebhookType, WebhookView,
};
use crate::store::{Cursor, Include, WebhookQuery};

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

/// Reads a create or update body: server-owned fields are dropped (a client may send back
/// what it read), everything else must be a valid [`WebhookSpec`].
pub(super) fn parse_spec(mut body: Value) -> Result<WebhookSpec, ApiError> {
    let Some(object) = body.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    for field in WebhookSpec::SERVER_OWNED {
        object.remove(*field);
    }
    let spec: WebhookSpec = parse(body)?;
    spec.check()
        .map_err(|(field, message)| ApiError::invalid(field, message))?;
    Ok(spec)
}

fn parse_include(params: &QueryParams) -> Result<Include, ApiError> {
    Ok(params
        .get::<IncludeDeleted>("include")?
        .map_or(Include::NonDeleted, Include::from))
}

pub(super) fn visible(
    webhook: Option<Webhook>,
    include: Include,
    what: impl std::fmt::Display,
) -> Result<Webhook, ApiError> {
    webhook
        .filter(|w| match include {
            Include::NonDeleted => !w.deleted,
            Include::Deleted => w.deleted,
            Include::All => true,
        })
        .ok_or_else(|| ApiError::NotFound(format!("webhook {what} not found")))
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

/// Refuses the mask (`********`) where it stands for no value: the secret or a credential
/// header of a new webhook (`current` is `None`), or a credential header `current` lacks.
fn reject_unresolved_masks(spec: &WebhookSpec, current: Option<&Webhook>) -> Result<(), ApiError> {
    spec.check_masks(current.map(|c| &c.spec))
        .map_err(|(field, message)| ApiError::invalid(field, message))
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
    let spec = parse_spec(body)?;
    reject_unresolved_masks(&spec, None)?;
    let webhook = Webhook::create(spec, &caller.name, state.clock.now_ms());
    state.store.insert_webhook(&webhook).await?;
    state.dispatcher.webhook_changed(&webhook).await;
    tracing::info!(webhook.id = %webhook.id, webhook.name = %webhook.spec.name, by = %caller.name, "webhook created");
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
    let spec = parse_spec(body)?;
    let now = state.clock.now_ms();
    let Some(current) = state.store.webhook_by_name(spec.name.as_str()).await? else {
        reject_unresolved_masks(&spec, None)?;
        let webhook = Webhook::create(spec, &caller.name, now);
        state.store.insert_webhook(&webhook).await?;
        state.dispatcher.webhook_changed(&webhook).await;
        return Ok(created(&webhook, &base));
    };
    if current.deleted {
        return Err(ApiError::Conflict(format!(
            "webhook '{}' is soft-deleted: restore it (PUT /api/v1/webhooks/restore) or delete it with hardDelete=true",
            current.spec.name
        )));
    }
    reject_unresolved_masks(&spec, Some(&current))?;
    let webhook = match current.updated(spec, Resume::No, &caller.name, now) {
        Some(next) => {
            state
                .store
                .update_webhook(&next, current.version, current.resumes_delivery(&next))
                .await?;
            state.dispatcher.webhook_changed(&next).await;
            next
        }
        None => current,
    };
    Ok(Json(webhook.view(&base.0)).into_response())
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
    ])?;
    let limit = params.get::<u32>("limit")?.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "query parameter 'limit': must be 1–1000 (got {limit})"
        )));
    }
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
        limit,
        cursor,
    };
    let page = state.store.list_webhooks(&query).await?;
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
    let webhook = visible(state.store.webhook(id).await?, include, id)?;
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
    let webhook = visible(
        state.store.webhook_by_name(name.as_str()).await?,
        include,
        format!("'{name}'"),
    )?;
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
    let current = visible(state.store.webhook(id).await?, Include::NonDeleted, id)?;
    let before = serde_json::to_value(current.view(&base.0)).map_err(anyhow::Error::from)?;
    let mut doc = before.clone();
    json_patch::patch(&mut doc, &patch.0).map_err(patch_error)?;

    let resume = patched_status(&before, &mut doc)?;
    for field in WebhookSpec::SERVER_OWNED {
        if before.get(*field) != doc.get(*field) {
            return Err(ApiError::invalid(
                *field,
                "is set by the server and cannot be patched",
            ));
        }
    }
    let spec = parse_spec(doc)?;
    reject_unresolved_masks(&spec, Some(&current))?;
    let Some(next) = current.updated(spec, resume, &caller.name, state.clock.now_ms()) else {
        return Ok(Json(current.view(&base.0)));
    };
    state
        .store
        .update_webhook(&next, current.version, current.resumes_delivery(&next))
        .await?;
    state.dispatcher.webhook_changed(&next).await;
    tracing::info!(webhook.id = %id, version = next.version.as_f64(), by = %caller.name, "webhook patched");
    Ok(Json(next.view(&base.0)))
}

/// `status` is the one server-owned field a patch may set: `active` resumes delivery,
/// `disabled` is `enabled: false`. Rewrites the document so the rest of the checks see
/// the status unchanged and `enabled` as it must be.
fn patched_status(before: &Value, doc: &mut Value) -> Result<Resume, ApiError> {
    if before.get("status") == doc.get("status") {
        return Ok(Resume::No);
    }
    let wanted = doc.get("status").and_then(Value::as_str).unwrap_or("");
    let enabled = match wanted {
        "active" => true,
        "disabled" => false,
        _ => {
            return Err(ApiError::invalid(
                "status",
                "can only be set to 'active' (resume delivery) or 'disabled'",
            ));
        }
    };
    if doc.get("enabled") != before.get("enabled")
        && doc.get("enabled") != Some(&Value::Bool(enabled))
    {
        return Err(ApiError::invalid(
            "enabled",
            format!("contradicts status '{wanted}'"),
        ));
    }
    doc["enabled"] = Value::Bool(enabled);
    doc["status"] = before["status"].clone();
    Ok(if enabled { Resume::Yes } else { Resume::No })
}

fn patch_error(err: json_patch::PatchError) -> ApiError {
    match err.kind {
        json_patch::PatchErrorKind::TestFailed => ApiError::Conflict(format!(
            "JSON Patch operation {} (test) failed; nothing was changed",
            err.operation
        )),
        _ => ApiError::invalid(
            format!("patch[{}]", err.operation),
            format!("cannot be applied at '{}': {}", err.path, err.kind),
        ),
    }
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
    let include = if hard {
        Include::All
    } else {
        Include::NonDeleted
    };
    let current = visible(state.store.webhook(id).await?, include, id)?;
    let gone = if hard {
        if !state.store.delete_webhook(id).await? {
            return Err(ApiError::NotFound(format!("webhook {id} not found")));
        }
        state.dispatcher.webhook_deleted(id).await;
        Webhook {
            deleted: true,
            ..current
        }
    } else {
        let next = current.with_deleted(true, &caller.name, state.clock.now_ms());
        state
            .store
            .update_webhook(&next, current.version, false)
            .await?;
        state.dispatcher.webhook_changed(&next).await;
        next
    };
    tracing::info!(webhook.id = %id, hard, by = %caller.name, "webhook deleted");
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
    let current = visible(
        state.store.webhook(id).await?,
        Include::Deleted,
        format!("{id} (soft-deleted)"),
    )?;
    let next = current.with_deleted(false, &caller.name, state.clock.now_ms());
    state
        .store
        .update_webhook(&next, current.version, false)
        .await?;
    state.dispatcher.webhook_changed(&next).await;
    Ok(Json(next.view(&base.0)))
}
