//! The dispatcher's group commit. Every worker's write (the batch it is about to send, an
//! attempt with the state it led to) goes through one writer: the writes that arrive while
//! a transaction commits queue up and go together in the next one, and a few transactions
//! commit at once. A worker still waits for its own write to be durable before it moves
//! on, so nothing is acknowledged early; only the commits are shared.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::store::{DispatchWrite, Store, StoreError};

/// Most writes in one transaction.
const MAX_GROUP: usize = 512;
/// Transactions committing at once. The commit wait is mostly the log flush, which the
/// database shares between concurrent commits; one at a time would leave it idle.
const IN_FLIGHT: usize = 4;

struct Job {
    write: DispatchWrite,
    reply: oneshot::Sender<Result<bool, Arc<StoreError>>>,
}

/// Hands workers' writes to the group-commit writer.
#[derive(Clone)]
pub struct Recorder {
    jobs: mpsc::UnboundedSender<Job>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording delivery state failed: {0}")]
    Store(Arc<StoreError>),
    #[error("the dispatcher is shutting down")]
    Closed,
}

impl Recorder {
    /// Starts the writer for the leases `owner` holds. It stops once every `Recorder` clone
    /// is dropped and the queued writes are written.
    pub fn start(store: Arc<dyn Store>, owner: Uuid) -> (Self, JoinHandle<()>) {
        // Unbounded is bounded in practice: each worker has at most one write queued.
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(write(rx, store, owner));
        (Self { jobs: tx }, task)
    }

    /// Writes durably; false when this instance no longer holds the webhook's lease.
    pub async fn record(&self, write: DispatchWrite) -> Result<bool, RecordError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .map_err(|_| RecordError::Closed)?;
        answer
            .await
            .map_err(|_| RecordError::Closed)?
            .map_err(RecordError::Store)
    }
}

async fn write(mut rx: mpsc::UnboundedReceiver<Job>, store: Arc<dyn Store>, owner: Uuid) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // What arrived while waiting for a slot goes in the same transaction.
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let group = std::mem::take(&mut jobs);
        let store = store.clone();
        tokio::spawn(async move {
            commit(&*store, owner, group).await;
            drop(slot);
        });
    }
    // Wait for the groups still committing.
    let _ = slots.acquire_many(IN_FLIGHT as u32).await;
}

async fn commit(store: &dyn Store, owner: Uuid, group: Vec<Job>) {
    let (writes, replies): (Vec<_>, Vec<_>) =
        group.into_iter().map(|job| (job.write, job.reply)).unzip();
    let mut tries = 0;
    let result = loop {
        tries += 1;
        match store.record_dispatch(owner, &writes).await {
            // Two transactions touching the same rows in another order (a concurrent
            // group, the idle-cursor flush) can deadlock; the database aborts one, which
            // wrote nothing and can go again.
            Err(err) if tries < 3 && err.is_transient() => continue,
            result => break result,
        }
    };
    match result {
        Ok(applied) => {
            for (reply, held) in replies.into_iter().zip(applied) {
                let _ = reply.send(Ok(held));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, writes = writes.len(), "recording delivery state failed");
            let err = Arc::new(err);
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
