//! The test message a webhook can be sent on request.

use serde_json::{Map, json};

use crate::dispatch::event::LogEvent;

/// A test message for a webhook: one synthetic event about the webhook itself.
pub fn test_event(webhook_id: uuid::Uuid, name: &str, by: &str, now: i64) -> LogEvent {
    let event_id = uuid::Uuid::new_v4();
    let mut entity = Map::new();
    entity.insert("id".into(), json!(webhook_id));
    entity.insert("type".into(), json!("webhook"));
    entity.insert("name".into(), json!(name));
    entity.insert("fullyQualifiedName".into(), json!(name));
    entity.insert(
        "description".into(),
        json!("A test message from outhook: if you can read this, delivery works."),
    );
    let body = json!({
        "eventId": event_id,
        "eventType": "entityUpdated",
        "timestamp": now,
        "entityType": "webhook",
        "entityId": webhook_id,
        "entityFullyQualifiedName": name,
        "userName": by,
        "entity": entity,
        "changeDescription": {"fieldsAdded": [], "fieldsUpdated": [
            {"name": "description", "oldValue": "", "newValue": "Testing delivery"}
        ], "fieldsDeleted": []}
    });
    LogEvent::new(0, event_id, body.to_string())
}
