//! The one error type of the domain and the store. The server turns it into an
//! HTTP response in exactly one place.

use steward_types::{ErrorCode, ErrorDetail};

/// A failure with a stable code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct Error {
    /// Stable code from the catalogue.
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Structured details: the limit, the field, the offending values.
    pub details: Option<serde_json::Value>,
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Attach structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `invalid_request` naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::new(
            ErrorCode::InvalidRequest,
            format!("{field}: {}", message.into()),
        )
        .with_details(serde_json::json!({ "field": field }))
    }

    /// `not_found` for a kind of resource and the id that was asked for.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Error::new(
            ErrorCode::NotFound,
            format!("no {kind} '{id}' in this tenant"),
        )
        .with_details(serde_json::json!({ "kind": kind, "id": id }))
    }

    /// `unknown_reference`: a field names something that does not exist.
    pub fn unknown_reference(field: &str, kind: &str, id: &str) -> Self {
        Error::new(
            ErrorCode::UnknownReference,
            format!("{field}: no {kind} '{id}' in this tenant"),
        )
        .with_details(serde_json::json!({ "field": field, "kind": kind, "id": id }))
    }

    /// `already_exists` for a unique name.
    pub fn already_exists(kind: &str, name: &str) -> Self {
        Error::new(
            ErrorCode::AlreadyExists,
            format!("a {kind} named '{name}' already exists in this tenant"),
        )
        .with_details(serde_json::json!({ "kind": kind, "name": name }))
    }

    /// `internal`, for failures that are Steward's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }

    /// The wire form.
    pub fn to_detail(&self) -> ErrorDetail {
        let mut detail = ErrorDetail::new(self.code, self.message.clone());
        detail.details = self.details.clone();
        detail
    }
}
