//! The SQLite backend: the embedded default, one file in the working directory.
//!
//! Durability is not traded for speed: WAL with `synchronous=FULL`, so a committed write
//! survives a crash of the process or of the machine.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use std::str::FromStr;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use super::rows::{AttemptRow, DispatchRow, TokenRow, WebhookRow};
use super::{
    Appended, Cursor, DispatchWrite, EventPage, InstanceRecord, Page, Pruned, RetentionCuts, Store,
    StoreError, StoredEvent, WebhookQuery, bodies_through, first_occurrences, migrate,
    unique_as_conflict,
};
use crate::clock::Millis;
use crate::domain::change::Version;
use crate::domain::delivery::{AttemptRecord, DispatchState, Outcome};
use crate::domain::event::NewEvent;
use crate::domain::token::{Role, Token};
use crate::domain::webhook::Webhook;

pub struct SqliteStore {
    /// Connections that read (WAL lets them run beside the writer).
    pub(super) pool: SqlitePool,
    /// The one connection that writes. SQLite lets one transaction write at a time; with
    /// several writing connections, the one that finds the file locked sleeps and tries
    /// again (1, 2, 5, 10… ms), which is what the event appends and the dispatcher's
    /// records kept doing to each other. One connection makes them queue in the process.
    pub(super) writer: SqlitePool,
    /// Copies the write-ahead log into the database file in the background.
    checkpointer: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The log size (pages of 4 KiB) at which a commit copies it into the database itself, in
/// case the background checkpoint falls behind (SQLite's default is 1,000).
const CHECKPOINT_AT_PAGES: &str = "10000";

const WEBHOOK_COLUMNS: &str = "id, name, webhook_type, status, enabled, deleted, version, updated_at, \
     updated_by, spec, secret_key, change_description, failure_details, previous_secret, previous_secret_until";

impl SqliteStore {
    /// Connects and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // A commit that finds the log over the threshold copies it into the database file
        // and syncs that too before it returns: with SQLite's default threshold, every
        // twentieth append of W6 waited for it. The writer leaves that to a checkpoint in
        // the background, which does not hold up commits.
        let writer = open(
            1,
            options
                .clone()
                .pragma("wal_autocheckpoint", CHECKPOINT_AT_PAGES),
        )
        .await?;
        migrate::run_sqlite(&writer).await?;
        let pool = open(4, options).await?;
        let checkpointer = tokio::spawn(checkpoint(pool.clone()));
        Ok(Self {
            pool,
            writer,
            checkpointer,
        })
    }
}

/// How long a statement waits for a pooled connection (the writer is one connection,
/// shared by the group commits and the API's writes, each of which takes milliseconds).
/// Past it the API answers 503 with `Retry-After` rather than keep the request waiting.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pool of `connections` on the file. Opening a connection sets WAL mode, which on a new
/// file takes a lock SQLite does not wait for: instances starting at once on a new file
/// got "database is locked", and now go again shortly.
async fn open(connections: u32, options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let mut tries = 0;
    loop {
        // No ping before each acquire (the default): an embedded file cannot drop a
        // connection, and the ping is a round trip to the connection's thread.
        let opened = SqlitePoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await;
        match opened {
            Err(sqlx::Error::Database(db))
                if tries < 200 && matches!(db.code().as_deref(), Some("5" | "6")) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            opened => return opened,
        }
    }
}

impl SqliteStore {
    /// A transaction that holds the write lock from its first statement (`BEGIN
    /// IMMEDIATE`). A deferred one takes the lock at its first write, and when another
    /// process (a second store on the same file) committed in between, SQLite fails it at
    /// once ("database is locked") instead of waiting.
    async fn write_transaction(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Copies committed pages from the log into the database file now and then (PASSIVE: it
/// never waits for, nor holds up, the writer or the readers), so that the log stays short.
async fn checkpoint(pool: SqlitePool) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %err, "SQLite checkpoint failed; the next commit over the threshold does it");
        }
    }
}

/// Rows per multi-row insert of events: the largest size not over `left` (powers of two).
const INSERT_CHUNKS: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// The next chunk for `left` rows: how many rows, and their insert (built once per size).
fn insert_chunk(left: usize) -> (usize, &'static str) {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        INSERT_CHUNKS
            .iter()
            .map(|&n| {
                let values = vec!["(?, ?, ?, ?, ?, ?)"; n].join(", ");
                format!(
                    "INSERT INTO events (seq, event_id, event_type, entity_type, created_at, body) \
                     VALUES {values} ON CONFLICT (event_id) DO NOTHING"
                )
            })
            .collect()
    });
    let at = INSERT_CHUNKS
        .iter()
        .position(|&n| n <= left)
        .expect("at least one row left");
    (INSERT_CHUNKS[at], &all[at])
}

fn webhook_from_row(r: &SqliteRow) -> Result<Webhook, StoreError> {
    WebhookRow {
        id: parse_id(r)?,
        name: r.try_get("name")?,
        webhook_type: r.try_get("webhook_type")?,
        status: r.try_get("status")?,
        enabled: r.try_get("enabled")?,
        deleted: r.try_get("deleted")?,
        version: r.try_get("version")?,
        updated_at: r.try_get("updated_at")?,
        updated_by: r.try_get("updated_by")?,
        spec: r.try_get("spec")?,
        secret_key: r.try_get("secret_key")?,
        change_description: r.try_get("change_description")?,
        failure_details: r.try_get("failure_details")?,
        previous_secret: r.try_get("previous_secret")?,
        previous_secret_until: r.try_get("previous_secret_until")?,
    }
    .into_webhook()
}

/// SQLite keeps ids as hyphenated text.
fn parse_id(r: &SqliteRow) -> Result<Uuid, StoreError> {
    let id: String = r.try_get("id")?;
    Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("id '{id}': {e}")))
}

fn token_from_row(r: &SqliteRow) -> Result<Token, StoreError> {
    TokenRow {
        id: parse_id(r)?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        hash: r.try_get("token_hash")?,
        signing_secret: r.try_get("signing_secret")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        revoked_at: r.try_get("revoked_at")?,
    }
    .into_token()
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let w = WebhookRow::from_webhook(webhook);
        sqlx::query(
            "INSERT INTO webhooks (id, name, webhook_type, status, enabled, deleted, version, updated_at, \
             updated_by, spec, secret_key, change_description, failure_details, previous_secret, \
             previous_secret_until, cursor_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             (SELECT last_seq FROM event_log_head WHERE id = 1))",
        )
        .bind(w.id.to_string())
        .bind(&w.name)
        .bind(w.webhook_type)
        .bind(&w.status)
        .bind(w.enabled)
        .bind(w.deleted)
        .bind(w.version)
        .bind(w.updated_at)
        .bind(&w.updated_by)
        .bind(&w.spec)
        .bind(&w.secret_key)
        .bind(&w.change_description)
        .bind(&w.failure_details)
        .bind(&w.previous_secret)
        .bind(w.previous_secret_until)
        .execute(&self.writer)
        .await
        .map_err(|e| unique_as_conflict(e, "webhook name"))?;
        Ok(())
    }

    async fn update_webhook(
        &self,
        webhook: &Webhook,
        expected: Version,
        resume: bool,
    ) -> Result<(), StoreError> {
        let w = WebhookRow::from_webhook(webhook);
        let done = sqlx::query(
            "UPDATE webhooks SET name = $2, webhook_type = $3, enabled = $5, deleted = $6, \
             version = $7, updated_at = $8, updated_by = $9, spec = $10, secret_key = $11, \
             change_description = $12, previous_secret = $16, previous_secret_until = $17, \
             status = CASE WHEN $15 THEN $4 ELSE status END, \
             failure_details = CASE WHEN $15 THEN $13 ELSE failure_details END, \
             next_attempt_at = CASE WHEN $15 THEN NULL ELSE next_attempt_at END, \
             retry_step = CASE WHEN $15 THEN 0 ELSE retry_step END \
             WHERE id = $1 AND version = $14",
        )
        .bind(w.id.to_string())
        .bind(&w.name)
        .bind(w.webhook_type)
        .bind(&w.status)
        .bind(w.enabled)
        .bind(w.deleted)
        .bind(w.version)
        .bind(w.updated_at)
        .bind(&w.updated_by)
        .bind(&w.spec)
        .bind(&w.secret_key)
        .bind(&w.change_description)
        .bind(&w.failure_details)
        .bind(expected.tenths() as i32)
        .bind(resume)
        .bind(&w.previous_secret)
        .bind(w.previous_secret_until)
        .execute(&self.writer)
        .await
        .map_err(|e| unique_as_conflict(e, "webhook name"))?;
        if done.rows_affected() == 0 {
            Err(StoreError::Stale)
        } else {
            Ok(())
        }
    }

    async fn webhook(&self, id: Uuid) -> Result<Option<Webhook>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(webhook_from_row)
            .transpose()
    }

    async fn webhook_by_name(&self, name: &str) -> Result<Option<Webhook>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE name = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(webhook_from_row)
            .transpose()
    }

    async fn list_webhooks(&self, q: &WebhookQuery) -> Result<Page<Webhook>, StoreError> {
        // Filters are bound as parameters; only the fixed ordering clause varies.
        const FILTER: &str = "($1 IS NULL OR ($1 = 'disabled' AND NOT enabled) OR (enabled AND status = $1)) AND ($2 IS NULL OR webhook_type = $2) \
             AND deleted IN ($3, $4) AND (NOT $5 OR (enabled AND status NOT IN ('active', 'disabled'))) \
             AND ($6 IS NULL OR instr(lower(name), lower($6)) > 0)";
        let (order, cursor) = match &q.cursor {
            Some(Cursor::Before(name)) => ("AND name < $7 ORDER BY name DESC", Some(name.as_str())),
            Some(Cursor::After(name)) => ("AND name > $7 ORDER BY name ASC", Some(name.as_str())),
            None => ("AND $7 IS NULL ORDER BY name ASC", None),
        };
        let (low, high) = q.include.deleted_range();
        let status = q.status.map(|s| s.as_str());
        let kind = q.webhook_type.map(|t| t.as_str());
        let name = q.name_contains.as_deref();
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE {FILTER} {order} LIMIT $8");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status)
            .bind(kind)
            .bind(low)
            .bind(high)
            .bind(q.failing)
            .bind(name)
            .bind(cursor)
            .bind(i64::from(q.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(webhook_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM webhooks WHERE {FILTER}"
        )))
        .bind(status)
        .bind(kind)
        .bind(low)
        .bind(high)
        .bind(q.failing)
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        Ok(Page::assemble(items, q.limit, q.cursor.as_ref(), total))
    }

    async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_token(&self, t: &Token) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by, revoked_at, signing_secret) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(t.id.to_string())
        .bind(t.name.as_str())
        .bind(t.role.as_str())
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(&t.created_by)
        .bind(t.revoked_at)
        .bind(t.signing_secret.as_ref().map(|s| s.expose()))
        .execute(&self.writer)
        .await
        .map_err(|e| unique_as_conflict(e, "token name"))?;
        Ok(())
    }

    async fn upsert_token(&self, t: &Token) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL) \
             ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, token_hash = EXCLUDED.token_hash, \
             revoked_at = NULL",
        )
        .bind(t.id.to_string())
        .bind(t.name.as_str())
        .bind(t.role.as_str())
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(&t.created_by)
        .execute(&self.writer)
        .await
        .map_err(|e| unique_as_conflict(e, "token"))?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>, StoreError> {
        sqlx::query("SELECT * FROM api_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
        sqlx::query("SELECT * FROM api_tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn revoke_token(&self, id: Uuid, at: Millis) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_live_tokens(&self, role: Role) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_tokens WHERE role = $1 AND revoked_at IS NULL",
        )
        .bind(role.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn append_events(
        &self,
        events: &[NewEvent],
        now: Millis,
    ) -> Result<Appended, StoreError> {
        let fresh = first_occurrences(events);
        let mut tx = self.write_transaction().await?;
        let last: i64 = sqlx::query_scalar(
            "UPDATE event_log_head SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq",
        )
        .bind(fresh.len() as i64)
        .fetch_one(&mut *tx)
        .await?;
        let first = last - fresh.len() as i64 + 1;
        // Multi-row inserts with bound values, in chunks of fixed sizes so that a few
        // prepared statements serve every batch. (Rows passed as one JSON array cost
        // escaping every body here and unescaping it in SQLite; a row back for each event
        // cost a message from SQLite's thread each.)
        let mut stored = 0;
        let mut done = 0;
        while done < fresh.len() {
            let (rows, sql) = insert_chunk(fresh.len() - done);
            let mut insert = sqlx::query(sql);
            for (k, &i) in fresh[done..done + rows].iter().enumerate() {
                let e = &events[i];
                insert = insert
                    .bind(first + (done + k) as i64)
                    .bind(e.event_id.to_string())
                    .bind(e.event_type.as_str())
                    .bind(e.entity_type.as_str())
                    .bind(now)
                    .bind(e.body.as_str());
            }
            stored += insert.execute(&mut *tx).await?.rows_affected() as usize;
            done += rows;
        }
        // Some eventIds were in the log already (a producer's retry): which positions
        // stayed empty.
        let taken: Option<HashSet<i64>> = if stored < fresh.len() {
            let seqs: Vec<i64> =
                sqlx::query_scalar("SELECT seq FROM events WHERE seq >= $1 AND seq <= $2")
                    .bind(first)
                    .bind(last)
                    .fetch_all(&mut *tx)
                    .await?;
            Some(seqs.into_iter().collect())
        } else {
            None
        };
        tx.commit().await?;
        let mut positions = vec![None; events.len()];
        for (k, &i) in fresh.iter().enumerate() {
            let seq = first + k as i64;
            positions[i] = taken
                .as_ref()
                .is_none_or(|t| t.contains(&seq))
                .then_some(seq);
        }
        Ok(Appended {
            positions,
            from: first - 1,
            to: last,
        })
    }

    async fn log_head(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT last_seq FROM event_log_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn read_event_page(
        &self,
        after: i64,
        up_to: i64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<EventPage, StoreError> {
        // The running total of body sizes is computed from the stored lengths (a body the
        // budget leaves out is not even fetched from its out-of-line storage). An empty body
        // is an event past its body retention: only its id is kept.
        let rows = sqlx::query(
            "SELECT seq, event_id, body, total FROM ( \
               SELECT seq, event_id, body, octet_length(body) AS size, \
                 SUM(octet_length(body)) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS total \
               FROM events WHERE seq > $1 AND seq <= $2 AND body <> '' ORDER BY seq LIMIT $3) page \
             WHERE total - size < $4 ORDER BY seq",
        )
        .bind(after)
        .bind(up_to)
        .bind(i64::from(limit))
        .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((event_from_row(r)?, r.try_get::<i64, _>(3)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(EventPage::assemble(rows, limit, max_bytes))
    }

    async fn events_at(&self, seqs: &[i64]) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(
            "SELECT seq, event_id, body FROM events WHERE seq IN (SELECT value FROM json_each($1)) AND body <> '' ORDER BY seq",
        )
        .bind(serde_json::to_string(seqs).expect("numbers serialize"))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn prune_step(&self, cuts: &RetentionCuts, limit: u32) -> Result<Pruned, StoreError> {
        let limit = i64::from(limit);
        // Each kind goes oldest first, from the lowest positions (ids): the rows read are
        // bounded by `limit`, whatever the size of the table.
        let mut tx = self.write_transaction().await?;
        let events = sqlx::query(
            "DELETE FROM events WHERE seq IN ( \
               SELECT seq FROM (SELECT seq, created_at FROM events ORDER BY seq LIMIT $2) \
               WHERE created_at < $1)",
        )
        .bind(cuts.ids_before)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let attempts = sqlx::query(
            "DELETE FROM delivery_attempts WHERE id IN ( \
               SELECT id FROM (SELECT id, attempted_at FROM delivery_attempts ORDER BY id LIMIT $2) \
               WHERE attempted_at < $1)",
        )
        .bind(cuts.attempts_before)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let rollups = sqlx::query(
            "DELETE FROM attempt_rollups WHERE (webhook_id, minute, bucket) IN ( \
               SELECT webhook_id, minute, bucket FROM attempt_rollups WHERE minute < $1 LIMIT $2)",
        )
        .bind(super::minute_of(cuts.attempts_before))
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Bodies: the next events after those already done, up to the first one not old
        // enough.
        let through: i64 =
            sqlx::query_scalar("SELECT bodies_dropped_through FROM log_retention WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        let next: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT seq, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(through)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut bodies = 0;
        if let Some(upto) = bodies_through(&next, cuts.bodies_before) {
            bodies = sqlx::query(
                "UPDATE events SET body = '' WHERE seq > $1 AND seq <= $2 AND body <> ''",
            )
            .bind(through)
            .bind(upto)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE log_retention SET bodies_dropped_through = $1 WHERE id = 1")
                .bind(upto)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Pruned {
            bodies,
            events,
            attempts,
            rollups,
        })
    }

    async fn heartbeat(
        &self,
        instance: Uuid,
        now: Millis,
        live_since: Millis,
        forget_before: Millis,
    ) -> Result<i64, StoreError> {
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "INSERT INTO dispatcher_instances (id, heartbeat_at, started_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(instance.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM dispatcher_instances WHERE heartbeat_at < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        let live = sqlx::query_scalar(
            "SELECT COUNT(*) FROM dispatcher_instances WHERE heartbeat_at >= $1",
        )
        .bind(live_since)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(live)
    }

    async fn claim_webhooks(
        &self,
        instance: Uuid,
        expired_before: Millis,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        // One writer at a time: the transaction is atomic without row locks.
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "UPDATE webhooks SET owner = $1 WHERE id IN ( \
               SELECT w.id FROM webhooks w LEFT JOIN dispatcher_instances i ON i.id = w.owner \
               WHERE w.enabled AND NOT w.deleted AND w.owner IS NOT $1 \
                 AND (w.owner IS NULL OR i.id IS NULL OR i.heartbeat_at < $2) \
               ORDER BY w.id LIMIT $3)",
        )
        .bind(instance.to_string())
        .bind(expired_before)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE owner = $1 AND enabled AND NOT deleted",
        )
        .bind(instance.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        ids.iter()
            .map(|id| {
                Uuid::parse_str(id).map_err(|e| StoreError::Corrupt(format!("id '{id}': {e}")))
            })
            .collect()
    }

    async fn release_webhooks(&self, instance: Uuid, ids: &[Uuid]) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhooks SET owner = NULL WHERE owner = $1 AND id IN (SELECT value FROM json_each($2))")
            .bind(instance.to_string())
            .bind(serde_json::to_string(ids).expect("ids serialize"))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn remove_instance(&self, instance: Uuid) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        sqlx::query("UPDATE webhooks SET owner = NULL WHERE owner = $1")
            .bind(instance.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM dispatcher_instances WHERE id = $1")
            .bind(instance.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn register_instance(&self, i: &InstanceRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dispatcher_instances (id, heartbeat_at, started_at, name, host, pid, pid_namespace, process_started) \
             VALUES ($1, $2, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, name = excluded.name, \
             host = excluded.host, pid = excluded.pid, pid_namespace = excluded.pid_namespace, \
             process_started = excluded.process_started",
        )
        .bind(i.id.to_string())
        .bind(i.heartbeat_at)
        .bind(&i.name)
        .bind(&i.host)
        .bind(i.pid)
        .bind(&i.pid_namespace)
        .bind(i.process_started)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        sqlx::query(
            "SELECT id, name, host, pid, pid_namespace, process_started, heartbeat_at FROM dispatcher_instances",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(InstanceRecord {
                id: parse_id(r)?,
                name: r.try_get(1)?,
                host: r.try_get(2)?,
                pid: r.try_get(3)?,
                pid_namespace: r.try_get(4)?,
                process_started: r.try_get(5)?,
                heartbeat_at: r.try_get(6)?,
            })
        })
        .collect()
    }

    async fn take_over(&self, instance: Uuid, dead: &[Uuid]) -> Result<u64, StoreError> {
        let dead = serde_json::to_string(dead).expect("ids serialize");
        let mut tx = self.write_transaction().await?;
        let moved = sqlx::query(
            "UPDATE webhooks SET owner = $1 WHERE owner IN (SELECT value FROM json_each($2))",
        )
        .bind(instance.to_string())
        .bind(&dead)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM dispatcher_instances WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(&dead)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(moved.rows_affected())
    }

    async fn lease_holder(
        &self,
        webhook: Uuid,
        live_since: Millis,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(i.name, i.id) FROM webhooks w JOIN dispatcher_instances i ON i.id = w.owner \
             WHERE w.id = $1 AND i.heartbeat_at >= $2",
        )
        .bind(webhook.to_string())
        .bind(live_since)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn dispatch_state(&self, id: Uuid) -> Result<Option<DispatchState>, StoreError> {
        sqlx::query(
            "SELECT cursor_seq, batch, retry_step, next_attempt_at, status, failure_details, last_success_at \
             FROM webhooks WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| {
            DispatchRow {
                cursor: r.try_get(0)?,
                batch: r.try_get(1)?,
                retry_step: r.try_get(2)?,
                next_attempt_at: r.try_get(3)?,
                status: r.try_get(4)?,
                failure_details: r.try_get(5)?,
                last_success_at: r.try_get(6)?,
            }
            .into_state()
        })
        .transpose()
    }

    async fn record_dispatch(
        &self,
        owner: Uuid,
        writes: &[DispatchWrite],
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.write_transaction().await?;
        let mut applied = Vec::with_capacity(writes.len());
        for write in writes {
            let s = DispatchRow::from_state(&write.state);
            let done = sqlx::query(
                "UPDATE webhooks SET cursor_seq = MAX(cursor_seq, $3), batch = $4, retry_step = $5, \
                 next_attempt_at = $6, status = $7, failure_details = $8, last_success_at = $9 \
                 WHERE id = $1 AND owner = $2",
            )
            .bind(write.webhook_id.to_string())
            .bind(owner.to_string())
            .bind(s.cursor)
            .bind(&s.batch)
            .bind(s.retry_step)
            .bind(s.next_attempt_at)
            .bind(&s.status)
            .bind(&s.failure_details)
            .bind(s.last_success_at)
            .execute(&mut *tx)
            .await?;
            let held = done.rows_affected() == 1;
            applied.push(held);
            let Some(attempt) = write.attempt.as_ref().filter(|_| held) else {
                continue;
            };
            let a = AttemptRow::from_record(attempt);
            sqlx::query(
                "INSERT INTO delivery_attempts (webhook_id, delivery_id, attempt, event_ids, url, request_bytes, \
                 status_code, response_excerpt, error_kind, error, duration_ms, attempted_at, outcome, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(a.webhook_id.to_string())
            .bind(a.delivery_id.to_string())
            .bind(a.attempt)
            .bind(&a.event_ids)
            .bind(&a.url)
            .bind(a.request_bytes)
            .bind(a.status_code)
            .bind(&a.response_excerpt)
            .bind(&a.error_kind)
            .bind(&a.error)
            .bind(a.duration_ms)
            .bind(a.attempted_at)
            .bind(&a.outcome)
            .bind(a.next_attempt_at)
            .execute(&mut *tx)
            .await?;
            let success = i64::from(attempt.outcome == Outcome::Success);
            sqlx::query(
                "INSERT INTO attempt_rollups (webhook_id, minute, bucket, attempts, successes, failures) \
                 VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (webhook_id, minute, bucket) DO UPDATE SET \
                 attempts = attempts + 1, successes = successes + $4, failures = failures + $5",
            )
            .bind(a.webhook_id.to_string())
            .bind(super::minute_of(a.attempted_at))
            .bind(super::duration_bucket(a.duration_ms))
            .bind(success)
            .bind(1 - success)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn advance_cursors(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        position: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhooks SET cursor_seq = $3 \
             WHERE id IN (SELECT value FROM json_each($2)) AND owner = $1 AND batch IS NULL AND cursor_seq < $3",
        )
        .bind(owner.to_string())
        .bind(serde_json::to_string(ids).expect("ids serialize"))
        .bind(position)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_attempts(
        &self,
        webhook: Uuid,
        outcome: Option<Outcome>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let uuid = |r: &SqliteRow, col: &str| -> Result<Uuid, StoreError> {
            let text: String = r.try_get(col)?;
            Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("{col} '{text}': {e}")))
        };
        sqlx::query(
            "SELECT * FROM delivery_attempts WHERE webhook_id = $1 AND ($2 IS NULL OR outcome = $2) \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(webhook.to_string())
        .bind(outcome.map(|o| o.as_str()))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            AttemptRow {
                id: r.try_get("id")?,
                webhook_id: uuid(r, "webhook_id")?,
                delivery_id: uuid(r, "delivery_id")?,
                attempt: r.try_get("attempt")?,
                event_ids: r.try_get("event_ids")?,
                url: r.try_get("url")?,
                request_bytes: r.try_get("request_bytes")?,
                status_code: r.try_get("status_code")?,
                response_excerpt: r.try_get("response_excerpt")?,
                error_kind: r.try_get("error_kind")?,
                error: r.try_get("error")?,
                duration_ms: r.try_get("duration_ms")?,
                attempted_at: r.try_get("attempted_at")?,
                outcome: r.try_get("outcome")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
            }
            .into_record()
        })
        .collect()
    }

    /// One process owns a SQLite file in practice; other processes' changes are found by polling.
    async fn listen(
        &self,
        _events: std::sync::Arc<dyn Fn(i64) + Send + Sync>,
        _webhooks: tokio::sync::mpsc::UnboundedSender<Uuid>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        stop.cancelled().await;
    }

    async fn announce_webhook_change(&self, _id: Uuid) -> Result<(), StoreError> {
        Ok(())
    }
}

fn event_from_row(r: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let id: String = r.try_get(1)?;
    Ok(StoredEvent {
        seq: r.try_get(0)?,
        event_id: Uuid::parse_str(&id)
            .map_err(|e| StoreError::Corrupt(format!("event id '{id}': {e}")))?,
        body: r.try_get(2)?,
    })
}
