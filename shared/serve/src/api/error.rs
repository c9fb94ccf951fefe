//! The one error type of the HTTP contract, and the one place it becomes a response
//! (`{"detail", "error_type"}` JSON).

use bytes::Bytes;
use http::{header, Response, StatusCode};

use crate::control::SwitchError;

/// A request that cannot be answered normally: its status, kind and message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `error_type` field: a stable kind clients can branch on.
    pub error_type: &'static str,
    /// The `detail` field: what was wrong, for a person.
    pub detail: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        error_type: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            error_type,
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", detail)
    }
}

impl From<SwitchError> for ApiError {
    fn from(e: SwitchError) -> Self {
        let (status, kind) = match &e {
            SwitchError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_model"),
            SwitchError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            // Not `model_load`: the served model is healthy, and ModelLoadFailure (whose
            // answer is a rollback) must not fire on refused switches.
            SwitchError::Verification { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "switch_refused")
            }
            SwitchError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable")
            }
            SwitchError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl ApiError {
    /// The JSON error body: `{"detail": ..., "error_type": ...}`.
    pub(crate) fn body(&self) -> String {
        serde_json::json!({"detail": self.detail, "error_type": self.error_type}).to_string()
    }

    /// A complete response for this error (no request id: for answers given before
    /// the request reached the contract, e.g. an unreadable body or a panic).
    pub fn into_response(self) -> Response<Bytes> {
        Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Bytes::from(self.body()))
            .expect("static headers are valid")
    }
}
