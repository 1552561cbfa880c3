//! Request signatures, in three schemes:
//! - `openmetadata` (default): `X-OpenMetadata-Signature: sha256=<lowercase hex HMAC-SHA256(secret, body)>`,
//!   which the receiver snippet of `seeds/002_*` verifies;
//! - `openmetadata-base64`: `X-OM-Signature: sha256=<base64 HMAC-SHA256(secret, body)>`;
//! - `standard-webhooks`: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>`
//!   over `id.timestamp.body`, with a `whsec_<base64>` secret (standardwebhooks.com).
//!
//! While a rotated-out secret is still in its grace period, requests carry its signature
//! too: in `X-OpenMetadata-Signature-Previous` / `X-OM-Signature-Previous`, or as a second
//! `v1,…` entry of `webhook-signature`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::str_enum;

str_enum! {
    /// How requests are signed: `openmetadata` is `X-OpenMetadata-Signature: sha256=<hex>`,
    /// `openmetadata-base64` is `X-OM-Signature: sha256=<base64>` (what OpenMetadata servers
    /// send), `standard-webhooks` is the Standard Webhooks scheme (`whsec_` secrets).
    pub enum SignatureScheme {
        OpenMetadata => "openmetadata", OpenMetadataBase64 => "openmetadata-base64",
        StandardWebhooks => "standard-webhooks",
    }
}

/// Why a secret is not a Standard Webhooks secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a standard-webhooks secret starts with 'whsec_' followed by base64")]
    NoPrefix,
    #[error("a standard-webhooks secret is 'whsec_' followed by base64")]
    NotBase64,
    #[error("a standard-webhooks secret must not be empty")]
    Empty,
}

/// Why a signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("standard-webhooks needs the webhook-id")]
    MissingId,
    #[error("standard-webhooks needs the webhook-timestamp")]
    MissingTimestamp,
    #[error("the signature does not match this secret and body")]
    Mismatch,
}

pub const SIGNATURE_HEADER: &str = "X-OpenMetadata-Signature";
pub const SIGNATURE_PREVIOUS_HEADER: &str = "X-OpenMetadata-Signature-Previous";
pub const OM_SIGNATURE_HEADER: &str = "X-OM-Signature";
pub const OM_SIGNATURE_PREVIOUS_HEADER: &str = "X-OM-Signature-Previous";
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `sha256=<lowercase hex>` of the body.
pub fn openmetadata_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// `sha256=<base64>` of the body.
pub fn openmetadata_base64_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        STANDARD.encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// The key bytes of a Standard Webhooks secret: `whsec_` then base64.
pub fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, KeyError> {
    let encoded = secret.strip_prefix("whsec_").ok_or(KeyError::NoPrefix)?;
    let key = STANDARD.decode(encoded).map_err(|_| KeyError::NotBase64)?;
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(key)
}

/// `v1,<base64>` over `id.timestamp.body`.
pub fn standard_webhooks_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// The signature headers of one request. `message_id` is the delivery id (the same on
/// every attempt), `timestamp` the attempt's time in seconds, `payload` the exact bytes
/// sent (the body, or the query string of a GET).
pub fn signature_headers(
    scheme: SignatureScheme,
    secret: &str,
    previous: Option<&str>,
    message_id: &str,
    timestamp: i64,
    payload: &[u8],
) -> Vec<(&'static str, String)> {
    match scheme {
        SignatureScheme::OpenMetadata => {
            let mut out = vec![(SIGNATURE_HEADER, openmetadata_signature(secret, payload))];
            if let Some(old) = previous {
                out.push((
                    SIGNATURE_PREVIOUS_HEADER,
                    openmetadata_signature(old, payload),
                ));
            }
            out
        }
        SignatureScheme::OpenMetadataBase64 => {
            let mut out = vec![(
                OM_SIGNATURE_HEADER,
                openmetadata_base64_signature(secret, payload),
            )];
            if let Some(old) = previous {
                out.push((
                    OM_SIGNATURE_PREVIOUS_HEADER,
                    openmetadata_base64_signature(old, payload),
                ));
            }
            out
        }
        SignatureScheme::StandardWebhooks => {
            // Checked when the secret was written; a bad one signs nothing.
            let Ok(key) = standard_webhooks_key(secret) else {
                return Vec::new();
            };
            let mut signatures = vec![standard_webhooks_signature(
                &key, message_id, timestamp, payload,
            )];
            if let Some(old_key) = previous.and_then(|s| standard_webhooks_key(s).ok()) {
                signatures.push(standard_webhooks_signature(
                    &old_key, message_id, timestamp, payload,
                ));
            }
            vec![
                (WEBHOOK_ID_HEADER, message_id.to_owned()),
                (WEBHOOK_TIMESTAMP_HEADER, timestamp.to_string()),
                (WEBHOOK_SIGNATURE_HEADER, signatures.join(" ")),
            ]
        }
    }
}

/// What a receiver checks. `signature` is the header value; Standard Webhooks also needs
/// the message id and timestamp. Comparisons take constant time.
pub fn verify(
    scheme: SignatureScheme,
    secret: &str,
    signature: &str,
    id: Option<&str>,
    timestamp: Option<i64>,
    payload: &[u8],
) -> Result<(), VerifyError> {
    let matches = |expected: &str, given: &str| {
        use subtle_eq::ct_eq;
        ct_eq(expected.as_bytes(), given.trim().as_bytes())
    };
    let ok = match scheme {
        SignatureScheme::OpenMetadata => {
            matches(&openmetadata_signature(secret, payload), signature)
        }
        SignatureScheme::OpenMetadataBase64 => {
            matches(&openmetadata_base64_signature(secret, payload), signature)
        }
        SignatureScheme::StandardWebhooks => {
            let key = standard_webhooks_key(secret)?;
            let id = id.ok_or(VerifyError::MissingId)?;
            let ts = timestamp.ok_or(VerifyError::MissingTimestamp)?;
            let expected = standard_webhooks_signature(&key, id, ts, payload);
            signature.split_whitespace().any(|s| matches(&expected, s))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Constant-time equality, so a verifier does not leak how much of a signature matched.
mod subtle_eq {
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_known_hmac() {
        // RFC 4231 test case 2.
        let sig = openmetadata_signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let b64 = openmetadata_base64_signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(b64, "sha256=W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
    }

    #[test]
    fn the_standard_webhooks_published_vector() {
        let key = standard_webhooks_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let sig = standard_webhooks_signature(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert!(standard_webhooks_key("C2FVsBQIhrscChlQIMV").is_err());
        assert!(standard_webhooks_key("whsec_not base64!").is_err());
    }

    #[test]
    fn rotation_sends_both_and_either_verifies() {
        let body = b"{}";
        let headers = signature_headers(
            SignatureScheme::OpenMetadata,
            "new",
            Some("old"),
            "d",
            1,
            body,
        );
        assert_eq!(headers.len(), 2);
        assert!(
            verify(
                SignatureScheme::OpenMetadata,
                "new",
                &headers[0].1,
                None,
                None,
                body
            )
            .is_ok()
        );
        assert!(
            verify(
                SignatureScheme::OpenMetadata,
                "old",
                &headers[1].1,
                None,
                None,
                body
            )
            .is_ok()
        );
        assert!(
            verify(
                SignatureScheme::OpenMetadata,
                "old",
                &headers[0].1,
                None,
                None,
                body
            )
            .is_err()
        );
        let (new, old) = ("whsec_bmV3LXNlY3JldC1rZXk=", "whsec_b2xkLXNlY3JldC1rZXk=");
        let headers = signature_headers(
            SignatureScheme::StandardWebhooks,
            new,
            Some(old),
            "msg_1",
            42,
            body,
        );
        let sig = &headers
            .iter()
            .find(|h| h.0 == WEBHOOK_SIGNATURE_HEADER)
            .unwrap()
            .1;
        assert_eq!(sig.split(' ').count(), 2);
        for secret in [new, old] {
            assert!(
                verify(
                    SignatureScheme::StandardWebhooks,
                    secret,
                    sig,
                    Some("msg_1"),
                    Some(42),
                    body
                )
                .is_ok()
            );
        }
        assert!(
            verify(
                SignatureScheme::StandardWebhooks,
                new,
                sig,
                Some("msg_1"),
                Some(43),
                body
            )
            .is_err()
        );
    }
}
