//! The web UI's static files: embedded, typed, revalidated by ETag, locked to the box's origin,
//! and the vendored socket.io-client identical to the pinned npm release.

mod common;

use common::*;
use hyper::Method;

#[tokio::test]
async fn pages_are_served_with_security_headers_and_etags() {
    let app = TestApp::start().await;
    let page = get(app.addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.body.contains("<title>Tally</title>"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    for directive in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(csp.contains(directive), "{csp} lacks {directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains('*'), "{csp}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let etag = page.headers["etag"].to_str().unwrap().to_owned();
    let again = request(app.addr, Method::GET, "/index.html", b"", &[("if-none-match", &etag)]).await;
    assert_eq!((again.status, again.bytes.len()), (304, 0));
    let head = request(app.addr, Method::HEAD, "/", b"", &[]).await;
    assert_eq!((head.status, head.bytes.len()), (200, 0));
    assert_eq!(head.headers["content-length"], page.bytes.len().to_string());

    for missing in ["/nope", "/vendor/README.md", "/../Cargo.toml", "/%2e%2e/Cargo.toml"] {
        assert_eq!(get(app.addr, missing).await.status, 404, "{missing}");
    }
    assert_eq!(request(app.addr, Method::POST, "/", b"x", &[]).await.status, 405);
    let api = get(app.addr, "/api/nope").await;
    assert_eq!((api.status, api.json()["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(api.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_vendored_client_is_the_pinned_release_byte_for_byte() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pinned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("tests/js/package.json")).unwrap()).unwrap();
    let installed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("tests/js/node_modules/socket.io-client/package.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pinned["dependencies"]["socket.io-client"], installed["version"], "npm ci installs the pinned version");
    let app = TestApp::start().await;
    let served = get(app.addr, "/vendor/socket.io.min.js").await;
    assert_eq!(served.status, 200);
    assert!(served.headers["content-type"].to_str().unwrap().contains("javascript"));
    let release = std::fs::read(root.join("tests/js/node_modules/socket.io-client/dist/socket.io.min.js")).unwrap();
    assert!(
        served.bytes.as_ref() == release.as_slice(),
        "ui/vendor/socket.io.min.js differs from socket.io-client {}",
        installed["version"]
    );
    let alias = get(app.addr, "/socket.io/socket.io.min.js").await;
    assert!(alias.bytes == served.bytes, "served where the Node server's serveClient puts it too");
    let licence = get(app.addr, "/vendor/socket.io-client.LICENSE").await;
    assert!(licence.body.contains("MIT") || licence.body.contains("Permission is hereby granted"));
}

#[tokio::test]
async fn files_are_versioned_in_the_page_and_gzipped_for_browsers_that_accept_it() {
    use std::io::Read;
    let app = TestApp::start().await;
    let page = get(app.addr, "/").await;
    assert_eq!(page.headers["cache-control"], "no-cache", "the page itself always revalidates");
    let script = page
        .body
        .split('"')
        .find(|part| part.starts_with("/app.js?v="))
        .unwrap_or_else(|| panic!("the page names app.js with its version: {}", page.body))
        .to_owned();
    let versioned = get(app.addr, &script).await;
    assert_eq!(versioned.headers["cache-control"], "public, max-age=31536000, immutable");
    let plain = get(app.addr, "/app.js").await;
    assert_eq!(plain.headers["cache-control"], "no-cache");
    assert!(plain.bytes == versioned.bytes);
    let stale = get(app.addr, "/app.js?v=0000000000000000").await;
    assert_eq!(stale.headers["cache-control"], "no-cache", "an old version is not cached for good");
    assert!(plain.headers.get("content-encoding").is_none(), "no gzip unless asked");

    for path in ["/app.js", "/app.css", "/", "/vendor/socket.io.min.js"] {
        let gz = request(app.addr, Method::GET, path, b"", &[("accept-encoding", "gzip, deflate, br")]).await;
        assert_eq!(gz.headers["content-encoding"], "gzip", "{path}");
        assert_eq!(gz.headers["vary"], "Accept-Encoding");
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(gz.bytes.as_ref()).read_to_end(&mut unzipped).unwrap();
        let original = get(app.addr, path).await;
        assert!(unzipped == original.bytes.as_ref(), "{path} unzips to the original");
        assert!(gz.bytes.len() * 2 < original.bytes.len(), "{path}: {} -> {}", original.bytes.len(), gz.bytes.len());
        assert_ne!(gz.headers["etag"], original.headers["etag"], "each encoding has its own ETag");
        let etag = gz.headers["etag"].to_str().unwrap();
        let again =
            request(app.addr, Method::GET, path, b"", &[("accept-encoding", "gzip"), ("if-none-match", etag)]).await;
        assert_eq!(again.status, 304);
    }
    let refused = request(app.addr, Method::GET, "/app.js", b"", &[("accept-encoding", "gzip;q=0, identity")]).await;
    assert!(refused.headers.get("content-encoding").is_none());
}
