//! The application layer: what outhook does when someone asks (the HTTP API today, a web
//! console next), each action one function. A changing action loads what it changes,
//! applies the domain's transition, writes it under the version it read and tells the
//! dispatcher; callers parse their input before and render the answer after, and never
//! reach the store or the dispatcher themselves.
//!
//! - `webhooks`: the webhook lifecycle (create, create-or-update, patch, delete, restore,
//!   resume, rotate the secret) and reads;
//! - `patch`: a JSON Patch on the webhook as read, turned into the next spec;
//! - `deliveries`: the delivery log, the delivery status, test sends, metrics;
//! - `tokens`: who is calling (bearer tokens, remembered for a moment), issue and revoke;
//! - `events`: publishing events to the log, and reading it back newest first;
//! - `health`: delivery health over the last hour and day;
//! - `sessions`: web console sessions, standing for an API token.

mod deliveries;
mod error;
mod events;
mod health;
mod patch;
mod sessions;
mod tokens;
mod webhooks;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bus::Ingestor;
use crate::clock::Clock;
use crate::dispatch::Dispatcher;
use crate::store::Store;
pub use crate::store::{Cursor, Include, Page, WebhookQuery};
pub use deliveries::{AttemptPage, DeliveryStatus, InFlight, TestOutcome};
pub use error::ServiceError;
pub use events::{EventSearch, EventsPage, FoundEvent, Published};
pub use health::{ChartPoint, DeliveryHealth, HealthReport, HealthWindow};
pub use sessions::{SESSION_TTL_MS, SignedIn, csrf_token};
pub use tokens::{Caller, IssuedToken};
pub use webhooks::{Rotated, Rotation, Saved, parse_webhook_spec};

/// What an action gives: its answer, or why it was refused or failed.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The application: every action the API (and later the console) offers.
pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dispatcher: Arc<Dispatcher>,
    ingestor: Ingestor,
    /// Live tokens recently looked up.
    tokens: tokens::TokenCache,
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        dispatcher: Arc<Dispatcher>,
        ingestor: Ingestor,
    ) -> Self {
        Self {
            store,
            clock,
            dispatcher,
            ingestor,
            tokens: Default::default(),
        }
    }

    /// Succeeds when the database answers.
    pub async fn ping(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }
}

/// Deserializes a JSON document into a checked type; the error names the field's path
/// (`body` for the document itself).
pub fn parse<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        ServiceError::Invalid {
            field: field_name(&path, &message),
            message,
        }
    })
}

/// The field a deserialization error names; `body` for the document itself.
fn field_name(path: &str, message: &str) -> String {
    let field = crate::domain::error_field(path, message);
    if field.is_empty() {
        "body".to_owned()
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::field_name;

    #[test]
    fn names_missing_and_unknown_fields() {
        assert_eq!(field_name(".", "missing field `name`"), "name");
        assert_eq!(
            field_name("webhookConfig", "unknown field `x`, expected one of"),
            "webhookConfig.x"
        );
        assert_eq!(
            field_name("batchSize", "must be between 1 and 1000"),
            "batchSize"
        );
    }
}
