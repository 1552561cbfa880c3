//! Routing: one scanner per instance tails the event log and hands each event to the
//! workers of this instance whose filters match it, through bounded inboxes.
//!
//! A worker sees the log in two ways. Events up to its `live_from` position it reads from
//! the log itself (catch-up); events after it arrive in its inbox. When the inbox
//! overflows, the router stops filling it and the worker catches up from the log again, so
//! memory stays bounded however far behind a webhook is. An inbox is bounded by events and
//! by bytes, and all inboxes together by bytes; a webhook that is not sending (waiting for
//! a retry, stopped, deleted) is parked: its inbox is emptied and not filled again, and
//! its worker reads the log when it sends again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use uuid::Uuid;

use super::event::LogEvent;
use super::index::FilterIndex;
use crate::domain::filter::EventFilter;
use crate::domain::filter::webhook_matches;
use crate::metrics::Lag;

/// How many events an inbox holds before the worker has to read the log instead…
pub const INBOX_CAPACITY: usize = 1024;
/// …and how many bytes of events (by [`LogEvent::held_bytes`]). A webhook that keeps up
/// holds a few events; one that is behind reads the log.
pub const INBOX_BYTES: usize = 2 << 20;
/// All inboxes together, at most: past it, the webhook that would go over reads the log.
/// (An event shared by several inboxes is counted in each.)
pub const INBOXES_BYTES: usize = 32 << 20;

struct Slot {
    name: String,
    filters: Arc<Vec<EventFilter>>,
    inbox: VecDeque<Arc<LogEvent>>,
    /// What the inbox holds, by [`LogEvent::held_bytes`].
    inbox_bytes: usize,
    /// The router delivers events after this position; the worker reads the rest.
    live_from: i64,
    overflowed: bool,
    /// The worker waits with nothing to do: every routed event is behind it.
    idle: bool,
    reload: bool,
    /// Every event up to here was delivered or skipped (for the lag gauge).
    done_through: i64,
    /// The position last written as this webhook's cursor by an idle flush.
    flushed: i64,
    wake: Arc<Notify>,
}

struct State {
    /// Every event up to here has been routed.
    position: i64,
    index: FilterIndex,
    slots: HashMap<Uuid, Slot>,
    /// What all inboxes hold together.
    inbox_bytes: usize,
}

impl Slot {
    /// Empties the inbox; returns the bytes it held.
    fn clear(&mut self) -> usize {
        self.inbox.clear();
        std::mem::take(&mut self.inbox_bytes)
    }
}

pub struct Router {
    state: Mutex<State>,
}

/// What a worker takes from its inbox.
pub struct Taken {
    pub events: Vec<Arc<LogEvent>>,
    /// The inbox overflowed and is now empty: the worker must read the log up to a new
    /// `live_from` (see [`Router::reset_live`]).
    pub must_catch_up: bool,
}

impl Router {
    pub fn new(position: i64) -> Self {
        Self {
            state: Mutex::new(State {
                position,
                index: FilterIndex::default(),
                slots: HashMap::new(),
                inbox_bytes: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every change is one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn position(&self) -> i64 {
        self.lock().position
    }

    /// Starts routing to a worker; returns its `live_from`.
    pub fn register(
        &self,
        id: Uuid,
        name: String,
        filters: impl Into<Arc<Vec<EventFilter>>>,
        wake: Arc<Notify>,
        done_through: i64,
    ) -> i64 {
        let filters = filters.into();
        let mut state = self.lock();
        let live_from = state.position;
        if let Some(mut old) = state.slots.remove(&id) {
            state.index.remove(id, &old.filters);
            state.inbox_bytes -= old.clear();
        }
        state.index.add(id, &filters);
        state.slots.insert(
            id,
            Slot {
                name,
                filters,
                inbox: VecDeque::new(),
                inbox_bytes: 0,
                live_from,
                overflowed: false,
                idle: false,
                reload: false,
                done_through,
                flushed: done_through,
                wake,
            },
        );
        live_from
    }

    pub fn unregister(&self, id: Uuid) {
        let mut state = self.lock();
        if let Some(mut slot) = state.slots.remove(&id) {
            state.index.remove(id, &slot.filters);
            state.inbox_bytes -= slot.clear();
        }
    }

    /// The webhook is not sending (it waits for a retry, is stopped or is going away):
    /// its inbox is emptied and not filled again; its worker reads the log when it sends
    /// again (as after an overflow).
    pub fn park(&self, id: Uuid) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.get_mut(&id) {
            let freed = slot.clear();
            slot.overflowed = true;
            slot.idle = false;
            state.inbox_bytes -= freed;
        }
    }

    /// What all inboxes hold, in bytes.
    pub fn inbox_bytes(&self) -> usize {
        self.lock().inbox_bytes
    }

    pub fn is_registered(&self, id: Uuid) -> bool {
        self.lock().slots.contains_key(&id)
    }

    /// Hands events (in log order, after the current position) to the matching workers and
    /// returns the wake-ups to send once the lock is released.
    pub fn route(&self, events: &[Arc<LogEvent>]) -> Vec<Arc<Notify>> {
        let mut state = self.lock();
        route_locked(&mut state, events)
    }

    /// Routes the events of one append that took the positions after `from` up to `to`,
    /// if the router stands exactly at `from`. Otherwise (another instance appended in
    /// between, or the scanner got there first) it does nothing and returns `None`: the
    /// scanner reads the log instead. `build` makes the events, outside the lock, and only
    /// when some webhook could want them.
    pub fn route_appended(
        &self,
        from: i64,
        to: i64,
        build: impl FnOnce() -> Vec<Arc<LogEvent>>,
    ) -> Option<Vec<Arc<Notify>>> {
        {
            let mut state = self.lock();
            if state.position != from {
                return None;
            }
            if state.slots.is_empty() {
                state.position = to;
                return Some(Vec::new());
            }
        }
        let events = build();
        let mut state = self.lock();
        if state.position != from {
            return None;
        }
        let woken = route_locked(&mut state, &events);
        // Positions the append took but no event got (eventIds already in the log).
        state.position = state.position.max(to);
        Some(woken)
    }

    pub fn live_from(&self, id: Uuid) -> Option<i64> {
        self.lock().slots.get(&id).map(|s| s.live_from)
    }

    /// Takes up to `max` events after position `after` from the inbox.
    pub fn take(&self, id: Uuid, max: usize, after: i64) -> Taken {
        let mut state = self.lock();
        let Some(slot) = state.slots.get_mut(&id) else {
            return Taken {
                events: Vec::new(),
                must_catch_up: false,
            };
        };
        slot.idle = false;
        let mut events = Vec::new();
        let mut freed = 0;
        while events.len() < max {
            let Some(e) = slot.inbox.pop_front() else {
                break;
            };
            freed += e.held_bytes();
            if e.seq > after {
                events.push(e);
            }
        }
        slot.inbox_bytes -= freed;
        let must_catch_up = slot.overflowed && slot.inbox.is_empty();
        state.inbox_bytes -= freed;
        Taken {
            must_catch_up,
            events,
        }
    }

    /// After an overflow: routing resumes from the current position; the worker reads the
    /// log up to it. Returns the new `live_from`.
    pub fn reset_live(&self, id: Uuid) -> i64 {
        let mut state = self.lock();
        let position = state.position;
        if let Some(slot) = state.slots.get_mut(&id) {
            let freed = slot.clear();
            slot.overflowed = false;
            slot.live_from = position;
            state.inbox_bytes -= freed;
        }
        position
    }

    /// New filters for the events routed from now on. Events routed before keep the
    /// verdict of the filters they met (those in the inbox stay there).
    pub fn reconfigure(&self, id: Uuid, name: String, filters: impl Into<Arc<Vec<EventFilter>>>) {
        let mut state = self.lock();
        let Some(slot) = state.slots.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut slot.filters, filters.into());
        let new = slot.filters.clone();
        slot.name = name;
        state.index.remove(id, &old);
        state.index.add(id, &new);
    }

    /// Marks the worker idle unless something arrived meanwhile; true when it may wait.
    pub fn try_idle(&self, id: Uuid) -> bool {
        let mut state = self.lock();
        let position = state.position;
        match state.slots.get_mut(&id) {
            Some(slot) if slot.inbox.is_empty() && !slot.overflowed && !slot.reload => {
                slot.idle = true;
                slot.done_through = slot.done_through.max(position);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Asks a worker to reload its webhook; false when no worker here has it.
    pub fn request_reload(&self, id: Uuid) -> bool {
        let mut state = self.lock();
        match state.slots.get_mut(&id) {
            Some(slot) => {
                slot.reload = true;
                slot.wake.notify_one();
                true
            }
            None => false,
        }
    }

    pub fn take_reload(&self, id: Uuid) -> bool {
        let mut state = self.lock();
        state
            .slots
            .get_mut(&id)
            .is_some_and(|slot| std::mem::take(&mut slot.reload))
    }

    pub fn set_done_through(&self, id: Uuid, seq: i64) {
        if let Some(slot) = self.lock().slots.get_mut(&id) {
            slot.done_through = slot.done_through.max(seq);
        }
    }

    /// Idle workers have considered every routed event: their cursors may move to the
    /// current position. Returns that position and the webhooks whose stored cursor is at
    /// least `min_lag` events behind it.
    pub fn idle_positions(&self, min_lag: i64) -> (i64, Vec<Uuid>) {
        let mut state = self.lock();
        let position = state.position;
        let mut ids = Vec::new();
        for (id, slot) in state.slots.iter_mut() {
            if slot.idle
                && slot.inbox.is_empty()
                && !slot.overflowed
                && position - slot.flushed >= min_lag.max(1)
            {
                slot.done_through = position;
                slot.flushed = position;
                ids.push(*id);
            }
        }
        (position, ids)
    }

    pub fn lags(&self) -> Vec<Lag> {
        let state = self.lock();
        state
            .slots
            .iter()
            .map(|(id, slot)| Lag {
                id: *id,
                name: slot.name.clone(),
                events: if slot.idle {
                    0
                } else {
                    (state.position - slot.done_through).max(0)
                },
            })
            .collect()
    }
}

/// Hands each event after the router's position to the inboxes of the webhooks it
/// matches; returns the workers to wake.
fn route_locked(state: &mut State, events: &[Arc<LogEvent>]) -> Vec<Arc<Notify>> {
    let mut woken: Vec<Uuid> = Vec::new();
    for event in events {
        if event.seq <= state.position {
            continue;
        }
        if let Some(event_type) = event.facts.event_type {
            let size = event.held_bytes();
            for id in state.index.candidates(event_type, &event.facts.entity_type) {
                let Some(slot) = state.slots.get_mut(&id) else {
                    continue;
                };
                if event.seq <= slot.live_from
                    || slot.overflowed
                    || !webhook_matches(&slot.filters, &event.facts)
                {
                    continue;
                }
                if slot.inbox.len() >= INBOX_CAPACITY
                    || slot.inbox_bytes + size > INBOX_BYTES
                    || state.inbox_bytes + size > INBOXES_BYTES
                {
                    slot.overflowed = true;
                } else {
                    slot.inbox.push_back(event.clone());
                    slot.inbox_bytes += size;
                    state.inbox_bytes += size;
                }
                slot.idle = false;
                if !woken.contains(&id) {
                    woken.push(id);
                }
            }
        }
        state.position = event.seq;
    }
    woken
        .iter()
        .filter_map(|id| state.slots.get(id).map(|s| s.wake.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: i64, event_type: &str, entity: &str) -> Arc<LogEvent> {
        let body =
            json!({"eventType": event_type, "entity": {"id": Uuid::new_v4(), "type": entity}})
                .to_string();
        Arc::new(LogEvent::new(seq, Uuid::new_v4(), body))
    }

    fn filters(v: serde_json::Value) -> Vec<EventFilter> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_append_is_routed_from_memory_only_where_the_router_stands() {
        let router = Router::new(10);
        // Nobody to route to: the position moves over the append without building events.
        let built = std::cell::Cell::new(false);
        let woken = router.route_appended(10, 12, || {
            built.set(true);
            Vec::new()
        });
        assert_eq!(woken.map(|w| w.len()), Some(0));
        assert!(!built.get());
        assert_eq!(router.position(), 12);

        let id = Uuid::new_v4();
        let wake = Arc::new(Notify::new());
        router.register(
            id,
            "t".into(),
            filters(json!([{"eventType": "entityCreated"}])),
            wake,
            12,
        );
        // Another append (another instance's) is between: the scanner reads the log.
        assert!(
            router
                .route_appended(13, 14, || vec![event(14, "entityCreated", "table")])
                .is_none()
        );
        assert_eq!(router.position(), 12);
        // Positions 13 and 15 went to eventIds already in the log: the append still ends at 15.
        let woken = router.route_appended(12, 15, || vec![event(14, "entityCreated", "table")]);
        assert_eq!(woken.map(|w| w.len()), Some(1));
        assert_eq!(router.position(), 15);
        let taken = router.take(id, 10, 12);
        assert_eq!(taken.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [14]);
    }

    #[test]
    fn routes_matching_events_after_live_from() {
        let router = Router::new(10);
        let (tables, all) = (Uuid::new_v4(), Uuid::new_v4());
        let wake = Arc::new(Notify::new());
        assert_eq!(
            router.register(
                tables,
                "t".into(),
                filters(json!([{"eventType": "entityCreated", "entities": ["table"]}])),
                wake.clone(),
                10
            ),
            10
        );
        router.register(
            all,
            "a".into(),
            filters(json!([{"eventType": "entityCreated"}])),
            wake.clone(),
            10,
        );
        let woken = router.route(&[
            event(9, "entityCreated", "table"),
            event(11, "entityCreated", "table"),
            event(12, "entityCreated", "dashboard"),
            event(13, "entityDeleted", "table"),
        ]);
        assert_eq!(woken.len(), 2);
        assert_eq!(router.position(), 13);
        let seqs = |t: Taken| t.events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(router.take(tables, 10, 0)), [11]);
        assert_eq!(seqs(router.take(all, 1, 0)), [11]);
        assert_eq!(seqs(router.take(all, 10, 0)), [12]);
        assert!(router.try_idle(tables));
        assert_eq!(
            router.idle_positions(100),
            (13, vec![]),
            "not far enough behind"
        );
        assert_eq!(router.idle_positions(1), (13, vec![tables]));
        assert_eq!(router.idle_positions(1), (13, vec![]), "flushed once");
    }

    #[test]
    fn an_overflowing_inbox_sends_the_worker_back_to_the_log() {
        let router = Router::new(0);
        let id = Uuid::new_v4();
        router.register(
            id,
            "w".into(),
            filters(json!([{"eventType": "entityCreated"}])),
            Arc::new(Notify::new()),
            0,
        );
        let events: Vec<_> = (1..=(INBOX_CAPACITY as i64 + 5))
            .map(|s| event(s, "entityCreated", "table"))
            .collect();
        router.route(&events);
        let first = router.take(id, INBOX_CAPACITY, 0);
        assert_eq!(first.events.len(), INBOX_CAPACITY);
        assert!(first.must_catch_up);
        assert!(!router.try_idle(id), "not idle while events are missing");
        assert_eq!(router.reset_live(id), INBOX_CAPACITY as i64 + 5);
        router.route(&[event(INBOX_CAPACITY as i64 + 6, "entityCreated", "table")]);
        let next = router.take(id, 10, 0);
        assert_eq!((next.events.len(), next.must_catch_up), (1, false));
    }

    fn large(seq: i64, bytes: usize) -> Arc<LogEvent> {
        let body =
            json!({"eventType": "entityCreated", "entity": {"id": Uuid::new_v4(), "type": "table"},
                          "padding": "x".repeat(bytes)})
            .to_string();
        Arc::new(LogEvent::new(seq, Uuid::new_v4(), body))
    }

    fn all_created(router: &Router, id: Uuid) {
        router.register(
            id,
            "w".into(),
            filters(json!([{"eventType": "entityCreated"}])),
            Arc::new(Notify::new()),
            0,
        );
    }

    #[test]
    fn inboxes_are_bounded_by_bytes_each_and_together() {
        let router = Router::new(0);
        let id = Uuid::new_v4();
        all_created(&router, id);
        // 250 KiB events: the inbox takes what fits in its bytes, then the worker reads
        // the log.
        let events: Vec<_> = (1..=20).map(|s| large(s, 250 << 10)).collect();
        router.route(&events);
        assert!(router.inbox_bytes() <= INBOX_BYTES);
        let taken = router.take(id, 100, 0);
        assert_eq!(taken.events.len(), INBOX_BYTES / events[0].held_bytes());
        assert!(taken.must_catch_up);
        assert_eq!(router.inbox_bytes(), 0, "taking frees the count");

        // Many webhooks: all inboxes together stay within their bound.
        let router = Router::new(0);
        let ids: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
        ids.iter().for_each(|id| all_created(&router, *id));
        let events: Vec<_> = (1..=8).map(|s| large(s, 200 << 10)).collect();
        router.route(&events);
        assert!(router.inbox_bytes() <= INBOXES_BYTES);
        let overflowed = ids
            .iter()
            .filter(|id| router.take(**id, 100, 0).must_catch_up)
            .count();
        assert!(overflowed > 0, "some webhooks read the log instead");
        assert_eq!(router.inbox_bytes(), 0);
    }

    #[test]
    fn a_parked_webhook_holds_nothing_until_it_reads_the_log_again() {
        let router = Router::new(0);
        let id = Uuid::new_v4();
        all_created(&router, id);
        router.route(&[large(1, 1000), large(2, 1000)]);
        assert!(router.inbox_bytes() > 0);
        router.park(id);
        assert_eq!(router.inbox_bytes(), 0, "parking empties the inbox");
        let woken = router.route(&[large(3, 1000)]);
        assert!(woken.is_empty(), "a parked webhook is not woken");
        assert_eq!(router.inbox_bytes(), 0, "nor filled");
        assert!(
            !router.try_idle(id),
            "its events are in the log, not behind it"
        );
        // Sending again: it reads the log from where it is up to the router's position.
        let taken = router.take(id, 10, 0);
        assert!(taken.events.is_empty() && taken.must_catch_up);
        assert_eq!(router.reset_live(id), 3);
        router.route(&[large(4, 1000)]);
        assert_eq!(router.take(id, 10, 0).events.len(), 1);
        // Going away frees its inbox at once.
        router.route(&[large(5, 1000)]);
        router.unregister(id);
        assert_eq!(router.inbox_bytes(), 0);
    }

    #[test]
    fn reconfiguring_changes_what_is_routed_from_then_on() {
        let router = Router::new(0);
        let id = Uuid::new_v4();
        router.register(
            id,
            "w".into(),
            filters(json!([{"eventType": "entityCreated"}])),
            Arc::new(Notify::new()),
            0,
        );
        router.route(&[event(1, "entityCreated", "table")]);
        router.reconfigure(
            id,
            "w".into(),
            filters(json!([{"eventType": "entityDeleted"}])),
        );
        router.route(&[
            event(2, "entityCreated", "table"),
            event(3, "entityDeleted", "table"),
        ]);
        let seqs: Vec<i64> = router
            .take(id, 10, 0)
            .events
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            [1, 3],
            "routed before the change: kept; after: the new filters"
        );
        assert!(router.request_reload(id));
        assert!(router.take_reload(id) && !router.take_reload(id));
        router.unregister(id);
        assert!(!router.request_reload(id));
    }
}
