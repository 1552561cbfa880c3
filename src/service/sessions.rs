//! Web console sessions: signing in with an API token opens a session that stands for
//! that token (its role, its revocation) until it expires or is signed out. The session's
//! secret lives in the browser's cookie only; the store keeps its hash.

use super::{Caller, Result, Service};
use crate::clock::Millis;
use crate::domain::token::{generate_secret, hash_secret};
use crate::store::SessionRecord;

/// How long a session lasts after signing in: 8 hours.
pub const SESSION_TTL_MS: Millis = 8 * 3600 * 1000;

/// A session just opened.
pub struct SignedIn {
    /// The session's secret, for the cookie; known only here.
    pub secret: String,
    pub caller: Caller,
    pub expires_at: Millis,
}

impl Service {
    /// Opens a session for a live API token; `None` when the token is no live token's.
    pub async fn sign_in(&self, token_secret: &str) -> Result<Option<SignedIn>> {
        let Some(caller) = self.authenticate(token_secret).await? else {
            return Ok(None);
        };
        let secret = generate_secret();
        let now = self.clock.now_ms();
        let expires_at = now + SESSION_TTL_MS;
        let record = SessionRecord {
            secret_hash: hash_secret(&secret),
            token_id: caller.token_id,
            created_at: now,
            expires_at,
        };
        self.store.insert_session(&record, now).await?;
        tracing::info!(token.name = %caller.name, "console session opened");
        Ok(Some(SignedIn {
            secret,
            caller,
            expires_at,
        }))
    }

    /// The caller an unexpired session stands for, while its token is live.
    pub async fn session(&self, secret: &str) -> Result<Option<Caller>> {
        let now = self.clock.now_ms();
        let Some(token_hash) = self
            .store
            .session_token_hash(&hash_secret(secret), now)
            .await?
        else {
            return Ok(None);
        };
        self.caller_by_hash(token_hash).await
    }

    /// Ends a session.
    pub async fn sign_out(&self, secret: &str) -> Result<()> {
        Ok(self.store.delete_session(&hash_secret(secret)).await?)
    }
}

/// The token a session's forms carry to show they were made by its pages: derived from
/// the session's secret (so nothing more is stored), and no way back to it.
pub fn csrf_token(session_secret: &str) -> String {
    hash_secret(&format!("csrf:{session_secret}"))
}
