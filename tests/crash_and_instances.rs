//! At-least-once under failure: several instances on one PostgreSQL never deliver the same
//! batch twice, and a process killed with SIGKILL loses no acknowledged event.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::receiver::{Received, Receiver};
use common::{ADMIN_TOKEN, Backend, DELIVERY_ARGS, TestApp, TestDb, call, event, webhook};
use reqwest::Method;
use serde_json::{Value, json};

/// Every event id a receiver got, with how many times.
fn counts(requests: &[Received]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in requests {
        let body = r.json();
        let items = match body {
            Value::Array(items) => items,
            one => vec![one],
        };
        for e in items {
            *out.entry(e["eventId"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    out
}

async fn wait_for_ids(
    rx: &Receiver,
    path: &str,
    ids: &HashSet<String>,
    within: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + within;
    loop {
        let got = counts(&rx.requests(path));
        let missing = ids.iter().filter(|id| !got.contains_key(*id)).count();
        if missing == 0 {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {missing} of {} events never arrived",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_share_the_work_without_duplicates() {
    let mut args = DELIVERY_ARGS.to_vec();
    args.extend(["--lease-ttl", "2s"]);
    let db = TestDb::new(Backend::Postgres).await;
    let a = TestApp::start_on(db.share(), &args, false).await;
    let b = TestApp::start_on(db.share(), &args, false).await;
    let rx = Receiver::start().await;
    let paths = ["/w1", "/w2", "/w3", "/w4"];
    for (i, path) in paths.iter().enumerate() {
        let batch = if i % 2 == 0 { 1 } else { 5 };
        a.create_webhook(webhook(
            &format!("hook{i}"),
            &rx.url(path),
            batch,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    }
    // Both instances take publishes at once.
    let mut published = HashSet::new();
    for round in 0..30 {
        let batch_a: Vec<Value> = (0..10)
            .map(|i| event("entityCreated", "table", &format!("a{round}-{i}")))
            .collect();
        let batch_b: Vec<Value> = (0..10)
            .map(|i| event("entityCreated", "table", &format!("b{round}-{i}")))
            .collect();
        let (ra, rb) = tokio::join!(a.publish(json!(batch_a)), b.publish(json!(batch_b)));
        for answer in [ra, rb] {
            published.extend(
                answer["eventIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned()),
            );
        }
    }
    assert_eq!(published.len(), 600);
    for path in paths {
        let got = wait_for_ids(&rx, path, &published, Duration::from_secs(60)).await;
        let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{path}: delivered more than once: {twice:?}"
        );
        // In log order: log positions increase along the requests.
        let order: Vec<String> = rx
            .requests(path)
            .iter()
            .flat_map(|r| match r.json() {
                Value::Array(items) => items,
                one => vec![one],
            })
            .map(|e| e["eventId"].as_str().unwrap().to_owned())
            .collect();
        let store = a.running.as_ref().unwrap().store.clone();
        let log: Vec<String> = store
            .read_events(0, i64::MAX, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event_id.to_string())
            .collect();
        let position: HashMap<&String, usize> =
            log.iter().enumerate().map(|(i, id)| (id, i)).collect();
        assert!(
            order.windows(2).all(|w| position[&w[0]] < position[&w[1]]),
            "{path}: out of order"
        );
    }
    // A leaves cleanly: its leases go back at once and B delivers what comes next.
    a.stop().await;
    let next = b
        .publish(json!([event("entityCreated", "table", "after")]))
        .await;
    let id: HashSet<String> = [next["eventIds"][0].as_str().unwrap().to_owned()].into();
    for path in paths {
        wait_for_ids(&rx, path, &id, Duration::from_secs(10)).await;
    }
    b.stop().await;
    drop(db);
}

/// A change made through one instance reaches the instance that delivers the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_change_made_on_another_instance_reaches_the_one_delivering() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = TestApp::start_on(db.share(), &DELIVERY_ARGS, false).await;
    let b = TestApp::start_on(db.share(), &DELIVERY_ARGS, false).await;
    let rx = Receiver::start().await;
    let created = a
        .create_webhook(webhook(
            "moving",
            &rx.url("/hook"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let uuid = id.parse().unwrap();
    let delivering = |app: &TestApp| app.running.as_ref().unwrap().dispatcher.is_delivering(uuid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !delivering(&a) && !delivering(&b) {
        assert!(Instant::now() < deadline, "no instance took the webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The change goes through the instance that does not deliver it.
    let (owner, other) = if delivering(&a) { (&a, &b) } else { (&b, &a) };
    other
        .patch(
            &id,
            json!([{"op": "replace", "path": "/eventFilters", "value": [{"eventType": "entityDeleted"}]}]),
        )
        .await;
    // The owner applies it within its reload: events published after it meet the new filters.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        owner
            .publish(json!([event("entityCreated", "table", "probe")]))
            .await;
        let deleted = owner
            .publish(json!([event("entityDeleted", "table", "gone")]))
            .await;
        let want: HashSet<String> = [deleted["eventIds"][0].as_str().unwrap().to_owned()].into();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = rx.requests("/hook");
        if got
            .iter()
            .any(|r| want.contains(r.json()["eventId"].as_str().unwrap_or("")))
        {
            // From the first entityDeleted on, no entityCreated arrives any more.
            let kinds: Vec<String> = got
                .iter()
                .map(|r| r.json()["eventType"].as_str().unwrap().to_owned())
                .collect();
            let first_deleted = kinds.iter().position(|k| k == "entityDeleted").unwrap();
            assert!(
                kinds[first_deleted..].iter().all(|k| k == "entityDeleted"),
                "old filters applied after the new ones: {kinds:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the owner never applied the change made on the other instance"
        );
    }
    a.stop().await;
    b.stop().await;
    drop(db);
}

/// A batch in flight when the process dies goes again after the restart, with the same
/// events under the same delivery id: a full batch (sent without a commit of its own, since
/// a restart forms it again from the cursor) as well as a partial one (persisted first).
async fn a_batch_in_flight_at_a_crash_goes_again_under_its_delivery_id(backend: Backend) {
    outhook::app::install_crypto_provider();
    let db = TestDb::new(backend).await;
    let rx = Receiver::start().await;
    let client = reqwest::Client::new();
    let mut process = Process::start(&db.url).await;
    let (status, _) = call(
        client
            .post(format!("{}/api/v1/webhooks", process.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&webhook(
                "held",
                &rx.url("/held"),
                5,
                json!([{"eventType": "entityCreated"}]),
            )),
    )
    .await;
    assert_eq!(status, 201);
    let batch_of = |r: &Received| -> (String, Vec<String>) {
        let body = r.json();
        let ids = body.as_array().unwrap().iter();
        (
            r.header("x-outhook-delivery-id").unwrap().to_owned(),
            ids.map(|e| e["eventId"].as_str().unwrap().to_owned())
                .collect(),
        )
    };
    for (round, events) in [(0, 5), (1, 3)] {
        // The endpoint holds the request until the process is gone.
        rx.delay("/held", Duration::from_secs(60));
        let before = rx.arrivals("/held").len();
        let batch: Vec<Value> = (0..events)
            .map(|i| event("entityCreated", "table", &format!("{round}-{i}")))
            .collect();
        let (status, _) = call(
            client
                .post(format!("{}/api/v1/events", process.base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&batch),
        )
        .await;
        assert_eq!(status, 202);
        let deadline = Instant::now() + Duration::from_secs(20);
        while rx.arrivals("/held").len() <= before {
            assert!(Instant::now() < deadline, "the batch was not sent");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let in_flight = batch_of(&rx.arrivals("/held")[before]);
        assert_eq!(in_flight.1.len(), events);
        process.kill();
        rx.delay("/held", Duration::ZERO);
        process = Process::start(&db.url).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let again: Vec<_> = rx.requests("/held").iter().map(batch_of).collect();
            if let Some(resent) = again.iter().find(|b| b.1 == in_flight.1) {
                assert_eq!(resent.0, in_flight.0, "round {round}: a new delivery id");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the batch in flight never went again: {again:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    process.kill();
}

/// The real binary, started with the delivery arguments on `db_url`.
struct Process {
    child: Child,
    base: String,
}

impl Process {
    /// With a short lease and a fast poll, as the delivery tests run.
    async fn start(db_url: &str) -> Self {
        Self::launch(db_url, &["--lease-ttl", "2s", "--poll-interval", "100ms"]).await
    }

    /// With the default settings, except what reaching a receiver on 127.0.0.1 needs.
    async fn start_default(db_url: &str) -> Self {
        Self::launch(db_url, &[]).await
    }

    async fn launch(db_url: &str, settings: &[&str]) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_outhook"))
            .args([
                "serve",
                "--bind",
                &bind,
                "--database-url",
                db_url,
                "--admin-token",
                ADMIN_TOKEN,
            ])
            .args(["--allow-private", "127.0.0.0/8"])
            .args(settings)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the outhook binary starts");
        let base = format!("http://{bind}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .ok()
            != Some(true)
        {
            assert!(Instant::now() < deadline, "outhook did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sigkill_during_delivery_loses_nothing(backend: Backend) {
    outhook::app::install_crypto_provider();
    let db = TestDb::new(backend).await;
    let rx = Receiver::start().await;
    rx.delay("/sink", Duration::from_millis(2));
    let first = Process::start(&db.url).await;
    let client = reqwest::Client::new();
    let admin = |m: Method, base: &str, path: &str| {
        client
            .request(m, format!("{base}{path}"))
            .bearer_auth(ADMIN_TOKEN)
    };
    let (status, _) = call(
        admin(Method::POST, &first.base, "/api/v1/webhooks").json(&webhook(
            "crash",
            &rx.url("/sink"),
            5,
            json!([{"eventType": "entityCreated"}]),
        )),
    )
    .await;
    assert_eq!(status, 201);

    // Publish 3000 events in 30 requests; the process is killed while it delivers.
    let mut acknowledged: HashSet<String> = HashSet::new();
    let mut killed = None;
    let mut process = Some(first);
    for round in 0..30 {
        let batch: Vec<Value> = (0..100)
            .map(|i| event("entityCreated", "table", &format!("{round}-{i}")))
            .collect();
        if let Some(p) = &process {
            let (status, answer) =
                call(admin(Method::POST, &p.base, "/api/v1/events").json(&batch)).await;
            assert_eq!(status, 202);
            acknowledged.extend(
                answer["eventIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned()),
            );
        }
        if round == 20 {
            rx.wait_for("/sink", 50, Duration::from_secs(30)).await;
            process.take().unwrap().kill();
            killed = Some(rx.requests("/sink").len());
            process = Some(Process::start(&db.url).await);
        }
    }
    assert!(
        killed.unwrap() < 600,
        "the kill came while deliveries were still going"
    );
    assert_eq!(acknowledged.len(), 3000);
    let got = wait_for_ids(&rx, "/sink", &acknowledged, Duration::from_secs(120)).await;
    // At most the batch in flight at the kill came twice, under one delivery id.
    let twice: Vec<&String> = got
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(twice.len() <= 5, "{} events came twice", twice.len());
    if !twice.is_empty() {
        let deliveries: HashSet<String> = rx
            .requests("/sink")
            .iter()
            .filter(|r| {
                r.json()
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| twice.contains(&&e["eventId"].as_str().unwrap().to_owned()))
            })
            .map(|r| r.header("x-outhook-delivery-id").unwrap().to_owned())
            .collect();
        assert_eq!(
            deliveries.len(),
            1,
            "the repeated batch kept its delivery id"
        );
    }
    process.unwrap().kill();
}

/// A webhook on `rx`'s `path` (batchSize 1, every entityCreated), created through `base`;
/// returns its id.
async fn create_hook(base: &str, name: &str, rx: &Receiver, path: &str) -> String {
    let (status, created) = call(
        reqwest::Client::new()
            .post(format!("{base}/api/v1/webhooks"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&webhook(
                name,
                &rx.url(path),
                1,
                json!([{"eventType": "entityCreated"}]),
            )),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// Publishes one entityCreated event through `base`; returns its id.
async fn publish_one(base: &str, name: &str) -> String {
    let (status, answer) = call(
        reqwest::Client::new()
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&event("entityCreated", "table", name)),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    answer["eventIds"][0].as_str().unwrap().to_owned()
}

/// The `leaseHolder` of a webhook's status.
async fn lease_holder(base: &str, id: &str) -> Value {
    let (status, body) = call(
        reqwest::Client::new()
            .get(format!("{base}/api/v1/webhooks/{id}/status"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["leaseHolder"].clone()
}

/// Killed with SIGKILL and started again at once with the default settings (a lease of
/// 30 s), an instance takes back the leases of its dead predecessor on the same host at
/// once instead of waiting for them to expire.
async fn a_restarted_instance_takes_back_its_leases_at_once(backend: Backend) {
    outhook::app::install_crypto_provider();
    let db = TestDb::new(backend).await;
    let rx = Receiver::start().await;
    let first = Process::start_default(&db.url).await;
    let id = create_hook(&first.base, "restarted", &rx, "/hook").await;
    let before = publish_one(&first.base, "before").await;
    wait_for_ids(&rx, "/hook", &[before].into(), Duration::from_secs(20)).await;
    let holder = lease_holder(&first.base, &id).await;
    assert!(
        holder
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", first.pid())),
        "the default name is <host>:<pid>: {holder}"
    );

    let killed_at = Instant::now();
    first.kill();
    let second = Process::start_default(&db.url).await;
    let after = publish_one(&second.base, "after").await;
    wait_for_ids(&rx, "/hook", &[after].into(), Duration::from_secs(40)).await;
    let took = killed_at.elapsed();
    eprintln!("{backend:?}: the first event after the restart arrived {took:?} after the kill");
    assert!(
        took < Duration::from_secs(5),
        "the first event after the restart was delivered {took:?} after the kill"
    );
    let holder = lease_holder(&second.base, &id).await;
    assert!(
        holder
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", second.pid())),
        "{holder}"
    );
    second.kill();
}

/// An instance started next to a running one on the same host does not take its leases:
/// only a process that is gone is. Once the first is killed, the second takes them at its
/// next lease cycle, before they would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_the_same_host_that_is_alive_keeps_its_leases() {
    outhook::app::install_crypto_provider();
    let db = TestDb::new(Backend::Postgres).await;
    let rx = Receiver::start().await;
    let a = Process::start_default(&db.url).await;
    let id = create_hook(&a.base, "kept", &rx, "/hook").await;
    let first = publish_one(&a.base, "first").await;
    wait_for_ids(&rx, "/hook", &[first].into(), Duration::from_secs(20)).await;
    let a_name = lease_holder(&a.base, &id).await;
    assert!(
        a_name.as_str().unwrap().ends_with(&format!(":{}", a.pid())),
        "{a_name}"
    );

    let b = Process::start_default(&db.url).await;
    // B's first lease cycle (where it takes over what is dead) ran before it was ready.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        lease_holder(&b.base, &id).await,
        a_name,
        "B took a live lease"
    );
    let second = publish_one(&b.base, "second").await;
    let got = wait_for_ids(&rx, "/hook", &[second].into(), Duration::from_secs(20)).await;
    assert!(got.values().all(|n| *n == 1), "delivered twice: {got:?}");
    assert_eq!(lease_holder(&b.base, &id).await, a_name);

    // A dies: B takes its lease at its next cycle (every quarter of the 30 s lease).
    let killed_at = Instant::now();
    a.kill();
    let third = publish_one(&b.base, "third").await;
    wait_for_ids(&rx, "/hook", &[third].into(), Duration::from_secs(40)).await;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "B waited {took:?} for the lease of a dead instance"
    );
    let b_name = lease_holder(&b.base, &id).await;
    assert!(
        b_name.as_str().unwrap().ends_with(&format!(":{}", b.pid())),
        "{b_name}"
    );
    b.kill();
}

on_both_backends!(
    sigkill_during_delivery_loses_nothing,
    a_batch_in_flight_at_a_crash_goes_again_under_its_delivery_id,
    a_restarted_instance_takes_back_its_leases_at_once
);
