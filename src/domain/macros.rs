//! Declarations shared by the domain's value types: string enums, checked strings, bounded
//! lists and numbers, and the OpenAPI schema of a value that travels as a string. Each
//! type is parsed once, when deserialized (`serde(try_from)`), and its schema says what
//! it accepts.

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

/// Declares a newtype over `String` that is checked by `$check` when deserialized. With
/// `schema(min .., max .. [, pattern ..])` after the name, the OpenAPI document states the
/// bounds the check enforces, so a generated client or a schema-driven test learns them too.
macro_rules! checked_string {
    ($(#[doc = $doc:expr])* $name:ident schema(min $min:literal, max $max:literal $(, pattern $pattern:literal)?), $check:expr) => {
        $crate::domain::macros::checked_string!(@type $(#[doc = $doc])* $name, $check);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let doc: &[&str] = &[$($doc),*];
                let description = doc.iter().map(|line| line.trim()).collect::<Vec<_>>().join("\n");
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .description((!description.is_empty()).then_some(description))
                    .min_length(Some($min))
                    .max_length(Some($max))
                    $(.pattern(Some($pattern)))?
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
    ($(#[doc = $doc:expr])* $name:ident, $check:expr) => {
        $crate::domain::macros::checked_string!(@type $(#[doc = $doc])* #[derive(utoipa::ToSchema)] $name, $check);
    };
    (@type $(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord,
                 serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use checked_string;

/// Documents a type that travels as a string in the OpenAPI document.
macro_rules! string_schema {
    ($name:ident, $format:expr) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .format($format)
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use string_schema;

/// Declares a bounded list newtype with a per-list check.
macro_rules! bounded_list {
    ($(#[$meta:meta])* $name:ident of $item:ty as $vec:literal, max $max:expr, min $min:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq,
                 serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(try_from = $vec)]
        pub struct $name(pub Vec<$item>);

        impl $name {
            pub const MAX: usize = $max;
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl TryFrom<Vec<$item>> for $name {
            type Error = String;
            #[allow(unused_comparisons)] // `min 0` lists
            fn try_from(items: Vec<$item>) -> Result<Self, String> {
                if items.len() < $min {
                    return Err(format!("needs at least {} item(s)", $min));
                }
                if items.len() > $max {
                    return Err(format!("at most {} items (got {})", $max, items.len()));
                }
                Ok(Self(items))
            }
        }
    };
}
pub(crate) use bounded_list;

/// Declares a bounded integer setting with a default.
macro_rules! bounded_int {
    ($(#[$meta:meta])* $name:ident, $min:literal, $max:literal, default $default:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "i64", into = "u32")]
        pub struct $name(u32);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::Integer)
                    .minimum(Some($min as f64))
                    .maximum(Some($max as f64))
                    .default(Some(serde_json::json!($default)))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}

        impl $name {
            pub const MIN: u32 = $min;
            pub const MAX: u32 = $max;
            pub fn get(self) -> u32 {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self($default)
            }
        }

        impl TryFrom<i64> for $name {
            type Error = String;
            fn try_from(v: i64) -> Result<Self, String> {
                if v < $min as i64 || v > $max as i64 {
                    return Err(format!("must be between {} and {} (got {v})", $min, $max));
                }
                Ok(Self(v as u32))
            }
        }

        impl From<$name> for u32 {
            fn from(v: $name) -> u32 {
                v.0
            }
        }
    };
}
pub(crate) use bounded_int;

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use crate::domain::event::EventType;
    use crate::domain::signature::SignatureScheme;

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
