//! NATS JetStream as a second entry, against the real `nats-server` on 127.0.0.1:4222
//! (started with JetStream by `.ci/run`); each test has a stream, subjects and a consumer
//! of its own, deleted at its end. On both backends.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use common::receiver::Receiver;
use common::{Backend, DELIVERY_ARGS, TestApp, TestDb, event, webhook};
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

const NATS_URL: &str = "nats://127.0.0.1:4222";
const WAIT: Duration = Duration::from_secs(20);

/// A stream, subjects and a durable consumer named for one test.
struct Bus {
    js: jetstream::Context,
    stream: String,
    subject: String,
    consumer: String,
}

impl Bus {
    async fn new() -> Self {
        let client = async_nats::connect(NATS_URL).await.unwrap_or_else(|e| {
            panic!("nats-server with JetStream is required at {NATS_URL} (.ci/run starts it): {e}")
        });
        let id = Uuid::new_v4().simple().to_string();
        Self {
            js: jetstream::new(client),
            stream: format!("OUTHOOK_TEST_{id}"),
            subject: format!("outhook.test.{id}"),
            consumer: format!("outhook_{id}"),
        }
    }

    /// The settings that point outhook at this test's stream.
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = DELIVERY_ARGS.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--nats-url".into(),
            NATS_URL.into(),
            "--nats-stream".into(),
            self.stream.clone(),
            "--nats-subjects".into(),
            format!("{}.>", self.subject),
            "--nats-consumer".into(),
            self.consumer.clone(),
        ]);
        args
    }

    async fn start(&self, db: TestDb) -> TestApp {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestApp::start_on(db, &args, true).await
    }

    /// Publishes one message and waits for JetStream to store it.
    async fn publish(&self, payload: impl Into<Vec<u8>>, msg_id: Option<&str>) {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        self.js
            .publish_with_headers(
                format!("{}.tables", self.subject),
                headers,
                payload.into().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn consumer(&self) -> consumer::PullConsumer {
        self.js
            .get_stream(&self.stream)
            .await
            .unwrap()
            .get_consumer(&self.consumer)
            .await
            .unwrap()
    }

    /// Waits until every message was acknowledged or terminated.
    async fn wait_drained(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let info = self.consumer().await.info().await.unwrap().clone();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "messages left: {info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn delete(self) {
        self.js.delete_stream(&self.stream).await.unwrap();
    }
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

async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
        .parse()
        .unwrap()
}

fn created(name: &str) -> Value {
    event("entityCreated", "table", name)
}

async fn messages_arrive_and_are_delivered(backend: Backend) {
    let bus = Bus::new().await;
    let app = bus.start(TestDb::new(backend).await).await;
    let receiver = Receiver::start().await;
    app.create_webhook(webhook(
        "tables",
        &receiver.url("/hook"),
        1,
        json!([{"eventType": "entityCreated"}]),
    ))
    .await;
    // One event, and an array of three: what a publish body may be.
    bus.publish(created("one").to_string(), None).await;
    let three = json!([created("two"), created("three"), created("four")]);
    bus.publish(three.to_string(), None).await;
    let got = receiver.wait_for("/hook", 4, WAIT).await;
    let mut names: Vec<String> = got
        .iter()
        .map(|r| r.json()["entity"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["four", "one", "three", "two"]);
    bus.wait_drained().await;
    assert_eq!(head(&app).await, 4);
    app.stop().await;
    bus.delete().await;
}

async fn a_bad_message_is_terminated_and_counted_and_the_next_goes_through(backend: Backend) {
    let bus = Bus::new().await;
    let app = bus.start(TestDb::new(backend).await).await;
    let receiver = Receiver::start().await;
    app.create_webhook(webhook(
        "tables",
        &receiver.url("/hook"),
        1,
        json!([{"eventType": "entityCreated"}]),
    ))
    .await;
    bus.publish("this is not JSON", None).await;
    let mut invalid = created("bad");
    invalid["eventType"] = json!("entityExploded");
    bus.publish(
        json!([created("fine-but-with-a-bad-one"), invalid]).to_string(),
        None,
    )
    .await;
    bus.publish("[]", None).await;
    bus.publish(created("good").to_string(), None).await;
    let got = receiver.wait_for("/hook", 1, WAIT).await;
    assert_eq!(got[0].json()["entity"]["name"], "good");
    bus.wait_drained().await;
    assert_eq!(
        metric(&app, "outhook_nats_messages_terminated_total").await,
        3
    );
    assert_eq!(head(&app).await, 1, "a refused message stores nothing");
    receiver
        .assert_stays_at("/hook", 1, Duration::from_millis(300))
        .await;
    app.stop().await;
    bus.delete().await;
}

/// An instance that committed a message's events and died before acknowledging it:
/// JetStream hands the message to the restarted instance, which derives the same eventIds
/// (from the message's `Nats-Msg-Id`) and stores nothing twice.
async fn a_redelivery_after_a_restart_stores_no_duplicate(backend: Backend) {
    let bus = Bus::new().await;
    // The stream and consumer exist before outhook starts (it uses them as they are), with
    // a short acknowledgement wait so that the redelivery comes within the test.
    let stream = bus
        .js
        .create_stream(stream::Config {
            name: bus.stream.clone(),
            subjects: vec![format!("{}.>", bus.subject)],
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(bus.consumer.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    // Events without eventIds: theirs come from the message's Nats-Msg-Id.
    let mut events = vec![created("a"), created("b"), created("c")];
    for e in &mut events {
        e.as_object_mut().unwrap().remove("eventId");
    }
    bus.publish(Value::Array(events.clone()).to_string(), Some("orders-42"))
        .await;

    // The instance that dies: it took the message from the durable consumer and committed
    // its events under the ids a reader derives, then stopped without acknowledging.
    let db = TestDb::new(backend).await;
    let crashed = TestApp::start_on(db.share(), &DELIVERY_ARGS, true).await;
    let receiver = Receiver::start().await;
    crashed
        .create_webhook(webhook(
            "tables",
            &receiver.url("/hook"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let taken = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .expect("the message is there")
        .unwrap();
    for (i, e) in events.iter_mut().enumerate() {
        e["eventId"] = json!(outhook::bus::nats::event_id_for_msg_id("orders-42", i));
    }
    assert_eq!(crashed.publish(Value::Array(events)).await["stored"], 3);
    let kept = crashed.stop_keep_db().await;
    drop(taken); // never acknowledged

    let app = bus.start(kept).await;
    bus.wait_drained().await;
    assert_eq!(
        metric(&app, "outhook_events_ingested_total").await,
        0,
        "the redelivered message added nothing"
    );
    assert_eq!(metric(&app, "outhook_events_duplicate_total").await, 3);
    receiver.wait_for("/hook", 3, WAIT).await;
    receiver
        .assert_stays_at("/hook", 3, Duration::from_millis(300))
        .await;
    app.stop().await;
    drop(db);
    bus.delete().await;
}

/// With outhook stopped, messages wait in the stream; they arrive when it is back.
async fn messages_wait_while_outhook_is_down(backend: Backend) {
    let bus = Bus::new().await;
    let db = TestDb::new(backend).await;
    let app = bus.start(db.share()).await;
    let receiver = Receiver::start().await;
    app.create_webhook(webhook(
        "tables",
        &receiver.url("/hook"),
        1,
        json!([{"eventType": "entityCreated"}]),
    ))
    .await;
    // The stream and consumer exist once the reader has started.
    let deadline = Instant::now() + WAIT;
    while bus.js.get_stream(&bus.stream).await.is_err()
        || bus
            .js
            .get_stream(&bus.stream)
            .await
            .unwrap()
            .get_consumer::<consumer::pull::Config>(&bus.consumer)
            .await
            .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "outhook did not create its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = app.stop_keep_db().await;
    for n in 0..5 {
        bus.publish(created(&format!("while-down-{n}")).to_string(), None)
            .await;
    }
    let info = bus.consumer().await.info().await.unwrap().clone();
    assert_eq!(info.num_pending, 5, "the messages wait in the stream");
    assert!(receiver.requests("/hook").is_empty());

    let app = bus.start(kept).await;
    receiver.wait_for("/hook", 5, WAIT).await;
    bus.wait_drained().await;
    assert_eq!(head(&app).await, 5);
    app.stop().await;
    drop(db);
    bus.delete().await;
}

on_both_backends!(
    messages_arrive_and_are_delivered,
    a_bad_message_is_terminated_and_counted_and_the_next_goes_through,
    a_redelivery_after_a_restart_stores_no_duplicate,
    messages_wait_while_outhook_is_down,
);
