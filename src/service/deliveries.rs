//! What happened to a webhook's deliveries, and trying one out: the delivery log, where
//! delivery stands, a test message (for a saved webhook or an unsaved configuration), and
//! the metrics of this instance's dispatcher.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::health::DeliveryHealth;
use super::{Caller, Include, Result, Service, ServiceError};
use crate::clock::Millis;
use crate::dispatch::format::test_event;
use crate::domain::delivery::{AttemptRecord, DispatchState, ErrorKind, Outcome};
use crate::domain::event::EventFacts;
use crate::domain::filter::webhook_matches;
use crate::domain::webhook::{FailureDetails, Webhook, WebhookSpec, WebhookStatus};

/// The batch being delivered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub delivery_id: Uuid,
    pub event_ids: Vec<Uuid>,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Millis>,
}

/// Where a webhook's delivery stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    pub id: Uuid,
    pub name: String,
    pub status: WebhookStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_details: Option<FailureDetails>,
    /// Every event up to this log position was delivered or did not match.
    pub position: i64,
    /// The newest log position.
    pub log_head: i64,
    /// Matching events not delivered yet (the batch in flight included).
    pub pending_events: u64,
    /// True when there were too many to count exactly: `pendingEvents` is a lower bound.
    pub pending_is_lower_bound: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Millis>,
    /// The name of the instance delivering this webhook (`OUTHOOK_INSTANCE_NAME`, by
    /// default `<host name>:<pid>`); null while no live instance holds its lease.
    pub lease_holder: Option<String>,
    /// How long the oldest matching event not delivered yet has waited, in ms since its
    /// `timestamp`; null when nothing is pending.
    pub oldest_pending_age_ms: Option<i64>,
    /// Delivery attempts over the last hour and the last 24 hours.
    pub health: DeliveryHealth,
}

/// How a test message went.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestOutcome {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub request_bytes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A page of the delivery log, newest first.
pub struct AttemptPage {
    pub attempts: Vec<AttemptRecord>,
    /// The id to read older attempts below, when there are more.
    pub older: Option<i64>,
}

/// Log rows read at most to count pending events.
const PENDING_SCAN_LIMIT: u32 = 20_000;
/// Log rows read at a time to count pending events.
const PENDING_SCAN_PAGE: u32 = 1000;

/// Matching events not delivered yet, counted up to a bound.
struct Pending {
    events: u64,
    /// The count stopped at the bound: there are more.
    lower_bound: bool,
    /// The `timestamp` of the oldest of them.
    oldest_at: Option<Millis>,
}

/// An event's `timestamp` (ms), read from its stored body.
fn event_timestamp(body: &str) -> Option<Millis> {
    #[derive(serde::Deserialize)]
    struct Stamp {
        timestamp: Option<Millis>,
    }
    serde_json::from_str::<Stamp>(body).ok()?.timestamp
}

impl Service {
    /// A page of an undeleted webhook's delivery attempts, newest first: at most `limit`,
    /// with ids below `before`, of one outcome if given.
    pub async fn attempts(
        &self,
        webhook: Uuid,
        outcome: Option<Outcome>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<AttemptPage> {
        let webhook = self.webhook(webhook, Include::NonDeleted).await?;
        let mut attempts = self
            .store
            .list_attempts(webhook.id, outcome, limit + 1, before)
            .await?;
        let more = attempts.len() > limit as usize;
        attempts.truncate(limit as usize);
        let older = attempts.last().map(|a| a.id).filter(|_| more);
        Ok(AttemptPage { attempts, older })
    }

    /// Where an undeleted webhook's delivery stands.
    pub async fn delivery_status(&self, id: Uuid) -> Result<DeliveryStatus> {
        let webhook = self.webhook(id, Include::NonDeleted).await?;
        let state = self
            .store
            .dispatch_state(webhook.id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("webhook {id} not found")))?;
        let log_head = self.store.log_head().await?;
        let pending = self.pending(&webhook, &state, log_head).await?;
        let report = self.health_report(webhook.id).await?;
        let now = self.clock.now_ms();
        Ok(DeliveryStatus {
            id: webhook.id,
            name: webhook.spec.name.to_string(),
            status: webhook.shown_status(),
            failure_details: state.failure_details,
            position: state.cursor,
            log_head,
            pending_events: pending.events,
            pending_is_lower_bound: pending.lower_bound,
            in_flight: state.batch.map(|b| InFlight {
                delivery_id: b.delivery_id,
                event_ids: b.event_ids,
                attempts: b.attempts,
                next_attempt: state.next_attempt_at,
            }),
            last_success_at: state.last_success_at,
            lease_holder: self.dispatcher.lease_holder(webhook.id).await?,
            oldest_pending_age_ms: pending.oldest_at.map(|at| (now - at).max(0)),
            health: report.health,
        })
    }

    /// The pending batch's events and the matching ones after it up to `log_head`, read
    /// from where the webhook's worker reads on ([`DispatchState::read_from`]), with the
    /// webhook's filters; at most [`PENDING_SCAN_LIMIT`] log rows are read.
    async fn pending(
        &self,
        webhook: &Webhook,
        state: &DispatchState,
        log_head: i64,
    ) -> Result<Pending> {
        let filters = &webhook.spec.event_filters.0;
        let mut from = state.read_from();
        let (mut events, mut scanned) = (state.in_batch(), 0u32);
        let mut oldest_at = match state.batch.as_ref().and_then(|b| b.seqs.first()) {
            Some(&seq) => self
                .store
                .events_at(&[seq])
                .await?
                .first()
                .and_then(|e| event_timestamp(&e.body)),
            None => None,
        };
        while from < log_head && scanned < PENDING_SCAN_LIMIT {
            let rows = self
                .store
                .read_events(from, log_head, PENDING_SCAN_PAGE)
                .await?;
            let Some(last) = rows.last().map(|r| r.seq) else {
                break;
            };
            scanned += rows.len() as u32;
            let mut matching = rows
                .iter()
                .filter(|r| webhook_matches(filters, &EventFacts::from_body(&r.body)));
            if events == 0 {
                if let Some(first) = matching.next() {
                    oldest_at = event_timestamp(&first.body);
                    events = 1;
                }
            }
            events += matching.count() as u64;
            from = last;
        }
        Ok(Pending {
            events,
            lower_bound: from < log_head,
            oldest_at,
        })
    }

    /// Sends a test message to an undeleted webhook now, through the real path (format,
    /// sign, address policy, method). It is not an event: the webhook's position, status
    /// and delivery log do not change.
    pub async fn test_webhook(&self, id: Uuid, by: &Caller) -> Result<TestOutcome> {
        let webhook = self.webhook(id, Include::NonDeleted).await?;
        Ok(self.send_test(&webhook, by).await)
    }

    /// Sends a test message for a configuration that is not saved; the mask stands for
    /// nothing in it, as on create.
    pub async fn test_configuration(&self, spec: WebhookSpec, by: &Caller) -> Result<TestOutcome> {
        let webhook = self.new_webhook(spec, by)?;
        Ok(self.send_test(&webhook, by).await)
    }

    async fn send_test(&self, webhook: &Webhook, by: &Caller) -> TestOutcome {
        let event = test_event(
            webhook.id,
            webhook.spec.name.as_str(),
            &by.name,
            self.clock.now_ms(),
        );
        let (sent, request_bytes) = self.dispatcher.send_test(webhook, event).await;
        TestOutcome {
            outcome: sent.result.outcome(),
            status_code: sent.result.status_code,
            duration_ms: sent.duration_ms,
            request_bytes,
            response_excerpt: sent.response_excerpt,
            error_kind: sent.result.error_kind,
            error: sent
                .result
                .reason
                .filter(|_| sent.result.error_kind.is_some()),
        }
    }

    /// This instance's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.dispatcher.metrics_text()
    }
}
