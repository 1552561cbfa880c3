//! The webhook resource of `seeds/002_*` (OpenMetadata's Webhook entity), as validated types.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;
use uuid::Uuid;

use super::change::{ChangeDescription, Version};
use super::reference::{DomainRef, OwnerRef, Tags};
use super::str_enum;
use super::text::{Text, check_text};
use crate::clock::Millis;

/// What a response shows in place of a secret.
pub const MASKED_SECRET: &str = "********";

str_enum! {
    /// The destination format.
    pub enum WebhookType {
        Generic => "Generic", Slack => "Slack", MSTeams => "MSTeams",
        GoogleChat => "GoogleChat", Custom => "Custom",
    }
}

str_enum! {
    /// Delivery state of a webhook. Only `active` and `disabled` can be asked for;
    /// the others are set by the dispatcher.
    pub enum WebhookStatus {
        Active => "active", Disabled => "disabled", Failed => "failed",
        AwaitingRetry => "awaitingRetry", RetryLimitReached => "retryLimitReached",
    }
}

str_enum! {
    /// How deliveries are sent. GET flattens the event into query parameters.
    pub enum HttpMethod { Post => "POST", Put => "PUT", Get => "GET" }
}

str_enum! {
    /// How requests are signed: `openmetadata` is `X-OpenMetadata-Signature: sha256=<hex>`,
    /// `openmetadata-base64` is `X-OM-Signature: sha256=<base64>` (what OpenMetadata servers
    /// send), `standard-webhooks` is the Standard Webhooks scheme (`whsec_` secrets).
    pub enum SignatureScheme {
        OpenMetadata => "openmetadata", OpenMetadataBase64 => "openmetadata-base64",
        StandardWebhooks => "standard-webhooks",
    }
}

str_enum! {
    /// The lifecycle events a filter can select. `entityRestored` extends the seed's enum,
    /// since the SPEC lists it among the events.
    pub enum EventType {
        EntityCreated => "entityCreated", EntityUpdated => "entityUpdated",
        EntitySoftDeleted => "entitySoftDeleted", EntityDeleted => "entityDeleted",
        EntityRestored => "entityRestored",
    }
}

/// Declares a newtype over `String` that is checked by `$check` when deserialized.
macro_rules! checked_string {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
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

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// A webhook's name: 1–256 characters, no `::` (OpenMetadata's entityName), no control
    /// characters. Unique among webhooks, soft-deleted ones included.
    WebhookName,
    |v| {
        check_text(v, 1, 256, false)?;
        if v.contains("::") {
            return Err("must not contain '::'".into());
        }
        Ok(())
    }
);

checked_string!(
    /// An entity type named in a filter (`table`, `testCase`, …) or `*` for all of them.
    EntityTypeName,
    |v| {
        if v == "*" {
            return Ok(());
        }
        check_text(v, 1, 64, false)?;
        if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("'{v}' is not an entity type (letters, digits and '_', or '*')"));
        }
        Ok(())
    }
);

/// An `include`/`exclude` item of a filter (SPEC §5): a changed-field name such as
/// `columns.description`, or a `key:value` qualifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FilterItem {
    Field(String),
    Qualifier(Qualifier, String),
}

str_enum! {
    /// The keys a `key:value` filter item may use.
    pub enum Qualifier {
        Domain => "domain", Owner => "owner", Tag => "tag", Fqn => "fqn",
        UpdatedBy => "updatedBy", EntityId => "entityId",
    }
}

impl TryFrom<String> for FilterItem {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        check_text(&value, 1, 512, false)?;
        match value.split_once(':') {
            Some((key, rest)) => {
                let key: Qualifier = key
                    .parse()
                    .map_err(|e| format!("'{value}': qualifier {e}"))?;
                if rest.is_empty() {
                    return Err(format!("'{value}': the value after ':' is empty"));
                }
                if key == Qualifier::EntityId && Uuid::parse_str(rest).is_err() {
                    return Err(format!("'{value}': entityId must be a UUID"));
                }
                Ok(Self::Qualifier(key, rest.to_owned()))
            }
            None => {
                if value.chars().any(char::is_whitespace) {
                    return Err(format!("'{value}': a field name has no spaces"));
                }
                Ok(Self::Field(value))
            }
        }
    }
}

impl From<FilterItem> for String {
    fn from(item: FilterItem) -> String {
        match item {
            FilterItem::Field(f) => f,
            FilterItem::Qualifier(k, v) => format!("{}:{v}", k.as_str()),
        }
    }
}

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
        impl ToSchema for $name {}
    };
}

string_schema!(FilterItem, None);
string_schema!(
    EndpointUrl,
    Some(utoipa::openapi::SchemaFormat::Custom("uri".into()))
);
string_schema!(
    SecretKey,
    Some(utoipa::openapi::SchemaFormat::KnownFormat(
        utoipa::openapi::KnownFormat::Password
    ))
);

/// Declares a bounded list newtype with a per-list check.
macro_rules! bounded_list {
    ($(#[$meta:meta])* $name:ident of $item:ty as $vec:literal, max $max:expr, min $min:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
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

bounded_list!(
    /// The entity types a filter selects; never empty (absent means `["*"]`).
    EntityTypes of EntityTypeName as "Vec<EntityTypeName>", max 100, min 1
);
bounded_list!(
    /// `include` or `exclude` items of a filter.
    FilterItems of FilterItem as "Vec<FilterItem>", max 100, min 0
);
bounded_list!(
    /// A webhook's filters; an event is delivered when any of them matches.
    EventFilters of EventFilter as "Vec<EventFilter>", max 50, min 0
);

/// One event filter (SPEC §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventFilter {
    pub event_type: EventType,
    #[serde(default = "all_entities")]
    pub entities: EntityTypes,
    #[serde(default)]
    pub include: FilterItems,
    #[serde(default)]
    pub exclude: FilterItems,
}

fn all_entities() -> EntityTypes {
    EntityTypes(vec![EntityTypeName("*".into())])
}

/// The absolute http(s) URL deliveries are sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointUrl(url::Url);

impl EndpointUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl TryFrom<String> for EndpointUrl {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} bytes", Self::MAX_LEN));
        }
        let url = url::Url::parse(&value)
            .map_err(|e| format!("'{value}' is not an absolute URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheme must be http or https, not '{}'",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; put them in webhookConfig.headers".into());
        }
        Ok(Self(url))
    }
}

impl From<EndpointUrl> for String {
    fn from(value: EndpointUrl) -> String {
        value.0.into()
    }
}

/// The HMAC key. It never leaves the server: `Serialize` and `Debug` print it masked, and
/// only [`SecretKey::expose`] reads it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SecretKey(String);

impl SecretKey {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The placeholder responses show; sending it back means "keep the current secret".
    pub fn is_mask(&self) -> bool {
        self.0 == MASKED_SECRET
    }
}

impl TryFrom<String> for SecretKey {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        check_text(&value, 1, 1024, false)?;
        Ok(Self(value))
    }
}

impl Serialize for SecretKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASKED_SECRET)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(********)")
    }
}

/// An empty `secretKey` means "no secret", as OpenMetadata treats it.
fn empty_secret_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretKey>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => SecretKey::try_from(s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// A Custom webhook's body template (minijinja), checked when written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PayloadTemplate(String);

impl PayloadTemplate {
    pub fn source(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PayloadTemplate {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        super::template::check(&value)?;
        Ok(Self(value))
    }
}

impl From<PayloadTemplate> for String {
    fn from(value: PayloadTemplate) -> String {
        value.0
    }
}

string_schema!(PayloadTemplate, None);

/// Custom request headers: at most 32, 8 KiB in all, names are HTTP tokens, values have no
/// CR, LF or other control characters. Headers outhook sets itself cannot be overridden.
///
/// The values of credential headers ([`Headers::is_credential`]) are secrets, as
/// `secretKey` is: responses and change records show the mask, sending the mask back
/// keeps the value, and `Debug` never prints them. `Serialize` writes them (the store keeps
/// the spec as JSON): views go through [`Headers::masked`].
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "Option<BTreeMap<String, String>>")]
pub struct Headers(pub BTreeMap<String, String>);

/// Parts of a header name that make its value a credential (`Authorization`,
/// `Proxy-Authorization`, `X-Api-Key`, `X-Auth-Token`, `Cookie`, `X-Client-Secret`…).
const CREDENTIAL_NAME_PARTS: &[&str] = &[
    "auth",
    "token",
    "secret",
    "key",
    "cookie",
    "password",
    "passwd",
    "credential",
    "session",
    "signature",
];

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.masked().0.iter()).finish()
    }
}

impl Headers {
    pub const MAX_COUNT: usize = 32;
    pub const MAX_TOTAL_BYTES: usize = 8192;
    /// Set by outhook on every delivery; a webhook may not replace them.
    pub const RESERVED: &'static [&'static str] = &[
        "host",
        "content-length",
        "user-agent",
        "x-openmetadata-signature",
        "x-om-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-outhook-delivery-id",
        "x-outhook-attempt",
        "x-openmetadata-signature-previous",
        "x-om-signature-previous",
    ];

    /// Hop-by-hop headers (RFC 9110 §7.6.1, and `Proxy-Connection`, `Expect`): they speak
    /// of the connection and its exchange, which outhook's client manages. These were
    /// always refused, so no stored webhook has them.
    pub const HOP_BY_HOP: &'static [&'static str] =
        &["connection", "te", "transfer-encoding", "upgrade"];
    /// Hop-by-hop headers refused when a webhook is written (older webhooks may hold them
    /// and still load).
    pub const HOP_BY_HOP_WRITTEN: &'static [&'static str] =
        &["keep-alive", "proxy-connection", "trailer", "expect"];

    fn hop_by_hop(name: &str) -> String {
        format!(
            "header '{name}' is hop-by-hop: it belongs to the connection, which outhook manages"
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rules added after headers were first stored, checked when a webhook is written
    /// (a stored webhook must still load): no hop-by-hop header, and a `Content-Type`
    /// that is a JSON type.
    pub fn check_written(&self) -> Result<(), String> {
        for (name, value) in &self.0 {
            let lower = name.to_ascii_lowercase();
            if Self::HOP_BY_HOP_WRITTEN.contains(&lower.as_str()) {
                return Err(Self::hop_by_hop(name));
            }
            if lower == "content-type" && !is_json_media_type(value) {
                return Err(format!(
                    "header '{name}': bodies are JSON in UTF-8: application/json or an application/…+json type, with no parameter but charset=utf-8"
                ));
            }
        }
        Ok(())
    }

    /// Whether a header's value is a credential: its name contains `auth`, `token`,
    /// `secret`, `key`, `cookie`, `password`, `credential`, `session` or `signature`, in
    /// any case.
    pub fn is_credential(name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        CREDENTIAL_NAME_PARTS
            .iter()
            .any(|part| lower.contains(part))
    }

    /// The headers as responses show them: credential values masked.
    pub fn masked(&self) -> Headers {
        Headers(
            self.0
                .iter()
                .map(|(name, value)| {
                    let shown = if Self::is_credential(name) {
                        MASKED_SECRET.to_owned()
                    } else {
                        value.clone()
                    };
                    (name.clone(), shown)
                })
                .collect(),
        )
    }

    /// The value `current` has for a header, its name compared without case.
    fn current_value<'a>(current: &'a Headers, name: &str) -> Option<&'a String> {
        current
            .0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Credential values sent back as the mask take the value `current` has for them.
    pub fn keep_masked_from(&mut self, current: &Headers) {
        for (name, value) in self.0.iter_mut() {
            if Self::is_credential(name)
                && value == MASKED_SECRET
                && let Some(kept) = Self::current_value(current, name)
            {
                value.clone_from(kept);
            }
        }
    }

    /// A credential header given as the mask while there is no value to keep (a new
    /// webhook, or a header the webhook does not have): its name.
    pub fn unresolved_mask(&self, current: Option<&Headers>) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, value)| {
                Self::is_credential(name)
                    && *value == MASKED_SECRET
                    && current.and_then(|c| Self::current_value(c, name)).is_none()
            })
            .map(|(name, _)| name.as_str())
    }
}

impl TryFrom<Option<BTreeMap<String, String>>> for Headers {
    type Error = String;
    fn try_from(headers: Option<BTreeMap<String, String>>) -> Result<Self, String> {
        let headers = headers.unwrap_or_default();
        if headers.len() > Self::MAX_COUNT {
            return Err(format!(
                "at most {} headers (got {})",
                Self::MAX_COUNT,
                headers.len()
            ));
        }
        let mut total = 0;
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &headers {
            let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || name.len() > 128 || !name.chars().all(is_tchar) {
                return Err(format!("'{name}' is not a valid header name"));
            }
            let lower = name.to_ascii_lowercase();
            if !seen.insert(lower.clone()) {
                return Err(format!("header '{name}' is given twice"));
            }
            if Self::RESERVED.contains(&lower.as_str()) {
                return Err(format!(
                    "header '{name}' is set by outhook and cannot be overridden"
                ));
            }
            if Self::HOP_BY_HOP.contains(&lower.as_str()) {
                return Err(Self::hop_by_hop(name));
            }
            if value
                .chars()
                .any(|c| c != '\t' && (c.is_control() || !c.is_ascii()))
            {
                return Err(format!(
                    "header '{name}': value must be printable ASCII (no CR, LF or control characters)"
                ));
            }
            // What was stored before the stricter rule of `check_written` still loads.
            if lower == "content-type"
                && !(value.trim().starts_with("application/json") || is_json_media_type(value))
            {
                return Err(format!(
                    "header '{name}': bodies are always application/json"
                ));
            }
            total += name.len() + value.len();
        }
        if total > Self::MAX_TOTAL_BYTES {
            return Err(format!(
                "at most {} bytes of headers (got {total})",
                Self::MAX_TOTAL_BYTES
            ));
        }
        Ok(Self(headers))
    }
}

/// Whether a Content-Type tells the truth about a body of JSON in UTF-8: `application/json`
/// or a `+json` type (`application/cloudevents+json`), in any case, with at most the
/// parameter `charset=utf-8` (quoted or not). It is sent as written.
fn is_json_media_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|subtype| {
            subtype.len() > "+json".len() && subtype.ends_with("+json") && !subtype.contains('/')
        });
    json && parts.all(|parameter| {
        parameter.split_once('=').is_some_and(|(key, val)| {
            key.trim().eq_ignore_ascii_case("charset")
                && val.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    })
}

/// Declares a bounded integer setting with a default.
macro_rules! bounded_int {
    ($(#[$meta:meta])* $name:ident, $min:literal, $max:literal, default $default:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
        impl ToSchema for $name {}

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

bounded_int!(
    /// Events per delivery: 1 sends one event object, more sends a JSON array.
    BatchSize, 1, 1000, default 10
);
bounded_int!(
    /// Seconds a delivery may take before it counts as failed.
    TimeoutSecs, 1, 300, default 10
);

/// Where and how deliveries are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    pub endpoint: EndpointUrl,
    #[serde(
        default,
        deserialize_with = "empty_secret_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret_key: Option<SecretKey>,
    #[serde(default)]
    pub send_to_admins: bool,
    #[serde(default)]
    pub send_to_owners: bool,
    #[serde(default)]
    pub send_to_followers: bool,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    #[serde(default)]
    pub timeout: TimeoutSecs,
    /// POST (default), PUT, or GET (the event as query parameters; batchSize 1).
    #[serde(default = "default_method")]
    pub http_method: HttpMethod,
    #[serde(default = "default_scheme")]
    pub signature_scheme: SignatureScheme,
    /// For webhookType Custom: the body, rendered from the event (see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_template: Option<PayloadTemplate>,
}

fn default_method() -> HttpMethod {
    HttpMethod::Post
}

fn default_scheme() -> SignatureScheme {
    SignatureScheme::OpenMetadata
}

/// Everything about a webhook that its users write. Server-owned fields live on [`Webhook`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    pub name: WebhookName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text<256>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Text<65536>>,
    pub webhook_type: WebhookType,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub batch_size: BatchSize,
    pub event_filters: EventFilters,
    pub webhook_config: WebhookConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRef>,
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

fn enabled_by_default() -> bool {
    true
}

impl WebhookSpec {
    /// Rules across fields, and rules added after webhooks were first stored (a stored
    /// webhook must still load); the error names the field. Called on what is written,
    /// after parsing.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let config = &self.webhook_config;
        if config.payload_template.is_some() && self.webhook_type != WebhookType::Custom {
            return Err((
                "webhookConfig.payloadTemplate",
                "is only for webhookType Custom".into(),
            ));
        }
        if config.http_method == HttpMethod::Get {
            if self.batch_size.get() != 1 {
                return Err((
                    "webhookConfig.httpMethod",
                    "GET sends one event per request: set batchSize to 1".into(),
                ));
            }
            if config.payload_template.is_some() {
                return Err((
                    "webhookConfig.httpMethod",
                    "GET has no body for a payloadTemplate".into(),
                ));
            }
            if self.webhook_type != WebhookType::Generic && self.webhook_type != WebhookType::Custom
            {
                return Err((
                    "webhookConfig.httpMethod",
                    "chat destinations take POST".into(),
                ));
            }
        }
        if config.signature_scheme == SignatureScheme::StandardWebhooks
            && let Some(secret) = config.secret_key.as_ref().filter(|s| !s.is_mask())
        {
            crate::dispatch::sign::standard_webhooks_key(secret.expose())
                .map_err(|e| ("webhookConfig.secretKey", e))?;
        }
        config
            .headers
            .check_written()
            .map_err(|e| ("webhookConfig.headers", e))?;
        if let Some(template) = &config.payload_template {
            super::template::check_written(template.source())
                .map_err(|e| ("webhookConfig.payloadTemplate", e))?;
        }
        if self.webhook_type == WebhookType::Custom {
            for (name, value) in &config.headers.0 {
                if super::template::is_template(value) {
                    super::template::check_written(value)
                        .map_err(|e| ("webhookConfig.headers", format!("header '{name}': {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// Refuses the mask where it stands for no value: a `secretKey` or a credential header
    /// of `********` on a new webhook (`current` is `None`), or a credential header the
    /// current webhook does not have.
    pub fn check_masks(&self, current: Option<&WebhookSpec>) -> Result<(), (&'static str, String)> {
        let config = &self.webhook_config;
        if current.is_none() && config.secret_key.as_ref().is_some_and(SecretKey::is_mask) {
            return Err((
                "webhookConfig.secretKey",
                "the mask '********' stands for an existing secret; a new webhook needs the secret itself".into(),
            ));
        }
        if let Some(name) = config
            .headers
            .unresolved_mask(current.map(|c| &c.webhook_config.headers))
        {
            return Err((
                "webhookConfig.headers",
                format!(
                    "header '{name}': the mask '********' stands for an existing value; give the value itself"
                ),
            ));
        }
        Ok(())
    }

    /// Fields of the resource that only the server sets. A create or update body may carry
    /// them (a client sending back what it read); they are ignored there.
    pub const SERVER_OWNED: &'static [&'static str] = &[
        "id",
        "fullyQualifiedName",
        "status",
        "failureDetails",
        "version",
        "updatedAt",
        "updatedBy",
        "href",
        "changeDescription",
        "deleted",
    ];
}

/// The last delivery failure (SPEC §6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failed_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failed_status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failed_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Millis>,
}

/// How long a rotated-out secret keeps signing by default.
pub const SECRET_GRACE_MS: Millis = 24 * 3600 * 1000;

/// A rotated-out secret and when it stops signing.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousSecret {
    pub key: SecretKey,
    pub until: Millis,
}

/// A stored webhook: the user's spec plus what the server owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: Uuid,
    pub spec: WebhookSpec,
    pub status: WebhookStatus,
    pub failure_details: Option<FailureDetails>,
    pub version: Version,
    pub updated_at: Millis,
    pub updated_by: String,
    pub change_description: Option<ChangeDescription>,
    pub deleted: bool,
    /// Set when the secret changes: receivers may still hold the old one for a while.
    pub previous_secret: Option<PreviousSecret>,
}

impl Webhook {
    /// The rotated-out secret, while it still signs at `now`.
    pub fn signing_previous(&self, now: Millis) -> Option<&SecretKey> {
        self.previous_secret
            .as_ref()
            .filter(|p| now < p.until)
            .map(|p| &p.key)
    }

    /// The next version with a new secret; the current one keeps signing for `grace_ms`.
    pub fn with_rotated_secret(
        &self,
        secret: SecretKey,
        grace_ms: Millis,
        by: &str,
        now: Millis,
    ) -> Self {
        let mut spec = self.spec.clone();
        spec.webhook_config.secret_key = Some(secret);
        let mut next = self
            .updated(spec, Resume::No, by, now)
            .unwrap_or_else(|| self.clone());
        next.previous_secret = self
            .spec
            .webhook_config
            .secret_key
            .clone()
            .filter(|_| grace_ms > 0)
            .map(|key| PreviousSecret {
                key,
                until: now + grace_ms,
            });
        next
    }

    /// The status the API shows: `disabled` when not enabled, else the delivery status.
    pub fn shown_status(&self) -> WebhookStatus {
        if self.spec.enabled {
            self.status
        } else {
            WebhookStatus::Disabled
        }
    }

    /// Whether going from `self` to `next` clears the delivery state (a resume, or enabling).
    pub fn resumes_delivery(&self, next: &Webhook) -> bool {
        next.spec.enabled && (!self.spec.enabled || next.status != self.status)
    }

    /// The resource as the API shows it (secret masked, `href` under `base`).
    pub fn view(&self, base: &str) -> WebhookView {
        let s = &self.spec;
        WebhookView {
            id: self.id,
            name: s.name.clone(),
            fully_qualified_name: s.name.clone(),
            display_name: s.display_name.clone(),
            description: s.description.clone(),
            webhook_type: s.webhook_type,
            status: self.shown_status(),
            enabled: s.enabled,
            batch_size: s.batch_size,
            event_filters: s.event_filters.clone(),
            webhook_config: WebhookConfig {
                headers: s.webhook_config.headers.masked(),
                ..s.webhook_config.clone()
            },
            failure_details: self.failure_details.clone(),
            owner: s.owner.clone(),
            tags: s.tags.clone(),
            version: self.version,
            updated_at: self.updated_at,
            updated_by: self.updated_by.clone(),
            href: format!("{base}/api/v1/webhooks/{}", self.id),
            // Masked here too: records written before credential headers were masked.
            change_description: self.change_description.clone().map(mask_credentials),
            deleted: self.deleted,
            domain: s.domain.clone(),
        }
    }
}

/// How an update treats the delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Leave the delivery status as it is (unless `enabled` changes).
    No,
    /// An admin asked for `status: active`: leave any failure state and deliver again.
    Yes,
}

impl Webhook {
    /// A new webhook at version 0.1.
    pub fn create(spec: WebhookSpec, by: &str, now: Millis) -> Self {
        Self {
            id: Uuid::new_v4(),
            status: WebhookStatus::Active,
            spec,
            failure_details: None,
            version: Version::INITIAL,
            updated_at: now,
            updated_by: by.to_owned(),
            change_description: None,
            deleted: false,
            previous_secret: None,
        }
    }

    /// The next version of this webhook with `spec` written over its own, or `None` when
    /// nothing would change. A `secretKey` equal to the mask keeps the current secret.
    pub fn updated(
        &self,
        mut spec: WebhookSpec,
        resume: Resume,
        by: &str,
        now: Millis,
    ) -> Option<Self> {
        let config = &mut spec.webhook_config;
        if config.secret_key.as_ref().is_some_and(SecretKey::is_mask) {
            config.secret_key = self.spec.webhook_config.secret_key.clone();
        }
        config
            .headers
            .keep_masked_from(&self.spec.webhook_config.headers);
        let mut change = ChangeDescription::new(self.version);
        // Secrets serialize masked, so the diff shows a secret added or removed, never its
        // value; credential headers are masked in the record once compared.
        change.record_diff("", &to_doc(&self.spec), &to_doc(&spec));
        change = mask_credentials(change);
        if let (Some(old), Some(new)) = (
            &self.spec.webhook_config.secret_key,
            &spec.webhook_config.secret_key,
        ) && old != new
        {
            change.updated(
                "webhookConfig.secretKey",
                MASKED_SECRET.into(),
                MASKED_SECRET.into(),
            );
        }
        let mut status = self.status;
        let mut failure_details = self.failure_details.clone();
        let enabling = spec.enabled && !self.spec.enabled;
        let resuming =
            resume == Resume::Yes && spec.enabled && self.status != WebhookStatus::Active;
        if enabling || resuming {
            status = WebhookStatus::Active;
            // The failure history stays visible; only the scheduled retry goes away.
            if let Some(details) = failure_details.as_mut() {
                details.next_attempt = None;
            }
        }
        let shown_after = if spec.enabled {
            status
        } else {
            WebhookStatus::Disabled
        };
        if self.shown_status() != shown_after {
            change.updated(
                "status",
                self.shown_status().as_str().into(),
                shown_after.as_str().into(),
            );
        }
        if change.is_empty() {
            return None;
        }
        let previous_secret = match (
            &self.spec.webhook_config.secret_key,
            &spec.webhook_config.secret_key,
        ) {
            (Some(old), Some(new)) if old != new => Some(PreviousSecret {
                key: old.clone(),
                until: now + SECRET_GRACE_MS,
            }),
            (_, None) => None,
            _ => self.previous_secret.clone(),
        };
        Some(Self {
            spec,
            status,
            failure_details,
            previous_secret,
            version: self.version.next(),
            updated_at: now,
            updated_by: by.to_owned(),
            change_description: Some(change),
            ..self.clone()
        })
    }

    /// The next version with `deleted` set (soft delete) or cleared (restore).
    pub fn with_deleted(&self, deleted: bool, by: &str, now: Millis) -> Self {
        let mut change = ChangeDescription::new(self.version);
        change.updated("deleted", self.deleted.into(), deleted.into());
        Self {
            deleted,
            version: self.version.next(),
            updated_at: now,
            updated_by: by.to_owned(),
            change_description: Some(change),
            ..self.clone()
        }
    }
}

/// A change record with the values of credential headers masked, wherever the record
/// holds them: the header itself, the headers object, or the whole configuration.
fn mask_credentials(mut change: ChangeDescription) -> ChangeDescription {
    fn mask_headers(headers: Option<&mut serde_json::Value>) {
        let Some(serde_json::Value::Object(headers)) = headers else {
            return;
        };
        for (name, value) in headers.iter_mut() {
            if Headers::is_credential(name) {
                *value = MASKED_SECRET.into();
            }
        }
    }
    let fields = change
        .fields_added
        .iter_mut()
        .chain(change.fields_updated.iter_mut())
        .chain(change.fields_deleted.iter_mut());
    for field in fields {
        let values = field.old_value.iter_mut().chain(field.new_value.iter_mut());
        match field.name.as_str() {
            "webhookConfig" => values.for_each(|v| mask_headers(v.get_mut("headers"))),
            "webhookConfig.headers" => values.for_each(|v| mask_headers(Some(v))),
            name => {
                if let Some(header) = name.strip_prefix("webhookConfig.headers.")
                    && Headers::is_credential(header)
                {
                    values.for_each(|v| *v = MASKED_SECRET.into());
                }
            }
        }
    }
    change
}

fn to_doc(spec: &WebhookSpec) -> serde_json::Value {
    serde_json::to_value(spec).expect("a webhook spec always serializes")
}

/// The webhook resource as returned by the API (the seed schema, field for field).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: Uuid,
    pub name: WebhookName,
    pub fully_qualified_name: WebhookName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Text<256>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Text<65536>>,
    pub webhook_type: WebhookType,
    pub status: WebhookStatus,
    pub enabled: bool,
    pub batch_size: BatchSize,
    pub event_filters: EventFilters,
    pub webhook_config: WebhookConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_details: Option<FailureDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
    pub tags: Tags,
    pub version: Version,
    pub updated_at: Millis,
    pub updated_by: String,
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_description: Option<ChangeDescription>,
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainRef>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<WebhookSpec, String> {
        serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    fn minimal() -> serde_json::Value {
        json!({
            "name": "w", "webhookType": "Generic",
            "eventFilters": [{"eventType": "entityCreated"}],
            "webhookConfig": {"endpoint": "https://example.com/hook"}
        })
    }

    #[test]
    fn defaults_follow_the_seed_schema() {
        let spec = parse(minimal()).unwrap();
        assert!(spec.enabled);
        assert_eq!(spec.batch_size.get(), 10);
        assert_eq!(spec.webhook_config.timeout.get(), 10);
        assert_eq!(spec.event_filters.0[0].entities.0[0].as_str(), "*");
        assert!(!spec.webhook_config.send_to_owners);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("/name", json!("a::b"), "name"),
            ("/batchSize", json!(0), "batchSize"),
            ("/batchSize", json!(1001), "batchSize"),
            ("/webhookType", json!("Email"), "webhookType"),
            (
                "/webhookConfig/endpoint",
                json!("ftp://x/y"),
                "webhookConfig.endpoint",
            ),
            (
                "/webhookConfig/endpoint",
                json!("/relative"),
                "webhookConfig.endpoint",
            ),
            (
                "/webhookConfig/timeout",
                json!(301),
                "webhookConfig.timeout",
            ),
            (
                "/webhookConfig/headers",
                json!({"X-A": "a\r\nb"}),
                "webhookConfig.headers",
            ),
            (
                "/webhookConfig/headers",
                json!({"Host": "h"}),
                "webhookConfig.headers",
            ),
            (
                "/eventFilters/0/eventType",
                json!("entityExploded"),
                "eventFilters[0].eventType",
            ),
            (
                "/eventFilters/0/entities",
                json!([]),
                "eventFilters[0].entities",
            ),
            (
                "/eventFilters/0/include",
                json!(["color:red"]),
                "eventFilters[0].include[0]",
            ),
            (
                "/eventFilters/0/include",
                json!(["entityId:nope"]),
                "eventFilters[0].include[0]",
            ),
            ("/owner", json!({"type": "robot", "name": "x"}), "owner"),
            ("/owner", json!({"type": "user"}), "owner"),
            ("/domain", json!({"type": "team", "name": "x"}), "domain"),
            ("/tags", json!([{"tagFQN": "A"}, {"tagFQN": "A"}]), "tags"),
            ("/surprise", json!(1), "surprise"),
        ];
        for (pointer, value, field) in cases {
            let mut doc = minimal();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut doc
            } else {
                doc.pointer_mut(parent).unwrap()
            };
            target[key] = value;
            let err = parse(doc).expect_err(pointer);
            assert!(err.contains(field), "{pointer}: {err}");
        }
    }

    #[test]
    fn secrets_never_serialize() {
        let mut doc = minimal();
        doc["webhookConfig"]["secretKey"] = json!("s3cret");
        let spec = parse(doc).unwrap();
        let out = serde_json::to_string(&spec).unwrap();
        assert!(!out.contains("s3cret"));
        assert!(out.contains(MASKED_SECRET));
        assert!(!format!("{spec:?}").contains("s3cret"));
        assert_eq!(spec.webhook_config.secret_key.unwrap().expose(), "s3cret");
    }

    #[test]
    fn rules_added_later_refuse_what_is_written_but_stored_webhooks_still_load() {
        let mut doc = minimal();
        doc["webhookType"] = json!("Custom");
        doc["webhookConfig"]["payloadTemplate"] = json!("{{ x | nosuchfilter }}");
        for (headers, refused) in [
            (json!({"Keep-Alive": "timeout=5"}), "hop-by-hop"),
            (
                json!({"Content-Type": "application/jsonx"}),
                "JSON in UTF-8",
            ),
        ] {
            doc["webhookConfig"]["headers"] = headers;
            let stored = parse(doc.clone()).expect("a webhook stored before the rules loads");
            let (field, message) = stored.check().unwrap_err();
            assert_eq!(field, "webhookConfig.headers", "{message}");
            assert!(message.contains(refused), "{message}");
        }
        doc["webhookConfig"]["headers"] =
            json!({"Content-Type": "application/json; charset=UTF-8"});
        let (field, message) = parse(doc).unwrap().check().unwrap_err();
        assert_eq!(field, "webhookConfig.payloadTemplate", "{message}");
        assert!(
            message.contains("unknown filter 'nosuchfilter'"),
            "{message}"
        );
    }

    #[test]
    fn credential_headers_are_masked_in_debug_and_views() {
        let mut doc = minimal();
        doc["webhookConfig"]["headers"] =
            json!({"Authorization": "Bearer abc", "X-Session-Id": "s1", "X-Team": "data"});
        let spec = parse(doc).unwrap();
        assert!(!format!("{spec:?}").contains("abc") && !format!("{spec:?}").contains("s1"));
        let view = serde_json::to_value(Webhook::create(spec, "a", 1).view("")).unwrap();
        assert_eq!(
            view["webhookConfig"]["headers"],
            json!({"Authorization": MASKED_SECRET, "X-Session-Id": MASKED_SECRET, "X-Team": "data"})
        );
        for name in [
            "authorization",
            "PROXY-AUTHORIZATION",
            "Cookie",
            "X-Api-Key",
            "X-Auth-Token",
            "Client-Secret",
            "X-Password",
        ] {
            assert!(Headers::is_credential(name), "{name}");
        }
        for name in ["X-Team", "Accept", "X-Request-Source", "Content-Type"] {
            assert!(!Headers::is_credential(name), "{name}");
        }
    }

    #[test]
    fn empty_secret_means_none_and_null_tags_mean_none() {
        let mut doc = minimal();
        doc["webhookConfig"]["secretKey"] = json!("");
        doc["tags"] = json!(null);
        let spec = parse(doc).unwrap();
        assert!(spec.webhook_config.secret_key.is_none());
        assert!(spec.tags.is_empty());
    }

    #[test]
    fn filter_items_round_trip() {
        for item in [
            "tags",
            "columns.description",
            "domain:Sales",
            "fqn:svc.*.orders",
            "tag:PII.Sensitive",
        ] {
            let parsed = FilterItem::try_from(item.to_owned()).unwrap();
            assert_eq!(String::from(parsed), item);
        }
    }
    fn webhook() -> Webhook {
        Webhook::create(parse(minimal()).unwrap(), "admin", 1_000)
    }

    #[test]
    fn updates_bump_the_version_and_describe_the_change() {
        let w = webhook();
        assert_eq!(w.version, Version::INITIAL);
        assert_eq!(w.status, WebhookStatus::Active);
        let mut doc = minimal();
        doc["enabled"] = json!(false);
        doc["webhookConfig"]["timeout"] = json!(30);
        let next = w
            .updated(parse(doc).unwrap(), Resume::No, "bob", 2_000)
            .unwrap();
        assert_eq!(next.version.tenths(), 2);
        assert_eq!(next.shown_status(), WebhookStatus::Disabled);
        assert_eq!(
            next.status,
            WebhookStatus::Active,
            "the delivery status is kept underneath"
        );
        assert!(!w.resumes_delivery(&next));
        assert_eq!((next.updated_by.as_str(), next.updated_at), ("bob", 2_000));
        let change = next.change_description.unwrap();
        let names: Vec<_> = change
            .fields_updated
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["enabled", "webhookConfig.timeout", "status"]);
        assert_eq!(change.previous_version, Version::INITIAL);
    }

    #[test]
    fn an_identical_update_is_no_change() {
        let w = webhook();
        assert!(
            w.updated(w.spec.clone(), Resume::No, "bob", 2_000)
                .is_none()
        );
    }

    #[test]
    fn the_mask_keeps_the_secret_and_a_new_secret_is_recorded_masked() {
        let mut doc = minimal();
        doc["webhookConfig"]["secretKey"] = json!("first");
        let w = Webhook::create(parse(doc.clone()).unwrap(), "a", 1);
        doc["webhookConfig"]["secretKey"] = json!(MASKED_SECRET);
        assert!(
            w.updated(parse(doc.clone()).unwrap(), Resume::No, "a", 2)
                .is_none()
        );
        doc["webhookConfig"]["secretKey"] = json!("second");
        let next = w.updated(parse(doc).unwrap(), Resume::No, "a", 2).unwrap();
        assert_eq!(
            next.spec
                .webhook_config
                .secret_key
                .as_ref()
                .unwrap()
                .expose(),
            "second"
        );
        let text = serde_json::to_string(&next.change_description).unwrap();
        assert!(
            text.contains("webhookConfig.secretKey")
                && !text.contains("second")
                && !text.contains("first")
        );
    }

    #[test]
    fn resume_leaves_a_failure_state_and_keeps_the_history() {
        let mut w = webhook();
        w.status = WebhookStatus::RetryLimitReached;
        w.failure_details = Some(FailureDetails {
            last_failed_at: Some(5),
            last_failed_status_code: Some(500),
            last_failed_reason: Some("boom".into()),
            next_attempt: Some(9),
        });
        let next = w.updated(w.spec.clone(), Resume::Yes, "a", 10).unwrap();
        assert_eq!(next.status, WebhookStatus::Active);
        assert!(w.resumes_delivery(&next));
        let details = next.failure_details.unwrap();
        assert_eq!(
            (details.last_failed_status_code, details.next_attempt),
            (Some(500), None)
        );
    }

    #[test]
    fn soft_delete_and_restore_are_versions() {
        let w = webhook();
        let gone = w.with_deleted(true, "a", 2);
        assert!(gone.deleted);
        assert_eq!(gone.version.tenths(), 2);
        let back = gone.with_deleted(false, "a", 3);
        assert!(!back.deleted);
        assert_eq!(back.version.tenths(), 3);
    }
}
