//! Storage behind one trait per concern, with two real backends: PostgreSQL (production,
//! shared by several instances) and SQLite (the embedded default). The rows, their binds
//! and the SQL the dialects agree on are shared (`rows`, `sql`); each backend writes its own
//! hot paths (appends, group commits, claims) and has its own migrations under
//! `migrations/<backend>/`. The same contract tests run on both.

mod delivery;
mod delivery_log;
mod events;
mod leases;
mod migrate;
mod operations;
pub mod postgres;
mod rows;
mod shared;
mod sql;
pub mod sqlite;
mod tokens;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

pub use delivery::{DeliveryState, DispatchWrite};
pub use delivery_log::DeliveryLog;
pub use events::{
    Appended, EventLog, EventPage, PRUNE_STEP, Pruned, READ_BYTES, RetentionCuts, StoredEvent,
};
pub use leases::{InstanceRecord, Leases};
pub use operations::{
    DURATION_BOUNDS_MS, OperationsStore, Rollup, SessionRecord, duration_bucket, minute_of,
};
pub use rows::WebhookRow;
pub use tokens::TokenStore;
pub use webhooks::{Cursor, Include, Page, WebhookQuery, WebhookStore};

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

impl StoreError {
    /// A failure that going again may not meet: a deadlock or serialization failure,
    /// where the database rolled the transaction back.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                // PostgreSQL's codes; SQLite reports a busy database as "5" or "6".
                matches!(db.code().as_deref(), Some("40P01" | "40001" | "5" | "6"))
            }
            _ => false,
        }
    }
}

impl StoreError {
    /// The database cannot be reached, is shutting down or starting, or has no connection
    /// to spare for longer than the pool waits: the same request may succeed shortly. The
    /// API answers these 503 with `Retry-After`, not 500.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(err) = self else {
            return false;
        };
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // PostgreSQL: connection exceptions (08…), insufficient resources (53…: too
            // many connections, disk full), shutdown or startup (57P01–57P03). SQLite: the
            // file stayed locked by another process past the busy timeout ("5", "6").
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code == "5"
                    || code == "6"
            }),
            _ => false,
        }
    }
}

/// The whole storage contract: each part is a trait of its own (webhooks, tokens, the event
/// log, the delivery log, the dispatcher's delivery writes, leases, operations), so that code
/// can ask for the part it uses; a backend implements them all. Every method is one transaction.
#[async_trait]
pub trait Store:
    WebhookStore
    + TokenStore
    + EventLog
    + DeliveryLog
    + DeliveryState
    + Leases
    + OperationsStore
    + Send
    + Sync
    + 'static
{
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    // ---- wake-ups between instances ----

    /// Until `stop`: calls `events` with the log head another instance's commit reached
    /// (`i64::MAX` when commits may have been missed) and sends the id of a webhook another
    /// instance changed. What this store wrote itself is not announced back to it: the
    /// caller knows. Only a wake-up: polling stays behind it.
    async fn listen(
        &self,
        events: Arc<dyn Fn(i64) + Send + Sync>,
        webhooks: tokio::sync::mpsc::UnboundedSender<Uuid>,
        stop: tokio_util::sync::CancellationToken,
    );

    /// Tells the other instances that a webhook changed.
    async fn announce_webhook_change(&self, id: Uuid) -> Result<(), StoreError>;
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
pub(in crate::store) fn unique_as_conflict(err: sqlx::Error, what: &'static str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(err),
    }
}
