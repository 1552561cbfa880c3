//! The PostgreSQL backend: production, and shared by several `outhook serve` instances.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::rows::{AttemptRow, DispatchRow, TokenRow, WebhookRow};
use super::{
    Appended, Cursor, DURATION_BOUNDS_MS, DispatchWrite, EventPage, InstanceRecord, Page, Pruned,
    RetentionCuts, Store, StoreError, StoredEvent, WebhookQuery, bodies_through, first_occurrences,
    migrate, unique_as_conflict,
};
use crate::clock::Millis;
use crate::domain::change::Version;
use crate::domain::delivery::{AttemptRecord, DispatchState, Outcome};
use crate::domain::event::NewEvent;
use crate::domain::token::{Role, Token};
use crate::domain::webhook::Webhook;

/// A pooled connection idle this long is pinged before it is used again.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(10);

pub struct PgStore {
    pub(super) pool: PgPool,
    /// The connections of the two group-commit writers (event appends and the dispatcher's
    /// records): one statement shape each, run thousands of times a second.
    writers: PgPool,
    /// Names this store in its notifications, so that its listener passes over its own:
    /// this instance routes its appends as they commit and applies its webhook changes at
    /// once. (With 10,000 webhooks created, reading each change back kept the instance
    /// busy long after.)
    origin: Uuid,
}

const WEBHOOK_COLUMNS: &str = "id, name, webhook_type, status, enabled, deleted, version, updated_at, \
     updated_by, spec, secret_key, change_description, failure_details, previous_secret, previous_secret_until";

impl PgStore {
    /// Connects and runs pending migrations. A database that does not answer yet (one
    /// starting next to this instance) is waited for, up to [`STARTUP_WAIT`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let started = tokio::time::Instant::now();
        loop {
            match Self::open(&options).await {
                Err(err) if err.is_unavailable() && started.elapsed() < STARTUP_WAIT => {
                    tracing::info!(error = %err, "the database does not answer yet; waiting for it");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                opened => return opened,
            }
        }
    }

    async fn open(options: &PgConnectOptions) -> Result<Self, StoreError> {
        let pool = pool_options(16).connect_with(options.clone()).await?;
        // The writers' statements take arrays, whose length PostgreSQL only knows when it
        // plans for the values at hand. With thousands of webhooks it then found a plan for
        // the values cheaper than the generic one and planned every execution again (a
        // fifth of its CPU in the W4 benchmark). Their generic plans are the right ones
        // whatever the values, so these connections always use them.
        let writers = pool_options(4)
            .connect_with(
                options
                    .clone()
                    .options([("plan_cache_mode", "force_generic_plan")]),
            )
            .await?;
        migrate::run_postgres(&pool).await?;
        Ok(Self {
            pool,
            writers,
            origin: Uuid::new_v4(),
        })
    }
}

/// How long `connect` waits for a database that does not answer yet.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// How long a statement waits for a pooled connection. While the database is unreachable
/// every new connection is refused, and the pool goes on trying until this runs out: it
/// is what a request waits before its 503, and it keeps that answer within a second (it
/// was 10 s, and then a 500). A busy pool hands a connection over in well under a
/// millisecond per waiting statement, so this is only reached when something is wrong.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

/// By default every acquire pings the server first: one more round trip before each
/// statement, which cost the dispatcher's group commit more than its statement did. A
/// connection in steady use is known to be alive; one idle for a while (the server or a
/// proxy may have dropped it) is still checked.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Appends events in one statement, so one round trip and one commit. The head row stays
/// locked until the commit: appends commit in position order. The notification (sent at
/// commit) wakes the other instances' dispatchers.
macro_rules! append_sql {
    ($on_conflict:literal) => {
        concat!(
            "WITH head AS ( \
               UPDATE event_log_head SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq), \
             ins AS ( \
               INSERT INTO events (seq, event_id, event_type, entity_type, created_at, body) \
               SELECT head.last_seq - $1 + x.n, x.e, x.t, x.k, $5, x.b \
               FROM head, UNNEST($2::uuid[], $3::text[], $4::text[], $6::text[]) WITH ORDINALITY AS x(e, t, k, b, n) ",
            $on_conflict,
            " RETURNING seq), \
             notified AS ( \
               SELECT pg_notify('outhook_events', $7 || ' ' || last_seq) FROM head WHERE EXISTS (SELECT 1 FROM ins)) \
             SELECT (SELECT last_seq FROM head), ARRAY(SELECT seq FROM ins), (SELECT COUNT(*) FROM notified)"
        )
    };
}
/// Fails (writing nothing) when an eventId is already in the log.
const APPEND_NEW: &str = append_sql!("");
/// Leaves out the events whose eventId is already in the log.
const APPEND_SKIPPING_KNOWN: &str = append_sql!("ON CONFLICT (event_id) DO NOTHING");

fn webhook_from_row(r: &PgRow) -> Result<Webhook, StoreError> {
    WebhookRow {
        id: r.try_get("id")?,
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

fn token_from_row(r: &PgRow) -> Result<Token, StoreError> {
    TokenRow {
        id: r.try_get("id")?,
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
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
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
        .bind(w.id)
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
        .execute(&self.pool)
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
        .bind(w.id)
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
        .execute(&self.pool)
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
            .bind(id)
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
        const FILTER: &str = "($1::text IS NULL OR ($1 = 'disabled' AND NOT enabled) OR (enabled AND status = $1)) AND ($2::text IS NULL OR webhook_type = $2) \
             AND deleted IN ($3, $4) AND (NOT $5 OR (enabled AND status NOT IN ('active', 'disabled'))) \
             AND ($6::text IS NULL OR strpos(lower(name), lower($6)) > 0)";
        let (order, cursor) = match &q.cursor {
            Some(Cursor::Before(name)) => ("AND name < $7 ORDER BY name DESC", Some(name.as_str())),
            Some(Cursor::After(name)) => ("AND name > $7 ORDER BY name ASC", Some(name.as_str())),
            None => ("AND $7::text IS NULL ORDER BY name ASC", None),
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
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_token(&self, t: &Token) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by, revoked_at, signing_secret) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(t.id)
        .bind(t.name.as_str())
        .bind(t.role.as_str())
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(&t.created_by)
        .bind(t.revoked_at)
        .bind(t.signing_secret.as_ref().map(|s| s.expose()))
        .execute(&self.pool)
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
        .bind(t.id)
        .bind(t.name.as_str())
        .bind(t.role.as_str())
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(&t.created_by)
        .execute(&self.pool)
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
        .bind(id)
        .bind(at)
        .execute(&self.pool)
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
        let ids: Vec<Uuid> = fresh.iter().map(|&i| events[i].event_id).collect();
        let event_types: Vec<&str> = fresh
            .iter()
            .map(|&i| events[i].event_type.as_str())
            .collect();
        let entity_types: Vec<&str> = fresh
            .iter()
            .map(|&i| events[i].entity_type.as_str())
            .collect();
        let bodies: Vec<&str> = fresh.iter().map(|&i| events[i].body.as_str()).collect();
        let append = |sql: &'static str| {
            sqlx::query(sql)
                .bind(fresh.len() as i64)
                .bind(&ids)
                .bind(&event_types)
                .bind(&entity_types)
                .bind(now)
                .bind(&bodies)
                .bind(self.origin.to_string())
                .fetch_one(&self.writers)
        };
        // An eventId already in the log is rare (a producer's retry), and letting the
        // insert skip it (ON CONFLICT) made every insert cost a fifth more. So the append
        // first goes without, and only a batch that meets a known eventId, which then wrote
        // nothing, goes again with it.
        let row = match append(APPEND_NEW).await {
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("events_event_id_key") => {
                append(APPEND_SKIPPING_KNOWN).await?
            }
            other => other?,
        };
        let last: i64 = row.try_get(0)?;
        let inserted: Vec<i64> = row.try_get(1)?;
        let first = last - fresh.len() as i64 + 1;
        let seqs: Vec<i64> = (first..=last).collect();
        let inserted: std::collections::HashSet<i64> = inserted.into_iter().collect();
        let mut positions = vec![None; events.len()];
        for (k, &i) in fresh.iter().enumerate() {
            positions[i] = inserted.contains(&seqs[k]).then_some(seqs[k]);
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
            "SELECT seq, event_id, body FROM events WHERE seq = ANY($1) AND body <> '' ORDER BY seq",
        )
            .bind(seqs)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn prune_step(&self, cuts: &RetentionCuts, limit: u32) -> Result<Pruned, StoreError> {
        let limit = i64::from(limit);
        // Each kind goes oldest first, from the lowest positions (ids): the rows read are
        // bounded by `limit`, whatever the size of the table. (A condition on time alone
        // made PostgreSQL walk the whole table when nothing was old enough.)
        let events = sqlx::query(
            "DELETE FROM events WHERE seq IN ( \
               SELECT seq FROM (SELECT seq, created_at FROM events ORDER BY seq LIMIT $2) oldest \
               WHERE created_at < $1)",
        )
        .bind(cuts.ids_before)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let attempts = sqlx::query(
            "DELETE FROM delivery_attempts WHERE id IN ( \
               SELECT id FROM (SELECT id, attempted_at FROM delivery_attempts ORDER BY id LIMIT $2) oldest \
               WHERE attempted_at < $1)",
        )
        .bind(cuts.attempts_before)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let rollups = sqlx::query(
            "DELETE FROM attempt_rollups WHERE (webhook_id, minute, bucket) IN ( \
               SELECT webhook_id, minute, bucket FROM attempt_rollups WHERE minute < $1 LIMIT $2)",
        )
        .bind(super::minute_of(cuts.attempts_before))
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected();
        // Bodies: the next events after those already done, up to the first one not old
        // enough. The progress row is locked, so instances pruning at once take turns.
        let mut tx = self.pool.begin().await?;
        let through: i64 = sqlx::query_scalar(
            "SELECT bodies_dropped_through FROM log_retention WHERE id = 1 FOR UPDATE",
        )
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
        sqlx::query(
            "INSERT INTO dispatcher_instances (id, heartbeat_at, started_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
        )
        .bind(instance)
        .bind(now)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM dispatcher_instances WHERE heartbeat_at < $1")
            .bind(forget_before)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM dispatcher_instances WHERE heartbeat_at >= $1",
            )
            .bind(live_since)
            .fetch_one(&self.pool)
            .await?,
        )
    }

    async fn claim_webhooks(
        &self,
        instance: Uuid,
        expired_before: Millis,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        // SKIP LOCKED: instances claiming at once each take different rows, nobody waits.
        // Rows this instance already holds are listed without locking: its own worker may
        // be updating one right now, and that must not look like a lost lease.
        Ok(sqlx::query_scalar(
            "WITH claimed AS ( \
               UPDATE webhooks SET owner = $1 WHERE id IN ( \
                 SELECT w.id FROM webhooks w LEFT JOIN dispatcher_instances i ON i.id = w.owner \
                 WHERE w.enabled AND NOT w.deleted AND w.owner IS DISTINCT FROM $1 \
                   AND (w.owner IS NULL OR i.id IS NULL OR i.heartbeat_at < $2) \
                 ORDER BY w.id LIMIT $3 \
                 FOR UPDATE OF w SKIP LOCKED) \
               RETURNING id) \
             SELECT id FROM webhooks WHERE owner = $1 AND enabled AND NOT deleted \
             UNION ALL SELECT id FROM claimed",
        )
        .bind(instance)
        .bind(expired_before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn release_webhooks(&self, instance: Uuid, ids: &[Uuid]) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhooks SET owner = NULL WHERE owner = $1 AND id = ANY($2)")
            .bind(instance)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn remove_instance(&self, instance: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE webhooks SET owner = NULL WHERE owner = $1")
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM dispatcher_instances WHERE id = $1")
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn register_instance(&self, i: &InstanceRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dispatcher_instances (id, heartbeat_at, started_at, name, host, pid, pid_namespace, process_started) \
             VALUES ($1, $2, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, name = EXCLUDED.name, \
             host = EXCLUDED.host, pid = EXCLUDED.pid, pid_namespace = EXCLUDED.pid_namespace, \
             process_started = EXCLUDED.process_started",
        )
        .bind(i.id)
        .bind(i.heartbeat_at)
        .bind(&i.name)
        .bind(&i.host)
        .bind(i.pid)
        .bind(&i.pid_namespace)
        .bind(i.process_started)
        .execute(&self.pool)
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
                id: r.try_get(0)?,
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
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query("UPDATE webhooks SET owner = $1 WHERE owner = ANY($2)")
            .bind(instance)
            .bind(dead)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM dispatcher_instances WHERE id = ANY($1)")
            .bind(dead)
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
            "SELECT COALESCE(i.name, i.id::text) FROM webhooks w JOIN dispatcher_instances i ON i.id = w.owner \
             WHERE w.id = $1 AND i.heartbeat_at >= $2",
        )
        .bind(webhook)
        .bind(live_since)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn dispatch_state(&self, id: Uuid) -> Result<Option<DispatchState>, StoreError> {
        sqlx::query(
            "SELECT cursor_seq, batch, retry_step, next_attempt_at, status, failure_details, last_success_at \
             FROM webhooks WHERE id = $1",
        )
        .bind(id)
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
        let ids: Vec<Uuid> = writes.iter().map(|w| w.webhook_id).collect();
        let states: Vec<DispatchRow> = writes
            .iter()
            .map(|w| DispatchRow::from_state(&w.state))
            .collect();
        let attempts: Vec<AttemptRow> = writes
            .iter()
            .filter_map(|w| w.attempt.as_ref().map(AttemptRow::from_record))
            .collect();
        fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        // One statement: one round trip and one commit for every worker's write. An
        // attempt is recorded only if its state update found the lease still held. The
        // owner test is written so that no index serves it: with `owner = $1` the planner
        // intersected the owner index (every webhook this instance holds, 10,000 in the W4
        // benchmark) with the id lookup, on every commit.
        let moved: Vec<Uuid> = sqlx::query_scalar(
            "WITH input AS ( \
               SELECT * FROM UNNEST($2::uuid[], $3::bigint[], $4::text[], $5::int[], $6::bigint[], \
                 $7::text[], $8::text[], $9::bigint[]) \
               AS x(id, cursor_seq, batch, retry_step, next_attempt_at, status, failure_details, last_success_at)), \
             moved AS ( \
               UPDATE webhooks w SET cursor_seq = GREATEST(w.cursor_seq, i.cursor_seq), batch = i.batch, \
                 retry_step = i.retry_step, next_attempt_at = i.next_attempt_at, status = i.status, \
                 failure_details = i.failure_details, last_success_at = i.last_success_at \
               FROM input i WHERE w.id = i.id AND w.id = ANY($2) AND w.owner IS NOT DISTINCT FROM $1 RETURNING w.id), \
             recorded AS ( \
               INSERT INTO delivery_attempts (webhook_id, delivery_id, attempt, event_ids, url, request_bytes, \
                 status_code, response_excerpt, error_kind, error, duration_ms, attempted_at, outcome, next_attempt_at) \
               SELECT * FROM UNNEST($10::uuid[], $11::uuid[], $12::int[], $13::text[], $14::text[], $15::bigint[], \
                 $16::int[], $17::text[], $18::text[], $19::text[], $20::bigint[], $21::bigint[], $22::text[], $23::bigint[]) \
               AS a(webhook_id) WHERE a.webhook_id IN (SELECT id FROM moved)), \
             rolled AS ( \
               INSERT INTO attempt_rollups (webhook_id, minute, bucket, attempts, successes, failures) \
               SELECT a.webhook_id, a.attempted_at - a.attempted_at % 60000, width_bucket(a.duration_ms, $24::bigint[]), \
                 COUNT(*), COUNT(*) FILTER (WHERE a.outcome = 'success'), COUNT(*) FILTER (WHERE a.outcome <> 'success') \
               FROM UNNEST($10::uuid[], $20::bigint[], $21::bigint[], $22::text[]) AS a(webhook_id, duration_ms, attempted_at, outcome) \
               WHERE a.webhook_id IN (SELECT id FROM moved) GROUP BY 1, 2, 3 \
               ON CONFLICT (webhook_id, minute, bucket) DO UPDATE SET attempts = attempt_rollups.attempts + EXCLUDED.attempts, \
                 successes = attempt_rollups.successes + EXCLUDED.successes, failures = attempt_rollups.failures + EXCLUDED.failures) \
             SELECT id FROM moved",
        )
        .bind(owner)
        .bind(&ids)
        .bind(column(&states, |s| s.cursor))
        .bind(column(&states, |s| s.batch.clone()))
        .bind(column(&states, |s| s.retry_step))
        .bind(column(&states, |s| s.next_attempt_at))
        .bind(column(&states, |s| s.status.clone()))
        .bind(column(&states, |s| s.failure_details.clone()))
        .bind(column(&states, |s| s.last_success_at))
        .bind(column(&attempts, |a| a.webhook_id))
        .bind(column(&attempts, |a| a.delivery_id))
        .bind(column(&attempts, |a| a.attempt))
        .bind(column(&attempts, |a| a.event_ids.clone()))
        .bind(column(&attempts, |a| a.url.clone()))
        .bind(column(&attempts, |a| a.request_bytes))
        .bind(column(&attempts, |a| a.status_code))
        .bind(column(&attempts, |a| a.response_excerpt.clone()))
        .bind(column(&attempts, |a| a.error_kind.clone()))
        .bind(column(&attempts, |a| a.error.clone()))
        .bind(column(&attempts, |a| a.duration_ms))
        .bind(column(&attempts, |a| a.attempted_at))
        .bind(column(&attempts, |a| a.outcome.clone()))
        .bind(column(&attempts, |a| a.next_attempt_at))
        .bind(&DURATION_BOUNDS_MS[..])
        .fetch_all(&self.writers)
        .await?;
        Ok(ids.iter().map(|id| moved.contains(id)).collect())
    }

    async fn advance_cursors(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        position: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhooks SET cursor_seq = $3 \
             WHERE id = ANY($2) AND owner IS NOT DISTINCT FROM $1 AND batch IS NULL AND cursor_seq < $3",
        )
        .bind(owner)
        .bind(ids)
        .bind(position)
        .execute(&self.pool)
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
        sqlx::query(
            "SELECT * FROM delivery_attempts WHERE webhook_id = $1 AND ($2::text IS NULL OR outcome = $2) \
             AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(webhook)
        .bind(outcome.map(|o| o.as_str()))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            AttemptRow {
                id: r.try_get("id")?,
                webhook_id: r.try_get("webhook_id")?,
                delivery_id: r.try_get("delivery_id")?,
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

    async fn listen(
        &self,
        events: Arc<dyn Fn(i64) + Send + Sync>,
        webhooks: tokio::sync::mpsc::UnboundedSender<Uuid>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        while !stop.is_cancelled() {
            let connected = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
                listener
                    .listen_all(["outhook_events", "outhook_webhooks"])
                    .await?;
                // Anything committed while we were not listening is found by the next read.
                events(i64::MAX);
                let me = self.origin.to_string();
                loop {
                    let note = listener.recv().await?;
                    // "<origin> <log head>" or "<origin> <webhook id>".
                    let Some((origin, what)) = note.payload().split_once(' ') else {
                        continue;
                    };
                    if origin == me {
                        continue;
                    }
                    match note.channel() {
                        "outhook_events" => events(what.parse().unwrap_or(i64::MAX)),
                        _ => {
                            if let Ok(id) = Uuid::parse_str(what) {
                                let _ = webhooks.send(id);
                            }
                        }
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                result = connected => {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "LISTEN connection lost; polling until it is back");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                _ = stop.cancelled() => {}
            }
        }
    }

    async fn announce_webhook_change(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify('outhook_webhooks', $1)")
            .bind(format!("{} {id}", self.origin))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn event_from_row(r: &PgRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        seq: r.try_get(0)?,
        event_id: r.try_get(1)?,
        body: r.try_get(2)?,
    })
}
