//! Custom: the webhook's templates (its body, and headers that use template syntax),
//! rendered together in the sandbox, one round trip per delivery. A Custom webhook
//! without a body template sends the generic body.

use std::collections::BTreeMap;

use super::headers::header_value;
use super::{Batch, FormatError};
use crate::dispatch::sandbox;
use crate::domain::template;
use crate::domain::webhook::{HttpMethod, WebhookSpec, WebhookType};

/// What a webhook's templates rendered to; empty for a webhook with none.
#[derive(Default)]
pub(super) struct Rendered<'a> {
    /// The body, when a body template applies (Custom, not GET); JSON.
    pub body: Option<Vec<u8>>,
    /// Each templated header's value, made valid for a header, by the header's name.
    pub headers: BTreeMap<&'a str, String>,
}

/// Renders a Custom webhook's templates for a batch. A body template must render JSON.
pub(super) async fn render<'a>(
    spec: &'a WebhookSpec,
    events: &Batch,
) -> Result<Rendered<'a>, FormatError> {
    let config = &spec.webhook_config;
    if spec.webhook_type != WebhookType::Custom {
        return Ok(Rendered::default());
    }
    let body_template = config
        .payload_template
        .as_ref()
        .filter(|_| config.http_method != HttpMethod::Get)
        .map(|t| t.source());
    let templated: Vec<(&str, &str)> = config
        .headers
        .0
        .iter()
        .filter(|(_, value)| template::is_template(value))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut sources: Vec<&str> = body_template.into_iter().collect();
    sources.extend(templated.iter().map(|(_, source)| *source));
    if sources.is_empty() {
        return Ok(Rendered::default());
    }
    let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
    let input = sandbox::RenderInput {
        webhook_name: spec.name.as_str(),
        webhook_type: spec.webhook_type.as_str(),
        events: &bodies,
    };
    let mut rendered = sandbox::render_all(&sources, input)
        .await
        .map_err(|e| {
            // The body's template comes first, then the headers' in their order.
            match e.index.checked_sub(usize::from(body_template.is_some())) {
                Some(header) => FormatError::HeaderTemplate {
                    header: templated[header].0.to_owned(),
                    message: e.message,
                },
                None => FormatError::Template(e.message),
            }
        })?
        .into_iter();
    let body = match body_template {
        Some(_) => {
            let out = rendered.next().expect("the body was rendered first");
            serde_json::from_str::<serde::de::IgnoredAny>(&out).map_err(FormatError::NotJson)?;
            Some(out.into_bytes())
        }
        None => None,
    };
    let headers = templated
        .iter()
        .map(|(name, _)| {
            let value = rendered.next().expect("each templated header was rendered");
            (*name, header_value(&value))
        })
        .collect();
    Ok(Rendered { body, headers })
}
