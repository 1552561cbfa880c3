//! Publishing: validated events go to the log through the group-commit writer.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::EventFault;
use super::{Caller, Result, Service, ServiceError};
use crate::bus::IngestError;
use crate::domain::event::{EventFacts, NewEvent};
use crate::domain::signature::{OM_SIGNATURE_HEADER, SignatureScheme, verify};
use crate::store::StoredEvent;

/// The answer to a publish: sent once the events are committed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The eventId of every event, in the order sent (generated where none was given).
    pub event_ids: Vec<Uuid>,
    /// How many were new and are now in the log.
    pub stored: usize,
    /// How many were already in the log (same eventId): acknowledged, not stored again.
    pub duplicates: usize,
}

impl Service {
    /// The events of a publish body, one ChangeEvent or an array of at most `max`, all
    /// valid: what `POST /api/v1/events` and a bus message carry alike. Refused as a whole
    /// when any is invalid, each bad one named by index and field.
    pub fn read_events(&self, body: Value, max: usize) -> Result<Vec<NewEvent>> {
        let items = match body {
            Value::Array(items) => items,
            object @ Value::Object(_) => vec![object],
            _ => {
                return Err(ServiceError::Malformed(
                    "the body must be an event object or an array of events".into(),
                ));
            }
        };
        if items.is_empty() {
            return Err(ServiceError::invalid("body", "the array holds no events"));
        }
        if items.len() > max {
            return Err(ServiceError::TooMany(format!(
                "at most {max} events per request (got {})",
                items.len()
            )));
        }
        let now = self.clock.now_ms();
        let mut events = Vec::with_capacity(items.len());
        let mut faults = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match NewEvent::parse(item, now) {
                Ok(event) => events.push(event),
                Err(e) => faults.push(EventFault {
                    index,
                    field: if e.field.is_empty() {
                        "event".into()
                    } else {
                        e.field
                    },
                    message: e.message,
                }),
            }
        }
        if !faults.is_empty() {
            return Err(ServiceError::InvalidEvents(faults));
        }
        Ok(events)
    }

    /// A publisher whose token has a signing secret signs each body as OpenMetadata does:
    /// `X-OM-Signature: sha256=<base64 HMAC-SHA256(secret, body)>`. Checked on the exact
    /// bytes received, in constant time; tokens without a signing secret need none.
    pub fn check_signature(
        &self,
        caller: &Caller,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<()> {
        let Some(secret) = &caller.signing_secret else {
            return Ok(());
        };
        let Some(signature) = signature else {
            return Err(ServiceError::BadSignature(format!(
                "this token signs its publishes: the {OM_SIGNATURE_HEADER} header \
                 (sha256=<base64 HMAC-SHA256 of the body>) is missing"
            )));
        };
        verify(
            SignatureScheme::OpenMetadataBase64,
            secret.expose(),
            signature,
            None,
            None,
            body,
        )
        .map_err(|_| {
            ServiceError::BadSignature(format!(
                "the {OM_SIGNATURE_HEADER} header does not match the body for this token's \
                 signing secret (expected sha256=<base64 HMAC-SHA256 of the exact body>)"
            ))
        })
    }

    /// Appends the events to the log, all or none; returns once they are committed.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Published> {
        let event_ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let positions = self
            .ingestor
            .publish(events)
            .await
            .map_err(|err| match err {
                IngestError::Store(err) if err.is_unavailable() || err.is_transient() => {
                    ServiceError::Unavailable(
                        "the event log cannot be written right now; retry".into(),
                    )
                }
                IngestError::Store(err) => ServiceError::Internal(anyhow::anyhow!(err)),
                IngestError::Closed => {
                    ServiceError::Unavailable("outhook is shutting down; retry".into())
                }
            })?;
        let stored = positions.iter().filter(|p| p.is_some()).count();
        Ok(Published {
            event_ids,
            stored,
            duplicates: positions.len() - stored,
        })
    }
}

/// Which events the log browser shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSearch {
    All,
    EventId(Uuid),
    /// Events whose entity's fullyQualifiedName contains this text (ignoring case).
    Fqn(String),
    /// Events on entities of this type (ignoring case).
    EntityType(String),
    /// Events of this eventType (ignoring case).
    EventType(String),
}

/// An event found in the log.
pub struct FoundEvent {
    pub seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub entity_type: String,
    pub fqn: String,
    pub timestamp: Option<crate::clock::Millis>,
    /// The event as stored, indented.
    pub json: String,
}

/// A page of the log, newest first.
pub struct EventsPage {
    pub events: Vec<FoundEvent>,
    /// Where to read older events on (below this position), when any may be left.
    pub older: Option<i64>,
    /// The oldest position looked at, when the search stopped at its bound before filling
    /// the page.
    pub searched_to: Option<i64>,
}

/// Log rows read at a time when searching.
const SEARCH_PAGE: u32 = 50;
/// Log rows read at most for one page of results.
const SEARCH_LIMIT: u32 = 2_000;

impl EventSearch {
    fn matches(&self, facts: &EventFacts) -> bool {
        match self {
            EventSearch::All | EventSearch::EventId(_) => true,
            EventSearch::Fqn(text) => facts
                .fqn
                .as_deref()
                .is_some_and(|fqn| fqn.to_lowercase().contains(&text.to_lowercase())),
            EventSearch::EntityType(t) => facts.entity_type.eq_ignore_ascii_case(t),
            EventSearch::EventType(t) => facts
                .event_type
                .is_some_and(|e| e.as_str().eq_ignore_ascii_case(t)),
        }
    }
}

fn found(event: StoredEvent) -> FoundEvent {
    let facts = EventFacts::from_body(&event.body);
    let value: serde_json::Value = serde_json::from_str(&event.body).unwrap_or_default();
    FoundEvent {
        seq: event.seq,
        event_id: event.event_id,
        event_type: facts.event_type.map_or("", |e| e.as_str()).to_owned(),
        entity_type: facts.entity_type,
        fqn: facts.fqn.unwrap_or_default(),
        timestamp: value["timestamp"].as_i64(),
        json: serde_json::to_string_pretty(&value).unwrap_or(event.body),
    }
}

impl Service {
    /// Up to `limit` events that `search` matches, newest first, below position `before`
    /// (or from the newest). At most [`SEARCH_LIMIT`] log rows are read for one page.
    pub async fn recent_events(
        &self,
        search: &EventSearch,
        before: Option<i64>,
        limit: u32,
    ) -> Result<EventsPage> {
        if let EventSearch::EventId(id) = search {
            let event = self.store.event_by_id(*id).await?;
            return Ok(EventsPage {
                events: event.into_iter().map(found).collect(),
                older: None,
                searched_to: None,
            });
        }
        let mut below = before.unwrap_or(i64::MAX);
        let (mut events, mut scanned) = (Vec::new(), 0u32);
        while scanned < SEARCH_LIMIT {
            let rows = self.store.events_before(below, SEARCH_PAGE).await?;
            let Some(last) = rows.last().map(|e| e.seq) else {
                return Ok(EventsPage {
                    events,
                    older: None,
                    searched_to: None,
                });
            };
            scanned += rows.len() as u32;
            for row in rows {
                if search.matches(&EventFacts::from_body(&row.body)) {
                    let seq = row.seq;
                    events.push(found(row));
                    if events.len() >= limit as usize {
                        return Ok(EventsPage {
                            events,
                            older: Some(seq),
                            searched_to: None,
                        });
                    }
                }
            }
            below = last;
        }
        Ok(EventsPage {
            events,
            older: Some(below),
            searched_to: Some(below),
        })
    }
}
