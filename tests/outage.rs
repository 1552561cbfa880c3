//! PostgreSQL stops under a running instance: every request that needs the database gets a
//! 503 with `Retry-After` within a second (a token looked up for the first time and a
//! publish included), `/readyz` says so within a second, and when the database is back
//! the instance answers and delivers again with no operator action.
//!
//! The database is a cluster of the test's own (tests/common/pg_cluster.rs), stopped and
//! started by the test; the shared server is never touched.

mod common;

use std::time::{Duration, Instant};

use common::pg_cluster::PgCluster;
use common::receiver::Receiver;
use common::{ADMIN_TOKEN, TestApp, call, event, webhook};
use reqwest::Method;
use serde_json::{Value, json};

/// The longest a request may take to be refused while the database is down.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Builds the same request again (a request builder is used up by sending it).
type MakeRequest<'a> = Box<dyn Fn() -> reqwest::RequestBuilder + 'a>;

/// Sends a request; returns its status, `Retry-After`, body and how long it took.
async fn timed(request: reqwest::RequestBuilder) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let response = request.send().await.expect("the app answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    let took = started.elapsed();
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        took,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_answered_503_quickly_and_recovers() {
    let cluster = PgCluster::create();
    let receiver = Receiver::start().await;
    let app = TestApp::start_on(
        cluster.database().await,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--allow-private",
            "127.0.0.0/8",
            "--poll-interval",
            "100ms",
            "--lease-ttl",
            "4s",
        ],
        false,
    )
    .await;
    let (_, doc) = call(app.client.get(app.url("/api/v1/openapi.json"))).await;
    let created = app
        .create_webhook(webhook(
            "outage",
            &receiver.url("/outage"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let issue = |name: &str, role: &str| {
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": name, "role": role}))
    };
    let (_, reader) = call(issue("reader", "reader")).await;
    let (_, publisher) = call(issue("publisher", "publisher")).await;
    let reader = reader["token"].as_str().unwrap().to_owned();
    let publisher = publisher["token"].as_str().unwrap().to_owned();
    app.publish(event("entityCreated", "table", "before")).await;
    receiver
        .wait_for("/outage", 1, Duration::from_secs(20))
        .await;

    cluster.stop();
    // The admin token is remembered (just used); the reader's and the publisher's were
    // never looked up, so they need the database too.
    let as_token = |token: &str, method: Method, path: &str| {
        app.client.request(method, app.url(path)).bearer_auth(token)
    };
    let requests: Vec<(&str, &str, MakeRequest)> = vec![
        (
            "get",
            "/api/v1/webhooks",
            Box::new(|| app.admin(Method::GET, "/api/v1/webhooks")),
        ),
        (
            "get",
            "/api/v1/webhooks/{id}",
            Box::new(|| app.admin(Method::GET, &format!("/api/v1/webhooks/{id}"))),
        ),
        (
            "get",
            "/api/v1/webhooks",
            Box::new(|| as_token(&reader, Method::GET, "/api/v1/webhooks")),
        ),
        (
            "post",
            "/api/v1/events",
            Box::new(|| {
                app.admin(Method::POST, "/api/v1/events").json(&event(
                    "entityCreated",
                    "table",
                    "during",
                ))
            }),
        ),
        (
            "post",
            "/api/v1/events",
            Box::new(|| {
                as_token(&publisher, Method::POST, "/api/v1/events").json(&event(
                    "entityCreated",
                    "table",
                    "during",
                ))
            }),
        ),
        (
            "post",
            "/api/v1/webhooks",
            Box::new(|| {
                app.admin(Method::POST, "/api/v1/webhooks").json(&webhook(
                    "new",
                    "https://example.com/",
                    1,
                    json!([]),
                ))
            }),
        ),
        (
            "get",
            "/readyz",
            Box::new(|| app.client.get(app.url("/readyz"))),
        ),
    ];
    // Several rounds over a few seconds: the first requests meet the connections the
    // server closed, later ones a server that refuses connections.
    let mut slowest = Duration::ZERO;
    for round in 0..4 {
        for (method, route, request) in &requests {
            let (status, retry_after, body, took) = timed(request()).await;
            let what = format!("round {round}: {} {route}", method.to_uppercase());
            assert_eq!(status, 503, "{what}: {body}");
            assert_eq!(body["code"], 503, "{what}: {body}");
            assert!(
                retry_after
                    .as_deref()
                    .is_some_and(|s| s.parse::<u64>().is_ok()),
                "{what}: Retry-After {retry_after:?}"
            );
            assert!(took <= ANSWER_WITHIN, "{what} took {took:?}");
            slowest = slowest.max(took);
            let documented = &doc["paths"][route][method]["responses"]["503"];
            assert!(
                documented["headers"]["Retry-After"].is_object(),
                "{what}: the document does not list a 503 with Retry-After"
            );
        }
        // Publishes arriving together are all refused quickly too.
        let publishes: Vec<_> = (0..20)
            .map(|_| {
                tokio::spawn(timed(
                    as_token(&publisher, Method::POST, "/api/v1/events").json(&event(
                        "entityCreated",
                        "table",
                        "together",
                    )),
                ))
            })
            .collect();
        for publish in publishes {
            let (status, _, body, took) = publish.await.unwrap();
            assert_eq!(status, 503, "round {round}: {body}");
            assert!(
                took <= ANSWER_WITHIN,
                "round {round}: a publish took {took:?}"
            );
        }
        let (status, ..) = timed(app.client.get(app.url("/healthz"))).await;
        assert_eq!(status, 200, "the process itself answers");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    eprintln!("slowest 503 while the database was down: {slowest:?}");
    let stopped = Instant::now();
    cluster.start();
    // Back without operator action: every answer until then is a 503, never a 500.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body, _) = timed(app.admin(Method::GET, "/api/v1/webhooks")).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "while the database comes back: {body}");
        assert!(
            Instant::now() < deadline,
            "the API did not recover within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body, _) = timed(
            as_token(&publisher, Method::POST, "/api/v1/events").json(&event(
                "entityCreated",
                "table",
                "after",
            )),
        )
        .await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "while the database comes back: {body}");
        assert!(
            Instant::now() < deadline,
            "publishing did not recover within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "publishing again {:?} after the start command",
        stopped.elapsed()
    );
    let (status, _, body, _) = timed(app.client.get(app.url("/readyz"))).await;
    assert_eq!(status, 200, "{body}");
    let delivered = receiver
        .wait_for("/outage", 2, Duration::from_secs(30))
        .await;
    let names: Vec<Value> = delivered
        .iter()
        .map(|r| r.json()["entity"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("before"), json!("after")], "{names:?}");
    let (status, log) =
        call(app.admin(Method::GET, &format!("/api/v1/webhooks/{id}/deliveries"))).await;
    assert_eq!(status, 200, "{log}");
    drop(requests);
    app.stop().await;
}

/// An instance started while its database is still coming up (next to it, as in
/// docker-compose) waits for it rather than failing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_waits_for_a_database_that_is_starting() {
    let cluster = PgCluster::create();
    let db = cluster.database().await;
    cluster.stop();
    let starting = tokio::spawn(async move {
        let app = TestApp::start_on(db, &["--admin-token", ADMIN_TOKEN], true).await;
        let (status, body) = call(app.admin(Method::GET, "/api/v1/webhooks")).await;
        app.stop().await;
        (status, body)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!starting.is_finished(), "the instance did not wait");
    cluster.start();
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), starting)
        .await
        .expect("the instance started once the database was up")
        .expect("the instance started");
    assert_eq!(status, 200, "{body}");
}
