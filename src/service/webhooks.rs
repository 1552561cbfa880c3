//! The webhook lifecycle. Every change is one shape: load the webhook, let the domain make
//! the next version ([`Webhook::updated`], [`Webhook::with_deleted`],
//! [`Webhook::with_rotated_secret`]), write it under the version read (a concurrent change
//! makes the write fail as stale), then tell the dispatcher.

use serde_json::Value;
use uuid::Uuid;

use super::{Caller, Include, Page, Result, Service, ServiceError, WebhookQuery, parse};
use crate::domain::webhook::{Resume, SecretKey, Webhook, WebhookName, WebhookSpec};

/// What a create-or-update did.
pub enum Saved {
    /// No webhook had the name: this one is new.
    Created(Webhook),
    /// The webhook with the name, updated (or as it was, when nothing changed).
    Updated(Webhook),
}

/// A secret rotation as asked.
pub struct Rotation {
    /// The new secret; generated when absent.
    pub secret_key: Option<SecretKey>,
    /// How long the current secret keeps signing too, in seconds (default 86400).
    pub grace_period_seconds: Option<u32>,
}

/// A rotation done.
pub struct Rotated {
    pub webhook: Webhook,
    /// The new secret when outhook generated it: to be shown this once.
    pub generated_secret: Option<String>,
}

/// The longest grace period of a rotated-out secret: 7 days.
const MAX_GRACE_SECONDS: u32 = 604_800;
const DEFAULT_GRACE_SECONDS: u32 = 86_400;

/// Reads a create or update document: server-owned fields are dropped (a client may send
/// back what it read), everything else must be a valid [`WebhookSpec`].
pub fn parse_webhook_spec(mut document: Value) -> Result<WebhookSpec> {
    let Some(object) = document.as_object_mut() else {
        return Err(ServiceError::Malformed(
            "the body must be a JSON object".into(),
        ));
    };
    for field in WebhookSpec::SERVER_OWNED {
        object.remove(*field);
    }
    let spec: WebhookSpec = parse(document)?;
    spec.check()
        .map_err(|(field, message)| ServiceError::invalid(field, message))?;
    Ok(spec)
}

/// Refuses the mask (`********`) where it stands for no value: the secret or a credential
/// header of a webhook that does not exist yet (`current` is `None`), or a credential
/// header `current` lacks.
fn check_masks(spec: &WebhookSpec, current: Option<&Webhook>) -> Result<()> {
    spec.check_masks(current.map(|c| &c.spec))
        .map_err(|(field, message)| ServiceError::invalid(field, message))
}

fn not_found(what: impl std::fmt::Display) -> ServiceError {
    ServiceError::NotFound(format!("webhook {what} not found"))
}

/// The webhook, when `include` shows it.
fn visible(
    webhook: Option<Webhook>,
    include: Include,
    what: impl std::fmt::Display,
) -> Result<Webhook> {
    webhook
        .filter(|w| match include {
            Include::NonDeleted => !w.deleted,
            Include::Deleted => w.deleted,
            Include::All => true,
        })
        .ok_or_else(|| not_found(what))
}

impl Service {
    /// A page of webhooks, ordered by name.
    pub async fn webhooks(&self, query: &WebhookQuery) -> Result<Page<Webhook>> {
        Ok(self.store.list_webhooks(query).await?)
    }

    /// The webhook with this id, among those `include` shows.
    pub async fn webhook(&self, id: Uuid, include: Include) -> Result<Webhook> {
        visible(self.store.webhook(id).await?, include, id)
    }

    /// The webhook with this name, among those `include` shows.
    pub async fn webhook_named(&self, name: &WebhookName, include: Include) -> Result<Webhook> {
        let webhook = self.store.webhook_by_name(name.as_str()).await?;
        visible(webhook, include, format!("'{name}'"))
    }

    /// Creates a webhook.
    pub async fn create_webhook(&self, spec: WebhookSpec, by: &Caller) -> Result<Webhook> {
        let webhook = self.new_webhook(spec, by)?;
        self.store.insert_webhook(&webhook).await?;
        self.dispatcher.webhook_changed(&webhook).await;
        tracing::info!(webhook.id = %webhook.id, webhook.name = %webhook.spec.name, by = %by.name, "webhook created");
        Ok(webhook)
    }

    /// Creates a webhook, or updates the one with the spec's name (a soft-deleted one is
    /// refused: it must be restored or deleted for good first).
    pub async fn create_or_update_webhook(&self, spec: WebhookSpec, by: &Caller) -> Result<Saved> {
        let Some(current) = self.store.webhook_by_name(spec.name.as_str()).await? else {
            return Ok(Saved::Created(self.create_webhook(spec, by).await?));
        };
        if current.deleted {
            return Err(ServiceError::Conflict(format!(
                "webhook '{}' is soft-deleted: restore it (PUT /api/v1/webhooks/restore) or delete it with hardDelete=true",
                current.spec.name
            )));
        }
        let (webhook, _) = self.update(current, spec, Resume::No, by).await?;
        Ok(Saved::Updated(webhook))
    }

    /// Applies an RFC 6902 JSON Patch to the webhook as read (with `base` as the start of
    /// its `href`); see [`super::patch`] for what a patch may change.
    pub async fn patch_webhook(
        &self,
        id: Uuid,
        patch: &json_patch::Patch,
        base: &str,
        by: &Caller,
    ) -> Result<Webhook> {
        let current = self.webhook(id, Include::NonDeleted).await?;
        let (spec, resume) = super::patch::patched(&current, patch, base)?;
        let (next, changed) = self.update(current, spec, resume, by).await?;
        if changed {
            tracing::info!(webhook.id = %id, version = next.version.as_f64(), by = %by.name, "webhook patched");
        }
        Ok(next)
    }

    /// Resumes delivery: a webhook in `retryLimitReached`, `failed` or `awaitingRetry` is
    /// set `active` (and enabled), and its pending batch goes again at once.
    pub async fn resume_webhook(&self, id: Uuid, by: &Caller) -> Result<Webhook> {
        let current = self.webhook(id, Include::NonDeleted).await?;
        let mut spec = current.spec.clone();
        spec.enabled = true;
        let (next, changed) = self.update(current, spec, Resume::Yes, by).await?;
        if changed {
            tracing::info!(webhook.id = %next.id, by = %by.name, "delivery resumed");
        }
        Ok(next)
    }

    /// Deletes a webhook: soft (hidden, delivery stops, restorable) or for good (`hard`,
    /// which also takes a soft-deleted one). Returns the webhook as it was deleted.
    pub async fn delete_webhook(&self, id: Uuid, hard: bool, by: &Caller) -> Result<Webhook> {
        let include = if hard {
            Include::All
        } else {
            Include::NonDeleted
        };
        let current = self.webhook(id, include).await?;
        let gone = if hard {
            if !self.store.delete_webhook(id).await? {
                return Err(not_found(id));
            }
            self.dispatcher.webhook_deleted(id).await;
            Webhook {
                deleted: true,
                ..current
            }
        } else {
            let next = current.with_deleted(true, &by.name, self.clock.now_ms());
            self.save(&current, next).await?
        };
        tracing::info!(webhook.id = %id, hard, by = %by.name, "webhook deleted");
        Ok(gone)
    }

    /// Restores a soft-deleted webhook; delivery resumes where it stopped.
    pub async fn restore_webhook(&self, id: Uuid, by: &Caller) -> Result<Webhook> {
        let current = visible(
            self.store.webhook(id).await?,
            Include::Deleted,
            format!("{id} (soft-deleted)"),
        )?;
        let next = current.with_deleted(false, &by.name, self.clock.now_ms());
        self.save(&current, next).await
    }

    /// Gives a webhook a new secret (generated unless given); the current one keeps
    /// signing for the grace period.
    pub async fn rotate_secret(
        &self,
        id: Uuid,
        rotation: Rotation,
        by: &Caller,
    ) -> Result<Rotated> {
        let current = self.webhook(id, Include::NonDeleted).await?;
        let grace = rotation
            .grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        if grace > MAX_GRACE_SECONDS {
            return Err(ServiceError::invalid(
                "gracePeriodSeconds",
                "must be at most 604800 (7 days)",
            ));
        }
        let scheme = current.spec.webhook_config.signature_scheme;
        let (secret, generated_secret) = match rotation.secret_key {
            Some(s) if s.is_mask() => {
                return Err(ServiceError::invalid(
                    "secretKey",
                    "give the new secret itself, or none to have one generated",
                ));
            }
            Some(s) => (s, None),
            None => {
                let fresh = SecretKey::generate(scheme);
                let shown = fresh.expose().to_owned();
                (fresh, Some(shown))
            }
        };
        secret
            .check_for(scheme)
            .map_err(|e| ServiceError::invalid("secretKey", e.to_string()))?;
        let now = self.clock.now_ms();
        let next = current.with_rotated_secret(secret, i64::from(grace) * 1000, &by.name, now);
        let webhook = self.save(&current, next).await?;
        tracing::info!(webhook.id = %webhook.id, by = %by.name, grace, "secret rotated");
        Ok(Rotated {
            webhook,
            generated_secret,
        })
    }

    /// A webhook made of `spec` alone (not stored): the mask stands for nothing in it.
    pub(super) fn new_webhook(&self, spec: WebhookSpec, by: &Caller) -> Result<Webhook> {
        check_masks(&spec, None)?;
        Ok(Webhook::create(spec, &by.name, self.clock.now_ms()))
    }

    /// Writes `spec` over `current` (the mask keeps what it stands for); the webhook as it
    /// is afterwards, and whether anything changed.
    async fn update(
        &self,
        current: Webhook,
        spec: WebhookSpec,
        resume: Resume,
        by: &Caller,
    ) -> Result<(Webhook, bool)> {
        check_masks(&spec, Some(&current))?;
        match current.updated(spec, resume, &by.name, self.clock.now_ms()) {
            Some(next) => Ok((self.save(&current, next).await?, true)),
            None => Ok((current, false)),
        }
    }

    /// Writes the next version of a webhook, unless another change came first, and tells
    /// the dispatcher.
    async fn save(&self, current: &Webhook, next: Webhook) -> Result<Webhook> {
        self.store
            .update_webhook(&next, current.version, current.resumes_delivery(&next))
            .await?;
        self.dispatcher.webhook_changed(&next).await;
        Ok(next)
    }
}
