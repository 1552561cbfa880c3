//! The dispatcher's tables on SQLite: instances, leases, and the workers' group commits.
//! One writer at a time: each transaction is atomic without row locks.

use async_trait::async_trait;
use uuid::Uuid;

use super::{Id, SqliteStore};
use crate::clock::Millis;
use crate::domain::delivery::Outcome;
use crate::store::rows::{AttemptRow, DispatchRow, InstanceRow, bind_instance};
use crate::store::{
    DeliveryState, DispatchWrite, InstanceRecord, Leases, StoreError, duration_bucket, minute_of,
    sql,
};

#[async_trait]
impl Leases for SqliteStore {
    #[tracing::instrument(skip_all)]
    async fn heartbeat(
        &self,
        instance: Uuid,
        now: Millis,
        live_since: Millis,
        forget_before: Millis,
    ) -> Result<i64, StoreError> {
        let mut tx = self.write_transaction().await?;
        sqlx::query(sql::HEARTBEAT)
            .bind(Id::from(instance))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::FORGET_INSTANCES)
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        let live = sqlx::query_scalar(sql::COUNT_LIVE_INSTANCES)
            .bind(live_since)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(live)
    }

    #[tracing::instrument(skip_all)]
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
        let ids: Vec<Id> = sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE owner = $1 AND enabled AND NOT deleted",
        )
        .bind(instance.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids.into_iter().map(Uuid::from).collect())
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
        sqlx::query(sql::RELEASE_ALL)
            .bind(Id::from(instance))
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::DELETE_INSTANCE)
            .bind(Id::from(instance))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn register_instance(&self, i: &InstanceRecord) -> Result<(), StoreError> {
        bind_instance!(sqlx::query(sql::REGISTER_INSTANCE), i, Id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(sqlx::query_as::<_, InstanceRow<Id>>(sql::INSTANCES)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(InstanceRecord::from)
            .collect())
    }

    #[tracing::instrument(skip_all, fields(dead = dead.len()))]
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
        Ok(sqlx::query_scalar(sql::LEASE_HOLDER)
            .bind(Id::from(webhook))
            .bind(live_since)
            .fetch_optional(&self.pool)
            .await?)
    }
}

#[async_trait]
impl DeliveryState for SqliteStore {
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
            let a = AttemptRow::<Id>::from_record(attempt);
            sqlx::query(
                "INSERT INTO delivery_attempts (webhook_id, delivery_id, attempt, event_ids, url, request_bytes, \
                 status_code, response_excerpt, error_kind, error, duration_ms, attempted_at, outcome, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(a.webhook_id)
            .bind(a.delivery_id)
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
            .bind(attempt.webhook_id.to_string())
            .bind(minute_of(attempt.attempted_at))
            .bind(duration_bucket(attempt.duration_ms))
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
}
