//! The parts of the OpenAPI document that no Rust type derives: request bodies whose
//! shape is checked by hand (a ChangeEvent, a JSON Patch, a webhook as a client sends it
//! back), the answers every route can give (401, 403, 503 with `Retry-After`, and the
//! body errors 400, 408, 413, 415), and a description on every answer.

use serde_json::{Value, json};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Object, SchemaType};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Schema, Type};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::domain::event::EventType;
use crate::domain::event::MAX_EVENT_BYTES;
use crate::domain::webhook::WebhookSpec;

/// Declares a schema that is written as JSON Schema (OpenAPI 3.1 schemas are JSON Schema
/// 2020-12) rather than built with utoipa's model, which has no `not` or `const` and
/// reads an array's `items` back as a plain object without them. Routes refer to it by
/// type like any other schema; [`written`] puts the JSON in its place in the document.
macro_rules! written_schema {
    ($(#[doc = $doc:expr])* $name:ident, needs [$($dependency:ty),*]) => {
        $(#[doc = $doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                // Replaced by the written schema in the served document.
                Schema::Object(Object::with_type(SchemaType::AnyValue)).into()
            }
        }

        impl ToSchema for $name {
            #[allow(unused_variables)] // a schema that needs no other
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                $(schemas.push((<$dependency>::name().into_owned(), <$dependency>::schema()));
                  <$dependency>::schemas(schemas);)*
            }
        }
    };
}

written_schema!(
    /// A ChangeEvent as a producer sends it (see `domain::event`).
    ChangeEvent, needs [EventType, ChangeDescription]
);
written_schema!(
    /// A ChangeEvent's `changeDescription` or `incrementalChangeDescription`.
    ChangeDescription, needs [EventFieldChanges]
);
written_schema!(
    /// The changed fields of a ChangeEvent's `changeDescription`.
    EventFieldChanges, needs []
);
written_schema!(
    /// The body of `POST /api/v1/events`: one ChangeEvent or a non-empty array of them.
    PublishBody, needs [ChangeEvent]
);
written_schema!(
    /// An RFC 6902 JSON Patch, as `PATCH /api/v1/webhooks/{id}` takes it.
    JsonPatch, needs []
);

/// The entity type names the API accepts (`table`, `dashboardService`, …).
const ENTITY_TYPE_PATTERN: &str = "^[A-Za-z0-9_]{1,64}$";

/// The schemas declared with `written_schema!`, by component name.
pub fn written() -> Vec<(&'static str, Value)> {
    let pointer = json!({"type": "string", "format": "json-pointer"});
    vec![
        (
            "ChangeEvent",
            json!({
                "type": "object",
                "description": format!(
                    "OpenMetadata's ChangeEvent, every field of it. The envelope is closed \
                     (unknown fields are refused); `entity` is open. At most {} KiB once \
                     serialized.",
                    MAX_EVENT_BYTES / 1024
                ),
                "required": ["eventType"],
                "additionalProperties": false,
                "not": {"required": ["eventId", "id"]},
                "properties": {
                    "eventId": {"type": ["string", "null"], "format": "uuid",
                        "description": "Generated when absent. An eventId already in the log is acknowledged and not stored again."},
                    "id": {"type": ["string", "null"], "format": "uuid",
                        "description": "OpenMetadata's name for eventId (one of the two)."},
                    "eventType": {"$ref": "#/components/schemas/EventType"},
                    "timestamp": {"type": ["integer", "null"], "format": "int64",
                        "minimum": 1, "maximum": 253_402_300_799_999i64,
                        "description": "Milliseconds since the epoch; now when absent."},
                    "entityType": {"type": ["string", "null"], "pattern": ENTITY_TYPE_PATTERN,
                        "description": "The entity type; else entity.type. When both are given they agree (except for thread and suggestion, whose entity's type is their kind)."},
                    "entityId": {"type": ["string", "null"], "format": "uuid",
                        "description": "When given with an entity, equal to entity.id. With entityType, the entity may be left out."},
                    "domains": {"type": ["array", "null"], "items": {"type": "string", "format": "uuid"},
                        "description": "The ids of the entity's domains; `domain:<id>` filters match them."},
                    "entityFullyQualifiedName": {"type": ["string", "null"], "maxLength": 1024},
                    "userName": {"type": ["string", "null"], "maxLength": 256},
                    "impersonatedBy": {"type": ["string", "null"], "maxLength": 256,
                        "description": "The bot that acted on the user's behalf."},
                    "changeDescription": {"$ref": "#/components/schemas/ChangeDescription"},
                    "incrementalChangeDescription": {"$ref": "#/components/schemas/ChangeDescription"},
                    "entity": {"oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "description": "The entity the event is about; fields beyond these are kept as sent.",
                            "required": ["id"],
                            "properties": {
                                "id": {"type": "string", "format": "uuid"},
                                "type": {"description": "The entity type (pattern as entityType), or a thread's or suggestion's kind."},
                                "name": {"type": ["string", "null"], "maxLength": 256},
                                "fullyQualifiedName": {"type": ["string", "null"], "maxLength": 1024}
                            }
                        },
                        {"type": "string", "contentMediaType": "application/json",
                            "description": "The entity as a string of JSON (as OpenMetadata sends it): an object as above. Stored as the object."}
                    ]},
                    "previousVersion": {"type": ["number", "null"]},
                    "currentVersion": {"type": ["number", "null"]}
                }
            }),
        ),
        (
            "ChangeDescription",
            json!({"oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "description": "What changed: fields added, updated and deleted.",
                    "additionalProperties": false,
                    "properties": {
                        "fieldsAdded": {"$ref": "#/components/schemas/EventFieldChanges"},
                        "fieldsUpdated": {"$ref": "#/components/schemas/EventFieldChanges"},
                        "fieldsDeleted": {"$ref": "#/components/schemas/EventFieldChanges"},
                        "previousVersion": {"type": ["number", "null"]},
                        "changeSummary": {"type": ["object", "null"],
                            "description": "Who changed each field and how (OpenMetadata's changeSummaryMap)."}
                    }
                }
            ]}),
        ),
        (
            "EventFieldChanges",
            json!({
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 512,
                            "description": "A dotted field name such as `columns.description`."},
                        "oldValue": {},
                        "newValue": {}
                    }
                }
            }),
        ),
        (
            "PublishBody",
            json!({
                "description": "One ChangeEvent, or an array of them (at most the configured \
                    number per request, 1000 by default; all or nothing).",
                "oneOf": [
                    {"$ref": "#/components/schemas/ChangeEvent"},
                    {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChangeEvent"}}
                ]
            }),
        ),
        (
            "JsonPatch",
            json!({
                "type": "array",
                "description": "RFC 6902 operations, applied in order; nothing changes unless all apply.",
                "items": {"oneOf": [
                    {
                        "type": "object",
                        "required": ["op", "path", "value"],
                        "properties": {"op": {"enum": ["add", "replace", "test"]}, "path": pointer, "value": {}}
                    },
                    {
                        "type": "object",
                        "required": ["op", "path"],
                        "properties": {"op": {"const": "remove"}, "path": pointer}
                    },
                    {
                        "type": "object",
                        "required": ["op", "from", "path"],
                        "properties": {"op": {"enum": ["move", "copy"]}, "from": pointer, "path": pointer}
                    }
                ]}
            }),
        ),
    ]
}

/// A webhook as a create or replace body: [`WebhookSpec`], where the server-owned fields
/// of a webhook as read may be sent back and are ignored.
pub struct WebhookInput;

impl PartialSchema for WebhookInput {
    fn schema() -> RefOr<Schema> {
        let mut input = <WebhookSpec as PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut input {
            object.description = Some(
                "A webhook to create or replace. The fields only the server sets may be \
                 present (a client may send back what it read) and are ignored."
                    .into(),
            );
            for field in WebhookSpec::SERVER_OWNED {
                let mut ignored = Object::with_type(SchemaType::AnyValue);
                ignored.description = Some("Set by the server; ignored here.".into());
                object
                    .properties
                    .insert((*field).to_owned(), Schema::Object(ignored).into());
            }
        }
        input
    }
}

impl ToSchema for WebhookInput {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <WebhookSpec as ToSchema>::schemas(schemas);
    }
}

/// Adds the answers every route of a kind gives: an authenticated route 401, 403 and 503
/// (the database does not answer; with `Retry-After`), a route with a body 400 (not
/// JSON), 408 (it stopped arriving), 413 and 415. A route's own description of one of them is kept.
pub struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
        };
        for operation in operations(openapi) {
            let mut common = Vec::new();
            if operation.security.is_some() {
                common.push((
                    "401",
                    error("No bearer token, or not a live one (WWW-Authenticate: Bearer)"),
                ));
                common.push(("403", error("The token's role does not allow this")));
                common.push((
                    "503",
                    error("The database does not answer; retry after Retry-After seconds")
                        .header("Retry-After", retry_after()),
                ));
            }
            if operation.request_body.is_some() {
                common.push(("400", error("The body is not JSON of the expected shape")));
                common.push((
                    "408",
                    error("The body stopped arriving (then the connection is closed)"),
                ));
                common.push(("413", error("The body is over the size limit")));
                common.push(("415", error("Content-Type is not the one documented")));
            }
            for (code, response) in common {
                operation
                    .responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| response.build().into());
            }
        }
    }
}

/// OpenAPI requires a description on every response; where a route gave none, use the
/// status code's reason phrase ("Not Found").
pub struct ResponseDescriptions;

impl Modify for ResponseDescriptions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            for (code, response) in operation.responses.responses.iter_mut() {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    response.description = code
                        .parse::<u16>()
                        .ok()
                        .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("Response")
                        .to_owned();
                }
            }
        }
    }
}

/// Every operation in the document, whatever its method.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// The `Retry-After` header of a 429 or 503: whole seconds.
pub fn retry_after() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        ))
        .description(Some("Seconds to wait before trying again"))
        .build()
}
