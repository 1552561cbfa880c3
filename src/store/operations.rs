//! What operating outhook reads and keeps beside delivery: each webhook's delivery health
//! per minute (written with the attempts, in `record_dispatch`), the web console's
//! sessions, and the log read newest first.

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{StoreError, StoredEvent};
use crate::clock::Millis;

/// Upper bounds (exclusive, in ms) of the duration buckets an attempt is counted in; a
/// duration at or past the last bound falls in one more bucket. Bucket `i` holds the
/// durations below `DURATION_BOUNDS_MS[i]` and at or above the bound before it.
pub const DURATION_BOUNDS_MS: [i64; 18] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000,
    120_000, 300_000,
];

/// The bucket of a duration: how many bounds it reaches (PostgreSQL's `width_bucket` with
/// the same bounds gives the same number).
pub fn duration_bucket(duration_ms: i64) -> i32 {
    DURATION_BOUNDS_MS
        .iter()
        .filter(|bound| duration_ms >= **bound)
        .count() as i32
}

/// The minute an attempt is counted in: its start, in ms.
pub fn minute_of(at: Millis) -> Millis {
    at - at.rem_euclid(60_000)
}

/// A webhook's attempts of one minute whose duration fell in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollup {
    pub minute: Millis,
    pub bucket: i32,
    pub attempts: i64,
    pub successes: i64,
    pub failures: i64,
}

/// A console session as stored: the hash of the cookie's secret, never the secret.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub secret_hash: String,
    pub token_id: Uuid,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// Expired sessions removed at most per sign-in.
const EXPIRED_SESSIONS_STEP: i64 = 100;

#[async_trait]
pub trait OperationsStore {
    /// A webhook's rollups from the minute `since` on (at most 1,440 minutes a day, each
    /// with a row per bucket that saw an attempt).
    async fn attempt_rollups(
        &self,
        webhook: Uuid,
        since: Millis,
    ) -> Result<Vec<Rollup>, StoreError>;

    /// Stores a new session, and removes some expired ones (they are refused anyway).
    async fn insert_session(&self, session: &SessionRecord, now: Millis) -> Result<(), StoreError>;

    /// The hash of the API token a session unexpired at `now` stands for.
    async fn session_token_hash(
        &self,
        secret_hash: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError>;

    /// Ends a session.
    async fn delete_session(&self, secret_hash: &str) -> Result<(), StoreError>;

    /// Events below position `before`, newest first, at most `limit` (bodies dropped by
    /// retention left out).
    async fn events_before(&self, before: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// The event with this eventId, if the log still holds its body.
    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError>;
}

// The statements both backends run as they are (ids bind as UUIDs or as text).
const ROLLUPS_SINCE: &str = "SELECT minute, bucket, attempts, successes, failures FROM attempt_rollups \
             WHERE webhook_id = $1 AND minute >= $2 ORDER BY minute";
const DELETE_EXPIRED_SESSIONS: &str = "DELETE FROM console_sessions WHERE secret_hash IN ( \
               SELECT secret_hash FROM console_sessions WHERE expires_at <= $1 LIMIT $2)";
const INSERT_SESSION: &str = "INSERT INTO console_sessions (secret_hash, token_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)";
const SESSION_TOKEN_HASH: &str = "SELECT t.token_hash FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.secret_hash = $1 AND s.expires_at > $2";
const EVENTS_BEFORE: &str = "SELECT seq, event_id, body FROM events WHERE seq < $1 AND body <> '' \
             ORDER BY seq DESC LIMIT $2";
const EVENT_BY_ID: &str =
    "SELECT seq, event_id, body FROM events WHERE event_id = $1 AND body <> ''";

fn rollup(minute: Millis, bucket: i32, counts: (i64, i64, i64)) -> Rollup {
    Rollup {
        minute,
        bucket,
        attempts: counts.0,
        successes: counts.1,
        failures: counts.2,
    }
}

#[async_trait]
impl OperationsStore for PgStore {
    async fn attempt_rollups(
        &self,
        webhook: Uuid,
        since: Millis,
    ) -> Result<Vec<Rollup>, StoreError> {
        let rows = sqlx::query(ROLLUPS_SINCE)
            .bind(webhook)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(rollup(
                    r.try_get(0)?,
                    r.try_get(1)?,
                    (r.try_get(2)?, r.try_get(3)?, r.try_get(4)?),
                ))
            })
            .collect()
    }

    async fn insert_session(&self, s: &SessionRecord, now: Millis) -> Result<(), StoreError> {
        sqlx::query(DELETE_EXPIRED_SESSIONS)
            .bind(now)
            .bind(EXPIRED_SESSIONS_STEP)
            .execute(&self.pool)
            .await?;
        sqlx::query(INSERT_SESSION)
            .bind(&s.secret_hash)
            .bind(s.token_id)
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session_token_hash(
        &self,
        secret_hash: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(SESSION_TOKEN_HASH)
            .bind(secret_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn delete_session(&self, secret_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE secret_hash = $1")
            .bind(secret_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn events_before(&self, before: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(EVENTS_BEFORE)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    seq: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    body: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(EVENT_BY_ID)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(StoredEvent {
                seq: r.try_get(0)?,
                event_id: r.try_get(1)?,
                body: r.try_get(2)?,
            })
        })
        .transpose()
    }
}

fn sqlite_event(r: &sqlx::sqlite::SqliteRow) -> Result<StoredEvent, StoreError> {
    let id: String = r.try_get(1)?;
    Ok(StoredEvent {
        seq: r.try_get(0)?,
        event_id: Uuid::parse_str(&id)
            .map_err(|e| StoreError::Corrupt(format!("event id '{id}': {e}")))?,
        body: r.try_get(2)?,
    })
}

#[async_trait]
impl OperationsStore for SqliteStore {
    async fn attempt_rollups(
        &self,
        webhook: Uuid,
        since: Millis,
    ) -> Result<Vec<Rollup>, StoreError> {
        let rows = sqlx::query(ROLLUPS_SINCE)
            .bind(webhook.to_string())
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(rollup(
                    r.try_get(0)?,
                    r.try_get(1)?,
                    (r.try_get(2)?, r.try_get(3)?, r.try_get(4)?),
                ))
            })
            .collect()
    }

    async fn insert_session(&self, s: &SessionRecord, now: Millis) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(DELETE_EXPIRED_SESSIONS)
            .bind(now)
            .bind(EXPIRED_SESSIONS_STEP)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_SESSION)
            .bind(&s.secret_hash)
            .bind(s.token_id.to_string())
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_token_hash(
        &self,
        secret_hash: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(SESSION_TOKEN_HASH)
            .bind(secret_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn delete_session(&self, secret_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE secret_hash = $1")
            .bind(secret_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn events_before(&self, before: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(EVENTS_BEFORE)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sqlite_event).collect()
    }

    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(EVENT_BY_ID)
            .bind(event_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sqlite_event).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_the_bounds_reached() {
        assert_eq!(duration_bucket(0), 0);
        assert_eq!(duration_bucket(1), 1);
        assert_eq!(duration_bucket(4), 2);
        assert_eq!(duration_bucket(5), 3);
        assert_eq!(duration_bucket(999), 9);
        assert_eq!(duration_bucket(1_000_000), 18);
        assert_eq!(minute_of(179_999), 120_000);
    }
}
