//! The webhook API end to end over HTTP, on both backends: the six example webhooks of
//! `seeds/002_*` created as written, read, listed, patched and deleted.

mod common;

use common::{Backend, TestApp, call};
use outhook::domain::webhook::Headers;
use reqwest::Method;
use serde_json::{Value, json};

fn seeds() -> Vec<Value> {
    serde_json::from_str(include_str!("fixtures/seed_webhooks.json")).unwrap()
}

async fn create(app: &TestApp, body: &Value) -> Value {
    let (status, created) = call(app.admin(Method::POST, "/api/v1/webhooks").json(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn the_seed_webhooks_round_trip(backend: Backend) {
    let app = TestApp::start(backend).await;
    for seed in seeds() {
        let response = app
            .admin(Method::POST, "/api/v1/webhooks")
            .json(&seed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let created: Value = response.json().await.unwrap();
        let id = created["id"].as_str().unwrap();
        assert_eq!(location, created["href"]);
        assert_eq!(location, app.url(&format!("/api/v1/webhooks/{id}")));

        // Every field the seed gave comes back as given (the secret masked).
        for (field, value) in seed.as_object().unwrap() {
            if field == "webhookConfig" {
                for (k, v) in value.as_object().unwrap() {
                    let expected = match k.as_str() {
                        "secretKey" => json!("********"),
                        // Credential headers are shown masked, like the secret.
                        "headers" => v
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(name, value)| {
                                let credential = Headers::is_credential(name);
                                (
                                    name.clone(),
                                    if credential {
                                        json!("********")
                                    } else {
                                        value.clone()
                                    },
                                )
                            })
                            .collect(),
                        _ => v.clone(),
                    };
                    assert_eq!(
                        created[field][k], expected,
                        "{}: webhookConfig.{k}",
                        seed["name"]
                    );
                }
            } else if field == "eventFilters"
                || field == "tags"
                || field == "owner"
                || field == "domain"
            {
                // Defaults are filled in; what was given is kept.
                for (i, item) in value
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or(vec![value])
                    .iter()
                    .enumerate()
                {
                    let got = if value.is_array() {
                        &created[field][i]
                    } else {
                        &created[field]
                    };
                    for (k, v) in item.as_object().unwrap() {
                        assert_eq!(&got[k], v, "{}: {field}.{k}", seed["name"]);
                    }
                }
            } else {
                assert_eq!(&created[field], value, "{}: {field}", seed["name"]);
            }
        }
        // Server-owned fields.
        assert_eq!(created["fullyQualifiedName"], seed["name"]);
        assert_eq!(created["version"], json!(0.1));
        assert_eq!(created["status"], "active");
        assert_eq!(created["deleted"], false);
        assert_eq!(created["updatedBy"], "configured-admin");
        assert_eq!(created["updatedAt"], json!(1_700_000_000_000i64));

        let (status, by_id) = call(app.admin(Method::GET, &format!("/api/v1/webhooks/{id}"))).await;
        assert_eq!((status, &by_id), (200, &created));
        let name = seed["name"].as_str().unwrap();
        let (status, by_name) =
            call(app.admin(Method::GET, &format!("/api/v1/webhooks/name/{name}"))).await;
        assert_eq!((status, &by_name), (200, &created));
    }
    // Defaults the seed left out.
    let (_, custom) =
        call(app.admin(Method::GET, "/api/v1/webhooks/name/CustomAppIntegration")).await;
    assert_eq!(custom["webhookConfig"]["sendToOwners"], false);
    let (_, teams) = call(app.admin(Method::GET, "/api/v1/webhooks/name/MSTeamsAlerts")).await;
    assert_eq!(teams["eventFilters"][0]["include"], json!([]));
    assert_eq!(teams["tags"], json!([]));

    // The list, in name order, page by page.
    let (status, page) = call(app.admin(Method::GET, "/api/v1/webhooks?limit=4")).await;
    assert_eq!(status, 200);
    let listed = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        listed(&page),
        [
            "CustomAppIntegration",
            "MSTeamsAlerts",
            "OwnerFollowerNotifications",
            "QualityTestWebhook"
        ]
    );
    assert_eq!(page["paging"]["total"], 6);
    assert_eq!(page["paging"]["before"], Value::Null);
    let after = page["paging"]["after"].as_str().unwrap();
    let (_, next) = call(app.admin(
        Method::GET,
        &format!("/api/v1/webhooks?limit=4&after={after}"),
    ))
    .await;
    assert_eq!(
        listed(&next),
        ["SalesDomainWebhook", "SlackTableNotifications"]
    );
    assert_eq!(next["paging"]["after"], Value::Null);
    let before = next["paging"]["before"].as_str().unwrap();
    let (_, back) = call(app.admin(
        Method::GET,
        &format!("/api/v1/webhooks?limit=2&before={before}"),
    ))
    .await;
    assert_eq!(
        listed(&back),
        ["OwnerFollowerNotifications", "QualityTestWebhook"]
    );
    let (_, slack) = call(app.admin(Method::GET, "/api/v1/webhooks?webhookType=Slack")).await;
    assert_eq!(
        listed(&slack),
        ["SalesDomainWebhook", "SlackTableNotifications"]
    );
    assert_eq!(slack["paging"]["total"], 2);
    app.stop().await;
}

async fn patch_applies_whole_or_not_at_all(backend: Backend) {
    let app = TestApp::start(backend).await;
    let created = create(&app, &seeds()[0]).await;
    let path = format!("/api/v1/webhooks/{}", created["id"].as_str().unwrap());
    let patch = |ops: Value| {
        app.admin(Method::PATCH, &path)
            .header("content-type", "application/json-patch+json")
            .body(ops.to_string())
    };
    app.clock.advance(std::time::Duration::from_secs(60));

    let (status, patched) = call(patch(
        json!([{"op": "replace", "path": "/enabled", "value": false}]),
    ))
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["status"], "disabled");
    assert_eq!(patched["version"], json!(0.2));
    assert_eq!(patched["updatedAt"], json!(1_700_000_060_000i64));
    let change = &patched["changeDescription"];
    assert_eq!(change["previousVersion"], json!(0.1));
    assert_eq!(
        change["fieldsUpdated"][0],
        json!({"name": "enabled", "oldValue": true, "newValue": false})
    );

    // A failing test op: 409, and nothing changes.
    let (status, err) = call(patch(json!([
        {"op": "replace", "path": "/batchSize", "value": 7},
        {"op": "test", "path": "/enabled", "value": true}
    ])))
    .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["code"], 409);
    // A result that would be invalid: 422 naming the field, nothing changes.
    let (status, err) = call(patch(
        json!([{"op": "replace", "path": "/batchSize", "value": 0}]),
    ))
    .await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("batchSize")),
        "{err}"
    );
    let (status, err) = call(patch(
        json!([{"op": "add", "path": "/color", "value": "red"}]),
    ))
    .await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("color")),
        "{err}"
    );
    // Server-owned fields are read-only, except status.
    let (status, err) = call(patch(
        json!([{"op": "replace", "path": "/version", "value": 9.9}]),
    ))
    .await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("version")),
        "{err}"
    );
    let (status, err) = call(patch(
        json!([{"op": "replace", "path": "/status", "value": "failed"}]),
    ))
    .await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("status")),
        "{err}"
    );
    // A path that does not exist, and a body that is not a patch.
    let (status, _) = call(patch(json!([{"op": "remove", "path": "/nothing/here"}]))).await;
    assert_eq!(status, 422);
    let (status, _) = call(patch(json!({"op": "remove", "path": "/enabled"}))).await;
    assert_eq!(status, 400);
    let (status, _) = call(patch(json!([{"op": "frobnicate", "path": "/enabled"}]))).await;
    assert_eq!(status, 400);
    let (status, _) = call(
        app.admin(Method::PATCH, &path)
            .json(&json!([{"op": "replace", "path": "/enabled", "value": true}])),
    )
    .await;
    assert_eq!(status, 415);
    let (_, unchanged) = call(app.admin(Method::GET, &path)).await;
    assert_eq!(unchanged, patched);

    // status: active resumes (and enables).
    let (status, resumed) = call(patch(
        json!([{"op": "replace", "path": "/status", "value": "active"}]),
    ))
    .await;
    assert_eq!(
        (status, &resumed["status"], &resumed["enabled"]),
        (200, &json!("active"), &json!(true)),
        "{resumed}"
    );
    assert_eq!(resumed["version"], json!(0.3));
    // Renames, nested changes, secrets written and masked.
    let (status, renamed) = call(patch(json!([
        {"op": "replace", "path": "/name", "value": "Renamed"},
        {"op": "replace", "path": "/webhookConfig/timeout", "value": 20},
        {"op": "add", "path": "/webhookConfig/secretKey", "value": "new-secret"}
    ])))
    .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(
        (&renamed["name"], &renamed["fullyQualifiedName"]),
        (&json!("Renamed"), &json!("Renamed"))
    );
    assert_eq!(renamed["webhookConfig"]["secretKey"], "********");
    assert!(!renamed.to_string().contains("new-secret"));
    let stored = app
        .running
        .as_ref()
        .unwrap()
        .store
        .webhook_by_name("Renamed")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.spec.webhook_config.secret_key.unwrap().expose(),
        "new-secret"
    );
    // An empty patch changes nothing and keeps the version.
    let (status, same) = call(patch(json!([]))).await;
    assert_eq!((status, &same["version"]), (200, &json!(0.4)));
    app.stop().await;
}

async fn put_creates_then_updates_by_name(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut body = seeds()[2].clone(); // has a secret
    let (status, first) = call(app.admin(Method::PUT, "/api/v1/webhooks").json(&body)).await;
    assert_eq!(status, 201, "{first}");
    // Sending back what was read (server fields included, secret masked) changes nothing.
    let (status, again) = call(app.admin(Method::PUT, "/api/v1/webhooks").json(&first)).await;
    assert_eq!((status, &again["version"]), (200, &json!(0.1)), "{again}");
    let store = &app.running.as_ref().unwrap().store;
    let stored = store
        .webhook_by_name("CustomAppIntegration")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.spec.webhook_config.secret_key.unwrap().expose(),
        "your-hmac-secret-key"
    );
    body["batchSize"] = json!(50);
    let (status, updated) = call(app.admin(Method::PUT, "/api/v1/webhooks").json(&body)).await;
    assert_eq!(
        (status, &updated["version"], &updated["batchSize"]),
        (200, &json!(0.2), &json!(50))
    );
    assert_eq!(updated["id"], first["id"]);
    app.stop().await;
}

async fn soft_delete_hides_and_restore_brings_back(backend: Backend) {
    let app = TestApp::start(backend).await;
    let created = create(&app, &seeds()[1]).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/webhooks/{id}");
    let (status, deleted) = call(app.admin(Method::DELETE, &path)).await;
    assert_eq!(
        (status, &deleted["deleted"], &deleted["version"]),
        (200, &json!(true), &json!(0.2))
    );
    assert_eq!(call(app.admin(Method::GET, &path)).await.0, 404);
    assert_eq!(
        call(app.admin(Method::GET, "/api/v1/webhooks/name/QualityTestWebhook"))
            .await
            .0,
        404
    );
    let (_, list) = call(app.admin(Method::GET, "/api/v1/webhooks")).await;
    assert_eq!(list["paging"]["total"], 0);
    let (_, list) = call(app.admin(Method::GET, "/api/v1/webhooks?include=deleted")).await;
    assert_eq!(list["data"][0]["id"], json!(id));
    let (status, found) = call(app.admin(Method::GET, &format!("{path}?include=all"))).await;
    assert_eq!((status, &found["deleted"]), (200, &json!(true)));
    // The name stays taken while soft-deleted, for POST and PUT alike.
    assert_eq!(
        call(
            app.admin(Method::POST, "/api/v1/webhooks")
                .json(&seeds()[1])
        )
        .await
        .0,
        409
    );
    assert_eq!(
        call(app.admin(Method::PUT, "/api/v1/webhooks").json(&seeds()[1]))
            .await
            .0,
        409
    );
    assert_eq!(call(app.admin(Method::DELETE, &path)).await.0, 404);

    let restore = || {
        app.admin(Method::PUT, "/api/v1/webhooks/restore")
            .json(&json!({"id": id}))
    };
    let (status, restored) = call(restore()).await;
    assert_eq!(
        (status, &restored["deleted"], &restored["version"]),
        (200, &json!(false), &json!(0.3))
    );
    assert_eq!(call(restore()).await.0, 404);
    assert_eq!(call(app.admin(Method::GET, &path)).await.0, 200);

    let (status, gone) = call(app.admin(Method::DELETE, &format!("{path}?hardDelete=true"))).await;
    assert_eq!((status, &gone["deleted"]), (200, &json!(true)));
    assert_eq!(
        call(app.admin(Method::GET, &format!("{path}?include=all")))
            .await
            .0,
        404
    );
    app.stop().await;
}

on_both_backends!(
    the_seed_webhooks_round_trip,
    patch_applies_whole_or_not_at_all,
    put_creates_then_updates_by_name,
    soft_delete_hides_and_restore_brings_back,
);
