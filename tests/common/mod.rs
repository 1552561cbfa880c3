//! Test harness: every test gets a fresh database (a new PostgreSQL database, or a new
//! SQLite file) and, for API tests, the real app on an ephemeral port.
//!
//! PostgreSQL is reached through `OUTHOOK_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); a test fails, never skips, when it is
//! unreachable.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod pg_cluster;
pub mod receiver;

use std::path::PathBuf;
use std::sync::Arc;

use outhook::app::Running;
use outhook::clock::{Clock, ManualClock, SystemClock};
use outhook::config::{Cli, Command, ServeArgs};
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Runs each named `async fn(Backend)` once per backend, as `postgres::name` and `sqlite::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test($crate::common::Backend::Postgres).await })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test($crate::common::Backend::Sqlite).await })*
        }
    };
}

fn admin_url() -> String {
    std::env::var("OUTHOOK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is removed when dropped.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres {
        name: String,
    },
    Sqlite {
        path: PathBuf,
    },
    /// A second handle on a database another `TestDb` removes.
    None,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let admin = admin_url();
                let name = format!("outhook_test_{}", Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL is required for the tests ({admin}): {e}. Start it, or set OUTHOOK_TEST_DATABASE_URL")
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("creating a test database");
                let (base, _) = admin
                    .rsplit_once('/')
                    .expect("the admin URL names a database");
                Self {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { name },
                }
            }
            Backend::Sqlite => {
                let path = std::env::temp_dir()
                    .join(format!("outhook-test-{}.db", Uuid::new_v4().simple()));
                Self {
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::Sqlite { path },
                }
            }
        }
    }
}

impl TestDb {
    /// Another handle on the same database, for a second instance; removing it is left to
    /// the original.
    pub fn share(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            cleanup: Cleanup::None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Postgres { name } => {
                let name = name.clone();
                // Drop runs inside the test's runtime, which cannot block; use a thread of its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                                .execute(&mut conn)
                                .await;
                        }
                    })
                })
                .join();
            }
            Cleanup::None => {}
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// What delivery tests start with.
pub const DELIVERY_ARGS: [&str; 6] = [
    "--admin-token",
    ADMIN_TOKEN,
    "--allow-private",
    "127.0.0.0/8",
    "--poll-interval",
    "100ms",
];

/// The real app on 127.0.0.1:0 against a fresh database, with a manual clock.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub running: Option<Running>,
    pub db: TestDb,
}

pub fn serve_args(db_url: &str, extra: &[&str]) -> ServeArgs {
    let mut argv = vec![
        "outhook",
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        db_url,
    ];
    argv.extend_from_slice(extra);
    match <Cli as clap::Parser>::try_parse_from(argv)
        .expect("test arguments parse")
        .command
    {
        Command::Serve(args) => args,
        _ => unreachable!("serve was asked for"),
    }
}

impl TestApp {
    /// Starts with the configured admin token [`ADMIN_TOKEN`].
    /// Starts with the configured admin token [`ADMIN_TOKEN`], deliveries allowed to
    /// 127.0.0.0/8 (where test receivers listen), and a manual clock.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &DELIVERY_ARGS).await
    }

    pub async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        Self::start_on(TestDb::new(backend).await, extra, true).await
    }

    /// Starts on an existing database; `manual_clock` false runs on the real clock.
    pub async fn start_on(db: TestDb, extra: &[&str], manual_clock: bool) -> Self {
        // Logs go to the test's output (shown for failing tests); RUST_LOG sets the level.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "outhook=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let clock = ManualClock::new(1_700_000_000_000);
        let shared: Arc<dyn Clock> = if manual_clock {
            Arc::new(clock.clone())
        } else {
            Arc::new(SystemClock)
        };
        let running = outhook::app::start(&serve_args(&db.url, extra), shared)
            .await
            .expect("the app starts");
        Self {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
            clock,
            running: Some(running),
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("clean shutdown");
        }
    }

    /// Stops the app and hands back its database, to start another app on it.
    pub async fn stop_keep_db(mut self) -> TestDb {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("clean shutdown");
        }
        self.db
    }

    /// Creates a webhook (admin) and returns its JSON.
    pub async fn create_webhook(&self, body: Value) -> Value {
        let (status, created) = call(
            self.admin(reqwest::Method::POST, "/api/v1/webhooks")
                .json(&body),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        created
    }

    /// Publishes events (admin) and returns the answer; asserts 202.
    pub async fn publish(&self, events: Value) -> Value {
        let (status, answer) = call(
            self.admin(reqwest::Method::POST, "/api/v1/events")
                .json(&events),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        answer
    }

    pub async fn patch(&self, id: &str, ops: Value) -> Value {
        let (status, body) = call(
            self.admin(reqwest::Method::PATCH, &format!("/api/v1/webhooks/{id}"))
                .header("content-type", "application/json-patch+json")
                .body(ops.to_string()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits (at most 20 s) until webhook `id`'s delivery log holds `n` attempts; returns it.
    pub async fn wait_for_attempts(&self, id: &str, n: usize) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let log = self
                .get(&format!("/api/v1/webhooks/{id}/deliveries?limit=100"))
                .await;
            if log["data"].as_array().unwrap().len() >= n {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} attempts were not recorded: {log}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = call(self.admin(reqwest::Method::GET, path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

/// A ChangeEvent with a fresh id: `entityCreated`/… on an entity of `entity_type` named `name`.
pub fn event(event_type: &str, entity_type: &str, name: &str) -> Value {
    serde_json::json!({
        "eventId": Uuid::new_v4(),
        "eventType": event_type,
        "entity": {
            "id": Uuid::new_v4(),
            "type": entity_type,
            "name": name,
            "fullyQualifiedName": format!("svc.db.{name}")
        },
        "userName": "tester"
    })
}

/// A webhook body posting to `url`.
pub fn webhook(name: &str, url: &str, batch_size: u32, filters: Value) -> Value {
    serde_json::json!({
        "name": name,
        "webhookType": "Generic",
        "batchSize": batch_size,
        "eventFilters": filters,
        "webhookConfig": {"endpoint": url, "timeout": 5}
    })
}

/// Sends a request and returns status and JSON body (Null when empty).
pub async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the request reaches the app");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a readable body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}
