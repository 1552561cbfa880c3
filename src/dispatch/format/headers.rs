//! Header values a template rendered, made into values a header can carry, and the
//! webhook's headers with them in place.

use std::collections::BTreeMap;

use crate::domain::webhook::Headers;

/// The longest value a rendered header carries.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;

/// A rendered header value made into one a header can carry, so that what an event holds
/// (an entity named `Café`, a description with a line break) never stops delivery. CR,
/// LF and NUL are dropped: they would end the header. If anything else a header cannot
/// carry remains (other control characters, non-ASCII text), the value goes
/// percent-encoded as UTF-8, `%` included so that it decodes to exactly what was rendered
/// (`Café` → `Caf%C3%A9`); a value that needs nothing goes as rendered. At most
/// [`MAX_HEADER_VALUE_BYTES`] are kept.
pub fn header_value(rendered: &str) -> String {
    let kept: String = rendered
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect();
    let carried = |c: char| c == '\t' || (' '..='~').contains(&c);
    let encode = !kept.chars().all(carried);
    let mut value = String::with_capacity(kept.len().min(MAX_HEADER_VALUE_BYTES));
    let mut utf8 = [0u8; 4];
    for c in kept.chars() {
        let piece = if !encode || (carried(c) && c != '%') {
            c.encode_utf8(&mut utf8).to_owned()
        } else {
            c.encode_utf8(&mut utf8)
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect()
        };
        // Whole characters only: a cut never splits a `%XX` or a character's bytes.
        if value.len() + piece.len() > MAX_HEADER_VALUE_BYTES {
            break;
        }
        value.push_str(&piece);
    }
    value
}

/// The webhook's headers in their order, each templated one with its rendered value.
pub(super) fn with_rendered(
    headers: &Headers,
    mut rendered: BTreeMap<&str, String>,
) -> Vec<(String, String)> {
    headers
        .0
        .iter()
        .map(|(name, value)| {
            let value = rendered
                .remove(name.as_str())
                .unwrap_or_else(|| value.clone());
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_header_values_are_made_valid() {
        for (rendered, sent) in [
            ("plain value, 50% off", "plain value, 50% off"),
            ("Café", "Caf%C3%A9"),
            ("a\r\nb\0c", "abc"),
            ("100% Café\r\n", "100%25 Caf%C3%A9"),
            ("tab\tok", "tab\tok"),
            ("bell\u{7}del\u{7f}", "bell%07del%7F"),
            ("日本", "%E6%97%A5%E6%9C%AC"),
        ] {
            let value = header_value(rendered);
            assert_eq!(value, sent, "{rendered:?}");
            assert!(reqwest::header::HeaderValue::from_str(&value).is_ok());
        }
        let long = header_value(&"é".repeat(3000));
        assert_eq!(
            long.len(),
            MAX_HEADER_VALUE_BYTES - 4,
            "whole characters of 6 bytes"
        );
        assert!(long.ends_with("%C3%A9"));
        assert_eq!(
            header_value(&"x".repeat(5000)).len(),
            MAX_HEADER_VALUE_BYTES
        );
    }
}
