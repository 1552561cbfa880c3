//! Delivery health at a glance: `/status`'s figures over the last hour and day, read off
//! per-minute rollups written with the attempts (the test clock moves time), the oldest
//! pending event's age, and the list of failing webhooks, on both backends.

mod common;

use std::time::Duration;

use common::receiver::Receiver;
use common::{Backend, TestApp, event, webhook};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn counts(window: &Value) -> (i64, i64, i64) {
    (
        window["attempts"].as_i64().unwrap(),
        window["successes"].as_i64().unwrap(),
        window["failures"].as_i64().unwrap(),
    )
}

async fn status_reports_health_over_an_hour_and_a_day(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    rx.respond_sequence("/h", &[500, 200, 200]);
    let created = app
        .create_webhook(webhook(
            "healthy",
            &rx.url("/h"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/webhooks/{id}/status");

    let fresh = app.get(&path).await;
    assert_eq!(counts(&fresh["health"]["lastHour"]), (0, 0, 0), "{fresh}");
    assert_eq!(fresh["health"]["lastHour"]["successRatio"], Value::Null);
    assert_eq!(fresh["health"]["last24Hours"]["p50DurationMs"], Value::Null);
    assert_eq!(fresh["oldestPendingAgeMs"], Value::Null);

    // One failure, retried a minute later; the event waits meanwhile.
    app.publish(json!([event("entityCreated", "table", "a")]))
        .await;
    app.wait_for_attempts(id, 1).await;
    app.clock.advance(Duration::from_secs(30));
    let waiting = app.get(&path).await;
    assert_eq!(waiting["status"], "awaitingRetry", "{waiting}");
    assert_eq!(waiting["pendingEvents"], 1);
    assert_eq!(waiting["oldestPendingAgeMs"], 30_000, "{waiting}");
    assert_eq!(counts(&waiting["health"]["lastHour"]), (1, 0, 1));
    assert_eq!(waiting["health"]["lastHour"]["successRatio"], 0.0);

    app.clock.advance(Duration::from_secs(30));
    rx.wait_for("/h", 2, WAIT).await;
    app.wait_for_attempts(id, 2).await;
    app.publish(json!([event("entityCreated", "table", "b")]))
        .await;
    app.wait_for_attempts(id, 3).await;
    let done = app.get(&path).await;
    assert_eq!(done["oldestPendingAgeMs"], Value::Null, "{done}");
    let hour = &done["health"]["lastHour"];
    assert_eq!(counts(hour), (3, 2, 1), "{done}");
    assert!((hour["successRatio"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // Local requests take well under a second: the bucket bounds say how much.
    let p50 = hour["p50DurationMs"].as_i64().unwrap();
    let p99 = hour["p99DurationMs"].as_i64().unwrap();
    assert!((1..=1000).contains(&p50) && p50 <= p99, "{done}");
    assert_eq!(done["health"]["last24Hours"], *hour);

    // Two hours on, the hour is empty and the day still counts them; a day on, nothing.
    app.clock.advance(Duration::from_secs(2 * 3600));
    let later = app.get(&path).await;
    assert_eq!(counts(&later["health"]["lastHour"]), (0, 0, 0), "{later}");
    assert_eq!(counts(&later["health"]["last24Hours"]), (3, 2, 1));
    app.clock.advance(Duration::from_secs(23 * 3600));
    let day_on = app.get(&path).await;
    assert_eq!(
        counts(&day_on["health"]["last24Hours"]),
        (0, 0, 0),
        "{day_on}"
    );
    app.stop().await;
}

async fn failing_lists_webhooks_neither_active_nor_disabled(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    rx.respond("/down", 500);
    let filters = json!([{"eventType": "entityCreated"}]);
    let down = app
        .create_webhook(webhook("down", &rx.url("/down"), 1, filters.clone()))
        .await;
    app.create_webhook(webhook("up", &rx.url("/up"), 1, filters.clone()))
        .await;
    let off = app
        .create_webhook(webhook("off", &rx.url("/down"), 1, filters))
        .await;
    app.patch(
        off["id"].as_str().unwrap(),
        json!([{"op": "replace", "path": "/enabled", "value": false}]),
    )
    .await;
    app.publish(json!([event("entityCreated", "table", "x")]))
        .await;
    app.wait_for_attempts(down["id"].as_str().unwrap(), 1).await;
    rx.wait_for("/up", 1, WAIT).await;

    let names = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let failing = app.get("/api/v1/webhooks?failing=true").await;
    assert_eq!(names(&failing), ["down"], "{failing}");
    assert_eq!(failing["paging"]["total"], 1);
    let all = app.get("/api/v1/webhooks?failing=false").await;
    assert_eq!(names(&all), ["down", "off", "up"]);
    let none = app
        .get("/api/v1/webhooks?failing=true&webhookType=Slack")
        .await;
    assert_eq!(names(&none), Vec::<String>::new());
    let (status, body) =
        common::call(app.admin(reqwest::Method::GET, "/api/v1/webhooks?failing=maybe")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("failing"),
        "{body}"
    );
    app.stop().await;
}

async fn rollups_go_with_the_attempts_past_retention(backend: Backend) {
    let mut args = common::DELIVERY_ARGS.to_vec();
    args.extend(["--retention", "1h"]);
    let app = TestApp::start_with(backend, &args).await;
    let store = app.running.as_ref().unwrap().store.clone();
    let rx = Receiver::start().await;
    let created = app
        .create_webhook(webhook(
            "kept",
            &rx.url("/k"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    app.publish(json!([event("entityCreated", "table", "a")]))
        .await;
    app.wait_for_attempts(&id.to_string(), 1).await;
    let rollups = store.attempt_rollups(id, 0).await.unwrap();
    assert_eq!(
        rollups.iter().map(|r| r.attempts).sum::<i64>(),
        1,
        "{rollups:?}"
    );

    app.clock.advance(Duration::from_secs(3600 + 120));
    let deadline = std::time::Instant::now() + WAIT;
    while !store.attempt_rollups(id, 0).await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollups were not pruned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = app.get(&format!("/api/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(log["data"], json!([]), "{log}");
    app.stop().await;
}

on_both_backends!(
    status_reports_health_over_an_hour_and_a_day,
    failing_lists_webhooks_neither_active_nor_disabled,
    rollups_go_with_the_attempts_past_retention,
);
