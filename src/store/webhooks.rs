//! Webhooks as stored: the user-written resource with its version, and the lists the API pages through.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;
use crate::domain::change::Version;
use crate::domain::webhook::{Webhook, WebhookStatus, WebhookType};

/// The webhook resource. Its delivery state is the dispatcher's ([`DeliveryState`](super::DeliveryState)).
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new webhook; `Conflict` when its name is taken.
    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError>;

    /// Replaces the user-written fields of a webhook whose stored version is still
    /// `expected`; `Stale` otherwise, `Conflict` when a rename hits a taken name. The
    /// delivery state is the dispatcher's: it is only written when `resume` is set, which
    /// takes `status` and `failureDetails` from `webhook` and clears the scheduled retry, so
    /// that the pending batch is sent again at once.
    async fn update_webhook(
        &self,
        webhook: &Webhook,
        expected: Version,
        resume: bool,
    ) -> Result<(), StoreError>;

    async fn webhook(&self, id: Uuid) -> Result<Option<Webhook>, StoreError>;
    async fn webhook_by_name(&self, name: &str) -> Result<Option<Webhook>, StoreError>;

    async fn list_webhooks(&self, query: &WebhookQuery) -> Result<Page<Webhook>, StoreError>;
    /// Removes a webhook for good; false when there was none.
    async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError>;
}

/// Which soft-deleted webhooks a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Include {
    #[default]
    NonDeleted,
    Deleted,
    All,
}

impl Include {
    /// The `deleted` values this choice lets through, as the (low, high) pair the SQL uses.
    pub(in crate::store) fn deleted_range(self) -> (bool, bool) {
        match self {
            Include::NonDeleted => (false, false),
            Include::Deleted => (true, true),
            Include::All => (false, true),
        }
    }
}

/// A position in a list ordered by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    After(String),
    Before(String),
}

/// A webhook list request.
#[derive(Debug, Clone)]
pub struct WebhookQuery {
    pub status: Option<WebhookStatus>,
    pub webhook_type: Option<WebhookType>,
    pub include: Include,
    /// Only webhooks whose delivery is failing: enabled and neither `active` nor
    /// `disabled`.
    pub failing: bool,
    /// Only webhooks whose name contains this text (ignoring case).
    pub name_contains: Option<String>,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

/// One page of a list, with the names to continue from in either direction.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub total: i64,
}

impl Page<Webhook> {
    /// Builds a page from up to `limit + 1` rows fetched in the cursor's direction
    /// (descending for `Before`); the extra row only says that more exist.
    pub(in crate::store) fn assemble(
        mut rows: Vec<Webhook>,
        limit: u32,
        cursor: Option<&Cursor>,
        total: i64,
    ) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let name = |w: Option<&Webhook>| w.map(|w| w.spec.name.as_str().to_owned());
        match cursor {
            Some(Cursor::Before(_)) => {
                rows.reverse();
                let before = if more { name(rows.first()) } else { None };
                let after = name(rows.last());
                Page {
                    items: rows,
                    before,
                    after,
                    total,
                }
            }
            Some(Cursor::After(_)) => {
                let before = name(rows.first());
                let after = if more { name(rows.last()) } else { None };
                Page {
                    items: rows,
                    before,
                    after,
                    total,
                }
            }
            None => {
                let after = if more { name(rows.last()) } else { None };
                Page {
                    items: rows,
                    before: None,
                    after,
                    total,
                }
            }
        }
    }
}
