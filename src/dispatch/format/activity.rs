//! What happened, in words, for each of OpenMetadata's event types: the headline of an
//! event, and the lines that tell a conversation, a task or a suggestion (its message,
//! assignees, status) where an entity event lists its changed fields.

use serde_json::Value;

use super::summary::{short, truncate, words};

/// Longest message or description quoted from a thread, post or suggestion.
const MESSAGE_CHARS: usize = 300;

/// The headline: `Table updated: customers`, `New task on table sales.customers`,
/// `Suggestion accepted on table sales.customers`.
pub(super) fn title(event_type: &str, entity_type: &str, name: &str, event: &Value) -> String {
    let name = if name.is_empty() { "(unnamed)" } else { name };
    let on = || match about(event) {
        Some((kind, fqn)) => format!(" on {} {fqn}", words(&kind).to_lowercase()),
        None => String::new(),
    };
    let thread = || thread_kind(event);
    let entity_event = |verb: &str| format!("{} {verb}: {name}", words(entity_type));
    match event_type {
        "entityCreated" => entity_event("created"),
        "entityUpdated" => entity_event("updated"),
        "entityFieldsChanged" => entity_event("fields changed"),
        "entityNoChange" => entity_event("saved without changes"),
        "entitySoftDeleted" => entity_event("soft-deleted"),
        "entityDeleted" => entity_event("deleted"),
        "entityRestored" => entity_event("restored"),
        "threadCreated" => format!("New {}{}", thread(), on()),
        "threadUpdated" => format!("{} updated{}", capital(&thread()), on()),
        "postCreated" => format!("New reply in {}{}", thread(), on()),
        "postUpdated" => format!("Reply edited in {}{}", thread(), on()),
        "taskResolved" => format!("Task resolved{}", on()),
        "taskClosed" => format!("Task closed{}", on()),
        "logicalTestCaseAdded" => format!("Test cases added to {}: {name}", words(entity_type)),
        "suggestionCreated" => format!("New suggestion{}", on()),
        "suggestionUpdated" => format!("Suggestion updated{}", on()),
        "suggestionAccepted" => format!("Suggestion accepted{}", on()),
        "suggestionRejected" => format!("Suggestion rejected{}", on()),
        "suggestionDeleted" => format!("Suggestion deleted{}", on()),
        other => entity_event(other),
    }
}

/// What a thread, post, task or suggestion says, as `field\u{1}text` lines (the shape of
/// the changed-field lines they precede).
pub(super) fn details(event_type: &str, event: &Value) -> Vec<String> {
    let entity = event.get("entity").unwrap_or(&Value::Null);
    let text = |p: &str| entity.pointer(p).and_then(Value::as_str).unwrap_or("");
    let mut lines = Vec::new();
    let mut line = |label: &str, value: String| {
        if !value.trim().is_empty() {
            lines.push(format!("{label}\u{1}{value}"));
        }
    };
    match event_type {
        "threadCreated" | "threadUpdated" | "postCreated" | "postUpdated" | "taskResolved"
        | "taskClosed" => {
            if matches!(event_type, "postCreated" | "postUpdated") {
                if let Some(post) = entity
                    .get("posts")
                    .and_then(Value::as_array)
                    .and_then(|p| p.last())
                {
                    let from = post.get("from").and_then(Value::as_str).unwrap_or("");
                    let message = post.get("message").and_then(Value::as_str).unwrap_or("");
                    line("reply", quoted(from, message));
                }
            }
            line("message", quoted(text("/createdBy"), text("/message")));
            if let Some(task) = entity.get("task").filter(|t| t.is_object()) {
                let get = |k: &str| task.get(k).and_then(Value::as_str).unwrap_or("");
                line("task", words(get("type")));
                line("status", get("status").to_owned());
                if let Some(assignees) = task.get("assignees").filter(|a| a.is_array()) {
                    line("assignees", short(assignees));
                }
                if !get("closedBy").is_empty() {
                    line("closed by", get("closedBy").to_owned());
                }
                if let Some(value) = task.get("newValue").filter(|v| !v.is_null()) {
                    line("new value", short(value));
                }
            }
            line("announcement", text("/announcement/description").to_owned());
        }
        "suggestionCreated" | "suggestionUpdated" | "suggestionAccepted" | "suggestionRejected"
        | "suggestionDeleted" => {
            line("suggestion", words(text("/type")));
            line("description", truncate(text("/description"), MESSAGE_CHARS));
            if let Some(tags) = entity.get("tagLabels").filter(|t| t.is_array()) {
                line("tags", short(tags));
            }
            line("status", text("/status").to_owned());
            let by = entity.get("createdBy").map(short).unwrap_or_default();
            line("suggested by", by);
        }
        "logicalTestCaseAdded" => {
            if let Some(tests) = entity.get("tests").filter(|t| t.is_array()) {
                line("test cases", short(tests));
            }
        }
        _ => {}
    }
    lines
}

/// The entity a thread or suggestion is about, from its entity link
/// (`<#E::table::sales.customers>`): its type and fully qualified name.
pub(super) fn about(event: &Value) -> Option<(String, String)> {
    let entity = event.get("entity")?;
    let link = ["about", "entityLink"]
        .iter()
        .find_map(|k| entity.get(*k).and_then(Value::as_str))?;
    let inner = link.strip_prefix("<#E::")?.strip_suffix('>')?;
    let mut parts = inner.splitn(3, "::");
    let kind = parts.next()?.to_owned();
    let fqn = parts.next()?.to_owned();
    Some((kind, fqn))
}

/// `conversation`, `task` or `announcement`: a thread's kind in words.
fn thread_kind(event: &Value) -> String {
    match event.pointer("/entity/type").and_then(Value::as_str) {
        Some("Task") => "task".into(),
        Some("Announcement") => "announcement".into(),
        _ => "conversation".into(),
    }
}

fn quoted(who: &str, message: &str) -> String {
    if message.is_empty() {
        return String::new();
    }
    let message = truncate(message, MESSAGE_CHARS);
    if who.is_empty() {
        format!("“{message}”")
    } else {
        format!("{who}: “{message}”")
    }
}

fn capital(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conversation_events_say_what_happened() {
        let thread = json!({"eventType": "taskResolved", "entityType": "thread", "entity": {
            "type": "Task", "about": "<#E::table::sales.customers::columns::email>",
            "message": "Add a description", "createdBy": "alice",
            "task": {"type": "RequestDescription", "status": "Closed", "closedBy": "bob",
                     "assignees": [{"type": "user", "name": "bob"}], "newValue": "Emails"}}});
        assert_eq!(
            title("taskResolved", "thread", "", &thread),
            "Task resolved on table sales.customers"
        );
        assert_eq!(
            title("threadCreated", "thread", "", &thread),
            "New task on table sales.customers"
        );
        let lines = details("taskResolved", &thread).join("|");
        for part in [
            "message\u{1}alice: “Add a description”",
            "task\u{1}Request description",
            "status\u{1}Closed",
            "assignees\u{1}bob",
            "closed by\u{1}bob",
        ] {
            assert!(lines.contains(part), "{part} in {lines}");
        }
        let suggestion = json!({"entity": {"type": "SuggestDescription",
            "entityLink": "<#E::table::sales.customers>", "description": "All customers",
            "status": "Accepted", "createdBy": {"type": "user", "name": "carol"}}});
        assert_eq!(
            title("suggestionAccepted", "suggestion", "", &suggestion),
            "Suggestion accepted on table sales.customers"
        );
        assert!(
            details("suggestionAccepted", &suggestion)
                .join("|")
                .contains("suggested by\u{1}carol")
        );
        assert_eq!(
            title("logicalTestCaseAdded", "testSuite", "nightly", &json!({})),
            "Test cases added to Test suite: nightly"
        );
        assert_eq!(
            title("entityFieldsChanged", "table", "orders", &json!({})),
            "Table fields changed: orders"
        );
    }
}
