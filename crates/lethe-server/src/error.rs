//! Errors of the management and read APIs: a status and a JSON body that names the field at
//! fault. Messages never carry event or property values.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered as `{"error": message, "field": name?}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    /// Further members of the body (e.g. the unknown names of a deletion clause).
    pub extra: Option<serde_json::Value>,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            extra: None,
            retry_after: None,
        }
    }

    /// 429: too many failed attempts for this account; retry after `secs`.
    pub fn throttled(secs: u64) -> Self {
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed attempts: wait before trying again",
            )
        }
    }

    /// 400 (malformed) or 422 (well-formed but unacceptable) about one field.
    pub fn field(status: StatusCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: Some(field.into()),
            extra: None,
            retry_after: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or invalid credentials")
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "your role does not allow this")
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn internal(message: &str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        if let Some(serde_json::Value::Object(extra)) = self.extra {
            body.as_object_mut().expect("object").extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}

impl From<lethe_meta::MetaError> for ApiError {
    fn from(e: lethe_meta::MetaError) -> Self {
        match e {
            lethe_meta::MetaError::Conflict(what) => {
                ApiError::new(StatusCode::CONFLICT, format!("{what} already exists"))
            }
            lethe_meta::MetaError::LastAdmin => ApiError::new(
                StatusCode::CONFLICT,
                lethe_meta::MetaError::LastAdmin.to_string(),
            ),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "the metadata database is unavailable");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message:
                        "Service unavailable, retry later: the metadata database cannot be reached"
                            .into(),
                    field: None,
                    extra: Some(serde_json::json!({ "reason": "metadata_unavailable" })),
                    retry_after: Some(crate::amplitude::RETRY_AFTER_SECS),
                }
            }
            other => {
                tracing::error!(error = %other, "metadata error");
                ApiError::internal("internal error in the metadata store")
            }
        }
    }
}

impl From<lethe_store::StoreError> for ApiError {
    fn from(e: lethe_store::StoreError) -> Self {
        if let Some(reason) = e.unavailable() {
            let (code, message) = crate::amplitude::unavailable(reason);
            return ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message,
                field: None,
                extra: Some(serde_json::json!({ "reason": code })),
                retry_after: Some(crate::amplitude::RETRY_AFTER_SECS),
            };
        }
        if let lethe_store::StoreError::Corrupt { .. } = e {
            // The answer names the quarantined file (a path and a checksum, never contents).
            return ApiError::internal(&e.to_string());
        }
        tracing::error!(error = %e, "store error");
        ApiError::internal("internal error in the event store")
    }
}
