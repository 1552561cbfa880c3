//! Which webhooks could match an event, by (eventType, entity type), so that routing an
//! event costs what the webhooks that could match it cost, not what all webhooks cost.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::domain::event::EventType;
use crate::domain::filter::EventFilter;

/// Sets, not lists: with thousands of webhooks watching the same key, adding or removing
/// one (every create or change) must not walk all the others.
#[derive(Debug, Default)]
pub struct FilterIndex {
    /// By event type, then entity type: looked up with the event's `&str`, no key built.
    exact: HashMap<EventType, HashMap<String, HashSet<Uuid>>>,
    any_entity: HashMap<EventType, HashSet<Uuid>>,
}

impl FilterIndex {
    pub fn add(&mut self, id: Uuid, filters: &[EventFilter]) {
        for f in filters {
            for entity in &f.entities.0 {
                let set = if entity.as_str() == "*" {
                    self.any_entity.entry(f.event_type).or_default()
                } else {
                    self.exact
                        .entry(f.event_type)
                        .or_default()
                        .entry(entity.as_str().to_owned())
                        .or_default()
                };
                set.insert(id);
            }
        }
    }

    pub fn remove(&mut self, id: Uuid, filters: &[EventFilter]) {
        for f in filters {
            for entity in &f.entities.0 {
                if entity.as_str() == "*" {
                    if let Some(set) = self.any_entity.get_mut(&f.event_type) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.any_entity.remove(&f.event_type);
                        }
                    }
                } else if let Some(by_entity) = self.exact.get_mut(&f.event_type) {
                    if let Some(set) = by_entity.get_mut(entity.as_str()) {
                        set.remove(&id);
                        if set.is_empty() {
                            by_entity.remove(entity.as_str());
                        }
                    }
                    if by_entity.is_empty() {
                        self.exact.remove(&f.event_type);
                    }
                }
            }
        }
    }

    /// Webhooks with a filter on this event type and entity type (or `*`), each once.
    pub fn candidates(&self, event_type: EventType, entity_type: &str) -> Vec<Uuid> {
        let any = self.any_entity.get(&event_type);
        let exact = self
            .exact
            .get(&event_type)
            .and_then(|by_entity| by_entity.get(entity_type));
        match (any, exact) {
            (None, None) => Vec::new(),
            (Some(ids), None) | (None, Some(ids)) => ids.iter().copied().collect(),
            (Some(any), Some(exact)) => any
                .iter()
                .chain(exact.iter().filter(|id| !any.contains(id)))
                .copied()
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.any_entity.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filters(v: serde_json::Value) -> Vec<EventFilter> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn candidates_by_type_and_entity() {
        let mut index = FilterIndex::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let fa = filters(
            json!([{"eventType": "entityCreated", "entities": ["table", "dashboard"]},
                                {"eventType": "entityUpdated", "entities": ["table"]}]),
        );
        let fb = filters(json!([{"eventType": "entityCreated", "entities": ["*"]},
                                {"eventType": "entityCreated", "entities": ["table"]}]));
        let fc = filters(json!([{"eventType": "entityDeleted", "entities": ["pipeline"]}]));
        index.add(a, &fa);
        index.add(b, &fb);
        index.add(c, &fc);
        let mut created_table = index.candidates(EventType::EntityCreated, "table");
        created_table.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(created_table, expected, "each webhook once");
        assert_eq!(index.candidates(EventType::EntityCreated, "pipeline"), [b]);
        assert_eq!(
            index.candidates(EventType::EntityUpdated, "dashboard"),
            Vec::<Uuid>::new()
        );
        index.remove(b, &fb);
        assert_eq!(index.candidates(EventType::EntityCreated, "table"), [a]);
        index.remove(a, &fa);
        index.remove(c, &fc);
        assert!(index.is_empty());
    }
}
