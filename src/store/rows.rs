//! The flat row form of stored records, shared by both backends so that each backend only
//! binds and reads columns.

use uuid::Uuid;

use super::StoreError;
use crate::clock::Millis;
use crate::domain::change::Version;
use crate::domain::token::{Token, TokenName};
use crate::domain::webhook::{SecretKey, Webhook, WebhookSpec};

/// A webhook as columns. `spec` is the JSON of the user-written fields without the secret,
/// which has a column of its own so that the document can never leak it.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub id: Uuid,
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
}

impl WebhookRow {
    pub fn from_webhook(w: &Webhook) -> Self {
        let mut spec = w.spec.clone();
        let secret_key = spec
            .webhook_config
            .secret_key
            .take()
            .map(|s| s.expose().to_owned());
        Self {
            id: w.id,
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
        }
    }

    pub fn into_webhook(self) -> Result<Webhook, StoreError> {
        let corrupt =
            |what: &str, e: String| StoreError::Corrupt(format!("webhook {} {what}: {e}", self.id));
        let mut spec: WebhookSpec =
            serde_json::from_str(&self.spec).map_err(|e| corrupt("spec", e.to_string()))?;
        spec.webhook_config.secret_key = match self.secret_key {
            Some(s) => Some(SecretKey::try_from(s).map_err(|e| corrupt("secret", e))?),
            None => None,
        };
        Ok(Webhook {
            id: self.id,
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
        })
    }
}

/// A token as columns.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub hash: String,
    pub created_at: Millis,
    pub created_by: String,
    pub revoked_at: Option<Millis>,
}

impl TokenRow {
    pub fn into_token(self) -> Result<Token, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("token {}: {e}", self.id));
        Ok(Token {
            id: self.id,
            name: TokenName::try_from(self.name.clone()).map_err(corrupt)?,
            role: self.role.parse().map_err(corrupt)?,
            hash: self.hash,
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
