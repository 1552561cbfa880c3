//! The storage contract: the same tests against PostgreSQL and SQLite, each on a fresh database.

mod common;

use common::{Backend, TestDb};
use outhook::domain::change::Version;
use outhook::domain::token::{Role, SigningSecret, Token, TokenName, hash_secret};
use outhook::domain::webhook::{FailureDetails, Resume, Webhook, WebhookStatus, WebhookType};
use outhook::store::{self, Cursor, DispatchWrite, Include, Store, StoreError, WebhookQuery};
use serde_json::json;
use uuid::Uuid;

fn webhook(name: &str, kind: &str) -> Webhook {
    let spec = serde_json::from_value(json!({
        "name": name, "webhookType": kind,
        "eventFilters": [{"eventType": "entityCreated", "entities": ["table"]}],
        "webhookConfig": {"endpoint": "https://example.com/hook", "secretKey": "s3cret"}
    }))
    .unwrap();
    Webhook::create(spec, "tester", 1_000)
}

fn query(limit: u32, cursor: Option<Cursor>) -> WebhookQuery {
    WebhookQuery {
        status: None,
        webhook_type: None,
        include: Include::NonDeleted,
        failing: false,
        name_contains: None,
        limit,
        cursor,
    }
}

fn names(items: &[Webhook]) -> Vec<&str> {
    items.iter().map(|w| w.spec.name.as_str()).collect()
}

async fn webhooks_round_trip_with_their_secret(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store::connect(&db.url).await.unwrap();
    let mut w = webhook("orders", "Slack");
    w.failure_details = Some(FailureDetails {
        last_failed_status_code: Some(503),
        ..Default::default()
    });
    store.insert_webhook(&w).await.unwrap();
    assert_eq!(store.webhook(w.id).await.unwrap().as_ref(), Some(&w));
    assert_eq!(
        store.webhook_by_name("orders").await.unwrap().as_ref(),
        Some(&w)
    );
    let read = store.webhook(w.id).await.unwrap().unwrap();
    assert_eq!(
        read.spec.webhook_config.secret_key.unwrap().expose(),
        "s3cret"
    );
    assert!(store.webhook(Uuid::new_v4()).await.unwrap().is_none());
    assert!(store.webhook_by_name("nope").await.unwrap().is_none());
}

async fn names_are_unique(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store::connect(&db.url).await.unwrap();
    store
        .insert_webhook(&webhook("a", "Generic"))
        .await
        .unwrap();
    let err = store
        .insert_webhook(&webhook("a", "Generic"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // A rename onto a taken name is refused too.
    let b = webhook("b", "Generic");
    store.insert_webhook(&b).await.unwrap();
    let mut spec = b.spec.clone();
    spec.name = serde_json::from_value(json!("a")).unwrap();
    let renamed = b.updated(spec, Resume::No, "t", 2_000).unwrap();
    let err = store
        .update_webhook(&renamed, b.version, false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

async fn updates_are_optimistic(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store::connect(&db.url).await.unwrap();
    let w = webhook("a", "Generic");
    store.insert_webhook(&w).await.unwrap();
    let mut spec = w.spec.clone();
    spec.enabled = false;
    let next = w.updated(spec, Resume::No, "t", 2_000).unwrap();
    store.update_webhook(&next, w.version, false).await.unwrap();
    // A writer that read version 0.1 loses.
    let err = store
        .update_webhook(&next, w.version, false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale), "{err:?}");
    let read = store.webhook(w.id).await.unwrap().unwrap();
    assert_eq!(read.version, Version::from_tenths(2));
    assert_eq!(read.shown_status(), WebhookStatus::Disabled);
    assert!(read.change_description.is_some());
}

async fn lists_page_by_name_in_both_directions(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store::connect(&db.url).await.unwrap();
    for name in ["e", "a", "d", "b", "c"] {
        store
            .insert_webhook(&webhook(name, "Generic"))
            .await
            .unwrap();
    }
    let first = store.list_webhooks(&query(2, None)).await.unwrap();
    assert_eq!((names(&first.items), first.total), (vec!["a", "b"], 5));
    assert_eq!(
        (first.before.as_deref(), first.after.as_deref()),
        (None, Some("b"))
    );
    let second = store
        .list_webhooks(&query(2, Some(Cursor::After("b".into()))))
        .await
        .unwrap();
    assert_eq!(names(&second.items), ["c", "d"]);
    assert_eq!(
        (second.before.as_deref(), second.after.as_deref()),
        (Some("c"), Some("d"))
    );
    let last = store
        .list_webhooks(&query(2, Some(Cursor::After("d".into()))))
        .await
        .unwrap();
    assert_eq!((names(&last.items), last.after), (vec!["e"], None));
    let back = store
        .list_webhooks(&query(2, Some(Cursor::Before("e".into()))))
        .await
        .unwrap();
    assert_eq!(names(&back.items), ["c", "d"]);
    assert_eq!(
        (back.before.as_deref(), back.after.as_deref()),
        (Some("c"), Some("d"))
    );
    let start = store
        .list_webhooks(&query(2, Some(Cursor::Before("c".into()))))
        .await
        .unwrap();
    assert_eq!((names(&start.items), start.before), (vec!["a", "b"], None));
}

async fn lists_filter_by_status_type_and_deletion(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store::connect(&db.url).await.unwrap();
    let slack = webhook("slack", "Slack");
    store.insert_webhook(&slack).await.unwrap();
    store
        .insert_webhook(&webhook("generic", "Generic"))
        .await
        .unwrap();
    let gone = webhook("gone", "Slack");
    store.insert_webhook(&gone).await.unwrap();
    store
        .update_webhook(&gone.with_deleted(true, "t", 2), gone.version, false)
        .await
        .unwrap();
    let mut spec = slack.spec.clone();
    spec.enabled = false;
    store
        .update_webhook(
            &slack.updated(spec, Resume::No, "t", 2).unwrap(),
            slack.version,
            false,
        )
        .await
        .unwrap();

    let run = |q: WebhookQuery| {
        let store = store.clone();
        async move { store.list_webhooks(&q).await.unwrap() }
    };
    let by_type = run(WebhookQuery {
        webhook_type: Some(WebhookType::Slack),
        ..query(10, None)
    })
    .await;
    assert_eq!((names(&by_type.items), by_type.total), (vec!["slack"], 1));
    let by_status = run(WebhookQuery {
        status: Some(WebhookStatus::Active),
        ..query(10, None)
    })
    .await;
    assert_eq!(names(&by_status.items), ["generic"]);
    let deleted = run(WebhookQuery {
        include: Include::Deleted,
        ..query(10, None)
    })
    .await;
    assert_eq!(names(&deleted.items), ["gone"]);
    let all = run(WebhookQuery {
        include: Include::All,
        ..query(10, None)
    })
    .await;
    assert_eq!(
        (names(&all.items), all.total),
        (vec!["generic", "gone", "slack"], 3)
    );
    let named = run(WebhookQuery {
        name_contains: Some("LAC".into()),
        include: Include::All,
        ..query(10, None)
    })
    .await;
    assert_eq!((names(&named.items), named.total), (vec!["slack"], 1));
    let failing = run(WebhookQuery {
        failing: true,
        ..query(10, None)
    })
    .await;
    assert_eq!((names(&failing.items), failing.total), (vec![], 0));
}

async fn hard_delete_removes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store::connect(&db.url).await.unwrap();
    let w = webhook("a", "Generic");
    store.insert_webhook(&w).await.unwrap();
    assert!(store.delete_webhook(w.id).await.unwrap());
    assert!(!store.delete_webhook(w.id).await.unwrap());
    assert!(store.webhook(w.id).await.unwrap().is_none());
    // The name is free again.
    store
        .insert_webhook(&webhook("a", "Generic"))
        .await
        .unwrap();
}

fn token(name: &str, role: Role, secret: &str) -> Token {
    Token {
        id: Uuid::new_v4(),
        name: TokenName::try_from(name.to_owned()).unwrap(),
        role,
        hash: hash_secret(secret),
        signing_secret: None,
        created_at: 5,
        created_by: "tester".into(),
        revoked_at: None,
    }
}

async fn tokens_are_found_by_hash_and_revoked(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store::connect(&db.url).await.unwrap();
    let reader = token("reader", Role::Reader, "secret-1");
    store.insert_token(&reader).await.unwrap();
    store
        .insert_token(&token("admin", Role::Admin, "secret-2"))
        .await
        .unwrap();
    let err = store
        .insert_token(&token("reader", Role::Reader, "secret-3"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.token_by_hash(&hash_secret("secret-1")).await.unwrap(),
        Some(reader.clone())
    );
    assert!(
        store
            .token_by_hash(&hash_secret("other"))
            .await
            .unwrap()
            .is_none()
    );
    let signed = Token {
        signing_secret: Some(SigningSecret::try_from("0123456789abcdef-om".to_owned()).unwrap()),
        ..token("openmetadata", Role::Publisher, "secret-4")
    };
    store.insert_token(&signed).await.unwrap();
    assert_eq!(
        store.token_by_hash(&hash_secret("secret-4")).await.unwrap(),
        Some(signed),
        "the signing secret is kept as given"
    );
    assert_eq!(store.count_live_tokens(Role::Admin).await.unwrap(), 1);
    assert!(store.revoke_token(reader.id, 9).await.unwrap());
    assert!(!store.revoke_token(reader.id, 10).await.unwrap());
    let revoked = store
        .token_by_hash(&hash_secret("secret-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(9));
    assert_eq!(store.count_live_tokens(Role::Reader).await.unwrap(), 0);
    let listed: Vec<_> = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        listed.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["admin", "openmetadata", "reader"]
    );
}

async fn upsert_replaces_and_unrevokes_by_name(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store::connect(&db.url).await.unwrap();
    let first = token("configured-admin", Role::Admin, "old-secret");
    store.upsert_token(&first).await.unwrap();
    store.revoke_token(first.id, 7).await.unwrap();
    store
        .upsert_token(&token("configured-admin", Role::Admin, "new-secret"))
        .await
        .unwrap();
    assert!(
        store
            .token_by_hash(&hash_secret("old-secret"))
            .await
            .unwrap()
            .is_none()
    );
    let now = store
        .token_by_hash(&hash_secret("new-secret"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.id, now.revoked_at), (first.id, None));
}

async fn migrations_are_idempotent_and_concurrent_safe(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Several instances starting at once on one database.
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { store::connect(&url).await.map(|_| ()) })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let store = store::connect(&db.url).await.unwrap();
    store.ping().await.unwrap();
}

on_both_backends!(
    webhooks_round_trip_with_their_secret,
    names_are_unique,
    updates_are_optimistic,
    lists_page_by_name_in_both_directions,
    lists_filter_by_status_type_and_deletion,
    hard_delete_removes,
    tokens_are_found_by_hash_and_revoked,
    upsert_replaces_and_unrevokes_by_name,
    migrations_are_idempotent_and_concurrent_safe,
);

// ---- the event log, leases and delivery state ----

mod log {
    use super::*;
    use outhook::domain::delivery::{
        AttemptRecord, DispatchState, ErrorKind, Outcome, PendingBatch,
    };
    use outhook::domain::event::NewEvent;

    /// Records `batch` as the webhook's pending batch, as a worker does before sending it.
    async fn begin_batch(store: &dyn Store, id: Uuid, owner: Uuid, batch: &PendingBatch) -> bool {
        let mut state = store.dispatch_state(id).await.unwrap().unwrap();
        state.batch = Some(batch.clone());
        record(store, owner, id, state, None).await
    }

    /// Records an attempt with the state it led to.
    async fn finish_attempt(
        store: &dyn Store,
        id: Uuid,
        owner: Uuid,
        attempt: &AttemptRecord,
        next: &DispatchState,
    ) -> bool {
        record(store, owner, id, next.clone(), Some(attempt.clone())).await
    }

    async fn record(
        store: &dyn Store,
        owner: Uuid,
        webhook_id: Uuid,
        state: DispatchState,
        attempt: Option<AttemptRecord>,
    ) -> bool {
        let write = DispatchWrite {
            webhook_id,
            state,
            attempt,
        };
        let applied = store.record_dispatch(owner, &[write]).await.unwrap();
        assert_eq!(applied.len(), 1);
        applied[0]
    }

    pub fn event(n: usize) -> NewEvent {
        NewEvent::parse(
            json!({
                "eventType": "entityCreated",
                "entity": {"id": Uuid::new_v4(), "type": "table", "name": format!("t{n}")}
            }),
            1_000,
        )
        .unwrap()
    }

    pub async fn appends_in_order_and_drops_repeats(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = store::connect(&db.url).await.unwrap();
        assert_eq!(store.log_head().await.unwrap(), 0);
        let batch: Vec<_> = (0..5).map(event).collect();
        let first = store.append_events(&batch, 10).await.unwrap();
        assert_eq!(
            first.positions,
            [Some(1), Some(2), Some(3), Some(4), Some(5)]
        );
        assert_eq!((first.from, first.to), (0, 5));
        // A repeat, within a batch and across batches, is acknowledged and not stored.
        let again = vec![batch[1].clone(), event(6), event(6), batch[4].clone()];
        let mut same = again.clone();
        same[2] = same[1].clone();
        let second = store.append_events(&same, 20).await.unwrap();
        let second_at = &second.positions;
        assert_eq!(
            (second_at[0], second_at[2], second_at[3]),
            (None, None, None)
        );
        let new_seq = second_at[1].unwrap();
        // The append's range starts where the first one ended and holds its one new event;
        // the head is where it ended.
        assert_eq!(second.from, 5);
        assert!(second.from < new_seq && new_seq <= second.to);
        assert_eq!(store.log_head().await.unwrap(), second.to);
        let read = store.read_events(0, i64::MAX, 100).await.unwrap();
        assert_eq!(read.len(), 6);
        assert!(read.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(read[0].event_id, batch[0].event_id);
        assert_eq!(read[0].body, batch[0].body);
        assert_eq!(store.read_events(2, 4, 100).await.unwrap().len(), 2);
        assert_eq!(store.read_events(0, i64::MAX, 2).await.unwrap().len(), 2);
        let picked = store.events_at(&[4, 1, 99]).await.unwrap();
        assert_eq!(picked.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 4]);
        // Retention: events ingested before the cut go.
        assert_eq!(store.prune(15, 0).await.unwrap(), 5);
        assert_eq!(store.read_events(0, i64::MAX, 100).await.unwrap().len(), 1);
    }

    /// Many writers on their own connections while a reader tails the log by position: the
    /// reader must end up with every event, never stepping over one that committed late.
    pub async fn a_tailing_reader_never_skips_a_late_commit(backend: Backend) {
        let db = TestDb::new(backend).await;
        let writers = 8;
        let per_writer = 60;
        let mut handles = Vec::new();
        for w in 0..writers {
            let url = db.url.clone();
            handles.push(tokio::spawn(async move {
                let store = store::connect(&url).await.unwrap();
                let mut ids = Vec::new();
                let mut ranges = Vec::new();
                for round in 0..per_writer / 3 {
                    let batch: Vec<_> = (0..3).map(|k| event(w * 1000 + round * 3 + k)).collect();
                    ids.extend(batch.iter().map(|e| e.event_id));
                    let appended = store.append_events(&batch, 1).await.unwrap();
                    ranges.push((appended.from, appended.to));
                }
                (ids, ranges)
            }));
        }
        let reader = store::connect(&db.url).await.unwrap();
        let mut position = 0;
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while seen.len() < writers * per_writer {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader saw only {} events",
                seen.len()
            );
            let page = reader.read_events(position, i64::MAX, 7).await.unwrap();
            for e in &page {
                assert!(e.seq > position);
                position = e.seq;
                seen.push(e.event_id);
            }
            if page.is_empty() {
                tokio::task::yield_now().await;
            }
        }
        let mut written = Vec::new();
        let mut ranges = Vec::new();
        for h in handles {
            let (ids, taken) = h.await.unwrap();
            written.extend(ids);
            ranges.extend(taken);
        }
        written.sort();
        seen.sort();
        assert_eq!(seen, written, "every committed event was read exactly once");
        // The ranges appends report tile the log: the dispatcher routes an append from
        // memory when it begins where the router stands, so no two may overlap.
        ranges.sort();
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        assert!(
            ranges.windows(2).all(|w| w[0].1 == w[1].0),
            "append ranges overlap or leave holes: {ranges:?}"
        );
    }

    pub async fn leases_go_to_one_live_instance(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = store::connect(&db.url).await.unwrap();
        let hooks: Vec<_> = (0..4)
            .map(|i| webhook(&format!("w{i}"), "Generic"))
            .collect();
        for w in &hooks {
            store.insert_webhook(w).await.unwrap();
        }
        let disabled = {
            let mut spec = hooks[3].spec.clone();
            spec.enabled = false;
            hooks[3].updated(spec, Resume::No, "t", 2).unwrap()
        };
        store
            .update_webhook(&disabled, hooks[3].version, false)
            .await
            .unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(store.heartbeat(a, 1_000, 0, 0).await.unwrap(), 1);
        assert_eq!(store.heartbeat(b, 1_000, 0, 0).await.unwrap(), 2);
        let mut got_a = store.claim_webhooks(a, 500, 2).await.unwrap();
        assert_eq!(got_a.len(), 2);
        let got_b = store.claim_webhooks(b, 500, 10).await.unwrap();
        assert_eq!(got_b.len(), 1, "the disabled webhook and a's are not b's");
        assert!(!got_a.contains(&got_b[0]));
        // a keeps what it has; the limit counts new claims only.
        let again = store.claim_webhooks(a, 500, 10).await.unwrap();
        got_a.sort();
        let mut again_sorted = again.clone();
        again_sorted.sort();
        assert_eq!(again_sorted, got_a);
        // a falls silent: once its heartbeat is older than the expiry, b takes over.
        store.heartbeat(b, 5_000, 0, 0).await.unwrap();
        let taken = store.claim_webhooks(b, 2_000, 10).await.unwrap();
        assert_eq!(taken.len(), 3);
        // a cannot record work on webhooks it lost.
        let batch = PendingBatch {
            delivery_id: Uuid::new_v4(),
            seqs: vec![1],
            event_ids: vec![],
            attempts: 0,
        };
        assert!(!begin_batch(&*store, got_a[0], a, &batch).await);
        assert!(begin_batch(&*store, got_a[0], b, &batch).await);
        // Releasing and a clean shutdown hand leases back.
        store.release_webhooks(b, &[got_a[0]]).await.unwrap();
        assert_eq!(
            store.claim_webhooks(a, 2_000, 10).await.unwrap(),
            vec![got_a[0]]
        );
        store.remove_instance(b).await.unwrap();
        assert_eq!(store.claim_webhooks(a, 2_000, 10).await.unwrap().len(), 3);
        // Silent instances are forgotten.
        assert_eq!(
            store.heartbeat(a, 100_000, 50_000, 90_000).await.unwrap(),
            1
        );
    }

    pub async fn attempts_and_state_are_recorded_together(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = store::connect(&db.url).await.unwrap();
        store.append_events(&[event(1), event(2)], 1).await.unwrap();
        let w = webhook("w", "Generic");
        store.insert_webhook(&w).await.unwrap();
        let state = store.dispatch_state(w.id).await.unwrap().unwrap();
        assert_eq!(
            state.cursor, 2,
            "a new webhook starts at the head of the log"
        );
        assert_eq!(
            (state.status, state.batch.clone()),
            (WebhookStatus::Active, None)
        );
        let me = Uuid::new_v4();
        store.heartbeat(me, 1, 0, 0).await.unwrap();
        store.claim_webhooks(me, 0, 10).await.unwrap();
        let batch = PendingBatch {
            delivery_id: Uuid::new_v4(),
            seqs: vec![3, 5],
            event_ids: vec![Uuid::new_v4()],
            attempts: 0,
        };
        assert!(begin_batch(&*store, w.id, me, &batch).await);
        assert_eq!(
            store.dispatch_state(w.id).await.unwrap().unwrap().batch,
            Some(batch.clone())
        );
        let attempt = |n: u32, outcome: Outcome| AttemptRecord {
            id: 0,
            webhook_id: w.id,
            delivery_id: batch.delivery_id,
            attempt: n,
            event_ids: batch.event_ids.clone(),
            url: "https://example.com/hook".into(),
            request_bytes: 120,
            status_code: Some(503),
            response_excerpt: Some("busy".into()),
            error_kind: Some(ErrorKind::Status),
            error: None,
            duration_ms: 12,
            attempted_at: 100 + i64::from(n),
            outcome,
            next_attempt_at: Some(60_100),
        };
        let failed = DispatchState {
            cursor: 2,
            batch: Some(PendingBatch {
                attempts: 1,
                ..batch.clone()
            }),
            retry_step: 1,
            next_attempt_at: Some(60_100),
            status: WebhookStatus::AwaitingRetry,
            failure_details: Some(FailureDetails {
                last_failed_at: Some(100),
                next_attempt: Some(60_100),
                ..Default::default()
            }),
            last_success_at: None,
        };
        assert!(finish_attempt(&*store, w.id, me, &attempt(1, Outcome::Failure), &failed).await);
        assert_eq!(store.dispatch_state(w.id).await.unwrap().unwrap(), failed);
        let read = store.webhook(w.id).await.unwrap().unwrap();
        assert_eq!(
            (read.status, read.failure_details.clone()),
            (WebhookStatus::AwaitingRetry, failed.failure_details.clone())
        );
        // Another instance cannot record anything.
        assert!(
            !finish_attempt(
                &*store,
                w.id,
                Uuid::new_v4(),
                &attempt(2, Outcome::Success),
                &failed
            )
            .await
        );
        let done = DispatchState {
            cursor: 5,
            batch: None,
            retry_step: 0,
            next_attempt_at: None,
            status: WebhookStatus::Active,
            failure_details: None,
            last_success_at: Some(200),
        };
        assert!(finish_attempt(&*store, w.id, me, &attempt(2, Outcome::Success), &done).await);
        let attempts = store.list_attempts(w.id, None, 10, None).await.unwrap();
        assert_eq!(
            attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
            [2, 1],
            "newest first"
        );
        assert_eq!(attempts[1].response_excerpt.as_deref(), Some("busy"));
        assert_eq!(attempts[1].event_ids, batch.event_ids);
        let failures = store
            .list_attempts(w.id, Some(Outcome::Failure), 10, None)
            .await
            .unwrap();
        assert_eq!(failures.len(), 1);
        let older = store
            .list_attempts(w.id, None, 10, Some(attempts[0].id))
            .await
            .unwrap();
        assert_eq!(older.len(), 1);
        // Idle cursors move forward, never back, and not while a batch is pending.
        store.advance_cursors(me, &[w.id], 9).await.unwrap();
        store.advance_cursors(me, &[w.id], 7).await.unwrap();
        assert_eq!(store.dispatch_state(w.id).await.unwrap().unwrap().cursor, 9);
        // Resume through the API path clears the scheduled retry.
        begin_batch(&*store, w.id, me, &batch).await;
        finish_attempt(&*store, w.id, me, &attempt(3, Outcome::Failure), &failed).await;
        store.advance_cursors(me, &[w.id], 20).await.unwrap();
        let current = store.webhook(w.id).await.unwrap().unwrap();
        let resumed = current
            .updated(current.spec.clone(), Resume::Yes, "admin", 300)
            .unwrap();
        assert!(current.resumes_delivery(&resumed));
        store
            .update_webhook(&resumed, current.version, true)
            .await
            .unwrap();
        let state = store.dispatch_state(w.id).await.unwrap().unwrap();
        assert_eq!(
            (
                state.status,
                state.next_attempt_at,
                state.retry_step,
                state.cursor
            ),
            (WebhookStatus::Active, None, 0, 9),
            "the cursor never moves back"
        );
        assert!(state.batch.is_some(), "the batch is kept, to be sent again");
        // Deleting a webhook deletes its attempts.
        store.delete_webhook(w.id).await.unwrap();
        assert!(
            store
                .list_attempts(w.id, None, 10, None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// The dispatcher's group commit: several workers' writes in one call. Each is applied
    /// only where the lease is held, and an attempt only with its state.
    pub async fn writes_of_many_webhooks_commit_together(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = store::connect(&db.url).await.unwrap();
        let me = Uuid::new_v4();
        store.heartbeat(me, 1, 0, 0).await.unwrap();
        let mine: Vec<Webhook> = (0..3)
            .map(|i| webhook(&format!("w{i}"), "Generic"))
            .collect();
        for w in &mine {
            store.insert_webhook(w).await.unwrap();
        }
        store.claim_webhooks(me, 0, 10).await.unwrap();
        let theirs = webhook("theirs", "Generic");
        store.insert_webhook(&theirs).await.unwrap();
        let other = Uuid::new_v4();
        store.heartbeat(other, 1, 0, 0).await.unwrap();
        assert_eq!(
            store.claim_webhooks(other, 0, 10).await.unwrap(),
            [theirs.id]
        );

        let delivered = |cursor: i64| DispatchState {
            cursor,
            batch: None,
            retry_step: 0,
            next_attempt_at: None,
            status: WebhookStatus::Active,
            failure_details: None,
            last_success_at: Some(50),
        };
        let next_batch = PendingBatch {
            delivery_id: Uuid::new_v4(),
            seqs: vec![8],
            event_ids: vec![Uuid::new_v4()],
            attempts: 0,
        };
        let attempt = |webhook_id: Uuid| AttemptRecord {
            id: 0,
            webhook_id,
            delivery_id: Uuid::new_v4(),
            attempt: 1,
            event_ids: vec![Uuid::new_v4()],
            url: "https://example.com/hook".into(),
            request_bytes: 10,
            status_code: Some(200),
            response_excerpt: None,
            error_kind: None,
            error: None,
            duration_ms: 1,
            attempted_at: 50,
            outcome: Outcome::Success,
            next_attempt_at: None,
        };
        let writes = vec![
            // A delivery, and the next batch persisted in the same commit.
            DispatchWrite {
                webhook_id: mine[0].id,
                state: DispatchState {
                    batch: Some(next_batch.clone()),
                    ..delivered(7)
                },
                attempt: Some(attempt(mine[0].id)),
            },
            // A batch about to be sent, no attempt yet.
            DispatchWrite {
                webhook_id: mine[1].id,
                state: DispatchState {
                    batch: Some(next_batch.clone()),
                    ..delivered(0)
                },
                attempt: None,
            },
            DispatchWrite {
                webhook_id: mine[2].id,
                state: delivered(9),
                attempt: Some(attempt(mine[2].id)),
            },
            // Not this instance's lease: neither the state nor the attempt is written.
            DispatchWrite {
                webhook_id: theirs.id,
                state: delivered(9),
                attempt: Some(attempt(theirs.id)),
            },
        ];
        assert_eq!(
            store.record_dispatch(me, &writes).await.unwrap(),
            [true, true, true, false]
        );
        let state = |id| {
            let store = store.clone();
            async move { store.dispatch_state(id).await.unwrap().unwrap() }
        };
        assert_eq!(state(mine[0].id).await.batch, Some(next_batch.clone()));
        assert_eq!(state(mine[0].id).await.cursor, 7);
        assert_eq!(state(mine[1].id).await.batch, Some(next_batch));
        assert_eq!(state(mine[2].id).await, delivered(9));
        assert_eq!(state(theirs.id).await.cursor, 0);
        let count = |id| {
            let store = store.clone();
            async move { store.list_attempts(id, None, 10, None).await.unwrap().len() }
        };
        assert_eq!(
            (
                count(mine[0].id).await,
                count(mine[1].id).await,
                count(mine[2].id).await,
                count(theirs.id).await
            ),
            (1, 0, 1, 0)
        );
    }
}

use log::{
    a_tailing_reader_never_skips_a_late_commit, appends_in_order_and_drops_repeats,
    attempts_and_state_are_recorded_together, leases_go_to_one_live_instance,
    writes_of_many_webhooks_commit_together,
};

mod log_tests {
    use super::*;
    on_both_backends!(
        appends_in_order_and_drops_repeats,
        a_tailing_reader_never_skips_a_late_commit,
        leases_go_to_one_live_instance,
        attempts_and_state_are_recorded_together,
        writes_of_many_webhooks_commit_together,
    );
}

/// PostgreSQL only (SQLite has no row locks): a webhook whose row is locked by its own
/// worker's transaction is still listed as held, not taken for lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_locked_row_is_still_held() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    let store = store::connect(&db.url).await.unwrap();
    let w = webhook("busy", "Generic");
    store.insert_webhook(&w).await.unwrap();
    let me = Uuid::new_v4();
    store.heartbeat(me, 1_000, 0, 0).await.unwrap();
    assert_eq!(store.claim_webhooks(me, 500, 10).await.unwrap(), [w.id]);
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT id FROM webhooks WHERE id = $1 FOR UPDATE")
        .bind(w.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(store.claim_webhooks(me, 500, 10).await.unwrap(), [w.id]);
    tx.rollback().await.unwrap();
}
