//! Where each webhook's delivery stands, as the dispatcher writes it.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;
use crate::domain::delivery::{AttemptRecord, DispatchState};

/// The dispatcher's writes: its workers' states and attempts, committed as a group, and idle
/// cursors moved on. The hot path of delivery, tuned per backend.
#[async_trait]
pub trait DeliveryState: Send + Sync {
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
}

/// What a webhook's worker writes: the webhook's new delivery state, and the attempt that
/// led to it (none when the worker only records the batch it is about to send).
#[derive(Debug, Clone)]
pub struct DispatchWrite {
    pub webhook_id: Uuid,
    pub state: DispatchState,
    pub attempt: Option<AttemptRecord>,
}
