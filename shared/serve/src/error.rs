//! The one error type of the HTTP contract and the one table from error kind to
//! HTTP status and `error_type` (the body is always `{"detail", "error_type"}`).

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use crate::control::SwitchError;
use crate::recommender::RecommendError;

/// Declares [`ErrorKind`] with its status and `error_type`, one line per kind.
macro_rules! error_kinds {
    ($($(#[$doc:meta])* $kind:ident => $status:ident, $name:literal;)*) => {
        /// Every kind of refusal the API gives, each with one status and one
        /// `error_type` (the stable string clients branch on).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorKind {
            $($(#[$doc])* $kind,)*
        }

        impl ErrorKind {
            /// Every kind, in table order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind,)*];

            /// The HTTP status of this kind.
            pub fn status(self) -> StatusCode {
                match self { $(ErrorKind::$kind => StatusCode::$status,)* }
            }

            /// The `error_type` field of this kind.
            pub fn name(self) -> &'static str {
                match self { $(ErrorKind::$kind => $name,)* }
            }
        }
    };
}

error_kinds! {
    /// A malformed id, `k`, parameter, header or body.
    InvalidInput => BAD_REQUEST, "invalid_input";
    /// A model version that is malformed, or not served here.
    InvalidModel => BAD_REQUEST, "invalid_model";
    /// An experiment route while no experiment (A/B) is running.
    NotInExperiment => BAD_REQUEST, "not_in_experiment";
    /// An admin route without credentials.
    Unauthorized => UNAUTHORIZED, "unauthorized";
    /// An admin route with wrong credentials.
    Forbidden => FORBIDDEN, "forbidden";
    /// No such route, version or trace.
    NotFound => NOT_FOUND, "not_found";
    /// The movie asked about is not in the version asked.
    UnknownItem => NOT_FOUND, "unknown_item";
    /// The route exists; the method does not.
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed";
    /// A concurrent writer changed active.json first.
    Conflict => CONFLICT, "conflict";
    /// The version cannot do what was asked (a popularity version has no item factors).
    NotSupported => CONFLICT, "not_supported";
    /// A request body over [`crate::api::MAX_BODY`].
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "invalid_input";
    /// A switch whose target failed verification (the served model is healthy).
    SwitchRefused => UNPROCESSABLE_ENTITY, "switch_refused";
    /// Fold-in asked of a version that records no fold-in parameters.
    FoldInUnavailable => UNPROCESSABLE_ENTITY, "fold_in_unavailable";
    /// A bug (or an injected fault in a drill).
    Internal => INTERNAL_SERVER_ERROR, "internal_error";
    /// No model can be served.
    ModelUnavailable => SERVICE_UNAVAILABLE, "model_unavailable";
    /// The registry cannot be read or written.
    RegistryUnavailable => SERVICE_UNAVAILABLE, "registry_unavailable";
    /// The events location cannot be read.
    EventsUnavailable => SERVICE_UNAVAILABLE, "events_unavailable";
}

/// A request that cannot be answered normally: its kind and a message for a person.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status (from [`ErrorKind::status`]).
    pub status: StatusCode,
    /// The `error_type` field (from [`ErrorKind::name`]).
    pub error_type: &'static str,
    /// The `detail` field: what was wrong.
    pub detail: String,
    /// `/healthz`'s 503 also says `"status": "unavailable"`.
    unavailable: bool,
}

/// What an error response carries for the contract layer (logging, metrics, trace):
/// its `error_type` and detail.
#[derive(Debug, Clone)]
pub(crate) struct ErrorInfo {
    pub(crate) error_type: &'static str,
    pub(crate) detail: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        ApiError {
            status: kind.status(),
            error_type: kind.name(),
            detail: detail.into(),
            unavailable: false,
        }
    }

    /// [`ErrorKind::InvalidInput`].
    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, detail)
    }

    /// Adds `"status": "unavailable"` to the body (`/healthz`).
    pub(crate) fn health_unavailable(mut self) -> Self {
        self.unavailable = true;
        self
    }

    /// The JSON error body: `{"detail": ..., "error_type": ...}`.
    pub(crate) fn body(&self) -> String {
        let mut v = serde_json::json!({"detail": self.detail, "error_type": self.error_type});
        if self.unavailable {
            v["status"] = "unavailable".into();
        }
        v.to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.error_type, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.extensions_mut().insert(ErrorInfo {
            error_type: self.error_type,
            detail: self.detail,
        });
        resp
    }
}

impl From<SwitchError> for ApiError {
    fn from(e: SwitchError) -> Self {
        let kind = match &e {
            SwitchError::BadRequest(_) => ErrorKind::InvalidModel,
            SwitchError::NotFound { .. } => ErrorKind::NotFound,
            // Not `model_load`: the served model is healthy, and ModelLoadFailure (whose
            // answer is a rollback) must not fire on refused switches.
            SwitchError::Verification { .. } => ErrorKind::SwitchRefused,
            SwitchError::Unavailable(_) => ErrorKind::RegistryUnavailable,
            SwitchError::Conflict(_) => ErrorKind::Conflict,
        };
        ApiError::new(kind, e.to_string())
    }
}

impl From<recs_core::blocked::BlockedError> for ApiError {
    fn from(e: recs_core::blocked::BlockedError) -> Self {
        use recs_core::blocked::BlockedError;
        let kind = match &e {
            BlockedError::BadRequest(_) => ErrorKind::InvalidInput,
            BlockedError::Conflict => ErrorKind::Conflict,
            BlockedError::Store(_) | BlockedError::Invalid(_) => ErrorKind::RegistryUnavailable,
        };
        ApiError::new(kind, e.to_string())
    }
}

impl From<recs_core::filter::FilterError> for ApiError {
    fn from(e: recs_core::filter::FilterError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

impl From<RecommendError> for ApiError {
    fn from(e: RecommendError) -> Self {
        let kind = match &e {
            RecommendError::Unavailable(_) => ErrorKind::ModelUnavailable,
            RecommendError::NotServed { .. } | RecommendError::BadVersion(_) => {
                ErrorKind::InvalidModel
            }
            RecommendError::FoldIn { .. } => ErrorKind::FoldInUnavailable,
            RecommendError::Similar(recs_core::SimilarError::UnknownItem { .. }) => {
                ErrorKind::UnknownItem
            }
            RecommendError::Similar(recs_core::SimilarError::NotSupported { .. }) => {
                ErrorKind::NotSupported
            }
        };
        ApiError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_an_error_status_and_a_snake_case_name() {
        for k in ErrorKind::ALL {
            assert!(k.status().is_client_error() || k.status().is_server_error());
            assert!(k
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        // The contract's two fixed points (DESIGN.md): bad input 400, no model 503.
        assert_eq!(ErrorKind::InvalidInput.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ErrorKind::ModelUnavailable.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn the_body_is_detail_and_error_type() {
        let e = ApiError::new(ErrorKind::NotFound, "no such trace");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"detail": "no such trace", "error_type": "not_found"})
        );
    }
}
