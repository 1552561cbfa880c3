//! Bearer-token authentication: the `Authorization` header gives the secret, the service
//! says whose it is ([`crate::service::Service::authenticate`]); the caller's role decides
//! what a handler lets through.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};

use super::AppState;
use super::error::ApiError;
pub use crate::service::Caller;

/// The secret of an `Authorization: Bearer <secret>` value. The scheme's name is
/// case-insensitive (RFC 7235 §2.1: `BEARER` and `bearer` are `Bearer`), and one or more
/// spaces may separate it from the secret.
fn bearer_secret(value: &str) -> Option<&str> {
    let (scheme, secret) = value.trim_start().split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
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
            .and_then(bearer_secret)
            .ok_or(ApiError::Unauthorized)?;
        state
            .service
            .authenticate(secret)
            .await?
            .ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_secret;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc "] {
            assert_eq!(bearer_secret(value), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc", ""] {
            assert_eq!(bearer_secret(value), None, "{value}");
        }
    }
}
