//! The PostgreSQL backend: production, and shared by several `outhook serve` instances.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::rows::{TokenRow, WebhookRow};
use super::{Cursor, Page, Store, StoreError, WebhookQuery, migrate, unique_as_conflict};
use crate::clock::Millis;
use crate::domain::change::Version;
use crate::domain::token::{Role, Token};
use crate::domain::webhook::Webhook;

pub struct PgStore {
    pool: PgPool,
}

const WEBHOOK_COLUMNS: &str = "id, name, webhook_type, status, enabled, deleted, version, updated_at, \
     updated_by, spec, secret_key, change_description, failure_details";

impl PgStore {
    /// Connects and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        migrate::run_postgres(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn webhook_from_row(r: &PgRow) -> Result<Webhook, StoreError> {
    WebhookRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        webhook_type: r.try_get("webhook_type")?,
        status: r.try_get("status")?,
        enabled: r.try_get("enabled")?,
        deleted: r.try_get("deleted")?,
        version: r.try_get("version")?,
        updated_at: r.try_get("updated_at")?,
        updated_by: r.try_get("updated_by")?,
        spec: r.try_get("spec")?,
        secret_key: r.try_get("secret_key")?,
        change_description: r.try_get("change_description")?,
        failure_details: r.try_get("failure_details")?,
    }
    .into_webhook()
}

fn token_from_row(r: &PgRow) -> Result<Token, StoreError> {
    TokenRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        hash: r.try_get("token_hash")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        revoked_at: r.try_get("revoked_at")?,
    }
    .into_token()
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let w = WebhookRow::from_webhook(webhook);
        sqlx::query(
            "INSERT INTO webhooks (id, name, webhook_type, status, enabled, deleted, version, updated_at, \
             updated_by, spec, secret_key, change_description, failure_details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(w.id)
        .bind(&w.name)
        .bind(w.webhook_type)
        .bind(&w.status)
        .bind(w.enabled)
        .bind(w.deleted)
        .bind(w.version)
        .bind(w.updated_at)
        .bind(&w.updated_by)
        .bind(&w.spec)
        .bind(&w.secret_key)
        .bind(&w.change_description)
        .bind(&w.failure_details)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_as_conflict(e, "webhook name"))?;
        Ok(())
    }

    async fn update_webhook(&self, webhook: &Webhook, expected: Version) -> Result<(), StoreError> {
        let w = WebhookRow::from_webhook(webhook);
        let done = sqlx::query(
            "UPDATE webhooks SET name = $2, webhook_type = $3, status = $4, enabled = $5, deleted = $6, \
             version = $7, updated_at = $8, updated_by = $9, spec = $10, secret_key = $11, \
             change_description = $12, failure_details = $13 WHERE id = $1 AND version = $14",
        )
        .bind(w.id)
        .bind(&w.name)
        .bind(w.webhook_type)
        .bind(&w.status)
        .bind(w.enabled)
        .bind(w.deleted)
        .bind(w.version)
        .bind(w.updated_at)
        .bind(&w.updated_by)
        .bind(&w.spec)
        .bind(&w.secret_key)
        .bind(&w.change_description)
        .bind(&w.failure_details)
        .bind(expected.tenths() as i32)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_as_conflict(e, "webhook name"))?;
        if done.rows_affected() == 0 {
            Err(StoreError::Stale)
        } else {
            Ok(())
        }
    }

    async fn webhook(&self, id: Uuid) -> Result<Option<Webhook>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(webhook_from_row)
            .transpose()
    }

    async fn webhook_by_name(&self, name: &str) -> Result<Option<Webhook>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE name = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(webhook_from_row)
            .transpose()
    }

    async fn list_webhooks(&self, q: &WebhookQuery) -> Result<Page<Webhook>, StoreError> {
        // Filters are bound as parameters; only the fixed ordering clause varies.
        const FILTER: &str = "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR webhook_type = $2) \
             AND deleted IN ($3, $4)";
        let (order, cursor) = match &q.cursor {
            Some(Cursor::Before(name)) => ("AND name < $5 ORDER BY name DESC", Some(name.as_str())),
            Some(Cursor::After(name)) => ("AND name > $5 ORDER BY name ASC", Some(name.as_str())),
            None => ("AND $5::text IS NULL ORDER BY name ASC", None),
        };
        let (low, high) = q.include.deleted_range();
        let status = q.status.map(|s| s.as_str());
        let kind = q.webhook_type.map(|t| t.as_str());
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE {FILTER} {order} LIMIT $6");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status)
            .bind(kind)
            .bind(low)
            .bind(high)
            .bind(cursor)
            .bind(i64::from(q.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(webhook_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM webhooks WHERE {FILTER}"
        )))
        .bind(status)
        .bind(kind)
        .bind(low)
        .bind(high)
        .fetch_one(&self.pool)
        .await?;
        Ok(Page::assemble(items, q.limit, q.cursor.as_ref(), total))
    }

    async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_token(&self, t: &Token) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.id)
        .bind(t.name.as_str())
        .bind(t.role.as_str())
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(&t.created_by)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_as_conflict(e, "token name"))?;
        Ok(())
    }

    async fn upsert_token(&self, t: &Token) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL) \
             ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, token_hash = EXCLUDED.token_hash, \
             revoked_at = NULL",
        )
        .bind(t.id)
        .bind(t.name.as_str())
        .bind(t.role.as_str())
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(&t.created_by)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_as_conflict(e, "token"))?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>, StoreError> {
        sqlx::query("SELECT * FROM api_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
        sqlx::query("SELECT * FROM api_tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn revoke_token(&self, id: Uuid, at: Millis) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_live_tokens(&self, role: Role) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_tokens WHERE role = $1 AND revoked_at IS NULL",
        )
        .bind(role.as_str())
        .fetch_one(&self.pool)
        .await?)
    }
}
