//! OpenMetadata as the producer: an alert with a Generic (webhook) destination pointed at
//! `/api/v1/events`, the publisher token in its custom `Authorization` header. Its requests
//! are sent here byte for byte as it sends them (one ChangeEvent per request, the entity a
//! string of JSON, `X-OM-Signature` when its secret is set), on both backends.

mod common;

use std::time::Duration;

use base64::Engine;
use common::receiver::Receiver;
use common::{Backend, TestApp, call, webhook};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

/// What an OpenMetadata server sends for a tag added to a table (`tests/fixtures`).
const FIXTURE: &str = include_str!("fixtures/openmetadata_change_event.json");
const DOMAIN_ID: &str = "9d8c7b6a-5f4e-4d3c-8b2a-19f0e1d2c3b4";
const SECRET: &str = "om-alert-secret-5d1f0c9a";

/// `sha256=<base64 HMAC-SHA256(secret, body)>`, as OpenMetadata's CommonUtil computes it.
fn om_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!(
        "sha256={}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// One request as OpenMetadata's Generic publisher makes it (its JAX-RS client's headers,
/// the alert's custom `Authorization` header).
fn om_request(
    app: &TestApp,
    token: &str,
    body: &'static str,
    signature: Option<String>,
) -> reqwest::RequestBuilder {
    let mut request = app
        .client
        .post(app.url("/api/v1/events"))
        .header("Content-Type", "application/json")
        .header("Accept", "text/html, image/gif, image/jpeg, */*; q=0.2")
        .header("User-Agent", "Jersey/3.1.9 (HttpUrlConnection 21.0.5)")
        .header("Authorization", format!("Bearer {token}"))
        .body(body);
    if let Some(signature) = signature {
        request = request.header("X-OM-Signature", signature);
    }
    request
}

async fn head(app: &TestApp) -> i64 {
    app.running
        .as_ref()
        .unwrap()
        .store
        .log_head()
        .await
        .unwrap()
}

async fn issue(app: &TestApp, body: Value) -> (u16, Value) {
    call(app.admin(Method::POST, "/api/v1/tokens").json(&body)).await
}

async fn an_openmetadata_alert_publishes_signed_events(backend: Backend) {
    let app = TestApp::start(backend).await;
    let receiver = Receiver::start().await;
    // Subscribed by the domain's id, which OpenMetadata's event carries in `domains`.
    app.create_webhook(webhook(
        "sales-tags",
        &receiver.url("/hook"),
        1,
        json!([{"eventType": "entityUpdated", "entities": ["table"],
                "include": [format!("domain:{DOMAIN_ID}")]}]),
    ))
    .await;
    let (status, issued) = issue(
        &app,
        json!({"name": "openmetadata", "role": "publisher", "signingSecret": SECRET}),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["signingSecret"], "********");
    let token = issued["token"].as_str().unwrap().to_owned();
    let listed = app.get("/api/v1/tokens").await.to_string();
    assert!(!listed.contains(SECRET) && listed.contains("\"signingSecret\":\"********\""));

    // Unsigned, wrongly signed, or signed over other bytes: 401, and nothing is stored.
    let other_body = FIXTURE.replace("jane.smith", "mallory");
    for (case, signature) in [
        ("missing", None),
        (
            "wrong secret",
            Some(om_signature("another-secret-123456", FIXTURE.as_bytes())),
        ),
        (
            "other body",
            Some(om_signature(SECRET, other_body.as_bytes())),
        ),
        (
            "hex instead of base64",
            Some(format!("sha256={}", "ab".repeat(32))),
        ),
    ] {
        let (status, body) = call(om_request(&app, &token, FIXTURE, signature)).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("X-OM-Signature"),
            "{case}: {body}"
        );
    }
    assert_eq!(head(&app).await, 0, "a refused request stores nothing");

    let signature = om_signature(SECRET, FIXTURE.as_bytes());
    let (status, answer) = call(om_request(&app, &token, FIXTURE, Some(signature.clone()))).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["stored"], 1);
    assert_eq!(
        answer["eventIds"][0], "3e9b1c2d-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
        "OpenMetadata's `id` is the eventId"
    );
    // OpenMetadata retries a delivery it saw fail: the same event is acknowledged again.
    let (status, again) = call(om_request(&app, &token, FIXTURE, Some(signature))).await;
    assert_eq!((status, again["duplicates"].clone()), (202, json!(1)));

    let got = receiver.wait_for("/hook", 1, Duration::from_secs(20)).await;
    let delivered = got[0].json();
    assert_eq!(delivered["entity"]["name"], "customers", "{delivered}");
    assert_eq!(delivered["domains"][0], DOMAIN_ID);
    assert!(delivered["incrementalChangeDescription"].is_object());
    receiver
        .assert_stays_at("/hook", 1, Duration::from_millis(300))
        .await;
    app.stop().await;
}

async fn tokens_without_a_signing_secret_need_no_signature(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, issued) = issue(&app, json!({"name": "plain", "role": "publisher"})).await;
    assert!(issued.get("signingSecret").is_none(), "{issued}");
    let token = issued["token"].as_str().unwrap().to_owned();
    // OpenMetadata signs whenever its alert has a secret; a token without one ignores it.
    let (status, answer) = call(om_request(
        &app,
        &token,
        FIXTURE,
        Some(om_signature("whatever-the-alert-has", FIXTURE.as_bytes())),
    ))
    .await;
    assert_eq!(
        (status, answer["stored"].clone()),
        (202, json!(1)),
        "{answer}"
    );
    let (status, answer) = call(om_request(&app, &token, FIXTURE, None)).await;
    assert_eq!(
        (status, answer["duplicates"].clone()),
        (202, json!(1)),
        "{answer}"
    );

    for (body, field) in [
        (
            json!({"name": "short", "role": "publisher", "signingSecret": "too-short"}),
            "signingSecret",
        ),
        (
            json!({"name": "reader", "role": "reader", "signingSecret": SECRET}),
            "signingSecret",
        ),
        (
            json!({"name": "ctl", "role": "publisher", "signingSecret": "0123456789abcdef\u{7}"}),
            "signingSecret",
        ),
    ] {
        let (status, err) = issue(&app, body.clone()).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert_eq!(err["details"][0]["field"], field, "{err}");
    }
    app.stop().await;
}

on_both_backends!(
    an_openmetadata_alert_publishes_signed_events,
    tokens_without_a_signing_secret_need_no_signature,
);
