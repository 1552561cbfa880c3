//! Why an action was refused or failed. The API turns each kind into its status code in
//! one place (`From<ServiceError> for ApiError`); a console shows the same messages.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input is not of the expected shape at all (not a JSON object, say).
    #[error("{0}")]
    Malformed(String),
    /// One field holds a value the rules refuse.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Events of a publish that the rules refuse, each by its index and field.
    #[error("{}", .0.iter().map(|f| format!("[{}] {}: {}", f.index, f.field, f.message)).collect::<Vec<_>>().join("; "))]
    InvalidEvents(Vec<EventFault>),
    /// More items than one request may carry.
    #[error("{0}")]
    TooMany(String),
    /// The request's signature is missing or does not match (a publisher token with a
    /// signing secret).
    #[error("{0}")]
    BadSignature(String),
    /// The caller's role does not allow the action.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The action contradicts the resource's state (soft-deleted, the last admin token, a
    /// failed JSON Patch `test`).
    #[error("{0}")]
    Conflict(String),
    /// The action cannot be done right now (the event log cannot be written, outhook is
    /// stopping); the same request may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The store refused or failed; its kind (a name taken, a concurrent change, the
    /// database not answering) decides the answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// One refused event of a publish.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFault {
    pub index: usize,
    pub field: String,
    pub message: String,
}

impl ServiceError {
    /// A refused value of one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
