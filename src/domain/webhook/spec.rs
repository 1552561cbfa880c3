//! What users write of a webhook ([`WebhookSpec`]), and the rules across its fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::config::{BatchSize, SecretKey, WebhookConfig};
use super::types::{HttpMethod, WebhookType};
use crate::domain::checked_string;
use crate::domain::filter::EventFilters;
use crate::domain::reference::{DomainRef, OwnerRef, Tags};
use crate::domain::template;
use crate::domain::text::{Text, check_text};

checked_string!(
    /// A webhook's name: 1–256 characters, no `::` (OpenMetadata's entityName), no control
    /// characters. Unique among webhooks, soft-deleted ones included.
    WebhookName schema(min 1, max 256),
    |v| {
        check_text(v, 1, 256, false)?;
        if v.contains("::") {
            return Err("must not contain '::'".into());
        }
        Ok(())
    }
);

/// Everything about a webhook that its users write. Server-owned fields live on
/// [`Webhook`](super::Webhook).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    pub name: WebhookName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text<256>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Text<65536>>,
    pub webhook_type: WebhookType,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub batch_size: BatchSize,
    pub event_filters: EventFilters,
    pub webhook_config: WebhookConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRef>,
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

fn enabled_by_default() -> bool {
    true
}

impl WebhookSpec {
    /// Rules across fields, and rules added after webhooks were first stored (a stored
    /// webhook must still load); the error names the field. Called on what is written,
    /// after parsing.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let config = &self.webhook_config;
        if config.payload_template.is_some() && self.webhook_type != WebhookType::Custom {
            return Err((
                "webhookConfig.payloadTemplate",
                "is only for webhookType Custom".into(),
            ));
        }
        if config.http_method == HttpMethod::Get {
            if self.batch_size.get() != 1 {
                return Err((
                    "webhookConfig.httpMethod",
                    "GET sends one event per request: set batchSize to 1".into(),
                ));
            }
            if config.payload_template.is_some() {
                return Err((
                    "webhookConfig.httpMethod",
                    "GET has no body for a payloadTemplate".into(),
                ));
            }
            if self.webhook_type != WebhookType::Generic && self.webhook_type != WebhookType::Custom
            {
                return Err((
                    "webhookConfig.httpMethod",
                    "chat destinations take POST".into(),
                ));
            }
        }
        if let Some(secret) = config.secret_key.as_ref().filter(|s| !s.is_mask()) {
            secret
                .check_for(config.signature_scheme)
                .map_err(|e| ("webhookConfig.secretKey", e.to_string()))?;
        }
        config
            .headers
            .check_written()
            .map_err(|e| ("webhookConfig.headers", e))?;
        if let Some(template) = &config.payload_template {
            template::check_written(template.source())
                .map_err(|e| ("webhookConfig.payloadTemplate", e.to_string()))?;
        }
        if self.webhook_type == WebhookType::Custom {
            for (name, value) in &config.headers.0 {
                if template::is_template(value) {
                    template::check_written(value)
                        .map_err(|e| ("webhookConfig.headers", format!("header '{name}': {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// Refuses the mask where it stands for no value: a `secretKey` or a credential header
    /// of `********` on a new webhook (`current` is `None`), or a credential header the
    /// current webhook does not have.
    pub fn check_masks(&self, current: Option<&WebhookSpec>) -> Result<(), (&'static str, String)> {
        let config = &self.webhook_config;
        if current.is_none() && config.secret_key.as_ref().is_some_and(SecretKey::is_mask) {
            return Err((
                "webhookConfig.secretKey",
                "the mask '********' stands for an existing secret; a new webhook needs the secret itself".into(),
            ));
        }
        if let Some(name) = config
            .headers
            .unresolved_mask(current.map(|c| &c.webhook_config.headers))
        {
            return Err((
                "webhookConfig.headers",
                format!(
                    "header '{name}': the mask '********' stands for an existing value; give the value itself"
                ),
            ));
        }
        Ok(())
    }

    /// Fields of the resource that only the server sets. A create or update body may carry
    /// them (a client sending back what it read); they are ignored there.
    pub const SERVER_OWNED: &'static [&'static str] = &[
        "id",
        "fullyQualifiedName",
        "status",
        "failureDetails",
        "version",
        "updatedAt",
        "updatedBy",
        "href",
        "changeDescription",
        "deleted",
    ];
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{minimal, parse};
    use crate::domain::webhook::MASKED_SECRET;

    #[test]
    fn defaults_follow_the_seed_schema() {
        let spec = parse(minimal()).unwrap();
        assert!(spec.enabled);
        assert_eq!(spec.batch_size.get(), 10);
        assert_eq!(spec.webhook_config.timeout.get(), 10);
        assert_eq!(spec.event_filters.0[0].entities.0[0].as_str(), "*");
        assert!(!spec.webhook_config.send_to_owners);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("/name", json!("a::b"), "name"),
            ("/batchSize", json!(0), "batchSize"),
            ("/batchSize", json!(1001), "batchSize"),
            ("/webhookType", json!("Email"), "webhookType"),
            (
                "/webhookConfig/endpoint",
                json!("ftp://x/y"),
                "webhookConfig.endpoint",
            ),
            (
                "/webhookConfig/endpoint",
                json!("/relative"),
                "webhookConfig.endpoint",
            ),
            (
                "/webhookConfig/timeout",
                json!(301),
                "webhookConfig.timeout",
            ),
            (
                "/webhookConfig/headers",
                json!({"X-A": "a\r\nb"}),
                "webhookConfig.headers",
            ),
            (
                "/webhookConfig/headers",
                json!({"Host": "h"}),
                "webhookConfig.headers",
            ),
            (
                "/eventFilters/0/eventType",
                json!("entityExploded"),
                "eventFilters[0].eventType",
            ),
            (
                "/eventFilters/0/entities",
                json!([]),
                "eventFilters[0].entities",
            ),
            (
                "/eventFilters/0/include",
                json!(["color:red"]),
                "eventFilters[0].include[0]",
            ),
            (
                "/eventFilters/0/include",
                json!(["entityId:nope"]),
                "eventFilters[0].include[0]",
            ),
            ("/owner", json!({"type": "robot", "name": "x"}), "owner"),
            ("/owner", json!({"type": "user"}), "owner"),
            ("/domain", json!({"type": "team", "name": "x"}), "domain"),
            ("/tags", json!([{"tagFQN": "A"}, {"tagFQN": "A"}]), "tags"),
            ("/surprise", json!(1), "surprise"),
        ];
        for (pointer, value, field) in cases {
            let mut doc = minimal();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut doc
            } else {
                doc.pointer_mut(parent).unwrap()
            };
            target[key] = value;
            let err = parse(doc).expect_err(pointer);
            assert!(err.contains(field), "{pointer}: {err}");
        }
    }

    #[test]
    fn secrets_never_serialize() {
        let mut doc = minimal();
        doc["webhookConfig"]["secretKey"] = json!("s3cret");
        let spec = parse(doc).unwrap();
        let out = serde_json::to_string(&spec).unwrap();
        assert!(!out.contains("s3cret"));
        assert!(out.contains(MASKED_SECRET));
        assert!(!format!("{spec:?}").contains("s3cret"));
        assert_eq!(spec.webhook_config.secret_key.unwrap().expose(), "s3cret");
    }

    #[test]
    fn rules_added_later_refuse_what_is_written_but_stored_webhooks_still_load() {
        let mut doc = minimal();
        doc["webhookType"] = json!("Custom");
        doc["webhookConfig"]["payloadTemplate"] = json!("{{ x | nosuchfilter }}");
        for (headers, refused) in [
            (json!({"Keep-Alive": "timeout=5"}), "hop-by-hop"),
            (
                json!({"Content-Type": "application/jsonx"}),
                "JSON in UTF-8",
            ),
        ] {
            doc["webhookConfig"]["headers"] = headers;
            let stored = parse(doc.clone()).expect("a webhook stored before the rules loads");
            let (field, message) = stored.check().unwrap_err();
            assert_eq!(field, "webhookConfig.headers", "{message}");
            assert!(message.contains(refused), "{message}");
        }
        doc["webhookConfig"]["headers"] =
            json!({"Content-Type": "application/json; charset=UTF-8"});
        let (field, message) = parse(doc).unwrap().check().unwrap_err();
        assert_eq!(field, "webhookConfig.payloadTemplate", "{message}");
        assert!(
            message.contains("unknown filter 'nosuchfilter'"),
            "{message}"
        );
    }

    #[test]
    fn empty_secret_means_none_and_null_tags_mean_none() {
        let mut doc = minimal();
        doc["webhookConfig"]["secretKey"] = json!("");
        doc["tags"] = json!(null);
        let spec = parse(doc).unwrap();
        assert!(spec.webhook_config.secret_key.is_none());
        assert!(spec.tags.is_empty());
    }

    #[test]
    fn generated_secrets_suit_their_scheme() {
        use crate::domain::signature::SignatureScheme;
        use crate::domain::webhook::SecretKey;
        for scheme in [
            SignatureScheme::OpenMetadata,
            SignatureScheme::OpenMetadataBase64,
            SignatureScheme::StandardWebhooks,
        ] {
            let secret = SecretKey::generate(scheme);
            assert_eq!(secret.check_for(scheme), Ok(()), "{scheme}");
            assert_ne!(secret, SecretKey::generate(scheme));
        }
        let plain = SecretKey::generate(SignatureScheme::OpenMetadata);
        assert!(plain.check_for(SignatureScheme::StandardWebhooks).is_err());
    }
}
