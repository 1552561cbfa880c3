//! Event filters (SPEC §5): their grammar, parsed when a webhook is written, and their
//! matching, as pure functions.
//!
//! A webhook receives an event when ANY of its filters matches. A filter matches when its
//! eventType is the event's, the entity type is in `entities` (or `entities` holds `*`),
//! `include` is empty or one of its items matches, and no `exclude` item matches.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::event::{EntityTypeName, EventFacts, EventType};
use super::text::check_text;
use super::{bounded_list, str_enum, string_schema};

/// An `include`/`exclude` item of a filter (SPEC §5): a changed-field name such as
/// `columns.description`, or a `key:value` qualifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FilterItem {
    Field(String),
    Qualifier(Qualifier, String),
}

str_enum! {
    /// The keys a `key:value` filter item may use.
    pub enum Qualifier {
        Domain => "domain", Owner => "owner", Tag => "tag", Fqn => "fqn",
        UpdatedBy => "updatedBy", EntityId => "entityId",
    }
}

impl TryFrom<String> for FilterItem {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        check_text(&value, 1, 512, false)?;
        match value.split_once(':') {
            Some((key, rest)) => {
                let key: Qualifier = key
                    .parse()
                    .map_err(|e| format!("'{value}': qualifier {e}"))?;
                if rest.is_empty() {
                    return Err(format!("'{value}': the value after ':' is empty"));
                }
                if key == Qualifier::EntityId && Uuid::parse_str(rest).is_err() {
                    return Err(format!("'{value}': entityId must be a UUID"));
                }
                Ok(Self::Qualifier(key, rest.to_owned()))
            }
            None => {
                if value.chars().any(char::is_whitespace) {
                    return Err(format!("'{value}': a field name has no spaces"));
                }
                Ok(Self::Field(value))
            }
        }
    }
}

impl From<FilterItem> for String {
    fn from(item: FilterItem) -> String {
        match item {
            FilterItem::Field(f) => f,
            FilterItem::Qualifier(k, v) => format!("{}:{v}", k.as_str()),
        }
    }
}

string_schema!(FilterItem, None);

bounded_list!(
    /// The entity types a filter selects; never empty (absent means `["*"]`).
    EntityTypes of EntityTypeName as "Vec<EntityTypeName>", max 100, min 1
);
bounded_list!(
    /// `include` or `exclude` items of a filter.
    FilterItems of FilterItem as "Vec<FilterItem>", max 100, min 0
);
bounded_list!(
    /// A webhook's filters; an event is delivered when any of them matches.
    EventFilters of EventFilter as "Vec<EventFilter>", max 50, min 0
);

/// One event filter (SPEC §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventFilter {
    pub event_type: EventType,
    #[serde(default = "all_entities")]
    pub entities: EntityTypes,
    #[serde(default)]
    pub include: FilterItems,
    #[serde(default)]
    pub exclude: FilterItems,
}

fn all_entities() -> EntityTypes {
    EntityTypes(vec![EntityTypeName::all()])
}

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

    #[test]
    fn filter_items_round_trip() {
        for item in [
            "tags",
            "columns.description",
            "domain:Sales",
            "fqn:svc.*.orders",
            "tag:PII.Sensitive",
        ] {
            let parsed = FilterItem::try_from(item.to_owned()).unwrap();
            assert_eq!(String::from(parsed), item);
        }
    }
}
