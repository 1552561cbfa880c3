//! The event log on PostgreSQL: an append is one statement, its positions taken from the
//! locked head row, so that appends commit in position order.

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::PgStore;
use crate::clock::Millis;
use crate::domain::event::NewEvent;
use crate::store::events::first_occurrences;
use crate::store::rows::{EventRow, PagedEventRow};
use crate::store::shared::drop_old_bodies;
use crate::store::{
    Appended, EventLog, EventPage, Pruned, RetentionCuts, StoreError, StoredEvent, minute_of, sql,
};

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

#[async_trait]
impl EventLog for PgStore {
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
        Ok(sqlx::query_scalar(sql::LOG_HEAD)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn read_event_page(
        &self,
        after: i64,
        up_to: i64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<EventPage, StoreError> {
        let rows = sqlx::query_as::<_, PagedEventRow>(sql::READ_EVENT_PAGE)
            .bind(after)
            .bind(up_to)
            .bind(i64::from(limit))
            .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (StoredEvent::from(r.event), r.total))
            .collect();
        Ok(EventPage::assemble(rows, limit, max_bytes))
    }

    async fn events_at(&self, seqs: &[i64]) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT seq, event_id, body FROM events WHERE seq = ANY($1) AND body <> '' ORDER BY seq",
        )
        .bind(seqs)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(StoredEvent::from)
        .collect())
    }

    #[tracing::instrument(skip_all)]
    async fn prune_step(&self, cuts: &RetentionCuts, limit: u32) -> Result<Pruned, StoreError> {
        let limit = i64::from(limit);
        let events = sqlx::query(sql::PRUNE_EVENTS)
            .bind(cuts.ids_before)
            .bind(limit)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let attempts = sqlx::query(sql::PRUNE_ATTEMPTS)
            .bind(cuts.attempts_before)
            .bind(limit)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let rollups = sqlx::query(sql::PRUNE_ROLLUPS)
            .bind(minute_of(cuts.attempts_before))
            .bind(limit)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let mut tx = self.pool.begin().await?;
        let bodies = drop_old_bodies!(&mut tx, sql::BODIES_DONE_LOCKED, cuts.bodies_before, limit);
        tx.commit().await?;
        Ok(Pruned {
            bodies,
            events,
            attempts,
            rollups,
        })
    }
}
