//! NATS JetStream as a second entry for events (SPEC §11). A message carries what a
//! `POST /api/v1/events` body carries, one ChangeEvent or an array, and goes through the
//! same validation and the same group commit; it is acknowledged only once its events are
//! committed, so a crash before that redelivers it, and eventIds keep the log free of
//! repeats.
//!
//! - A message that cannot be accepted (not JSON, an invalid event, too large, too many
//!   events) is terminated (`AckKind::Term`): JetStream never redelivers it, the metric
//!   `outhook_nats_messages_terminated_total` counts it and a log line names its stream
//!   sequence and the reason. The messages behind it go on.
//! - An event without an eventId gets one derived from the message: from its `Nats-Msg-Id`
//!   header (which JetStream also de-duplicates publishes by), or else from the stream and
//!   the message's stream sequence, and the event's index in the message; a redelivery
//!   derives the same ids.
//! - When the log cannot be written, the messages are given back (`Nak` with a delay) and
//!   come again.
//! - Instances share one durable pull consumer: each message goes to one of them.
//! - Memory is bounded: a pull asks for at most [`FETCH_MESSAGES`] messages and
//!   [`FETCH_BYTES`] bytes (the next pull goes out while these are committed), and a
//!   message is at most [`MAX_MESSAGE_BYTES`] (a stream outhook creates refuses larger ones;
//!   a larger one in another stream is terminated).
//!
//! Bus events are published by no token: they are not under a token's rate limit or quota
//! (a pull consumer reads at outhook's pace), and who may publish is decided by the NATS
//! server's own permissions on the subjects.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message, consumer, stream};
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::service::{Service, ServiceError};

/// The largest message accepted: the bound of a publish request's body.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Messages asked for in one pull, and handled together at most (one group commit).
const FETCH_MESSAGES: usize = 64;
/// Bytes asked for in one pull, at most: room for one message of the largest size, so
/// that no message is ever too large to be fetched.
const FETCH_BYTES: usize = 2 * MAX_MESSAGE_BYTES;
/// How long JetStream waits for an acknowledgement before delivering a message again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// When the log cannot be written, its messages come back after this.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Waits between attempts to reach the server, growing up to the last.
const RECONNECT_DELAYS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
];

/// Where events are read from.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    pub stream: String,
    pub subjects: Vec<String>,
    pub consumer: String,
    /// Most events in one message (as in one publish request).
    pub max_events: usize,
}

/// Starts reading the stream; the task ends when `stop` is cancelled, after the messages
/// in hand are committed and acknowledged (or given back).
pub fn start(
    settings: NatsSettings,
    service: Arc<Service>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0usize;
        while !stop.is_cancelled() {
            match consume(&settings, &service, &metrics, &stop).await {
                Ok(()) => return,
                Err(err) => {
                    let delay = RECONNECT_DELAYS[failures.min(RECONNECT_DELAYS.len() - 1)];
                    failures += 1;
                    tracing::warn!(error = %err, url = %shown_url(&settings.url), stream = %settings.stream,
                        retry_in_ms = delay.as_millis() as u64, "reading events from NATS failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    })
}

/// Connects, makes sure the stream and the consumer exist, and reads until stopped.
async fn consume(
    settings: &NatsSettings,
    service: &Service,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new()
        .name("outhook")
        .connect(settings.url.as_str())
        .await?;
    // The server refuses larger publishes anyway; the stream says so too.
    let max_message = MAX_MESSAGE_BYTES.min(client.server_info().max_payload);
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: settings.stream.clone(),
            subjects: settings.subjects.clone(),
            max_message_size: max_message as i32,
            ..Default::default()
        })
        .await?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &settings.consumer,
            consumer::pull::Config {
                durable_name: Some(settings.consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await?;
    tracing::info!(url = %shown_url(&settings.url), stream = %settings.stream,
        consumer = %settings.consumer, "reading events from NATS JetStream");
    // A pull stream: JetStream sends up to a batch ahead while the last one is committed.
    let mut incoming = consumer
        .stream()
        .max_messages_per_batch(FETCH_MESSAGES)
        .max_bytes_per_batch(FETCH_BYTES)
        .messages()
        .await?;
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            next = incoming.next() => next,
        };
        let Some(first) = first else {
            anyhow::bail!("the server ended the message stream");
        };
        // What has arrived goes together (one group commit); nothing waits for more.
        let mut messages = vec![first.map_err(|e| anyhow::anyhow!(e))?];
        while messages.len() < FETCH_MESSAGES {
            match incoming.next().now_or_never() {
                Some(Some(next)) => messages.push(next.map_err(|e| anyhow::anyhow!(e))?),
                _ => break,
            }
        }
        handle(messages, settings, service, metrics).await;
    }
}

/// The server's URL for a log line: without the user name, password or token it may hold.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// Reads every message, publishes the good ones together (the writer commits them in one
/// group), then acknowledges each once its events are committed.
async fn handle(
    messages: Vec<Message>,
    settings: &NatsSettings,
    service: &Service,
    metrics: &Metrics,
) {
    let publishes = messages.into_iter().map(|message| async move {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let events = match read(&message, sequence, settings, service) {
            Ok(events) => events,
            Err(reason) => {
                metrics.bus_message_terminated();
                tracing::warn!(stream = %settings.stream, sequence, subject = %message.subject,
                    reason = %reason, "terminated a NATS message that cannot be accepted");
                if let Err(err) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(sequence, error = %err, "terminating a NATS message failed");
                }
                return;
            }
        };
        match service.publish(events).await {
            Ok(_) => {
                if let Err(err) = message.ack().await {
                    // Redelivered later; its eventIds make the second commit a no-op.
                    tracing::warn!(sequence, error = %err, "acknowledging a NATS message failed");
                }
            }
            Err(err) => {
                tracing::warn!(stream = %settings.stream, sequence, error = %err,
                    "a NATS message's events could not be committed; it comes again");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        }
    });
    futures_util::future::join_all(publishes).await;
}

/// The events of one message, validated as a publish body is; the error says why the
/// message cannot be accepted.
fn read(
    message: &Message,
    sequence: u64,
    settings: &NatsSettings,
    service: &Service,
) -> Result<Vec<crate::domain::event::NewEvent>, String> {
    if message.payload.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the message is larger than {MAX_MESSAGE_BYTES} bytes ({})",
            message.payload.len()
        ));
    }
    let mut body: Value = serde_json::from_slice(&message.payload)
        .map_err(|e| format!("the message is not valid JSON: {e}"))?;
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_owned());
    let origin = match msg_id {
        Some(id) => Origin::MsgId(id),
        None => Origin::Sequence(settings.stream.clone(), sequence),
    };
    fill_event_ids(&mut body, &origin);
    service
        .read_events(body, settings.max_events)
        .map_err(|err| match err {
            ServiceError::InvalidEvents(faults) => faults
                .iter()
                .map(|f| format!("event [{}] {}: {}", f.index, f.field, f.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })
}

/// What a message's derived eventIds come from.
enum Origin {
    /// The `Nats-Msg-Id` header the producer set.
    MsgId(String),
    /// The stream and the message's sequence in it.
    Sequence(String, u64),
}

/// Gives each event of `body` without an eventId (nor `id`) one derived from `origin` and
/// its index: the first 16 bytes of SHA-256 over `nats-msg-id`, the header's value and
/// the index (or `nats-stream`, the stream's name, the sequence and the index), as a
/// version 8 UUID.
fn fill_event_ids(body: &mut Value, origin: &Origin) {
    let items: Vec<&mut Value> = match body {
        Value::Array(items) => items.iter_mut().collect(),
        object @ Value::Object(_) => vec![object],
        _ => return,
    };
    for (index, item) in items.into_iter().enumerate() {
        let Some(event) = item.as_object_mut() else {
            continue;
        };
        let given = |key: &str| event.get(key).is_some_and(|v| !v.is_null());
        if given("eventId") || given("id") {
            continue;
        }
        event.remove("id");
        let mut hash = Sha256::new();
        match origin {
            Origin::MsgId(id) => {
                hash.update(b"nats-msg-id\0");
                hash.update(id.as_bytes());
            }
            Origin::Sequence(stream, sequence) => {
                hash.update(b"nats-stream\0");
                hash.update(stream.as_bytes());
                hash.update(b"\0");
                hash.update(sequence.to_string().as_bytes());
            }
        }
        hash.update(b"\0");
        hash.update(index.to_string().as_bytes());
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let id = uuid::Builder::from_custom_bytes(bytes).into_uuid();
        event.insert("eventId".into(), Value::String(id.to_string()));
    }
}

/// The eventId an event without one gets from a message with this `Nats-Msg-Id`, at this
/// index: what a producer can compute to find its event in the log.
pub fn event_id_for_msg_id(msg_id: &str, index: usize) -> Uuid {
    let mut body = Value::Array(vec![Value::Object(Default::default()); index + 1]);
    fill_event_ids(&mut body, &Origin::MsgId(msg_id.to_owned()));
    body[index]["eventId"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .expect("an eventId was filled in")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn logged_urls_hold_no_credentials() {
        assert_eq!(
            shown_url("nats://alice:s3cret@127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(
            shown_url("nats://tok3n@nats.internal"),
            "nats://nats.internal"
        );
    }

    #[test]
    fn derived_event_ids_are_stable_and_distinct() {
        let origin = Origin::MsgId("order-7".into());
        let mut a = json!([{"eventType": "entityCreated"}, {"eventType": "entityCreated"},
                           {"id": "3e9b1c2d-4f5a-4b6c-8d7e-9f0a1b2c3d4e"}]);
        let mut b = a.clone();
        fill_event_ids(&mut a, &origin);
        fill_event_ids(&mut b, &origin);
        assert_eq!(a, b, "a redelivery derives the same ids");
        assert_ne!(a[0]["eventId"], a[1]["eventId"]);
        assert!(a[2].get("eventId").is_none(), "a given id is kept");
        assert_eq!(
            a[1]["eventId"].as_str().unwrap(),
            event_id_for_msg_id("order-7", 1).to_string()
        );
        let mut c = json!({"eventType": "entityCreated", "eventId": null});
        fill_event_ids(&mut c, &Origin::Sequence("S".into(), 9));
        let mut d = c.clone();
        d["eventId"] = Value::Null;
        fill_event_ids(&mut d, &Origin::Sequence("S".into(), 10));
        assert_ne!(c["eventId"], d["eventId"]);
        assert_eq!(
            Uuid::parse_str(c["eventId"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            8
        );
    }
}
