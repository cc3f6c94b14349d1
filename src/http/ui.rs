//! The web UI: static files from `ui/`, embedded in the binary at compile time (building
//! needs no Node), served with their types, security headers that keep the page to the box's
//! own origin, and caching that suits a Pi on Wi-Fi:
//! - `index.html` refers to every other file with a content hash (`/app.js?v=…`); a request
//!   carrying the current hash is cacheable for a year, anything else revalidates by ETag;
//! - text files are gzipped once, at first use, and sent compressed to browsers that accept it.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
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

/// Where the Node server's `serveClient` puts the client; served here too.
const SERVE_CLIENT_ALIASES: [(&str, &str); 2] =
    [("socket.io/socket.io.min.js", "vendor/socket.io.min.js"), ("socket.io/socket.io.js", "vendor/socket.io.min.js")];

/// Compression must save at least this share to be worth a request header check.
const MIN_SAVING: f64 = 0.1;

struct Asset {
    mime: HeaderValue,
    plain: Bytes,
    gzip: Option<Bytes>,
    /// First 16 hex digits of the content's SHA-256: the ETag and the `?v=` version.
    version: String,
}

static CATALOG: LazyLock<HashMap<String, Asset>> = LazyLock::new(catalog);

fn catalog() -> HashMap<String, Asset> {
    let mut assets: HashMap<String, Asset> = Assets::iter()
        .filter_map(|path| {
            let file = Assets::get(&path)?;
            let mime = HeaderValue::from_str(file.metadata.mimetype()).ok()?;
            Some((path.to_string(), asset(mime, Bytes::from(file.data.into_owned()))))
        })
        .collect();
    // The page names each file with its version, so those can be cached for good.
    if let Some(index) = assets.get("index.html") {
        let mut html = String::from_utf8_lossy(&index.plain).into_owned();
        for (path, asset) in &assets {
            if path != "index.html" {
                html = html.replace(&format!("\"/{path}\""), &format!("\"/{path}?v={}\"", asset.version));
            }
        }
        let mime = index.mime.clone();
        assets.insert("index.html".into(), asset(mime, Bytes::from(html)));
    }
    assets
}

fn asset(mime: HeaderValue, plain: Bytes) -> Asset {
    use sha2::Digest;
    let version = hex(&sha2::Sha256::digest(&plain)[..8]);
    let textual = mime.to_str().is_ok_and(|m| m.starts_with("text/") || m.contains("javascript") || m.contains("svg"));
    let gzip = textual
        .then(|| gzip(&plain))
        .flatten()
        .filter(|gz| (gz.len() as f64) < plain.len() as f64 * (1.0 - MIN_SAVING));
    Asset { mime, plain, gzip, version }
}

fn gzip(data: &[u8]) -> Option<Bytes> {
    use std::io::Write;
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 3), Compression::best());
    encoder.write_all(data).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

/// Prepares (hashes and compresses) the files now rather than on the first page load.
pub fn preload() {
    LazyLock::force(&CATALOG);
}

/// Serves `GET`/`HEAD` for UI paths; `/` is `index.html`.
pub fn serve<B>(request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "the UI is read-only")
            .into_response();
    }
    let path = request.uri().path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let path = SERVE_CLIENT_ALIASES.iter().find(|(alias, _)| *alias == path).map_or(path, |(_, target)| target);
    let Some(asset) = CATALOG.get(path) else {
        return ApiError::not_found("page").into_response();
    };
    let gzip = asset.gzip.as_ref().filter(|_| accepts_gzip(request.headers()));
    let etag = format!("\"{}{}\"", asset.version, if gzip.is_some() { "-gz" } else { "" });
    let mut headers = HeaderMap::new();
    security_headers(&mut headers);
    headers.insert(header::CONTENT_TYPE, asset.mime.clone());
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if asset.gzip.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if gzip.is_some() {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let versioned = query_version(request.uri().query()).is_some_and(|v| v == asset.version);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if versioned { "public, max-age=31536000, immutable" } else { "no-cache" }),
    );
    let fresh = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let body = gzip.unwrap_or(&asset.plain).clone();
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if request.method() == Method::HEAD {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, body)
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

fn query_version(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(key, _)| key == "v").map(|(_, value)| value.into_owned())
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
