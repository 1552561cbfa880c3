//! Publishing: validated events go to the log through the group-commit writer.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Result, Service, ServiceError};
use crate::bus::IngestError;
use crate::domain::event::NewEvent;

/// The answer to a publish: sent once the events are committed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The eventId of every event, in the order sent (generated where none was given).
    pub event_ids: Vec<Uuid>,
    /// How many were new and are now in the log.
    pub stored: usize,
    /// How many were already in the log (same eventId): acknowledged, not stored again.
    pub duplicates: usize,
}

impl Service {
    /// Appends the events to the log, all or none; returns once they are committed.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Published> {
        let event_ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let positions = self
            .ingestor
            .publish(events)
            .await
            .map_err(|err| match err {
                IngestError::Store(err) if err.is_unavailable() || err.is_transient() => {
                    ServiceError::Unavailable(
                        "the event log cannot be written right now; retry".into(),
                    )
                }
                IngestError::Store(err) => ServiceError::Internal(anyhow::anyhow!(err)),
                IngestError::Closed => {
                    ServiceError::Unavailable("outhook is shutting down; retry".into())
                }
            })?;
        let stored = positions.iter().filter(|p| p.is_some()).count();
        Ok(Published {
            event_ids,
            stored,
            duplicates: positions.len() - stored,
        })
    }
}
