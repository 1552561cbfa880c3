//! Event filters (SPEC §5) as pure functions.
//!
//! A webhook receives an event when ANY of its filters matches. A filter matches when its
//! eventType is the event's, the entity type is in `entities` (or `entities` holds `*`),
//! `include` is empty or one of its items matches, and no `exclude` item matches.

use super::event::EventFacts;
use super::webhook::{EventFilter, FilterItem, Qualifier};

pub fn webhook_matches(filters: &[EventFilter], facts: &EventFacts) -> bool {
    filters.iter().any(|f| filter_matches(f, facts))
}

pub fn filter_matches(filter: &EventFilter, facts: &EventFacts) -> bool {
    facts.event_type == Some(filter.event_type)
        && filter
            .entities
            .0
            .iter()
            .any(|e| e.as_str() == "*" || e.as_str() == facts.entity_type)
        && (filter.include.is_empty() || filter.include.0.iter().any(|i| item_matches(i, facts)))
        && !filter.exclude.0.iter().any(|i| item_matches(i, facts))
}

pub fn item_matches(item: &FilterItem, facts: &EventFacts) -> bool {
    match item {
        FilterItem::Field(field) => facts
            .changed_fields
            .iter()
            .any(|changed| field_matches(field, changed)),
        FilterItem::Qualifier(key, value) => {
            let any = |values: &[String]| values.iter().any(|v| v == value);
            match key {
                Qualifier::Domain => any(&facts.domains),
                Qualifier::Owner => any(&facts.owners),
                Qualifier::Tag => any(&facts.tags),
                Qualifier::Fqn => facts
                    .fqn
                    .as_deref()
                    .is_some_and(|fqn| glob_match(value, fqn)),
                Qualifier::UpdatedBy => facts.user_name.as_deref() == Some(value.as_str()),
                Qualifier::EntityId => facts
                    .entity_id
                    .is_some_and(|id| id.to_string().eq_ignore_ascii_case(value)),
            }
        }
    }
}

/// Does a filter's field name select a changed field? It does when the changed field is
/// that field or a field under it (`owner` selects `owner.name`), and, for a nested name
/// such as `columns.description`, when the changed field names one element of the
/// collection in between, as OpenMetadata does (`columns.customer_id.description`).
pub fn field_matches(item: &str, changed: &str) -> bool {
    let under = |prefix: &str, name: &str| {
        name == prefix
            || (name.len() > prefix.len()
                && name.starts_with(prefix)
                && name.as_bytes()[prefix.len()] == b'.')
    };
    if under(item, changed) {
        return true;
    }
    let Some((collection, rest)) = item.split_once('.') else {
        return false;
    };
    let Some(after_collection) = changed
        .strip_prefix(collection)
        .and_then(|s| s.strip_prefix('.'))
    else {
        return false;
    };
    // Skip the element's name (which may itself contain dots, so try each split point).
    after_collection
        .match_indices('.')
        .any(|(at, _)| under(rest, &after_collection[at + 1..]))
}

/// Shell-style glob: `*` is any run of characters, `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::webhook::EventType;
    use serde_json::json;

    fn facts() -> EventFacts {
        EventFacts {
            event_type: Some(EventType::EntityUpdated),
            entity_type: "table".into(),
            entity_id: Some("456e7890-e89b-12d3-a456-426614174111".parse().unwrap()),
            fqn: Some("snowflake_prod.sales.public.customers".into()),
            user_name: Some("bob".into()),
            changed_fields: vec!["tags".into(), "columns.customer_id.description".into()],
            domains: vec!["Sales".into()],
            owners: vec!["john.doe".into()],
            tags: vec!["PII.Sensitive".into()],
        }
    }

    fn filter(v: serde_json::Value) -> EventFilter {
        serde_json::from_value(v).unwrap()
    }

    fn item(s: &str) -> FilterItem {
        FilterItem::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn event_type_and_entities() {
        let f = facts();
        assert!(filter_matches(
            &filter(json!({"eventType": "entityUpdated", "entities": ["table"]})),
            &f
        ));
        assert!(filter_matches(
            &filter(json!({"eventType": "entityUpdated", "entities": ["*"]})),
            &f
        ));
        assert!(filter_matches(
            &filter(json!({"eventType": "entityUpdated"})),
            &f
        ));
        assert!(!filter_matches(
            &filter(json!({"eventType": "entityCreated", "entities": ["table"]})),
            &f
        ));
        assert!(!filter_matches(
            &filter(json!({"eventType": "entityUpdated", "entities": ["dashboard"]})),
            &f
        ));
    }

    #[test]
    fn include_and_exclude() {
        let f = facts();
        let with = |include: &[&str], exclude: &[&str]| {
            filter_matches(
                &filter(
                    json!({"eventType": "entityUpdated", "entities": ["table"], "include": include, "exclude": exclude}),
                ),
                &f,
            )
        };
        assert!(with(&[], &[]));
        assert!(with(&["owner", "tags"], &[]), "one include item is enough");
        assert!(
            !with(&["owner", "description"], &[]),
            "no include item matches"
        );
        assert!(!with(&[], &["tags"]), "an exclude item matches");
        assert!(
            !with(&["tags"], &["domain:Sales"]),
            "exclude wins over include"
        );
        assert!(with(&["tags"], &["domain:Marketing"]));
    }

    #[test]
    fn every_kind_of_item() {
        let f = facts();
        for (text, expected) in [
            ("tags", true),
            ("owner", false),
            ("columns", true),
            ("columns.description", true),
            ("columns.customer_id.description", true),
            ("columns.tags", false),
            ("domain:Sales", true),
            ("domain:Marketing", false),
            ("owner:john.doe", true),
            ("owner:alice", false),
            ("tag:PII.Sensitive", true),
            ("tag:PII", false),
            ("fqn:snowflake_prod.sales.*", true),
            ("fqn:*.customers", true),
            ("fqn:snowflake_prod.?ales.public.customers", true),
            ("fqn:*.orders", false),
            ("updatedBy:bob", true),
            ("updatedBy:alice", false),
            ("entityId:456e7890-e89b-12d3-a456-426614174111", true),
            ("entityId:00000000-0000-0000-0000-000000000000", false),
        ] {
            assert_eq!(item_matches(&item(text), &f), expected, "{text}");
        }
    }

    #[test]
    fn field_names_select_fields_under_them() {
        assert!(field_matches("owner", "owner"));
        assert!(field_matches("owner", "owner.name"));
        assert!(!field_matches("owner", "owners"));
        assert!(field_matches(
            "columns.description",
            "columns.a.b.description"
        ));
        assert!(!field_matches(
            "columns.description",
            "columns.description_long"
        ));
        assert!(!field_matches(
            "columns.description",
            "tables.x.description"
        ));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*.*.orders", "db.sales.orders"));
        assert!(!glob_match("db.*", "dbx.sales"));
    }

    #[test]
    fn any_filter_of_a_webhook() {
        let f = facts();
        let filters = vec![
            filter(json!({"eventType": "entityCreated", "entities": ["table"]})),
            filter(
                json!({"eventType": "entityUpdated", "entities": ["table"], "include": ["tags"]}),
            ),
        ];
        assert!(webhook_matches(&filters, &f));
        assert!(!webhook_matches(&filters[..1], &f));
        assert!(!webhook_matches(&[], &f));
    }
}
