//! Google Chat: a `cardsV2` message, a section per event, within 32,000 bytes.

use serde_json::{Value, json};

use super::summary::{Summary, bytes, escape_markup, headline, more_events, truncate};
use super::{Batch, FormatError, Formatter, limits};
use crate::domain::webhook::WebhookSpec;

/// Google Chat: a card message (`cardsV2`).
pub struct GoogleChat;

impl GoogleChat {
    fn section(s: &Summary) -> Value {
        let decorated = |label: &str, text: &str| json!({"decoratedText": {"topLabel": label, "text": escape_markup(text), "wrapText": true}});
        let mut widgets = vec![
            decorated("Event", &format!("{} · {}", s.event_type, s.entity_type)),
            decorated("FQN", &s.fqn),
            decorated("Changed by", &s.user),
            decorated("When", &s.when),
        ];
        if !s.changes.is_empty() {
            widgets.push(json!({"textParagraph": {"text": s.change_lines(|f| format!("<b>{f}</b>"), escape_markup, "• ")}}));
        }
        json!({"header": escape_markup(&s.title), "collapsible": false, "widgets": widgets})
    }
}

impl Formatter for GoogleChat {
    fn render(&self, webhook: &WebhookSpec, events: &Batch) -> Result<Vec<u8>, FormatError> {
        let summaries = Summary::all(events);
        let text = truncate(&headline(&summaries), limits::CHAT_TEXT);
        let message = |sections: Vec<Value>| {
            json!({"text": text, "cardsV2": [{"cardId": "outhook", "card": {
                "header": {"title": "Metadata changes", "subtitle": escape_markup(webhook.name.as_str())},
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
            sections.push(
                json!({"widgets": [{"textParagraph": {"text": escape_markup(&truncate(
                &more_events(rest), 400))}}]}),
            );
        }
        Ok(bytes(&message(sections)))
    }
}
