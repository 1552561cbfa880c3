//! GET: one event flattened into query parameters (`seeds/004_*`), bounded in length.

use serde_json::Value;

use super::{Batch, FormatError};
use crate::domain::webhook::WebhookSpec;

/// The longest query string a GET delivery sends.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// The parameters that say which event a GET request is about: never shortened or
/// dropped, so that two events never give the same request.
pub const IDENTIFYING_PARAMETERS: &[&str] = &[
    "eventId",
    "eventType",
    "entity_id",
    "entity_type",
    "entityId",
    "entityType",
    "timestamp",
    "webhookName",
];

/// A value is not shortened below this many bytes (encoded); past that, parameters are
/// dropped instead.
const SHORTEST_VALUE: usize = 64;

/// One event as query parameters: nested keys joined with `_` as in `seeds/004_*`
/// (`entity_owner_name=alice`, `entity_tags_0_tagFQN=PII.Sensitive`). Past
/// [`MAX_QUERY_BYTES`], the largest values are shortened first, all to one length, as
/// little as needed; when even `SHORTEST_VALUE` bytes each do not fit, whole parameters
/// go, largest first. The [`IDENTIFYING_PARAMETERS`] are always sent whole, and
/// `_truncated=true` marks a shortened query.
pub fn query_string(webhook: &WebhookSpec, events: &Batch) -> Result<String, FormatError> {
    let [event] = events else {
        return Err(FormatError::GetTakesOneEvent(events.len()));
    };
    let value = event_values(webhook, std::slice::from_ref(event))?.remove(0);
    let mut pairs = Vec::new();
    flatten("", &value, &mut pairs);
    let encode =
        |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let params: Vec<(String, String, bool)> = pairs
        .iter()
        .map(|(k, v)| {
            (
                encode(k),
                encode(v),
                IDENTIFYING_PARAMETERS.contains(&k.as_str()),
            )
        })
        .collect();
    // Each parameter costs its key, `=`, its value and a separator.
    let whole: usize = params.iter().map(|(k, v, _)| k.len() + v.len() + 2).sum();
    if whole <= MAX_QUERY_BYTES + 1 {
        return Ok(join(pairs.iter().map(|(k, v)| (k.as_str(), v.clone()))));
    }
    let marker = "_truncated=true";
    let fixed: usize = params
        .iter()
        .filter(|(_, _, id)| *id)
        .map(|(k, v, _)| k.len() + v.len() + 2)
        .sum();
    let room = (MAX_QUERY_BYTES + 1).saturating_sub(fixed + marker.len() + 1);
    let others: Vec<usize> = (0..params.len()).filter(|&i| !params[i].2).collect();
    let cost = |i: usize, cap: usize| params[i].0.len() + params[i].1.len().min(cap) + 2;
    let total = |cap: usize, kept: &dyn Fn(usize) -> bool| -> usize {
        others
            .iter()
            .filter(|&&i| kept(i))
            .map(|&i| cost(i, cap))
            .sum()
    };
    let mut dropped = vec![false; params.len()];
    let cap = if total(SHORTEST_VALUE, &|_| true) <= room {
        // The longest cap that fits: shorten only the values above it.
        let (mut fits, mut too_long) = (SHORTEST_VALUE, MAX_QUERY_BYTES + 1);
        while too_long - fits > 1 {
            let mid = (fits + too_long) / 2;
            if total(mid, &|_| true) <= room {
                fits = mid;
            } else {
                too_long = mid;
            }
        }
        fits
    } else {
        let mut largest = others.clone();
        largest.sort_by_key(|&i| std::cmp::Reverse(cost(i, usize::MAX)));
        for i in largest {
            if total(SHORTEST_VALUE, &|j| !dropped[j]) <= room {
                break;
            }
            dropped[i] = true;
        }
        SHORTEST_VALUE
    };
    let kept = pairs
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped[*i])
        .map(|(i, (k, v))| {
            let value = if params[i].2 {
                v.clone()
            } else {
                shorten(v, cap)
            };
            (k.as_str(), value)
        });
    Ok(join(
        kept.chain(std::iter::once(("_truncated", "true".to_owned()))),
    ))
}

fn join<'a>(pairs: impl Iterator<Item = (&'a str, String)>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        out.append_pair(key, &value);
    }
    out.finish()
}

/// The longest start of `value`, in whole characters, whose form encoding takes at most
/// `cap` bytes.
fn shorten(value: &str, cap: usize) -> String {
    let mut used = 0;
    let mut end = 0;
    for (at, c) in value.char_indices() {
        let size = if c.is_ascii_alphanumeric() || "*-._ ".contains(c) {
            1
        } else {
            3 * c.len_utf8()
        };
        if used + size > cap {
            break;
        }
        used += size;
        end = at + c.len_utf8();
    }
    value[..end].to_owned()
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}_{k}")
        }
    };
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(&key(&i.to_string()), v, out)),
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// The event objects of a batch, as GET sees them (templates see the same, built by
/// [`crate::domain::template::context`]).
fn event_values(webhook: &WebhookSpec, events: &Batch) -> Result<Vec<Value>, FormatError> {
    events
        .iter()
        .map(|e| {
            let mut v: Value = serde_json::from_str(&e.body)
                .map_err(|source| FormatError::StoredEvent { seq: e.seq, source })?;
            if let Some(object) = v.as_object_mut() {
                object.insert(
                    "webhookName".into(),
                    Value::String(webhook.name.to_string()),
                );
            }
            Ok(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{event, spec};
    use super::*;

    #[test]
    fn get_flattens_and_bounds() {
        let e = event(
            1,
            r#"{"eventType":"entityCreated","entity":{"name":"a b","tags":[{"tagFQN":"PII"}],"n":null},"x":1}"#,
        );
        let q = query_string(&spec(1), &[e]).unwrap();
        assert_eq!(
            q,
            "entity_name=a+b&entity_tags_0_tagFQN=PII&eventType=entityCreated&webhookName=hook+%22one%22&x=1"
        );
    }

    fn parse_query(q: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn get_shortens_the_largest_values_and_keeps_the_identity() {
        let id = uuid::Uuid::new_v4();
        let body = json!({
            "eventId": id, "eventType": "entityUpdated", "timestamp": 1705320000000i64,
            "entity": {"id": "456e7890-e89b-12d3-a456-426614174111", "type": "table",
                       "name": "orders", "description": "d".repeat(20_000),
                       "aaa": "é".repeat(3000), "owner": {"name": "alice"}},
        });
        let q = query_string(&spec(1), &[event(1, &body.to_string())]).unwrap();
        assert!(q.len() <= MAX_QUERY_BYTES, "{}", q.len());
        let got = parse_query(&q);
        let get = |k: &str| {
            got.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("eventId"), Some(id.to_string().as_str()));
        assert_eq!(get("eventType"), Some("entityUpdated"));
        assert_eq!(get("timestamp"), Some("1705320000000"));
        assert_eq!(
            get("entity_id"),
            Some("456e7890-e89b-12d3-a456-426614174111")
        );
        assert_eq!(get("entity_type"), Some("table"));
        assert_eq!(get("webhookName"), Some("hook \"one\""));
        assert_eq!(get("entity_name"), Some("orders"));
        assert_eq!(get("entity_owner_name"), Some("alice"));
        assert_eq!(get("_truncated"), Some("true"));
        // Both large values are cut to one encoded length, in whole characters, and use
        // the room there is.
        let description = get("entity_description").unwrap();
        let accented = get("entity_aaa").unwrap();
        assert!(description.len() > 1000 && description.chars().all(|c| c == 'd'));
        assert!(accented.chars().all(|c| c == 'é'));
        assert!(description.len().abs_diff(accented.chars().count() * 6) < 6);
        assert!(q.len() > MAX_QUERY_BYTES - 64, "{}", q.len());
        // Another event differs in its request even when everything else is cut.
        let mut other = body.clone();
        other["eventId"] = json!(uuid::Uuid::new_v4());
        assert_ne!(
            q,
            query_string(&spec(1), &[event(2, &other.to_string())]).unwrap()
        );
    }

    #[test]
    fn get_drops_the_largest_parameters_when_shortening_is_not_enough() {
        let mut entity = serde_json::Map::new();
        for i in 0..400 {
            entity.insert(format!("field{i:03}"), json!(format!("{i}").repeat(40)));
        }
        entity.insert("id".into(), json!("456e7890-e89b-12d3-a456-426614174111"));
        entity.insert("type".into(), json!("table"));
        entity.insert("big".into(), json!("b".repeat(1000)));
        let body = json!({"eventId": uuid::Uuid::new_v4(), "eventType": "entityCreated",
                          "timestamp": 1, "entity": entity});
        let q = query_string(&spec(1), &[event(1, &body.to_string())]).unwrap();
        assert!(q.len() <= MAX_QUERY_BYTES, "{}", q.len());
        let got = parse_query(&q);
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        for id in [
            "eventId",
            "eventType",
            "timestamp",
            "entity_id",
            "entity_type",
            "webhookName",
        ] {
            assert!(keys.contains(&id), "{id} kept");
        }
        assert!(!keys.contains(&"entity_big"), "the largest goes first");
        assert_eq!(keys.last(), Some(&"_truncated"));
        // What is kept is cut to the shortest length (a two-digit field's 80 bytes to 64).
        let fields: Vec<&(String, String)> = got
            .iter()
            .filter(|(k, _)| k.starts_with("entity_field"))
            .collect();
        assert!(fields.iter().all(|(_, v)| v.len() <= SHORTEST_VALUE));
        assert!(
            fields
                .iter()
                .any(|(k, v)| k == "entity_field042" && v.len() == SHORTEST_VALUE)
        );
        assert!(fields.len() > 50, "{}", fields.len());
    }
}
