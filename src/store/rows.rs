//! The flat row form of stored records, shared by both backends: each row type is decoded
//! by one `FromRow` derive and bound by one macro, whatever the backend.
//!
//! `Id` is how a backend stores a UUID: PostgreSQL as `uuid` ([`Uuid`]), SQLite as
//! hyphenated text ([`Hyphenated`](uuid::fmt::Hyphenated)), which converts both ways.

use uuid::Uuid;

use super::{InstanceRecord, StoreError, StoredEvent};
use crate::clock::Millis;
use crate::domain::change::Version;
use crate::domain::delivery::{AttemptRecord, DispatchState, PendingBatch};
use crate::domain::token::{SigningSecret, Token, TokenName};
use crate::domain::webhook::{PreviousSecret, SecretKey, Webhook, WebhookSpec};

/// A webhook as columns. `spec` is the JSON of the user-written fields without the secret,
/// which has a column of its own so that the document can never leak it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow<Id = Uuid> {
    pub id: Id,
    pub name: String,
    pub webhook_type: String,
    pub status: String,
    pub enabled: bool,
    pub deleted: bool,
    pub version: i32,
    pub updated_at: Millis,
    pub updated_by: String,
    pub spec: String,
    pub secret_key: Option<String>,
    pub change_description: Option<String>,
    pub failure_details: Option<String>,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<Millis>,
}

impl<Id: From<Uuid> + Into<Uuid>> WebhookRow<Id> {
    pub fn from_webhook(w: &Webhook) -> Self {
        let mut spec = w.spec.clone();
        let secret_key = spec
            .webhook_config
            .secret_key
            .take()
            .map(|s| s.expose().to_owned());
        Self {
            id: w.id.into(),
            name: w.spec.name.as_str().to_owned(),
            webhook_type: w.spec.webhook_type.as_str().to_owned(),
            status: w.status.as_str().to_owned(),
            enabled: w.spec.enabled,
            deleted: w.deleted,
            version: w.version.tenths() as i32,
            updated_at: w.updated_at,
            updated_by: w.updated_by.clone(),
            spec: to_json(&spec),
            secret_key,
            change_description: w.change_description.as_ref().map(to_json),
            failure_details: w.failure_details.as_ref().map(to_json),
            previous_secret: w
                .previous_secret
                .as_ref()
                .map(|p| p.key.expose().to_owned()),
            previous_secret_until: w.previous_secret.as_ref().map(|p| p.until),
        }
    }

    pub fn into_webhook(self) -> Result<Webhook, StoreError> {
        let id: Uuid = self.id.into();
        let corrupt =
            |what: &str, e: String| StoreError::Corrupt(format!("webhook {id} {what}: {e}"));
        let mut spec: WebhookSpec =
            serde_json::from_str(&self.spec).map_err(|e| corrupt("spec", e.to_string()))?;
        spec.webhook_config.secret_key = match self.secret_key {
            Some(s) => Some(SecretKey::try_from(s).map_err(|e| corrupt("secret", e))?),
            None => None,
        };
        Ok(Webhook {
            id,
            spec,
            status: self.status.parse().map_err(|e| corrupt("status", e))?,
            failure_details: from_json_opt(self.failure_details.as_deref())
                .map_err(|e| corrupt("failureDetails", e))?,
            version: Version::from_tenths(self.version as u32),
            updated_at: self.updated_at,
            updated_by: self.updated_by,
            change_description: from_json_opt(self.change_description.as_deref())
                .map_err(|e| corrupt("changeDescription", e))?,
            deleted: self.deleted,
            previous_secret: match (self.previous_secret, self.previous_secret_until) {
                (Some(key), Some(until)) => Some(PreviousSecret {
                    key: SecretKey::try_from(key).map_err(|e| corrupt("previous secret", e))?,
                    until,
                }),
                _ => None,
            },
        })
    }
}

/// A token as columns.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow<Id = Uuid> {
    pub id: Id,
    pub name: String,
    pub role: String,
    #[sqlx(rename = "token_hash")]
    pub hash: String,
    pub signing_secret: Option<String>,
    pub created_at: Millis,
    pub created_by: String,
    pub revoked_at: Option<Millis>,
}

impl<Id: From<Uuid> + Into<Uuid>> TokenRow<Id> {
    pub fn from_token(t: &Token) -> Self {
        Self {
            id: t.id.into(),
            name: t.name.as_str().to_owned(),
            role: t.role.as_str().to_owned(),
            hash: t.hash.clone(),
            signing_secret: t.signing_secret.as_ref().map(|s| s.expose().to_owned()),
            created_at: t.created_at,
            created_by: t.created_by.clone(),
            revoked_at: t.revoked_at,
        }
    }

    pub fn into_token(self) -> Result<Token, StoreError> {
        let id: Uuid = self.id.into();
        let corrupt = |e: String| StoreError::Corrupt(format!("token {id}: {e}"));
        Ok(Token {
            id,
            name: TokenName::try_from(self.name.clone()).map_err(corrupt)?,
            role: self.role.parse().map_err(corrupt)?,
            hash: self.hash,
            signing_secret: self
                .signing_secret
                .map(SigningSecret::try_from)
                .transpose()
                .map_err(corrupt)?,
            created_at: self.created_at,
            created_by: self.created_by,
            revoked_at: self.revoked_at,
        })
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("domain types always serialize")
}

fn from_json_opt<T: serde::de::DeserializeOwned>(s: Option<&str>) -> Result<Option<T>, String> {
    s.map(serde_json::from_str)
        .transpose()
        .map_err(|e| e.to_string())
}

/// The delivery-state columns of a webhook.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DispatchRow {
    #[sqlx(rename = "cursor_seq")]
    pub cursor: i64,
    pub batch: Option<String>,
    pub retry_step: i32,
    pub next_attempt_at: Option<Millis>,
    pub status: String,
    pub failure_details: Option<String>,
    pub last_success_at: Option<Millis>,
}

impl DispatchRow {
    pub fn from_state(s: &DispatchState) -> Self {
        Self {
            cursor: s.cursor,
            batch: s.batch.as_ref().map(to_json),
            retry_step: s.retry_step as i32,
            next_attempt_at: s.next_attempt_at,
            status: s.status.as_str().to_owned(),
            failure_details: s.failure_details.as_ref().map(to_json),
            last_success_at: s.last_success_at,
        }
    }

    pub fn into_state(self) -> Result<DispatchState, StoreError> {
        let corrupt =
            |what: &str, e: String| StoreError::Corrupt(format!("delivery state {what}: {e}"));
        Ok(DispatchState {
            cursor: self.cursor,
            batch: from_json_opt::<PendingBatch>(self.batch.as_deref())
                .map_err(|e| corrupt("batch", e))?,
            retry_step: self.retry_step as u32,
            next_attempt_at: self.next_attempt_at,
            status: self.status.parse().map_err(|e| corrupt("status", e))?,
            failure_details: from_json_opt(self.failure_details.as_deref())
                .map_err(|e| corrupt("failureDetails", e))?,
            last_success_at: self.last_success_at,
        })
    }
}

/// A delivery attempt as columns (`id` is assigned by the database).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow<Id = Uuid> {
    pub id: i64,
    pub webhook_id: Id,
    pub delivery_id: Id,
    pub attempt: i32,
    pub event_ids: String,
    pub url: String,
    pub request_bytes: i64,
    pub status_code: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub attempted_at: Millis,
    pub outcome: String,
    pub next_attempt_at: Option<Millis>,
}

impl<Id: From<Uuid> + Into<Uuid>> AttemptRow<Id> {
    pub fn from_record(a: &AttemptRecord) -> Self {
        Self {
            id: a.id,
            webhook_id: a.webhook_id.into(),
            delivery_id: a.delivery_id.into(),
            attempt: a.attempt as i32,
            event_ids: to_json(&a.event_ids),
            url: a.url.clone(),
            request_bytes: a.request_bytes,
            status_code: a.status_code.map(i32::from),
            response_excerpt: a.response_excerpt.clone(),
            error_kind: a.error_kind.map(|k| k.as_str().to_owned()),
            error: a.error.clone(),
            duration_ms: a.duration_ms,
            attempted_at: a.attempted_at,
            outcome: a.outcome.as_str().to_owned(),
            next_attempt_at: a.next_attempt_at,
        }
    }

    pub fn into_record(self) -> Result<AttemptRecord, StoreError> {
        let corrupt =
            |what: &str, e: String| StoreError::Corrupt(format!("attempt {} {what}: {e}", self.id));
        Ok(AttemptRecord {
            id: self.id,
            webhook_id: self.webhook_id.into(),
            delivery_id: self.delivery_id.into(),
            attempt: self.attempt as u32,
            event_ids: serde_json::from_str(&self.event_ids)
                .map_err(|e| corrupt("eventIds", e.to_string()))?,
            url: self.url,
            request_bytes: self.request_bytes,
            status_code: self.status_code.map(|c| c as u16),
            response_excerpt: self.response_excerpt,
            error_kind: self
                .error_kind
                .map(|k| k.parse())
                .transpose()
                .map_err(|e| corrupt("errorKind", e))?,
            error: self.error,
            duration_ms: self.duration_ms,
            attempted_at: self.attempted_at,
            outcome: self.outcome.parse().map_err(|e| corrupt("outcome", e))?,
            next_attempt_at: self.next_attempt_at,
        })
    }
}

/// An event of the log as read back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow<Id = Uuid> {
    pub seq: i64,
    pub event_id: Id,
    pub body: String,
}

impl<Id: Into<Uuid>> From<EventRow<Id>> for StoredEvent {
    fn from(r: EventRow<Id>) -> Self {
        StoredEvent {
            seq: r.seq,
            event_id: r.event_id.into(),
            body: r.body,
        }
    }
}

/// An event with the running total of body bytes up to and including it (a page read).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PagedEventRow<Id = Uuid> {
    #[sqlx(flatten)]
    pub event: EventRow<Id>,
    pub total: i64,
}

/// A dispatcher instance as columns.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow<Id = Uuid> {
    pub id: Id,
    pub name: Option<String>,
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub pid_namespace: Option<String>,
    pub process_started: Option<i64>,
    pub heartbeat_at: Millis,
}

impl<Id: Into<Uuid>> From<InstanceRow<Id>> for InstanceRecord {
    fn from(r: InstanceRow<Id>) -> Self {
        InstanceRecord {
            id: r.id.into(),
            name: r.name,
            host: r.host,
            pid: r.pid,
            pid_namespace: r.pid_namespace,
            process_started: r.process_started,
            heartbeat_at: r.heartbeat_at,
        }
    }
}

/// Binds a [`WebhookRow`]'s columns as `$1`…`$15`, in the order of [`WEBHOOK_COLUMNS`]
/// (`crate::store::sql::WEBHOOK_COLUMNS`).
macro_rules! bind_webhook {
    ($query:expr, $w:expr) => {{
        let w = $w;
        $query
            .bind(w.id)
            .bind(&w.name)
            .bind(&w.webhook_type)
            .bind(&w.status)
            .bind(w.enabled)
            .bind(w.deleted)
            .bind(w.version)
            .bind(w.updated_at)
            .bind(&w.updated_by)
            .bind(&w.spec)
            .bind(&w.secret_key)
            .bind(&w.change_description)
            .bind(&w.failure_details)
            .bind(&w.previous_secret)
            .bind(w.previous_secret_until)
    }};
}

/// Binds a [`TokenRow`]'s columns as `$1`…`$7`, in the order of `TOKEN_COLUMNS`.
macro_rules! bind_token {
    ($query:expr, $t:expr) => {{
        let t = $t;
        $query
            .bind(t.id)
            .bind(&t.name)
            .bind(&t.role)
            .bind(&t.hash)
            .bind(t.created_at)
            .bind(&t.created_by)
            .bind(t.revoked_at)
    }};
}

/// Binds an [`InstanceRecord`]'s columns as `$1`…`$7`, the id converted by `$id`.
macro_rules! bind_instance {
    ($query:expr, $i:expr, $id:ty) => {{
        let i = $i;
        $query
            .bind(<$id>::from(i.id))
            .bind(i.heartbeat_at)
            .bind(&i.name)
            .bind(&i.host)
            .bind(i.pid)
            .bind(&i.pid_namespace)
            .bind(i.process_started)
    }};
}

pub(crate) use {bind_instance, bind_token, bind_webhook};
