//! The event as the dispatcher carries it: read from the log (or taken from an append as
//! it commits), shared by every webhook it goes to.

use uuid::Uuid;

use crate::domain::event::EventFacts;

/// An event read from the log, with the facts filters need, shared by every webhook it
/// goes to.
#[derive(Debug)]
pub struct LogEvent {
    pub seq: i64,
    pub event_id: Uuid,
    pub body: String,
    pub facts: EventFacts,
}

impl LogEvent {
    pub fn new(seq: i64, event_id: Uuid, body: String) -> Self {
        let facts = EventFacts::from_body(&body);
        Self {
            seq,
            event_id,
            body,
            facts,
        }
    }

    /// About what holding this event costs: its body and a fixed part for the rest.
    pub fn held_bytes(&self) -> usize {
        self.body.len() + 256
    }
}
