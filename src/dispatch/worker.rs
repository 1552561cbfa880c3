//! One worker per webhook this instance holds the lease of. It delivers in log order, one
//! batch at a time: it persists the batch, formats, signs and sends it, then records the
//! attempt and the state it leads to in one transaction (shared with other workers by the
//! [`super::recorder`]; after a success it also persists the next batch). A failed batch is
//! retried as it was (same events, same delivery id) on the schedule; nothing moves past it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Context;
use super::format;
use super::router::LogEvent;
use super::sender::{OutboundRequest, Sent, header_map};
use crate::domain::delivery::{
    AttemptRecord, AttemptResult, DispatchState, ErrorKind, PendingBatch, after_attempt,
};
use crate::domain::filter::EventFilter;
use crate::domain::filter::webhook_matches;
use crate::domain::signature as sign;
use crate::domain::webhook::{HttpMethod, Webhook, WebhookStatus};
use crate::store::DispatchWrite;

/// Log rows read per catch-up query. Every webhook that is behind holds a page of its own:
/// 1,000 rows for each of W1's ten webhooks made up a third of the process's memory, and
/// pages of 256 read as fast.
const CATCH_UP_PAGE: u32 = 256;
/// Body bytes read per catch-up query, at most (past its first event): 256 events of
/// 256 KiB would be 64 MiB for one webhook.
const CATCH_UP_BYTES: usize = 2 << 20;
/// What the backlogs of all workers hold together before catch-up reads shrink to one
/// event at a time.
pub const BACKLOGS_BYTES: usize = 32 << 20;
/// How often a parked worker (retries exhausted, or failed) looks for a resume made on
/// another instance, in case the wake-up was missed.
const PARKED_RECHECK: Duration = Duration::from_secs(5);

pub const DELIVERY_ID_HEADER: &str = "X-OutHook-Delivery-Id";
pub const ATTEMPT_HEADER: &str = "X-OutHook-Attempt";

/// Runs the worker of webhook `id` until it is stopped, loses its lease, or the webhook is
/// disabled or deleted.
pub async fn run(ctx: Arc<Context>, id: Uuid, stop: CancellationToken) {
    let wake = Arc::new(Notify::new());
    // A few workers start at a time: each start reads the webhook and its state, and
    // 10,000 of them waiting for a connection at once (an instance starting with 10,000
    // webhooks) brought the process to 143 MB, which the allocator then kept (42 MB now).
    let starting = match ctx.starting.acquire().await {
        Ok(permit) => permit,
        Err(_) => return,
    };
    // Boxed, here and below: a task's future is as big as its biggest await, and an idle
    // worker should hold little (10,000 webhooks are 10,000 tasks).
    let started = Box::pin(Worker::start(ctx.clone(), id, wake, stop)).await;
    drop(starting);
    match started {
        Ok(Some(mut worker)) => {
            if let Err(err) = Box::pin(worker.run()).await {
                tracing::warn!(webhook.id = %id, error = format!("{err:#}"), "webhook worker stopped; it restarts with the next lease cycle");
            }
        }
        Ok(None) => {}
        Err(err) => {
            tracing::warn!(webhook.id = %id, error = format!("{err:#}"), "webhook worker could not start")
        }
    }
    ctx.router.unregister(id);
}

struct Worker {
    ctx: Arc<Context>,
    id: Uuid,
    wake: Arc<Notify>,
    stop: CancellationToken,
    /// The webhook's definition, read when there is something to send: an idle worker
    /// (most of them, with thousands of webhooks) does not hold it.
    webhook: Option<Arc<Webhook>>,
    /// What routing and catch-up need, kept while the definition is not.
    name: String,
    filters: Arc<Vec<EventFilter>>,
    batch_size: usize,
    state: DispatchState,
    /// Every event up to here is in a batch (delivered or pending) or did not match.
    read_pos: i64,
    /// Catch-up has read the log up to here; matching events past `read_pos` wait in `backlog`.
    scanned_to: i64,
    backlog: Backlog,
    /// The events of the pending batch, when they are in memory.
    batch_events: Option<Vec<Arc<LogEvent>>>,
}

impl Worker {
    async fn start(
        ctx: Arc<Context>,
        id: Uuid,
        wake: Arc<Notify>,
        stop: CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        let Some(webhook) = deliverable(&ctx, id).await? else {
            return Ok(None);
        };
        let Some(state) = ctx.store.dispatch_state(id).await? else {
            return Ok(None);
        };
        let read_pos = state.read_from();
        let filters = Arc::new(webhook.spec.event_filters.0.clone());
        let name = webhook.spec.name.to_string();
        ctx.router.register(
            id,
            name.clone(),
            filters.clone(),
            wake.clone(),
            state.cursor,
        );
        tracing::debug!(webhook.id = %id, cursor = state.cursor, "webhook worker started");
        Ok(Some(Self {
            id,
            wake,
            stop,
            batch_size: webhook.spec.batch_size.get() as usize,
            webhook: state.batch.is_some().then(|| Arc::new(webhook)),
            name,
            filters,
            state,
            read_pos,
            scanned_to: read_pos,
            backlog: Backlog::new(ctx.backlog_bytes.clone()),
            batch_events: None,
            ctx,
        }))
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            if self.ctx.router.take_reload(self.id) && !Box::pin(self.reload()).await? {
                return Ok(());
            }
            if let Some(batch) = self.state.batch.clone() {
                let due = match self.state.status {
                    WebhookStatus::Active => true,
                    WebhookStatus::AwaitingRetry => {
                        let at = self.state.next_attempt_at.unwrap_or(0);
                        self.ctx.clock.now_ms() >= at || {
                            self.let_go();
                            self.wait(Some(at), None).await;
                            false
                        }
                    }
                    // Parked until an admin resumes it (here or on another instance).
                    _ => {
                        self.let_go();
                        self.wait(None, Some(PARKED_RECHECK)).await;
                        if !Box::pin(self.reload()).await? {
                            return Ok(());
                        }
                        false
                    }
                };
                if due && !Box::pin(self.attempt(batch)).await? {
                    return Ok(());
                }
                continue;
            }
            let events = Box::pin(self.next_events()).await?;
            if events.is_empty() {
                if self.ctx.router.try_idle(self.id) {
                    self.wait(None, None).await;
                }
                continue;
            }
            let batch = new_batch(self.id, &events);
            let mut next = self.state.clone();
            next.batch = Some(batch.clone());
            // A full batch is what a restart would form again: the first batchSize matching
            // events after the stored cursor, under the same delivery id (it comes from the
            // events). So it goes out at once, without a commit of its own; the commit that
            // records its attempt is the first to mention it. That holds while this
            // instance's lease is known to be valid. A partial batch could grow by the time
            // a restart formed it again: it is persisted before the first attempt, so that
            // the same batch goes again after a crash.
            let full = events.len() == self.batch_size;
            self.batch_events = Some(events);
            if full && self.state.status == WebhookStatus::Active && self.ctx.leases_fresh() {
                self.state = next;
                if !Box::pin(self.attempt(batch)).await? {
                    return Ok(());
                }
            } else if !Box::pin(self.record(next, None)).await? {
                return Ok(()); // the lease is gone
            }
        }
    }

    /// The webhook is not sending for a while: it holds no events meanwhile. The pending
    /// batch is read from the log again when it is attempted, and what comes after it when
    /// it is delivered.
    fn let_go(&mut self) {
        self.batch_events = None;
        self.backlog.clear();
        // What the backlog held (after `read_pos`) is read again.
        self.scanned_to = self.read_pos;
        self.ctx.router.park(self.id);
    }

    /// Writes the webhook's new state (and the attempt that led to it) through the group
    /// commit, and adopts it; false when the lease is gone.
    async fn record(
        &mut self,
        state: DispatchState,
        attempt: Option<AttemptRecord>,
    ) -> anyhow::Result<bool> {
        let write = DispatchWrite {
            webhook_id: self.id,
            state: state.clone(),
            attempt,
        };
        if !self.ctx.recorder.record(write).await? {
            return Ok(false);
        }
        self.state = state;
        Ok(true)
    }

    /// Waits for a wake-up, the stop signal, the injected clock reaching `until`, or
    /// `recheck` of real time.
    async fn wait(&self, until: Option<i64>, recheck: Option<Duration>) {
        let clock = self.ctx.clock.clone();
        let due = async move {
            match until {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let tick = async move {
            match recheck {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = self.stop.cancelled() => {}
            _ = due => {}
            _ = tick => {}
        }
    }

    /// Reads the webhook and its state again; false when it should no longer be delivered.
    async fn reload(&mut self) -> anyhow::Result<bool> {
        let Some(webhook) = deliverable(&self.ctx, self.id).await? else {
            return Ok(false);
        };
        let Some(state) = self.ctx.store.dispatch_state(self.id).await? else {
            return Ok(false);
        };
        if state.batch.as_ref().map(|b| b.delivery_id)
            != self.state.batch.as_ref().map(|b| b.delivery_id)
        {
            self.batch_events = None;
        }
        // Never step back behind what was already considered (the stored cursor may lag).
        self.read_pos = self.read_pos.max(state.read_from());
        self.adopt(webhook);
        self.state = state;
        Ok(true)
    }

    /// The webhook's definition, read again if the worker let go of it; None when it
    /// should no longer be delivered.
    async fn definition(&mut self) -> anyhow::Result<Option<Arc<Webhook>>> {
        if self.webhook.is_none() {
            let Some(webhook) = deliverable(&self.ctx, self.id).await? else {
                return Ok(None);
            };
            self.adopt(webhook);
        }
        Ok(self.webhook.clone())
    }

    fn adopt(&mut self, webhook: Webhook) {
        let spec = &webhook.spec;
        if spec.event_filters.0 != *self.filters || spec.name.as_str() != self.name {
            // Events are judged by the filters in force when they are routed (or read in
            // catch-up): the new ones apply from here on.
            self.filters = Arc::new(spec.event_filters.0.clone());
            self.name = spec.name.to_string();
            self.ctx
                .router
                .reconfigure(self.id, self.name.clone(), self.filters.clone());
        }
        self.batch_size = spec.batch_size.get() as usize;
        self.webhook = Some(Arc::new(webhook));
    }

    /// Up to batchSize matching events after `read_pos`: from the backlog, the log
    /// (catch-up) or the inbox, in log order. Empty when there is nothing to deliver.
    async fn next_events(&mut self) -> anyhow::Result<Vec<Arc<LogEvent>>> {
        let max = self.batch_size;
        let mut out = Vec::new();
        loop {
            while out.len() < max {
                let Some(event) = self.backlog.pop() else {
                    break;
                };
                self.read_pos = event.seq;
                out.push(event);
            }
            if out.len() == max {
                return Ok(out);
            }
            self.read_pos = self.read_pos.max(self.scanned_to);
            let Some(live_from) = self.ctx.router.live_from(self.id) else {
                return Ok(out);
            };
            if self.scanned_to < live_from {
                self.catch_up(live_from).await?;
                continue;
            }
            let taken = self
                .ctx
                .router
                .take(self.id, max - out.len(), self.read_pos);
            for event in taken.events {
                self.read_pos = event.seq;
                out.push(event);
            }
            if taken.must_catch_up && out.len() < max {
                self.scanned_to = self.read_pos;
                self.ctx.router.reset_live(self.id);
                continue;
            }
            return Ok(out);
        }
    }

    /// Reads one page of the log between `scanned_to` and `live_from` into the backlog.
    async fn catch_up(&mut self, live_from: i64) -> anyhow::Result<()> {
        let page = {
            let _permit = self.ctx.catch_up.acquire().await?;
            // Within what the backlogs of all workers may still hold (at least one event).
            let held = self.ctx.backlog_bytes.load(Ordering::Relaxed);
            let budget = CATCH_UP_BYTES
                .min(BACKLOGS_BYTES.saturating_sub(held))
                .max(1);
            self.ctx
                .store
                .read_event_page(self.scanned_to, live_from, CATCH_UP_PAGE, budget as u64)
                .await?
        };
        let last = page.events.last().map(|r| r.seq);
        for row in page.events {
            let event = LogEvent::new(row.seq, row.event_id, row.body);
            if webhook_matches(&self.filters, &event.facts) {
                self.backlog.push(Arc::new(event));
            }
        }
        self.scanned_to = match (page.complete, last) {
            (false, Some(seq)) => seq,
            _ => live_from,
        };
        Ok(())
    }

    /// One attempt of the pending batch; false when the lease is gone.
    async fn attempt(&mut self, batch: PendingBatch) -> anyhow::Result<bool> {
        let Some(webhook) = self.definition().await? else {
            return Ok(false);
        };
        let events = match self.batch_events.take() {
            Some(events) => events,
            None => self
                .ctx
                .store
                .events_at(&batch.seqs)
                .await?
                .into_iter()
                .map(|row| Arc::new(LogEvent::new(row.seq, row.event_id, row.body)))
                .collect(),
        };
        let attempted_at = self.ctx.clock.now_ms();
        let (sent, request_bytes) = self.send(&webhook, &batch, &events).await;
        let now = self.ctx.clock.now_ms();
        let next = after_attempt(
            &self.state,
            &batch,
            &sent.result,
            &self.ctx.settings.retry_schedule,
            now,
        );
        let outcome = sent.result.outcome();
        let record = AttemptRecord {
            id: 0,
            webhook_id: self.id,
            delivery_id: batch.delivery_id,
            attempt: batch.attempts + 1,
            event_ids: batch.event_ids.clone(),
            url: webhook.spec.webhook_config.endpoint.url().to_string(),
            request_bytes,
            status_code: sent.result.status_code,
            response_excerpt: sent.response_excerpt.clone(),
            error_kind: sent.result.error_kind,
            error: sent
                .result
                .reason
                .clone()
                .filter(|_| sent.result.error_kind.is_some())
                .or_else(|| {
                    events.is_empty().then(|| {
                        "the batch's events left the log (retention) before delivery".to_owned()
                    })
                }),
            duration_ms: sent.duration_ms,
            attempted_at,
            outcome,
            next_attempt_at: next.next_attempt_at,
        };
        // After a success, the next batch (when its events are at hand) is persisted in the
        // same commit that records this attempt: one commit per delivery, not two.
        let mut next = next;
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
        let retrying = next.batch.is_some() && next_events.is_none();
        let attempt_number = record.attempt;
        if !self.record(next, Some(record)).await? {
            return Ok(false);
        }
        self.ctx.metrics.delivered(outcome, sent.duration_ms);
        tracing::debug!(
            webhook.id = %self.id, delivery.id = %batch.delivery_id, attempt = attempt_number,
            outcome = outcome.as_str(), status = ?sent.result.status_code, ms = sent.duration_ms, "delivery attempt"
        );
        if retrying {
            self.batch_events = Some(events);
            tracing::info!(
                webhook.id = %self.id, delivery.id = %batch.delivery_id, attempt = attempt_number,
                status = self.state.status.as_str(), reason = ?sent.result.reason, "delivery failed"
            );
        } else {
            self.batch_events = next_events;
        }
        self.ctx.router.set_done_through(self.id, self.state.cursor);
        Ok(true)
    }

    /// Formats, signs and sends a batch. Returns the outcome and the body size.
    async fn send(
        &self,
        webhook: &Webhook,
        batch: &PendingBatch,
        events: &[Arc<LogEvent>],
    ) -> (Sent, i64) {
        if events.is_empty() {
            let nothing_to_send = AttemptResult {
                status_code: None,
                error_kind: None,
                reason: None,
            };
            return (Sent::unsent(nothing_to_send), 0);
        }
        let now = self.ctx.clock.now_ms();
        let request = match build_request(
            webhook,
            events,
            batch.delivery_id,
            batch.attempts + 1,
            now,
        )
        .await
        {
            Ok(request) => request,
            Err(reason) => {
                return (
                    Sent::unsent(AttemptResult::error(ErrorKind::Render, reason)),
                    0,
                );
            }
        };
        let size = request.body.len() as i64;
        let _permit = self.ctx.in_flight.acquire().await;
        (self.ctx.sender.send(request).await, size)
    }
}

/// Matching events read ahead from the log, counted (in [`LogEvent::held_bytes`]) against
/// what all workers' backlogs may hold together.
struct Backlog {
    events: VecDeque<Arc<LogEvent>>,
    bytes: usize,
    all: Arc<AtomicUsize>,
}

impl Backlog {
    fn new(all: Arc<AtomicUsize>) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            all,
        }
    }

    fn push(&mut self, event: Arc<LogEvent>) {
        let size = event.held_bytes();
        self.bytes += size;
        self.all.fetch_add(size, Ordering::Relaxed);
        self.events.push_back(event);
    }

    fn pop(&mut self) -> Option<Arc<LogEvent>> {
        let event = self.events.pop_front()?;
        let size = event.held_bytes();
        self.bytes -= size;
        self.all.fetch_sub(size, Ordering::Relaxed);
        Some(event)
    }

    fn clear(&mut self) {
        self.events = VecDeque::new();
        self.all
            .fetch_sub(std::mem::take(&mut self.bytes), Ordering::Relaxed);
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The webhook, unless it is gone, disabled or soft-deleted (then it is not delivered).
async fn deliverable(ctx: &Context, id: Uuid) -> anyhow::Result<Option<Webhook>> {
    Ok(ctx
        .store
        .webhook(id)
        .await?
        .filter(|w| !w.deleted && w.spec.enabled))
}

/// A new batch of these events, not attempted yet.
fn new_batch(webhook: Uuid, events: &[Arc<LogEvent>]) -> PendingBatch {
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    PendingBatch {
        delivery_id: delivery_id(webhook, &seqs),
        seqs,
        event_ids: events.iter().map(|e| e.event_id).collect(),
        attempts: 0,
    }
}

/// The delivery id of a batch: a digest of the webhook and the log positions it carries,
/// so that the same batch, formed again after a restart, goes out under the same id.
fn delivery_id(webhook: Uuid, seqs: &[i64]) -> Uuid {
    let mut digest = Sha256::new();
    digest.update(webhook.as_bytes());
    for seq in seqs {
        digest.update(seq.to_be_bytes());
    }
    let bytes: [u8; 16] = digest.finalize()[..16]
        .try_into()
        .expect("a SHA-256 digest is 32 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The request of one attempt: formatted for the destination, with the webhook's headers
/// (rendered, for Custom), outhook's, and the signature of exactly the bytes sent. An error
/// means the batch cannot be rendered (a failure retrying cannot fix).
pub async fn build_request(
    webhook: &Webhook,
    events: &[Arc<LogEvent>],
    delivery_id: Uuid,
    attempt: u32,
    now: i64,
) -> Result<OutboundRequest, String> {
    let spec = &webhook.spec;
    let config = &spec.webhook_config;
    let payload = format::payload(spec, events).await?;
    let mut url = config.endpoint.url().clone();
    let (method, body, signed) = match payload.query {
        Some(query) => {
            let full = match url.query() {
                Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
                _ => query,
            };
            url.set_query(Some(&full));
            (reqwest::Method::GET, Vec::new(), full.into_bytes())
        }
        None => {
            let method = if config.http_method == HttpMethod::Put {
                reqwest::Method::PUT
            } else {
                reqwest::Method::POST
            };
            let signed = payload.body.clone();
            (method, payload.body, signed)
        }
    };
    let mut headers = header_map(payload.headers);
    if method != reqwest::Method::GET {
        // A webhook's own Content-Type (a JSON type, checked when written) is sent as written.
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
    }
    headers.insert(
        DELIVERY_ID_HEADER,
        HeaderValue::from_str(&delivery_id.to_string()).expect("a UUID is a header value"),
    );
    headers.insert(ATTEMPT_HEADER, HeaderValue::from(attempt));
    if let Some(secret) = &config.secret_key {
        let previous = webhook.signing_previous(now).map(|s| s.expose());
        let message_id = delivery_id.to_string();
        for (name, value) in sign::signature_headers(
            config.signature_scheme,
            secret.expose(),
            previous,
            &message_id,
            now / 1000,
            &signed,
        ) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    Ok(OutboundRequest {
        method,
        url,
        body,
        headers,
        timeout: Duration::from_secs(u64::from(config.timeout.get())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_has_the_same_delivery_id_whenever_it_is_formed() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let id = delivery_id(a, &[3, 7, 9]);
        assert_eq!(id, delivery_id(a, &[3, 7, 9]));
        assert_ne!(id, delivery_id(a, &[3, 7]), "another batch");
        assert_ne!(id, delivery_id(a, &[3, 7, 10]), "another batch");
        assert_ne!(id, delivery_id(b, &[3, 7, 9]), "another webhook");
        assert_eq!(id.get_version(), Some(uuid::Version::Custom));
    }
}
