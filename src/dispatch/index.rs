//! Which webhooks could match an event, by (eventType, entity type), so that routing an
//! event costs what the webhooks that could match it cost, not what all webhooks cost.

use std::collections::HashMap;

use uuid::Uuid;

use crate::domain::webhook::{EventFilter, EventType};

#[derive(Debug, Default)]
pub struct FilterIndex {
    exact: HashMap<(EventType, String), Vec<Uuid>>,
    any_entity: HashMap<EventType, Vec<Uuid>>,
}

impl FilterIndex {
    pub fn add(&mut self, id: Uuid, filters: &[EventFilter]) {
        for f in filters {
            for entity in &f.entities.0 {
                let list = if entity.as_str() == "*" {
                    self.any_entity.entry(f.event_type).or_default()
                } else {
                    self.exact
                        .entry((f.event_type, entity.as_str().to_owned()))
                        .or_default()
                };
                if !list.contains(&id) {
                    list.push(id);
                }
            }
        }
    }

    pub fn remove(&mut self, id: Uuid, filters: &[EventFilter]) {
        for f in filters {
            for entity in &f.entities.0 {
                let list = if entity.as_str() == "*" {
                    self.any_entity.get_mut(&f.event_type)
                } else {
                    self.exact
                        .get_mut(&(f.event_type, entity.as_str().to_owned()))
                };
                if let Some(list) = list {
                    list.retain(|x| *x != id);
                }
            }
        }
        self.exact.retain(|_, v| !v.is_empty());
        self.any_entity.retain(|_, v| !v.is_empty());
    }

    /// Webhooks with a filter on this event type and entity type (or `*`), each once.
    pub fn candidates(&self, event_type: EventType, entity_type: &str) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = Vec::new();
        // The key is built only when some webhook watches this event type.
        if let Some(ids) = self.any_entity.get(&event_type) {
            out.extend(ids);
        }
        if let Some(ids) = self.exact.get(&(event_type, entity_type.to_owned())) {
            for id in ids {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
        }
        out
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
