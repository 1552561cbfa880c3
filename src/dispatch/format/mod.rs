//! Turning a batch of events into a request, per destination, one formatter a file:
//! `generic` (the event JSON), `slack`, `teams`, `chat` (Google Chat), `custom` (the
//! webhook's own template), and `query` for GET.
//!
//! A batch too large for a chat message is summarised at its end, never cut off or refused.
//! Formatting is pure: the same events give the same bytes (tests keep golden files).
//! Only templates, which users write, run elsewhere: in a child process (`sandbox`).

mod activity;
mod chat;
mod custom;
mod fixture;
mod generic;
mod headers;
mod query;
mod slack;
mod summary;
mod teams;

use std::sync::Arc;

pub use chat::GoogleChat;
pub use fixture::test_event;
pub use generic::Generic;
pub use headers::{MAX_HEADER_VALUE_BYTES, header_value};
pub use query::{IDENTIFYING_PARAMETERS, MAX_QUERY_BYTES, query_string};
pub use slack::Slack;
pub use teams::Teams;

use super::event::LogEvent;
use crate::domain::delivery::{AttemptResult, ErrorKind};
use crate::domain::webhook::{HttpMethod, WebhookSpec, WebhookType};

/// The events of one delivery, in log order.
pub type Batch = [Arc<LogEvent>];

/// Why a batch cannot be made into a request: a failure retrying cannot fix. Its text is
/// the delivery's reason in the log and in `failureDetails`.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("batchSize 1 with {0} events")]
    BatchSizeOne(usize),
    #[error("GET sends one event per request, not {0}")]
    GetTakesOneEvent(usize),
    #[error("stored event {seq} is not a JSON object")]
    NotAnObject { seq: i64 },
    #[error("stored event {seq}: {source}")]
    StoredEvent { seq: i64, source: serde_json::Error },
    /// The body template did not render (the sandbox's reason).
    #[error("{0}")]
    Template(String),
    /// A header's template did not render.
    #[error("header '{header}': {message}")]
    HeaderTemplate { header: String, message: String },
    #[error("the template did not render JSON: {0}")]
    NotJson(serde_json::Error),
}

/// A batch that cannot be formatted fails its attempt for good; the reason is the text.
impl From<FormatError> for AttemptResult {
    fn from(error: FormatError) -> Self {
        AttemptResult::error(ErrorKind::Render, error.to_string())
    }
}

/// Renders the body of one delivery in one of outhook's own formats. An error is a failure
/// retrying cannot fix.
pub trait Formatter: Send + Sync {
    fn render(&self, webhook: &WebhookSpec, events: &Batch) -> Result<Vec<u8>, FormatError>;
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
pub async fn payload(spec: &WebhookSpec, events: &Batch) -> Result<Payload, FormatError> {
    let rendered = custom::render(spec, events).await?;
    let get = spec.webhook_config.http_method == HttpMethod::Get;
    let (body, query) = match (get, rendered.body) {
        (true, _) => (Vec::new(), Some(query_string(spec, events)?)),
        (false, Some(body)) => (body, None),
        (false, None) => (formatter_for(spec.webhook_type).render(spec, events)?, None),
    };
    Ok(Payload {
        body,
        query,
        headers: headers::with_rendered(&spec.webhook_config.headers, rendered.headers),
    })
}

/// The bounds of the chat formats.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn spec(batch: u32) -> WebhookSpec {
        serde_json::from_value(json!({
            "name": "hook \"one\"", "webhookType": "Generic", "batchSize": batch,
            "eventFilters": [], "webhookConfig": {"endpoint": "https://example.com/"}
        }))
        .unwrap()
    }

    pub(super) fn event(seq: i64, body: &str) -> Arc<LogEvent> {
        Arc::new(LogEvent::new(seq, uuid::Uuid::new_v4(), body.to_owned()))
    }
}
