//! Generic: the event JSON of `seeds/002_*` with `webhookName`, one object for batchSize
//! 1, otherwise always an array. Stored bodies are spliced, not parsed again.

use super::{Batch, FormatError, Formatter};
use crate::domain::webhook::WebhookSpec;

/// The event JSON of `seeds/002_*`, each with `webhookName`.
pub struct Generic;

impl Formatter for Generic {
    fn render(&self, webhook: &WebhookSpec, events: &Batch) -> Result<Vec<u8>, FormatError> {
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
            return Err(FormatError::BatchSizeOne(events.len()));
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
                return Err(FormatError::NotAnObject { seq: event.seq });
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
    use serde_json::{Value, json};

    use super::super::tests::{event, spec};
    use super::*;

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
