//! The dispatcher's group commit. Every worker's write (the batch it is about to send, an
//! attempt with the state it led to) goes through one writer: the writes that arrive while
//! a transaction commits queue up and go together in the next one. (Several transactions
//! in flight at once were measured: more, smaller commits cost more than they saved.) A
//! worker still waits for its own write to be durable before it moves on, so nothing is
//! acknowledged early; only the commits are shared.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::store::{DispatchWrite, Store, StoreError};

/// Most writes in one transaction.
const MAX_GROUP: usize = 512;

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
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        commit(&*store, owner, std::mem::take(&mut jobs)).await;
    }
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
