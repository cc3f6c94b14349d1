//! Media bytes: `GET|HEAD /api/videos/{id}/stream` (what the player plays: the web rendition
//! where there is one, else the original) with HTTP range requests, `/original` (the upload
//! as it came, as a download), and the thumbnail. Authorized by a Bearer access token or by
//! the signed `?token=` of the video's URLs (a `<video>` element cannot set headers). Files
//! are streamed from disk.

use std::path::Path;
use std::time::UNIX_EPOCH;

use super::{Api, query_params, read_ahead};
use crate::http::error::ApiError;
use crate::http::range::{Selection, select};
use crate::http::{Body, full};
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

impl Api {
    pub(super) async fn stream(&self, id: &str, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let org = self.media_org(id, &request)?;
        let video = self.store.video(&org, id)?.ok_or_else(|| ApiError::not_found("video"))?;
        let files = self.store.files();
        if video.playback.as_ref().is_some_and(|p| p.has_file()) {
            let rendition = files.rendition(&video.id);
            // Missing only until the next start rebuilds it: the original meanwhile.
            if rendition.exists() {
                return serve_file(&request, &rendition, "video/mp4").await;
            }
        }
        serve_file(&request, &files.original(&video.id, &video.ext), &video.content_type).await
    }

    pub(super) async fn original(&self, id: &str, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let org = self.media_org(id, &request)?;
        let video = self.store.video(&org, id)?.ok_or_else(|| ApiError::not_found("video"))?;
        let path = self.store.files().original(&video.id, &video.ext);
        let mut response = serve_file(&request, &path, &video.content_type).await?;
        if response.status().is_success() {
            response.headers_mut().insert(header::CONTENT_DISPOSITION, attachment(&video.filename, &video.ext));
        }
        Ok(response)
    }

    pub(super) async fn thumbnail(&self, id: &str, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let org = self.media_org(id, &request)?;
        let video =
            self.store.video(&org, id)?.filter(|v| v.has_thumbnail).ok_or_else(|| ApiError::not_found("thumbnail"))?;
        let params = query_params(&request);
        let files = self.store.files();
        let path = match params.iter().find(|(key, _)| key == "size").map(|(_, v)| v.as_str()) {
            None | Some("card") => files.thumbnail(&video.id, "card"),
            Some("poster") => files.thumbnail(&video.id, "poster"),
            // The scrub previews' sheet of frames.
            Some("previews") if video.has_previews => files.preview_sheet(&video.id),
            Some("previews") => return Err(ApiError::not_found("previews")),
            Some(other) => {
                return Err(ApiError::bad_request(format!("size is card, poster or previews, not {other:?}")));
            }
        };
        serve_file(&request, &path, "image/jpeg").await
    }

    /// The scrub previews' WebVTT cues.
    pub(super) async fn previews(&self, id: &str, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let org = self.media_org(id, &request)?;
        let video =
            self.store.video(&org, id)?.filter(|v| v.has_previews).ok_or_else(|| ApiError::not_found("previews"))?;
        serve_file(&request, &self.store.files().preview_cues(&video.id), "text/vtt; charset=utf-8").await
    }

    /// The organization whose video `id` the request may read.
    fn media_org(&self, id: &str, request: &Request<Incoming>) -> Result<String, ApiError> {
        let params = query_params(request);
        if let Some((_, token)) = params.iter().find(|(key, _)| key == "token") {
            let claims =
                self.keys.verify_media(token).map_err(|error| ApiError::unauthorized(format!("media URL: {error}")))?;
            // A URL signed for another video reads nothing, and says nothing about this one.
            if claims.vid != id {
                return Err(ApiError::not_found("video"));
            }
            // Nor does one whose account has since been deleted.
            if self.store.user(&claims.sub)?.is_none_or(|user| user.org_id != claims.org) {
                return Err(ApiError::unauthorized("media URL: unknown account"));
            }
            return Ok(claims.org);
        }
        Ok(self.caller(request)?.user.org_id)
    }
}

async fn serve_file(request: &Request<Incoming>, path: &Path, content_type: &str) -> Result<Response<Body>, ApiError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("file"));
        }
        Err(error) => return Err(ApiError::internal("opening a media file", error)),
    };
    let metadata = file.metadata().await.map_err(|error| ApiError::internal("reading file metadata", error))?;
    let len = metadata.len();
    let modified = metadata.modified().ok();
    let stamp = modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    let etag = format!("\"{len:x}-{stamp:x}\"");
    let last_modified = modified.map(httpdate::fmt_http_date);

    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=0, must-revalidate"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(value) = last_modified.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }

    if request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok(respond(StatusCode::NOT_MODIFIED, headers, full(bytes::Bytes::new())));
    }

    let (status, start, length) = match select(request.headers(), &etag, last_modified.as_deref(), len) {
        Selection::Whole => (StatusCode::OK, 0, len),
        Selection::Part { start, end } => {
            let range = format!("bytes {start}-{end}/{len}");
            headers
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&range).unwrap_or(HeaderValue::from_static("")));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Selection::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the file has {len} bytes"),
            )
            .into_response();
            let range = format!("bytes */{len}");
            response
                .headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&range).unwrap_or(HeaderValue::from_static("")));
            response.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(response);
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if request.method() == Method::HEAD {
        return Ok(respond(status, headers, full(bytes::Bytes::new())));
    }
    let stream = read_ahead::stream(file.into_std().await, start, length).map_ok(Frame::data);
    Ok(respond(status, headers, StreamBody::new(stream).boxed()))
}

/// `attachment` with the uploader's file name made safe: an ASCII `filename` for old clients
/// (anything else becomes `_`) and the cleaned name itself as RFC 8187 `filename*`. No path,
/// quote, control or bidi character survives either.
fn attachment(filename: &str, ext: &str) -> HeaderValue {
    let cleaned: String =
        crate::text::without_bidi_controls(filename)
            .chars()
            .map(|c| {
                if c.is_control() || matches!(c, '/' | '\\' | '"' | ':' | '*' | '?' | '<' | '>' | '|') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
    let cleaned = cleaned.trim().trim_start_matches('.');
    // Always the stored file's own extension at the end, whatever a long name lost to the cap.
    let suffix = format!(".{ext}");
    // (Compared without case: `Clip.MP4` is stored as `mp4` and saves as `Clip.mp4`.)
    let cut = cleaned.len().checked_sub(suffix.len()).filter(|&at| cleaned.is_char_boundary(at));
    let stem = match cut {
        Some(at) if cleaned[at..].eq_ignore_ascii_case(&suffix) => &cleaned[..at],
        _ => cleaned,
    };
    let stem: String = stem.chars().take(200).collect();
    let name = if stem.trim().is_empty() { format!("video{suffix}") } else { format!("{stem}{suffix}") };
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '-' | '_' | '(' | ')') { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or(HeaderValue::from_static("attachment"))
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::attachment;

    #[test]
    fn a_download_ends_in_the_stored_extension_once() {
        let saved = |filename, ext| {
            let value = attachment(filename, ext);
            let value = value.to_str().unwrap();
            value["attachment; filename=\"".len()..].split('"').next().unwrap().to_owned()
        };
        assert_eq!(saved("Clip.MP4", "mp4"), "Clip.mp4");
        assert_eq!(saved("Clip.mov", "mp4"), "Clip.mov.mp4");
        assert_eq!(saved("é", "mp4"), "_.mp4");
        assert_eq!(saved("ab.Mp4é.MP4", "mp4"), "ab.Mp4_.mp4");
    }
}
