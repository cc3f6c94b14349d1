//! The upload form of `POST /api/videos` (`multipart/form-data`): an optional `title` and
//! exactly one `file`, read with multer under Tally's limits. It knows nothing of storage, so
//! the fuzzer (`fuzz/`) drives the same code as the server.

use bytes::Bytes;
use futures_util::Stream;
use hyper::StatusCode;

use crate::http::error::ApiError;

/// Extensions of containers GStreamer on the box can open; the media pipeline has the final
/// word on whether the content really is a playable video.
pub const VIDEO_EXTENSIONS: &[&str] =
    &["mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "3gp", "ogv"];
/// Room for multipart framing and the title around the file itself.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;
const MAX_TITLE_BYTES: u64 = 4096;
/// Longest file name kept, in characters (as long as most filesystems allow).
const MAX_FILENAME_CHARS: usize = 255;

/// The boundary of a `multipart/form-data` content type, or 415.
pub fn boundary(content_type: &str) -> Result<String, ApiError> {
    multer::parse_boundary(content_type).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected multipart/form-data with a file field",
        )
    })
}

pub struct UploadForm {
    multipart: multer::Multipart<'static>,
    max: u64,
    seen_file: bool,
}

/// One field of the form, in the order sent.
pub enum Field {
    Title(String),
    File(Box<FileField>),
}

/// The `file` field, read chunk by chunk.
pub struct FileField {
    field: multer::Field<'static>,
    /// The client's file name without any directory part.
    pub filename: String,
    /// Lower-case extension, one of [`VIDEO_EXTENSIONS`].
    pub ext: String,
    pub content_type: String,
    size: u64,
    max: u64,
}

impl UploadForm {
    /// Reads `body` as a form with `boundary`; the file may have at most `max` bytes.
    pub fn new<S>(body: S, boundary: String, max: u64) -> UploadForm
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let limits = multer::SizeLimit::new()
            .whole_stream(max.saturating_add(MULTIPART_OVERHEAD))
            .for_field("title", MAX_TITLE_BYTES)
            .for_field("file", max);
        let constraints = multer::Constraints::new().allowed_fields(vec!["title", "file"]).size_limit(limits);
        UploadForm {
            multipart: multer::Multipart::with_constraints(body, boundary, constraints),
            max,
            seen_file: false,
        }
    }

    /// The next field; a second file, an unknown field or a file that is not a video
    /// container is an error.
    pub async fn next(&mut self) -> Result<Option<Field>, ApiError> {
        let Some(field) = self.multipart.next_field().await.map_err(|e| multipart_error(e, self.max))? else {
            return Ok(None);
        };
        match field.name() {
            Some("title") => {
                let raw = field.bytes().await.map_err(|e| multipart_error(e, self.max))?;
                // Not multer's lossy `text()`: garbage is refused, not turned into U+FFFDs.
                let title = String::from_utf8(raw.to_vec())
                    .map_err(|_| ApiError::bad_request("the title is not valid UTF-8"))?;
                Ok(Some(Field::Title(title)))
            }
            Some("file") if !self.seen_file => {
                self.seen_file = true;
                Ok(Some(Field::File(Box::new(FileField::new(field, self.max)?))))
            }
            Some("file") => Err(ApiError::bad_request("one file per upload")),
            _ => Err(ApiError::bad_request("unexpected form field")),
        }
    }
}

/// The file's name as kept: cleaned ([`crate::text::label`]) and, when longer than
/// [`MAX_FILENAME_CHARS`], cut in its stem so the extension stays.
fn kept_name(name: &str) -> String {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let ext = crate::text::label(ext, 16).unwrap_or_default();
    let stem = crate::text::label(stem, MAX_FILENAME_CHARS - ext.chars().count() - 1).unwrap_or_default();
    format!("{stem}.{ext}")
}

impl FileField {
    fn new(field: multer::Field<'static>, max: u64) -> Result<FileField, ApiError> {
        // Only the last path segment, kept cleaned; a name no filesystem would hold is cut
        // (after its extension is read).
        let name = field.file_name().map(|name| name.rsplit(['/', '\\']).next().unwrap_or(name)).unwrap_or("video");
        // Not `Path::extension`: to it ".mp4" is a hidden file without one.
        let ext = name.rsplit_once('.').map(|(_, ext)| ext.to_lowercase()).unwrap_or_default();
        if !VIDEO_EXTENSIONS.contains(&ext.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_type",
                format!(
                    "{:?} is not a video file Tally accepts ({})",
                    crate::text::label(name, 80).unwrap_or_default(),
                    VIDEO_EXTENSIONS.join(", ")
                ),
            ));
        }
        let content_type = mime_guess::from_ext(&ext)
            .first()
            .map(|m| m.essence_str().to_owned())
            .unwrap_or_else(|| "application/octet-stream".into());
        let filename = kept_name(name);
        Ok(FileField { field, filename, ext, content_type, size: 0, max })
    }

    /// The next piece of the file; past `max` bytes in all it is 413.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        let Some(chunk) = self.field.chunk().await.map_err(|e| multipart_error(e, self.max))? else {
            return Ok(None);
        };
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(too_large(self.max));
        }
        Ok(Some(chunk))
    }

    /// Bytes read so far.
    pub fn size(&self) -> u64 {
        self.size
    }
}

pub fn too_large(max: u64) -> ApiError {
    ApiError::too_large(format!("uploads are limited to {max} bytes"))
}

fn multipart_error(error: multer::Error, max: u64) -> ApiError {
    match error {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => too_large(max),
        other => ApiError::bad_request(format!("malformed upload: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fields(body: &'static [u8]) -> Result<Vec<String>, ApiError> {
        let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(body))]);
        let mut form = UploadForm::new(chunks, "b".into(), 1024);
        let mut seen = Vec::new();
        while let Some(field) = form.next().await? {
            match field {
                Field::Title(title) => seen.push(format!("title {title}")),
                Field::File(mut file) => {
                    while file.chunk().await?.is_some() {}
                    seen.push(format!("file {} {} {}", file.filename, file.ext, file.size()));
                }
            }
        }
        Ok(seen)
    }

    #[tokio::test]
    async fn reads_a_title_and_a_file() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../x/Clip.MP4\"\r\n\r\n12345\r\n--b--\r\n";
        assert_eq!(fields(body).await.unwrap(), ["title Hello", "file Clip.MP4 mp4 5"]);
    }

    #[tokio::test]
    async fn refuses_a_title_that_is_not_utf8() {
        // Found by the fuzzer (fuzz/regressions/multipart/title-lossy-utf8): lossy decoding
        // made a title up to three times its byte limit.
        let body = b"--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n\xff\xfe\r\n--b--\r\n";
        let error = fields(body).await.unwrap_err();
        assert_eq!((error.status, error.message.as_str()), (StatusCode::BAD_REQUEST, "the title is not valid UTF-8"));
    }
}
