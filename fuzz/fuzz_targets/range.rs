//! `Range` / `If-Range` against a file of fuzzed length: the first 8 bytes are the length,
//! the rest `Range` and (after a newline) `If-Range`. A selected part always lies inside the
//! file.
#![no_main]

use http::header::{HeaderMap, HeaderValue, IF_RANGE, RANGE};
use libfuzzer_sys::fuzz_target;
use tally::http::range::{Selection, select};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, rest) = data.split_at(8);
    let len = u64::from_le_bytes(len.try_into().unwrap());
    let mut parts = rest.splitn(2, |&b| b == b'\n');
    let mut headers = HeaderMap::new();
    if let Some(Ok(range)) = parts.next().map(HeaderValue::from_bytes) {
        headers.insert(RANGE, range);
    }
    if let Some(Ok(if_range)) = parts.next().map(HeaderValue::from_bytes) {
        headers.insert(IF_RANGE, if_range);
    }
    if let Selection::Part { start, end } = select(&headers, "\"etag\"", Some("Tue, 01 Dec 2026 15:00:00 GMT"), len) {
        assert!(start <= end && end < len, "{start}-{end} of {len}");
    }
});
