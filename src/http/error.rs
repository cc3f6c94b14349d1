//! API errors: a status and `{"error":{"code":"...","message":"..."}}`.

use hyper::{Response, StatusCode, header};

use super::{Body, full};
use crate::store::{StorageFault, StoreError, is_disk_full};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "your role does not allow this")
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn insufficient_storage() -> ApiError {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", "the box is out of storage space")
    }

    /// The store takes no writes right now (a stalled or failed disk, or shutdown): nothing
    /// was acknowledged, and a retry later may succeed.
    pub fn unavailable() -> ApiError {
        ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the box cannot store this right now; try again shortly",
            )
        }
    }

    pub fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, context, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } }).to_string();
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Conflict(what) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", format!("{what} already exists"))
            }
            StoreError::NotAllowed => ApiError::forbidden(),
            StoreError::LastAdmin => {
                ApiError::new(StatusCode::CONFLICT, "last_admin", "an organization keeps at least one admin")
            }
            StoreError::Io(io) | StoreError::Sled(sled::Error::Io(io)) if is_disk_full(&io) => {
                ApiError::insufficient_storage()
            }
            StoreError::Unavailable(StorageFault::Failed { disk_full: true, .. }) => ApiError::insufficient_storage(),
            StoreError::Unavailable(_) | StoreError::TimedOut(_) | StoreError::Closing => ApiError::unavailable(),
            other => ApiError::internal("storage", other),
        }
    }
}
