//! Domain types and pure rules. Everything here is free of I/O.
//!
//! Values are parsed, not validated: a [`webhook::WebhookSpec`] can only be built through
//! deserialization checks (`serde(try_from)`), so code past the API edge never sees a bad value.

pub mod change;
pub mod delivery;
pub mod event;
pub mod filter;
pub mod reference;
pub mod template;
pub mod text;
pub mod token;
pub mod webhook;

/// The field a `serde_path_to_error` error is about, as a dotted path. serde reports a
/// missing field at its parent (and an unknown one at itself): both name the field.
/// Empty for the document itself.
pub fn error_field(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => String::new(),
        (path, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => {
            path.to_owned()
        }
        (parent, Some(name)) => format!("{parent}.{name}"),
        (parent, None) => parent.to_owned(),
    }
}

/// Declares a string-valued enum with its wire names, `as_str`, `FromStr`, `ALL`, and its
/// OpenAPI schema: a string enum of exactly the wire names, described by the doc comment.
///
/// The schema is written out rather than derived: the derive did not see the
/// `serde(rename)` of a macro-made variant and documented the Rust names (`EntityCreated`
/// for `entityCreated`), which a generated client then sent.
macro_rules! str_enum {
    ($(#[doc = $doc:expr])* pub enum $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
                 serde::Serialize, serde::Deserialize)]
        pub enum $name { $( #[serde(rename = $text)] $variant ),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let doc: &[&str] = &[$($doc),*];
                let description = doc.iter().map(|line| line.trim()).collect::<Vec<_>>().join("\n");
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .description((!description.is_empty()).then_some(description))
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown value '{}', expected one of: {}",
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use str_enum;

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::webhook::{EventType, SignatureScheme};

    #[test]
    fn enum_schemas_list_the_wire_names() {
        let schema = serde_json::to_value(EventType::schema()).unwrap();
        let wire: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(schema["enum"], serde_json::json!(wire), "{schema}");
        assert_eq!(schema["type"], "string");
        let schema = serde_json::to_value(SignatureScheme::schema()).unwrap();
        assert_eq!(
            schema["enum"],
            serde_json::json!(["openmetadata", "openmetadata-base64", "standard-webhooks"])
        );
        assert!(
            schema["description"]
                .as_str()
                .unwrap()
                .starts_with("How requests are signed: `openmetadata`"),
            "{schema}"
        );
    }
}
