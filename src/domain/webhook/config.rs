//! Where and how a webhook's deliveries are sent: its endpoint, secret, timeout, method,
//! signature scheme and (for Custom webhooks) body template.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use super::headers::Headers;
use super::types::HttpMethod;
use crate::domain::signature::{self, KeyError, SignatureScheme};
use crate::domain::template::{self, TemplateError};
use crate::domain::text::check_text;
use crate::domain::{bounded_int, string_schema};

/// What a response shows in place of a secret.
pub const MASKED_SECRET: &str = "********";

/// The absolute http(s) URL deliveries are sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointUrl(url::Url);

impl EndpointUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl TryFrom<String> for EndpointUrl {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} bytes", Self::MAX_LEN));
        }
        let url = url::Url::parse(&value)
            .map_err(|e| format!("'{value}' is not an absolute URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheme must be http or https, not '{}'",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; put them in webhookConfig.headers".into());
        }
        Ok(Self(url))
    }
}

impl From<EndpointUrl> for String {
    fn from(value: EndpointUrl) -> String {
        value.0.into()
    }
}

string_schema!(
    EndpointUrl,
    Some(utoipa::openapi::SchemaFormat::Custom("uri".into()))
);

/// The HMAC key. It never leaves the server: `Serialize` and `Debug` print it masked, and
/// only [`SecretKey::expose`] reads it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SecretKey(String);

impl SecretKey {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The placeholder responses show; sending it back means "keep the current secret".
    pub fn is_mask(&self) -> bool {
        self.0 == MASKED_SECRET
    }

    /// Refuses a secret `scheme` cannot sign with: Standard Webhooks takes `whsec_` and
    /// base64; the other schemes take any secret.
    pub fn check_for(&self, scheme: SignatureScheme) -> Result<(), KeyError> {
        if scheme == SignatureScheme::StandardWebhooks {
            signature::standard_webhooks_key(&self.0)?;
        }
        Ok(())
    }

    /// A new random secret for `scheme`: `whsec_` and base64 for Standard Webhooks, else
    /// 32 random bytes in hex.
    pub fn generate(scheme: SignatureScheme) -> Self {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system has no random source");
        Self(match scheme {
            SignatureScheme::StandardWebhooks => format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
            _ => hex::encode(bytes),
        })
    }
}

impl TryFrom<String> for SecretKey {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        check_text(&value, 1, 1024, false)?;
        Ok(Self(value))
    }
}

impl Serialize for SecretKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASKED_SECRET)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(********)")
    }
}

/// An empty `secretKey` means "no secret", as OpenMetadata treats it.
fn empty_secret_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretKey>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => SecretKey::try_from(s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

string_schema!(
    SecretKey,
    Some(utoipa::openapi::SchemaFormat::KnownFormat(
        utoipa::openapi::KnownFormat::Password
    ))
);

/// A Custom webhook's body template (minijinja), checked when written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PayloadTemplate(String);

impl PayloadTemplate {
    pub fn source(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PayloadTemplate {
    type Error = TemplateError;
    fn try_from(value: String) -> Result<Self, TemplateError> {
        template::check(&value)?;
        Ok(Self(value))
    }
}

impl From<PayloadTemplate> for String {
    fn from(value: PayloadTemplate) -> String {
        value.0
    }
}

string_schema!(PayloadTemplate, None);

bounded_int!(
    /// Events per delivery: 1 sends one event object, more sends a JSON array.
    BatchSize, 1, 1000, default 10
);
bounded_int!(
    /// Seconds a delivery may take before it counts as failed.
    TimeoutSecs, 1, 300, default 10
);

/// Where and how deliveries are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    pub endpoint: EndpointUrl,
    #[serde(
        default,
        deserialize_with = "empty_secret_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret_key: Option<SecretKey>,
    #[serde(default)]
    pub send_to_admins: bool,
    #[serde(default)]
    pub send_to_owners: bool,
    #[serde(default)]
    pub send_to_followers: bool,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    #[serde(default)]
    pub timeout: TimeoutSecs,
    /// POST (default), PUT, or GET (the event as query parameters; batchSize 1).
    #[serde(default = "default_method")]
    pub http_method: HttpMethod,
    #[serde(default = "default_scheme")]
    pub signature_scheme: SignatureScheme,
    /// For webhookType Custom: the body, rendered from the event (see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_template: Option<PayloadTemplate>,
}

fn default_method() -> HttpMethod {
    HttpMethod::Post
}

fn default_scheme() -> SignatureScheme {
    SignatureScheme::OpenMetadata
}
