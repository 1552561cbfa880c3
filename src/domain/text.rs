//! Bounded free text: the building block for names, descriptions and labels.

use serde::{Deserialize, Serialize};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};

/// A string of at most `MAX` characters with no control characters other than
/// newline and tab (and not even those when it is a single-line value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<String> for Text<MAX> {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        check_text(&value, 0, MAX, true)?;
        Ok(Self(value))
    }
}

impl<const MAX: usize> From<Text<MAX>> for String {
    fn from(value: Text<MAX>) -> String {
        value.0
    }
}

impl<const MAX: usize> utoipa::PartialSchema for Text<MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX))
            .into()
    }
}
/// Named by its bound (`Text256`): texts of different bounds are different schemas.
impl<const MAX: usize> utoipa::ToSchema for Text<MAX> {
    fn name() -> std::borrow::Cow<'static, str> {
        format!("Text{MAX}").into()
    }
}

/// Checks length (in characters) and control characters. `multiline` allows `\n`, `\r`, `\t`.
pub fn check_text(value: &str, min: usize, max: usize, multiline: bool) -> Result<(), String> {
    let len = value.chars().count();
    if len < min {
        return Err(if min == 1 {
            "must not be empty".to_owned()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if len > max {
        return Err(format!("must be at most {max} characters (got {len})"));
    }
    let bad = value
        .chars()
        .find(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')));
    if let Some(c) = bad {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            c as u32
        ));
    }
    Ok(())
}
