//! Publishing (validation, atomic batches, idempotency, roles, rate limits) and reading
//! what happened (delivery log, status, test message, metrics), on both backends.

mod common;

use std::time::Duration;

use common::receiver::Receiver;
use common::{Backend, DELIVERY_ARGS, TestApp, TestDb, call, event, webhook};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn head(app: &TestApp) -> i64 {
    app.running
        .as_ref()
        .unwrap()
        .store
        .log_head()
        .await
        .unwrap()
}

async fn a_batch_with_a_bad_event_stores_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut bad_type = event("entityCreated", "table", "x");
    bad_type["eventType"] = json!("entityExploded");
    let mut no_entity = event("entityCreated", "table", "y");
    no_entity.as_object_mut().unwrap().remove("entity");
    let mut bad_id = event("entityCreated", "table", "z");
    bad_id["entity"]["id"] = json!("not-a-uuid");
    let batch = json!([
        event("entityCreated", "table", "ok"),
        bad_type,
        no_entity,
        bad_id,
        "not an event"
    ]);
    let (status, err) = call(app.admin(Method::POST, "/api/v1/events").json(&batch)).await;
    assert_eq!(status, 422, "{err}");
    let details: Vec<(u64, String)> = err["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().unwrap(),
                d["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        details,
        [
            (1, "eventType".to_owned()),
            (2, "entity".to_owned()),
            (3, "entity.id".to_owned()),
            (4, "event".to_owned())
        ]
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("event 1: eventType")
    );
    assert_eq!(head(&app).await, 0, "nothing was stored");
    for (body, status) in [
        (json!([]), 422),
        (json!(42), 400),
        (
            json!(
                (0..1001)
                    .map(|i| event("entityCreated", "table", &i.to_string()))
                    .collect::<Vec<_>>()
            ),
            413,
        ),
    ] {
        assert_eq!(
            call(app.admin(Method::POST, "/api/v1/events").json(&body))
                .await
                .0,
            status
        );
    }
    let (status, _) = call(
        app.admin(Method::POST, "/api/v1/events")
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(head(&app).await, 0);
    app.stop().await;
}

async fn a_repeated_event_is_acknowledged_not_delivered_again(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    app.create_webhook(webhook(
        "once",
        &rx.url("/once"),
        1,
        json!([{"eventType": "entityCreated"}]),
    ))
    .await;
    let e = event("entityCreated", "table", "t");
    let first = app.publish(e.clone()).await;
    assert_eq!(
        (first["stored"].as_u64(), first["duplicates"].as_u64()),
        (Some(1), Some(0))
    );
    let again = app
        .publish(json!([
            e.clone(),
            e.clone(),
            event("entityCreated", "table", "u")
        ]))
        .await;
    assert_eq!(
        (again["stored"].as_u64(), again["duplicates"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(again["eventIds"][0], e["eventId"]);
    let got = rx.wait_for("/once", 2, WAIT).await;
    rx.assert_stays_at("/once", 2, Duration::from_millis(300))
        .await;
    assert_eq!(got[0].json()["eventId"], e["eventId"]);
    // An event without an id gets one, returned in the answer.
    let mut anonymous = event("entityCreated", "table", "v");
    anonymous.as_object_mut().unwrap().remove("eventId");
    let answer = app.publish(anonymous).await;
    let id = answer["eventIds"][0].as_str().unwrap().to_owned();
    let got = rx.wait_for("/once", 3, WAIT).await;
    assert_eq!(got[2].json()["eventId"], json!(id));
    app.stop().await;
}

async fn only_publishers_and_admins_publish_within_their_limits(backend: Backend) {
    let mut args = DELIVERY_ARGS.to_vec();
    args.extend([
        "--publish-rate",
        "1",
        "--publish-burst",
        "3",
        "--publish-daily-quota",
        "5",
    ]);
    let app = TestApp::start_on(TestDb::new(backend).await, &args, true).await;
    let issue = |name: &str, role: &str| {
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": name, "role": role}))
    };
    let publisher = call(issue("producer", "publisher")).await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let reader = call(issue("viewer", "reader")).await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let publish = |token: &str| {
        app.client
            .post(app.url("/api/v1/events"))
            .bearer_auth(token)
            .json(&event("entityCreated", "table", "t"))
    };
    assert_eq!(
        call(app.client.post(app.url("/api/v1/events")).json(&event(
            "entityCreated",
            "table",
            "t"
        )))
        .await
        .0,
        401
    );
    assert_eq!(call(publish(&reader)).await.0, 403);
    for _ in 0..3 {
        assert_eq!(call(publish(&publisher)).await.0, 202);
    }
    let response = publish(&publisher).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("rate limit"),
        "{body}"
    );
    // The rate refills with the (injected) clock; the daily quota does not.
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(call(publish(&publisher)).await.0, 202);
    assert_eq!(call(publish(&publisher)).await.0, 202);
    app.clock.advance(Duration::from_secs(2));
    let response = publish(&publisher).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 2 && wait <= 86_400, "until midnight UTC: {wait}");
    // Limits are per token: the admin still publishes.
    assert_eq!(call(publish(common::ADMIN_TOKEN)).await.0, 202);
    assert_eq!(head(&app).await, 6);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("outhook_publish_rejected_total 2"),
        "{metrics}"
    );
    app.stop().await;
}

async fn the_delivery_log_status_test_and_metrics(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    rx.respond_sequence("/log", &[500, 200, 200, 200]);
    let mut body = webhook(
        "logged",
        &rx.url("/log"),
        2,
        json!([{"eventType": "entityCreated"}]),
    );
    body["webhookConfig"]["secretKey"] = json!("k");
    let created = app.create_webhook(body).await;
    let id = created["id"].as_str().unwrap();
    let ids = app
        .publish(json!([
            event("entityCreated", "table", "a"),
            event("entityCreated", "table", "b")
        ]))
        .await;
    rx.wait_for("/log", 1, WAIT).await;
    app.wait_for_attempts(id, 1).await;
    app.clock.advance(Duration::from_secs(60));
    rx.wait_for("/log", 2, WAIT).await;
    app.publish(json!([event("entityCreated", "table", "c")]))
        .await;
    rx.wait_for("/log", 3, WAIT).await;
    let log = app.wait_for_attempts(id, 3).await;
    let data = log["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{log}");
    let (newest, retry, first) = (&data[0], &data[1], &data[2]);
    assert_eq!(
        (
            first["attempt"].as_u64(),
            first["outcome"].as_str(),
            first["statusCode"].as_u64()
        ),
        (Some(1), Some("failure"), Some(500))
    );
    assert_eq!(first["eventIds"], ids["eventIds"]);
    assert_eq!(first["url"], json!(rx.url("/log")));
    assert!(first["requestBytes"].as_i64().unwrap() > 100);
    assert!(first["durationMs"].is_i64() && first["attemptedAt"].is_i64());
    assert_eq!(
        first["nextAttemptAt"].as_i64().unwrap() - first["attemptedAt"].as_i64().unwrap(),
        60_000
    );
    assert_eq!(
        (retry["attempt"].as_u64(), retry["outcome"].as_str()),
        (Some(2), Some("success"))
    );
    assert_eq!(retry["deliveryId"], first["deliveryId"]);
    assert_ne!(newest["deliveryId"], first["deliveryId"]);
    assert!(first.get("secretKey").is_none() && !log.to_string().contains("\"k\""));
    // Paging, newest first, and the outcome filter.
    let page = app
        .get(&format!("/api/v1/webhooks/{id}/deliveries?limit=2"))
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let after = page["paging"]["after"].as_str().unwrap();
    let rest = app
        .get(&format!(
            "/api/v1/webhooks/{id}/deliveries?limit=2&after={after}"
        ))
        .await;
    assert_eq!(rest["data"][0]["attempt"], 1);
    assert_eq!(rest["paging"]["after"], Value::Null);
    let failures = app
        .get(&format!("/api/v1/webhooks/{id}/deliveries?status=failure"))
        .await;
    assert_eq!(failures["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        call(app.admin(
            Method::GET,
            &format!("/api/v1/webhooks/{id}/deliveries?status=maybe")
        ))
        .await
        .0,
        400
    );

    let status = app.get(&format!("/api/v1/webhooks/{id}/status")).await;
    assert_eq!(status["status"], "active");
    assert_eq!(status["position"], status["logHead"]);
    assert_eq!(status["pendingEvents"], 0);
    assert_eq!(status["failureDetails"]["lastFailedStatusCode"], 500);

    // A test message goes through the real path, signed, without touching the log.
    let (code, test) = call(app.admin(Method::POST, &format!("/api/v1/webhooks/{id}/test"))).await;
    assert_eq!(code, 200);
    assert_eq!(
        (test["outcome"].as_str(), test["statusCode"].as_u64()),
        (Some("success"), Some(200)),
        "{test}"
    );
    let got = rx.wait_for("/log", 4, WAIT).await;
    let message = got[3].json();
    assert_eq!(
        message[0]["entity"]["type"], "webhook",
        "batchSize 2: an array of one"
    );
    assert!(
        got[3]
            .header("x-openmetadata-signature")
            .unwrap()
            .starts_with("sha256=")
    );
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{id}/deliveries")).await["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // A reader sees, but cannot send tests.
    let reader = call(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "r", "role": "reader"})),
    )
    .await
    .1;
    let reader = reader["token"].as_str().unwrap();
    assert_eq!(
        call(
            app.client
                .get(app.url(&format!("/api/v1/webhooks/{id}/status")))
                .bearer_auth(reader)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            app.client
                .post(app.url(&format!("/api/v1/webhooks/{id}/test")))
                .bearer_auth(reader)
        )
        .await
        .0,
        403
    );
    // A test to a dead endpoint reports the error.
    let dead = app
        .create_webhook(webhook("dead", "http://127.0.0.1:9/nothing", 1, json!([])))
        .await;
    let (_, test) = call(app.admin(
        Method::POST,
        &format!("/api/v1/webhooks/{}/test", dead["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(
        (test["outcome"].as_str(), test["errorKind"].as_str()),
        (Some("failure"), Some("connect")),
        "{test}"
    );

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    for line in [
        "outhook_events_ingested_total 3",
        "outhook_deliveries_total{outcome=\"success\"} 2",
        "outhook_deliveries_total{outcome=\"failure\"} 1",
        "outhook_delivery_duration_seconds_count 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(
        text.contains(&format!(
            "outhook_webhook_lag_events{{webhook_id=\"{id}\",webhook=\"logged\"}}"
        )),
        "{text}"
    );
    app.stop().await;
}

async fn a_slow_endpoint_does_not_hold_up_a_fast_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    rx.delay("/slow", Duration::from_secs(3));
    app.create_webhook(webhook(
        "slow",
        &rx.url("/slow"),
        1,
        json!([{"eventType": "entityCreated"}]),
    ))
    .await;
    app.create_webhook(webhook(
        "fast",
        &rx.url("/fast"),
        1,
        json!([{"eventType": "entityCreated"}]),
    ))
    .await;
    let started = std::time::Instant::now();
    for i in 0..20 {
        app.publish(event("entityCreated", "table", &i.to_string()))
            .await;
    }
    rx.wait_for("/fast", 20, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the fast webhook took {took:?}"
    );
    assert!(rx.requests("/slow").len() <= 1);
    app.stop().await;
}

async fn retention_prunes_old_events(backend: Backend) {
    let mut args = DELIVERY_ARGS.to_vec();
    args.extend(["--retention", "1h"]);
    // Published in 2023 by the manual clock...
    let app = TestApp::start_on(TestDb::new(backend).await, &args, true).await;
    app.publish(json!([event("entityCreated", "table", "old")]))
        .await;
    let store = app.running.as_ref().unwrap().store.clone();
    let db = app.stop_keep_db().await;
    assert_eq!(store.read_events(0, i64::MAX, 10).await.unwrap().len(), 1);
    // ...and far past a one-hour retention for an instance on the real clock, whose pruner
    // runs at start. A fresh event stays.
    let app = TestApp::start_on(db, &args, false).await;
    let fresh = app
        .publish(json!([event("entityCreated", "table", "new")]))
        .await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = store.read_events(0, i64::MAX, 10).await.unwrap();
        if left.len() == 1 {
            assert_eq!(json!(left[0].event_id), fresh["eventIds"][0]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old event is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

on_both_backends!(
    a_batch_with_a_bad_event_stores_nothing,
    a_repeated_event_is_acknowledged_not_delivered_again,
    only_publishers_and_admins_publish_within_their_limits,
    the_delivery_log_status_test_and_metrics,
    a_slow_endpoint_does_not_hold_up_a_fast_one,
    retention_prunes_old_events,
);
