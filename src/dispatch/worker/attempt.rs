//! One attempt of the pending batch, in three steps: send (format, sign, send), classify
//! (the webhook's next state by [`after_attempt`], and the attempt's record) and record
//! (one commit; after a success it also persists the next batch). It runs in a span naming
//! the webhook, the delivery and the attempt, so every line written meanwhile says which.

use std::sync::Arc;

use tracing::Instrument;

use super::Worker;
use crate::dispatch::event::LogEvent;
use crate::dispatch::request::{build_request, new_batch};
use crate::dispatch::sender::Sent;
use crate::domain::delivery::{
    AttemptRecord, AttemptResult, DispatchState, PendingBatch, after_attempt,
};
use crate::domain::webhook::{Webhook, WebhookStatus};

/// What an attempt came to, for the worker's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempted {
    /// Delivered; the next batch is pending if its events were at hand.
    Delivered,
    /// Not delivered: the same batch stays pending, for a retry or until a resume.
    Kept,
    /// The lease is gone, or the webhook is no longer to be delivered: the worker stops.
    Stop,
}

/// The bytes an attempt sent, and what came of it.
struct Sending {
    sent: Sent,
    request_bytes: i64,
}

impl Worker {
    /// One attempt of the pending batch, in its own span.
    pub(super) async fn attempt(&mut self, batch: PendingBatch) -> anyhow::Result<Attempted> {
        let span = tracing::info_span!(
            "attempt",
            webhook.id = %self.id,
            delivery.id = %batch.delivery_id,
            attempt = batch.attempts + 1,
        );
        self.attempt_in_span(batch).instrument(span).await
    }

    async fn attempt_in_span(&mut self, batch: PendingBatch) -> anyhow::Result<Attempted> {
        let Some(webhook) = self.definition().await? else {
            return Ok(Attempted::Stop);
        };
        let events = self.events_of(&batch).await?;
        let attempted_at = self.ctx.clock.now_ms();
        let sending = self.send(&webhook, &batch, &events).await;
        let (next, record) = self.classify(&webhook, &batch, &events, &sending, attempted_at);
        self.conclude(events, sending.sent, next, record).await
    }

    /// The batch's events: in memory since it was formed, or read from the log again.
    async fn events_of(&mut self, batch: &PendingBatch) -> anyhow::Result<Vec<Arc<LogEvent>>> {
        Ok(match self.batch_events.take() {
            Some(events) => events,
            None => self
                .ctx
                .store
                .events_at(&batch.seqs)
                .await?
                .into_iter()
                .map(|row| Arc::new(LogEvent::new(row.seq, row.event_id, row.body)))
                .collect(),
        })
    }

    /// Formats, signs and sends a batch. A batch whose events all left the log sends
    /// nothing (and counts as delivered).
    async fn send(
        &self,
        webhook: &Webhook,
        batch: &PendingBatch,
        events: &[Arc<LogEvent>],
    ) -> Sending {
        let unsent = |result| Sending {
            sent: Sent::unsent(result),
            request_bytes: 0,
        };
        if events.is_empty() {
            return unsent(AttemptResult {
                status_code: None,
                error_kind: None,
                reason: None,
            });
        }
        let now = self.ctx.clock.now_ms();
        let attempt = batch.attempts + 1;
        let request = match build_request(webhook, events, batch.delivery_id, attempt, now).await {
            Ok(request) => request,
            Err(error) => return unsent(error.into()),
        };
        let request_bytes = request.body.len() as i64;
        let _permit = self.ctx.in_flight.acquire().await;
        Sending {
            sent: self.ctx.sender.send(request).await,
            request_bytes,
        }
    }

    /// What the answer means: the webhook's next state, and the attempt as the delivery
    /// log keeps it.
    fn classify(
        &self,
        webhook: &Webhook,
        batch: &PendingBatch,
        events: &[Arc<LogEvent>],
        sending: &Sending,
        attempted_at: i64,
    ) -> (DispatchState, AttemptRecord) {
        let result = &sending.sent.result;
        let next = after_attempt(
            &self.state,
            batch,
            result,
            &self.ctx.settings.retry_schedule,
            self.ctx.clock.now_ms(),
        );
        let error = result
            .reason
            .clone()
            .filter(|_| result.error_kind.is_some())
            .or_else(|| {
                events.is_empty().then(|| {
                    "the batch's events left the log (retention) before delivery".to_owned()
                })
            });
        let record = AttemptRecord {
            id: 0,
            webhook_id: self.id,
            delivery_id: batch.delivery_id,
            attempt: batch.attempts + 1,
            event_ids: batch.event_ids.clone(),
            url: webhook.spec.webhook_config.endpoint.url().to_string(),
            request_bytes: sending.request_bytes,
            status_code: result.status_code,
            response_excerpt: sending.sent.response_excerpt.clone(),
            error_kind: result.error_kind,
            error,
            duration_ms: sending.sent.duration_ms,
            attempted_at,
            outcome: result.outcome(),
            next_attempt_at: next.next_attempt_at,
        };
        (next, record)
    }

    /// Records the attempt and the state it leads to. After a success, the next batch (when
    /// its events are at hand) is persisted in the same commit: one commit per delivery,
    /// not two.
    async fn conclude(
        &mut self,
        events: Vec<Arc<LogEvent>>,
        sent: Sent,
        mut next: DispatchState,
        record: AttemptRecord,
    ) -> anyhow::Result<Attempted> {
        let mut next_events = None;
        let delivered = next.batch.is_none() && next.status == WebhookStatus::Active;
        if delivered && !self.stop.is_cancelled() {
            let events = self.next_events().await?;
            if !events.is_empty() {
                next.batch = Some(new_batch(self.id, &events));
                next_events = Some(events);
            }
        }
        // Failed: the same batch stays pending, to be retried.
        let kept = next.batch.is_some() && next_events.is_none();
        let outcome = record.outcome;
        if !self.record(next, Some(record)).await? {
            return Ok(Attempted::Stop);
        }
        self.ctx.metrics.delivered(outcome, sent.duration_ms);
        tracing::debug!(
            outcome = outcome.as_str(), status = ?sent.result.status_code, ms = sent.duration_ms,
            "delivery attempt"
        );
        self.report_position();
        if kept {
            self.batch_events = Some(events);
            tracing::info!(
                status = self.state.status.as_str(), reason = ?sent.result.reason,
                "delivery failed"
            );
            Ok(Attempted::Kept)
        } else {
            self.batch_events = next_events;
            Ok(Attempted::Delivered)
        }
    }
}
