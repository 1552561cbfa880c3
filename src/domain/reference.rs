//! References to other entities (owner, domain) and tag labels, as in OpenMetadata's
//! `entityReference.json` and `tagLabel.json`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::text::{Text, check_text};
use super::{checked_string, str_enum};

/// A reference to another entity. OpenMetadata identifies it by `id`; the seed examples
/// use `type` + `name`, so either `id` or `name` must be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    try_from = "EntityReferenceInput"
)]
pub struct EntityReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Text<256>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fully_qualified_name: Option<Text<1024>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text<256>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Text<65536>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<Text<2048>>,
}

/// The unchecked shape of [`EntityReference`], as it arrives.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityReferenceInput {
    id: Option<Uuid>,
    #[serde(rename = "type")]
    kind: String,
    name: Option<Text<256>>,
    fully_qualified_name: Option<Text<1024>>,
    display_name: Option<Text<256>>,
    description: Option<Text<65536>>,
    deleted: Option<bool>,
    href: Option<Text<2048>>,
}

impl TryFrom<EntityReferenceInput> for EntityReference {
    type Error = String;
    fn try_from(r: EntityReferenceInput) -> Result<Self, String> {
        check_text(&r.kind, 1, 64, false).map_err(|e| format!("type {e}"))?;
        match &r.name {
            Some(name) if name.as_str().is_empty() => return Err("name must not be empty".into()),
            None if r.id.is_none() => return Err("needs an 'id' or a 'name'".into()),
            _ => {}
        }
        Ok(Self {
            id: r.id,
            kind: r.kind,
            name: r.name,
            fully_qualified_name: r.fully_qualified_name,
            display_name: r.display_name,
            description: r.description,
            deleted: r.deleted,
            href: r.href,
        })
    }
}

/// The owner of a webhook: a `user` or a `team`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "EntityReference")]
pub struct OwnerRef(pub EntityReference);

impl TryFrom<EntityReference> for OwnerRef {
    type Error = String;
    fn try_from(r: EntityReference) -> Result<Self, String> {
        match r.kind.as_str() {
            "user" | "team" => Ok(Self(r)),
            other => Err(format!(
                "owner type must be 'user' or 'team', not '{other}'"
            )),
        }
    }
}

/// The domain a webhook belongs to: an entity of type `domain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "EntityReference")]
pub struct DomainRef(pub EntityReference);

impl TryFrom<EntityReference> for DomainRef {
    type Error = String;
    fn try_from(r: EntityReference) -> Result<Self, String> {
        if r.kind == "domain" {
            Ok(Self(r))
        } else {
            Err(format!("domain type must be 'domain', not '{}'", r.kind))
        }
    }
}

str_enum! {
    /// Where a tag comes from.
    pub enum TagSource { Classification => "Classification", Glossary => "Glossary" }
}
str_enum! {
    /// How a tag was applied.
    pub enum LabelType {
        Manual => "Manual", Propagated => "Propagated", Automated => "Automated", Derived => "Derived",
    }
}
str_enum! {
    /// Whether a tag is confirmed.
    pub enum TagState { Suggested => "Suggested", Confirmed => "Confirmed" }
}

/// A tag applied to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagLabel {
    #[serde(rename = "tagFQN")]
    pub tag_fqn: TagFqn,
    #[serde(default = "default_source")]
    pub source: TagSource,
    #[serde(default = "default_label_type")]
    pub label_type: LabelType,
    #[serde(default = "default_state")]
    pub state: TagState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text<256>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text<256>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Text<65536>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<Text<2048>>,
}

fn default_source() -> TagSource {
    TagSource::Classification
}
fn default_label_type() -> LabelType {
    LabelType::Manual
}
fn default_state() -> TagState {
    TagState::Confirmed
}

checked_string!(
    /// A tag's fully qualified name, such as `PII.Sensitive`.
    TagFqn,
    |v| check_text(v, 1, 512, false)
);

/// At most [`Tags::MAX`] tags, each tagFQN once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "Option<Vec<TagLabel>>")]
pub struct Tags(pub Vec<TagLabel>);

impl Tags {
    pub const MAX: usize = 100;

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Option<Vec<TagLabel>>> for Tags {
    type Error = String;
    fn try_from(tags: Option<Vec<TagLabel>>) -> Result<Self, String> {
        let tags = tags.unwrap_or_default();
        if tags.len() > Self::MAX {
            return Err(format!("at most {} tags (got {})", Self::MAX, tags.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for tag in &tags {
            if !seen.insert(tag.tag_fqn.as_str()) {
                return Err(format!("tag '{}' is listed twice", tag.tag_fqn.as_str()));
            }
        }
        Ok(Self(tags))
    }
}
