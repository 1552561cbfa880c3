//! One worker per webhook this instance holds the lease of. It delivers in log order, one
//! batch at a time: it persists the batch, formats, signs and sends it, then records the
//! attempt and the state it leads to in one transaction (shared with other workers by the
//! [`super::recorder`]; after a success it also persists the next batch). A failed batch is
//! retried as it was (same events, same delivery id) on the schedule; nothing moves past it.

mod attempt;
mod catch_up;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Context;
use super::event::LogEvent;
use super::request::new_batch;
use crate::domain::delivery::{AttemptRecord, DispatchState};
use crate::domain::filter::EventFilter;
use crate::domain::webhook::{Webhook, WebhookStatus};
use crate::store::DispatchWrite;
use attempt::Attempted;
pub use catch_up::BACKLOGS_BYTES;
use catch_up::Backlog;

/// How often a parked worker (retries exhausted, or failed) looks for a resume made on
/// another instance, in case the wake-up was missed.
const PARKED_RECHECK: Duration = Duration::from_secs(5);

/// The span a worker runs in: its webhook's id, and its name once read.
pub fn span(id: Uuid) -> tracing::Span {
    tracing::info_span!("worker", webhook.id = %id, webhook.name = tracing::field::Empty)
}

/// Runs the worker of webhook `id` until it is stopped, loses its lease, or the webhook is
/// disabled or deleted. It runs in its [`span`].
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
                tracing::warn!(
                    error = format!("{err:#}"),
                    "webhook worker stopped; it restarts with the next lease cycle"
                );
            }
        }
        Ok(None) => {}
        Err(err) => {
            tracing::warn!(error = format!("{err:#}"), "webhook worker could not start")
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
        tracing::Span::current().record("webhook.name", name.as_str());
        ctx.router.register(
            id,
            name.clone(),
            filters.clone(),
            wake.clone(),
            state.cursor,
        );
        tracing::debug!(cursor = state.cursor, "webhook worker started");
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
                if due && Box::pin(self.attempt(batch)).await? == Attempted::Stop {
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
                if Box::pin(self.attempt(batch)).await? == Attempted::Stop {
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

    /// Tells the router how far the webhook got (every event up to its cursor was delivered
    /// or did not match), for the lag it reports.
    fn report_position(&self) {
        self.ctx.router.set_done_through(self.id, self.state.cursor);
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
            tracing::Span::current().record("webhook.name", self.name.as_str());
            self.ctx
                .router
                .reconfigure(self.id, self.name.clone(), self.filters.clone());
        }
        self.batch_size = spec.batch_size.get() as usize;
        self.webhook = Some(Arc::new(webhook));
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
