//! Where a worker's events come from, in log order: the backlog it read ahead from the log
//! (catch-up), or its inbox, which the router fills with what it routes live.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Worker;
use crate::dispatch::event::LogEvent;
use crate::domain::filter::webhook_matches;

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
impl Worker {
    /// Up to batchSize matching events after `read_pos`: from the backlog, the log
    /// (catch-up) or the inbox, in log order. Empty when there is nothing to deliver.
    pub(super) async fn next_events(&mut self) -> anyhow::Result<Vec<Arc<LogEvent>>> {
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
}

/// Matching events read ahead from the log, counted (in [`LogEvent::held_bytes`]) against
/// what all workers' backlogs may hold together.
pub(super) struct Backlog {
    events: VecDeque<Arc<LogEvent>>,
    bytes: usize,
    all: Arc<AtomicUsize>,
}

impl Backlog {
    pub(super) fn new(all: Arc<AtomicUsize>) -> Self {
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

    pub(super) fn clear(&mut self) {
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
