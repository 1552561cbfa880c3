//! The storage contract: the same tests against PostgreSQL and SQLite, each on a fresh database.

mod common;

use common::{Backend, TestDb};
use outhook::domain::change::Version;
use outhook::domain::token::{Role, Token, TokenName, hash_secret};
use outhook::domain::webhook::{FailureDetails, Resume, Webhook, WebhookStatus, WebhookType};
use outhook::store::{self, Cursor, Include, StoreError, WebhookQuery};
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
    let err = store.update_webhook(&renamed, b.version).await.unwrap_err();
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
    store.update_webhook(&next, w.version).await.unwrap();
    // A writer that read version 0.1 loses.
    let err = store.update_webhook(&next, w.version).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale), "{err:?}");
    let read = store.webhook(w.id).await.unwrap().unwrap();
    assert_eq!(read.version, Version::from_tenths(2));
    assert_eq!(read.status, WebhookStatus::Disabled);
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
        .update_webhook(&gone.with_deleted(true, "t", 2), gone.version)
        .await
        .unwrap();
    let mut spec = slack.spec.clone();
    spec.enabled = false;
    store
        .update_webhook(
            &slack.updated(spec, Resume::No, "t", 2).unwrap(),
            slack.version,
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
        ["admin", "reader"]
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
