//! Turning a batch of events into a request, per destination:
//! - Generic: the event JSON of `seeds/002_*` (+ `webhookName`): one object for
//!   batchSize 1, otherwise always an array;
//! - Slack: a Block Kit message, a section per event, within Slack's limits (50 blocks,
//!   3000 characters per text, 10 fields per section, 150 per header);
//! - MSTeams: a `message` with an Adaptive Card (FactSet per event) within 28 KB;
//! - GoogleChat: a `cardsV2` message, a section per event, within 32,000 bytes;
//! - Custom: the webhook's minijinja template, rendered in the sandbox (the generic body
//!   without one);
//! - GET: one event flattened into query parameters (`seeds/004_*`), bounded.
//!
//! A batch too large for a chat message is summarised at its end, never cut off or refused.
//! Formatting is pure: the same events give the same bytes (tests keep golden files).
//! Only templates, which users write, run elsewhere: in a child process (`sandbox`).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::router::LogEvent;
use super::sandbox;
use crate::domain::template;
use crate::domain::webhook::{HttpMethod, WebhookSpec, WebhookType};

/// Renders the body of one delivery in one of outhook's own formats. An error is a failure
/// retrying cannot fix.
pub trait Formatter: Send + Sync {
    fn render(&self, webhook: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<Vec<u8>, String>;
}

/// The body for a webhook type; a Custom webhook without a template sends the generic
/// body (its template is rendered by [`payload`]).
pub fn formatter_for(webhook_type: WebhookType) -> &'static dyn Formatter {
    match webhook_type {
        WebhookType::Generic | WebhookType::Custom => &Generic,
        WebhookType::Slack => &Slack,
        WebhookType::MSTeams => &Teams,
        WebhookType::GoogleChat => &GoogleChat,
    }
}

/// The event JSON of `seeds/002_*`, each with `webhookName`.
pub struct Generic;

impl Formatter for Generic {
    fn render(&self, webhook: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<Vec<u8>, String> {
        let name = serde_json::to_string(webhook.name.as_str()).expect("a string serializes");
        let mut out = Vec::with_capacity(
            events
                .iter()
                .map(|e| e.body.len() + name.len() + 20)
                .sum::<usize>()
                + 2,
        );
        let single = webhook.batch_size.get() == 1;
        if single && events.len() != 1 {
            return Err(format!("batchSize 1 with {} events", events.len()));
        }
        if !single {
            out.push(b'[');
        }
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Stored bodies are JSON objects: splice the webhook's name before the last '}'.
            let body = event.body.trim_end();
            let Some(open) = body.strip_suffix('}') else {
                return Err(format!("stored event {} is not a JSON object", event.seq));
            };
            out.extend_from_slice(open.as_bytes());
            if open.trim_end() != "{" {
                out.push(b',');
            }
            out.extend_from_slice(b"\"webhookName\":");
            out.extend_from_slice(name.as_bytes());
            out.push(b'}');
        }
        if !single {
            out.push(b']');
        }
        Ok(out)
    }
}

/// The event objects of a batch, as GET sees them (templates see the same, built by
/// [`crate::domain::template::context`]).
fn event_values(webhook: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<Vec<Value>, String> {
    events
        .iter()
        .map(|e| {
            let mut v: Value = serde_json::from_str(&e.body)
                .map_err(|err| format!("stored event {}: {err}", e.seq))?;
            if let Some(object) = v.as_object_mut() {
                object.insert(
                    "webhookName".into(),
                    Value::String(webhook.name.to_string()),
                );
            }
            Ok(v)
        })
        .collect()
}

/// What a delivery carries of the webhook's own: its body (POST, PUT) or query string
/// (GET), and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Empty for GET.
    pub body: Vec<u8>,
    /// The event as query parameters, for GET.
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// The payload of one delivery. A Custom webhook's templates (its body, and headers that
/// use template syntax) are rendered together in the sandbox; a body template must render
/// JSON. An error is a failure retrying cannot fix.
pub async fn payload(spec: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<Payload, String> {
    let config = &spec.webhook_config;
    let custom = spec.webhook_type == WebhookType::Custom;
    let get = config.http_method == HttpMethod::Get;
    let body_template = config
        .payload_template
        .as_ref()
        .filter(|_| custom && !get)
        .map(|t| t.source());
    let templated: Vec<&str> = config
        .headers
        .0
        .iter()
        .filter(|(_, value)| custom && template::is_template(value))
        .map(|(name, _)| name.as_str())
        .collect();
    let mut sources: Vec<&str> = body_template.into_iter().collect();
    sources.extend(
        templated
            .iter()
            .map(|name| config.headers.0[*name].as_str()),
    );
    let mut rendered = if sources.is_empty() {
        Vec::new()
    } else {
        let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
        let input = sandbox::RenderInput {
            webhook_name: spec.name.as_str(),
            webhook_type: spec.webhook_type.as_str(),
            events: &bodies,
        };
        sandbox::render_all(&sources, input).await.map_err(|e| {
            match e.index.checked_sub(usize::from(body_template.is_some())) {
                Some(header) => format!("header '{}': {}", templated[header], e.message),
                None => e.message,
            }
        })?
    }
    .into_iter();
    let (body, query) = match (get, body_template) {
        (true, _) => (Vec::new(), Some(query_string(spec, events)?)),
        (false, Some(_)) => {
            let out = rendered.next().expect("the body was rendered first");
            serde_json::from_str::<serde::de::IgnoredAny>(&out)
                .map_err(|e| format!("the template did not render JSON: {e}"))?;
            (out.into_bytes(), None)
        }
        (false, None) => (formatter_for(spec.webhook_type).render(spec, events)?, None),
    };
    let mut headers = Vec::with_capacity(config.headers.0.len());
    for (name, value) in &config.headers.0 {
        if !templated.contains(&name.as_str()) {
            headers.push((name.clone(), value.clone()));
            continue;
        }
        let value = rendered.next().expect("each templated header was rendered");
        headers.push((name.clone(), header_value(&value)));
    }
    Ok(Payload {
        body,
        query,
        headers,
    })
}

/// The longest value a rendered header carries.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;

/// A rendered header value made into one a header can carry, so that what an event holds
/// (an entity named `Café`, a description with a line break) never stops delivery. CR,
/// LF and NUL are dropped: they would end the header. If anything else a header cannot
/// carry remains (other control characters, non-ASCII text), the value goes
/// percent-encoded as UTF-8, `%` included so that it decodes to exactly what was rendered
/// (`Café` → `Caf%C3%A9`); a value that needs nothing goes as rendered. At most
/// [`MAX_HEADER_VALUE_BYTES`] are kept.
pub fn header_value(rendered: &str) -> String {
    let kept: String = rendered
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect();
    let carried = |c: char| c == '\t' || (' '..='~').contains(&c);
    let encode = !kept.chars().all(carried);
    let mut value = String::with_capacity(kept.len().min(MAX_HEADER_VALUE_BYTES));
    let mut utf8 = [0u8; 4];
    for c in kept.chars() {
        let piece = if !encode || (carried(c) && c != '%') {
            c.encode_utf8(&mut utf8).to_owned()
        } else {
            c.encode_utf8(&mut utf8)
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect()
        };
        // Whole characters only: a cut never splits a `%XX` or a character's bytes.
        if value.len() + piece.len() > MAX_HEADER_VALUE_BYTES {
            break;
        }
        value.push_str(&piece);
    }
    value
}

/// The longest query string a GET delivery sends.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// The parameters that say which event a GET request is about: never shortened or
/// dropped, so that two events never give the same request.
pub const IDENTIFYING_PARAMETERS: &[&str] = &[
    "eventId",
    "eventType",
    "entity_id",
    "entity_type",
    "entityId",
    "entityType",
    "timestamp",
    "webhookName",
];

/// A value is not shortened below this many bytes (encoded); past that, parameters are
/// dropped instead.
const SHORTEST_VALUE: usize = 64;

/// One event as query parameters: nested keys joined with `_` as in `seeds/004_*`
/// (`entity_owner_name=alice`, `entity_tags_0_tagFQN=PII.Sensitive`). Past
/// [`MAX_QUERY_BYTES`], the largest values are shortened first, all to one length, as
/// little as needed; when even [`SHORTEST_VALUE`] bytes each do not fit, whole parameters
/// go, largest first. The [`IDENTIFYING_PARAMETERS`] are always sent whole, and
/// `_truncated=true` marks a shortened query.
pub fn query_string(webhook: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<String, String> {
    let [event] = events else {
        return Err(format!(
            "GET sends one event per request, not {}",
            events.len()
        ));
    };
    let value = event_values(webhook, std::slice::from_ref(event))?.remove(0);
    let mut pairs = Vec::new();
    flatten("", &value, &mut pairs);
    let encode =
        |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let params: Vec<(String, String, bool)> = pairs
        .iter()
        .map(|(k, v)| {
            (
                encode(k),
                encode(v),
                IDENTIFYING_PARAMETERS.contains(&k.as_str()),
            )
        })
        .collect();
    // Each parameter costs its key, `=`, its value and a separator.
    let whole: usize = params.iter().map(|(k, v, _)| k.len() + v.len() + 2).sum();
    if whole <= MAX_QUERY_BYTES + 1 {
        return Ok(join(pairs.iter().map(|(k, v)| (k.as_str(), v.clone()))));
    }
    let marker = "_truncated=true";
    let fixed: usize = params
        .iter()
        .filter(|(_, _, id)| *id)
        .map(|(k, v, _)| k.len() + v.len() + 2)
        .sum();
    let room = (MAX_QUERY_BYTES + 1).saturating_sub(fixed + marker.len() + 1);
    let others: Vec<usize> = (0..params.len()).filter(|&i| !params[i].2).collect();
    let cost = |i: usize, cap: usize| params[i].0.len() + params[i].1.len().min(cap) + 2;
    let total = |cap: usize, kept: &dyn Fn(usize) -> bool| -> usize {
        others
            .iter()
            .filter(|&&i| kept(i))
            .map(|&i| cost(i, cap))
            .sum()
    };
    let mut dropped = vec![false; params.len()];
    let cap = if total(SHORTEST_VALUE, &|_| true) <= room {
        // The longest cap that fits: shorten only the values above it.
        let (mut fits, mut too_long) = (SHORTEST_VALUE, MAX_QUERY_BYTES + 1);
        while too_long - fits > 1 {
            let mid = (fits + too_long) / 2;
            if total(mid, &|_| true) <= room {
                fits = mid;
            } else {
                too_long = mid;
            }
        }
        fits
    } else {
        let mut largest = others.clone();
        largest.sort_by_key(|&i| std::cmp::Reverse(cost(i, usize::MAX)));
        for i in largest {
            if total(SHORTEST_VALUE, &|j| !dropped[j]) <= room {
                break;
            }
            dropped[i] = true;
        }
        SHORTEST_VALUE
    };
    let kept = pairs
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped[*i])
        .map(|(i, (k, v))| {
            let value = if params[i].2 {
                v.clone()
            } else {
                shorten(v, cap)
            };
            (k.as_str(), value)
        });
    Ok(join(
        kept.chain(std::iter::once(("_truncated", "true".to_owned()))),
    ))
}

fn join<'a>(pairs: impl Iterator<Item = (&'a str, String)>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        out.append_pair(key, &value);
    }
    out.finish()
}

/// The longest start of `value`, in whole characters, whose form encoding takes at most
/// `cap` bytes.
fn shorten(value: &str, cap: usize) -> String {
    let mut used = 0;
    let mut end = 0;
    for (at, c) in value.char_indices() {
        let size = if c.is_ascii_alphanumeric() || "*-._ ".contains(c) {
            1
        } else {
            3 * c.len_utf8()
        };
        if used + size > cap {
            break;
        }
        used += size;
        end = at + c.len_utf8();
    }
    value[..end].to_owned()
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}_{k}")
        }
    };
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(&key(&i.to_string()), v, out)),
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

// ---- chat formats ----

/// One event, read for people.
struct Summary {
    title: String,
    event_type: String,
    entity_type: String,
    fqn: String,
    user: String,
    when: String,
    event_id: String,
    changes: Vec<String>,
}

/// Longest rendering of one changed value.
const VALUE_CHARS: usize = 120;
/// Changes listed per event; the rest are counted.
const MAX_CHANGES: usize = 15;

impl Summary {
    fn of(event: &LogEvent) -> Self {
        let v: Value = serde_json::from_str(&event.body).unwrap_or(Value::Null);
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let entity_type = s("/entity/type");
        let name = Some(s("/entity/displayName"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| s("/entity/name"));
        let event_type = s("/eventType");
        let verb = match event_type.as_str() {
            "entityCreated" => "created",
            "entityUpdated" => "updated",
            "entitySoftDeleted" => "soft-deleted",
            "entityDeleted" => "deleted",
            "entityRestored" => "restored",
            other => other,
        };
        let mut changes = Vec::new();
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
            title: format!(
                "{} {verb}: {}",
                words(&entity_type),
                if name.is_empty() { "(unnamed)" } else { &name }
            ),
            fqn: Some(s("/entity/fullyQualifiedName"))
                .filter(|f| !f.is_empty())
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
    fn change_lines(
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
fn short(value: &Value) -> String {
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

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// `testCase` → `Test case`.
fn words(camel: &str) -> String {
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

/// Milliseconds since the epoch as `2024-01-15 12:00:00 UTC`.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// What a batch is about, for notification text and summaries: `3 × entityCreated table`.
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

fn headline(summaries: &[Summary]) -> String {
    match summaries {
        [one] => one.title.clone(),
        many => format!("{} metadata changes: {}", many.len(), tally(many)),
    }
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON serializes")
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub mod limits {
    pub const SLACK_BLOCKS: usize = 50;
    pub const SLACK_TEXT: usize = 3000;
    pub const SLACK_HEADER: usize = 150;
    pub const SLACK_FIELDS: usize = 10;
    pub const SLACK_FIELD_TEXT: usize = 2000;
    pub const TEAMS_BYTES: usize = 28 * 1024;
    pub const CHAT_BYTES: usize = 32_000;
    pub const CHAT_TEXT: usize = 4096;
}

/// Slack: Block Kit.
pub struct Slack;

impl Slack {
    fn event_blocks(s: &Summary, webhook: &str) -> Vec<Value> {
        let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": truncate(&format!("*{label}*\n{}", slack_escape(value)), limits::SLACK_FIELD_TEXT)});
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&s.title, limits::SLACK_HEADER), "emoji": false}}),
            json!({"type": "section", "fields": [
                field("Event", &s.event_type), field("Entity type", &s.entity_type),
                field("Changed by", &s.user), field("When", &s.when),
            ]}),
            json!({"type": "section", "text": {"type": "mrkdwn",
                "text": truncate(&format!("*FQN*\n`{}`", slack_escape(&s.fqn)), limits::SLACK_TEXT)}}),
        ];
        if !s.changes.is_empty() {
            let lines = s.change_lines(|f| format!("*{f}*"), slack_escape, "• ");
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
                "text": truncate(&format!("*What changed*\n{lines}"), limits::SLACK_TEXT)}}));
        }
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": truncate(&slack_escape(&format!("outhook · {webhook} · event {}", s.event_id)), limits::SLACK_TEXT)}]}));
        blocks.push(json!({"type": "divider"}));
        blocks
    }
}

impl Formatter for Slack {
    fn render(&self, webhook: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<Vec<u8>, String> {
        let summaries: Vec<Summary> = events.iter().map(|e| Summary::of(e)).collect();
        let mut blocks: Vec<Value> = Vec::new();
        let mut shown = 0;
        for s in &summaries {
            let more = Self::event_blocks(s, webhook.name.as_str());
            // Keep one block for the summary of what does not fit.
            let room = if shown + 1 < summaries.len() {
                limits::SLACK_BLOCKS - 1
            } else {
                limits::SLACK_BLOCKS
            };
            if blocks.len() + more.len() > room {
                break;
            }
            blocks.extend(more);
            shown += 1;
        }
        if shown < summaries.len() {
            let rest = &summaries[shown..];
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(
                &slack_escape(&format!("…and {} more events in this delivery: {}", rest.len(), tally(rest))),
                limits::SLACK_TEXT)}}));
        }
        if blocks.last().is_some_and(|b| b["type"] == "divider") {
            blocks.pop();
        }
        Ok(bytes(
            &json!({"text": truncate(&headline(&summaries), limits::SLACK_TEXT), "blocks": blocks}),
        ))
    }
}

/// Microsoft Teams: an Adaptive Card in a `message` (Teams Workflows webhooks take it).
pub struct Teams;

impl Teams {
    fn event_elements(s: &Summary, first: bool) -> Vec<Value> {
        let mut out = vec![
            json!({"type": "TextBlock", "text": s.title, "weight": "Bolder", "size": "Medium", "wrap": true, "separator": !first}),
            json!({"type": "FactSet", "facts": [
                {"title": "Event", "value": s.event_type},
                {"title": "Entity type", "value": s.entity_type},
                {"title": "FQN", "value": s.fqn},
                {"title": "Changed by", "value": s.user},
                {"title": "When", "value": s.when},
            ]}),
        ];
        if !s.changes.is_empty() {
            out.push(json!({"type": "TextBlock", "wrap": true,
                "text": s.change_lines(|f| format!("**{f}**"), str::to_owned, "- ")}));
        }
        out
    }

    fn message(body: Vec<Value>) -> Value {
        json!({"type": "message", "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": body,
            }
        }]})
    }
}

impl Formatter for Teams {
    fn render(&self, _webhook: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<Vec<u8>, String> {
        let summaries: Vec<Summary> = events.iter().map(|e| Summary::of(e)).collect();
        // Room kept for the closing summary line.
        let budget = limits::TEAMS_BYTES - 600;
        let mut body: Vec<Value> = Vec::new();
        let mut size = bytes(&Self::message(Vec::new())).len();
        let mut shown = 0;
        for (i, s) in summaries.iter().enumerate() {
            let elements = Self::event_elements(s, i == 0);
            let add: usize = elements.iter().map(|e| bytes(e).len() + 1).sum();
            if size + add > budget {
                break;
            }
            size += add;
            body.extend(elements);
            shown += 1;
        }
        if shown < summaries.len() {
            let rest = &summaries[shown..];
            body.push(json!({"type": "TextBlock", "wrap": true, "isSubtle": true, "separator": true,
                "text": truncate(&format!("…and {} more events in this delivery: {}", rest.len(), tally(rest)), 400)}));
        }
        Ok(bytes(&Self::message(body)))
    }
}

/// Google Chat: a card message (`cardsV2`).
pub struct GoogleChat;

/// Google Chat's card text takes a little HTML: escape the rest.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl GoogleChat {
    fn section(s: &Summary) -> Value {
        let decorated = |label: &str, text: &str| json!({"decoratedText": {"topLabel": label, "text": html_escape(text), "wrapText": true}});
        let mut widgets = vec![
            decorated("Event", &format!("{} · {}", s.event_type, s.entity_type)),
            decorated("FQN", &s.fqn),
            decorated("Changed by", &s.user),
            decorated("When", &s.when),
        ];
        if !s.changes.is_empty() {
            widgets.push(json!({"textParagraph": {"text": s.change_lines(|f| format!("<b>{f}</b>"), html_escape, "• ")}}));
        }
        json!({"header": html_escape(&s.title), "collapsible": false, "widgets": widgets})
    }
}

impl Formatter for GoogleChat {
    fn render(&self, webhook: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<Vec<u8>, String> {
        let summaries: Vec<Summary> = events.iter().map(|e| Summary::of(e)).collect();
        let text = truncate(&headline(&summaries), limits::CHAT_TEXT);
        let message = |sections: Vec<Value>| {
            json!({"text": text, "cardsV2": [{"cardId": "outhook", "card": {
                "header": {"title": "Metadata changes", "subtitle": html_escape(webhook.name.as_str())},
                "sections": sections,
            }}]})
        };
        let budget = limits::CHAT_BYTES - 600;
        let mut size = bytes(&message(Vec::new())).len();
        let mut sections = Vec::new();
        for s in &summaries {
            let section = Self::section(s);
            let add = bytes(&section).len() + 1;
            if size + add > budget {
                break;
            }
            size += add;
            sections.push(section);
        }
        if sections.len() < summaries.len() {
            let rest = &summaries[sections.len()..];
            sections.push(json!({"widgets": [{"textParagraph": {"text": html_escape(&truncate(
                &format!("…and {} more events in this delivery: {}", rest.len(), tally(rest)), 400))}}]}));
        }
        Ok(bytes(&message(sections)))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn spec(batch: u32) -> WebhookSpec {
        serde_json::from_value(json!({
            "name": "hook \"one\"", "webhookType": "Generic", "batchSize": batch,
            "eventFilters": [], "webhookConfig": {"endpoint": "https://example.com/"}
        }))
        .unwrap()
    }

    fn event(seq: i64, body: &str) -> Arc<LogEvent> {
        Arc::new(LogEvent::new(seq, uuid::Uuid::new_v4(), body.to_owned()))
    }

    #[test]
    fn one_object_for_batch_size_one() {
        let body = Generic
            .render(&spec(1), &[event(1, r#"{"eventType":"entityCreated"}"#)])
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"eventType": "entityCreated", "webhookName": "hook \"one\""})
        );
    }

    #[test]
    fn always_an_array_for_larger_batches() {
        let one = Generic
            .render(&spec(10), &[event(1, r#"{"a":1}"#)])
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&one).unwrap(),
            json!([{"a": 1, "webhookName": "hook \"one\""}])
        );
        let two = Generic
            .render(&spec(10), &[event(1, r#"{"a":1}"#), event(2, "{}")])
            .unwrap();
        let v: Value = serde_json::from_slice(&two).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1], json!({"webhookName": "hook \"one\""}));
    }

    #[test]
    fn times_and_words() {
        assert_eq!(utc(1705320000000), "2024-01-15 12:00:00 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(words("testCase"), "Test case");
        assert_eq!(words("table"), "Table");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }

    #[test]
    fn rendered_header_values_are_made_valid() {
        for (rendered, sent) in [
            ("plain value, 50% off", "plain value, 50% off"),
            ("Café", "Caf%C3%A9"),
            ("a\r\nb\0c", "abc"),
            ("100% Café\r\n", "100%25 Caf%C3%A9"),
            ("tab\tok", "tab\tok"),
            ("bell\u{7}del\u{7f}", "bell%07del%7F"),
            ("日本", "%E6%97%A5%E6%9C%AC"),
        ] {
            let value = header_value(rendered);
            assert_eq!(value, sent, "{rendered:?}");
            assert!(reqwest::header::HeaderValue::from_str(&value).is_ok());
        }
        let long = header_value(&"é".repeat(3000));
        assert_eq!(
            long.len(),
            MAX_HEADER_VALUE_BYTES - 4,
            "whole characters of 6 bytes"
        );
        assert!(long.ends_with("%C3%A9"));
        assert_eq!(
            header_value(&"x".repeat(5000)).len(),
            MAX_HEADER_VALUE_BYTES
        );
    }

    #[test]
    fn get_flattens_and_bounds() {
        let e = event(
            1,
            r#"{"eventType":"entityCreated","entity":{"name":"a b","tags":[{"tagFQN":"PII"}],"n":null},"x":1}"#,
        );
        let q = query_string(&spec(1), &[e]).unwrap();
        assert_eq!(
            q,
            "entity_name=a+b&entity_tags_0_tagFQN=PII&eventType=entityCreated&webhookName=hook+%22one%22&x=1"
        );
    }

    fn parse_query(q: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn get_shortens_the_largest_values_and_keeps_the_identity() {
        let id = uuid::Uuid::new_v4();
        let body = json!({
            "eventId": id, "eventType": "entityUpdated", "timestamp": 1705320000000i64,
            "entity": {"id": "456e7890-e89b-12d3-a456-426614174111", "type": "table",
                       "name": "orders", "description": "d".repeat(20_000),
                       "aaa": "é".repeat(3000), "owner": {"name": "alice"}},
        });
        let q = query_string(&spec(1), &[event(1, &body.to_string())]).unwrap();
        assert!(q.len() <= MAX_QUERY_BYTES, "{}", q.len());
        let got = parse_query(&q);
        let get = |k: &str| {
            got.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("eventId"), Some(id.to_string().as_str()));
        assert_eq!(get("eventType"), Some("entityUpdated"));
        assert_eq!(get("timestamp"), Some("1705320000000"));
        assert_eq!(
            get("entity_id"),
            Some("456e7890-e89b-12d3-a456-426614174111")
        );
        assert_eq!(get("entity_type"), Some("table"));
        assert_eq!(get("webhookName"), Some("hook \"one\""));
        assert_eq!(get("entity_name"), Some("orders"));
        assert_eq!(get("entity_owner_name"), Some("alice"));
        assert_eq!(get("_truncated"), Some("true"));
        // Both large values are cut to one encoded length, in whole characters, and use
        // the room there is.
        let description = get("entity_description").unwrap();
        let accented = get("entity_aaa").unwrap();
        assert!(description.len() > 1000 && description.chars().all(|c| c == 'd'));
        assert!(accented.chars().all(|c| c == 'é'));
        assert!(description.len().abs_diff(accented.chars().count() * 6) < 6);
        assert!(q.len() > MAX_QUERY_BYTES - 64, "{}", q.len());
        // Another event differs in its request even when everything else is cut.
        let mut other = body.clone();
        other["eventId"] = json!(uuid::Uuid::new_v4());
        assert_ne!(
            q,
            query_string(&spec(1), &[event(2, &other.to_string())]).unwrap()
        );
    }

    #[test]
    fn get_drops_the_largest_parameters_when_shortening_is_not_enough() {
        let mut entity = serde_json::Map::new();
        for i in 0..400 {
            entity.insert(format!("field{i:03}"), json!(format!("{i}").repeat(40)));
        }
        entity.insert("id".into(), json!("456e7890-e89b-12d3-a456-426614174111"));
        entity.insert("type".into(), json!("table"));
        entity.insert("big".into(), json!("b".repeat(1000)));
        let body = json!({"eventId": uuid::Uuid::new_v4(), "eventType": "entityCreated",
                          "timestamp": 1, "entity": entity});
        let q = query_string(&spec(1), &[event(1, &body.to_string())]).unwrap();
        assert!(q.len() <= MAX_QUERY_BYTES, "{}", q.len());
        let got = parse_query(&q);
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        for id in [
            "eventId",
            "eventType",
            "timestamp",
            "entity_id",
            "entity_type",
            "webhookName",
        ] {
            assert!(keys.contains(&id), "{id} kept");
        }
        assert!(!keys.contains(&"entity_big"), "the largest goes first");
        assert_eq!(keys.last(), Some(&"_truncated"));
        // What is kept is cut to the shortest length (a two-digit field's 80 bytes to 64).
        let fields: Vec<&(String, String)> = got
            .iter()
            .filter(|(k, _)| k.starts_with("entity_field"))
            .collect();
        assert!(fields.iter().all(|(_, v)| v.len() <= SHORTEST_VALUE));
        assert!(
            fields
                .iter()
                .any(|(k, v)| k == "entity_field042" && v.len() == SHORTEST_VALUE)
        );
        assert!(fields.len() > 50, "{}", fields.len());
    }
}
