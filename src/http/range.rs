//! `Range` and `If-Range` on a representation of known length (RFC 9110 §14): which bytes
//! a request asks for. Parsing is `http_range_header`'s; the policy here is ours: one range
//! is served as 206, several or an unparsable one get the whole file, past the end is 416.

use http_range_header::RangeUnsatisfiableError;
use hyper::header::{self, HeaderMap};

/// What a `Range` header asks of a representation of a given length.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// Applies `Range` (and `If-Range`) to a representation of `len` bytes. One range is served
/// as 206; several are answered with the whole file (RFC 9110 lets a server ignore Range),
/// and so is a Range that does not parse.
pub fn select(headers: &HeaderMap, etag: &str, last_modified: Option<&str>, len: u64) -> Selection {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Selection::Whole;
    };
    if let Some(condition) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        // Only a strong, current validator keeps the Range in force.
        let current = condition == etag || last_modified.is_some_and(|date| condition == date);
        if !current {
            return Selection::Whole;
        }
    }
    match http_range_header::parse_range_header(range).map(|parsed| parsed.validate(len)) {
        Ok(Ok(ranges)) if ranges.len() == 1 => Selection::Part { start: *ranges[0].start(), end: *ranges[0].end() },
        Ok(Ok(_)) => Selection::Whole,
        Ok(Err(RangeUnsatisfiableError::Unsatisfiable)) | Err(RangeUnsatisfiableError::Unsatisfiable) => {
            Selection::Unsatisfiable
        }
        Ok(Err(RangeUnsatisfiableError::Rejected(_))) => Selection::Unsatisfiable,
        _ => Selection::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with(range: &str, if_range: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        if let Some(value) = if_range {
            headers.insert(header::IF_RANGE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn range_selection() {
        let date = "Tue, 01 Dec 2026 15:00:00 GMT";
        let pick = |range: &str, if_range: Option<&str>| select(&with(range, if_range), "\"e\"", Some(date), 1000);
        assert_eq!(pick("bytes=0-99", None), Selection::Part { start: 0, end: 99 });
        assert_eq!(pick("bytes=900-", None), Selection::Part { start: 900, end: 999 });
        assert_eq!(pick("bytes=-100", None), Selection::Part { start: 900, end: 999 });
        assert_eq!(pick("bytes=-5000", None), Selection::Part { start: 0, end: 999 });
        assert_eq!(pick("bytes=990-5000", None), Selection::Part { start: 990, end: 999 });
        assert_eq!(pick("bytes=1000-", None), Selection::Unsatisfiable);
        assert_eq!(pick("bytes=5000-6000", None), Selection::Unsatisfiable);
        assert_eq!(pick("bytes=0-1,5-9", None), Selection::Whole);
        assert_eq!(pick("items=0-1", None), Selection::Whole);
        assert_eq!(pick("bytes=9-1", None), Selection::Whole);
        assert_eq!(pick("bytes=0-9", Some("\"e\"")), Selection::Part { start: 0, end: 9 });
        assert_eq!(pick("bytes=0-9", Some(date)), Selection::Part { start: 0, end: 9 });
        assert_eq!(pick("bytes=0-9", Some("\"stale\"")), Selection::Whole);
        assert_eq!(select(&HeaderMap::new(), "\"e\"", None, 1000), Selection::Whole);
        assert_eq!(select(&HeaderMap::new(), "\"e\"", None, 0), Selection::Whole);
        assert_eq!(pick_empty("bytes=0-0"), Selection::Unsatisfiable, "nothing to select in an empty file");
    }

    fn pick_empty(range: &str) -> Selection {
        select(&with(range, None), "\"e\"", None, 0)
    }
}
