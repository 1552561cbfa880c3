//! Golden files for every destination format: created, updated (tags, owner and
//! description changed), soft-deleted and deleted events, single and batched, and batches
//! large enough to hit each platform's limits. Each body is also checked against the
//! platform's documented structure and limits.
//!
//! `UPDATE_GOLDEN=1 cargo test --test formats` rewrites the files after a deliberate change.

use std::sync::Arc;

use outhook::dispatch::event::LogEvent;
use outhook::dispatch::format::{self, formatter_for, limits};
use outhook::domain::webhook::WebhookSpec;
use serde_json::{Value, json};
use uuid::Uuid;

fn spec(kind: &str, batch: u32, template: Option<&str>) -> WebhookSpec {
    let mut v = json!({
        "name": "DataTeamAlerts", "webhookType": kind, "batchSize": batch,
        "eventFilters": [{"eventType": "entityUpdated"}],
        "webhookConfig": {"endpoint": "https://hooks.example.com/x"}
    });
    if let Some(t) = template {
        v["webhookConfig"]["payloadTemplate"] = json!(t);
    }
    let spec: WebhookSpec = serde_json::from_value(v).unwrap();
    spec.check().unwrap();
    spec
}

fn event(n: u32, event_type: &str, changes: Value) -> Arc<LogEvent> {
    let id = Uuid::from_u128(0x1000 + u128::from(n));
    let body = json!({
        "eventId": id,
        "eventType": event_type,
        "timestamp": 1705320000000i64 + i64::from(n) * 60_000,
        "entityType": "table",
        "entityId": Uuid::from_u128(0x2000 + u128::from(n)),
        "userName": "bob",
        "entity": {
            "id": Uuid::from_u128(0x2000 + u128::from(n)),
            "type": "table",
            "name": format!("customers_{n}"),
            "fullyQualifiedName": format!("snowflake_prod.sales.public.customers_{n}"),
            "description": "Customer <information> & more",
            "owner": {"type": "user", "name": "john.doe"},
            "tags": [{"tagFQN": "PII.Sensitive"}]
        },
        "changeDescription": changes,
    });
    Arc::new(LogEvent::new(i64::from(n), id, body.to_string()))
}

fn no_changes() -> Value {
    json!({"fieldsAdded": [], "fieldsUpdated": [], "fieldsDeleted": []})
}

fn created(n: u32) -> Arc<LogEvent> {
    event(n, "entityCreated", no_changes())
}

fn updated(n: u32) -> Arc<LogEvent> {
    event(
        n,
        "entityUpdated",
        json!({
            "fieldsAdded": [{"name": "tags", "newValue": [{"tagFQN": "PII.Sensitive"}, {"tagFQN": "Tier.Tier1"}]}],
            "fieldsUpdated": [
                {"name": "owner", "oldValue": {"type": "user", "name": "alice"}, "newValue": {"type": "user", "name": "john.doe"}},
                {"name": "description", "oldValue": "Customers", "newValue": "Customer <information> & more"}
            ],
            "fieldsDeleted": [{"name": "tags", "oldValue": [{"tagFQN": "Deprecated.Yes"}]}]
        }),
    )
}

fn soft_deleted(n: u32) -> Arc<LogEvent> {
    event(
        n,
        "entitySoftDeleted",
        json!({"fieldsAdded": [], "fieldsDeleted": [],
        "fieldsUpdated": [{"name": "deleted", "oldValue": false, "newValue": true}]}),
    )
}

fn deleted(n: u32) -> Arc<LogEvent> {
    event(n, "entityDeleted", no_changes())
}

/// Many events with long values, to push a message past the platform's limits.
fn large(count: u32) -> Vec<Arc<LogEvent>> {
    (0..count)
        .map(|n| {
            let long = "x".repeat(5000);
            event(n, "entityUpdated", json!({"fieldsAdded": [], "fieldsDeleted": [], "fieldsUpdated":
                (0..30).map(|i| json!({"name": format!("columns.c{i}.description"), "oldValue": long, "newValue": long})).collect::<Vec<_>>()}))
        })
        .collect()
}

fn golden(name: &str, body: &[u8]) -> Value {
    let value: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    let path = format!("{}/tests/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{path} is missing: run with UPDATE_GOLDEN=1")),
    )
    .unwrap();
    assert_eq!(value, expected, "{name} differs from its golden file");
    value
}

/// An event about a conversation, a task, a suggestion or a test suite: its entity is the
/// thread (whose `type` is its kind), the suggestion or the suite, as OpenMetadata sends it.
fn activity(n: u32, event_type: &str, entity_type: &str, entity: Value) -> Arc<LogEvent> {
    let id = Uuid::from_u128(0x3000 + u128::from(n));
    let mut entity = entity;
    entity["id"] = json!(Uuid::from_u128(0x4000 + u128::from(n)));
    let body = json!({
        "eventId": id,
        "eventType": event_type,
        "timestamp": 1705320000000i64 + i64::from(n) * 60_000,
        "entityType": entity_type,
        "entityId": entity["id"],
        "userName": "alice",
        "entity": entity,
    });
    Arc::new(LogEvent::new(i64::from(n), id, body.to_string()))
}

fn task_resolved(n: u32) -> Arc<LogEvent> {
    activity(
        n,
        "taskResolved",
        "thread",
        json!({
            "type": "Task", "about": "<#E::table::snowflake_prod.sales.public.customers::columns::email>",
            "message": "Describe the email column", "createdBy": "alice",
            "task": {"id": 7, "type": "RequestDescription", "status": "Closed", "closedBy": "bob",
                     "assignees": [{"type": "user", "name": "bob"}],
                     "newValue": "The customer's contact address"}
        }),
    )
}

fn post_created(n: u32) -> Arc<LogEvent> {
    activity(
        n,
        "postCreated",
        "thread",
        json!({
            "type": "Conversation", "about": "<#E::table::snowflake_prod.sales.public.customers>",
            "message": "Who owns this table?", "createdBy": "alice",
            "posts": [{"message": "The sales data team <@bob>", "from": "carol"}]
        }),
    )
}

fn suggestion_accepted(n: u32) -> Arc<LogEvent> {
    activity(
        n,
        "suggestionAccepted",
        "suggestion",
        json!({
            "type": "SuggestDescription", "entityLink": "<#E::table::snowflake_prod.sales.public.customers>",
            "description": "Every customer who ordered since 2019", "status": "Accepted",
            "createdBy": {"type": "user", "name": "dave"}
        }),
    )
}

fn test_cases_added(n: u32) -> Arc<LogEvent> {
    activity(
        n,
        "logicalTestCaseAdded",
        "testSuite",
        json!({
            "name": "nightly_quality", "fullyQualifiedName": "nightly_quality",
            "tests": [{"type": "testCase", "name": "customers_email_not_null"},
                      {"type": "testCase", "name": "customers_id_unique"}]
        }),
    )
}

fn cases() -> Vec<(&'static str, Vec<Arc<LogEvent>>)> {
    vec![
        (
            "activity",
            vec![
                task_resolved(5),
                post_created(6),
                suggestion_accepted(7),
                test_cases_added(8),
            ],
        ),
        ("created", vec![created(1)]),
        ("updated", vec![updated(2)]),
        ("soft_deleted", vec![soft_deleted(3)]),
        ("deleted", vec![deleted(4)]),
        (
            "batch",
            vec![created(1), updated(2), soft_deleted(3), deleted(4)],
        ),
    ]
}

fn render(kind: &str, batch: u32, events: &[Arc<LogEvent>]) -> Vec<u8> {
    let spec = spec(kind, batch, None);
    formatter_for(spec.webhook_type)
        .render(&spec, events)
        .unwrap()
}

fn chars(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

/// Slack's documented Block Kit structure and limits.
fn check_slack(v: &Value) {
    assert!(v["text"].is_string() && chars(&v["text"]) <= limits::SLACK_TEXT);
    let blocks = v["blocks"].as_array().expect("blocks");
    assert!(
        !blocks.is_empty() && blocks.len() <= limits::SLACK_BLOCKS,
        "{} blocks",
        blocks.len()
    );
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "header" => {
                assert_eq!(b["text"]["type"], "plain_text");
                assert!(chars(&b["text"]["text"]) <= limits::SLACK_HEADER);
            }
            "section" => {
                if let Some(fields) = b["fields"].as_array() {
                    assert!(fields.len() <= limits::SLACK_FIELDS);
                    for f in fields {
                        assert_eq!(f["type"], "mrkdwn");
                        assert!(chars(&f["text"]) <= limits::SLACK_FIELD_TEXT);
                    }
                } else {
                    assert_eq!(b["text"]["type"], "mrkdwn");
                    assert!(chars(&b["text"]["text"]) <= limits::SLACK_TEXT);
                }
            }
            "context" => {
                let elements = b["elements"].as_array().unwrap();
                assert!(!elements.is_empty() && elements.len() <= 10);
            }
            "divider" => {}
            other => panic!("unexpected block type {other}"),
        }
        // mrkdwn text is escaped: no raw '<' or '>' from the data.
        for text in [&b["text"]["text"], &b["elements"][0]["text"]] {
            if b["type"] != "header"
                && let Some(t) = text.as_str()
            {
                assert!(!t.contains("<information>"), "unescaped: {t}");
            }
        }
    }
}

/// A Teams Workflows message with an Adaptive Card, within 28 KB.
fn check_teams(v: &Value, raw: &[u8]) {
    assert!(raw.len() <= limits::TEAMS_BYTES, "{} bytes", raw.len());
    assert_eq!(v["type"], "message");
    let attachments = v["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachments[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert!(card["version"].is_string());
    for element in card["body"].as_array().unwrap() {
        match element["type"].as_str().unwrap() {
            "TextBlock" => assert!(element["text"].is_string()),
            "FactSet" => {
                for fact in element["facts"].as_array().unwrap() {
                    assert!(fact["title"].is_string() && fact["value"].is_string());
                }
            }
            other => panic!("unexpected element {other}"),
        }
    }
}

/// A Google Chat cardsV2 message, within 32,000 bytes.
fn check_chat(v: &Value, raw: &[u8]) {
    assert!(raw.len() <= limits::CHAT_BYTES, "{} bytes", raw.len());
    assert!(chars(&v["text"]) <= limits::CHAT_TEXT);
    let cards = v["cardsV2"].as_array().unwrap();
    assert_eq!(cards.len(), 1);
    assert!(cards[0]["cardId"].is_string());
    let card = &cards[0]["card"];
    assert!(card["header"]["title"].is_string());
    for section in card["sections"].as_array().unwrap() {
        for widget in section["widgets"].as_array().unwrap() {
            let object = widget.as_object().unwrap();
            assert_eq!(object.len(), 1);
            let kind = object.keys().next().unwrap();
            assert!(kind == "decoratedText" || kind == "textParagraph", "{kind}");
            let text = widget[kind]["text"].as_str().unwrap();
            assert!(!text.contains("<information>"), "unescaped: {text}");
        }
    }
}

#[test]
fn slack_golden_and_within_limits() {
    for (case, events) in cases() {
        let batch = if events.len() == 1 { 1 } else { 10 };
        let v = golden(&format!("slack_{case}"), &render("Slack", batch, &events));
        check_slack(&v);
    }
    let big = large(60);
    let v = golden("slack_large", &render("Slack", 100, &big));
    check_slack(&v);
    let last = v["blocks"].as_array().unwrap().last().unwrap()["text"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(last.contains("more events in this delivery"), "{last}");
}

#[test]
fn teams_golden_and_within_limits() {
    for (case, events) in cases() {
        let raw = render("MSTeams", if events.len() == 1 { 1 } else { 10 }, &events);
        let v = golden(&format!("teams_{case}"), &raw);
        check_teams(&v, &raw);
    }
    let raw = render("MSTeams", 100, &large(60));
    let v = golden("teams_large", &raw);
    check_teams(&v, &raw);
    let body = v["attachments"][0]["content"]["body"].as_array().unwrap();
    assert!(
        body.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("more events")
    );
}

#[test]
fn google_chat_golden_and_within_limits() {
    for (case, events) in cases() {
        let raw = render(
            "GoogleChat",
            if events.len() == 1 { 1 } else { 10 },
            &events,
        );
        let v = golden(&format!("chat_{case}"), &raw);
        check_chat(&v, &raw);
    }
    let raw = render("GoogleChat", 100, &large(60));
    let v = golden("chat_large", &raw);
    check_chat(&v, &raw);
}

/// Each of OpenMetadata's 19 event types says what happened in every chat format: its own
/// headline, never another type's.
#[test]
fn every_event_type_reads_as_what_happened() {
    let headlines = [
        ("entityCreated", "Table created: customers_1"),
        ("entityUpdated", "Table updated: customers_1"),
        ("entityFieldsChanged", "Table fields changed: customers_1"),
        ("entityNoChange", "Table saved without changes: customers_1"),
        ("entitySoftDeleted", "Table soft-deleted: customers_1"),
        ("entityDeleted", "Table deleted: customers_1"),
        ("entityRestored", "Table restored: customers_1"),
        (
            "threadCreated",
            "New task on table snowflake_prod.sales.public.customers",
        ),
        (
            "threadUpdated",
            "Task updated on table snowflake_prod.sales.public.customers",
        ),
        (
            "postCreated",
            "New reply in conversation on table snowflake_prod.sales.public.customers",
        ),
        (
            "postUpdated",
            "Reply edited in conversation on table snowflake_prod.sales.public.customers",
        ),
        (
            "taskResolved",
            "Task resolved on table snowflake_prod.sales.public.customers",
        ),
        (
            "taskClosed",
            "Task closed on table snowflake_prod.sales.public.customers",
        ),
        (
            "logicalTestCaseAdded",
            "Test cases added to Test suite: nightly_quality",
        ),
        (
            "suggestionCreated",
            "New suggestion on table snowflake_prod.sales.public.customers",
        ),
        (
            "suggestionUpdated",
            "Suggestion updated on table snowflake_prod.sales.public.customers",
        ),
        (
            "suggestionAccepted",
            "Suggestion accepted on table snowflake_prod.sales.public.customers",
        ),
        (
            "suggestionRejected",
            "Suggestion rejected on table snowflake_prod.sales.public.customers",
        ),
        (
            "suggestionDeleted",
            "Suggestion deleted on table snowflake_prod.sales.public.customers",
        ),
    ];
    assert_eq!(
        headlines.len(),
        outhook::domain::event::EventType::ALL.len()
    );
    for (event_type, headline) in headlines {
        let event = match event_type {
            t if t.starts_with("entity") => event(1, t, no_changes()),
            t @ ("threadCreated" | "threadUpdated" | "taskResolved" | "taskClosed") => {
                let mut body: Value = serde_json::from_str(&task_resolved(1).body).unwrap();
                body["eventType"] = json!(t);
                Arc::new(LogEvent::new(1, Uuid::from_u128(1), body.to_string()))
            }
            t @ ("postCreated" | "postUpdated") => {
                let mut body: Value = serde_json::from_str(&post_created(1).body).unwrap();
                body["eventType"] = json!(t);
                Arc::new(LogEvent::new(1, Uuid::from_u128(1), body.to_string()))
            }
            "logicalTestCaseAdded" => test_cases_added(1),
            t => {
                let mut body: Value = serde_json::from_str(&suggestion_accepted(1).body).unwrap();
                body["eventType"] = json!(t);
                Arc::new(LogEvent::new(1, Uuid::from_u128(1), body.to_string()))
            }
        };
        for kind in ["Slack", "MSTeams", "GoogleChat"] {
            let text = String::from_utf8(render(kind, 1, &[event.clone()])).unwrap();
            assert!(
                text.contains(headline),
                "{kind} for {event_type} does not say '{headline}': {text}"
            );
        }
        let generic: Value = serde_json::from_slice(&render("Generic", 1, &[event])).unwrap();
        assert_eq!(generic["eventType"], event_type);
    }
}

#[test]
fn generic_golden() {
    for (case, events) in cases() {
        let batch = if events.len() == 1 { 1 } else { 10 };
        let v = golden(
            &format!("generic_{case}"),
            &render("Generic", batch, &events),
        );
        assert_eq!(v.is_array(), batch > 1);
    }
}

#[tokio::test]
async fn custom_templates_golden() {
    let template = r#"{
  "summary": "{{ event.eventType }} on {{ event.entity.fullyQualifiedName }} by {{ event.userName }}",
  "count": {{ events | length }},
  "ids": {{ events | map(attribute="eventId") | list | tojson }},
  "owner": {{ event.entity.owner.name | tojson }},
  "webhook": {{ webhook.name | tojson }}
}"#;
    for (case, events) in cases() {
        let spec = spec(
            "Custom",
            if events.len() == 1 { 1 } else { 10 },
            Some(template),
        );
        let raw = format::payload(&spec, &events).await.unwrap().body;
        let v = golden(&format!("custom_{case}"), &raw);
        assert_eq!(v["count"], events.len());
    }
    // Without a template, Custom sends the generic body.
    let plain = spec("Custom", 1, None);
    assert_eq!(
        format::payload(&plain, &[created(1)]).await.unwrap().body,
        render("Generic", 1, &[created(1)])
    );
    // A template that fails at render time, or renders something that is not JSON, is an error.
    for bad in [
        "{{ event.timestamp / 0 }}",
        "not json: {{ event.eventType }}",
    ] {
        let failing = spec("Custom", 1, Some(bad));
        assert!(
            format::payload(&failing, &[created(1)]).await.is_err(),
            "{bad}"
        );
    }
}

#[test]
fn get_query_golden() {
    let spec = spec("Generic", 1, None);
    let query = format::query_string(&spec, &[updated(2)]).unwrap();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let v = golden(
        "get_updated",
        serde_json::to_string(&pairs).unwrap().as_bytes(),
    );
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| p[0] == "entity_owner_name" && p[1] == "john.doe")
    );
}

/// An event too large for a GET query keeps what says which event it is: two events that
/// differ only in their id never give the same request.
#[test]
fn get_queries_keep_the_event_identity_when_shortened() {
    let spec = spec("Generic", 1, None);
    let oversized = |n: u32| {
        let mut body: Value = serde_json::from_str(&updated(n).body).unwrap();
        // Fields sorting before the identity (`aaa`, `description`) and after it.
        body["entity"]["aaa"] = json!("a".repeat(9_000));
        body["entity"]["description"] = json!("Ünïcode ".repeat(2_000));
        body["zzz"] = json!("z".repeat(9_000));
        let event_id = Uuid::from_u128(0x1000 + u128::from(n));
        Arc::new(LogEvent::new(i64::from(n), event_id, body.to_string()))
    };
    let (first, second) = (oversized(1), oversized(2));
    let query = format::query_string(&spec, std::slice::from_ref(&first)).unwrap();
    assert!(query.len() <= format::MAX_QUERY_BYTES, "{}", query.len());
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let value = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key} is missing from {query}"))
    };
    let body: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(value("eventId"), body["eventId"].as_str().unwrap());
    assert_eq!(value("eventType"), "entityUpdated");
    assert_eq!(value("timestamp"), body["timestamp"].to_string());
    assert_eq!(value("entity_id"), body["entity"]["id"].as_str().unwrap());
    assert_eq!(value("entity_type"), "table");
    assert_eq!(value("webhookName"), "DataTeamAlerts");
    assert_eq!(
        value("entity_owner_name"),
        "john.doe",
        "small values stay whole"
    );
    assert_eq!(value("_truncated"), "true");
    // The large values are shortened, not dropped, and share the room.
    for key in ["entity_aaa", "entity_description", "zzz"] {
        let shortened = value(key);
        assert!(
            (1_000..9_000).contains(&shortened.len()),
            "{key}: {}",
            shortened.len()
        );
    }
    assert_ne!(
        query,
        format::query_string(&spec, &[second]).unwrap(),
        "two events, two requests"
    );
}
