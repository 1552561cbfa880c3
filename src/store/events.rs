//! The event log: appends in position order, paged reads, and retention in bounded steps.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;
use crate::clock::Millis;
use crate::domain::event::NewEvent;

/// The log of published events.
#[async_trait]
pub trait EventLog: Send + Sync {
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
}

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
    pub(in crate::store) fn assemble(
        rows: Vec<(StoredEvent, i64)>,
        limit: u32,
        max_bytes: u64,
    ) -> Self {
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

/// Given the next events (position, ingest time) in log order after those whose bodies are
/// dropped, the position up to which bodies go now: the events before the first one
/// ingested at or after `before`. None when there is nothing to do.
pub(in crate::store) fn bodies_through(next: &[(i64, Millis)], before: Millis) -> Option<i64> {
    let old = next.iter().take_while(|(_, at)| *at < before).count();
    (old > 0).then(|| next[old - 1].0)
}

/// Indexes of the events whose eventId appears for the first time in the slice.
pub(in crate::store) fn first_occurrences(events: &[NewEvent]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    (0..events.len())
        .filter(|&i| seen.insert(events[i].event_id))
        .collect()
}
