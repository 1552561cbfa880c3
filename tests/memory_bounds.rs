//! What the server holds in memory for webhooks that are not sending: large events
//! published to webhooks whose endpoint is down must not pile up in the process. These run
//! the real binary, so that the resident memory measured is the server's own.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Backend, TestDb, call, webhook};
use serde_json::{Value, json};
use uuid::Uuid;

/// The bound the scenario must stay under (resident and peak).
const LIMIT_KB: u64 = 100 * 1024;
/// Publishes of [`EVENTS_PER_PUBLISH`] events of about [`EVENT_BYTES`] each.
const PUBLISHES: usize = 22;
const EVENTS_PER_PUBLISH: usize = 50;
const EVENT_BYTES: usize = 250 * 1024;

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(db_url: &str) -> Self {
        outhook::app::install_crypto_provider();
        let client = reqwest::Client::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_outhook"))
            .args(["serve", "--bind", &bind, "--database-url", db_url])
            .args([
                "--admin-token",
                ADMIN_TOKEN,
                "--allow-private",
                "127.0.0.0/8",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the outhook binary starts");
        let server = Self {
            child,
            base: format!("http://{bind}"),
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = server
                .client
                .get(format!("{}/readyz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return server;
            }
            assert!(Instant::now() < deadline, "outhook did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in the server's status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    async fn create_webhook(&self, name: &str, endpoint: &str) -> String {
        let (status, created) = call(self.admin(reqwest::Method::POST, "/api/v1/webhooks").json(
            &webhook(name, endpoint, 10, json!([{"eventType": "entityCreated"}])),
        ))
        .await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    async fn status(&self, id: &str) -> Value {
        let (code, body) = call(self.admin(
            reqwest::Method::GET,
            &format!("/api/v1/webhooks/{id}/status"),
        ))
        .await;
        assert_eq!(code, 200, "{body}");
        body
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An endpoint nobody listens on: every attempt is refused at once.
fn down_endpoint() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/down")
}

/// An event of about [`EVENT_BYTES`] bytes.
fn large_event(n: usize) -> Value {
    json!({
        "eventId": Uuid::new_v4(),
        "eventType": "entityCreated",
        "entity": {
            "id": Uuid::new_v4(),
            "type": "table",
            "name": format!("t{n}"),
            "description": "x".repeat(EVENT_BYTES - 300),
        },
        "userName": "tester"
    })
}

/// Publishes the scenario's events, checking the server's memory after each publish;
/// returns the highest resident size seen.
async fn publish_large_events(server: &Server) -> u64 {
    let mut highest = 0;
    for round in 0..PUBLISHES {
        let batch: Vec<Value> = (0..EVENTS_PER_PUBLISH)
            .map(|i| large_event(round * EVENTS_PER_PUBLISH + i))
            .collect();
        let (status, answer) = call(
            server
                .admin(reqwest::Method::POST, "/api/v1/events")
                .json(&batch),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        let (rss, _) = server.memory();
        highest = highest.max(rss);
    }
    highest
}

/// Waits until every webhook has failed its first attempt (so that it waits for a retry).
/// (The delivery log, not the status: counting pending events reads the log's bodies.)
async fn wait_until_waiting_for_retry(server: &Server, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in ids {
        loop {
            let (code, log) = call(server.admin(
                reqwest::Method::GET,
                &format!("/api/v1/webhooks/{id}/deliveries?limit=1"),
            ))
            .await;
            assert_eq!(code, 200, "{log}");
            let status = &log["data"][0];
            if status["outcome"] == "failure" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the webhook never failed: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// 22 publishes of 50 events of 250 KiB to a webhook whose endpoint is down: the server
/// holds none of them for it, and stays under 100 MB resident.
async fn large_events_for_a_webhook_that_is_down_are_not_held(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = Server::start(&db.url).await;
    let id = server.create_webhook("down", &down_endpoint()).await;
    let started = Instant::now();
    let highest = publish_large_events(&server).await;
    wait_until_waiting_for_retry(&server, std::slice::from_ref(&id)).await;
    // Everything published is routed within a moment; give it that moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, peak) = server.memory();
    eprintln!(
        "{backend:?}: one webhook down: resident {} MiB (highest seen {} MiB), peak {} MiB, in {:?}",
        rss / 1024,
        highest / 1024,
        peak / 1024,
        started.elapsed()
    );
    assert!(rss < LIMIT_KB, "resident {rss} KiB");
    assert!(peak < LIMIT_KB, "peak {peak} KiB");
    let status = server.status(&id).await;
    assert_eq!(
        status["pendingEvents"],
        (PUBLISHES * EVENTS_PER_PUBLISH) as u64,
        "{status}"
    );
}

/// The same with three webhooks down, then hard-deleted: the server stays under 100 MB
/// throughout, and after the deletion.
async fn three_webhooks_down_then_deleted_stay_bounded(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = Server::start(&db.url).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            server
                .create_webhook(&format!("down{n}"), &down_endpoint())
                .await,
        );
    }
    let highest = publish_large_events(&server).await;
    wait_until_waiting_for_retry(&server, &ids).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, peak) = server.memory();
    for id in &ids {
        let (status, _) = call(server.admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/webhooks/{id}?hardDelete=true"),
        ))
        .await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after_delete, _) = server.memory();
    eprintln!(
        "{backend:?}: three webhooks down: resident {} MiB (highest seen {} MiB), peak {} MiB; after deleting them {} MiB",
        rss / 1024,
        highest / 1024,
        peak / 1024,
        after_delete / 1024
    );
    assert!(
        rss < LIMIT_KB && peak < LIMIT_KB,
        "resident {rss} KiB, peak {peak} KiB"
    );
    assert!(after_delete < LIMIT_KB, "after deletion {after_delete} KiB");
}

/// Reading the log takes a byte budget: a page stops at the first event that the bodies
/// before it already fill, and says whether the range was read to its end.
async fn a_page_of_the_log_stays_within_its_byte_budget(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = outhook::store::connect(&db.url).await.unwrap();
    let events: Vec<_> = (0..10)
        .map(|n| {
            let mut body = large_event(n);
            body["entity"]["description"] = json!("x".repeat(100 * 1024));
            outhook::domain::event::NewEvent::parse(body, 1_000).unwrap()
        })
        .collect();
    let size = events[0].body.len() as u64;
    store.append_events(&events, 1_000).await.unwrap();

    // 3.5 bodies' worth: the fourth event starts within the budget, the fifth does not.
    let budget = size * 7 / 2;
    let page = store
        .read_event_page(0, i64::MAX, 256, budget)
        .await
        .unwrap();
    let seqs = |p: &outhook::store::EventPage| p.events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&page), [1, 2, 3, 4]);
    assert!(!page.complete);
    // The first event always comes, whatever the budget.
    let one = store.read_event_page(4, i64::MAX, 256, 1).await.unwrap();
    assert_eq!((seqs(&one), one.complete), (vec![5], false));
    // The rest fits: the page is complete.
    let rest = store
        .read_event_page(5, i64::MAX, 256, size * 6)
        .await
        .unwrap();
    assert_eq!((seqs(&rest), rest.complete), (vec![6, 7, 8, 9, 10], true));
    // The row limit still applies.
    let two = store.read_event_page(0, 8, 2, u64::MAX).await.unwrap();
    assert_eq!((seqs(&two), two.complete), (vec![1, 2], false));
    let to_eight = store.read_event_page(6, 8, 5, u64::MAX).await.unwrap();
    assert_eq!((seqs(&to_eight), to_eight.complete), (vec![7, 8], true));
    // Pages of the default read stay within their budget too.
    let default = store.read_events(0, i64::MAX, 1000).await.unwrap();
    let bytes: usize = default.iter().map(|e| e.body.len()).sum();
    assert!(bytes as u64 <= outhook::store::READ_BYTES + size, "{bytes}");
}

/// A webhook that holds nothing while it waits for its retry still gets, once the retry is
/// due, the batch it failed (the same delivery id) and every event published meanwhile,
/// read from the log, in order, each once.
async fn what_a_waiting_webhook_let_go_of_is_read_again_from_the_log(backend: Backend) {
    let app = common::TestApp::start(backend).await;
    let rx = common::receiver::Receiver::start().await;
    rx.respond_sequence("/hook", &[503]);
    let created = app
        .create_webhook(webhook(
            "waiting",
            &rx.url("/hook"),
            3,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let ids = |answer: Value| -> Vec<String> {
        answer["eventIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let batch = |prefix: &str, n: usize| -> Value {
        json!(
            (0..n)
                .map(|i| common::event("entityCreated", "table", &format!("{prefix}{i}")))
                .collect::<Vec<_>>()
        )
    };
    let mut published = ids(app.publish(batch("before", 3)).await);
    app.wait_for_attempts(&id, 1).await;
    // Waiting for the retry (a minute away on the manual clock): more events come.
    for round in 0..5 {
        published.extend(ids(app.publish(batch(&format!("while{round}-"), 7)).await));
    }
    app.clock.advance(Duration::from_secs(60));
    let expected = 1 + published.len().div_ceil(3);
    let got = rx
        .wait_for("/hook", expected, Duration::from_secs(20))
        .await;
    assert_eq!(
        got[0].header("x-outhook-delivery-id"),
        got[1].header("x-outhook-delivery-id"),
        "the failed batch went again under its delivery id"
    );
    let delivered: Vec<String> = got[1..]
        .iter()
        .flat_map(|r| r.json().as_array().unwrap().clone())
        .map(|e| e["eventId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, published, "every event, in order, once");
    app.stop().await;
}

on_both_backends!(
    what_a_waiting_webhook_let_go_of_is_read_again_from_the_log,
    large_events_for_a_webhook_that_is_down_are_not_held,
    three_webhooks_down_then_deleted_stay_bounded,
    a_page_of_the_log_stays_within_its_byte_budget
);
