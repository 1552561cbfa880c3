//! `/api/v1/tokens`: admins issue and revoke bearer tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, path_id};
use crate::clock::Millis;
use crate::domain::token::{Permission, Role, SigningSecret, Token, TokenName};
use crate::domain::webhook::MASKED_SECRET;
use crate::service::parse;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// A token to issue.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateToken {
    /// Unique; shown as `updatedBy` on what the token changes.
    pub name: TokenName,
    pub role: Role,
    /// Publisher tokens only: a shared secret (16–256 characters) that every publish must
    /// be signed with, as OpenMetadata signs its webhook calls: `X-OM-Signature:
    /// sha256=<base64 HMAC-SHA256(secret, body)>`. Never shown again.
    #[serde(default)]
    pub signing_secret: Option<SigningSecret>,
}

/// A token as listed (never its secret).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: Uuid,
    pub name: TokenName,
    pub role: Role,
    pub created_at: Millis,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Millis>,
    /// `********` when the token's publishes must be signed; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "********")]
    pub signing_secret: Option<&'static str>,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            role: t.role,
            created_at: t.created_at,
            created_by: t.created_by.clone(),
            revoked_at: t.revoked_at,
            signing_secret: t.signing_secret.as_ref().map(|_| MASKED_SECRET),
        }
    }
}

/// A newly issued token: the only time its secret is shown.
#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub info: TokenView,
    /// The bearer secret. It is stored hashed and cannot be shown again.
    pub token: String,
}

/// The token list.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub data: Vec<TokenView>,
}

/// Issue a token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body(content = CreateToken, content_type = "application/json"),
    responses((status = 201, body = IssuedToken),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "A field is invalid; details name it", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    caller.require(Permission::Manage)?;
    let CreateToken {
        name,
        role,
        signing_secret,
    } = parse(body)?;
    let issued = state
        .service
        .issue_token(name, role, signing_secret, &caller)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            info: (&issued.token).into(),
            token: issued.secret,
        }),
    ))
}

/// List tokens, revoked ones included.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList)),
    security(("bearer" = [])))]
async fn list_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<TokenList>, ApiError> {
    caller.require(Permission::Manage)?;
    let tokens = state.service.tokens().await?;
    Ok(Json(TokenList {
        data: tokens.iter().map(TokenView::from).collect(),
    }))
}

/// Revoke a token. The last live admin token cannot be revoked.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No live token with that id", body = ErrorBody),
        (status = 409, description = "It is the last admin token", body = ErrorBody)),
    security(("bearer" = [])))]
async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Manage)?;
    let id = path_id(&id)?;
    state.service.revoke_token(id, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
