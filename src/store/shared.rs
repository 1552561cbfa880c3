//! The parts of the contract both backends serve with the same statements: webhooks, tokens
//! and the delivery log. [`shared_parts!`] implements them for a backend, given how it
//! stores a UUID and its `reader()` and `writer()` pools (SQLite writes through one
//! connection; PostgreSQL reads and writes through one pool).

/// Implements [`WebhookStore`](super::WebhookStore), [`TokenStore`](super::TokenStore) and
/// [`DeliveryLog`](super::DeliveryLog) for `$store`, whose ids are stored as `$id` and whose
/// dialect finds a text in another with the function `$position` (see `sql::WebhookList`).
macro_rules! shared_parts {
    ($store:ty, $id:ty, $position:literal) => {
        // In a block of its own, so that its imports stay out of the backend's module.
        const _: () = {
            use async_trait::async_trait;
            use uuid::Uuid;

            use $crate::clock::Millis;
            use $crate::domain::change::Version;
            use $crate::domain::delivery::{AttemptRecord, DispatchState, Outcome};
            use $crate::domain::token::{Role, Token};
            use $crate::domain::webhook::Webhook;
            use $crate::store::rows::{
                AttemptRow, DispatchRow, TokenRow, WebhookRow, bind_token, bind_webhook,
            };
            use $crate::store::{
                Cursor, DeliveryLog, Page, StoreError, TokenStore, WebhookQuery, WebhookStore, sql,
                unique_as_conflict,
            };

            #[async_trait]
            impl WebhookStore for $store {
                #[tracing::instrument(skip_all, fields(webhook = %webhook.id))]
                async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
                    let w = WebhookRow::<$id>::from_webhook(webhook);
                    bind_webhook!(sqlx::query(sql::INSERT_WEBHOOK), &w)
                        .execute(self.writer())
                        .await
                        .map_err(|e| unique_as_conflict(e, "webhook name"))?;
                    Ok(())
                }

                #[tracing::instrument(skip_all, fields(webhook = %webhook.id))]
                async fn update_webhook(
                    &self,
                    webhook: &Webhook,
                    expected: Version,
                    resume: bool,
                ) -> Result<(), StoreError> {
                    let w = WebhookRow::<$id>::from_webhook(webhook);
                    let done = bind_webhook!(sqlx::query(sql::UPDATE_WEBHOOK), &w)
                        .bind(expected.tenths() as i32)
                        .bind(resume)
                        .execute(self.writer())
                        .await
                        .map_err(|e| unique_as_conflict(e, "webhook name"))?;
                    if done.rows_affected() == 0 {
                        Err(StoreError::Stale)
                    } else {
                        Ok(())
                    }
                }

                #[tracing::instrument(skip_all, fields(webhook = %id))]
                async fn webhook(&self, id: Uuid) -> Result<Option<Webhook>, StoreError> {
                    sqlx::query_as::<_, WebhookRow<$id>>(sql::WEBHOOK_BY_ID)
                        .bind(<$id>::from(id))
                        .fetch_optional(self.reader())
                        .await?
                        .map(WebhookRow::into_webhook)
                        .transpose()
                }

                #[tracing::instrument(skip_all)]
                async fn webhook_by_name(&self, name: &str) -> Result<Option<Webhook>, StoreError> {
                    sqlx::query_as::<_, WebhookRow<$id>>(sql::WEBHOOK_BY_NAME)
                        .bind(name)
                        .fetch_optional(self.reader())
                        .await?
                        .map(WebhookRow::into_webhook)
                        .transpose()
                }

                #[tracing::instrument(skip_all)]
                async fn list_webhooks(
                    &self,
                    q: &WebhookQuery,
                ) -> Result<Page<Webhook>, StoreError> {
                    let (low, high) = q.include.deleted_range();
                    let status = q.status.map(|s| s.as_str());
                    let kind = q.webhook_type.map(|t| t.as_str());
                    let cursor = q.cursor.as_ref().map(|c| match c {
                        Cursor::Before(name) | Cursor::After(name) => name.as_str(),
                    });
                    let name = q.name_contains.as_deref();
                    static LIST: std::sync::OnceLock<sql::WebhookList> = std::sync::OnceLock::new();
                    let list = LIST.get_or_init(|| sql::WebhookList::new($position));
                    let items = sqlx::query_as::<_, WebhookRow<$id>>(sqlx::AssertSqlSafe(
                        list.page(q.cursor.as_ref()),
                    ))
                    .bind(status)
                    .bind(kind)
                    .bind(low)
                    .bind(high)
                    .bind(q.failing)
                    .bind(name)
                    .bind(cursor)
                    .bind(i64::from(q.limit) + 1)
                    .fetch_all(self.reader())
                    .await?
                    .into_iter()
                    .map(WebhookRow::into_webhook)
                    .collect::<Result<Vec<_>, _>>()?;
                    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(list.count()))
                        .bind(status)
                        .bind(kind)
                        .bind(low)
                        .bind(high)
                        .bind(q.failing)
                        .bind(name)
                        .fetch_one(self.reader())
                        .await?;
                    Ok(Page::assemble(items, q.limit, q.cursor.as_ref(), total))
                }

                #[tracing::instrument(skip_all, fields(webhook = %id))]
                async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError> {
                    let done = sqlx::query(sql::DELETE_WEBHOOK)
                        .bind(<$id>::from(id))
                        .execute(self.writer())
                        .await?;
                    Ok(done.rows_affected() > 0)
                }
            }

            #[async_trait]
            impl TokenStore for $store {
                #[tracing::instrument(skip_all, fields(token = %t.id))]
                async fn insert_token(&self, t: &Token) -> Result<(), StoreError> {
                    let row = TokenRow::<$id>::from_token(t);
                    bind_token!(sqlx::query(sql::INSERT_TOKEN), &row)
                        .bind(&row.signing_secret)
                        .execute(self.writer())
                        .await
                        .map_err(|e| unique_as_conflict(e, "token name"))?;
                    Ok(())
                }

                #[tracing::instrument(skip_all, fields(token = %t.id))]
                async fn upsert_token(&self, t: &Token) -> Result<(), StoreError> {
                    let mut row = TokenRow::<$id>::from_token(t);
                    row.revoked_at = None;
                    bind_token!(sqlx::query(sql::UPSERT_TOKEN), &row)
                        .execute(self.writer())
                        .await
                        .map_err(|e| unique_as_conflict(e, "token"))?;
                    Ok(())
                }

                async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>, StoreError> {
                    sqlx::query_as::<_, TokenRow<$id>>(sql::TOKEN_BY_HASH)
                        .bind(hash)
                        .fetch_optional(self.reader())
                        .await?
                        .map(TokenRow::into_token)
                        .transpose()
                }

                async fn list_tokens(&self) -> Result<Vec<Token>, StoreError> {
                    sqlx::query_as::<_, TokenRow<$id>>(sql::TOKENS)
                        .fetch_all(self.reader())
                        .await?
                        .into_iter()
                        .map(TokenRow::into_token)
                        .collect()
                }

                #[tracing::instrument(skip_all, fields(token = %id))]
                async fn revoke_token(&self, id: Uuid, at: Millis) -> Result<bool, StoreError> {
                    let done = sqlx::query(sql::REVOKE_TOKEN)
                        .bind(<$id>::from(id))
                        .bind(at)
                        .execute(self.writer())
                        .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn count_live_tokens(&self, role: Role) -> Result<i64, StoreError> {
                    Ok(sqlx::query_scalar(sql::COUNT_LIVE_TOKENS)
                        .bind(role.as_str())
                        .fetch_one(self.reader())
                        .await?)
                }
            }

            #[async_trait]
            impl DeliveryLog for $store {
                #[tracing::instrument(skip_all, fields(webhook = %id))]
                async fn dispatch_state(
                    &self,
                    id: Uuid,
                ) -> Result<Option<DispatchState>, StoreError> {
                    sqlx::query_as::<_, DispatchRow>(sql::DISPATCH_STATE)
                        .bind(<$id>::from(id))
                        .fetch_optional(self.reader())
                        .await?
                        .map(DispatchRow::into_state)
                        .transpose()
                }

                #[tracing::instrument(skip_all, fields(webhook = %webhook))]
                async fn list_attempts(
                    &self,
                    webhook: Uuid,
                    outcome: Option<Outcome>,
                    limit: u32,
                    before: Option<i64>,
                ) -> Result<Vec<AttemptRecord>, StoreError> {
                    sqlx::query_as::<_, AttemptRow<$id>>(sql::ATTEMPTS)
                        .bind(<$id>::from(webhook))
                        .bind(outcome.map(|o| o.as_str()))
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(self.reader())
                        .await?
                        .into_iter()
                        .map(AttemptRow::into_record)
                        .collect()
                }
            }
        };
    };
}

/// Drops the bodies of up to `$limit` events ingested before `$before`, oldest first, in the
/// transaction `$tx`, reading where the last step got to with `$done_sql`; evaluates to how
/// many bodies went. The ids stay in the log, so that an eventId sent again is still
/// recognised.
macro_rules! drop_old_bodies {
    ($tx:expr, $done_sql:expr, $before:expr, $limit:expr) => {{
        let tx = $tx;
        let through: i64 = sqlx::query_scalar($done_sql).fetch_one(&mut **tx).await?;
        // The next events after those already done, up to the first one not old enough.
        let next: Vec<(i64, i64)> = sqlx::query_as($crate::store::sql::EVENTS_AFTER_BODIES)
            .bind(through)
            .bind($limit)
            .fetch_all(&mut **tx)
            .await?;
        match $crate::store::events::bodies_through(&next, $before) {
            Some(upto) => {
                let dropped = sqlx::query($crate::store::sql::DROP_BODIES)
                    .bind(through)
                    .bind(upto)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                sqlx::query($crate::store::sql::BODIES_DROPPED_THROUGH)
                    .bind(upto)
                    .execute(&mut **tx)
                    .await?;
                dropped
            }
            None => 0,
        }
    }};
}

pub(crate) use {drop_old_bodies, shared_parts};
