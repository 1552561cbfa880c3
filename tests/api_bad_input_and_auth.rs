//! Every bad input gets the right 4xx with the field named, and changes nothing; tokens
//! and roles decide who may do what.

mod common;

use common::{ADMIN_TOKEN, Backend, TestApp, call};
use reqwest::Method;
use serde_json::{Value, json};

fn valid() -> Value {
    json!({
        "name": "ok", "webhookType": "Generic",
        "eventFilters": [{"eventType": "entityCreated", "entities": ["table"]}],
        "webhookConfig": {"endpoint": "https://example.com/hook"}
    })
}

fn with(pointer: &str, value: Value) -> Value {
    let mut doc = valid();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut doc
    } else {
        doc.pointer_mut(parent).unwrap()
    };
    target[key] = value;
    doc
}

/// How many webhooks exist, soft-deleted included.
async fn count(app: &TestApp) -> i64 {
    let (_, list) = call(app.admin(Method::GET, "/api/v1/webhooks?include=all")).await;
    list["paging"]["total"].as_i64().unwrap()
}

async fn bad_bodies_get_a_4xx_naming_the_field(backend: Backend) {
    let app = TestApp::start(backend).await;
    let post = |body: String| {
        app.admin(Method::POST, "/api/v1/webhooks")
            .header("content-type", "application/json")
            .body(body)
    };
    // Not JSON at all, or not an object.
    for body in ["{\"name\": ", "[]", "42", ""] {
        let (status, err) = call(post(body.to_owned())).await;
        assert_eq!(
            (status, err["code"].as_i64()),
            (400, Some(400)),
            "{body}: {err}"
        );
    }
    let cases = [
        (with("/surprise", json!(true)), "surprise"),
        (with("/webhookType", json!("Email")), "webhookType"),
        (with("/status", json!(7)), "-"), // server-owned: ignored on write, so this one is fine
        (with("/batchSize", json!(0)), "batchSize"),
        (with("/batchSize", json!("ten")), "batchSize"),
        (with("/name", json!("")), "name"),
        (with("/name", json!("a::b")), "name"),
        (with("/name", json!("x".repeat(257))), "name"),
        (
            with("/eventFilters/0/eventType", json!("entityExploded")),
            "eventFilters[0].eventType",
        ),
        (
            with("/eventFilters/0/entities", json!([])),
            "eventFilters[0].entities",
        ),
        (
            with("/eventFilters/0/include", json!(["color:red"])),
            "eventFilters[0].include[0]",
        ),
        (
            with("/eventFilters/0/extra", json!(1)),
            "eventFilters[0].extra",
        ),
        (
            with("/webhookConfig/endpoint", json!("not a url")),
            "webhookConfig.endpoint",
        ),
        (
            with("/webhookConfig/endpoint", json!("ftp://example.com/x")),
            "webhookConfig.endpoint",
        ),
        (
            with(
                "/webhookConfig/endpoint",
                json!("https://user:pw@example.com/"),
            ),
            "webhookConfig.endpoint",
        ),
        (
            with("/webhookConfig/timeout", json!(0)),
            "webhookConfig.timeout",
        ),
        (
            with("/webhookConfig/timeout", json!(3600)),
            "webhookConfig.timeout",
        ),
        (
            with(
                "/webhookConfig/headers",
                json!({"X-Evil": "a\r\nInjected: yes"}),
            ),
            "webhookConfig.headers",
        ),
        (
            with("/webhookConfig/headers", json!({"X-Big": "v".repeat(9000)})),
            "webhookConfig.headers",
        ),
        (
            with(
                "/webhookConfig/headers",
                json!({"X-OpenMetadata-Signature": "forged"}),
            ),
            "webhookConfig.headers",
        ),
        (
            with("/webhookConfig/secretKey", json!("********")),
            "webhookConfig.secretKey",
        ),
        (
            with("/webhookConfig/unknown", json!(1)),
            "webhookConfig.unknown",
        ),
        (
            with("/owner", json!({"type": "robot", "name": "r2"})),
            "owner",
        ),
        (with("/domain", json!({"type": "domain"})), "domain"),
        (
            with("/tags", json!([{"tagFQN": "A"}, {"tagFQN": "A"}])),
            "tags",
        ),
        (with("/tags", json!([{"tag": "A"}])), "tags[0]"),
    ];
    for (body, field) in cases {
        let (status, err) = call(post(body.to_string())).await;
        if field == "-" {
            assert_eq!(status, 201, "{err}");
            let id = err["id"].as_str().unwrap();
            assert_eq!(err["status"], "active");
            call(app.admin(
                Method::DELETE,
                &format!("/api/v1/webhooks/{id}?hardDelete=true"),
            ))
            .await;
            continue;
        }
        assert_eq!(status, 422, "{field}: {err}");
        assert_eq!(err["code"], 422);
        let named = err["details"][0]["field"].as_str().unwrap();
        assert!(
            named.starts_with(field),
            "expected {field}, got {named}: {err}"
        );
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }
    let missing = {
        let mut doc = valid();
        doc.as_object_mut().unwrap().remove("webhookConfig");
        doc
    };
    let (status, err) = call(post(missing.to_string())).await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("webhookConfig")),
        "{err}"
    );
    assert_eq!(count(&app).await, 0, "a rejected request changed something");

    // Too large, wrong content type, duplicate name.
    let huge = with("/description", json!("d".repeat(1024 * 1024 + 100)));
    assert_eq!(call(post(huge.to_string())).await.0, 413);
    let (status, err) = call(
        app.admin(Method::POST, "/api/v1/webhooks")
            .header("content-type", "text/plain")
            .body(valid().to_string()),
    )
    .await;
    assert_eq!((status, err["code"].as_i64()), (415, Some(415)));
    assert_eq!(
        call(
            app.admin(Method::POST, "/api/v1/webhooks")
                .body(valid().to_string())
        )
        .await
        .0,
        415
    );
    assert_eq!(count(&app).await, 0);
    assert_eq!(call(post(valid().to_string())).await.0, 201);
    let (status, err) = call(post(valid().to_string())).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(count(&app).await, 1);
    app.stop().await;
}

async fn bad_paths_and_queries(backend: Backend) {
    let app = TestApp::start(backend).await;
    let get = |path: &str| call(app.admin(Method::GET, path));
    for (path, status) in [
        ("/api/v1/webhooks/not-a-uuid", 400),
        ("/api/v1/webhooks/6f1c7d2e-5d0e-4e43-9d0a-1f0a3a9d0b11", 404),
        ("/api/v1/webhooks/name/nobody", 404),
        ("/api/v1/webhooks?limit=0", 400),
        ("/api/v1/webhooks?limit=1001", 400),
        ("/api/v1/webhooks?limit=ten", 400),
        ("/api/v1/webhooks?status=sleeping", 400),
        ("/api/v1/webhooks?webhookType=Email", 400),
        ("/api/v1/webhooks?include=some", 400),
        ("/api/v1/webhooks?after=%%%", 400),
        ("/api/v1/webhooks?after=YQ&before=YQ", 400),
        ("/api/v1/webhooks?limt=5", 400),
        ("/api/v1/webhooks?include=", 400),
        // NUL bytes, which PostgreSQL refuses in text, in a path name and in a cursor
        // (base64url of "a\0b"), and a cursor that cannot stand for a name.
        ("/api/v1/webhooks/name/a%00b", 400),
        ("/api/v1/webhooks/name/a%00b?include=all", 400),
        ("/api/v1/webhooks?after=YQBi", 400),
        ("/api/v1/webhooks?before=YQBi", 400),
        ("/api/v1/webhooks?after=", 400),
        ("/api/v1/nothing-here", 404),
    ] {
        let (got, body) = get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["code"], status, "{path}: {body}");
    }
    let (status, body) = call(app.admin(Method::DELETE, "/api/v1/webhooks")).await;
    assert_eq!((status, &body["code"]), (405, &json!(405)), "{body}");
    let (status, _) = call(app.client.get(app.url("/healthz"))).await;
    assert_eq!(status, 200);
    let (status, body) = call(app.client.get(app.url("/readyz"))).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")));
    app.stop().await;
}

async fn tokens_and_roles(backend: Backend) {
    let app = TestApp::start(backend).await;
    let list = "/api/v1/webhooks";
    // No token, a wrong token, a malformed header.
    let (status, body) = call(app.client.get(app.url(list))).await;
    assert_eq!((status, &body["code"]), (401, &json!(401)));
    assert_eq!(
        call(app.client.get(app.url(list)).bearer_auth("wrong-token-123"))
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            app.client
                .get(app.url(list))
                .header("authorization", ADMIN_TOKEN)
        )
        .await
        .0,
        401
    );
    // The scheme's name is case-insensitive (RFC 7235); another scheme is not a bearer token.
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let (status, body) = call(
            app.client
                .get(app.url(list))
                .header("authorization", format!("{scheme} {ADMIN_TOKEN}")),
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    assert_eq!(
        call(
            app.client
                .get(app.url(list))
                .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        )
        .await
        .0,
        401
    );
    // 401 comes before any look at the body.
    let (status, _) = call(
        app.client
            .post(app.url(list))
            .header("content-type", "text/plain")
            .body("x"),
    )
    .await;
    assert_eq!(status, 401);

    let issue = |name: &str, role: &str| {
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": name, "role": role}))
    };
    let (status, reader) = call(issue("dashboards", "reader")).await;
    assert_eq!(status, 201, "{reader}");
    let (_, publisher) = call(issue("producer", "publisher")).await;
    let reader_secret = reader["token"].as_str().unwrap().to_owned();
    let publisher_secret = publisher["token"].as_str().unwrap().to_owned();
    assert_eq!(call(issue("dashboards", "reader")).await.0, 409);
    assert_eq!(call(issue("bad name!", "reader")).await.0, 422);
    assert_eq!(call(issue("x", "superuser")).await.0, 422);

    let as_reader = |m: Method, p: &str| {
        app.client
            .request(m, app.url(p))
            .bearer_auth(&reader_secret)
    };
    assert_eq!(call(as_reader(Method::GET, list)).await.0, 200);
    let (status, body) = call(as_reader(Method::POST, list).json(&valid())).await;
    assert_eq!((status, &body["code"]), (403, &json!(403)), "{body}");
    assert_eq!(call(as_reader(Method::GET, "/api/v1/tokens")).await.0, 403);
    let as_publisher = |m: Method, p: &str| {
        app.client
            .request(m, app.url(p))
            .bearer_auth(&publisher_secret)
    };
    assert_eq!(call(as_publisher(Method::GET, list)).await.0, 403);
    assert_eq!(
        call(as_publisher(Method::POST, list).json(&valid()))
            .await
            .0,
        403
    );
    assert_eq!(count(&app).await, 0);

    // Changes are attributed to the token's name.
    let (_, admin_token) = call(issue("ops-admin", "admin")).await;
    let (status, created) = call(
        app.client
            .post(app.url(list))
            .bearer_auth(admin_token["token"].as_str().unwrap())
            .json(&valid()),
    )
    .await;
    assert_eq!((status, &created["updatedBy"]), (201, &json!("ops-admin")));

    // The list never shows secrets or hashes.
    let (status, tokens) = call(app.admin(Method::GET, "/api/v1/tokens")).await;
    assert_eq!(status, 200);
    let text = tokens.to_string();
    assert!(
        !text.contains(&reader_secret) && !text.contains("hash"),
        "{text}"
    );
    assert_eq!(tokens["data"].as_array().unwrap().len(), 4);

    // Revoking: the token stops working at once; the last admin token cannot go.
    let reader_id = reader["id"].as_str().unwrap();
    assert_eq!(
        call(app.admin(Method::DELETE, &format!("/api/v1/tokens/{reader_id}")))
            .await
            .0,
        204
    );
    assert_eq!(call(as_reader(Method::GET, list)).await.0, 401);
    assert_eq!(
        call(app.admin(Method::DELETE, &format!("/api/v1/tokens/{reader_id}")))
            .await
            .0,
        404
    );
    let ops_id = admin_token["id"].as_str().unwrap();
    assert_eq!(
        call(app.admin(Method::DELETE, &format!("/api/v1/tokens/{ops_id}")))
            .await
            .0,
        204
    );
    let configured = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "configured-admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) =
        call(app.admin(Method::DELETE, &format!("/api/v1/tokens/{configured}"))).await;
    assert_eq!(status, 409, "{body}");
    app.stop().await;
}

async fn a_fresh_install_generates_an_admin_token_once(backend: Backend) {
    let app = TestApp::start_with(backend, &[]).await;
    let token = app
        .running
        .as_ref()
        .unwrap()
        .generated_admin_token
        .clone()
        .expect("a generated token");
    let (status, _) = call(
        app.client
            .get(app.url("/api/v1/webhooks"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200);
    // A second start on the same database generates nothing: the admin token exists.
    let store = app.running.as_ref().unwrap().store.clone();
    let again = outhook::app::ensure_admin_token(store.as_ref(), None, 0)
        .await
        .unwrap();
    assert!(again.is_none());
    // A configured token that is too short is refused.
    assert!(
        outhook::app::ensure_admin_token(store.as_ref(), Some("short"), 0)
            .await
            .is_err()
    );
    app.stop().await;
}

/// A receiver's answer is text from outside too: NUL bytes in it (which PostgreSQL refuses
/// in text) must not make the attempt impossible to record.
async fn a_receiver_answering_nul_bytes_is_recorded(backend: Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = tokio::spawn(async move {
        let answer = || async { (axum::http::StatusCode::OK, "ok\0done") };
        axum::serve(listener, axum::Router::new().fallback(answer))
            .await
            .unwrap();
    });
    let app = TestApp::start(backend).await;
    let created = app
        .create_webhook(common::webhook(
            "nul-answer",
            &format!("http://{addr}/hook"),
            1,
            json!([{"eventType": "entityCreated"}]),
        ))
        .await;
    let id = created["id"].as_str().unwrap();
    app.publish(common::event("entityCreated", "table", "t1"))
        .await;
    let log = app.wait_for_attempts(id, 1).await;
    let attempt = &log["data"][0];
    assert_eq!(attempt["outcome"], "success", "{log}");
    assert_eq!(attempt["responseExcerpt"], "ok\u{FFFD}done", "{log}");
    app.stop().await;
    receiver.abort();
}

on_both_backends!(
    a_receiver_answering_nul_bytes_is_recorded,
    bad_bodies_get_a_4xx_naming_the_field,
    bad_paths_and_queries,
    tokens_and_roles,
    a_fresh_install_generates_an_admin_token_once,
);
