//! [`ApiError`]: every failure a handler returns, mapped to one status code and one JSON shape:
//! `{"error": "<code>", "message": "...", "details": [...]}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tickflow_engine::control::Refusal;
use tickflow_engine::supervisor::CommandError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No key, or a key that matches none configured (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The key's role is too weak for the route (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such graph, version, deployment, sink or key (404).
    #[error("{0}")]
    NotFound(String),
    /// The command conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but invalid; `details` lists every problem (422).
    #[error("{message}")]
    Unprocessable {
        /// Summary.
        message: String,
        /// Every problem.
        details: Vec<serde_json::Value>,
    },
    /// Any other status (400, 405, 413, 415, ...), with its message.
    #[error("{1}")]
    Status(StatusCode, String),
    /// The engine failed (500).
    #[error("{0}")]
    Internal(String),
    /// Not ready yet (503).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A 422 with one message.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// An error for `status` with `message`.
    pub fn from_status(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::NOT_FOUND => ApiError::NotFound(message),
            StatusCode::INTERNAL_SERVER_ERROR => ApiError::Internal(message),
            _ => ApiError::Status(status, message),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Status(status, _) => *status,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Status(status, _) => match *status {
                StatusCode::BAD_REQUEST => "bad_request",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                s if s.is_server_error() => "internal",
                _ => "error",
            },
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable { .. } => "unprocessable",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotFound(m) => ApiError::NotFound(m),
            Refusal::Conflict(m) => ApiError::Conflict(m),
            Refusal::Invalid(m) => ApiError::invalid(m),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Refused(r) => r.into(),
            CommandError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
        });
        if let ApiError::Unprocessable { details, .. } = &self {
            if !details.is_empty() {
                body["details"] = serde_json::Value::Array(details.clone());
            }
        }
        (self.status(), Json(body)).into_response()
    }
}
