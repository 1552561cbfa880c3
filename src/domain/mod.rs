//! Domain types and pure rules. Everything here is free of I/O.
//!
//! Values are parsed, not validated: a [`webhook::WebhookSpec`] can only be built through
//! deserialization checks (`serde(try_from)`), so code past the API edge never sees a bad value.

mod macros;

pub mod address;
pub mod change;
pub mod delivery;
pub mod event;
pub mod filter;
pub mod reference;
pub mod signature;
pub mod template;
pub mod text;
pub mod token;
pub mod webhook;

pub(crate) use macros::{bounded_int, bounded_list, checked_string, str_enum, string_schema};

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
