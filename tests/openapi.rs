//! The OpenAPI document describes every route and is a valid OpenAPI 3 document.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Backend, TestApp, call};
use serde_json::Value;

/// Every route, with its method.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/webhooks"),
    ("put", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks/{id}"),
    ("patch", "/api/v1/webhooks/{id}"),
    ("delete", "/api/v1/webhooks/{id}"),
    ("get", "/api/v1/webhooks/name/{name}"),
    ("put", "/api/v1/webhooks/restore"),
    ("post", "/api/v1/events"),
    ("get", "/api/v1/webhooks/{id}/deliveries"),
    ("get", "/api/v1/webhooks/{id}/status"),
    ("post", "/api/v1/webhooks/{id}/test"),
    ("post", "/api/v1/webhooks/{id}/resume"),
    ("post", "/api/v1/webhooks/{id}/rotate-secret"),
    ("post", "/api/v1/webhooks/test"),
    ("get", "/metrics"),
    ("post", "/api/v1/tokens"),
    ("get", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/api/v1/openapi.json"),
];

#[tokio::test]
async fn the_document_describes_every_route() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (status, doc) = call(app.client.get(app.url("/api/v1/openapi.json"))).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut described = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            described.push((method.as_str(), path.as_str()));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let public = ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"]
                .contains(&path.as_str());
            assert_eq!(
                op.get("security").is_some(),
                !public,
                "{method} {path} security"
            );
        }
    }
    described.sort();
    let mut expected = ROUTES.to_vec();
    expected.sort();
    assert_eq!(described, expected);
    // The webhook schema is the seed's, with additionalProperties false on input.
    let spec = &doc["components"]["schemas"]["WebhookSpec"];
    assert_eq!(spec["additionalProperties"], Value::Bool(false), "{spec}");
    assert!(
        spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "webhookConfig")
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    validate_with_openapi_spec_validator(&doc);
    app.stop().await;
}

/// Runs the independent `openapi-spec-validator` (Python) on the document. `.ci/run`
/// installs it; a machine without it fails here rather than skipping the check.
fn validate_with_openapi_spec_validator(doc: &Value) {
    let script = "import json, sys\n\
                  from openapi_spec_validator import validate\n\
                  validate(json.load(sys.stdin))\n\
                  print('valid')";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to validate the OpenAPI document");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejected the document (pip install openapi-spec-validator):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
