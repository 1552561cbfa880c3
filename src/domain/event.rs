//! ChangeEvents (SPEC §4): validated on ingest, stored as normalized JSON, and read back as
//! the [`EventFacts`] filters look at.

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::text::{Text, check_text};
use super::{checked_string, str_enum};
use crate::clock::Millis;

str_enum! {
    /// OpenMetadata's event types (its `changeEventType.json`): an entity's lifecycle, the
    /// conversation threads and tasks about it, test cases added to a logical test suite,
    /// and suggestions made on it.
    pub enum EventType {
        EntityCreated => "entityCreated", EntityUpdated => "entityUpdated",
        EntityFieldsChanged => "entityFieldsChanged", EntityNoChange => "entityNoChange",
        EntitySoftDeleted => "entitySoftDeleted", EntityDeleted => "entityDeleted",
        EntityRestored => "entityRestored",
        ThreadCreated => "threadCreated", ThreadUpdated => "threadUpdated",
        PostCreated => "postCreated", PostUpdated => "postUpdated",
        TaskResolved => "taskResolved", TaskClosed => "taskClosed",
        LogicalTestCaseAdded => "logicalTestCaseAdded",
        SuggestionCreated => "suggestionCreated", SuggestionUpdated => "suggestionUpdated",
        SuggestionAccepted => "suggestionAccepted", SuggestionRejected => "suggestionRejected",
        SuggestionDeleted => "suggestionDeleted",
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

/// Entity types whose entity has a `type` field of its own meaning (a thread's kind,
/// `Conversation` or `Task`; a suggestion's, `SuggestDescription`): for them `entity.type`
/// is not compared with `entityType`.
const OWN_TYPE_FIELD: [&str; 2] = ["thread", "suggestion"];

/// The shape a producer sends: OpenMetadata's ChangeEvent (its `changeEvent.json`, every
/// field). `entity` is open (entities have many fields); the envelope is closed.
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
    /// The ids of the domains the entity belongs to.
    domains: Option<Vec<Uuid>>,
    entity_fully_qualified_name: Option<Text<1024>>,
    user_name: Option<Text<256>>,
    /// The bot that acted on the user's behalf.
    impersonated_by: Option<Text<256>>,
    change_description: Option<ChangeInput>,
    /// The change this event alone made (`changeDescription` may sum up several).
    incremental_change_description: Option<ChangeInput>,
    /// An object, or (as OpenMetadata stores and sends it) a string holding one; read by
    /// [`entity_object`].
    entity: Option<Value>,
    previous_version: Option<f64>,
    current_version: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct EntityInput {
    id: Uuid,
    /// The entity type for most entities; a thread's or suggestion's kind for those.
    #[serde(rename = "type")]
    kind: Option<Value>,
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
    /// Who changed which field and how (OpenMetadata's `changeSummaryMap`).
    change_summary: Option<Map<String, Value>>,
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
    ///
    /// The stored body is the event as sent with `eventId` (for `id`), `timestamp`,
    /// `entityType`, `entityId` and `entityFullyQualifiedName` filled in, and `entity` as an
    /// object when it came as a string holding one.
    pub fn parse(mut value: Value, now: Millis) -> Result<Self, EventError> {
        let err = |field: &str, message: String| EventError {
            field: field.into(),
            message,
        };
        if !value.is_object() {
            return Err(err("", "an event is a JSON object".into()));
        }
        let input: EventInput = deserialize(&value, "")?;
        let timestamp = input.timestamp.unwrap_or(now);
        if !(1..=MAX_TIMESTAMP).contains(&timestamp) {
            return Err(err(
                "timestamp",
                format!("must be milliseconds since the epoch (got {timestamp})"),
            ));
        }
        let entity_object = entity_object(input.entity)?;
        let entity: Option<EntityInput> = entity_object
            .as_ref()
            .map(|e| deserialize(e, "entity"))
            .transpose()?;
        if entity.is_none() && (input.entity_type.is_none() || input.entity_id.is_none()) {
            return Err(err(
                "entity",
                "missing field `entity` (it may be left out when entityType and entityId are given)"
                    .into(),
            ));
        }
        let entity_type = entity_type(input.entity_type.as_ref(), entity.as_ref())?;
        let entity_id = match (input.entity_id, entity.as_ref().map(|e| e.id)) {
            (Some(given), Some(inner)) if given != inner => {
                return Err(err("entityId", "does not match entity.id".into()));
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => unreachable!("an event without an entity has an entityId"),
        };
        let event_id = input.event_id.unwrap_or_else(Uuid::new_v4);
        let object = value.as_object_mut().expect("checked above");
        object.remove("id");
        object.insert("eventId".into(), Value::String(event_id.to_string()));
        object.insert("timestamp".into(), Value::from(timestamp));
        object.insert("entityType".into(), Value::String(entity_type.clone()));
        object.insert("entityId".into(), Value::String(entity_id.to_string()));
        if let Some(fqn) = entity
            .as_ref()
            .and_then(|e| e.fully_qualified_name.as_ref())
        {
            object
                .entry("entityFullyQualifiedName")
                .or_insert_with(|| Value::String(fqn.as_str().to_owned()));
        }
        if let Some(entity) = entity_object {
            object.insert("entity".into(), entity);
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

/// Deserializes `value`, naming a bad field by its path under `prefix`.
fn deserialize<T: serde::de::DeserializeOwned>(
    value: &Value,
    prefix: &str,
) -> Result<T, EventError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().to_string();
        let field = super::error_field(&e.path().to_string(), &message);
        EventError {
            field: match (prefix, field.as_str()) {
                (prefix, "") => prefix.to_owned(),
                ("", field) => field.to_owned(),
                (prefix, field) => format!("{prefix}.{field}"),
            },
            message,
        }
    })
}

/// `entity` as an object: OpenMetadata sends the entity as a string of JSON (it stores it
/// so), other producers as the object itself; absent and `null` mean none was sent.
fn entity_object(entity: Option<Value>) -> Result<Option<Value>, EventError> {
    let refuse = |message: &str| EventError {
        field: "entity".into(),
        message: message.into(),
    };
    match entity {
        None | Some(Value::Null) => Ok(None),
        Some(object @ Value::Object(_)) => Ok(Some(object)),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(object @ Value::Object(_)) => Ok(Some(object)),
            _ => Err(refuse("a string entity must hold a JSON object")),
        },
        Some(_) => Err(refuse("must be an object, or a string holding one")),
    }
}

/// The event's entity type: `entityType`, or else `entity.type`; when both are given they
/// agree, except for entities whose `type` means something else ([`OWN_TYPE_FIELD`]).
fn entity_type(
    given: Option<&EntityTypeName>,
    entity: Option<&EntityInput>,
) -> Result<String, EventError> {
    let err = |field: &str, message: String| EventError {
        field: field.into(),
        message,
    };
    let inner = entity.and_then(|e| e.kind.as_ref());
    let entity_type = match (given, inner) {
        (Some(given), _) if OWN_TYPE_FIELD.contains(&given.as_str()) => given.as_str().to_owned(),
        (given, Some(inner)) => {
            let inner: EntityTypeName = deserialize(inner, "entity.type")?;
            if given.is_some_and(|g| g != &inner) {
                return Err(err("entityType", "does not match entity.type".into()));
            }
            inner.as_str().to_owned()
        }
        (Some(given), None) => given.as_str().to_owned(),
        (None, None) => {
            return Err(err(
                "entityType",
                "missing field `entityType` (nor has the entity a `type`)".into(),
            ));
        }
    };
    if entity_type == "*" {
        let field = if given.is_some() {
            "entityType"
        } else {
            "entity.type"
        };
        return Err(err(field, "'*' is not an entity type".into()));
    }
    Ok(entity_type)
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
    /// Names, fully qualified names and ids of the entity's domain(s), and the ids in the
    /// event's `domains`.
    pub domains: Vec<String>,
    /// Names and fully qualified names of the entity's owner(s).
    pub owners: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactsInput {
    event_type: Option<EventType>,
    entity_type: Option<String>,
    entity_id: Option<Uuid>,
    entity_fully_qualified_name: Option<String>,
    #[serde(default)]
    domains: Vec<Uuid>,
    user_name: Option<String>,
    change_description: Option<FactsChange>,
    incremental_change_description: Option<FactsChange>,
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
    kind: Option<Value>,
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
        let mut changed_fields: Vec<String> = Vec::new();
        for change in [
            input.change_description,
            input.incremental_change_description,
        ]
        .into_iter()
        .flatten()
        {
            for field in change
                .fields_added
                .into_iter()
                .chain(change.fields_updated)
                .chain(change.fields_deleted)
            {
                if !changed_fields.contains(&field.name) {
                    changed_fields.push(field.name);
                }
            }
        }
        let mut domains = Vec::new();
        // A domain is named by its name, its fully qualified name or its id (the event's
        // own `domains` holds ids only).
        let domain_keys = ["name", "fullyQualifiedName", "id"];
        references(entity.domain.as_ref(), &domain_keys, &mut domains);
        references(entity.domains.as_ref(), &domain_keys, &mut domains);
        for id in input.domains {
            let id = id.to_string();
            if !domains.contains(&id) {
                domains.push(id);
            }
        }
        let mut owners = Vec::new();
        let owner_keys = ["name", "fullyQualifiedName"];
        references(entity.owner.as_ref(), &owner_keys, &mut owners);
        references(entity.owners.as_ref(), &owner_keys, &mut owners);
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
        let entity_kind = entity
            .kind
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned);
        Self {
            event_type: input.event_type,
            entity_type: input.entity_type.or(entity_kind).unwrap_or_default(),
            entity_id: input.entity_id.or(entity.id),
            fqn: entity
                .fully_qualified_name
                .or(input.entity_fully_qualified_name),
            user_name: input.user_name.or(entity.updated_by),
            changed_fields,
            domains,
            owners,
            tags,
        }
    }
}

/// Collects the `keys` (`name`, `fullyQualifiedName`, …) of one entity reference or a list
/// of them.
fn references(value: Option<&Value>, keys: &[&str], into: &mut Vec<String>) {
    let mut one = |r: &Value| {
        for key in keys {
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

    /// What an OpenMetadata server sends (`tests/fixtures`): every field of its ChangeEvent,
    /// the entity as a string of JSON.
    fn openmetadata_event() -> Value {
        // Read when the test runs: the container build copies no tests/.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/openmetadata_change_event.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn openmetadata_change_events_are_accepted_whole() {
        let event = NewEvent::parse(openmetadata_event(), 1).unwrap();
        assert_eq!(
            event.event_id.to_string(),
            "3e9b1c2d-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
        );
        assert_eq!(event.entity_type, "table");
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert!(body.get("id").is_none());
        assert_eq!(
            body["entity"]["name"], "customers",
            "the entity is an object"
        );
        assert!(body["incrementalChangeDescription"].is_object());
        let facts = EventFacts::from_body(&event.body);
        assert_eq!(facts.changed_fields, ["tags"]);
        assert_eq!(
            facts.domains,
            ["Sales", "9d8c7b6a-5f4e-4d3c-8b2a-19f0e1d2c3b4"]
        );
        assert_eq!(facts.owners, ["john.doe"]);
        assert_eq!(facts.tags, ["PII.Sensitive"]);
        for (field, bad) in [
            ("/domains", json!(["Sales"])),
            ("/incrementalChangeDescription", json!({"fieldsAdded": 1})),
            ("/entity", json!("not json")),
            ("/entity", json!(7)),
        ] {
            let mut v = openmetadata_event();
            *v.pointer_mut(field).unwrap() = bad;
            let e = NewEvent::parse(v, 1).expect_err(field);
            assert!(e.field.starts_with(&field[1..]), "{field}: {e:?}");
        }
        let mut v = openmetadata_event();
        v["impersonatedBy"] = json!("ingestion-bot");
        v["changeDescription"]["changeSummary"] = json!({});
        assert!(NewEvent::parse(v, 1).is_ok());
        let mut v = openmetadata_event();
        v["entityUrl"] = json!("http://x");
        assert_eq!(NewEvent::parse(v, 1).unwrap_err().field, "entityUrl");
    }

    #[test]
    fn every_openmetadata_event_type_is_accepted() {
        assert_eq!(EventType::ALL.len(), 19);
        for t in EventType::ALL {
            let mut v = seed_event();
            v["eventType"] = json!(t.as_str());
            let event = NewEvent::parse(v, 1).unwrap();
            assert_eq!(event.event_type, *t);
            assert_eq!(EventFacts::from_body(&event.body).event_type, Some(*t));
        }
    }

    #[test]
    fn threads_and_suggestions_keep_their_own_type_field() {
        let thread = json!({
            "eventType": "threadCreated", "entityType": "thread",
            "entityId": "11111111-2222-4333-8444-555555555555", "timestamp": 1,
            "entity": {"id": "11111111-2222-4333-8444-555555555555", "type": "Conversation",
                       "about": "<#E::table::snowflake_prod.sales.public.customers>",
                       "message": "Is this table still used?", "createdBy": "alice"}
        });
        let event = NewEvent::parse(thread, 1).unwrap();
        assert_eq!(event.entity_type, "thread");
        let bare = json!({
            "eventType": "entityDeleted", "entityType": "table",
            "entityId": "11111111-2222-4333-8444-555555555555", "timestamp": 1
        });
        assert_eq!(NewEvent::parse(bare, 1).unwrap().entity_type, "table");
        let mut mismatch = seed_event();
        mismatch["entityType"] = json!("suggestion");
        assert!(NewEvent::parse(mismatch, 1).is_ok());
    }
}
