//! Microsoft Teams: a `message` with an Adaptive Card (a FactSet per event) within 28 KB.

use serde_json::{Value, json};

use super::summary::{Summary, bytes, more_events, truncate};
use super::{Batch, FormatError, Formatter, limits};
use crate::domain::webhook::WebhookSpec;

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
    fn render(&self, _webhook: &WebhookSpec, events: &Batch) -> Result<Vec<u8>, FormatError> {
        let summaries = Summary::all(events);
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
            body.push(
                json!({"type": "TextBlock", "wrap": true, "isSubtle": true, "separator": true,
                "text": truncate(&more_events(rest), 400)}),
            );
        }
        Ok(bytes(&Self::message(body)))
    }
}
