//! One event read for people, and the text helpers the chat formats share.

use std::sync::Arc;

use serde_json::Value;

use super::activity;
use crate::clock::utc;
use crate::dispatch::event::LogEvent;

/// One event, read for people.
pub(super) struct Summary {
    pub title: String,
    pub event_type: String,
    pub entity_type: String,
    pub fqn: String,
    pub user: String,
    pub when: String,
    pub event_id: String,
    pub changes: Vec<String>,
}

/// Longest rendering of one changed value.
const VALUE_CHARS: usize = 120;
/// Changes listed per event; the rest are counted.
const MAX_CHANGES: usize = 15;

impl Summary {
    pub fn all(events: &[Arc<LogEvent>]) -> Vec<Self> {
        events.iter().map(|e| Self::of(e)).collect()
    }

    fn of(event: &LogEvent) -> Self {
        let v: Value = serde_json::from_str(&event.body).unwrap_or(Value::Null);
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let entity_type = Some(s("/entityType"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| s("/entity/type"));
        let name = [
            "/entity/displayName",
            "/entity/name",
            "/entityFullyQualifiedName",
        ]
        .iter()
        .map(|p| s(p))
        .find(|n| !n.is_empty())
        .unwrap_or_default();
        let event_type = s("/eventType");
        let mut changes = activity::details(&event_type, &v);
        for (key, label) in [
            ("fieldsAdded", "added"),
            ("fieldsUpdated", "updated"),
            ("fieldsDeleted", "deleted"),
        ] {
            for f in v
                .pointer(&format!("/changeDescription/{key}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let field = f.get("name").and_then(Value::as_str).unwrap_or("?");
                let old = f.get("oldValue").map(short);
                let new = f.get("newValue").map(short);
                changes.push(match (label, old, new) {
                    ("updated", Some(o), Some(n)) => format!("{field}\u{1}updated: {o} → {n}"),
                    ("added", _, Some(n)) => format!("{field}\u{1}added: {n}"),
                    ("deleted", Some(o), _) => format!("{field}\u{1}deleted (was {o})"),
                    _ => format!("{field}\u{1}{label}"),
                });
            }
        }
        Self {
            title: activity::title(&event_type, &entity_type, &name, &v),
            fqn: ["/entity/fullyQualifiedName", "/entityFullyQualifiedName"]
                .iter()
                .map(|p| s(p))
                .chain(activity::about(&v).map(|(_, fqn)| fqn))
                .find(|f| !f.is_empty())
                .unwrap_or_else(|| name.clone()),
            user: Some(s("/userName"))
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "unknown".into()),
            when: v
                .get("timestamp")
                .and_then(Value::as_i64)
                .map(utc)
                .unwrap_or_default(),
            event_id: s("/eventId"),
            event_type,
            entity_type,
            changes,
        }
    }

    /// The change lines with `field` marked by `bold` (and the rest escaped by `escape`).
    pub fn change_lines(
        &self,
        bold: impl Fn(&str) -> String,
        escape: impl Fn(&str) -> String,
        bullet: &str,
    ) -> String {
        let mut lines: Vec<String> = self
            .changes
            .iter()
            .take(MAX_CHANGES)
            .map(|c| {
                let (field, rest) = c.split_once('\u{1}').unwrap_or((c, ""));
                format!("{bullet}{} {}", bold(&escape(field)), escape(rest))
            })
            .collect();
        if self.changes.len() > MAX_CHANGES {
            lines.push(format!(
                "{bullet}…and {} more changes",
                self.changes.len() - MAX_CHANGES
            ));
        }
        lines.join("\n")
    }
}

/// A changed value in a few words: tag labels and references by name, the rest as compact
/// JSON, cut at [`VALUE_CHARS`].
pub(super) fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items.iter().map(label).collect::<Vec<_>>().join(", "),
        other => label(other),
    };
    truncate(&text, VALUE_CHARS)
}

fn label(value: &Value) -> String {
    for key in ["tagFQN", "displayName", "name", "fullyQualifiedName"] {
        if let Some(s) = value.get(key).and_then(Value::as_str) {
            return s.to_owned();
        }
    }
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// `testCase` → `Test case`.
pub(super) fn words(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase() {
            out.push(' ');
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    if out.is_empty() { "Entity".into() } else { out }
}

/// What a batch is about, for notification text and summaries: `3 × entityCreated table`.
/// The line that ends a message too large for all of a batch.
pub(super) fn more_events(rest: &[Summary]) -> String {
    format!(
        "…and {} more events in this delivery: {}",
        rest.len(),
        tally(rest)
    )
}

fn tally(summaries: &[Summary]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in summaries {
        let key = format!("{} {}", s.event_type, s.entity_type);
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn headline(summaries: &[Summary]) -> String {
    match summaries {
        [one] => one.title.clone(),
        many => format!("{} metadata changes: {}", many.len(), tally(many)),
    }
}

pub(super) fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON serializes")
}

/// Slack's mrkdwn and Google Chat's card text both read `&`, `<` and `>` as markup:
/// escaped, they show as written.
pub(super) fn escape_markup(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_words() {
        assert_eq!(utc(1705320000000), "2024-01-15 12:00:00 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(words("testCase"), "Test case");
        assert_eq!(words("table"), "Table");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
