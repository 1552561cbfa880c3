//! Storage behind one trait, with two real backends: PostgreSQL (production, shared by
//! several instances) and SQLite (the embedded default). Each backend has its own SQL and
//! its own migrations under `migrations/<backend>/`; the same contract tests run on both.

mod migrate;
mod operations;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::clock::Millis;
use crate::domain::change::Version;
use crate::domain::delivery::{AttemptRecord, DispatchState, Outcome};
use crate::domain::event::NewEvent;
use crate::domain::token::{Role, Token};
use crate::domain::webhook::{Webhook, WebhookStatus, WebhookType};

pub use operations::{
    DURATION_BOUNDS_MS, OperationsStore, Rollup, SessionRecord, duration_bucket, minute_of,
};
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
    /// Only webhooks whose delivery is failing: enabled and neither `active` nor
    /// `disabled`.
    pub failing: bool,
    /// Only webhooks whose name contains this text (ignoring case).
    pub name_contains: Option<String>,
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
/// What one append did to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// Each event's position; `None` for an eventId already in the log.
    pub positions: Vec<Option<i64>>,
    /// The append took every position after `from` up to `to` (the log head it left):
    /// none of them belongs to another append, and the ones no event got stay empty.
    pub from: i64,
    pub to: i64,
}

#[async_trait]
pub trait Store: OperationsStore + Send + Sync + 'static {
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new webhook; `Conflict` when its name is taken.
    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError>;

    /// Replaces the user-written fields of a webhook whose stored version is still
    /// `expected`; `Stale` otherwise, `Conflict` when a rename hits a taken name. The
    /// delivery state is the dispatcher's: it is only written when `resume` is set, which
    /// takes `status` and `failureDetails` from `webhook` and clears the scheduled retry, so
    /// that the pending batch is sent again at once.
    async fn update_webhook(
        &self,
        webhook: &Webhook,
        expected: Version,
        resume: bool,
    ) -> Result<(), StoreError>;

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

    // ---- the event log ----

    /// Appends events in one transaction and returns each one's log position, or `None` for
    /// an event whose eventId is already in the log (or earlier in `events`). Positions
    /// become visible in increasing order, whatever the number of concurrent writers.
    async fn append_events(&self, events: &[NewEvent], now: Millis)
    -> Result<Appended, StoreError>;

    /// The highest position handed out so far.
    async fn log_head(&self) -> Result<i64, StoreError>;

    /// Events with `after < seq <= up_to`, in log order: at most `limit`, and past the
    /// first, no more than [`READ_BYTES`] of bodies. A short page does not mean the range
    /// is exhausted: read on from the last event until a page comes back empty.
    async fn read_events(
        &self,
        after: i64,
        up_to: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self
            .read_event_page(after, up_to, limit, READ_BYTES)
            .await?
            .events)
    }

    /// Events with `after < seq <= up_to`, in log order: at most `limit`, each one taken
    /// while the bodies before it in the page sum to less than `max_bytes` (so the first
    /// always is). Events whose body retention dropped are left out.
    async fn read_event_page(
        &self,
        after: i64,
        up_to: i64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<EventPage, StoreError>;

    /// The events at these positions that are still in the log, in log order.
    async fn events_at(&self, seqs: &[i64]) -> Result<Vec<StoredEvent>, StoreError>;

    /// Deletes events ingested before `events_before` and attempts made before
    /// `attempts_before`, in bounded steps; returns how many rows went.
    async fn prune(
        &self,
        events_before: Millis,
        attempts_before: Millis,
    ) -> Result<u64, StoreError> {
        let cuts = RetentionCuts {
            bodies_before: events_before,
            ids_before: events_before,
            attempts_before,
        };
        let mut rows = 0;
        loop {
            let step = self.prune_step(&cuts, PRUNE_STEP).await?;
            rows += step.events + step.attempts + step.rollups;
            if !step.more(PRUNE_STEP) {
                return Ok(rows);
            }
        }
    }

    /// One bounded step of retention, oldest first: drops the bodies of up to `limit`
    /// events ingested before `cuts.bodies_before` (their ids stay in the log, so that an
    /// eventId sent again is still recognised), deletes up to `limit` events ingested
    /// before `cuts.ids_before` and up to `limit` attempts made before
    /// `cuts.attempts_before`. An event without its body is no longer read or delivered.
    async fn prune_step(&self, cuts: &RetentionCuts, limit: u32) -> Result<Pruned, StoreError>;

    // ---- dispatcher instances and leases ----

    /// Records that `instance` is alive and forgets instances silent since `forget_before`;
    /// returns how many instances have beaten since `live_since`.
    async fn heartbeat(
        &self,
        instance: Uuid,
        now: Millis,
        live_since: Millis,
        forget_before: Millis,
    ) -> Result<i64, StoreError>;

    /// Takes the lease of up to `limit` more enabled, undeleted webhooks that have no live
    /// owner (an owner whose heartbeat is older than `expired_before` is dead), and returns
    /// every enabled, undeleted webhook `instance` now holds.
    async fn claim_webhooks(
        &self,
        instance: Uuid,
        expired_before: Millis,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// Gives up the leases of these webhooks (only where `instance` holds them).
    async fn release_webhooks(&self, instance: Uuid, ids: &[Uuid]) -> Result<(), StoreError>;

    /// Gives up every lease of `instance` and forgets it: a clean shutdown.
    async fn remove_instance(&self, instance: Uuid) -> Result<(), StoreError>;

    /// Records who an instance is and where it runs, with a heartbeat at
    /// `instance.heartbeat_at` (replacing what was recorded under its id).
    async fn register_instance(&self, instance: &InstanceRecord) -> Result<(), StoreError>;

    /// Every registered instance.
    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError>;

    /// Gives `instance` every lease the instances `dead` hold and forgets them; returns how
    /// many leases moved. Only for instances known to be dead: nothing else checks.
    async fn take_over(&self, instance: Uuid, dead: &[Uuid]) -> Result<u64, StoreError>;

    /// The name of the instance holding the webhook's lease, if one that has beaten since
    /// `live_since` does (an instance registered without a name is shown by its id).
    async fn lease_holder(
        &self,
        webhook: Uuid,
        live_since: Millis,
    ) -> Result<Option<String>, StoreError>;

    // ---- delivery state ----

    async fn dispatch_state(&self, id: Uuid) -> Result<Option<DispatchState>, StoreError>;

    /// Applies workers' writes in one transaction (one commit for all of them: the
    /// dispatcher's group commit). Each write is applied only where `owner` still holds
    /// the webhook's lease; the answer says, per write, whether it was. A write sets the
    /// webhook's delivery state (its cursor never moves back) and records its attempt, if
    /// it has one, together.
    async fn record_dispatch(
        &self,
        owner: Uuid,
        writes: &[DispatchWrite],
    ) -> Result<Vec<bool>, StoreError>;

    /// Moves the cursors of idle webhooks forward to `position`, over events that did not
    /// match them (never backwards, never past a pending batch).
    async fn advance_cursors(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        position: i64,
    ) -> Result<(), StoreError>;

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

    /// A webhook's attempts, newest first, below the attempt id `before`.
    async fn list_attempts(
        &self,
        webhook: Uuid,
        outcome: Option<Outcome>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AttemptRecord>, StoreError>;
}

/// What a webhook's worker writes: the webhook's new delivery state, and the attempt that
/// led to it (none when the worker only records the batch it is about to send).
#[derive(Debug, Clone)]
pub struct DispatchWrite {
    pub webhook_id: Uuid,
    pub state: DispatchState,
    pub attempt: Option<AttemptRecord>,
}

/// A dispatcher instance as registered. The fields after `id` are empty for an instance
/// registered by a version that did not record them.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub id: Uuid,
    pub name: Option<String>,
    pub host: Option<String>,
    pub pid: Option<i64>,
    /// `<boot id>/<pid namespace>`: where `pid` names a process.
    pub pid_namespace: Option<String>,
    /// The process's start time, in clock ticks after boot.
    pub process_started: Option<i64>,
    pub heartbeat_at: Millis,
}

/// Where retention cuts, in ingest (or attempt) time: before each, that part goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCuts {
    pub bodies_before: Millis,
    pub ids_before: Millis,
    pub attempts_before: Millis,
}

/// What one retention step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events whose body was dropped.
    pub bodies: u64,
    /// Events deleted (id and all).
    pub events: u64,
    pub attempts: u64,
    /// Per-minute delivery health rows deleted.
    pub rollups: u64,
}

impl Pruned {
    /// Whether a part of the step reached its limit (more may be waiting).
    pub fn more(&self, limit: u32) -> bool {
        let limit = u64::from(limit);
        self.bodies >= limit
            || self.events >= limit
            || self.attempts >= limit
            || self.rollups >= limit
    }
}

/// Rows one retention step touches at most, per kind: a step is a short transaction.
pub const PRUNE_STEP: u32 = 500;

/// The most body bytes [`Store::read_events`] returns in one page (past its first event).
/// Pages of rows alone held up to 1,000 events of 256 KiB each.
pub const READ_BYTES: u64 = 4 << 20;

/// A page of the log, read within a count and a byte budget.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Every event of the range asked for is in `events`; when false, read on after the
    /// last one.
    pub complete: bool,
}

impl EventPage {
    /// Builds a page from the rows read (each with the running total of body bytes up to
    /// and including it, as the database counted them) and the budgets the read had.
    fn assemble(rows: Vec<(StoredEvent, i64)>, limit: u32, max_bytes: u64) -> Self {
        let last_total = rows.last().map_or(0, |(_, total)| *total);
        // Fewer rows than the limit, and the last one did not reach the byte budget: no row
        // of the range was left out. (When it did reach it, the next read is the check.)
        let complete = rows.len() < limit as usize && (last_total as u64) < max_bytes;
        Self {
            events: rows.into_iter().map(|(event, _)| event).collect(),
            complete,
        }
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub event_id: Uuid,
    pub body: String,
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

/// Given the next events (position, ingest time) in log order after those whose bodies are
/// dropped, the position up to which bodies go now: the events before the first one
/// ingested at or after `before`. None when there is nothing to do.
fn bodies_through(next: &[(i64, Millis)], before: Millis) -> Option<i64> {
    let old = next.iter().take_while(|(_, at)| *at < before).count();
    (old > 0).then(|| next[old - 1].0)
}

/// Indexes of the events whose eventId appears for the first time in the slice.
fn first_occurrences(events: &[NewEvent]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    (0..events.len())
        .filter(|&i| seen.insert(events[i].event_id))
        .collect()
}
