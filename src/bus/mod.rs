//! The event bus's entry (SPEC §4): publishes are committed to the log before they are
//! acknowledged. Concurrent publishes share one transaction (group commit): while one
//! commit is in flight, the next requests queue up and go together in the next one.

pub mod nats;
pub mod ratelimit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::domain::event::NewEvent;
use crate::metrics::Metrics;
use crate::store::{Appended, Store, StoreError};

/// Most events written in one transaction.
const MAX_GROUP_EVENTS: usize = 10_000;
/// Publish requests waiting for a commit, at most (beyond, publishers wait to enqueue).
const QUEUE: usize = 4096;

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Option<i64>>, Arc<StoreError>>>,
}

/// Runs after each commit with the events written and where they went (to hand them to the
/// dispatcher without reading them back).
pub type OnCommit = Arc<dyn Fn(Vec<NewEvent>, Appended) + Send + Sync>;

/// Hands events to the group-commit writer.
#[derive(Clone)]
pub struct Ingestor {
    jobs: mpsc::Sender<Job>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the event log is not available: {0}")]
    Store(Arc<StoreError>),
    #[error("outhook is shutting down")]
    Closed,
}

impl Ingestor {
    /// Starts the writer; `committed` runs after each commit, once the publishers have
    /// their answers.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        committed: OnCommit,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write(rx, store, clock, metrics, committed));
        (Self { jobs: tx }, task)
    }

    /// Stores events; returns each one's log position, `None` for an eventId already in
    /// the log. Returns once the events are committed.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Option<i64>>, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { events, reply })
            .await
            .map_err(|_| IngestError::Closed)?;
        answer
            .await
            .map_err(|_| IngestError::Closed)?
            .map_err(IngestError::Store)
    }
}

/// After the database did not answer, publishes are refused at once for this long rather
/// than each waiting for a connection until the pool gives up (and those queued behind
/// that for as long again). The first publish after it tries the database again.
const REFUSE_AFTER_UNAVAILABLE: Duration = Duration::from_millis(500);

async fn write(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    committed: OnCommit,
) {
    let mut unavailable: Option<(Instant, Arc<StoreError>)> = None;
    while let Some(first) = rx.recv().await {
        let mut count = first.events.len();
        let mut jobs = vec![first];
        while count < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut all = Vec::with_capacity(count);
        let mut sizes = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        if let Some((since, err)) = &unavailable
            && since.elapsed() < REFUSE_AFTER_UNAVAILABLE
        {
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
            continue;
        }
        for job in jobs {
            sizes.push(job.events.len());
            all.extend(job.events);
            replies.push(job.reply);
        }
        match store.append_events(&all, clock.now_ms()).await {
            Ok(appended) => {
                unavailable = None;
                let positions = &appended.positions;
                let stored = positions.iter().filter(|p| p.is_some()).count() as u64;
                metrics.ingested(stored, positions.len() as u64 - stored);
                let mut rest = positions.iter().copied();
                for (reply, size) in replies.into_iter().zip(sizes) {
                    let _ = reply.send(Ok(rest.by_ref().take(size).collect()));
                }
                committed(all, appended);
            }
            Err(err) => {
                tracing::error!(error = %err, events = all.len(), "appending to the event log failed");
                let err = Arc::new(err);
                if err.is_unavailable() {
                    unavailable = Some((Instant::now(), err.clone()));
                }
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
