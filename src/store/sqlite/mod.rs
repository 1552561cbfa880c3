//! The SQLite backend: the embedded default, one file in the working directory.
//!
//! Durability is not traded for speed: WAL with `synchronous=FULL`, so a committed write
//! survives a crash of the process or of the machine.

mod dispatch;
mod log;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::{Store, StoreError, migrate};

/// SQLite keeps ids as hyphenated text.
type Id = Hyphenated;

pub struct SqliteStore {
    /// Connections that read (WAL lets them run beside the writer).
    pub(super) pool: SqlitePool,
    /// The one connection that writes. SQLite lets one transaction write at a time; with
    /// several writing connections, the one that finds the file locked sleeps and tries
    /// again (1, 2, 5, 10… ms), which is what the event appends and the dispatcher's
    /// records kept doing to each other. One connection makes them queue in the process.
    pub(super) writer: SqlitePool,
    /// Copies the write-ahead log into the database file in the background.
    checkpointer: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The log size (pages of 4 KiB) at which a commit copies it into the database itself, in
/// case the background checkpoint falls behind (SQLite's default is 1,000).
const CHECKPOINT_AT_PAGES: &str = "10000";

impl SqliteStore {
    /// Connects and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // A commit that finds the log over the threshold copies it into the database file
        // and syncs that too before it returns: with SQLite's default threshold, every
        // twentieth append of W6 waited for it. The writer leaves that to a checkpoint in
        // the background, which does not hold up commits.
        let writer = open(
            1,
            options
                .clone()
                .pragma("wal_autocheckpoint", CHECKPOINT_AT_PAGES),
        )
        .await?;
        migrate::run_sqlite(&writer).await?;
        let pool = open(4, options).await?;
        let checkpointer = tokio::spawn(checkpoint(pool.clone()));
        Ok(Self {
            pool,
            writer,
            checkpointer,
        })
    }
}

/// How long a statement waits for a pooled connection (the writer is one connection,
/// shared by the group commits and the API's writes, each of which takes milliseconds).
/// Past it the API answers 503 with `Retry-After` rather than keep the request waiting.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pool of `connections` on the file. Opening a connection sets WAL mode, which on a new
/// file takes a lock SQLite does not wait for: instances starting at once on a new file
/// got "database is locked", and now go again shortly.
async fn open(connections: u32, options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let mut tries = 0;
    loop {
        // No ping before each acquire (the default): an embedded file cannot drop a
        // connection, and the ping is a round trip to the connection's thread.
        let opened = SqlitePoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await;
        match opened {
            Err(sqlx::Error::Database(db))
                if tries < 200 && matches!(db.code().as_deref(), Some("5" | "6")) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            opened => return opened,
        }
    }
}

impl SqliteStore {
    /// A transaction that holds the write lock from its first statement (`BEGIN
    /// IMMEDIATE`). A deferred one takes the lock at its first write, and when another
    /// process (a second store on the same file) committed in between, SQLite fails it at
    /// once ("database is locked") instead of waiting.
    async fn write_transaction(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Copies committed pages from the log into the database file now and then (PASSIVE: it
/// never waits for, nor holds up, the writer or the readers), so that the log stays short.
async fn checkpoint(pool: SqlitePool) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %err, "SQLite checkpoint failed; the next commit over the threshold does it");
        }
    }
}

impl SqliteStore {
    fn reader(&self) -> &SqlitePool {
        &self.pool
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }
}

super::shared::shared_parts!(SqliteStore, Id, "instr");

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// One process owns a SQLite file in practice; other processes' changes are found by polling.
    async fn listen(
        &self,
        _events: std::sync::Arc<dyn Fn(i64) + Send + Sync>,
        _webhooks: tokio::sync::mpsc::UnboundedSender<Uuid>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        stop.cancelled().await;
    }

    async fn announce_webhook_change(&self, _id: Uuid) -> Result<(), StoreError> {
        Ok(())
    }
}
