//! Access tokens as clients present them: an `Authorization` header value and a Socket.IO
//! handshake `auth` payload, verified with the box's keys. Only a token signed with the
//! secret passes; the input is tried whole, as the header, and as the handshake JSON.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tally::auth::{TokenKeys, bearer_token, handshake_token};

/// The secret the committed seed tokens are signed with (fuzz/README.md).
static KEYS: LazyLock<TokenKeys> = LazyLock::new(|| TokenKeys::from_secret(b"tally-fuzz-secret").expect("keys"));

fuzz_target!(|data: &[u8]| {
    if let Some(token) = bearer_token(data) {
        let _ = KEYS.verify(token);
    }
    if let Ok(auth) = serde_json::from_slice::<serde_json::Value>(data)
        && let Some(token) = handshake_token(&auth)
    {
        let _ = KEYS.verify(token);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = KEYS.verify(text);
        // Signed stream and thumbnail URLs carry a media token in the query string.
        let _ = KEYS.verify_media(text);
    }
});
