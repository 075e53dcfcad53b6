//! What can go wrong when talking to a Steward server.

use steward_types::{ErrorCode, ErrorDetail};

/// An error from a client call: the server said no, the server could not be
/// reached, or its answer was not what the API promises.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body (`{"error": {...}}`).
    #[error("{detail}")]
    Api {
        /// The HTTP status of the answer.
        status: u16,
        /// The error as the server described it.
        detail: Box<ErrorDetail>,
    },
    /// The request did not complete: connection refused, timeout, bad URL.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The server answered, but the body was not the JSON the API promises.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status, when the server answered with an error body.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The stable error code, when the server answered with an error body.
    pub fn code(&self) -> Option<ErrorCode> {
        self.detail().map(|detail| detail.code)
    }

    /// The server's error detail, when it answered with an error body.
    pub fn detail(&self) -> Option<&ErrorDetail> {
        match self {
            ClientError::Api { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(err: reqwest::Error) -> Self {
        // reqwest's Display omits the cause ("error sending request"); the
        // source chain says what actually happened (connection refused, ...).
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if err.is_decode() {
            ClientError::Decode(message)
        } else {
            ClientError::Transport(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_display_the_message_and_the_code() {
        let err = ClientError::Api {
            status: 404,
            detail: Box::new(ErrorDetail::new(ErrorCode::NotFound, "no agent named x")),
        };
        assert_eq!(err.to_string(), "no agent named x (not_found)");
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.code(), Some(ErrorCode::NotFound));
    }

    #[test]
    fn transport_errors_have_no_status_or_code() {
        let err = ClientError::Transport("connection refused".into());
        assert_eq!(err.status(), None);
        assert_eq!(err.code(), None);
        assert!(err.to_string().contains("connection refused"));
    }
}
