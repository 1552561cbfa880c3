//! The event log on SQLite: appends as multi-row inserts through the one writer.

use std::collections::HashSet;

use async_trait::async_trait;

use super::{Id, SqliteStore};
use crate::clock::Millis;
use crate::domain::event::NewEvent;
use crate::store::events::first_occurrences;
use crate::store::rows::{EventRow, PagedEventRow};
use crate::store::shared::drop_old_bodies;
use crate::store::{
    Appended, EventLog, EventPage, Pruned, RetentionCuts, StoreError, StoredEvent, minute_of, sql,
};

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

#[async_trait]
impl EventLog for SqliteStore {
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
        let rows = sqlx::query_as::<_, PagedEventRow<Id>>(sql::READ_EVENT_PAGE)
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
        Ok(sqlx::query_as::<_, EventRow<Id>>(
            "SELECT seq, event_id, body FROM events WHERE seq IN (SELECT value FROM json_each($1)) AND body <> '' ORDER BY seq",
        )
        .bind(serde_json::to_string(seqs).expect("numbers serialize"))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(StoredEvent::from)
        .collect())
    }

    #[tracing::instrument(skip_all)]
    async fn prune_step(&self, cuts: &RetentionCuts, limit: u32) -> Result<Pruned, StoreError> {
        let limit = i64::from(limit);
        // One transaction: the writer is the only one, so nothing waits on it for long.
        let mut tx = self.write_transaction().await?;
        let events = sqlx::query(sql::PRUNE_EVENTS)
            .bind(cuts.ids_before)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let attempts = sqlx::query(sql::PRUNE_ATTEMPTS)
            .bind(cuts.attempts_before)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let rollups = sqlx::query(sql::PRUNE_ROLLUPS)
            .bind(minute_of(cuts.attempts_before))
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let bodies = drop_old_bodies!(&mut tx, sql::BODIES_DONE, cuts.bodies_before, limit);
        tx.commit().await?;
        Ok(Pruned {
            bodies,
            events,
            attempts,
            rollups,
        })
    }
}
