//! The webhook resource of `seeds/002_*` (OpenMetadata's Webhook entity), as validated
//! types, and its lifecycle: created, updated (a new version with a change record),
//! soft-deleted and restored, its secret rotated.
//!
//! - `spec`: what users write ([`WebhookSpec`]) and the rules across its fields;
//! - `config`: where and how deliveries go ([`WebhookConfig`]: endpoint, secret, timeout,
//!   method, template) and `headers`, the custom request headers ([`Headers`]);
//! - `types`: the webhook's string enums;
//! - `view`: the resource as the API shows it ([`WebhookView`]), secrets masked.
//!
//! The filters a webhook selects events with are [`crate::domain::filter`].

mod config;
mod headers;
mod spec;
mod types;
mod view;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::change::{ChangeDescription, Version};
use crate::clock::Millis;
pub use config::{
    BatchSize, EndpointUrl, MASKED_SECRET, PayloadTemplate, SecretKey, TimeoutSecs, WebhookConfig,
};
pub use headers::Headers;
pub use spec::{WebhookName, WebhookSpec};
pub use types::{HttpMethod, WebhookStatus, WebhookType};
pub use view::WebhookView;
use view::mask_credentials;

/// The last delivery failure (SPEC §6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failed_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failed_status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failed_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Millis>,
}

/// How long a rotated-out secret keeps signing by default.
pub const SECRET_GRACE_MS: Millis = 24 * 3600 * 1000;

/// A rotated-out secret and when it stops signing.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousSecret {
    pub key: SecretKey,
    pub until: Millis,
}

/// A stored webhook: the user's spec plus what the server owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: Uuid,
    pub spec: WebhookSpec,
    pub status: WebhookStatus,
    pub failure_details: Option<FailureDetails>,
    pub version: Version,
    pub updated_at: Millis,
    pub updated_by: String,
    pub change_description: Option<ChangeDescription>,
    pub deleted: bool,
    /// Set when the secret changes: receivers may still hold the old one for a while.
    pub previous_secret: Option<PreviousSecret>,
}

impl Webhook {
    /// The rotated-out secret, while it still signs at `now`.
    pub fn signing_previous(&self, now: Millis) -> Option<&SecretKey> {
        self.previous_secret
            .as_ref()
            .filter(|p| now < p.until)
            .map(|p| &p.key)
    }

    /// The next version with a new secret; the current one keeps signing for `grace_ms`.
    pub fn with_rotated_secret(
        &self,
        secret: SecretKey,
        grace_ms: Millis,
        by: &str,
        now: Millis,
    ) -> Self {
        let mut spec = self.spec.clone();
        spec.webhook_config.secret_key = Some(secret);
        let mut next = self
            .updated(spec, Resume::No, by, now)
            .unwrap_or_else(|| self.clone());
        next.previous_secret = self
            .spec
            .webhook_config
            .secret_key
            .clone()
            .filter(|_| grace_ms > 0)
            .map(|key| PreviousSecret {
                key,
                until: now + grace_ms,
            });
        next
    }

    /// The status the API shows: `disabled` when not enabled, else the delivery status.
    pub fn shown_status(&self) -> WebhookStatus {
        if self.spec.enabled {
            self.status
        } else {
            WebhookStatus::Disabled
        }
    }

    /// Whether going from `self` to `next` clears the delivery state (a resume, or enabling).
    pub fn resumes_delivery(&self, next: &Webhook) -> bool {
        next.spec.enabled && (!self.spec.enabled || next.status != self.status)
    }
}

/// How an update treats the delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Leave the delivery status as it is (unless `enabled` changes).
    No,
    /// An admin asked for `status: active`: leave any failure state and deliver again.
    Yes,
}

impl Webhook {
    /// A new webhook at version 0.1.
    pub fn create(spec: WebhookSpec, by: &str, now: Millis) -> Self {
        Self {
            id: Uuid::new_v4(),
            status: WebhookStatus::Active,
            spec,
            failure_details: None,
            version: Version::INITIAL,
            updated_at: now,
            updated_by: by.to_owned(),
            change_description: None,
            deleted: false,
            previous_secret: None,
        }
    }

    /// The next version of this webhook with `spec` written over its own, or `None` when
    /// nothing would change. A `secretKey` equal to the mask keeps the current secret.
    pub fn updated(
        &self,
        mut spec: WebhookSpec,
        resume: Resume,
        by: &str,
        now: Millis,
    ) -> Option<Self> {
        let config = &mut spec.webhook_config;
        if config.secret_key.as_ref().is_some_and(SecretKey::is_mask) {
            config.secret_key = self.spec.webhook_config.secret_key.clone();
        }
        config
            .headers
            .keep_masked_from(&self.spec.webhook_config.headers);
        let mut change = ChangeDescription::new(self.version);
        // Secrets serialize masked, so the diff shows a secret added or removed, never its
        // value; credential headers are masked in the record once compared.
        change.record_diff("", &to_doc(&self.spec), &to_doc(&spec));
        change = mask_credentials(change);
        if let (Some(old), Some(new)) = (
            &self.spec.webhook_config.secret_key,
            &spec.webhook_config.secret_key,
        ) && old != new
        {
            change.updated(
                "webhookConfig.secretKey",
                MASKED_SECRET.into(),
                MASKED_SECRET.into(),
            );
        }
        let mut status = self.status;
        let mut failure_details = self.failure_details.clone();
        let enabling = spec.enabled && !self.spec.enabled;
        let resuming =
            resume == Resume::Yes && spec.enabled && self.status != WebhookStatus::Active;
        if enabling || resuming {
            status = WebhookStatus::Active;
            // The failure history stays visible; only the scheduled retry goes away.
            if let Some(details) = failure_details.as_mut() {
                details.next_attempt = None;
            }
        }
        let shown_after = if spec.enabled {
            status
        } else {
            WebhookStatus::Disabled
        };
        if self.shown_status() != shown_after {
            change.updated(
                "status",
                self.shown_status().as_str().into(),
                shown_after.as_str().into(),
            );
        }
        if change.is_empty() {
            return None;
        }
        let previous_secret = match (
            &self.spec.webhook_config.secret_key,
            &spec.webhook_config.secret_key,
        ) {
            (Some(old), Some(new)) if old != new => Some(PreviousSecret {
                key: old.clone(),
                until: now + SECRET_GRACE_MS,
            }),
            (_, None) => None,
            _ => self.previous_secret.clone(),
        };
        Some(Self {
            spec,
            status,
            failure_details,
            previous_secret,
            version: self.version.next(),
            updated_at: now,
            updated_by: by.to_owned(),
            change_description: Some(change),
            ..self.clone()
        })
    }

    /// The next version with `deleted` set (soft delete) or cleared (restore).
    pub fn with_deleted(&self, deleted: bool, by: &str, now: Millis) -> Self {
        let mut change = ChangeDescription::new(self.version);
        change.updated("deleted", self.deleted.into(), deleted.into());
        Self {
            deleted,
            version: self.version.next(),
            updated_at: now,
            updated_by: by.to_owned(),
            change_description: Some(change),
            ..self.clone()
        }
    }
}

fn to_doc(spec: &WebhookSpec) -> serde_json::Value {
    serde_json::to_value(spec).expect("a webhook spec always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn parse(v: serde_json::Value) -> Result<WebhookSpec, String> {
        serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    pub(super) fn minimal() -> serde_json::Value {
        json!({
            "name": "w", "webhookType": "Generic",
            "eventFilters": [{"eventType": "entityCreated"}],
            "webhookConfig": {"endpoint": "https://example.com/hook"}
        })
    }

    fn webhook() -> Webhook {
        Webhook::create(parse(minimal()).unwrap(), "admin", 1_000)
    }

    #[test]
    fn updates_bump_the_version_and_describe_the_change() {
        let w = webhook();
        assert_eq!(w.version, Version::INITIAL);
        assert_eq!(w.status, WebhookStatus::Active);
        let mut doc = minimal();
        doc["enabled"] = json!(false);
        doc["webhookConfig"]["timeout"] = json!(30);
        let next = w
            .updated(parse(doc).unwrap(), Resume::No, "bob", 2_000)
            .unwrap();
        assert_eq!(next.version.tenths(), 2);
        assert_eq!(next.shown_status(), WebhookStatus::Disabled);
        assert_eq!(
            next.status,
            WebhookStatus::Active,
            "the delivery status is kept underneath"
        );
        assert!(!w.resumes_delivery(&next));
        assert_eq!((next.updated_by.as_str(), next.updated_at), ("bob", 2_000));
        let change = next.change_description.unwrap();
        let names: Vec<_> = change
            .fields_updated
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["enabled", "webhookConfig.timeout", "status"]);
        assert_eq!(change.previous_version, Version::INITIAL);
    }

    #[test]
    fn an_identical_update_is_no_change() {
        let w = webhook();
        assert!(
            w.updated(w.spec.clone(), Resume::No, "bob", 2_000)
                .is_none()
        );
    }

    #[test]
    fn the_mask_keeps_the_secret_and_a_new_secret_is_recorded_masked() {
        let mut doc = minimal();
        doc["webhookConfig"]["secretKey"] = json!("first");
        let w = Webhook::create(parse(doc.clone()).unwrap(), "a", 1);
        doc["webhookConfig"]["secretKey"] = json!(MASKED_SECRET);
        assert!(
            w.updated(parse(doc.clone()).unwrap(), Resume::No, "a", 2)
                .is_none()
        );
        doc["webhookConfig"]["secretKey"] = json!("second");
        let next = w.updated(parse(doc).unwrap(), Resume::No, "a", 2).unwrap();
        assert_eq!(
            next.spec
                .webhook_config
                .secret_key
                .as_ref()
                .unwrap()
                .expose(),
            "second"
        );
        let text = serde_json::to_string(&next.change_description).unwrap();
        assert!(
            text.contains("webhookConfig.secretKey")
                && !text.contains("second")
                && !text.contains("first")
        );
    }

    #[test]
    fn resume_leaves_a_failure_state_and_keeps_the_history() {
        let mut w = webhook();
        w.status = WebhookStatus::RetryLimitReached;
        w.failure_details = Some(FailureDetails {
            last_failed_at: Some(5),
            last_failed_status_code: Some(500),
            last_failed_reason: Some("boom".into()),
            next_attempt: Some(9),
        });
        let next = w.updated(w.spec.clone(), Resume::Yes, "a", 10).unwrap();
        assert_eq!(next.status, WebhookStatus::Active);
        assert!(w.resumes_delivery(&next));
        let details = next.failure_details.unwrap();
        assert_eq!(
            (details.last_failed_status_code, details.next_attempt),
            (Some(500), None)
        );
    }

    #[test]
    fn soft_delete_and_restore_are_versions() {
        let w = webhook();
        let gone = w.with_deleted(true, "a", 2);
        assert!(gone.deleted);
        assert_eq!(gone.version.tenths(), 2);
        let back = gone.with_deleted(false, "a", 3);
        assert!(!back.deleted);
        assert_eq!(back.version.tenths(), 3);
    }
}
