//! API tokens: bearer secrets with a role, stored only as a SHA-256 hash.

use base64::Engine;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::text::check_text;
use super::{checked_string, str_enum};
use crate::clock::Millis;

str_enum! {
    /// What a token may do: `admin` everything, `reader` read, `publisher` publish events.
    pub enum Role { Admin => "admin", Publisher => "publisher", Reader => "reader" }
}

/// The kinds of access a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// GET on the management API.
    Read,
    /// Create, change and delete webhooks and tokens.
    Manage,
    /// POST /api/v1/events.
    Publish,
}

impl Role {
    pub fn allows(self, permission: Permission) -> bool {
        matches!(
            (self, permission),
            (Role::Admin, _)
                | (Role::Reader, Permission::Read)
                | (Role::Publisher, Permission::Publish)
        )
    }
}

checked_string!(
    /// A token's name: 1–128 characters of letters, digits and `._@-`. It becomes `updatedBy`.
    TokenName schema(min 1, max 128, pattern r"^[A-Za-z0-9._@-]+$"),
    |v| {
        check_text(v, 1, 128, false)?;
        if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
        {
            return Err("only letters, digits and '._@-' are allowed".into());
        }
        Ok(())
    }
);

/// The shortest and longest signing secret accepted, in characters.
pub const SIGNING_SECRET_CHARS: (usize, usize) = (16, 256);

/// A publisher's signing secret: the key of the HMAC that signs each publish body
/// (OpenMetadata's `secretKey`). Stored as given, since verifying needs it; never shown,
/// and its `Debug` is masked so that it reaches no log.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct SigningSecret(String);

impl SigningSecret {
    /// The secret itself: for computing the HMAC, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SigningSecret {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let (min, max) = SIGNING_SECRET_CHARS;
        let len = value.chars().count();
        if !(min..=max).contains(&len) {
            return Err(format!("must be {min} to {max} characters (got {len})"));
        }
        if value.chars().any(char::is_control) {
            return Err("must not hold control characters".into());
        }
        Ok(Self(value))
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(********)")
    }
}

impl utoipa::PartialSchema for SigningSecret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let (min, max) = SIGNING_SECRET_CHARS;
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .min_length(Some(min))
            .max_length(Some(max))
            .into()
    }
}

impl utoipa::ToSchema for SigningSecret {}

/// A stored token (never the secret itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: Uuid,
    pub name: TokenName,
    pub role: Role,
    pub hash: String,
    /// For a publisher: the key its publishes are signed with (`X-OM-Signature`).
    pub signing_secret: Option<SigningSecret>,
    pub created_at: Millis,
    pub created_by: String,
    pub revoked_at: Option<Millis>,
}

/// The shortest token accepted from configuration.
pub const MIN_CONFIGURED_TOKEN_LEN: usize = 16;

/// Words that mark a value copied from an example rather than chosen, looked for after
/// lowercasing and dropping separators (`change-me_TOKEN` is `changemetoken`).
const PLACEHOLDER_WORDS: [&str; 8] = [
    "changeme",
    "changethis",
    "replaceme",
    "placeholder",
    "example",
    "yourtoken",
    "yoursecret",
    "youradmintoken",
];

/// Beginnings that name what the value is instead of being one.
const PLACEHOLDER_PREFIXES: [&str; 4] = ["secret", "password", "passw0rd", "xxxx"];

/// Fewer different characters than this is a pattern, not a random token: random 16
/// hexadecimal characters have fewer than 5 different ones with a chance of about 4 in
/// 10 million.
const MIN_DISTINCT_CHARS: usize = 5;

/// Checks a token given in configuration (`OUTHOOK_ADMIN_TOKEN`): long enough, without
/// spaces, and not a placeholder copied from an example, which anyone who read the same
/// example knows. The error names the rule and never repeats the value, which may be a
/// real token.
pub fn check_configured_token(secret: &str) -> Result<(), String> {
    if secret.chars().count() < MIN_CONFIGURED_TOKEN_LEN || secret.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "must be at least {MIN_CONFIGURED_TOKEN_LEN} characters without spaces"
        ));
    }
    let folded: String = secret
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ':' | '/'))
        .flat_map(char::to_lowercase)
        .collect();
    let placeholder = PLACEHOLDER_WORDS
        .iter()
        .find(|word| folded.contains(*word))
        .or_else(|| {
            PLACEHOLDER_PREFIXES
                .iter()
                .find(|prefix| folded.starts_with(*prefix))
        });
    if let Some(word) = placeholder {
        return Err(format!(
            "looks like a placeholder (it contains '{word}'): use a random value, \
             e.g. from `openssl rand -hex 32`"
        ));
    }
    let mut distinct: Vec<char> = secret.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Err(format!(
            "has fewer than {MIN_DISTINCT_CHARS} different characters, so it is a pattern, \
             not a random value: use e.g. `openssl rand -hex 32`"
        ));
    }
    Ok(())
}

/// A new random token: `ohk_` and 256 bits from the OS, base64url.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system has no random source");
    format!(
        "ohk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token. Tokens carry 256 random bits, so a fast hash is enough:
/// nothing can be guessed by trying.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_spec_says() {
        use Permission::*;
        assert!(
            Role::Admin.allows(Read) && Role::Admin.allows(Manage) && Role::Admin.allows(Publish)
        );
        assert!(
            Role::Reader.allows(Read)
                && !Role::Reader.allows(Manage)
                && !Role::Reader.allows(Publish)
        );
        assert!(
            Role::Publisher.allows(Publish)
                && !Role::Publisher.allows(Read)
                && !Role::Publisher.allows(Manage)
        );
    }

    #[test]
    fn configured_tokens_refuse_placeholders_and_patterns() {
        for placeholder in [
            "change-me-to-a-long-random-token",
            "CHANGE_ME_PLEASE_0123456789",
            "changeme0123456789abc",
            "please-change-this-token-now",
            "example-admin-token-123456",
            "your-token-goes-here-1234",
            "your_secret_here_1234567",
            "secret-admin-token-2024",
            "Password1234567890",
            "xxxx-xxxx-xxxx-1234",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababab",
            "0000111100001111",
        ] {
            let refused = check_configured_token(placeholder)
                .expect_err(&format!("{placeholder} must be refused"));
            assert!(
                !refused.contains(placeholder),
                "the error never repeats the value: {refused}"
            );
        }
        assert!(check_configured_token("short").unwrap_err().contains("16"));
        assert!(check_configured_token("has a space in it 0123").is_err());
    }

    #[test]
    fn configured_tokens_accept_random_values() {
        for token in [
            generate_secret(),
            // What `openssl rand -hex 8` and `-hex 32` print.
            "3f9c2a7be41d8f06".to_owned(),
            "9d1e0c6f4b2a87351e9f0d2c4b6a8e1f3d5c7b9a0e2f4d6c8b1a3e5f7d9c0b2a".to_owned(),
            "test-admin-token-0123456789".to_owned(),
            "bench-admin-token-0123456789".to_owned(),
        ] {
            assert_eq!(check_configured_token(&token), Ok(()), "{token}");
        }
    }

    #[test]
    fn signing_secrets_are_bounded_and_never_shown() {
        let secret = SigningSecret::try_from("0123456789abcdef".to_owned()).unwrap();
        assert_eq!(format!("{secret:?}"), "SigningSecret(********)");
        assert!(SigningSecret::try_from("short".to_owned()).is_err());
        assert!(SigningSecret::try_from("x".repeat(257)).is_err());
        assert!(SigningSecret::try_from("0123456789abcdef\n".to_owned()).is_err());
    }

    #[test]
    fn secrets_are_random_and_hashes_stable() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("ohk_") && a.len() > 40);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_eq!(hash_secret(&a).len(), 64);
    }
}
