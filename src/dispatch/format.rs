//! Turning a batch of events into a request body. The pipeline takes any [`Formatter`];
//! every webhook type uses the generic body until the chat formats exist.

use std::sync::Arc;

use super::LogEvent;
use crate::domain::webhook::{WebhookSpec, WebhookType};

/// Renders the body of one delivery. An error is a delivery failure that retrying cannot fix.
pub trait Formatter: Send + Sync {
    fn render(&self, webhook: &WebhookSpec, events: &[Arc<LogEvent>]) -> Result<Vec<u8>, String>;
}

/// The body for a webhook type.
pub fn formatter_for(_webhook_type: WebhookType) -> &'static dyn Formatter {
    &Generic
}

/// The event JSON of `seeds/002_*`, each with `webhookName`: with batchSize 1 one event
/// object, otherwise always a JSON array.
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
}
