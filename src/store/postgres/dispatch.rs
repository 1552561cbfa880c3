//! The dispatcher's tables on PostgreSQL: instances, leases, and the workers' group commits,
//! shared by several instances.

use async_trait::async_trait;
use uuid::Uuid;

use super::PgStore;
use crate::clock::Millis;
use crate::store::rows::{AttemptRow, DispatchRow, InstanceRow, bind_instance};
use crate::store::{
    DURATION_BOUNDS_MS, DeliveryState, DispatchWrite, InstanceRecord, Leases, StoreError, sql,
};

#[async_trait]
impl Leases for PgStore {
    #[tracing::instrument(skip_all)]
    async fn heartbeat(
        &self,
        instance: Uuid,
        now: Millis,
        live_since: Millis,
        forget_before: Millis,
    ) -> Result<i64, StoreError> {
        sqlx::query(sql::HEARTBEAT)
            .bind(instance)
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(sql::FORGET_INSTANCES)
            .bind(forget_before)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar(sql::COUNT_LIVE_INSTANCES)
            .bind(live_since)
            .fetch_one(&self.pool)
            .await?)
    }

    #[tracing::instrument(skip_all)]
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
        sqlx::query(sql::RELEASE_ALL)
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::DELETE_INSTANCE)
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn register_instance(&self, i: &InstanceRecord) -> Result<(), StoreError> {
        bind_instance!(sqlx::query(sql::REGISTER_INSTANCE), i, Uuid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(sqlx::query_as::<_, InstanceRow>(sql::INSTANCES)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(InstanceRecord::from)
            .collect())
    }

    #[tracing::instrument(skip_all, fields(dead = dead.len()))]
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
        Ok(sqlx::query_scalar(sql::LEASE_HOLDER)
            .bind(webhook)
            .bind(live_since)
            .fetch_optional(&self.pool)
            .await?)
    }
}

#[async_trait]
impl DeliveryState for PgStore {
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
}
