//! Events in, signed deliveries out: order, filters, batching, signatures, headers,
//! failures and retries on the injected clock, resume, pause and filter changes. On both
//! backends, against real HTTP receivers on 127.0.0.1.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::receiver::{Received, Receiver};
use common::{Backend, TestApp, call, event, webhook};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// Event ids in the order a receiver got them (one object per request, or arrays).
fn ids(requests: &[Received]) -> Vec<String> {
    let mut out = Vec::new();
    for r in requests {
        match r.json() {
            Value::Array(items) => out.extend(
                items
                    .iter()
                    .map(|e| e["eventId"].as_str().unwrap().to_owned()),
            ),
            one => out.push(one["eventId"].as_str().unwrap().to_owned()),
        }
    }
    out
}

fn published_ids(answer: &Value) -> Vec<String> {
    answer["eventIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Verifies every body with the receiver snippet of `seeds/002_*`, run by Python itself.
fn verify_with_seed_snippet(requests: &[Received], secret: &str) {
    let script = r#"
import hmac, hashlib, json, sys

def verify_signature(payload, signature, secret_key):
    expected = hmac.new(
        secret_key.encode('utf-8'),
        payload.encode('utf-8'),
        hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", signature)

secret = sys.argv[1]
checked = 0
for line in sys.stdin:
    item = json.loads(line)
    if not verify_signature(item["body"], item["signature"], secret):
        print("bad signature for", item["body"][:80]); sys.exit(1)
    if verify_signature(item["body"] + " ", item["signature"], secret):
        print("a changed body passed"); sys.exit(1)
    checked += 1
print(checked)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the seed's verify_signature");
    let mut stdin = child.stdin.take().unwrap();
    for r in requests {
        let line = json!({
            "body": std::str::from_utf8(&r.body).unwrap(),
            "signature": r.header("x-openmetadata-signature").expect("a signature header"),
        });
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the seed snippet rejected a signature: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        requests.len().to_string()
    );
}

async fn events_arrive_signed_in_order_filtered_and_batched(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let mut single = webhook(
        "tables",
        &rx.url("/single"),
        1,
        json!([
            {"eventType": "entityCreated", "entities": ["table"]},
            {"eventType": "entityUpdated", "entities": ["table"], "include": ["tags", "owner"], "exclude": ["domain:Secret"]}
        ]),
    );
    single["webhookConfig"]["secretKey"] = json!("s3cret-key");
    single["webhookConfig"]["headers"] = json!({"X-Team": "data", "Authorization": "Bearer abc"});
    app.create_webhook(single).await;
    app.create_webhook(webhook(
        "everything",
        &rx.url("/batched"),
        3,
        json!([{"eventType": "entityCreated"}, {"eventType": "entityUpdated"}]),
    ))
    .await;

    let updated = |name: &str, field: &str, domain: &str| {
        let mut e = event("entityUpdated", "table", name);
        e["entity"]["domain"] = json!({"type": "domain", "name": domain});
        e["changeDescription"] = json!({"fieldsAdded": [], "fieldsUpdated": [{"name": field, "oldValue": "a", "newValue": "b"}], "fieldsDeleted": []});
        e
    };
    let events = json!([
        event("entityCreated", "table", "t1"),     // both
        event("entityCreated", "dashboard", "d1"), // batched only
        updated("t2", "tags", "Sales"),            // both
        updated("t3", "description", "Sales"),     // batched only (include)
        updated("t4", "owner", "Secret"),          // batched only (exclude)
        event("entityDeleted", "table", "t5"),     // neither
        event("entityCreated", "table", "t6"),     // both
    ]);
    let answer = app.publish(events).await;
    assert_eq!(
        (answer["stored"].as_u64(), answer["duplicates"].as_u64()),
        (Some(7), Some(0))
    );
    let sent = published_ids(&answer);
    // One more publish, one event at a time.
    let late = app.publish(event("entityCreated", "table", "t7")).await;
    let late_id = published_ids(&late)[0].clone();

    let single = rx.wait_for("/single", 4, WAIT).await;
    assert_eq!(
        ids(&single),
        [
            sent[0].clone(),
            sent[2].clone(),
            sent[6].clone(),
            late_id.clone()
        ]
    );
    for r in &single {
        let body = r.json();
        assert!(body.is_object(), "batchSize 1 sends one object");
        assert_eq!(body["webhookName"], "tables");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("user-agent").unwrap().starts_with("outhook/"));
        assert_eq!(r.header("x-team"), Some("data"));
        assert_eq!(r.header("authorization"), Some("Bearer abc"));
        assert!(uuid::Uuid::parse_str(r.header("x-outhook-delivery-id").unwrap()).is_ok());
        assert_eq!(r.header("x-outhook-attempt"), Some("1"));
    }
    verify_with_seed_snippet(&single, "s3cret-key");

    let batched = rx.wait_for("/batched", 1, WAIT).await;
    let expected: Vec<&String> = sent
        .iter()
        .take(5)
        .chain(sent.iter().skip(6))
        .chain([&late_id])
        .collect();
    let deadline = std::time::Instant::now() + WAIT;
    let mut got = ids(&batched);
    while got.len() < expected.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = ids(&rx.requests("/batched"));
    }
    assert_eq!(
        got.iter().collect::<Vec<_>>(),
        expected,
        "in log order, filtered"
    );
    for r in rx.requests("/batched") {
        let items = r.json();
        let items = items.as_array().expect("batchSize 3 always sends an array");
        assert!((1..=3).contains(&items.len()));
        assert!(
            r.header("x-openmetadata-signature").is_none(),
            "no secret, no signature"
        );
    }
    // The payload is the event as published, plus webhookName.
    let first = &single[0].json();
    assert_eq!(first["eventType"], "entityCreated");
    assert_eq!(first["entity"]["name"], "t1");
    assert_eq!(first["entityType"], "table");
    app.stop().await;
}

/// Waits until the app's dispatcher runs the worker of webhook `id`.
async fn delivering(app: &TestApp, id: &str) {
    let dispatcher = &app.running.as_ref().unwrap().dispatcher;
    let id = uuid::Uuid::parse_str(id).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !dispatcher.is_delivering(id) {
        assert!(std::time::Instant::now() < deadline, "no worker for {id}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the app's dispatcher has routed everything in the log.
async fn routed(app: &TestApp) {
    let running = app.running.as_ref().unwrap();
    let head = running.store.log_head().await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while running.dispatcher.position() < head {
        assert!(
            std::time::Instant::now() < deadline,
            "the dispatcher did not reach the log head"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status_of(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/webhooks/{id}/status")).await
}

/// The attempts of `id`, newest first, once there are `n`.
async fn attempts(app: &TestApp, id: &str, n: usize) -> Vec<Value> {
    app.wait_for_attempts(id, n).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn failures_follow_the_retry_schedule_then_stop_and_resume(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    rx.respond("/down", 503);
    let created = app
        .create_webhook(webhook(
            "flaky",
            &rx.url("/down"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    let first = published_ids(&app.publish(event("entityCreated", "table", "a")).await);
    let second = published_ids(&app.publish(event("entityCreated", "table", "b")).await);

    // The default schedule: 1m, 5m, 15m, 1h, 4h, 12h, driven by the manual clock.
    let schedule: [u64; 6] = [60, 300, 900, 3_600, 14_400, 43_200];
    for (i, delay) in schedule.iter().enumerate() {
        let log = attempts(&app, id, i + 1).await;
        let status = status_of(&app, id).await;
        assert_eq!(status["status"], "awaitingRetry", "{status}");
        let details = &status["failureDetails"];
        assert_eq!(details["lastFailedStatusCode"], 503);
        let waited =
            details["nextAttempt"].as_i64().unwrap() - details["lastFailedAt"].as_i64().unwrap();
        assert_eq!(waited, *delay as i64 * 1000, "retry {}", i + 1);
        assert_eq!(log[0]["attempt"], i + 1);
        assert_eq!(log[0]["outcome"], "failure");
        assert_eq!(log[0]["nextAttemptAt"], details["nextAttempt"]);
        // One second early: nothing happens.
        app.clock.advance(Duration::from_secs(delay - 1));
        rx.assert_stays_at("/down", i + 1, Duration::from_millis(150))
            .await;
        app.clock.advance(Duration::from_secs(1));
        rx.wait_for("/down", i + 2, WAIT).await;
    }
    let log = attempts(&app, id, 7).await;
    let status = status_of(&app, id).await;
    assert_eq!(status["status"], "retryLimitReached", "{status}");
    assert!(status["failureDetails"].get("nextAttempt").is_none());
    assert_eq!(status["inFlight"]["attempts"], 7);
    assert_eq!(status["pendingEvents"], 2);
    let requests = rx.requests("/down");
    assert_eq!(requests.len(), 7, "seven attempts in all");
    let delivery_ids: std::collections::HashSet<_> = requests
        .iter()
        .map(|r| r.header("x-outhook-delivery-id").unwrap().to_owned())
        .collect();
    assert_eq!(delivery_ids.len(), 1, "the same batch every time");
    assert!(
        requests
            .iter()
            .all(|r| r.json()["eventId"] == json!(first[0])),
        "nothing moved past it"
    );
    assert_eq!(
        requests
            .iter()
            .map(|r| r.header("x-outhook-attempt").unwrap().to_owned())
            .collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5", "6", "7"]
    );
    assert_eq!(log.len(), 7);
    // Stopped: even a day later nothing is sent.
    app.clock.advance(Duration::from_secs(86_400));
    rx.assert_stays_at("/down", 7, Duration::from_millis(200))
        .await;

    // The endpoint is fixed; an admin resumes; delivery continues from the same batch.
    rx.respond("/down", 200);
    let (code, resumed) =
        call(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/resume"))).await;
    assert_eq!(
        (code, &resumed["status"]),
        (200, &json!("active")),
        "{resumed}"
    );
    let got = rx.wait_for("/down", 9, WAIT).await;
    assert_eq!(got[7].json()["eventId"], json!(first[0]));
    assert_eq!(
        got[7].header("x-outhook-delivery-id"),
        requests[0].header("x-outhook-delivery-id")
    );
    assert_eq!(got[8].json()["eventId"], json!(second[0]));
    attempts(&app, id, 9).await;
    let status = status_of(&app, id).await;
    assert_eq!(
        (status["status"].as_str(), status["pendingEvents"].as_u64()),
        (Some("active"), Some(0)),
        "{status}"
    );
    assert!(status.get("inFlight").is_none());
    assert!(status["lastSuccessAt"].is_i64());
    app.stop().await;
}

async fn a_short_schedule_on_the_real_clock(backend: Backend) {
    let mut args = common::DELIVERY_ARGS.to_vec();
    args.extend(["--retry-schedule", "200ms,300ms"]);
    let app = TestApp::start_on(common::TestDb::new(backend).await, &args, false).await;
    let rx = Receiver::start().await;
    rx.respond_sequence("/twice", &[500, 502]);
    let created = app
        .create_webhook(webhook(
            "real",
            &rx.url("/twice"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    app.publish(event("entityCreated", "table", "x")).await;
    let got = rx.wait_for("/twice", 3, WAIT).await;
    let gaps: Vec<u128> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    assert!(gaps[0] >= 190 && gaps[1] >= 290, "waited {gaps:?}");
    let log = attempts(&app, id, 3).await;
    assert_eq!(
        log.iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["success", "failure", "failure"]
    );
    assert_eq!(log[2]["statusCode"], 500);
    assert_eq!(status_of(&app, id).await["status"], "active");
    // The last schedule step passed: with only failures, the limit is reached after 3 attempts.
    rx.respond("/always", 500);
    let created = app
        .create_webhook(webhook(
            "limit",
            &rx.url("/always"),
            1,
            json!([{"eventType": "entityDeleted"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    app.publish(event("entityDeleted", "table", "y")).await;
    rx.wait_for("/always", 3, WAIT).await;
    attempts(&app, id, 3).await;
    assert_eq!(status_of(&app, id).await["status"], "retryLimitReached");
    app.stop().await;
}

async fn what_retrying_cannot_fix_fails_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    rx.respond("/gone", 410);
    let gone = app
        .create_webhook(webhook(
            "gone",
            &rx.url("/gone"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    // A private address that the policy does not allow: nothing is ever sent there.
    let private = app
        .create_webhook(webhook(
            "private",
            "http://10.255.255.1:9/hook",
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    app.publish(event("entityCreated", "table", "x")).await;
    for (created, kind) in [(&gone, "status"), (&private, "refused")] {
        let id = created["id"].as_str().unwrap();
        let log = attempts(&app, id, 1).await;
        assert_eq!(
            (log[0]["outcome"].as_str(), log[0]["errorKind"].as_str()),
            (Some("fatal"), Some(kind)),
            "{log:?}"
        );
        let status = status_of(&app, id).await;
        assert_eq!(status["status"], "failed", "{status}");
        assert!(status["failureDetails"].get("nextAttempt").is_none());
    }
    let log = attempts(&app, private["id"].as_str().unwrap(), 1).await;
    assert!(
        log[0]["error"]
            .as_str()
            .unwrap()
            .contains("OUTHOOK_ALLOW_PRIVATE"),
        "{log:?}"
    );
    app.clock.advance(Duration::from_secs(86_400));
    rx.assert_stays_at("/gone", 1, Duration::from_millis(200))
        .await;
    // Fixing the webhook (PATCH status active) sends the batch again.
    rx.respond("/gone", 200);
    app.patch(
        gone["id"].as_str().unwrap(),
        json!([{"op": "replace", "path": "/status", "value": "active"}]),
    )
    .await;
    rx.wait_for("/gone", 2, WAIT).await;
    app.stop().await;
}

async fn a_disabled_webhook_continues_where_it_stopped(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let created = app
        .create_webhook(webhook(
            "pausable",
            &rx.url("/p"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    let before = published_ids(
        &app.publish(json!([
            event("entityCreated", "table", "a"),
            event("entityCreated", "table", "b")
        ]))
        .await,
    );
    rx.wait_for("/p", 2, WAIT).await;
    let disabled = app
        .patch(
            id,
            json!([{"op": "replace", "path": "/enabled", "value": false}]),
        )
        .await;
    assert_eq!(disabled["status"], "disabled");
    let during = published_ids(
        &app.publish(json!([
            event("entityCreated", "table", "c"),
            event("entityCreated", "table", "d"),
            event("entityCreated", "table", "e")
        ]))
        .await,
    );
    rx.assert_stays_at("/p", 2, Duration::from_millis(400))
        .await;
    assert_eq!(status_of(&app, id).await["pendingEvents"], 3);
    // Soft-deleted is the same: nothing until restored.
    call(app.admin(Method::DELETE, &format!("/api/v1/webhooks/{id}"))).await;
    call(
        app.admin(Method::PUT, "/api/v1/webhooks/restore")
            .json(&json!({"id": id})),
    )
    .await;
    rx.assert_stays_at("/p", 2, Duration::from_millis(200))
        .await;
    app.patch(
        id,
        json!([{"op": "replace", "path": "/enabled", "value": true}]),
    )
    .await;
    let got = rx.wait_for("/p", 5, WAIT).await;
    assert_eq!(
        ids(&got),
        before.iter().chain(&during).cloned().collect::<Vec<_>>()
    );
    app.stop().await;
}

async fn new_filters_apply_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let created = app
        .create_webhook(webhook(
            "changing",
            &rx.url("/c"),
            1,
            json!([{"eventType": "entityCreated", "entities": ["table"]}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    // The worker runs (routing reaches it), and the endpoint is slow: the change below
    // lands while the worker is still sending.
    delivering(&app, id).await;
    rx.delay("/c", Duration::from_millis(300));
    app.publish(event("entityCreated", "table", "a")).await;
    app.publish(event("entityCreated", "dashboard", "skipped"))
        .await;
    routed(&app).await; // judged by the filters in force when it was routed: not delivered
    app.patch(
        id,
        json!([{"op": "replace", "path": "/eventFilters/0/entities", "value": ["dashboard"]}]),
    )
    .await;
    let after = published_ids(
        &app.publish(json!([
            event("entityCreated", "table", "no"),
            event("entityCreated", "dashboard", "yes")
        ]))
        .await,
    );
    let got = rx.wait_for("/c", 2, WAIT).await;
    rx.assert_stays_at("/c", 2, Duration::from_millis(300))
        .await;
    let names: Vec<String> = got
        .iter()
        .map(|r| r.json()["entity"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "yes"]);
    assert_eq!(ids(&got)[1], after[1]);
    // A webhook created while events flow gets what comes after it, not what came before.
    let newer = app
        .create_webhook(webhook(
            "newer",
            &rx.url("/n"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let next = published_ids(&app.publish(event("entityCreated", "table", "z")).await);
    let got = rx.wait_for("/n", 1, WAIT).await;
    assert_eq!(ids(&got), next);
    attempts(&app, newer["id"].as_str().unwrap(), 1).await;
    assert_eq!(
        status_of(&app, newer["id"].as_str().unwrap()).await["pendingEvents"],
        0
    );
    app.stop().await;
}

on_both_backends!(
    events_arrive_signed_in_order_filtered_and_batched,
    failures_follow_the_retry_schedule_then_stop_and_resume,
    a_short_schedule_on_the_real_clock,
    what_retrying_cannot_fix_fails_at_once,
    a_disabled_webhook_continues_where_it_stopped,
    new_filters_apply_at_once,
);
