//! API tokens as stored: only the hash of each secret.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;
use crate::clock::Millis;
use crate::domain::token::{Role, Token};

/// The API's bearer tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token; `Conflict` when its name is taken.
    async fn insert_token(&self, token: &Token) -> Result<(), StoreError>;

    /// Replaces the hash and role of the token with this name and un-revokes it, or
    /// inserts it: how a configured admin token takes effect at start.
    async fn upsert_token(&self, token: &Token) -> Result<(), StoreError>;

    /// The token with this hash, revoked or not.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>, StoreError>;

    async fn list_tokens(&self) -> Result<Vec<Token>, StoreError>;
    /// Revokes a live token; false when there is no live token with that id.
    async fn revoke_token(&self, id: Uuid, at: Millis) -> Result<bool, StoreError>;

    /// How many unrevoked tokens have this role.
    async fn count_live_tokens(&self, role: Role) -> Result<i64, StoreError>;
}
