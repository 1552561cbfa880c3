//! Bearer-token authentication. The token is hashed and looked up; its role decides.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::domain::token::{Permission, Role, hash_secret};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: Uuid,
    /// The token's name; recorded as `updatedBy`.
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {} token cannot do this ({})",
                self.role,
                match permission {
                    Permission::Read => "needs reader or admin",
                    Permission::Manage => "needs admin",
                    Permission::Publish => "needs publisher or admin",
                }
            )))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let token = state
            .store
            .token_by_hash(&hash_secret(secret))
            .await?
            .filter(|t| t.revoked_at.is_none())
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller {
            token_id: token.id,
            name: token.name.as_str().to_owned(),
            role: token.role,
        })
    }
}
