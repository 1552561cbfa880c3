//! The dispatcher: from the event log to signed deliveries (SPEC §6).
//!
//! Per instance: a **scanner** tails the log and routes each event to the matching
//! webhooks ([`router`]); a **lease loop** heartbeats, claims webhooks no live instance
//! holds and runs one **worker** per held webhook ([`worker`]); a **pruner** drops what
//! is past retention. Workers only talk to the database through the [`Store`], and only
//! while they hold the lease, so several instances never deliver the same batch.

pub mod event;
pub mod format;
pub mod identity;
pub mod index;
pub mod recorder;
pub mod request;
pub mod router;
pub mod sandbox;
pub mod sender;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::clock::{Clock, Millis, SystemClock};
use crate::domain::address::AddressPolicy;
use crate::domain::event::NewEvent;
use crate::domain::webhook::Webhook;
use crate::metrics::Metrics;
use crate::store::{Appended, PRUNE_STEP, Pruned, RetentionCuts, Store};
use event::LogEvent;
use identity::Identity;
use recorder::Recorder;
use router::Router;
use sender::{Sender, Sent};

/// What the dispatcher needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub retry_schedule: Vec<Duration>,
    pub retention: Duration,
    pub allow_private: Vec<crate::domain::address::Cidr>,
    /// A lease is lost when its instance has not beaten for this long.
    pub lease_ttl: Duration,
    /// How often the log is polled when no wake-up came.
    pub poll_interval: Duration,
    /// Requests in flight at once, across all webhooks.
    pub max_in_flight: usize,
    /// This instance's name; `<host name>:<pid>` when not set.
    pub instance_name: Option<String>,
}

/// Shared by the dispatcher's tasks.
pub struct Context {
    /// This instance, as leases name it (`identity.id`).
    pub instance: Uuid,
    pub identity: Identity,
    pub store: Arc<dyn Store>,
    /// Workers' writes, group-committed.
    pub recorder: Recorder,
    /// The injected clock: timestamps and the retry schedule.
    pub clock: Arc<dyn Clock>,
    pub router: Router,
    pub sender: Sender,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub in_flight: Semaphore,
    /// Bounds concurrent catch-up reads of the log (and the memory they hold).
    pub catch_up: Semaphore,
    /// Bounds the workers starting at once (each reads its webhook and state).
    pub starting: Semaphore,
    /// What the workers' backlogs hold together, in bytes (see [`worker::BACKLOGS_BYTES`]).
    pub backlog_bytes: Arc<AtomicUsize>,
    /// When this instance's heartbeat was last written (see [`Context::leases_fresh`]).
    heartbeat: LastHeartbeat,
}

/// The time of the last heartbeat written, on a monotonic clock.
struct LastHeartbeat {
    origin: std::time::Instant,
    /// Microseconds after `origin`; `u64::MAX` before the first.
    at: AtomicU64,
}

impl Context {
    /// Whether this instance's leases are known to hold: its last heartbeat was written
    /// less than half a lease ago. (Another instance takes a lease only once the holder's
    /// heartbeat is a whole lease old.)
    pub fn leases_fresh(&self) -> bool {
        let at = self.heartbeat.at.load(Ordering::Acquire);
        let now = self.heartbeat.origin.elapsed().as_micros() as u64;
        at != u64::MAX && now.saturating_sub(at) < (self.settings.lease_ttl / 2).as_micros() as u64
    }

    /// `written_at` is when the heartbeat statement was sent (it held from then on).
    fn heartbeat_written(&self, written_at: std::time::Instant) {
        let micros = written_at.duration_since(self.heartbeat.origin).as_micros() as u64;
        self.heartbeat.at.store(micros, Ordering::Release);
    }
}

/// The running dispatcher, as the API sees it.
pub struct Dispatcher {
    ctx: Arc<Context>,
    scanner_wake: Arc<Notify>,
    lease_wake: Arc<Notify>,
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Committed appends on their way to the router, in commit order.
    appends: mpsc::Sender<(Vec<NewEvent>, Appended)>,
}

/// Committed appends waiting to be routed from memory, at most.
const APPENDS_QUEUE: usize = 256;

impl Dispatcher {
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        keep_large_buffers_off_the_heap();
        let position = store.log_head().await?;
        let identity = Identity::of_this_process(settings.instance_name.as_deref());
        let instance = identity.id;
        // The writer stops by itself once the context (and so every worker) is gone.
        let (recorder, _writer) = Recorder::start(store.clone(), instance);
        let ctx = Arc::new(Context {
            instance,
            identity,
            recorder,
            sender: Sender::new(AddressPolicy::new(settings.allow_private.clone()))?,
            router: Router::new(position),
            in_flight: Semaphore::new(settings.max_in_flight),
            catch_up: Semaphore::new(4),
            starting: Semaphore::new(8),
            backlog_bytes: Arc::new(AtomicUsize::new(0)),
            heartbeat: LastHeartbeat {
                origin: std::time::Instant::now(),
                at: AtomicU64::new(u64::MAX),
            },
            store,
            clock,
            metrics,
            settings,
        });
        let stop = CancellationToken::new();
        let scanner_wake = Arc::new(Notify::new());
        let lease_wake = Arc::new(Notify::new());
        let (changed_tx, changed_rx) = mpsc::unbounded_channel();
        let (appends, appends_rx) = mpsc::channel(APPENDS_QUEUE);
        let tasks = vec![
            tokio::spawn(route_appends(
                ctx.clone(),
                scanner_wake.clone(),
                appends_rx,
                stop.clone(),
            )),
            tokio::spawn(scan(ctx.clone(), scanner_wake.clone(), stop.clone())),
            tokio::spawn(hold_leases(ctx.clone(), lease_wake.clone(), stop.clone())),
            tokio::spawn(prune(ctx.clone(), stop.clone())),
            tokio::spawn(relay_changes(
                ctx.clone(),
                lease_wake.clone(),
                changed_rx,
                stop.clone(),
            )),
            {
                let (ctx, wake, stop) = (ctx.clone(), scanner_wake.clone(), stop.clone());
                // This instance's own appends are routed as they commit: their notifications
                // find the router already past them and wake nothing.
                let router_ctx = ctx.clone();
                let committed = Arc::new(move |head: i64| {
                    if head > router_ctx.router.position() {
                        wake.notify_one();
                    }
                });
                tokio::spawn(async move { ctx.store.listen(committed, changed_tx, stop).await })
            },
        ];
        tracing::info!(instance = %ctx.identity.name, id = %ctx.instance, position, "dispatcher started");
        Ok(Self {
            ctx,
            scanner_wake,
            lease_wake,
            stop,
            tasks: std::sync::Mutex::new(tasks),
            appends,
        })
    }

    /// New events were committed here: route them now, from memory when the router stands
    /// where this append began (the usual case with one instance), from the log otherwise.
    /// The routing runs on its own task, so the ingestor goes on committing meanwhile.
    pub fn events_committed(&self, events: Vec<NewEvent>, appended: Appended) {
        if self.appends.try_send((events, appended)).is_err() {
            // Routing is behind (or stopping): the scanner reads the log instead.
            self.scanner_wake.notify_one();
        }
    }

    /// A webhook was created or changed here: routing uses its filters at once, its worker
    /// reloads it, and the other instances are told.
    pub async fn webhook_changed(&self, webhook: &Webhook) {
        apply_change(&self.ctx, webhook);
        self.lease_wake.notify_one();
        self.announce(webhook.id).await;
    }

    /// A webhook was deleted for good here: what it holds goes at once, its worker stops.
    pub async fn webhook_deleted(&self, id: Uuid) {
        self.ctx.router.park(id);
        self.ctx.router.request_reload(id);
        self.lease_wake.notify_one();
        self.announce(id).await;
    }

    async fn announce(&self, id: Uuid) {
        if let Err(err) = self.ctx.store.announce_webhook_change(id).await {
            tracing::warn!(webhook.id = %id, error = %err, "could not tell other instances about a webhook change");
        }
    }

    /// Sends one message through the real path (format, sign, address policy, method)
    /// without touching the webhook's position or status.
    pub async fn send_test(&self, webhook: &Webhook, event: LogEvent) -> (Sent, i64) {
        let events = [Arc::new(event)];
        let now = self.ctx.clock.now_ms();
        match request::build_request(webhook, &events, Uuid::new_v4(), 1, now).await {
            Ok(request) => {
                let size = request.body.len() as i64;
                (self.ctx.sender.send(request).await, size)
            }
            Err(error) => (Sent::unsent(error.into()), 0),
        }
    }

    pub fn metrics_text(&self) -> String {
        self.ctx.metrics.render(&self.ctx.router.lags())
    }

    /// Whether this instance is delivering the webhook (its worker is running).
    pub fn is_delivering(&self, id: Uuid) -> bool {
        self.ctx.router.is_registered(id)
    }

    /// The name of the live instance holding the webhook's lease, if one does.
    pub async fn lease_holder(&self, id: Uuid) -> Result<Option<String>, crate::store::StoreError> {
        let live_since = SystemClock.now_ms() - self.ctx.settings.lease_ttl.as_millis() as Millis;
        self.ctx.store.lease_holder(id, live_since).await
    }

    /// The highest log position routed so far by this instance.
    pub fn position(&self) -> i64 {
        self.ctx.router.position()
    }

    /// Stops routing and claiming, lets workers finish the attempt in flight, gives the
    /// leases back.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// glibc serves an allocation of 128 KiB or more from its own mapping, returned to the
/// system when freed, but raises that threshold to the size of each such block freed (up to
/// 32 MiB). After the first large publish (a request of 12.5 MiB), every buffer below that
/// size, event bodies included, came from the heap and stayed there once freed, spread over
/// the threads' arenas: 22 publishes of 50 events of 250 KiB left the process at 120–160 MB
/// resident; with the threshold kept where it starts, 55–68 MB at the peak. Small
/// allocations (nearly all of them) are served as before. Process-wide and idempotent:
/// the dispatcher is what holds and drops the events, and it starts once per process.
fn keep_large_buffers_off_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Routes this instance's appends from memory, in commit order; an append the router cannot
/// take (another instance appended in between) sends the scanner to the log.
async fn route_appends(
    ctx: Arc<Context>,
    scanner_wake: Arc<Notify>,
    mut appends: mpsc::Receiver<(Vec<NewEvent>, Appended)>,
    stop: CancellationToken,
) {
    loop {
        let (events, appended) = tokio::select! {
            next = appends.recv() => match next {
                Some(append) => append,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let build = || {
            events
                .into_iter()
                .zip(&appended.positions)
                .filter_map(|(event, position)| {
                    position.map(|seq| Arc::new(LogEvent::new(seq, event.event_id, event.body)))
                })
                .collect()
        };
        match ctx.router.route_appended(appended.from, appended.to, build) {
            Some(woken) => woken.iter().for_each(|w| w.notify_one()),
            None => scanner_wake.notify_one(),
        }
    }
}

/// Tails the log and routes new events; woken by local commits and LISTEN/NOTIFY, and
/// polling behind them.
async fn scan(ctx: Arc<Context>, wake: Arc<Notify>, stop: CancellationToken) {
    const PAGE: u32 = 1000;
    /// Body bytes per page, at most (past its first event).
    const PAGE_BYTES: u64 = 8 << 20;
    loop {
        // Take the wake-up permit before querying, so a commit during the query is not missed.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let position = ctx.router.position();
        match ctx
            .store
            .read_event_page(position, i64::MAX, PAGE, PAGE_BYTES)
            .await
        {
            Ok(page) if !page.events.is_empty() => {
                let full = !page.complete;
                let events: Vec<Arc<LogEvent>> = page
                    .events
                    .into_iter()
                    .map(|r| Arc::new(LogEvent::new(r.seq, r.event_id, r.body)))
                    .collect();
                for worker in ctx.router.route(&events) {
                    worker.notify_one();
                }
                if full {
                    continue;
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "reading the event log failed; retrying"),
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(ctx.settings.poll_interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Heartbeats, claims webhooks and runs their workers; moves idle cursors forward.
async fn hold_leases(ctx: Arc<Context>, wake: Arc<Notify>, stop: CancellationToken) {
    let mut workers: HashMap<Uuid, (JoinHandle<()>, CancellationToken)> = HashMap::new();
    let interval = (ctx.settings.lease_ttl / 4).max(Duration::from_millis(100));
    let mut last_full_flush = tokio::time::Instant::now();
    let mut registered = false;
    loop {
        match lease_cycle(&ctx, &mut workers, &stop, !registered).await {
            Ok(()) => registered = true,
            Err(err) => tracing::warn!(error = %err, "lease cycle failed; retrying"),
        }
        // An idle webhook's stored cursor only saves a restarted worker from reading
        // past events that do not match it again. Writing it on every cycle cost a row
        // update per idle webhook (10,000 of them in the W4 benchmark), so it is written
        // when far behind, or once a minute.
        let min_lag = if last_full_flush.elapsed() >= IDLE_FLUSH_EVERY {
            last_full_flush = tokio::time::Instant::now();
            1
        } else {
            IDLE_FLUSH_LAG
        };
        flush_idle_cursors(&ctx, min_lag).await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => break,
        }
    }
    // A restart starts idle webhooks from here.
    flush_idle_cursors(&ctx, 1).await;
    // Workers see the stop between attempts: the attempt in flight is finished and recorded.
    for (_, (handle, token)) in workers.drain() {
        token.cancel();
        let _ = handle.await;
    }
    if let Err(err) = ctx.store.remove_instance(ctx.instance).await {
        tracing::warn!(error = %err, "could not hand the leases back; they expire on their own");
    }
}

/// Idle cursors are written when this many events behind…
const IDLE_FLUSH_LAG: i64 = 50_000;
/// …or at least this often.
const IDLE_FLUSH_EVERY: Duration = Duration::from_secs(60);

async fn flush_idle_cursors(ctx: &Context, min_lag: i64) {
    let (position, idle) = ctx.router.idle_positions(min_lag);
    if !idle.is_empty()
        && let Err(err) = ctx
            .store
            .advance_cursors(ctx.instance, &idle, position)
            .await
    {
        tracing::warn!(error = %err, "could not move idle cursors");
    }
}

/// One cycle of the lease loop; `starting` for the first one, which registers the instance.
async fn lease_cycle(
    ctx: &Arc<Context>,
    workers: &mut HashMap<Uuid, (JoinHandle<()>, CancellationToken)>,
    stop: &CancellationToken,
    starting: bool,
) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    let ttl = ctx.settings.lease_ttl.as_millis() as Millis;
    let sent = std::time::Instant::now();
    if starting {
        ctx.store
            .register_instance(&ctx.identity.record(now))
            .await?;
    } else {
        ctx.store
            .heartbeat(ctx.instance, now, now - ttl, now - 10 * ttl)
            .await?;
    }
    ctx.heartbeat_written(sent);
    take_over_dead(ctx, starting).await?;
    // A set: with thousands of webhooks, the membership test below ran per worker.
    let owned: HashSet<Uuid> = ctx
        .store
        .claim_webhooks(ctx.instance, now - ttl, u32::MAX >> 1)
        .await?
        .into_iter()
        .collect();
    workers.retain(|_, (handle, _)| !handle.is_finished());
    for id in &owned {
        if !workers.contains_key(id) {
            let token = stop.child_token();
            let run = worker::run(ctx.clone(), *id, token.clone());
            let handle = tokio::spawn(run.instrument(worker::span(*id)));
            workers.insert(*id, (handle, token));
        }
    }
    workers.retain(|id, (_, token)| {
        let keep = owned.contains(id);
        if !keep {
            token.cancel();
        }
        keep
    });
    Ok(())
}

/// Takes the leases of registered instances that are dead for sure (see
/// [`Identity::outlived`]) instead of waiting for them to expire.
async fn take_over_dead(ctx: &Context, starting: bool) -> anyhow::Result<()> {
    let dead: Vec<_> = ctx
        .store
        .instances()
        .await?
        .into_iter()
        .filter(|other| ctx.identity.outlived(other, starting))
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = dead.iter().map(|d| d.id).collect();
    let moved = ctx.store.take_over(ctx.instance, &ids).await?;
    for d in &dead {
        tracing::info!(
            instance = d.name.as_deref().unwrap_or("unnamed"), id = %d.id, pid = ?d.pid,
            "took over the leases of an instance that is gone"
        );
    }
    tracing::info!(leases = moved, "leases taken over");
    Ok(())
}

/// The router takes a webhook's new filters at once (events routed from now on meet them);
/// its worker reloads the rest.
fn apply_change(ctx: &Context, webhook: &Webhook) {
    if webhook.spec.enabled && !webhook.deleted {
        ctx.router.reconfigure(
            webhook.id,
            webhook.spec.name.to_string(),
            webhook.spec.event_filters.0.clone(),
        );
    } else {
        // Disabled or soft-deleted: its worker stops; what it holds goes now.
        ctx.router.park(webhook.id);
    }
    ctx.router.request_reload(webhook.id);
}

/// Webhook changes announced by other instances reach the router, the worker and the lease loop.
async fn relay_changes(
    ctx: Arc<Context>,
    lease_wake: Arc<Notify>,
    mut changed: mpsc::UnboundedReceiver<Uuid>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            id = changed.recv() => match id {
                Some(id) => {
                    match ctx.store.webhook(id).await {
                        Ok(Some(webhook)) => apply_change(&ctx, &webhook),
                        Ok(None) => {
                            ctx.router.park(id);
                            ctx.router.request_reload(id);
                        }
                        Err(_) => {
                            ctx.router.request_reload(id);
                        }
                    }
                    lease_wake.notify_one();
                }
                None => return,
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Retention, continuously: every [`PRUNE_EVERY`] (and at start) it drops what is past
/// retention in bounded steps, oldest first, until nothing is left. The bodies of events go
/// after `retention`, their ids after twice that (an eventId sent again within that time is
/// still acknowledged as a duplicate), attempts after `retention`.
async fn prune(ctx: Arc<Context>, stop: CancellationToken) {
    loop {
        let mut done = Pruned::default();
        loop {
            let cuts = retention_cuts(ctx.clock.now_ms(), ctx.settings.retention);
            match ctx.store.prune_step(&cuts, PRUNE_STEP).await {
                Ok(step) => {
                    done.bodies += step.bodies;
                    done.events += step.events;
                    done.attempts += step.attempts;
                    if !step.more(PRUNE_STEP) {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "pruning failed; it goes on at the next round");
                    break;
                }
            }
            // A pause between steps: a large backlog of old rows does not crowd out the
            // writes of delivery.
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_PAUSE) => {}
                _ = stop.cancelled() => return,
            }
        }
        if done != Pruned::default() {
            tracing::info!(
                bodies = done.bodies,
                events = done.events,
                attempts = done.attempts,
                "pruned what is past retention"
            );
        }
        // The injected clock too, so that tests move time instead of waiting.
        let next = ctx.clock.now_ms() + PRUNE_EVERY.as_millis() as Millis;
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = ctx.clock.sleep_until(next) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// The pause between two steps of one round.
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// Where retention cuts at `now`: bodies and attempts after `retention`, event ids after
/// twice that.
pub fn retention_cuts(now: Millis, retention: Duration) -> RetentionCuts {
    let retention = Millis::try_from(retention.as_millis()).unwrap_or(Millis::MAX);
    RetentionCuts {
        bodies_before: now.saturating_sub(retention),
        ids_before: now.saturating_sub(retention.saturating_mul(2)),
        attempts_before: now.saturating_sub(retention),
    }
}
