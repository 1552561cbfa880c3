//! ChangeEvents (SPEC §4): validated on ingest, stored as normalized JSON, and read back as
//! the [`EventFacts`] filters look at.

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::text::{Text, check_text};
use super::{checked_string, str_enum};
use crate::clock::Millis;

str_enum! {
    /// The lifecycle events a filter can select. `entityRestored` extends the seed's enum,
    /// since the SPEC lists it among the events.
    pub enum EventType {
        EntityCreated => "entityCreated", EntityUpdated => "entityUpdated",
        EntitySoftDeleted => "entitySoftDeleted", EntityDeleted => "entityDeleted",
        EntityRestored => "entityRestored",
    }
}

checked_string!(
    /// An entity type named in a filter (`table`, `testCase`, …) or `*` for all of them.
    EntityTypeName schema(min 1, max 64, pattern r"^(\*|[A-Za-z0-9_]+)$"),
    |v| {
        if v == "*" {
            return Ok(());
        }
        check_text(v, 1, 64, false)?;
        if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("'{v}' is not an entity type (letters, digits and '_', or '*')"));
        }
        Ok(())
    }
);

impl EntityTypeName {
    /// `*`: every entity type.
    pub fn all() -> Self {
        Self("*".into())
    }
}

/// The largest accepted event, serialized.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Timestamps are milliseconds; anything past year 9999 is a mistake (likely nanoseconds).
const MAX_TIMESTAMP: i64 = 253_402_300_799_999;

/// The shape a producer sends: OpenMetadata's ChangeEvent. `entity` is open (entities have
/// many fields); the envelope is closed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // fields are read for validation; the stored body is the JSON itself
struct EventInput {
    #[serde(alias = "id")]
    event_id: Option<Uuid>,
    event_type: EventType,
    timestamp: Option<i64>,
    entity_type: Option<EntityTypeName>,
    entity_id: Option<Uuid>,
    entity_fully_qualified_name: Option<Text<1024>>,
    user_name: Option<Text<256>>,
    change_description: Option<ChangeInput>,
    entity: EntityInput,
    previous_version: Option<f64>,
    current_version: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct EntityInput {
    id: Uuid,
    #[serde(rename = "type")]
    kind: EntityTypeName,
    name: Option<Text<256>>,
    fully_qualified_name: Option<Text<1024>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct ChangeInput {
    #[serde(default)]
    fields_added: Vec<FieldChangeInput>,
    #[serde(default)]
    fields_updated: Vec<FieldChangeInput>,
    #[serde(default)]
    fields_deleted: Vec<FieldChangeInput>,
    previous_version: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct FieldChangeInput {
    name: FieldName,
    old_value: Option<Value>,
    new_value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(try_from = "String")]
struct FieldName(#[allow(dead_code)] String);

impl TryFrom<String> for FieldName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        check_text(&value, 1, 512, false)?;
        Ok(Self(value))
    }
}

/// A validated event, ready to append to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub entity_type: String,
    pub timestamp: Millis,
    /// The producer's JSON with `eventId`, `timestamp`, `entityType` and `entityId` filled in.
    pub body: String,
}

/// One invalid field of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventError {
    pub field: String,
    pub message: String,
}

impl NewEvent {
    /// Validates one event; `now` fills a missing timestamp, a new UUID a missing eventId.
    pub fn parse(mut value: Value, now: Millis) -> Result<Self, EventError> {
        let err = |field: &str, message: String| EventError {
            field: field.into(),
            message,
        };
        if !value.is_object() {
            return Err(err("", "an event is a JSON object".into()));
        }
        let input: EventInput = serde_path_to_error::deserialize(&value).map_err(|e| {
            let message = e.inner().to_string();
            EventError {
                field: super::error_field(&e.path().to_string(), &message),
                message,
            }
        })?;
        let timestamp = input.timestamp.unwrap_or(now);
        if !(1..=MAX_TIMESTAMP).contains(&timestamp) {
            return Err(err(
                "timestamp",
                format!("must be milliseconds since the epoch (got {timestamp})"),
            ));
        }
        let entity_type = input.entity.kind.as_str().to_owned();
        if entity_type == "*" {
            return Err(err("entity.type", "'*' is not an entity type".into()));
        }
        if input
            .entity_type
            .as_ref()
            .is_some_and(|t| t.as_str() != entity_type)
        {
            return Err(err("entityType", "does not match entity.type".into()));
        }
        if input.entity_id.is_some_and(|id| id != input.entity.id) {
            return Err(err("entityId", "does not match entity.id".into()));
        }
        let event_id = input.event_id.unwrap_or_else(Uuid::new_v4);
        let object = value.as_object_mut().expect("checked above");
        object.remove("id");
        object.insert("eventId".into(), Value::String(event_id.to_string()));
        object.insert("timestamp".into(), Value::from(timestamp));
        object.insert("entityType".into(), Value::String(entity_type.clone()));
        object.insert(
            "entityId".into(),
            Value::String(input.entity.id.to_string()),
        );
        if let Some(fqn) = &input.entity.fully_qualified_name {
            object
                .entry("entityFullyQualifiedName")
                .or_insert_with(|| Value::String(fqn.as_str().to_owned()));
        }
        let body = serde_json::to_string(&value).expect("a JSON value serializes");
        if body.len() > MAX_EVENT_BYTES {
            return Err(err(
                "",
                format!(
                    "an event may be at most {MAX_EVENT_BYTES} bytes (got {})",
                    body.len()
                ),
            ));
        }
        Ok(Self {
            event_id,
            event_type: input.event_type,
            entity_type,
            timestamp,
            body,
        })
    }
}

/// What filters look at in an event, read once from its stored body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFacts {
    pub event_type: Option<EventType>,
    pub entity_type: String,
    pub entity_id: Option<Uuid>,
    pub fqn: Option<String>,
    pub user_name: Option<String>,
    /// Names from fieldsAdded, fieldsUpdated and fieldsDeleted.
    pub changed_fields: Vec<String>,
    /// Names and fully qualified names of the entity's domain(s).
    pub domains: Vec<String>,
    /// Names and fully qualified names of the entity's owner(s).
    pub owners: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactsInput {
    event_type: Option<EventType>,
    user_name: Option<String>,
    change_description: Option<FactsChange>,
    entity: Option<FactsEntity>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FactsChange {
    #[serde(default)]
    fields_added: Vec<FactsField>,
    #[serde(default)]
    fields_updated: Vec<FactsField>,
    #[serde(default)]
    fields_deleted: Vec<FactsField>,
}

#[derive(Deserialize)]
struct FactsField {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FactsEntity {
    id: Option<Uuid>,
    #[serde(rename = "type")]
    kind: Option<String>,
    fully_qualified_name: Option<String>,
    updated_by: Option<String>,
    domain: Option<Value>,
    domains: Option<Value>,
    owner: Option<Value>,
    owners: Option<Value>,
    tags: Option<Value>,
}

impl EventFacts {
    /// Reads the facts of a stored event body. Bodies were validated on ingest, so a body
    /// that does not parse yields empty facts (it matches only filters that need nothing).
    pub fn from_body(body: &str) -> Self {
        let Ok(input) = serde_json::from_str::<FactsInput>(body) else {
            return Self::default();
        };
        let entity = input.entity.unwrap_or_default();
        let change = input.change_description.unwrap_or_default();
        let changed_fields = change
            .fields_added
            .into_iter()
            .chain(change.fields_updated)
            .chain(change.fields_deleted)
            .map(|f| f.name)
            .collect();
        let mut domains = Vec::new();
        references(entity.domain.as_ref(), &mut domains);
        references(entity.domains.as_ref(), &mut domains);
        let mut owners = Vec::new();
        references(entity.owner.as_ref(), &mut owners);
        references(entity.owners.as_ref(), &mut owners);
        let tags = entity
            .tags
            .as_ref()
            .and_then(Value::as_array)
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.get("tagFQN").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            event_type: input.event_type,
            entity_type: entity.kind.unwrap_or_default(),
            entity_id: entity.id,
            fqn: entity.fully_qualified_name,
            user_name: input.user_name.or(entity.updated_by),
            changed_fields,
            domains,
            owners,
            tags,
        }
    }
}

/// Collects `name` and `fullyQualifiedName` of one entity reference or a list of them.
fn references(value: Option<&Value>, into: &mut Vec<String>) {
    let mut one = |r: &Value| {
        for key in ["name", "fullyQualifiedName"] {
            if let Some(s) = r.get(key).and_then(Value::as_str)
                && !into.iter().any(|v| v == s)
            {
                into.push(s.to_owned());
            }
        }
    };
    match value {
        Some(Value::Array(items)) => items.iter().for_each(&mut one),
        Some(r @ Value::Object(_)) => one(r),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_event() -> Value {
        json!({
            "eventId": "123e4567-e89b-12d3-a456-426614174000",
            "eventType": "entityUpdated",
            "timestamp": 1705320000000i64,
            "entity": {
                "id": "456e7890-e89b-12d3-a456-426614174111",
                "type": "table",
                "name": "customers",
                "fullyQualifiedName": "snowflake_prod.sales.public.customers",
                "description": "Customer information table",
                "owner": {"type": "user", "name": "john.doe"},
                "tags": [{"tagFQN": "PII.Sensitive"}],
                "domain": {"type": "domain", "name": "Sales"}
            },
            "changeDescription": {
                "fieldsAdded": [],
                "fieldsUpdated": [{"name": "tags", "oldValue": [], "newValue": [{"tagFQN": "PII.Sensitive"}]}],
                "fieldsDeleted": []
            },
            "userName": "bob"
        })
    }

    #[test]
    fn the_seed_payload_is_accepted_and_normalized() {
        let event = NewEvent::parse(seed_event(), 5).unwrap();
        assert_eq!(
            event.event_id.to_string(),
            "123e4567-e89b-12d3-a456-426614174000"
        );
        assert_eq!(
            (event.entity_type.as_str(), event.timestamp),
            ("table", 1705320000000)
        );
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["entityId"], "456e7890-e89b-12d3-a456-426614174111");
        assert_eq!(
            body["entityFullyQualifiedName"],
            "snowflake_prod.sales.public.customers"
        );
        assert_eq!(body["entity"]["description"], "Customer information table");
    }

    #[test]
    fn missing_ids_and_timestamps_are_filled() {
        let mut v = seed_event();
        v.as_object_mut().unwrap().remove("eventId");
        v.as_object_mut().unwrap().remove("timestamp");
        let event = NewEvent::parse(v, 42).unwrap();
        assert_eq!(event.timestamp, 42);
        assert!(event.body.contains(&event.event_id.to_string()));
    }

    #[test]
    fn bad_events_name_the_field() {
        let cases = [
            ("/eventType", json!("entityExploded"), "eventType"),
            ("/eventId", json!("nope"), "eventId"),
            ("/timestamp", json!(-1), "timestamp"),
            ("/timestamp", json!("yesterday"), "timestamp"),
            ("/entity/id", json!(7), "entity.id"),
            ("/entity/type", json!("no spaces allowed"), "entity.type"),
            ("/entityType", json!("dashboard"), "entityType"),
            ("/webhookName", json!("x"), "webhookName"),
            (
                "/changeDescription/fieldsUpdated",
                json!([{"name": ""}]),
                "changeDescription.fieldsUpdated[0].name",
            ),
        ];
        for (pointer, value, field) in cases {
            let mut v = seed_event();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut v
            } else {
                v.pointer_mut(parent).unwrap()
            };
            target[key] = value;
            let e = NewEvent::parse(v, 1).expect_err(pointer);
            assert_eq!(e.field, field, "{pointer}: {e:?}");
        }
        let mut v = seed_event();
        v.as_object_mut().unwrap().remove("entity");
        assert_eq!(NewEvent::parse(v, 1).unwrap_err().field, "entity");
        let mut v = seed_event();
        v["entity"]["blob"] = json!("x".repeat(MAX_EVENT_BYTES));
        assert!(NewEvent::parse(v, 1).is_err());
    }

    #[test]
    fn facts_come_from_the_body() {
        let facts = EventFacts::from_body(&NewEvent::parse(seed_event(), 1).unwrap().body);
        assert_eq!(facts.event_type, Some(EventType::EntityUpdated));
        assert_eq!(facts.entity_type, "table");
        assert_eq!(facts.changed_fields, ["tags"]);
        assert_eq!(facts.owners, ["john.doe"]);
        assert_eq!(facts.domains, ["Sales"]);
        assert_eq!(facts.tags, ["PII.Sensitive"]);
        assert_eq!(facts.user_name.as_deref(), Some("bob"));
        assert_eq!(
            facts.fqn.as_deref(),
            Some("snowflake_prod.sales.public.customers")
        );
    }
}
