//! Retention runs continuously in bounded steps, and an event's id outlives its body: an
//! eventId sent again after the body was pruned is still acknowledged as a duplicate, for
//! twice the retention.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, DELIVERY_ARGS, TestApp, event};
use serde_json::{Value, json};
use sqlx::Connection;

/// How many events (id and all) the log holds, read from the database itself.
async fn rows_in_log(url: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM events";
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// Waits (at most 20 s) until `done` holds.
async fn within_seconds<F: std::future::Future<Output = bool>>(what: &str, done: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_event_id_outlives_its_body(backend: Backend) {
    let mut args = DELIVERY_ARGS.to_vec();
    args.extend(["--retention", "1h"]);
    let app = TestApp::start_with(backend, &args).await;
    let store = app.running.as_ref().unwrap().store.clone();
    // More events than one step of retention takes, and one to send again later.
    for chunk in 0..3 {
        let batch: Vec<Value> = (0..500)
            .map(|i| event("entityCreated", "table", &format!("old{chunk}-{i}")))
            .collect();
        app.publish(json!(batch)).await;
    }
    let kept = event("entityCreated", "table", "kept");
    app.publish(kept.clone()).await;
    assert_eq!(rows_in_log(&app.db.url).await, 1501);

    // Past the retention: within one round (no 10-minute wait), every body goes, in steps.
    app.clock.advance(Duration::from_secs(3600 + 60));
    within_seconds("pruning the bodies", || async {
        store.read_events(0, i64::MAX, 10).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(rows_in_log(&app.db.url).await, 1501, "the ids stay");
    // Sent again: still a duplicate, neither stored nor delivered again.
    let again = app.publish(kept.clone()).await;
    assert_eq!(
        (again["stored"].as_i64(), again["duplicates"].as_i64()),
        (Some(0), Some(1)),
        "{again}"
    );

    // Past twice the retention the ids go too; the same eventId is then new again.
    app.clock.advance(Duration::from_secs(3600));
    let url = app.db.url.clone();
    within_seconds("pruning the ids", || async { rows_in_log(&url).await == 0 }).await;
    let later = app.publish(kept).await;
    assert_eq!(
        (later["stored"].as_i64(), later["duplicates"].as_i64()),
        (Some(1), Some(0)),
        "{later}"
    );
    app.stop().await;
}

on_both_backends!(an_event_id_outlives_its_body);
