//! Bearer-token authentication. The token is hashed and looked up; its role decides.
//!
//! Live tokens found are remembered for a moment ([`TOKEN_CACHE_TTL`]), so that a
//! publisher's stream of requests costs no database query each. A revocation made on this
//! instance applies to every request after it; one made on another instance within that
//! moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long a looked-up live token is trusted without asking the database again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);
/// Tokens remembered at most; beyond, the cache starts over.
const TOKEN_CACHE_SIZE: usize = 10_000;

/// Live tokens recently looked up, by hash. Unknown and revoked tokens are never
/// remembered: a new token works at once.
#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<String, (Caller, Instant)>,
    /// Bumped by every revocation: a lookup that started before one is not remembered.
    generation: u64,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached caller, or the generation to pass to [`Self::put`] after a lookup.
    fn get(&self, hash: &str) -> Result<Caller, u64> {
        let inner = self.lock();
        inner
            .entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(caller, _)| caller.clone())
            .ok_or(inner.generation)
    }

    fn put(&self, hash: String, caller: Caller, looked_up_in: u64) {
        let mut inner = self.lock();
        if inner.generation != looked_up_in {
            return;
        }
        if inner.entries.len() >= TOKEN_CACHE_SIZE {
            inner.entries.clear();
        }
        inner.entries.insert(hash, (caller, Instant::now()));
    }

    /// Forgets every token: after a revocation.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.generation += 1;
    }
}

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
        let hash = hash_secret(secret);
        let generation = match state.tokens.get(&hash) {
            Ok(caller) => return Ok(caller),
            Err(generation) => generation,
        };
        let token = state
            .store
            .token_by_hash(&hash)
            .await?
            .filter(|t| t.revoked_at.is_none())
            .ok_or(ApiError::Unauthorized)?;
        let caller = Caller {
            token_id: token.id,
            name: token.name.as_str().to_owned(),
            role: token.role,
        };
        state.tokens.put(hash, caller.clone(), generation);
        Ok(caller)
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
