//! Destinations end to end: each webhook type as its platform expects it, GET and PUT,
//! every signature scheme checked by independent code (the seed's snippet, the official
//! `standardwebhooks` library, a base64 HMAC), secret rotation, templates, the test
//! message for an unsaved configuration, and `outhook verify`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::receiver::{Received, Receiver};
use common::{Backend, DELIVERY_ARGS, TestApp, TestDb, call, event, webhook};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// Runs Python on `items` (one JSON object per line); the script prints how many it checked.
fn python(script: &str, items: &[Value]) -> Result<String, String> {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    for item in items {
        writeln!(stdin, "{item}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}\n{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn line(r: &Received, header: &str) -> Value {
    json!({
        "body": std::str::from_utf8(&r.body).unwrap(),
        "query": r.query.clone().unwrap_or_default(),
        "signature": r.header(header).unwrap_or(""),
        "previous": r.header(&format!("{header}-previous")).unwrap_or(""),
        "id": r.header("webhook-id").unwrap_or(""),
        "timestamp": r.header("webhook-timestamp").unwrap_or(""),
    })
}

async fn created_id(app: &TestApp, body: Value) -> String {
    app.create_webhook(body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn each_type_arrives_as_its_platform_expects(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let all = json!([{"eventType": "entityUpdated"}]);
    for (kind, path) in [
        ("Slack", "/slack"),
        ("MSTeams", "/teams"),
        ("GoogleChat", "/chat"),
    ] {
        let mut body = webhook(kind, &rx.url(path), 3, all.clone());
        body["webhookType"] = json!(kind);
        app.create_webhook(body).await;
    }
    let mut custom = webhook("custom", &rx.url("/custom"), 1, all.clone());
    custom["webhookType"] = json!("Custom");
    custom["webhookConfig"]["payloadTemplate"] =
        json!(r#"{"who": {{ event.userName | tojson }}, "what": "{{ event.entity.name }}"}"#);
    custom["webhookConfig"]["headers"] =
        json!({"X-Entity": "{{ event.entityType }}/{{ event.entity.name }}", "X-Static": "1"});
    app.create_webhook(custom).await;
    let mut e = event("entityUpdated", "table", "orders");
    e["changeDescription"] = json!({"fieldsAdded": [], "fieldsDeleted": [], "fieldsUpdated": [{"name": "owner", "oldValue": "a", "newValue": "b"}]});
    app.publish(json!([e, event("entityUpdated", "dashboard", "sales")]))
        .await;

    let slack = rx.wait_for("/slack", 1, WAIT).await[0].json();
    assert!(
        slack["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "header")
    );
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .contains("2 metadata changes")
    );
    let teams = rx.wait_for("/teams", 1, WAIT).await[0].json();
    assert_eq!(
        teams["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let chat = rx.wait_for("/chat", 1, WAIT).await[0].json();
    assert_eq!(
        chat["cardsV2"][0]["card"]["sections"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let custom = rx.wait_for("/custom", 2, WAIT).await;
    assert_eq!(custom[0].json(), json!({"who": "tester", "what": "orders"}));
    assert_eq!(custom[0].header("x-entity"), Some("table/orders"));
    assert_eq!(custom[1].header("x-entity"), Some("dashboard/sales"));
    assert_eq!(custom[0].header("x-static"), Some("1"));
    app.stop().await;
}

async fn get_and_put_deliveries(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let mut get = webhook(
        "get",
        &format!("{}?source=outhook", rx.url("/get")),
        1,
        json!([{"eventType": "entityCreated"}]),
    );
    get["webhookConfig"]["httpMethod"] = json!("GET");
    get["webhookConfig"]["secretKey"] = json!("get-secret");
    app.create_webhook(get).await;
    let mut put = webhook(
        "put",
        &rx.url("/put"),
        1,
        json!([{"eventType": "entityCreated"}]),
    );
    put["webhookConfig"]["httpMethod"] = json!("PUT");
    app.create_webhook(put).await;
    let answer = app.publish(event("entityCreated", "table", "orders")).await;
    let got = rx.wait_for("/get", 1, WAIT).await;
    let query = got[0].query.clone().unwrap();
    let pairs: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        pairs["source"], "outhook",
        "the endpoint's own query is kept"
    );
    assert_eq!(pairs["eventId"], answer["eventIds"][0].as_str().unwrap());
    assert_eq!(pairs["entity_name"], "orders");
    assert_eq!(pairs["webhookName"], "get");
    assert!(got[0].body.is_empty() && got[0].header("content-type").is_none());
    // The signature covers the query string as sent.
    let expected = format!("sha256={}", {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"get-secret").unwrap();
        mac.update(query.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    });
    assert_eq!(
        got[0].header("x-openmetadata-signature"),
        Some(expected.as_str())
    );
    let put = rx.wait_for("/put", 1, WAIT).await;
    assert_eq!(put[0].json()["entity"]["name"], "orders");
    // GET needs batchSize 1 and no template.
    let mut bad = webhook("bad-get", &rx.url("/x"), 5, json!([]));
    bad["webhookConfig"]["httpMethod"] = json!("GET");
    let (status, err) = call(app.admin(Method::POST, "/api/v1/webhooks").json(&bad)).await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("webhookConfig.httpMethod")),
        "{err}"
    );
    app.stop().await;
}

/// Signatures checked by code that is not outhook's: the seed's snippet, the official
/// standardwebhooks library, and a base64 HMAC written in Python. Real clock: the
/// standardwebhooks library refuses timestamps more than five minutes off.
async fn every_scheme_verifies_with_independent_code(backend: Backend) {
    let app = TestApp::start_on(TestDb::new(backend).await, &DELIVERY_ARGS, false).await;
    let rx = Receiver::start().await;
    let filters = json!([{"eventType": "entityCreated"}]);
    let secrets = [
        ("openmetadata", "/om", "om-secret"),
        ("openmetadata-base64", "/b64", "b64-secret"),
        (
            "standard-webhooks",
            "/sw",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ),
    ];
    let mut ids = Vec::new();
    for (scheme, path, secret) in secrets {
        let mut body = webhook(scheme, &rx.url(path), 2, filters.clone());
        body["webhookConfig"]["signatureScheme"] = json!(scheme);
        body["webhookConfig"]["secretKey"] = json!(secret);
        ids.push(created_id(&app, body).await);
    }
    app.publish(json!([
        event("entityCreated", "table", "a"),
        event("entityCreated", "table", "b")
    ]))
    .await;
    app.publish(json!([event("entityCreated", "table", "c")]))
        .await;

    let seed = r#"
import hmac, hashlib, json, sys
def verify_signature(payload, signature, secret_key):
    expected = hmac.new(secret_key.encode('utf-8'), payload.encode('utf-8'), hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", signature)
n = 0
for line in sys.stdin:
    item = json.loads(line)
    assert verify_signature(item["body"], item["signature"], "om-secret"), item
    n += 1
print(n)
"#;
    let om = rx.wait_for("/om", 2, WAIT).await;
    assert_eq!(
        python(
            seed,
            &om.iter()
                .map(|r| line(r, "x-openmetadata-signature"))
                .collect::<Vec<_>>()
        )
        .unwrap(),
        "2"
    );

    let base64_hmac = r#"
import base64, hmac, hashlib, json, sys
n = 0
for line in sys.stdin:
    item = json.loads(line)
    mac = hmac.new(b"b64-secret", item["body"].encode(), hashlib.sha256).digest()
    assert item["signature"] == "sha256=" + base64.b64encode(mac).decode(), item
    n += 1
print(n)
"#;
    let b64 = rx.wait_for("/b64", 2, WAIT).await;
    assert_eq!(
        python(
            base64_hmac,
            &b64.iter()
                .map(|r| line(r, "x-om-signature"))
                .collect::<Vec<_>>()
        )
        .unwrap(),
        "2"
    );

    let library = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
wh = Webhook("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
n = 0
for line in sys.stdin:
    item = json.loads(line)
    wh.verify(item["body"], {"webhook-id": item["id"], "webhook-timestamp": item["timestamp"], "webhook-signature": item["signature"]})
    try:
        wh.verify(item["body"] + " ", {"webhook-id": item["id"], "webhook-timestamp": item["timestamp"], "webhook-signature": item["signature"]})
        sys.exit("a changed body verified")
    except Exception:
        pass
    n += 1
print(n)
"#;
    let sw = rx.wait_for("/sw", 2, WAIT).await;
    assert_eq!(
        python(
            library,
            &sw.iter()
                .map(|r| line(r, "webhook-signature"))
                .collect::<Vec<_>>()
        )
        .unwrap(),
        "2"
    );
    assert_eq!(
        sw[0].header("webhook-id"),
        sw[0].header("x-outhook-delivery-id")
    );

    // Rotation: the old secret keeps signing during its grace period, alongside the new one.
    let (status, rotated) = call(
        app.admin(
            Method::POST,
            &format!("/api/v1/webhooks/{}/rotate-secret", ids[0]),
        )
        .json(&json!({})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secretKey"].as_str().unwrap().to_owned();
    assert!(rotated["previousSecretValidUntil"].is_i64());
    assert_eq!(rotated["webhook"]["webhookConfig"]["secretKey"], "********");
    let (status, rotated_sw) = call(
        app.admin(
            Method::POST,
            &format!("/api/v1/webhooks/{}/rotate-secret", ids[2]),
        )
        .json(
            &json!({"secretKey": "whsec_bmV3LXNlY3JldC1mb3ItdGVzdHM=", "gracePeriodSeconds": 3600}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{rotated_sw}");
    assert!(
        rotated_sw.get("secretKey").is_none(),
        "a given secret is not echoed"
    );
    let (status, err) = call(
        app.admin(
            Method::POST,
            &format!("/api/v1/webhooks/{}/rotate-secret", ids[2]),
        )
        .json(&json!({"secretKey": "not-whsec"})),
    )
    .await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("secretKey"))
    );
    app.publish(json!([event("entityCreated", "table", "d")]))
        .await;
    let om = rx.wait_for("/om", 3, WAIT).await;
    let both = r#"
import hmac, hashlib, json, sys
item = json.loads(sys.stdin.readline())
sign = lambda s: "sha256=" + hmac.new(s.encode(), item["body"].encode(), hashlib.sha256).hexdigest()
assert item["signature"] == sign(sys.argv[1] if len(sys.argv) > 1 else NEW), "new"
assert item["previous"] == sign("om-secret"), "old"
print("ok")
"#
    .replace("NEW", &format!("{new_secret:?}"));
    assert_eq!(
        python(&both, &[line(&om[2], "x-openmetadata-signature")]).unwrap(),
        "ok"
    );
    let sw = rx.wait_for("/sw", 3, WAIT).await;
    let two_keys = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
item = json.loads(sys.stdin.readline())
assert len(item["signature"].split(" ")) == 2
for secret in ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "whsec_bmV3LXNlY3JldC1mb3ItdGVzdHM="]:
    Webhook(secret).verify(item["body"], {"webhook-id": item["id"], "webhook-timestamp": item["timestamp"], "webhook-signature": item["signature"]})
print("ok")
"#;
    assert_eq!(
        python(two_keys, &[line(&sw[2], "webhook-signature")]).unwrap(),
        "ok"
    );

    // outhook verify agrees, and says no to a wrong secret.
    let verify = |secret: &str, scheme: &str, r: &Received, header: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outhook"));
        cmd.args([
            "verify",
            "--secret",
            secret,
            "--scheme",
            scheme,
            "--signature",
            r.header(header).unwrap(),
        ]);
        if scheme == "standard-webhooks" {
            cmd.args([
                "--id",
                r.header("webhook-id").unwrap(),
                "--timestamp",
                r.header("webhook-timestamp").unwrap(),
                "--max-age",
                "300",
            ]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&r.body).unwrap();
        child.wait_with_output().unwrap().status.code()
    };
    assert_eq!(
        verify(
            &new_secret,
            "openmetadata",
            &om[2],
            "x-openmetadata-signature"
        ),
        Some(0)
    );
    assert_eq!(
        verify("wrong", "openmetadata", &om[2], "x-openmetadata-signature"),
        Some(1)
    );
    assert_eq!(
        verify(
            "b64-secret",
            "openmetadata-base64",
            &b64[0],
            "x-om-signature"
        ),
        Some(0)
    );
    assert_eq!(
        verify(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "standard-webhooks",
            &sw[0],
            "webhook-signature"
        ),
        Some(0)
    );
    app.stop().await;
}

async fn templates_fail_early_or_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let mut body = webhook(
        "tpl",
        &rx.url("/tpl"),
        1,
        json!([{"eventType": "entityCreated"}]),
    );
    body["webhookType"] = json!("Custom");
    body["webhookConfig"]["payloadTemplate"] = json!("{\n  \"a\": {{ event.eventType }\n}");
    let (status, err) = call(app.admin(Method::POST, "/api/v1/webhooks").json(&body)).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["details"][0]["field"], "webhookConfig.payloadTemplate");
    assert!(
        err["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{err}"
    );
    // Only Custom takes a template; header templates are checked too.
    let mut slack = body.clone();
    slack["webhookType"] = json!("Slack");
    slack["webhookConfig"]["payloadTemplate"] = json!("{}");
    assert_eq!(
        call(app.admin(Method::POST, "/api/v1/webhooks").json(&slack))
            .await
            .0,
        422
    );
    let mut header = body.clone();
    header["webhookConfig"]["payloadTemplate"] = json!("{}");
    header["webhookConfig"]["headers"] = json!({"X-A": "{{ broken"});
    let (status, err) = call(app.admin(Method::POST, "/api/v1/webhooks").json(&header)).await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("webhookConfig.headers")),
        "{err}"
    );
    // A template that parses but fails when rendered: one recorded failure, no retries.
    body["webhookConfig"]["payloadTemplate"] = json!(r#"{"n": {{ event.timestamp / 0 }}}"#);
    let id = created_id(&app, body).await;
    app.publish(event("entityCreated", "table", "x")).await;
    let log = app.wait_for_attempts(&id, 1).await;
    assert_eq!(
        (
            log["data"][0]["outcome"].as_str(),
            log["data"][0]["errorKind"].as_str()
        ),
        (Some("fatal"), Some("render")),
        "{log}"
    );
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{id}/status")).await["status"],
        "failed"
    );
    app.clock.advance(Duration::from_secs(86_400));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{id}/deliveries")).await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(rx.requests("/tpl").is_empty());
    // Fixing the template (PATCH) and resuming delivers the kept batch.
    app.patch(
        &id,
        json!([
            {"op": "replace", "path": "/webhookConfig/payloadTemplate", "value": "{\"ok\": true}"},
            {"op": "replace", "path": "/status", "value": "active"}
        ]),
    )
    .await;
    assert_eq!(
        rx.wait_for("/tpl", 1, WAIT).await[0].json(),
        json!({"ok": true})
    );
    app.stop().await;
}

/// What an event holds never stops delivery through a templated header: a value a header
/// cannot carry is percent-encoded, CR/LF dropped.
async fn templated_headers_carry_any_entity_name(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let mut body = webhook(
        "names",
        &rx.url("/names"),
        1,
        json!([{"eventType": "entityCreated"}]),
    );
    body["webhookType"] = json!("Custom");
    body["webhookConfig"]["headers"] =
        json!({"X-Name": "{{ event.entity.label }}", "X-Kind": "{{ event.entity.type }}"});
    let id = created_id(&app, body).await;
    let names = ["Café", "two\r\nlines", "nul\u{0}byte", "100% sure", "plain"];
    for (i, name) in names.iter().enumerate() {
        // `label`: an entity field of the publisher's own, which outhook does not check.
        let mut e = event("entityCreated", "table", &format!("t{i}"));
        e["entity"]["label"] = json!(name);
        app.publish(e).await;
    }
    let got = rx.wait_for("/names", names.len(), WAIT).await;
    let sent: Vec<&str> = got.iter().map(|r| r.header("x-name").unwrap()).collect();
    assert_eq!(
        sent,
        ["Caf%C3%A9", "twolines", "nulbyte", "100% sure", "plain"]
    );
    assert!(got.iter().all(|r| r.header("x-kind") == Some("table")));
    // The body is the event as published.
    assert_eq!(got[0].json()["entity"]["label"], "Café");
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{id}/status")).await["status"],
        "active"
    );
    app.stop().await;
}

/// Credential headers are secrets, as `secretKey` is: every response and change record
/// shows the mask, sending the mask back keeps the value, and deliveries carry the value.
async fn credential_headers_are_never_shown(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let secrets = [
        "Bearer s3cret-bearer",
        "k-api-key-1",
        "tok-custom-2",
        "sid=cookie-3",
        "pw-4",
        "Bearer s3cret-new",
        "Bearer added-5",
    ];
    let shows_no_secret = |what: &str, body: &Value| {
        let text = body.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows {secret}: {text}");
        }
    };
    let mut body = webhook(
        "creds",
        &rx.url("/creds"),
        1,
        json!([{"eventType": "entityCreated"}]),
    );
    body["webhookConfig"]["headers"] = json!({
        "Authorization": secrets[0], "X-Api-Key": secrets[1], "x-custom-TOKEN": secrets[2],
        "Cookie": secrets[3], "X-Db-Password": secrets[4], "X-Plain": "visible",
    });
    let created = app.create_webhook(body.clone()).await;
    shows_no_secret("create", &created);
    let id = created["id"].as_str().unwrap().to_owned();
    let masked = json!({
        "Authorization": "********", "X-Api-Key": "********", "x-custom-TOKEN": "********",
        "Cookie": "********", "X-Db-Password": "********", "X-Plain": "visible",
    });
    assert_eq!(created["webhookConfig"]["headers"], masked);

    // A reader sees the mask, by id, by name and in the list.
    let (status, reader) = call(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "viewer", "role": "reader"})),
    )
    .await;
    assert_eq!(status, 201, "{reader}");
    let reader = reader["token"].as_str().unwrap().to_owned();
    for path in [
        format!("/api/v1/webhooks/{id}"),
        "/api/v1/webhooks/name/creds".to_owned(),
        "/api/v1/webhooks".to_owned(),
    ] {
        let (status, read) = call(app.client.get(app.url(&path)).bearer_auth(&reader)).await;
        assert_eq!(status, 200, "{read}");
        shows_no_secret(&path, &read);
    }

    // Deliveries carry the values.
    app.publish(event("entityCreated", "table", "a")).await;
    let got = rx.wait_for("/creds", 1, WAIT).await;
    assert_eq!(got[0].header("authorization"), Some(secrets[0]));
    assert_eq!(got[0].header("x-api-key"), Some(secrets[1]));
    assert_eq!(got[0].header("cookie"), Some(secrets[3]));

    // A PATCH of another header keeps them (the patched document holds the mask).
    let patched = app
        .patch(
            &id,
            json!([{"op": "replace", "path": "/webhookConfig/headers/X-Plain", "value": "changed"}]),
        )
        .await;
    shows_no_secret("patch", &patched);
    assert_eq!(
        patched["changeDescription"]["fieldsUpdated"],
        json!([{"name": "webhookConfig.headers.X-Plain", "oldValue": "visible", "newValue": "changed"}])
    );
    // A PUT of what was read changes nothing.
    let (status, put) = call(app.admin(Method::PUT, "/api/v1/webhooks").json(&patched)).await;
    assert_eq!(
        (status, &put["version"]),
        (200, &patched["version"]),
        "{put}"
    );
    // A new value is recorded masked, old and new.
    let changed = app
        .patch(
            &id,
            json!([{"op": "replace", "path": "/webhookConfig/headers/Authorization", "value": secrets[5]}]),
        )
        .await;
    shows_no_secret("patch", &changed);
    assert_eq!(
        changed["changeDescription"]["fieldsUpdated"],
        json!([{"name": "webhookConfig.headers.Authorization", "oldValue": "********", "newValue": "********"}])
    );
    app.publish(event("entityCreated", "table", "b")).await;
    let got = rx.wait_for("/creds", 2, WAIT).await;
    assert_eq!(got[1].header("authorization"), Some(secrets[5]));
    assert_eq!(got[1].header("x-api-key"), Some(secrets[1]));
    assert_eq!(got[1].header("x-plain"), Some("changed"));

    // Headers added where there were none are recorded masked too.
    let bare = webhook("bare", &rx.url("/bare"), 1, json!([]));
    let bare_id = app.create_webhook(bare).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let added = app
        .patch(
            &bare_id,
            json!([{"op": "add", "path": "/webhookConfig/headers", "value": {"Authorization": secrets[6], "X-Plain": "p"}}]),
        )
        .await;
    shows_no_secret("patch", &added);
    assert_eq!(
        added["changeDescription"]["fieldsAdded"],
        json!([{"name": "webhookConfig.headers", "newValue": {"Authorization": "********", "X-Plain": "p"}}])
    );

    // The mask stands for a value only where there is one.
    let mut new = body.clone();
    new["name"] = json!("creds-copy");
    new["webhookConfig"]["headers"] = masked.clone();
    let (status, err) = call(app.admin(Method::POST, "/api/v1/webhooks").json(&new)).await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("webhookConfig.headers")),
        "{err}"
    );
    let mut put = changed.clone();
    put["webhookConfig"]["headers"]["X-Other-Token"] = json!("********");
    let (status, err) = call(app.admin(Method::PUT, "/api/v1/webhooks").json(&put)).await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("webhookConfig.headers")),
        "{err}"
    );
    app.stop().await;
}

/// Headers a webhook may not set are refused when written, naming the header; a
/// Content-Type that says JSON is sent as written, never replaced.
async fn header_rules_are_checked_when_written(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let with_headers = |name: &str, headers: Value| {
        let mut body = webhook(
            name,
            &rx.url(&format!("/{name}")),
            1,
            json!([{"eventType": "entityCreated"}]),
        );
        body["webhookConfig"]["headers"] = headers;
        body
    };
    for hop in [
        "Keep-Alive",
        "Proxy-Connection",
        "Trailer",
        "Expect",
        "TE",
        "Upgrade",
        "connection",
        "Transfer-Encoding",
    ] {
        let (status, err) = call(
            app.admin(Method::POST, "/api/v1/webhooks")
                .json(&with_headers("hop", json!({hop: "x"}))),
        )
        .await;
        assert_eq!(
            (status, err["details"][0]["field"].as_str()),
            (422, Some("webhookConfig.headers")),
            "{hop}: {err}"
        );
        let message = err["details"][0]["message"].as_str().unwrap();
        assert!(
            message.contains(hop) && message.contains("hop-by-hop"),
            "{message}"
        );
    }
    for wrong in [
        "text/plain",
        "application/json; charset=latin1",
        "application/jsonx",
        "application/json; boundary=x",
    ] {
        let (status, err) = call(
            app.admin(Method::POST, "/api/v1/webhooks")
                .json(&with_headers("ct", json!({"Content-Type": wrong}))),
        )
        .await;
        assert_eq!(
            (status, err["details"][0]["field"].as_str()),
            (422, Some("webhookConfig.headers")),
            "{wrong}: {err}"
        );
    }
    let exact = [
        ("charset", "application/json; charset=utf-8"),
        ("quoted", "Application/JSON;charset=\"UTF-8\""),
        ("suffix", "application/cloudevents+json"),
    ];
    for (name, content_type) in exact {
        app.create_webhook(with_headers(name, json!({"Content-Type": content_type})))
            .await;
    }
    app.create_webhook(with_headers("default", json!({}))).await;
    app.publish(event("entityCreated", "table", "t")).await;
    for (name, content_type) in exact.into_iter().chain([("default", "application/json")]) {
        let got = rx.wait_for(&format!("/{name}"), 1, WAIT).await;
        assert_eq!(got[0].header("content-type"), Some(content_type), "{name}");
    }
    // A template naming a filter, test or function that does not exist is refused when
    // written (minijinja itself would find out at the first delivery).
    let mut custom = with_headers("tpl", json!({}));
    custom["webhookType"] = json!("Custom");
    for (template, unknown) in [
        (
            "{\"a\": {{ event.entityType | nosuchfilter }}}",
            "unknown filter 'nosuchfilter'",
        ),
        (
            "{% if event is nosuchtest %}{}{% endif %}",
            "unknown test 'nosuchtest'",
        ),
        (
            "{\n\"a\": {{ nosuchfunction() }}}",
            "line 2: unknown function 'nosuchfunction'",
        ),
    ] {
        custom["webhookConfig"]["payloadTemplate"] = json!(template);
        let (status, err) = call(app.admin(Method::POST, "/api/v1/webhooks").json(&custom)).await;
        assert_eq!(
            (status, err["details"][0]["field"].as_str()),
            (422, Some("webhookConfig.payloadTemplate")),
            "{template}: {err}"
        );
        let message = err["details"][0]["message"].as_str().unwrap();
        assert!(message.contains(unknown), "{message}");
    }
    custom["webhookConfig"]["payloadTemplate"] = json!("{}");
    custom["webhookConfig"]["headers"] = json!({"X-A": "{{ event.entityType | nosuchfilter }}"});
    let (status, err) = call(app.admin(Method::POST, "/api/v1/webhooks").json(&custom)).await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("webhookConfig.headers")),
        "{err}"
    );
    let message = err["details"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("header 'X-A'") && message.contains("unknown filter 'nosuchfilter'"),
        "{message}"
    );
    // The same on PUT and PATCH.
    custom["webhookConfig"]["headers"] = json!({});
    let id = created_id(&app, custom.clone()).await;
    custom["webhookConfig"]["payloadTemplate"] = json!("{{ x | nosuchfilter }}");
    let (status, _) = call(app.admin(Method::PUT, "/api/v1/webhooks").json(&custom)).await;
    assert_eq!(status, 422);
    let (status, err) = call(
        app.admin(Method::PATCH, &format!("/api/v1/webhooks/{id}"))
            .header("content-type", "application/json-patch+json")
            .body(json!([{"op": "replace", "path": "/webhookConfig/payloadTemplate", "value": "{{ x | nosuchfilter }}"}]).to_string()),
    )
    .await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (422, Some("webhookConfig.payloadTemplate")),
        "{err}"
    );
    app.stop().await;
}

async fn a_test_message_for_an_unsaved_configuration(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    for (kind, path) in [
        ("Generic", "/g"),
        ("Slack", "/s"),
        ("MSTeams", "/t"),
        ("GoogleChat", "/c"),
        ("Custom", "/u"),
    ] {
        let mut body = webhook("draft", &rx.url(path), 1, json!([]));
        body["webhookType"] = json!(kind);
        body["webhookConfig"]["secretKey"] = json!("k");
        let (status, outcome) =
            call(app.admin(Method::POST, "/api/v1/webhooks/test").json(&body)).await;
        assert_eq!(
            (status, outcome["outcome"].as_str()),
            (200, Some("success")),
            "{kind}: {outcome}"
        );
        let got = rx.wait_for(path, 1, WAIT).await;
        assert!(got[0].header("x-openmetadata-signature").is_some());
        let v = got[0].json();
        match kind {
            "Slack" => assert!(v["blocks"].is_array()),
            "MSTeams" => assert_eq!(v["type"], "message"),
            "GoogleChat" => assert!(v["cardsV2"].is_array()),
            _ => assert_eq!(v["entity"]["type"], "webhook"),
        }
    }
    // Nothing was saved; a bad configuration is refused as on create.
    assert_eq!(app.get("/api/v1/webhooks").await["paging"]["total"], 0);
    let (status, _) = call(
        app.admin(Method::POST, "/api/v1/webhooks/test")
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 422);
    // The mask stands for nothing in a configuration that is not saved: neither a secret
    // nor a credential header goes out as the mask.
    let mut masked = webhook("draft", &rx.url("/masked"), 1, json!([]));
    masked["webhookConfig"]["headers"] = json!({"Authorization": "********"});
    let mut masked_secret = webhook("draft", &rx.url("/masked"), 1, json!([]));
    masked_secret["webhookConfig"]["secretKey"] = json!("********");
    for (body, field) in [
        (masked, "webhookConfig.headers"),
        (masked_secret, "webhookConfig.secretKey"),
    ] {
        let (status, err) =
            call(app.admin(Method::POST, "/api/v1/webhooks/test").json(&body)).await;
        assert_eq!(
            (status, err["details"][0]["field"].as_str()),
            (422, Some(field)),
            "{err}"
        );
    }
    assert!(rx.requests("/masked").is_empty());
    app.stop().await;
}

/// Every range that is not a public internet destination is refused, in each of its
/// spellings; public addresses, and NAT64 addresses of public IPv4 hosts, pass.
#[test]
fn the_address_policy_refuses_what_is_not_public() {
    use outhook::domain::address::AddressPolicy;
    let strict = AddressPolicy::default();
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "192.0.0.8",
        "192.0.2.10",    // documentation
        "198.51.100.7",  // documentation
        "203.0.113.200", // documentation
        "198.18.0.1",    // benchmarking
        "198.19.255.254",
        "192.88.99.1", // 6to4 relay anycast
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::127.0.0.1", // IPv4-compatible (::/96)
        "::a00:1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1", // NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::808:808", // local-use NAT64
        "100::1",             // discard-only
        "2001::1",            // Teredo
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:2::1",   // benchmarking
        "2001:10::1",  // ORCHID
        "2001:db8::1", // documentation
        "2001:db8:ffff::1",
        "2002:7f00:1::1", // 6to4 of 127.0.0.1
        "2002:808:808::1",
        "3fff::1", // documentation
        "fc00::1",
        "fd00:ec2::254", // AWS metadata
        "fe80::1",
        "fec0::1", // site-local
        "feff::1",
        "ff02::1",
    ] {
        let parsed: std::net::IpAddr = ip.parse().unwrap();
        assert!(!strict.permits(parsed), "{ip} must be refused");
    }
    for ip in [
        "93.184.216.34",
        "8.8.8.8",
        "198.17.255.255",
        "198.20.0.1",
        "192.0.3.1",
        "2606:4700::1111",
        "2a00:1450:4001::1",
        "2001:200::1", // just past 2001::/23
        "2001:4860:4860::8888",
        "2003::1",
        "64:ff9b::808:808", // NAT64 of 8.8.8.8
        "::ffff:8.8.8.8",
    ] {
        assert!(strict.permits(ip.parse().unwrap()), "{ip} must be allowed");
    }
    // An allowed IPv4 range covers that range's IPv6 spellings too.
    let loopback = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
    for ip in ["127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"] {
        assert!(loopback.permits(ip.parse().unwrap()), "{ip}");
    }
    assert!(!loopback.permits("10.0.0.1".parse().unwrap()));
    assert!(!loopback.permits("::1".parse().unwrap()));
}

on_both_backends!(
    each_type_arrives_as_its_platform_expects,
    get_and_put_deliveries,
    every_scheme_verifies_with_independent_code,
    templates_fail_early_or_once,
    templated_headers_carry_any_entity_name,
    credential_headers_are_never_shown,
    header_rules_are_checked_when_written,
    a_test_message_for_an_unsaved_configuration,
);
