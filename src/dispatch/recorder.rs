//! The dispatcher's group commit. Every worker's write (the batch it is about to send, an
//! attempt with the state it led to) goes through one writer task: while one transaction
//! commits, the writes that arrive meanwhile queue up and go together in the next one. A
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
        let (writes, replies): (Vec<_>, Vec<_>) =
            jobs.drain(..).map(|job| (job.write, job.reply)).unzip();
        match store.record_dispatch(owner, &writes).await {
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
}
