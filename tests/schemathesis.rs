//! A bounded schemathesis run over the served OpenAPI document, on both backends: the real
//! app answers generated requests (valid and invalid, single calls and chains of calls)
//! with no 5xx, and every answer — status, content type, headers and body — is one the
//! document describes.
//!
//! schemathesis (Python) is an independent checker: `.ci/run` installs the pinned version
//! (`python3 -m pip install schemathesis==4.32.5`). Without it this test fails, never skips.
//! The run is reproducible (fixed seed, no example database) and bounded (examples per
//! operation, and a time limit on the whole run).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Backend, TestApp, TestDb, call};
use serde_json::Value;

/// The checks that must hold for every generated request.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";
const SEED: &str = "20240601";
/// Test cases per operation and phase; the whole run takes about 20 s per backend here.
const MAX_EXAMPLES: &str = "50";
/// The run is stopped, and the test fails, past this.
const TIME_LIMIT: Duration = Duration::from_secs(240);

/// schemathesis's entry point, run through the same `python3` as the other checkers.
const ENTRY: &str = "import sys\n\
                     from schemathesis.cli import schemathesis\n\
                     sys.exit(schemathesis())";

fn schemathesis_installed() {
    let out = Command::new("python3")
        .args(["-c", "import schemathesis; print(schemathesis.__version__)"])
        .output()
        .expect("python3 is needed to run schemathesis");
    assert!(
        out.status.success(),
        "schemathesis is needed for this test: python3 -m pip install schemathesis==4.32.5 \
         (.ci/run installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The operations the document describes, as `METHOD path`.
fn operations(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            out.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    out
}

/// What the failure report lists, in a few lines: each failing operation, each check that
/// failed, and the messages saying what broke (without the schema and response dumps).
fn failure_digest(output: &str) -> String {
    let mut digest = Vec::new();
    let mut section = "";
    let mut in_check = false;
    for line in output.lines() {
        if line.starts_with("====") {
            section = line.trim_matches(|c| c == '=' || c == ' ');
            continue;
        }
        if section != "FAILURES" && section != "ERRORS" {
            continue;
        }
        let detail = line.strip_prefix("    ").unwrap_or("");
        if line.starts_with("___") {
            digest.push(line.trim_matches(|c| c == '_' || c == ' ').to_owned());
            in_check = false;
        } else if line.starts_with("- ") {
            digest.push(format!("  {line}"));
            in_check = true;
        } else if line.starts_with('[') || line.starts_with("Reproduce") {
            in_check = false;
        } else if in_check
            && !detail.is_empty()
            && !detail.starts_with(' ')
            && !detail.starts_with("Validated against")
            && !detail.starts_with("Schema at")
            && detail != "Value:"
        {
            digest.push(format!("      {detail}"));
        }
    }
    digest.join("\n")
}

/// Every webhook left by the run points at the loopback address (the hooks replace every
/// generated URL): a generated endpoint never reached outhook.
async fn every_endpoint_stayed_on_loopback(app: &TestApp) {
    let mut after: Option<String> = None;
    for _page in 0..1000 {
        let mut path = "/api/v1/webhooks?limit=100&include=all".to_owned();
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={cursor}"));
        }
        let page = app.get(&path).await;
        for hook in page["data"].as_array().expect("a list") {
            let endpoint = hook["webhookConfig"]["endpoint"].as_str().unwrap_or("");
            let host = url::Url::parse(endpoint)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned));
            assert_eq!(
                host.as_deref(),
                Some("127.0.0.1"),
                "a generated webhook points outside the machine: {hook}"
            );
        }
        match page["paging"]["after"].as_str() {
            Some(cursor) => after = Some(cursor.to_owned()),
            None => return,
        }
    }
    panic!("more than 1000 pages of webhooks");
}

async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document(backend: Backend) {
    schemathesis_installed();
    // Without --allow-private: the address policy refuses the loopback endpoints the hooks
    // put in, so no delivery or test message leaves the process.
    let app = TestApp::start_on(
        TestDb::new(backend).await,
        &["--admin-token", ADMIN_TOKEN],
        false,
    )
    .await;
    let (status, doc) = call(app.client.get(app.url("/api/v1/openapi.json"))).await;
    assert_eq!(status, 200);
    // schemathesis leaves out the operation that serves the document it reads.
    let operations: Vec<String> = operations(&doc)
        .into_iter()
        .filter(|op| op != "GET /api/v1/openapi.json")
        .collect();
    assert!(operations.len() >= 20, "{operations:?}");

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis_hooks.py");
    let work = std::env::temp_dir().join(format!(
        "outhook-schemathesis-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&work).unwrap();
    let output_path = work.join("output.txt");
    let output = std::fs::File::create(&output_path).unwrap();
    let mut child = Command::new("python3")
        .args(["-c", ENTRY, "run", &app.url("/api/v1/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", CHECKS])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--generation-database", "none", "--workers", "1"])
        .args([
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "too_slow",
        ])
        .args(["--continue-on-failure", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", &hooks)
        // Nothing of the run is written into the repository.
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .expect("python3 runs schemathesis");
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran over {TIME_LIMIT:?}:\n{}",
                std::fs::read_to_string(&output_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = std::fs::read_to_string(&output_path).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    // The whole report, shown when the test fails.
    eprintln!("{text}");
    assert!(
        exit.success(),
        "{backend:?}: schemathesis found failures ({exit}, {:.0?}):\n{}",
        started.elapsed(),
        failure_digest(&text)
    );
    // The run reached every operation of the document.
    let tested = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(
        tested,
        Some(operations.len()),
        "schemathesis did not test every operation ({operations:?})"
    );
    every_endpoint_stayed_on_loopback(&app).await;
    app.stop().await;
}

on_both_backends!(schemathesis_finds_no_server_error_and_no_answer_outside_the_document);
