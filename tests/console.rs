//! The web console driven in a real headless Chromium (through chromedriver, started here
//! on a free port) against the real app: sign in, list and filter, open a webhook, act on
//! it and see the result, browse events, sign out; a reader's session sees but cannot act;
//! a form without the session's CSRF token, or from another site, is refused. A
//! screenshot of each page is kept under the target directory
//! (`tmp/console-screenshots/`).
//!
//! Chromium and chromedriver are required (Debian: `chromium`, `chromium-driver`; `.ci/run`
//! installs them): without them the tests fail, they never skip.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{ADMIN_TOKEN, Backend, TestApp, call, event, webhook};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const FORM: &str = "application/x-www-form-urlencoded";

/// chromedriver on a free port, and a headless Chromium session through it.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    label: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    async fn start(label: &str) -> Self {
        let port = free_port();
        // A process group of its own: Chromium and its helpers are the driver's children,
        // and ending the group ends them all, however the test ends.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver is required for the console tests ({e}); install Chromium and \
                     its driver (Debian: apt-get install chromium chromium-driver)"
                )
            });
        let mut caps = serde_json::Map::new();
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ];
        if label.contains("phone") {
            args.pop();
            args.push("--window-size=390,844");
        }
        let mut options = json!({ "args": args });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        caps.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < WAIT => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no Chromium session through chromedriver: {e}"),
            }
        };
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).expect("a screenshot folder");
        Self {
            client,
            driver,
            shots,
            label: label.to_owned(),
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    async fn source(&self) -> String {
        self.client.source().await.expect("the page's source")
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("a URL")
            .path()
            .to_owned()
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .expect("a click");
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css}: {e}"));
        field.clear().await.expect("a field cleared");
        field.send_keys(text).await.expect("keys sent");
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("a query")
            .len()
    }

    /// Waits until the page's text holds `text`; panics with the page otherwise.
    async fn wait_for_text(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(
                started.elapsed() < WAIT,
                "no '{text}' on the page:\n{source}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page's URL holds `text` (a form sent by GET has loaded).
    async fn wait_for_url(&self, text: &str) {
        let started = Instant::now();
        loop {
            let url = self.client.current_url().await.expect("a URL");
            if url.as_str().contains(text) {
                return;
            }
            assert!(started.elapsed() < WAIT, "the URL {url} has no '{text}'");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, page: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.shots.join(format!("{}-{page}.png", self.label));
        std::fs::write(&path, png).expect("the screenshot is written");
    }

    async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Ends chromedriver's process group (the driver, Chromium and its helpers), also
    /// when a test panics before `stop`.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

fn label(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    }
}

/// An app with a receiver and two webhooks, one of which has delivered two events.
async fn app_with_webhooks(backend: Backend) -> (TestApp, Receiver, String) {
    let app = TestApp::start(backend).await;
    let rx = Receiver::start().await;
    let filters = json!([{"eventType": "entityCreated", "entities": ["table"]}]);
    let created = app
        .create_webhook(webhook(
            "orders-sync",
            &rx.url("/orders"),
            1,
            filters.clone(),
        ))
        .await;
    let mut slack = webhook("alerts <b>ops</b>", &rx.url("/alerts"), 1, filters);
    slack["webhookType"] = json!("Slack");
    app.create_webhook(slack).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.publish(json!([
        event("entityCreated", "table", "orders"),
        event("entityCreated", "table", "customers")
    ]))
    .await;
    app.wait_for_attempts(&id, 2).await;
    rx.wait_for("/alerts", 2, WAIT).await;
    (app, rx, id)
}

async fn an_admin_signs_in_lists_opens_acts_and_signs_out(backend: Backend) {
    let (app, rx, id) = app_with_webhooks(backend).await;
    let browser = Browser::start(label(backend)).await;

    // /ui: the sign-in page. A wrong token is refused, the right one lands on the list.
    browser.goto(&app.url("/ui")).await;
    browser.wait_for_text("API token").await;
    browser.screenshot("sign-in").await;
    browser.fill("#token", "not-a-token").await;
    browser.click("form[action='/ui/sign-in'] button").await;
    browser.wait_for_text("not a live API token").await;
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("form[action='/ui/sign-in'] button").await;
    let list = browser.wait_for_text("orders-sync").await;
    assert_eq!(browser.path().await, "/ui/webhooks");
    // Names are escaped, not markup.
    assert!(list.contains("alerts &lt;b&gt;ops&lt;/b&gt;"), "{list}");
    assert!(list.contains("entityCreated on table"), "{list}");
    assert_eq!(browser.count("tbody tr").await, 2);
    browser.screenshot("webhooks").await;

    // Filters: by type, and by name.
    browser.goto(&app.url("/ui/webhooks?type=Slack")).await;
    assert_eq!(browser.count("tbody tr").await, 1);
    assert!(browser.source().await.contains("alerts"));
    browser.goto(&app.url("/ui/webhooks")).await;
    browser.fill("input[name=q]", "ORDERS").await;
    browser.click("form.filters button").await;
    browser.wait_for_url("q=ORDERS").await;
    assert_eq!(browser.count("tbody tr").await, 1);
    browser.goto(&app.url("/ui/webhooks?status=failing")).await;
    browser.wait_for_text("No webhook matches").await;

    // One webhook: configuration, health, chart, the delivery log with its attempts.
    browser.goto(&app.url("/ui/webhooks")).await;
    browser.click(&format!("a[href='/ui/webhooks/{id}']")).await;
    let page = browser.wait_for_text("Delivery log").await;
    for part in [
        "Health",
        "Last 24 hours",
        "<svg",
        "Configuration",
        "p99 duration",
    ] {
        assert!(page.contains(part), "no {part}:\n{page}");
    }
    assert_eq!(browser.count("ol.attempts > li").await, 2);
    browser.click("ol.attempts > li:first-child summary").await;
    let opened = browser.wait_for_text("Delivery id").await;
    assert!(opened.contains(&rx.url("/orders")), "{opened}");
    browser.screenshot("webhook").await;

    // Actions, each answered on the webhook's page.
    browser
        .click(&format!("form[action='/ui/webhooks/{id}/disable'] button"))
        .await;
    browser.wait_for_text("Webhook disabled.").await;
    let (_, stored) = call(app.admin(Method::GET, &format!("/api/v1/webhooks/{id}"))).await;
    assert_eq!(stored["enabled"], false, "{stored}");
    browser.screenshot("disabled").await;
    browser
        .click(&format!("form[action='/ui/webhooks/{id}/enable'] button"))
        .await;
    browser.wait_for_text("Webhook enabled.").await;
    browser
        .click(&format!("form[action='/ui/webhooks/{id}/test'] button"))
        .await;
    browser
        .wait_for_text("Test message sent: success, HTTP 200")
        .await;
    browser
        .click(&format!(
            "form[action='/ui/webhooks/{id}/rotate-secret'] button"
        ))
        .await;
    let rotated = browser.wait_for_text("New secret:").await;
    assert!(rotated.contains("class=\"secret\""), "{rotated}");
    browser.screenshot("rotated").await;
    let (_, stored) = call(app.admin(Method::GET, &format!("/api/v1/webhooks/{id}"))).await;
    assert_eq!(stored["enabled"], true);
    assert_eq!(stored["webhookConfig"]["secretKey"], "********", "{stored}");

    // Events: the two published ones, found by entity FQN, each with its JSON.
    browser.goto(&app.url("/ui/events")).await;
    assert_eq!(browser.count("ol.events > li").await, 2);
    browser.fill("input[name=q]", "db.custom").await;
    browser.click("form.filters button").await;
    browser.wait_for_url("q=db.custom").await;
    assert_eq!(browser.count("ol.events > li").await, 1);
    browser.click("ol.events > li summary").await;
    browser
        .wait_for_text("\"fullyQualifiedName\": \"svc.db.customers\"")
        .await;
    browser.screenshot("events").await;

    // Signing out ends the session: the pages send the browser back to sign in.
    browser.click("form[action='/ui/sign-out'] button").await;
    browser.wait_for_text("API token").await;
    browser.goto(&app.url(&format!("/ui/webhooks/{id}"))).await;
    browser.wait_for_text("API token").await;
    assert_eq!(browser.path().await, "/ui");
    browser.stop().await;
    app.stop().await;
}

/// Signs in over plain HTTP; the session cookie (`name=value`).
async fn session_cookie(app: &TestApp, token: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = client
        .post(app.url("/ui/sign-in"))
        .header("content-type", FORM)
        .body(serde_urlencoded::to_string([("token", token)]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..at + 64].to_owned()
}

async fn a_reader_sees_but_cannot_act_and_forged_forms_are_refused(backend: Backend) {
    let (app, _rx, id) = app_with_webhooks(backend).await;
    let (status, issued) = call(
        app.admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": "viewer", "role": "reader"})),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let reader = issued["token"].as_str().unwrap().to_owned();

    // In the browser, a reader sees the webhook and no action.
    let browser = Browser::start(&format!("{}-reader-phone", label(backend))).await;
    browser.goto(&app.url("/ui")).await;
    browser.fill("#token", &reader).await;
    browser.click("form[action='/ui/sign-in'] button").await;
    browser.wait_for_text("orders-sync").await;
    browser.screenshot("webhooks").await;
    browser.goto(&app.url(&format!("/ui/webhooks/{id}"))).await;
    let page = browser.wait_for_text("Delivery log").await;
    assert!(page.contains("reader"), "{page}");
    assert_eq!(browser.count("section.actions form").await, 0);
    browser.screenshot("webhook").await;
    browser.stop().await;

    // Posting the form anyway, with the reader session's own CSRF token: 403.
    let client = reqwest::Client::new();
    let get = |cookie: &str, path: &str| {
        client
            .get(app.url(path))
            .header("cookie", cookie.to_owned())
            .send()
    };
    let post = |cookie: &str, path: &str, form: Vec<(&'static str, String)>| {
        client
            .post(app.url(path))
            .header("cookie", cookie.to_owned())
            .header("content-type", FORM)
            .body(serde_urlencoded::to_string(&form).unwrap())
            .send()
    };
    let reader_cookie = session_cookie(&app, &reader).await;
    let reader_page = get(&reader_cookie, &format!("/ui/webhooks/{id}"))
        .await
        .unwrap();
    assert_eq!(reader_page.headers()["cache-control"], "no-store");
    let reader_csrf = csrf_of(&reader_page.text().await.unwrap());
    let disable = format!("/ui/webhooks/{id}/disable");
    let refused = post(&reader_cookie, &disable, vec![("csrf", reader_csrf)])
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("cannot do this"));

    // An admin's session: without the CSRF token, with another session's, or from another
    // site's page, the form changes nothing.
    let admin_cookie = session_cookie(&app, ADMIN_TOKEN).await;
    let admin_page = get(&admin_cookie, &format!("/ui/webhooks/{id}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let admin_csrf = csrf_of(&admin_page);
    let other_csrf = csrf_of(
        &get(&reader_cookie, "/ui/webhooks")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    for form in [
        vec![],
        vec![("csrf", String::new())],
        vec![("csrf", other_csrf)],
    ] {
        let answer = post(&admin_cookie, &disable, form).await.unwrap();
        assert_eq!(answer.status(), 403);
    }
    let cross_site = client
        .post(app.url(&disable))
        .header("cookie", admin_cookie.clone())
        .header("origin", "https://evil.example")
        .header("content-type", FORM)
        .body(serde_urlencoded::to_string([("csrf", &admin_csrf)]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let signed_out = post(&admin_cookie, "/ui/sign-out", vec![]).await.unwrap();
    assert_eq!(signed_out.status(), 403, "signing out needs the token too");
    let (_, stored) = call(app.admin(Method::GET, &format!("/api/v1/webhooks/{id}"))).await;
    assert_eq!(stored["enabled"], true, "{stored}");

    // With its token, the same form works; a revoked token ends its sessions.
    let done = post(&admin_cookie, &disable, vec![("csrf", admin_csrf)])
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Webhook disabled."));
    let token_id = issued["id"].as_str().unwrap();
    let (status, _) = call(app.admin(Method::DELETE, &format!("/api/v1/tokens/{token_id}"))).await;
    assert!(status == 200 || status == 204, "{status}");
    tokio::time::sleep(Duration::from_millis(2100)).await; // the token cache's moment
    let gone = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/ui/webhooks"))
        .header("cookie", reader_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 303);
    assert_eq!(gone.headers()["location"], "/ui");
    app.stop().await;
}

async fn sessions_expire(backend: Backend) {
    let (app, _rx, _id) = app_with_webhooks(backend).await;
    let cookie = session_cookie(&app, ADMIN_TOKEN).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let open = |cookie: String| {
        client
            .get(app.url("/ui/webhooks"))
            .header("cookie", cookie)
            .send()
    };
    assert_eq!(open(cookie.clone()).await.unwrap().status(), 200);
    app.clock.advance(Duration::from_secs(8 * 3600 + 1));
    let expired = open(cookie).await.unwrap();
    assert_eq!(expired.status(), 303);
    app.stop().await;
}

on_both_backends!(
    an_admin_signs_in_lists_opens_acts_and_signs_out,
    a_reader_sees_but_cannot_act_and_forged_forms_are_refused,
    sessions_expire,
);
