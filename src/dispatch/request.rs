//! What goes out for a batch: its delivery id (the same whenever the batch is formed) and
//! its request (formatted for the destination, with the webhook's headers, outhook's, and
//! the signature of exactly the bytes sent).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::event::LogEvent;
use super::format::{self, FormatError};
use super::sender::{OutboundRequest, header_map};
use crate::domain::delivery::PendingBatch;
use crate::domain::signature as sign;
use crate::domain::webhook::{HttpMethod, Webhook};

pub const DELIVERY_ID_HEADER: &str = "X-OutHook-Delivery-Id";
pub const ATTEMPT_HEADER: &str = "X-OutHook-Attempt";

/// A new batch of these events, not attempted yet.
pub fn new_batch(webhook: Uuid, events: &[Arc<LogEvent>]) -> PendingBatch {
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    PendingBatch {
        delivery_id: delivery_id(webhook, &seqs),
        seqs,
        event_ids: events.iter().map(|e| e.event_id).collect(),
        attempts: 0,
    }
}

/// The delivery id of a batch: a digest of the webhook and the log positions it carries,
/// so that the same batch, formed again after a restart, goes out under the same id.
fn delivery_id(webhook: Uuid, seqs: &[i64]) -> Uuid {
    let mut digest = Sha256::new();
    digest.update(webhook.as_bytes());
    for seq in seqs {
        digest.update(seq.to_be_bytes());
    }
    let bytes: [u8; 16] = digest.finalize()[..16]
        .try_into()
        .expect("a SHA-256 digest is 32 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The request of one attempt: formatted for the destination, with the webhook's headers
/// (rendered, for Custom), outhook's, and the signature of exactly the bytes sent. An error
/// means the batch cannot be formatted (a failure retrying cannot fix); signing cannot fail.
pub async fn build_request(
    webhook: &Webhook,
    events: &[Arc<LogEvent>],
    delivery_id: Uuid,
    attempt: u32,
    now: i64,
) -> Result<OutboundRequest, FormatError> {
    let spec = &webhook.spec;
    let config = &spec.webhook_config;
    let payload = format::payload(spec, events).await?;
    let mut url = config.endpoint.url().clone();
    let (method, body, signed) = match payload.query {
        Some(query) => {
            let full = match url.query() {
                Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
                _ => query,
            };
            url.set_query(Some(&full));
            (reqwest::Method::GET, Vec::new(), full.into_bytes())
        }
        None => {
            let method = if config.http_method == HttpMethod::Put {
                reqwest::Method::PUT
            } else {
                reqwest::Method::POST
            };
            let signed = payload.body.clone();
            (method, payload.body, signed)
        }
    };
    let mut headers = header_map(payload.headers);
    if method != reqwest::Method::GET {
        // A webhook's own Content-Type (a JSON type, checked when written) is sent as written.
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
    }
    headers.insert(
        DELIVERY_ID_HEADER,
        HeaderValue::from_str(&delivery_id.to_string()).expect("a UUID is a header value"),
    );
    headers.insert(ATTEMPT_HEADER, HeaderValue::from(attempt));
    if let Some(secret) = &config.secret_key {
        let previous = webhook.signing_previous(now).map(|s| s.expose());
        let message_id = delivery_id.to_string();
        for (name, value) in sign::signature_headers(
            config.signature_scheme,
            secret.expose(),
            previous,
            &message_id,
            now / 1000,
            &signed,
        ) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    Ok(OutboundRequest {
        method,
        url,
        body,
        headers,
        timeout: Duration::from_secs(u64::from(config.timeout.get())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_has_the_same_delivery_id_whenever_it_is_formed() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let id = delivery_id(a, &[3, 7, 9]);
        assert_eq!(id, delivery_id(a, &[3, 7, 9]));
        assert_ne!(id, delivery_id(a, &[3, 7]), "another batch");
        assert_ne!(id, delivery_id(a, &[3, 7, 10]), "another batch");
        assert_ne!(id, delivery_id(b, &[3, 7, 9]), "another webhook");
        assert_eq!(id.get_version(), Some(uuid::Version::Custom));
    }
}
