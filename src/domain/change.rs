//! Entity versions and change descriptions, as OpenMetadata keeps them: every accepted
//! change bumps the version by 0.1 and says which fields were added, updated or deleted.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// An entity version, kept as an integer count of tenths so that 0.1 + 0.1 is exactly 0.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ToSchema)]
#[schema(value_type = f64, example = 0.1)]
pub struct Version(u32);

impl Version {
    /// The version of a freshly created entity.
    pub const INITIAL: Version = Version(1);

    pub fn from_tenths(tenths: u32) -> Self {
        Self(tenths)
    }

    pub fn tenths(self) -> u32 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10.0
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Ok(Self((v * 10.0).round() as u32))
    }
}

/// One field of a change: its dotted name and the values before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_value: Option<Value>,
}

/// What changed between two versions of an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeDescription {
    pub fields_added: Vec<FieldChange>,
    pub fields_updated: Vec<FieldChange>,
    pub fields_deleted: Vec<FieldChange>,
    pub previous_version: Version,
}

impl ChangeDescription {
    pub fn new(previous_version: Version) -> Self {
        Self {
            fields_added: vec![],
            fields_updated: vec![],
            fields_deleted: vec![],
            previous_version,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields_added.is_empty()
            && self.fields_updated.is_empty()
            && self.fields_deleted.is_empty()
    }

    /// Records the differences between two JSON documents. Objects are compared field by
    /// field (names joined with `.`); arrays and scalars are compared whole.
    pub fn record_diff(&mut self, prefix: &str, old: &Value, new: &Value) {
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => self.diff_objects(prefix, a, b),
            _ if old == new => {}
            _ => self.updated(prefix, old.clone(), new.clone()),
        }
    }

    fn diff_objects(&mut self, prefix: &str, a: &Map<String, Value>, b: &Map<String, Value>) {
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        };
        for (k, old) in a {
            match b.get(k) {
                None => self.fields_deleted.push(FieldChange {
                    name: join(k),
                    old_value: Some(old.clone()),
                    new_value: None,
                }),
                Some(new) => self.record_diff(&join(k), old, new),
            }
        }
        for (k, new) in b {
            if !a.contains_key(k) {
                self.fields_added.push(FieldChange {
                    name: join(k),
                    old_value: None,
                    new_value: Some(new.clone()),
                });
            }
        }
    }

    pub fn updated(&mut self, name: &str, old: Value, new: Value) {
        self.fields_updated.push(FieldChange {
            name: name.to_owned(),
            old_value: Some(old),
            new_value: Some(new),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_step_by_exact_tenths() {
        let mut v = Version::INITIAL;
        for _ in 0..9 {
            v = v.next();
        }
        assert_eq!(serde_json::to_string(&v).unwrap(), "1.0");
        assert_eq!(
            serde_json::to_string(&Version::from_tenths(3)).unwrap(),
            "0.3"
        );
    }

    #[test]
    fn diff_names_nested_fields() {
        let mut c = ChangeDescription::new(Version::INITIAL);
        c.record_diff(
            "",
            &json!({"enabled": true, "cfg": {"timeout": 10, "h": {"a": "1"}}, "gone": 1}),
            &json!({"enabled": false, "cfg": {"timeout": 30, "h": {"a": "1"}}, "tags": [1]}),
        );
        let names = |v: &Vec<FieldChange>| v.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.fields_updated), ["cfg.timeout", "enabled"]);
        assert_eq!(names(&c.fields_added), ["tags"]);
        assert_eq!(names(&c.fields_deleted), ["gone"]);
        assert_eq!(c.fields_updated[0].old_value, Some(json!(10)));
    }
}
