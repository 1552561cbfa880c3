//! A webhook's custom request headers, and which of them are credentials.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::config::MASKED_SECRET;

/// Custom request headers: at most 32, 8 KiB in all, names are HTTP tokens, values have no
/// CR, LF or other control characters. Headers outhook sets itself cannot be overridden.
///
/// The values of credential headers ([`Headers::is_credential`]) are secrets, as
/// `secretKey` is: responses and change records show the mask, sending the mask back
/// keeps the value, and `Debug` never prints them. `Serialize` writes them (the store keeps
/// the spec as JSON): views go through [`Headers::masked`].
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "Option<BTreeMap<String, String>>")]
pub struct Headers(pub BTreeMap<String, String>);

/// Parts of a header name that make its value a credential (`Authorization`,
/// `Proxy-Authorization`, `X-Api-Key`, `X-Auth-Token`, `Cookie`, `X-Client-Secret`…).
const CREDENTIAL_NAME_PARTS: &[&str] = &[
    "auth",
    "token",
    "secret",
    "key",
    "cookie",
    "password",
    "passwd",
    "credential",
    "session",
    "signature",
];

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.masked().0.iter()).finish()
    }
}

impl Headers {
    pub const MAX_COUNT: usize = 32;
    pub const MAX_TOTAL_BYTES: usize = 8192;
    /// Set by outhook on every delivery; a webhook may not replace them.
    pub const RESERVED: &'static [&'static str] = &[
        "host",
        "content-length",
        "user-agent",
        "x-openmetadata-signature",
        "x-om-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-outhook-delivery-id",
        "x-outhook-attempt",
        "x-openmetadata-signature-previous",
        "x-om-signature-previous",
    ];

    /// Hop-by-hop headers (RFC 9110 §7.6.1, and `Proxy-Connection`, `Expect`): they speak
    /// of the connection and its exchange, which outhook's client manages. These were
    /// always refused, so no stored webhook has them.
    pub const HOP_BY_HOP: &'static [&'static str] =
        &["connection", "te", "transfer-encoding", "upgrade"];
    /// Hop-by-hop headers refused when a webhook is written (older webhooks may hold them
    /// and still load).
    pub const HOP_BY_HOP_WRITTEN: &'static [&'static str] =
        &["keep-alive", "proxy-connection", "trailer", "expect"];

    fn hop_by_hop(name: &str) -> String {
        format!(
            "header '{name}' is hop-by-hop: it belongs to the connection, which outhook manages"
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rules added after headers were first stored, checked when a webhook is written
    /// (a stored webhook must still load): no hop-by-hop header, and a `Content-Type`
    /// that is a JSON type.
    pub fn check_written(&self) -> Result<(), String> {
        for (name, value) in &self.0 {
            let lower = name.to_ascii_lowercase();
            if Self::HOP_BY_HOP_WRITTEN.contains(&lower.as_str()) {
                return Err(Self::hop_by_hop(name));
            }
            if lower == "content-type" && !is_json_media_type(value) {
                return Err(format!(
                    "header '{name}': bodies are JSON in UTF-8: application/json or an application/…+json type, with no parameter but charset=utf-8"
                ));
            }
        }
        Ok(())
    }

    /// Whether a header's value is a credential: its name contains `auth`, `token`,
    /// `secret`, `key`, `cookie`, `password`, `credential`, `session` or `signature`, in
    /// any case.
    pub fn is_credential(name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        CREDENTIAL_NAME_PARTS
            .iter()
            .any(|part| lower.contains(part))
    }

    /// The headers as responses show them: credential values masked.
    pub fn masked(&self) -> Headers {
        Headers(
            self.0
                .iter()
                .map(|(name, value)| {
                    let shown = if Self::is_credential(name) {
                        MASKED_SECRET.to_owned()
                    } else {
                        value.clone()
                    };
                    (name.clone(), shown)
                })
                .collect(),
        )
    }

    /// The value `current` has for a header, its name compared without case.
    fn current_value<'a>(current: &'a Headers, name: &str) -> Option<&'a String> {
        current
            .0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Credential values sent back as the mask take the value `current` has for them.
    pub fn keep_masked_from(&mut self, current: &Headers) {
        for (name, value) in self.0.iter_mut() {
            if Self::is_credential(name)
                && value == MASKED_SECRET
                && let Some(kept) = Self::current_value(current, name)
            {
                value.clone_from(kept);
            }
        }
    }

    /// A credential header given as the mask while there is no value to keep (a new
    /// webhook, or a header the webhook does not have): its name.
    pub fn unresolved_mask(&self, current: Option<&Headers>) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, value)| {
                Self::is_credential(name)
                    && *value == MASKED_SECRET
                    && current.and_then(|c| Self::current_value(c, name)).is_none()
            })
            .map(|(name, _)| name.as_str())
    }
}

impl TryFrom<Option<BTreeMap<String, String>>> for Headers {
    type Error = String;
    fn try_from(headers: Option<BTreeMap<String, String>>) -> Result<Self, String> {
        let headers = headers.unwrap_or_default();
        if headers.len() > Self::MAX_COUNT {
            return Err(format!(
                "at most {} headers (got {})",
                Self::MAX_COUNT,
                headers.len()
            ));
        }
        let mut total = 0;
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &headers {
            let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || name.len() > 128 || !name.chars().all(is_tchar) {
                return Err(format!("'{name}' is not a valid header name"));
            }
            let lower = name.to_ascii_lowercase();
            if !seen.insert(lower.clone()) {
                return Err(format!("header '{name}' is given twice"));
            }
            if Self::RESERVED.contains(&lower.as_str()) {
                return Err(format!(
                    "header '{name}' is set by outhook and cannot be overridden"
                ));
            }
            if Self::HOP_BY_HOP.contains(&lower.as_str()) {
                return Err(Self::hop_by_hop(name));
            }
            if value
                .chars()
                .any(|c| c != '\t' && (c.is_control() || !c.is_ascii()))
            {
                return Err(format!(
                    "header '{name}': value must be printable ASCII (no CR, LF or control characters)"
                ));
            }
            // What was stored before the stricter rule of `check_written` still loads.
            if lower == "content-type"
                && !(value.trim().starts_with("application/json") || is_json_media_type(value))
            {
                return Err(format!(
                    "header '{name}': bodies are always application/json"
                ));
            }
            total += name.len() + value.len();
        }
        if total > Self::MAX_TOTAL_BYTES {
            return Err(format!(
                "at most {} bytes of headers (got {total})",
                Self::MAX_TOTAL_BYTES
            ));
        }
        Ok(Self(headers))
    }
}

/// Whether a Content-Type tells the truth about a body of JSON in UTF-8: `application/json`
/// or a `+json` type (`application/cloudevents+json`), in any case, with at most the
/// parameter `charset=utf-8` (quoted or not). It is sent as written.
fn is_json_media_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|subtype| {
            subtype.len() > "+json".len() && subtype.ends_with("+json") && !subtype.contains('/')
        });
    json && parts.all(|parameter| {
        parameter.split_once('=').is_some_and(|(key, val)| {
            key.trim().eq_ignore_ascii_case("charset")
                && val.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    })
}
