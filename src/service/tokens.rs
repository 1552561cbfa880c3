//! Who is calling, and the tokens that say so: a bearer secret is hashed and looked up,
//! its role decides; admins issue and revoke tokens.
//!
//! Live tokens found are remembered for a moment ([`TOKEN_CACHE_TTL`]), so that a
//! publisher's stream of requests costs no database query each. A revocation made on this
//! instance applies to every request after it; one made on another instance within that
//! moment.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Result, Service, ServiceError};
use crate::domain::token::{
    Permission, Role, SigningSecret, Token, TokenName, generate_secret, hash_secret,
};

/// The authenticated caller of an action.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: Uuid,
    /// The token's name; recorded as `updatedBy`.
    pub name: String,
    pub role: Role,
    /// The key a publisher's bodies must be signed with, when its token has one.
    pub signing_secret: Option<SigningSecret>,
}

impl Caller {
    /// Refused unless the caller's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<()> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
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

/// A newly issued token: the only time its secret is known.
pub struct IssuedToken {
    pub token: Token,
    /// The bearer secret; the store keeps its hash only.
    pub secret: String,
}

impl Service {
    /// The caller a bearer secret stands for; `None` when it is no live token's.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Caller>> {
        self.caller_by_hash(hash_secret(secret)).await
    }

    /// The caller the token with this hash stands for, when it is live.
    pub(super) async fn caller_by_hash(&self, hash: String) -> Result<Option<Caller>> {
        let generation = match self.tokens.get(&hash) {
            Ok(caller) => return Ok(Some(caller)),
            Err(generation) => generation,
        };
        let Some(token) = self
            .store
            .token_by_hash(&hash)
            .await?
            .filter(|t| t.revoked_at.is_none())
        else {
            return Ok(None);
        };
        let caller = Caller {
            token_id: token.id,
            name: token.name.as_str().to_owned(),
            role: token.role,
            signing_secret: token.signing_secret,
        };
        self.tokens.put(hash, caller.clone(), generation);
        Ok(Some(caller))
    }

    /// Issues a token with a new random secret; a publisher's may have a signing secret.
    pub async fn issue_token(
        &self,
        name: TokenName,
        role: Role,
        signing_secret: Option<SigningSecret>,
        by: &Caller,
    ) -> Result<IssuedToken> {
        if signing_secret.is_some() && role != Role::Publisher {
            return Err(ServiceError::invalid(
                "signingSecret",
                format!("only a publisher token signs its publishes (this one is {role})"),
            ));
        }
        let secret = generate_secret();
        let token = Token {
            id: Uuid::new_v4(),
            name,
            role,
            hash: hash_secret(&secret),
            signing_secret,
            created_at: self.clock.now_ms(),
            created_by: by.name.clone(),
            revoked_at: None,
        };
        self.store.insert_token(&token).await?;
        tracing::info!(token.id = %token.id, token.name = %token.name.as_str(), role = %role,
            signed = token.signing_secret.is_some(), by = %by.name, "token issued");
        Ok(IssuedToken { token, secret })
    }

    /// Every token, revoked ones included.
    pub async fn tokens(&self) -> Result<Vec<Token>> {
        Ok(self.store.list_tokens().await?)
    }

    /// Revokes a live token; the last live admin token cannot be revoked.
    pub async fn revoke_token(&self, id: Uuid, by: &Caller) -> Result<()> {
        let tokens = self.store.list_tokens().await?;
        let target = tokens
            .iter()
            .find(|t| t.id == id && t.revoked_at.is_none())
            .ok_or_else(|| ServiceError::NotFound(format!("no live token {id}")))?;
        if target.role == Role::Admin && self.store.count_live_tokens(Role::Admin).await? <= 1 {
            return Err(ServiceError::Conflict(
                "this is the last admin token; issue another before revoking it".into(),
            ));
        }
        let revoked = self.store.revoke_token(id, self.clock.now_ms()).await?;
        self.tokens.clear();
        if !revoked {
            return Err(ServiceError::NotFound(format!("no live token {id}")));
        }
        tracing::info!(token.id = %id, by = %by.name, "token revoked");
        Ok(())
    }
}

/// How long a looked-up live token is trusted without asking the database again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);
/// Tokens remembered at most; beyond, the cache starts over.
const TOKEN_CACHE_SIZE: usize = 10_000;

/// Live tokens recently looked up, by hash. Unknown and revoked tokens are never
/// remembered: a new token works at once.
#[derive(Default)]
pub(super) struct TokenCache {
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
    fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.generation += 1;
    }
}
