//! Slack: a Block Kit message, a section per event, within Slack's limits (50 blocks,
//! 3000 characters per text, 10 fields per section, 150 per header).

use serde_json::{Value, json};

use super::summary::{Summary, bytes, escape_markup, headline, more_events, truncate};
use super::{Batch, FormatError, Formatter, limits};
use crate::domain::webhook::WebhookSpec;

/// Slack: Block Kit.
pub struct Slack;

impl Slack {
    fn event_blocks(s: &Summary, webhook: &str) -> Vec<Value> {
        let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": truncate(&format!("*{label}*\n{}", escape_markup(value)), limits::SLACK_FIELD_TEXT)});
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&s.title, limits::SLACK_HEADER), "emoji": false}}),
            json!({"type": "section", "fields": [
                field("Event", &s.event_type), field("Entity type", &s.entity_type),
                field("Changed by", &s.user), field("When", &s.when),
            ]}),
            json!({"type": "section", "text": {"type": "mrkdwn",
                "text": truncate(&format!("*FQN*\n`{}`", escape_markup(&s.fqn)), limits::SLACK_TEXT)}}),
        ];
        if !s.changes.is_empty() {
            let lines = s.change_lines(|f| format!("*{f}*"), escape_markup, "• ");
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
                "text": truncate(&format!("*What changed*\n{lines}"), limits::SLACK_TEXT)}}));
        }
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": truncate(&escape_markup(&format!("outhook · {webhook} · event {}", s.event_id)), limits::SLACK_TEXT)}]}));
        blocks.push(json!({"type": "divider"}));
        blocks
    }
}

impl Formatter for Slack {
    fn render(&self, webhook: &WebhookSpec, events: &Batch) -> Result<Vec<u8>, FormatError> {
        let summaries = Summary::all(events);
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
            blocks.push(
                json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(
                &escape_markup(&more_events(rest)),
                limits::SLACK_TEXT)}}),
            );
        }
        if blocks.last().is_some_and(|b| b["type"] == "divider") {
            blocks.pop();
        }
        Ok(bytes(
            &json!({"text": truncate(&headline(&summaries), limits::SLACK_TEXT), "blocks": blocks}),
        ))
    }
}
