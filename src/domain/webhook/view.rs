//! The webhook resource as the API shows it: the secret masked, and the values of
//! credential headers masked wherever they appear, change records included.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::config::{BatchSize, MASKED_SECRET, WebhookConfig};
use super::headers::Headers;
use super::spec::WebhookName;
use super::types::{WebhookStatus, WebhookType};
use super::{FailureDetails, Webhook};
use crate::clock::Millis;
use crate::domain::change::{ChangeDescription, Version};
use crate::domain::filter::EventFilters;
use crate::domain::reference::{DomainRef, OwnerRef, Tags};
use crate::domain::text::Text;

/// The webhook resource as returned by the API (the seed schema, field for field).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: Uuid,
    pub name: WebhookName,
    pub fully_qualified_name: WebhookName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text<256>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Text<65536>>,
    pub webhook_type: WebhookType,
    pub status: WebhookStatus,
    pub enabled: bool,
    pub batch_size: BatchSize,
    pub event_filters: EventFilters,
    pub webhook_config: WebhookConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_details: Option<FailureDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
    pub tags: Tags,
    pub version: Version,
    pub updated_at: Millis,
    pub updated_by: String,
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_description: Option<ChangeDescription>,
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRef>,
}

impl Webhook {
    /// The resource as the API shows it (secret masked, `href` under `base`).
    pub fn view(&self, base: &str) -> WebhookView {
        let s = &self.spec;
        WebhookView {
            id: self.id,
            name: s.name.clone(),
            fully_qualified_name: s.name.clone(),
            display_name: s.display_name.clone(),
            description: s.description.clone(),
            webhook_type: s.webhook_type,
            status: self.shown_status(),
            enabled: s.enabled,
            batch_size: s.batch_size,
            event_filters: s.event_filters.clone(),
            webhook_config: WebhookConfig {
                headers: s.webhook_config.headers.masked(),
                ..s.webhook_config.clone()
            },
            failure_details: self.failure_details.clone(),
            owner: s.owner.clone(),
            tags: s.tags.clone(),
            version: self.version,
            updated_at: self.updated_at,
            updated_by: self.updated_by.clone(),
            href: format!("{base}/api/v1/webhooks/{}", self.id),
            // Masked here too: records written before credential headers were masked.
            change_description: self.change_description.clone().map(mask_credentials),
            deleted: self.deleted,
            domain: s.domain.clone(),
        }
    }
}

/// A change record with the values of credential headers masked, wherever the record
/// holds them: the header itself, the headers object, or the whole configuration.
pub(super) fn mask_credentials(mut change: ChangeDescription) -> ChangeDescription {
    fn mask_headers(headers: Option<&mut serde_json::Value>) {
        let Some(serde_json::Value::Object(headers)) = headers else {
            return;
        };
        for (name, value) in headers.iter_mut() {
            if Headers::is_credential(name) {
                *value = MASKED_SECRET.into();
            }
        }
    }
    let fields = change
        .fields_added
        .iter_mut()
        .chain(change.fields_updated.iter_mut())
        .chain(change.fields_deleted.iter_mut());
    for field in fields {
        let values = field.old_value.iter_mut().chain(field.new_value.iter_mut());
        match field.name.as_str() {
            "webhookConfig" => values.for_each(|v| mask_headers(v.get_mut("headers"))),
            "webhookConfig.headers" => values.for_each(|v| mask_headers(Some(v))),
            name => {
                if let Some(header) = name.strip_prefix("webhookConfig.headers.")
                    && Headers::is_credential(header)
                {
                    values.for_each(|v| *v = MASKED_SECRET.into());
                }
            }
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{minimal, parse};
    use super::*;

    #[test]
    fn credential_headers_are_masked_in_debug_and_views() {
        let mut doc = minimal();
        doc["webhookConfig"]["headers"] =
            json!({"Authorization": "Bearer abc", "X-Session-Id": "s1", "X-Team": "data"});
        let spec = parse(doc).unwrap();
        assert!(!format!("{spec:?}").contains("abc") && !format!("{spec:?}").contains("s1"));
        let view = serde_json::to_value(Webhook::create(spec, "a", 1).view("")).unwrap();
        assert_eq!(
            view["webhookConfig"]["headers"],
            json!({"Authorization": MASKED_SECRET, "X-Session-Id": MASKED_SECRET, "X-Team": "data"})
        );
        for name in [
            "authorization",
            "PROXY-AUTHORIZATION",
            "Cookie",
            "X-Api-Key",
            "X-Auth-Token",
            "Client-Secret",
            "X-Password",
        ] {
            assert!(Headers::is_credential(name), "{name}");
        }
        for name in ["X-Team", "Accept", "X-Request-Source", "Content-Type"] {
            assert!(!Headers::is_credential(name), "{name}");
        }
    }
}
