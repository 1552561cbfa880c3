//! outhook-bench: outhook's own benchmark.
//!
//! It builds and starts the real `outhook` binary on a fresh database, runs a receiver on
//! 127.0.0.1 (whose own ceiling it measures first) and a load driver, and prints what it
//! measured: ingest and delivery rates, end-to-end latency (publish call → arrival, from
//! the send time each event carries), duplicates, losses, and the outhook process's peak
//! RSS (VmHWM) and CPU seconds. Every loop is bounded in count and time.
//!
//! `cargo run --release -p outhook-bench -- --backend postgres`
//!
//! W10 publishes to nats-server with JetStream (`--nats`, default 127.0.0.1:4222).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

const TOKEN: &str = "bench-admin-token-0123456789";
/// No workload waits longer than this for its deliveries.
const WORKLOAD_LIMIT: Duration = Duration::from_secs(90);

#[derive(Parser)]
#[command(about = "Benchmark outhook against a local receiver")]
struct Args {
    /// postgres, sqlite or both.
    #[arg(long, default_value = "postgres")]
    backend: String,
    /// Which workloads, comma-separated: w1 (batchSize 1), w1b10, w2, w3 (default batchSize),
    /// w3b1, w4, w5, w6, w10 (NATS JetStream).
    #[arg(long, default_value = "w1,w1b10,w2,w3,w3b1,w4,w5,w6,w10")]
    workloads: String,
    /// The NATS server with JetStream that W10 publishes to.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// A PostgreSQL server where fresh databases can be created.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Seconds of steady load in W2.
    #[arg(long, default_value_t = 30)]
    w2_seconds: u64,
    /// Where the results go as JSON.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// An environment variable for the outhook process, `NAME=value` (repeatable), to
    /// compare settings without touching the benchmark's own process.
    #[arg(long = "server-env", value_parser = parse_env)]
    server_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s}: expected NAME=value"))
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

// ---- the receiver ----

#[derive(Default)]
struct Arrivals {
    /// (webhook, event) pairs seen, for duplicates and losses.
    seen: HashSet<(String, String)>,
    arrivals: u64,
    /// Publish → arrival, microseconds, per webhook.
    latency: HashMap<String, Vec<u64>>,
    last: Option<Instant>,
}

#[derive(Clone, Default)]
struct Receiver {
    state: Arc<Mutex<Arrivals>>,
}

/// Pulls `"key":"value"` (or a number) out of a body without parsing all of it.
fn values<'a>(body: &'a str, key: &str) -> Vec<&'a str> {
    let needle = format!("\"{key}\":");
    body.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &body[at + needle.len()..];
            let rest = rest.trim_start_matches('"');
            let end = rest.find(['"', ',', '}']).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

impl Receiver {
    async fn start(self) -> anyhow::Result<std::net::SocketAddr> {
        let app = axum::Router::new().fallback({
            let me = self.clone();
            move |req: axum::extract::Request| {
                let me = me.clone();
                async move {
                    let slow = req.uri().path() == "/slow";
                    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
                        .await
                        .unwrap_or_default();
                    if slow {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    me.record(&body);
                    axum::http::StatusCode::OK
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }

    fn record(&self, body: &[u8]) {
        let now = now_nanos();
        let Ok(text) = std::str::from_utf8(body) else {
            return;
        };
        let ids = values(text, "eventId");
        let sent = values(text, "sentAtNanos");
        let hook = values(text, "webhookName")
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let mut state = self.state.lock().unwrap();
        for (i, id) in ids.iter().enumerate() {
            state.arrivals += 1;
            state.seen.insert((hook.clone(), id.to_string()));
            if let Some(at) = sent.get(i).and_then(|s| s.parse::<u128>().ok()) {
                let micros = (now.saturating_sub(at) / 1000) as u64;
                state.latency.entry(hook.clone()).or_default().push(micros);
            }
        }
        state.last = Some(Instant::now());
    }

    fn reset(&self) {
        *self.state.lock().unwrap() = Arrivals::default();
    }

    fn unique(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    /// Waits until `n` distinct (webhook, event) pairs arrived, or the limit passed.
    async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.unique() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// How long one durable commit takes here, median of 300: every delivery waits for one,
/// so the figures of two machines (or two days) compare only next to it. PostgreSQL: a
/// one-row insert in its own transaction, into an ordinary table of a fresh database (a
/// temporary table writes no log, so its commit would wait for no flush).
async fn postgres_commit_us(postgres: &str) -> anyhow::Result<f64> {
    let db = Db::fresh("postgres", postgres).await?;
    let took = commit_probes(&db.url).await;
    db.remove().await;
    took
}

async fn commit_probes(url: &str) -> anyhow::Result<f64> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query("CREATE TABLE commit_probe (n int)")
        .execute(&mut conn)
        .await?;
    let mut took = Vec::with_capacity(COMMIT_PROBES);
    for n in 0..COMMIT_PROBES as i32 {
        let t = Instant::now();
        sqlx::query("INSERT INTO commit_probe VALUES ($1)")
            .bind(n)
            .execute(&mut conn)
            .await?;
        took.push(t.elapsed().as_micros() as u64);
    }
    took.sort_unstable();
    Ok(percentile(&took, 0.5) * 1000.0)
}

/// The disk's side of a commit: a 4 KiB write and `fdatasync`, what a SQLite commit in WAL
/// mode with `synchronous=FULL` waits for. Median of 300, in µs.
fn disk_sync_us() -> anyhow::Result<f64> {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("outhook_bench_sync_{}", Uuid::new_v4().simple()));
    let mut file = std::fs::File::create(&path)?;
    let page = [7u8; 4096];
    let mut took = Vec::with_capacity(COMMIT_PROBES);
    for _ in 0..COMMIT_PROBES {
        let t = Instant::now();
        file.write_all(&page)?;
        file.sync_data()?;
        took.push(t.elapsed().as_micros() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    took.sort_unstable();
    Ok(percentile(&took, 0.5) * 1000.0)
}

const COMMIT_PROBES: usize = 300;

/// Requests per second the receiver answers on its own (so it is not the bottleneck).
async fn receiver_ceiling(url: &str) -> f64 {
    let client = reqwest::Client::new();
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (client, done, url) = (client.clone(), done.clone(), url.to_owned());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let body = r#"{"eventId":"x","webhookName":"ceiling","entity":{"extension":{"sentAtNanos":0}}}"#;
                    if client.post(&url).body(body).send().await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

// ---- outhook, as a process ----

struct Outhook {
    child: Child,
    base: String,
    client: reqwest::Client,
}

/// outhook's API, as the load driver calls it.
#[derive(Clone)]
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Outhook {
    async fn start(
        binary: &PathBuf,
        database_url: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(binary)
            .args([
                "serve",
                "--bind",
                &bind,
                "--database-url",
                database_url,
                "--admin-token",
                TOKEN,
            ])
            .args([
                "--allow-private",
                "127.0.0.0/8",
                "--publish-rate",
                "10000000",
                "--publish-burst",
                "10000000",
            ])
            .args(["--max-events-per-request", "1000"])
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting outhook")?;
        let me = Self {
            child,
            base: format!("http://{bind}"),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = me.client.get(format!("{}/readyz", me.base)).send().await {
                if r.status().is_success() {
                    return Ok(me);
                }
            }
            if Instant::now() > deadline {
                bail!("outhook did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn proc_field(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id())).unwrap_or_default()
    }

    /// Peak resident memory, MB.
    fn peak_rss_mb(&self) -> f64 {
        let status = self.proc_field("status");
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        kb / 1024.0
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = self.proc_field("stat");
        let after = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Fields 14 and 15 of /proc/pid/stat, counted after the command name.
        (ticks(11) + ticks(12)) / 100.0
    }

    fn api(&self) -> Api {
        Api {
            base: self.base.clone(),
            client: self.client.clone(),
        }
    }

    fn stop(mut self) {
        // SIGTERM first; a workload with a slow endpoint may leave a request in flight.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = if path.starts_with("/api/v1/webhooks/") && body.is_array() {
                req.header("content-type", "application/json-patch+json")
                    .body(body.to_string())
            } else {
                req.json(&body)
            };
        }
        let response = req.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create_webhook(
        &self,
        name: &str,
        url: &str,
        batch: Option<u32>,
        entities: &str,
    ) -> anyhow::Result<String> {
        let mut body = json!({
            "name": name, "webhookType": "Generic",
            "eventFilters": [{"eventType": "entityCreated", "entities": [entities]}],
            "webhookConfig": {"endpoint": url, "timeout": 10}
        });
        // Without a batch size the webhook gets outhook's default (10).
        if let Some(batch) = batch {
            body["batchSize"] = json!(batch);
        }
        let created = self
            .call(reqwest::Method::POST, "/api/v1/webhooks", Some(body))
            .await?;
        Ok(created["id"].as_str().unwrap_or_default().to_owned())
    }
}

/// A ChangeEvent carrying its send time (in the open `entity.extension`).
fn event(n: usize) -> Value {
    json!({
        "eventId": Uuid::new_v4(),
        "eventType": "entityCreated",
        "entity": {
            "id": Uuid::new_v4(), "type": "table", "name": format!("t{n}"),
            "fullyQualifiedName": format!("svc.db.schema.t{n}"),
            "extension": {"sentAtNanos": 0}
        },
        "userName": "bench"
    })
}

fn stamped(mut events: Vec<Value>) -> Value {
    let now = now_nanos() as u64;
    for e in &mut events {
        e["entity"]["extension"]["sentAtNanos"] = json!(now);
    }
    Value::Array(events)
}

/// Publishes `total` events in requests of `per_request`, from `publishers` tasks.
/// Returns the seconds it took until the last answer.
async fn publish(
    outhook: &Outhook,
    total: usize,
    per_request: usize,
    publishers: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let (next, client, url) = (
            next.clone(),
            outhook.client.clone(),
            format!("{}/api/v1/events", outhook.base),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(per_request, Ordering::Relaxed);
                if from >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let events = (from..(from + per_request).min(total)).map(event).collect();
                let response = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&stamped(events))
                    .send()
                    .await?;
                if response.status().as_u16() != 202 {
                    bail!("publish answered {}", response.status());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

// ---- workloads ----

struct Db {
    url: String,
    drop: Option<(String, String)>,
    file: Option<PathBuf>,
}

impl Db {
    async fn fresh(backend: &str, admin: &str) -> anyhow::Result<Self> {
        let name = format!("outhook_bench_{}", Uuid::new_v4().simple());
        if backend == "postgres" {
            let mut conn = sqlx::PgConnection::connect(admin)
                .await
                .context("connecting to PostgreSQL")?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
            Ok(Self {
                url: format!("{base}/{name}"),
                drop: Some((admin.to_owned(), name)),
                file: None,
            })
        } else {
            let file = std::env::temp_dir().join(format!("{name}.db"));
            Ok(Self {
                url: format!("sqlite://{}", file.display()),
                drop: None,
                file: Some(file),
            })
        }
    }

    async fn remove(self) {
        if let Some((admin, name)) = self.drop {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        }
        if let Some(file) = self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
    }
}

type Figures = Vec<(&'static str, f64)>;

fn latency_figures(rx: &Receiver, hook: Option<&str>) -> Figures {
    let state = rx.state.lock().unwrap();
    let mut all: Vec<u64> = match hook {
        Some(h) => state.latency.get(h).cloned().unwrap_or_default(),
        None => state.latency.values().flatten().copied().collect(),
    };
    all.sort_unstable();
    vec![
        ("p50_ms", percentile(&all, 0.50)),
        ("p90_ms", percentile(&all, 0.90)),
        ("p99_ms", percentile(&all, 0.99)),
        (
            "max_ms",
            all.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        ),
    ]
}

/// W1 and W4: `hooks` webhooks of which `matching` get the events; 10,000 events, one per
/// request, 32 publishers.
async fn fan_out(
    outhook: &Outhook,
    rx: &Receiver,
    ok: &str,
    batch: u32,
    hooks: usize,
    matching: usize,
) -> anyhow::Result<Figures> {
    let created = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (created, api, ok) = (created.clone(), outhook.api(), ok.to_owned());
        tasks.push(tokio::spawn(async move {
            let me = api;
            let mut i = worker;
            while i < hooks {
                let entities = if i < matching { "table" } else { "dashboard" };
                me.create_webhook(&format!("hook{i}"), &ok, Some(batch), entities)
                    .await?;
                created.fetch_add(1, Ordering::Relaxed);
                i += 16;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Every worker up before the load starts: one lag line per webhook in /metrics.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = outhook
            .client
            .get(format!("{}/metrics", outhook.base))
            .send()
            .await?
            .text()
            .await?;
        if text.matches("outhook_webhook_lag_events{").count() >= hooks || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rx.reset();
    let total = 10_000;
    let started = Instant::now();
    let ingest = publish(outhook, total, 1, 32).await?;
    let expected = total * matching;
    rx.wait_for(expected, WORKLOAD_LIMIT).await;
    let (unique, arrivals, last) = {
        let s = rx.state.lock().unwrap();
        (s.seen.len(), s.arrivals, s.last)
    };
    let span = last.map_or(f64::NAN, |l| (l - started).as_secs_f64());
    let mut figures = vec![
        ("ingest_events_per_s", total as f64 / ingest),
        ("delivered_events_per_s", unique as f64 / span),
        ("duplicates", (arrivals as usize - unique) as f64),
        (
            "not_arrived_in_90s",
            (expected - unique.min(expected)) as f64,
        ),
    ];
    figures.extend(latency_figures(rx, None));
    Ok(figures)
}

async fn steady(
    outhook: &Outhook,
    rx: &Receiver,
    ok: &str,
    seconds: u64,
) -> anyhow::Result<Figures> {
    outhook
        .api()
        .create_webhook("steady", ok, Some(1), "table")
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rx.reset();
    let total = (seconds * 200) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let url = format!("{}/api/v1/events", outhook.base);
    let mut acks = Vec::with_capacity(total);
    for n in 0..total {
        tick.tick().await;
        let sent = Instant::now();
        let response = outhook
            .client
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&stamped(vec![event(n)]))
            .send()
            .await?;
        if response.status().as_u16() != 202 {
            bail!("publish answered {}", response.status());
        }
        acks.push(sent.elapsed().as_micros() as u64);
    }
    rx.wait_for(total, Duration::from_secs(30)).await;
    let mut figures = latency_figures(rx, None);
    // How long a publisher waits for its 202 (the event is committed by then).
    acks.sort_unstable();
    figures.push(("ack_p50_ms", percentile(&acks, 0.50)));
    figures.push(("ack_p99_ms", percentile(&acks, 0.99)));
    figures.push((
        "not_arrived_in_30s",
        (total - rx.unique().min(total)) as f64,
    ));
    Ok(figures)
}

/// W3: a slow endpoint beside a fast one. The workload names no batch size, so both
/// webhooks get the default; `w3b1` runs it with batchSize 1.
async fn isolation(
    outhook: &Outhook,
    rx: &Receiver,
    ok: &str,
    slow: &str,
    batch: Option<u32>,
) -> anyhow::Result<Figures> {
    outhook
        .api()
        .create_webhook("slow", slow, batch, "table")
        .await?;
    outhook
        .api()
        .create_webhook("fast", ok, batch, "table")
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rx.reset();
    let total = 2000;
    publish(outhook, total, 1, 16).await?;
    let deadline = Instant::now() + WORKLOAD_LIMIT;
    while rx
        .state
        .lock()
        .unwrap()
        .latency
        .get("fast")
        .map_or(0, Vec::len)
        < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut figures = latency_figures(rx, Some("fast"));
    figures.push((
        "slow_delivered",
        rx.state
            .lock()
            .unwrap()
            .latency
            .get("slow")
            .map_or(0, Vec::len) as f64,
    ));
    Ok(figures)
}

async fn catch_up(outhook: &Outhook, rx: &Receiver, ok: &str) -> anyhow::Result<Figures> {
    let id = outhook
        .api()
        .create_webhook("behind", ok, Some(100), "table")
        .await?;
    let patch = |enabled: bool| json!([{"op": "replace", "path": "/enabled", "value": enabled}]);
    outhook
        .api()
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(patch(false)),
        )
        .await?;
    let total = 100_000;
    publish(outhook, total, 100, 8).await?;
    rx.reset();
    let started = Instant::now();
    outhook
        .api()
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(patch(true)),
        )
        .await?;
    rx.wait_for(total, WORKLOAD_LIMIT).await;
    let took = rx
        .state
        .lock()
        .unwrap()
        .last
        .map_or(f64::NAN, |l| (l - started).as_secs_f64());
    Ok(vec![
        ("catch_up_s", took),
        ("catch_up_events_per_s", rx.unique() as f64 / took),
        (
            "not_arrived_in_90s",
            (total - rx.unique().min(total)) as f64,
        ),
    ])
}

async fn bulk(outhook: &Outhook) -> anyhow::Result<Figures> {
    let total = 100_000;
    let took = publish(outhook, total, 100, 8).await?;
    Ok(vec![("committed_events_per_s", total as f64 / took)])
}

/// A stream of W10's own on the NATS server: its name, subjects and outhook's consumer.
struct Bus {
    js: async_nats::jetstream::Context,
    stream: String,
    subject: String,
}

impl Bus {
    async fn new(url: &str) -> anyhow::Result<Self> {
        let client = async_nats::connect(url)
            .await
            .with_context(|| format!("W10 needs nats-server with JetStream at {url}"))?;
        let id = Uuid::new_v4().simple().to_string();
        Ok(Self {
            js: async_nats::jetstream::new(client),
            stream: format!("OUTHOOK_BENCH_{id}"),
            subject: format!("outhook.bench.{id}"),
        })
    }

    /// The settings that point outhook at the stream.
    fn env(&self, url: &str) -> Vec<(String, String)> {
        vec![
            ("OUTHOOK_NATS_URL".into(), url.into()),
            ("OUTHOOK_NATS_STREAM".into(), self.stream.clone()),
            (
                "OUTHOOK_NATS_SUBJECTS".into(),
                format!("{}.>", self.subject),
            ),
            ("OUTHOOK_NATS_CONSUMER".into(), "outhook_bench".into()),
        ]
    }

    async fn remove(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

/// outhook's `outhook_events_ingested_total`: events committed to the log.
async fn committed(outhook: &Outhook) -> anyhow::Result<u64> {
    let text = outhook
        .client
        .get(format!("{}/metrics", outhook.base))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("outhook_events_ingested_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("/metrics has no outhook_events_ingested_total")
}

/// W10: 100,000 events published to JetStream in messages of 100 (8 publishers, each
/// waiting for JetStream's acknowledgement), timed from the first publish until outhook
/// has committed all of them to the log.
async fn bus_ingest(outhook: &Outhook, bus: &Bus) -> anyhow::Result<Figures> {
    let total = 100_000;
    let per_message = 100;
    // outhook creates the stream when it starts reading; wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while bus.js.get_stream(&bus.stream).await.is_err() {
        if Instant::now() > deadline {
            bail!("outhook did not create the stream {}", bus.stream);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (next, js, subject) = (
            next.clone(),
            bus.js.clone(),
            format!("{}.tables", bus.subject),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(per_message, Ordering::Relaxed);
                if from >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let events = (from..(from + per_message).min(total)).map(event).collect();
                let payload = serde_json::to_vec(&stamped(events))?;
                js.publish(subject.clone(), payload.into()).await?.await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let published = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + WORKLOAD_LIMIT;
    let mut done = committed(outhook).await?;
    while (done as usize) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        done = committed(outhook).await?;
    }
    let took = started.elapsed().as_secs_f64();
    Ok(vec![
        ("published_s", published),
        ("committed_s", took),
        ("committed_events_per_s", done as f64 / took),
        (
            "not_committed_in_90s",
            (total - (done as usize).min(total)) as f64,
        ),
    ])
}

async fn run(
    binary: &PathBuf,
    args: &Args,
    backend: &str,
    workload: &str,
    rx: &Receiver,
    base: &str,
) -> anyhow::Result<Figures> {
    let db = Db::fresh(backend, &args.postgres).await?;
    let bus = if workload == "w10" {
        Some(Bus::new(&args.nats).await?)
    } else {
        None
    };
    let mut env = args.server_env.clone();
    if let Some(bus) = &bus {
        env.extend(bus.env(&args.nats));
    }
    let outhook = Outhook::start(binary, &db.url, &env).await?;
    let ok = format!("{base}/ok");
    let result = match workload {
        "w1" => fan_out(&outhook, rx, &ok, 1, 10, 10).await,
        "w1b10" => fan_out(&outhook, rx, &ok, 10, 10, 10).await,
        "w2" => steady(&outhook, rx, &ok, args.w2_seconds).await,
        "w3" => isolation(&outhook, rx, &ok, &format!("{base}/slow"), None).await,
        "w3b1" => isolation(&outhook, rx, &ok, &format!("{base}/slow"), Some(1)).await,
        "w4" => fan_out(&outhook, rx, &ok, 1, 10_000, 10).await,
        "w5" => catch_up(&outhook, rx, &ok).await,
        "w6" => bulk(&outhook).await,
        "w10" => match &bus {
            Some(bus) => bus_ingest(&outhook, bus).await,
            None => unreachable!("W10 has its stream"),
        },
        other => Err(anyhow::anyhow!("unknown workload {other}")),
    };
    let mut figures = result?;
    figures.push(("peak_rss_mb", outhook.peak_rss_mb()));
    figures.push(("cpu_s", outhook.cpu_seconds()));
    outhook.stop();
    db.remove().await;
    if let Some(bus) = bus {
        bus.remove().await;
    }
    Ok(figures)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The HTTP client shares outhook's build of reqwest, which brings no TLS provider.
    outhook::app::install_crypto_provider();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("building outhook (release)…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "outhook", "--bin", "outhook"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("building outhook failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let binary = target.join("release").join("outhook");

    let rx = Receiver::default();
    let addr = rx.clone().start().await?;
    let base = format!("http://{addr}");
    let ceiling = receiver_ceiling(&format!("{base}/ok")).await;
    eprintln!("receiver ceiling: {ceiling:.0} requests/s");
    let pg_commit_us = if args.backend == "sqlite" {
        f64::NAN
    } else {
        postgres_commit_us(&args.postgres).await?
    };
    let disk_sync_us = disk_sync_us()?;
    eprintln!(
        "one durable commit: PostgreSQL {pg_commit_us:.0} µs, disk write+fdatasync {disk_sync_us:.0} µs"
    );
    let backends: Vec<&str> = match args.backend.as_str() {
        "both" => vec!["postgres", "sqlite"],
        one => vec![one],
    };
    let mut results = Vec::new();
    println!("{:<7} {:<9} figures", "work", "backend");
    for backend in &backends {
        for workload in args
            .workloads
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
        {
            rx.reset();
            let figures = run(&binary, &args, backend, workload, &rx, &base).await?;
            let line: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v:.2}")).collect();
            println!("{workload:<7} {backend:<9} {}", line.join(" "));
            let mut entry = serde_json::Map::new();
            entry.insert("workload".into(), json!(workload));
            entry.insert("backend".into(), json!(backend));
            for (k, v) in &figures {
                entry.insert((*k).into(), json!(v));
            }
            results.push(Value::Object(entry));
        }
    }
    let report = json!({
        "receiver_ceiling_requests_per_s": ceiling,
        "postgres_commit_us": pg_commit_us,
        "disk_sync_us": disk_sync_us,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "results": results,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", args.json.display());
    Ok(())
}
