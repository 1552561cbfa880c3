//! API tokens: bearer secrets with a role, stored only as a SHA-256 hash.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::str_enum;
use super::text::check_text;
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

/// A token's name: 1–128 characters of letters, digits and `._@-`. It becomes `updatedBy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
pub struct TokenName(String);

impl TokenName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TokenName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        check_text(&value, 1, 128, false)?;
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
        {
            return Err("only letters, digits and '._@-' are allowed".into());
        }
        Ok(Self(value))
    }
}

impl From<TokenName> for String {
    fn from(value: TokenName) -> String {
        value.0
    }
}

/// A stored token (never the secret itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: Uuid,
    pub name: TokenName,
    pub role: Role,
    pub hash: String,
    pub created_at: Millis,
    pub created_by: String,
    pub revoked_at: Option<Millis>,
}

/// The shortest token accepted from configuration.
pub const MIN_CONFIGURED_TOKEN_LEN: usize = 16;

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
    fn secrets_are_random_and_hashes_stable() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("ohk_") && a.len() > 40);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_eq!(hash_secret(&a).len(), 64);
    }
}
