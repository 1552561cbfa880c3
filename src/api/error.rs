//! The one error type of the HTTP API and its stable JSON shape:
//! `{"code": <status>, "message": "...", "details": [{"field", "message"}]}`.
//!
//! Status codes: 400 body or query not parseable, 401 no valid token, 403 role too small,
//! 404 unknown resource or route, 405 wrong method, 409 name taken / concurrent change /
//! failed JSON Patch `test`, 408 the body stopped arriving, 413 body too large, 415 wrong
//! content type, 429 publish rate
//! or quota exceeded (with `Retry-After`), 422 well-formed input with an invalid value (the
//! field is named), 503 the database does not answer or the instance is stopping (with
//! `Retry-After`). Internal detail is logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::ServiceError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub code: u16,
    pub message: String,
    /// The offending fields, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

/// One invalid field: a dotted path such as `webhookConfig.endpoint` or `eventFilters[0].eventType`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// For a batch of events: which one (from 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn describe(&self) -> String {
        match self.index {
            Some(i) => format!("event {i}: {}: {}", self.field, self.message),
            None => format!("{}: {}", self.field, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", .0.iter().map(FieldError::describe).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error("the request body stopped arriving for {0} s")]
    BodyTimeout(u64),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{reason}")]
    TooManyRequests {
        reason: String,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 422 for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError {
            index: None,
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized | Self::BadSignature(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) | Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What a 503 tells the client to wait, in seconds.
pub const RETRY_UNAVAILABLE_AFTER_SECS: u64 = 1;

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => Self::Conflict(format!("{what} is already taken")),
            StoreError::Stale => Self::Conflict(
                "the resource was changed concurrently; read it again and retry".into(),
            ),
            unavailable if unavailable.is_unavailable() => {
                log_unavailable(&unavailable);
                Self::Unavailable("the database does not answer right now; retry".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

/// The one place where the service's refusals become status codes.
impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Malformed(message) => Self::BadRequest(message),
            ServiceError::Invalid { field, message } => Self::invalid(field, message),
            ServiceError::InvalidEvents(faults) => Self::Invalid(
                faults
                    .into_iter()
                    .map(|f| FieldError {
                        index: Some(f.index),
                        field: f.field,
                        message: f.message,
                    })
                    .collect(),
            ),
            ServiceError::TooMany(message) => Self::TooLarge(message),
            ServiceError::BadSignature(message) => Self::BadSignature(message),
            ServiceError::Forbidden(message) => Self::Forbidden(message),
            ServiceError::NotFound(message) => Self::NotFound(message),
            ServiceError::Conflict(message) => Self::Conflict(message),
            ServiceError::Unavailable(message) => Self::Unavailable(message),
            ServiceError::Store(err) => err.into(),
            ServiceError::Internal(err) => Self::Internal(err),
        }
    }
}

/// Logs that the database does not answer, at most once a second: during an outage every
/// request meets it.
fn log_unavailable(err: &StoreError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOGGED_SECOND: AtomicU64 = AtomicU64::new(0);
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_LOGGED_SECOND.swap(second, Ordering::Relaxed) != second {
        tracing::warn!(error = %err, "the database does not answer; requests get 503");
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(err) = &self {
            tracing::error!(error = format!("{err:#}"), "request failed");
        }
        let details = match &self {
            Self::Invalid(fields) => fields.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            code: status.as_u16(),
            message: self.to_string(),
            details,
        };
        let mut response = (status, Json(body)).into_response();
        let retry_after = match &self {
            Self::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Unavailable(_) => Some(RETRY_UNAVAILABLE_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
