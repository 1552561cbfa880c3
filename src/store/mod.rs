//! Storage behind one trait, with two real backends: PostgreSQL (production, shared by
//! several instances) and SQLite (the embedded default). Each backend has its own SQL and
//! its own migrations under `migrations/<backend>/`; the same contract tests run on both.

mod migrate;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::clock::Millis;
use crate::domain::change::Version;
use crate::domain::token::{Role, Token};
use crate::domain::webhook::{Webhook, WebhookStatus, WebhookType};

pub use rows::WebhookRow;

/// What storage can fail with. Callers map these to their own errors; database detail is
/// logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; the text says what was taken.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// An optimistic update found another version than the one it read.
    #[error("the record was changed by someone else meanwhile")]
    Stale,
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("migration {version} ({name}) was changed after it was applied")]
    MigrationChanged { version: i64, name: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Which soft-deleted webhooks a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Include {
    #[default]
    NonDeleted,
    Deleted,
    All,
}

impl Include {
    /// The `deleted` values this choice lets through, as the (low, high) pair the SQL uses.
    fn deleted_range(self) -> (bool, bool) {
        match self {
            Include::NonDeleted => (false, false),
            Include::Deleted => (true, true),
            Include::All => (false, true),
        }
    }
}

/// A position in a list ordered by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    After(String),
    Before(String),
}

/// A webhook list request.
#[derive(Debug, Clone)]
pub struct WebhookQuery {
    pub status: Option<WebhookStatus>,
    pub webhook_type: Option<WebhookType>,
    pub include: Include,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

/// One page of a list, with the names to continue from in either direction.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub total: i64,
}

impl Page<Webhook> {
    /// Builds a page from up to `limit + 1` rows fetched in the cursor's direction
    /// (descending for `Before`); the extra row only says that more exist.
    fn assemble(mut rows: Vec<Webhook>, limit: u32, cursor: Option<&Cursor>, total: i64) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let name = |w: Option<&Webhook>| w.map(|w| w.spec.name.as_str().to_owned());
        match cursor {
            Some(Cursor::Before(_)) => {
                rows.reverse();
                let before = if more { name(rows.first()) } else { None };
                let after = name(rows.last());
                Page {
                    items: rows,
                    before,
                    after,
                    total,
                }
            }
            Some(Cursor::After(_)) => {
                let before = name(rows.first());
                let after = if more { name(rows.last()) } else { None };
                Page {
                    items: rows,
                    before,
                    after,
                    total,
                }
            }
            None => {
                let after = if more { name(rows.last()) } else { None };
                Page {
                    items: rows,
                    before: None,
                    after,
                    total,
                }
            }
        }
    }
}

/// The storage contract. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new webhook; `Conflict` when its name is taken.
    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError>;

    /// Replaces a webhook whose stored version is still `expected`; `Stale` otherwise,
    /// `Conflict` when a rename hits a taken name.
    async fn update_webhook(&self, webhook: &Webhook, expected: Version) -> Result<(), StoreError>;

    async fn webhook(&self, id: Uuid) -> Result<Option<Webhook>, StoreError>;

    async fn webhook_by_name(&self, name: &str) -> Result<Option<Webhook>, StoreError>;

    async fn list_webhooks(&self, query: &WebhookQuery) -> Result<Page<Webhook>, StoreError>;

    /// Removes a webhook for good; false when there was none.
    async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError>;

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

/// Opens the database named by `url` (`postgres://…` or `sqlite://…`) and brings its
/// schema up to date.
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else {
        anyhow::bail!("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")
    }
}

/// Maps a unique-constraint violation to `Conflict(what)`, anything else to `Database`.
fn unique_as_conflict(err: sqlx::Error, what: &'static str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(err),
    }
}
