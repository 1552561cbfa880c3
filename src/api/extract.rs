//! Request extractors that turn every bad input into a clear [`ApiError`] naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde_json::Value;

use super::error::ApiError;

/// The largest management request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body sent as `application/json`, of at most `LIMIT` bytes.
pub struct JsonBody<const LIMIT: usize = MAX_BODY_BYTES>(pub Value);

/// The exact bytes of a body sent as `application/json`, of at most `LIMIT` bytes: for a
/// signature over the body as received. [`parse_json`] reads it.
pub struct RawJsonBody<const LIMIT: usize>(pub Bytes);

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for RawJsonBody<LIMIT> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        Ok(Self(read_body(req, "application/json", LIMIT).await?))
    }
}

/// A body's JSON; not JSON is a 400.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))
}

/// An RFC 6902 document sent as `application/json-patch+json`.
pub struct JsonPatchBody(pub json_patch::Patch);

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for JsonBody<LIMIT> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, "application/json", LIMIT).await?;
        Ok(Self(parse_json(&bytes)?))
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonPatchBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, "application/json-patch+json", MAX_BODY_BYTES).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
        if !value.is_array() {
            return Err(ApiError::BadRequest(
                "a JSON Patch is an array of operations".into(),
            ));
        }
        let patch = serde_path_to_error::deserialize(value).map_err(|e| {
            ApiError::BadRequest(format!("invalid JSON Patch at {}: {}", e.path(), e.inner()))
        })?;
        Ok(Self(patch))
    }
}

/// Checks the content type, then reads at most `limit` bytes.
async fn read_body(req: Request, expected: &str, limit: usize) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if content_type.as_deref() != Some(expected) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be {expected} (got {})",
            content_type.as_deref().unwrap_or("none")
        )));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A body over the limit is not read further; the server drains what is left before
    // the answer goes out (`server::drain_unread_body`), so the client reads the 413.
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    // A body that stops arriving holds its connection like headers that never end: it
    // gets as long between two pieces as headers get in all.
    let stall = req
        .extensions()
        .get::<super::server::Limits>()
        .map(|l| l.header_read_timeout);
    read_limited(req.into_body(), limit, stall).await
}

/// Reads at most `limit` bytes, or fails with 413 as soon as the body is longer, or with
/// 408 when no part of it arrives for `stall`.
async fn read_limited(
    mut body: axum::body::Body,
    limit: usize,
    stall: Option<std::time::Duration>,
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut kept = Vec::new();
    loop {
        let next = match stall {
            Some(stall) => tokio::time::timeout(stall, body.frame())
                .await
                .map_err(|_| ApiError::BodyTimeout(stall.as_secs()))?,
            None => body.frame().await,
        };
        let Some(frame) = next else { break };
        let frame =
            frame.map_err(|_| ApiError::BadRequest("the request body could not be read".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if kept.len() + data.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        kept.extend_from_slice(&data);
    }
    Ok(Bytes::from(kept))
}

/// A UUID from the path; a bad one is a 400 naming `id`.
pub fn path_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("id: '{raw}' is not a UUID")))
}

/// Query parameters, parsed strictly: an unknown or repeated parameter is a 400.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Self(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

impl QueryParams {
    /// Fails on any parameter outside `known` or given twice.
    pub fn only(&self, known: &[&str]) -> Result<&Self, ApiError> {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &self.0 {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter '{name}' (known: {})",
                    known.join(", ")
                )));
            }
            if !seen.insert(name) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter '{name}' is given twice"
                )));
            }
        }
        Ok(self)
    }

    /// The page size `limit`: 1–1000, 10 when absent.
    pub fn limit(&self) -> Result<u32, ApiError> {
        let limit = self.get::<u32>("limit")?.unwrap_or(10);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "query parameter 'limit': must be 1–1000 (got {limit})"
            )));
        }
        Ok(limit)
    }

    /// The parameter parsed with `FromStr`; a bad value is a 400 naming it.
    pub fn get<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, raw)) => raw
                .parse()
                .map(Some)
                .map_err(|e| ApiError::BadRequest(format!("query parameter '{name}': {e}"))),
        }
    }
}

/// The scheme and host this request was addressed to, for `href`s and `Location`.
pub struct BaseUrl(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let host = header("host").unwrap_or("localhost");
        let valid = |h: &str| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        };
        let host = if valid(host) { host } else { "localhost" };
        let scheme = match header("x-forwarded-proto") {
            Some("https") => "https",
            _ => "http",
        };
        Ok(Self(format!("{scheme}://{host}")))
    }
}
