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
use super::extract::{JsonBody, parse};
use crate::clock::Millis;
use crate::domain::token::{Permission, Role, Token, TokenName, generate_secret, hash_secret};

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// A token to issue.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Unique; shown as `updatedBy` on what the token changes.
    pub name: TokenName,
    pub role: Role,
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
    let CreateToken { name, role } = parse(body)?;
    let secret = generate_secret();
    let token = Token {
        id: Uuid::new_v4(),
        name,
        role,
        hash: hash_secret(&secret),
        created_at: state.clock.now_ms(),
        created_by: caller.name.clone(),
        revoked_at: None,
    };
    state.store.insert_token(&token).await?;
    tracing::info!(token.id = %token.id, token.name = %token.name.as_str(), role = %role, by = %caller.name, "token issued");
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            info: (&token).into(),
            token: secret,
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
    let tokens = state.store.list_tokens().await?;
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
    let id = super::extract::path_id(&id)?;
    let tokens = state.store.list_tokens().await?;
    let target = tokens
        .iter()
        .find(|t| t.id == id && t.revoked_at.is_none())
        .ok_or_else(|| ApiError::NotFound(format!("no live token {id}")))?;
    if target.role == Role::Admin && state.store.count_live_tokens(Role::Admin).await? <= 1 {
        return Err(ApiError::Conflict(
            "this is the last admin token; issue another before revoking it".into(),
        ));
    }
    let revoked = state.store.revoke_token(id, state.clock.now_ms()).await?;
    state.tokens.clear();
    if !revoked {
        return Err(ApiError::NotFound(format!("no live token {id}")));
    }
    tracing::info!(token.id = %id, by = %caller.name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
