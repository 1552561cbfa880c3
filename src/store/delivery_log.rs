//! The delivery log as read: a webhook's delivery state and its attempts, newest first.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;
use crate::domain::delivery::{AttemptRecord, DispatchState, Outcome};

/// What the API and a starting worker read about a webhook's deliveries.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    async fn dispatch_state(&self, id: Uuid) -> Result<Option<DispatchState>, StoreError>;

    /// A webhook's attempts, newest first, below the attempt id `before`.
    async fn list_attempts(
        &self,
        webhook: Uuid,
        outcome: Option<Outcome>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AttemptRecord>, StoreError>;
}
