//! CORS for the polling transport: listed origins are reflected with credentials allowed;
//! anything else gets no CORS headers (never `*` together with credentials).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

fn allowed<'a>(origins: &[String], origin: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
    let origin = origin?;
    let text = origin.to_str().ok()?;
    origins.iter().any(|allowed| allowed == text).then_some(origin)
}

/// Whether a request may act on this server: it comes from the server's own origin (its
/// `Origin` names the `Host` it was sent to), from a listed origin, or from no browser
/// context at all (no `Origin`, and no `Sec-Fetch-Site` other than `same-origin` / `none`).
/// Browsers send `Origin` on every cross-site POST and WebSocket, and `Sec-Fetch-Site` on
/// every request they make, so a page of another site cannot pass.
pub fn same_origin(origins: &[String], headers: &HeaderMap) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else { return false };
        if origins.iter().any(|allowed| allowed == origin) {
            return true;
        }
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
        return matches!((authority, host), (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host));
    }
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        None | Some(b"same-origin" | b"none") => true,
        Some(_) => false,
    }
}

/// Adds the CORS response headers when the request's origin is allowed.
pub(super) fn decorate(origins: &[String], origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed(origins, origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

/// Answers an OPTIONS preflight.
pub(super) fn preflight(origins: &[String], request: &HeaderMap) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    if allowed(origins, request.get(header::ORIGIN)).is_some() {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        let requested = request
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static("content-type"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (header::HeaderName::from_static(name), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn own_and_listed_origins_only() {
        let listed = ["http://tally.local:8080".to_owned()];
        let ok = [
            headers(&[]),
            headers(&[("host", "10.0.0.5:8080"), ("origin", "http://10.0.0.5:8080")]),
            headers(&[("host", "Box.local"), ("origin", "https://box.local")]),
            headers(&[("host", "10.0.0.5"), ("origin", "http://tally.local:8080")]),
            headers(&[("sec-fetch-site", "same-origin")]),
            headers(&[("sec-fetch-site", "none")]),
        ];
        for request in &ok {
            assert!(same_origin(&listed, request), "{request:?}");
        }
        let refused = [
            headers(&[("host", "10.0.0.5:8080"), ("origin", "http://evil.example")]),
            headers(&[("host", "10.0.0.5:8080"), ("origin", "http://10.0.0.5:8081")]),
            headers(&[("host", "10.0.0.5:8080"), ("origin", "null")]),
            headers(&[("origin", "http://10.0.0.5:8080")]),
            headers(&[("host", "10.0.0.5"), ("origin", "http://10.0.0.5/path")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
        ];
        for request in &refused {
            assert!(!same_origin(&listed, request), "{request:?}");
        }
    }
}
