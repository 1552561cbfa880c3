//! A small migration runner. sqlx's own takes a PostgreSQL advisory lock; outhook uses only
//! row locks (SPEC §8), so concurrent starts serialize on a lock row instead.

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

use super::StoreError;
use crate::clock::{Clock, SystemClock};

/// One schema step, embedded in the binary.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "webhooks_and_tokens",
        sql: include_str!("../../migrations/postgres/0001_webhooks_and_tokens.sql"),
    },
    Migration {
        version: 2,
        name: "event_log_and_delivery",
        sql: include_str!("../../migrations/postgres/0002_event_log_and_delivery.sql"),
    },
    Migration {
        version: 3,
        name: "previous_secret",
        sql: include_str!("../../migrations/postgres/0003_previous_secret.sql"),
    },
    Migration {
        version: 4,
        name: "time_indexes_brin",
        sql: include_str!("../../migrations/postgres/0004_time_indexes_brin.sql"),
    },
    Migration {
        version: 5,
        name: "instance_identity",
        sql: include_str!("../../migrations/postgres/0005_instance_identity.sql"),
    },
    Migration {
        version: 6,
        name: "log_retention",
        sql: include_str!("../../migrations/postgres/0006_log_retention.sql"),
    },
    Migration {
        version: 7,
        name: "console",
        sql: include_str!("../../migrations/postgres/0007_console.sql"),
    },
    Migration {
        version: 8,
        name: "token_signing_secret",
        sql: include_str!("../../migrations/postgres/0008_token_signing_secret.sql"),
    },
];

pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "webhooks_and_tokens",
        sql: include_str!("../../migrations/sqlite/0001_webhooks_and_tokens.sql"),
    },
    Migration {
        version: 2,
        name: "event_log_and_delivery",
        sql: include_str!("../../migrations/sqlite/0002_event_log_and_delivery.sql"),
    },
    Migration {
        version: 3,
        name: "previous_secret",
        sql: include_str!("../../migrations/sqlite/0003_previous_secret.sql"),
    },
    Migration {
        version: 4,
        name: "instance_identity",
        sql: include_str!("../../migrations/sqlite/0004_instance_identity.sql"),
    },
    Migration {
        version: 5,
        name: "log_retention",
        sql: include_str!("../../migrations/sqlite/0005_log_retention.sql"),
    },
    Migration {
        version: 6,
        name: "console",
        sql: include_str!("../../migrations/sqlite/0006_console.sql"),
    },
    Migration {
        version: 7,
        name: "token_signing_secret",
        sql: include_str!("../../migrations/sqlite/0007_token_signing_secret.sql"),
    },
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS outhook_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Version 0 is never a migration: its row is what concurrent runners lock.
const LOCK_ROW: &str = "INSERT INTO outhook_migrations (version, name, checksum, applied_at)
    VALUES (0, 'lock', '', 0) ON CONFLICT (version) DO NOTHING";

pub async fn run_postgres(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    // Two processes creating the table at once can collide in the catalog; the second
    // attempt finds the table there.
    if sqlx::query(CREATE_TABLE).execute(pool).await.is_err() {
        sqlx::query(CREATE_TABLE).execute(pool).await?;
    }
    sqlx::query(LOCK_ROW).execute(pool).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT version FROM outhook_migrations WHERE version = 0 FOR UPDATE")
        .execute(&mut *tx)
        .await?;
    let applied =
        sqlx::query("SELECT version, name, checksum FROM outhook_migrations WHERE version > 0")
            .fetch_all(&mut *tx)
            .await?;
    for m in pending(POSTGRES, applied.iter().map(|r| (r.get(0), r.get(2))))? {
        sqlx::raw_sql(AssertSqlSafe(m.sql))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO outhook_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum())
            .bind(SystemClock.now_ms())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn run_sqlite(pool: &sqlx::SqlitePool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    // BEGIN IMMEDIATE takes the database's write lock up front: one runner at a time.
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let result = async {
        sqlx::query(CREATE_TABLE).execute(&mut *conn).await?;
        let applied = sqlx::query("SELECT version, name, checksum FROM outhook_migrations WHERE version > 0")
            .fetch_all(&mut *conn)
            .await?;
        for m in pending(SQLITE, applied.iter().map(|r| (r.get(0), r.get(2))))? {
            sqlx::raw_sql(AssertSqlSafe(m.sql)).execute(&mut *conn).await?;
            sqlx::query("INSERT INTO outhook_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
                .bind(m.version)
                .bind(m.name)
                .bind(m.checksum())
                .bind(SystemClock.now_ms())
                .execute(&mut *conn)
                .await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    sqlx::raw_sql(end).execute(&mut *conn).await?;
    result
}

/// The migrations not yet applied, after checking that applied ones were not edited.
fn pending(
    all: &[Migration],
    applied: impl Iterator<Item = (i64, String)>,
) -> Result<Vec<&Migration>, StoreError> {
    let applied: std::collections::HashMap<i64, String> = applied.collect();
    let mut todo = Vec::new();
    for m in all {
        match applied.get(&m.version) {
            Some(sum) if *sum != m.checksum() => {
                return Err(StoreError::MigrationChanged {
                    version: m.version,
                    name: m.name.into(),
                });
            }
            Some(_) => {}
            None => todo.push(m),
        }
    }
    Ok(todo)
}
