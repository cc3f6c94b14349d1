//! The web UI: static files from `ui/`, embedded in the binary at compile time (building
//! needs no Node), served with their types, an ETag for revalidation, and security headers
//! that keep the page to the box's own origin.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rust_embed::RustEmbed;

use super::error::ApiError;
use super::{Body, full};

#[derive(RustEmbed)]
#[folder = "ui/"]
#[exclude = "*.md"]
struct Assets;

/// Only the box's own origin: no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// Serves `GET`/`HEAD` for UI paths; `/` is `index.html`.
pub fn serve<B>(request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "the UI is read-only")
            .into_response();
    }
    let path = request.uri().path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = Assets::get(path) else {
        return ApiError::not_found("page").into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let mut headers = HeaderMap::new();
    security_headers(&mut headers);
    if let Ok(value) = HeaderValue::from_str(file.metadata.mimetype()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    // Names are not content-hashed yet, so browsers revalidate (cheap with the ETag).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let fresh = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, full(bytes::Bytes::new()))
    } else if request.method() == Method::HEAD {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.data.len()));
        (StatusCode::OK, full(bytes::Bytes::new()))
    } else {
        (StatusCode::OK, full(bytes::Bytes::from(file.data.into_owned())))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
