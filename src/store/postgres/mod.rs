//! The PostgreSQL backend: production, and shared by several `outhook serve` instances.

mod dispatch;
mod log;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::{Store, StoreError, migrate};

/// A pooled connection idle this long is pinged before it is used again.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(10);

pub struct PgStore {
    pub(super) pool: PgPool,
    /// The connections of the two group-commit writers (event appends and the dispatcher's
    /// records): one statement shape each, run thousands of times a second.
    writers: PgPool,
    /// Names this store in its notifications, so that its listener passes over its own:
    /// this instance routes its appends as they commit and applies its webhook changes at
    /// once. (With 10,000 webhooks created, reading each change back kept the instance
    /// busy long after.)
    origin: Uuid,
}

impl PgStore {
    /// Connects and runs pending migrations. A database that does not answer yet (one
    /// starting next to this instance) is waited for, up to [`STARTUP_WAIT`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let started = tokio::time::Instant::now();
        loop {
            match Self::open(&options).await {
                Err(err) if err.is_unavailable() && started.elapsed() < STARTUP_WAIT => {
                    tracing::info!(error = %err, "the database does not answer yet; waiting for it");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                opened => return opened,
            }
        }
    }

    async fn open(options: &PgConnectOptions) -> Result<Self, StoreError> {
        let pool = pool_options(16).connect_with(options.clone()).await?;
        // The writers' statements take arrays, whose length PostgreSQL only knows when it
        // plans for the values at hand. With thousands of webhooks it then found a plan for
        // the values cheaper than the generic one and planned every execution again (a
        // fifth of its CPU in the W4 benchmark). Their generic plans are the right ones
        // whatever the values, so these connections always use them.
        let writers = pool_options(4)
            .connect_with(
                options
                    .clone()
                    .options([("plan_cache_mode", "force_generic_plan")]),
            )
            .await?;
        migrate::run_postgres(&pool).await?;
        Ok(Self {
            pool,
            writers,
            origin: Uuid::new_v4(),
        })
    }
}

/// How long `connect` waits for a database that does not answer yet.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// How long a statement waits for a pooled connection. While the database is unreachable
/// every new connection is refused, and the pool goes on trying until this runs out: it
/// is what a request waits before its 503, and it keeps that answer within a second (it
/// was 10 s, and then a 500). A busy pool hands a connection over in well under a
/// millisecond per waiting statement, so this is only reached when something is wrong.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

/// By default every acquire pings the server first: one more round trip before each
/// statement, which cost the dispatcher's group commit more than its statement did. A
/// connection in steady use is known to be alive; one idle for a while (the server or a
/// proxy may have dropped it) is still checked.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl PgStore {
    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// The API's writes; the group commits have pools of their own (`writers`).
    fn writer(&self) -> &PgPool {
        &self.pool
    }
}

super::shared::shared_parts!(PgStore, Uuid, "strpos");

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn listen(
        &self,
        events: Arc<dyn Fn(i64) + Send + Sync>,
        webhooks: tokio::sync::mpsc::UnboundedSender<Uuid>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        while !stop.is_cancelled() {
            let connected = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
                listener
                    .listen_all(["outhook_events", "outhook_webhooks"])
                    .await?;
                // Anything committed while we were not listening is found by the next read.
                events(i64::MAX);
                let me = self.origin.to_string();
                loop {
                    let note = listener.recv().await?;
                    // "<origin> <log head>" or "<origin> <webhook id>".
                    let Some((origin, what)) = note.payload().split_once(' ') else {
                        continue;
                    };
                    if origin == me {
                        continue;
                    }
                    match note.channel() {
                        "outhook_events" => events(what.parse().unwrap_or(i64::MAX)),
                        _ => {
                            if let Ok(id) = Uuid::parse_str(what) {
                                let _ = webhooks.send(id);
                            }
                        }
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                result = connected => {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "LISTEN connection lost; polling until it is back");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                _ = stop.cancelled() => {}
            }
        }
    }

    async fn announce_webhook_change(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify('outhook_webhooks', $1)")
            .bind(format!("{} {id}", self.origin))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
