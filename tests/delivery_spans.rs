//! The lines a delivery writes name it: a worker runs in a span with its webhook's id and
//! name, each attempt in a span with the webhook, the delivery and the attempt number. A
//! real delivery to a failing receiver, on both backends, read back as the JSON lines
//! OUTHOOK_LOG_FORMAT=json writes.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::receiver::Receiver;
use common::{Backend, TestApp, event, webhook};
use serde_json::{Value, json};

/// What the subscriber writes, kept for the tests to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's subscriber, as the binary builds it for JSON (the app's tasks run on
/// several threads, so it is the global one, shared by the tests of this file).
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("outhook=info"))
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// The JSON lines written so far whose message is `message` and that mention `needle`.
fn lines(message: &str, needle: &str) -> Vec<Value> {
    let text = String::from_utf8(captured().0.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|line| line.contains(needle))
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["message"] == message)
        .collect()
}

async fn a_failed_attempt_logs_its_webhook_and_delivery(backend: Backend) {
    captured();
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    rx.respond("/down", 503);
    let created = app
        .create_webhook(webhook(
            "spanned",
            &rx.url("/down"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.publish(event("entityCreated", "table", "a")).await;
    rx.wait_for("/down", 1, Duration::from_secs(20)).await;
    let delivery = rx.requests("/down")[0]
        .header("x-outhook-delivery-id")
        .unwrap()
        .to_owned();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        if let Some(line) = lines("delivery failed", &id).pop() {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 'delivery failed' line"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The innermost span is the attempt's; the worker's is around it.
    let attempt = &failed["span"];
    assert_eq!(attempt["name"], "attempt", "{failed}");
    assert_eq!(attempt["webhook.id"], id.as_str(), "{failed}");
    assert_eq!(attempt["delivery.id"], delivery.as_str(), "{failed}");
    assert_eq!(attempt["attempt"], 1, "{failed}");
    let worker = failed["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "worker")
        .unwrap_or_else(|| panic!("no worker span in {failed}"));
    assert_eq!(worker["webhook.id"], id.as_str(), "{failed}");
    assert_eq!(worker["webhook.name"], "spanned", "{failed}");
    assert_eq!(failed["status"], "awaitingRetry", "{failed}");
    app.stop().await;
}

on_both_backends!(a_failed_attempt_logs_its_webhook_and_delivery);
