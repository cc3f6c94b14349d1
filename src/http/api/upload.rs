//! `POST /api/videos`: a streamed multipart upload. The file goes to a temp file chunk by
//! chunk (memory stays flat whatever its size), is fsynced, renamed into place, and only then
//! recorded and acknowledged. Size limit (413) and free space (507) are checked before and
//! while writing; whatever fails leaves nothing behind.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyStream;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::videos::valid_title;
use super::{Api, Caller, EDITORS, json_response};
use crate::events;
use crate::http::Body;
use crate::http::error::ApiError;
use crate::http::form::{self, Field, FileField, MULTIPART_OVERHEAD, UploadForm, too_large};
use crate::store::{StoreError, TempFile, Video, VideoStatus, is_disk_full, new_id, now_ms};

/// How often free space is checked again while writing.
const SPACE_CHECK_BYTES: u64 = 8 * 1024 * 1024;
/// After a refusal the rest of the body is read and dropped, up to this much and this long,
/// so the client is still listening when the error arrives (a browser shows a bare network
/// error for a response sent while it is still uploading).
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(30);

struct Received {
    temp: TempFile,
    filename: String,
    ext: String,
    content_type: String,
    size: u64,
}

impl Api {
    pub(super) async fn upload(&self, caller: &Caller, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        caller.require(EDITORS)?;
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let boundary = form::boundary(content_type)?;
        let max = self.config.max_upload_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let early = if declared.is_some_and(|len| len > max + MULTIPART_OVERHEAD) {
            Some(too_large(max))
        } else if let Some(fault) = self.store.fault() {
            // No point taking in gigabytes the store could not record.
            Some(StoreError::Unavailable(fault).into())
        } else {
            self.ensure_space(declared.unwrap_or(0)).err()
        };

        // The body is pumped through a small channel so that, whatever multer makes of it, the
        // rest can still be drained after a refusal.
        let (tx, rx) = mpsc::channel(4);
        let pump = tokio::spawn(pump(BodyStream::new(request.into_body()), tx));
        let result = match early {
            Some(error) => {
                // Nobody will read the channel: the pump hands the body back at once.
                drop(rx);
                Err(error)
            }
            None => self.receive_upload(caller, rx, boundary, max).await,
        };
        if result.is_err()
            && declared.is_none_or(|len| len <= DRAIN_LIMIT)
            && let Ok(Some(rest)) = pump.await
        {
            drain(rest).await;
        }
        result
    }

    async fn receive_upload(
        &self,
        caller: &Caller,
        body: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        boundary: String,
        max: u64,
    ) -> Result<Response<Body>, ApiError> {
        let body = futures_util::stream::unfold(body, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let mut form = UploadForm::new(body, boundary, max);
        let mut title = None;
        let mut received: Option<Received> = None;
        while let Some(field) = form.next().await? {
            match field {
                Field::Title(text) => title = Some(text),
                Field::File(file) => received = Some(self.receive_file(file).await?),
            }
        }
        let received = received.ok_or_else(|| ApiError::bad_request("the form has no file field"))?;
        if received.size == 0 {
            return Err(ApiError::bad_request("the file is empty"));
        }
        let title = match title.as_deref().map(crate::text::without_bidi_controls).filter(|t| !t.is_empty()) {
            Some(title) => valid_title(&title)?,
            None => file_stem(&received.filename),
        };
        self.store_upload(caller, received, title).await
    }

    async fn receive_file(&self, mut field: Box<FileField>) -> Result<Received, ApiError> {
        let temp = self.store.files().temp_file();
        let mut file = tokio::fs::File::create(temp.path()).await.map_err(|e| write_error(&e))?;
        let mut unchecked = 0u64;
        while let Some(chunk) = field.chunk().await? {
            unchecked += chunk.len() as u64;
            if unchecked >= SPACE_CHECK_BYTES {
                unchecked = 0;
                self.ensure_space(0)?;
            }
            file.write_all(&chunk).await.map_err(|e| write_error(&e))?;
        }
        file.sync_all().await.map_err(|e| write_error(&e))?;
        let size = field.size();
        Ok(Received { temp, filename: field.filename, ext: field.ext, content_type: field.content_type, size })
    }

    async fn store_upload(
        &self,
        caller: &Caller,
        mut received: Received,
        title: String,
    ) -> Result<Response<Body>, ApiError> {
        let id = new_id();
        let files = self.store.files().clone();
        let (temp_path, commit_id, ext) = (received.temp.path().to_owned(), id.clone(), received.ext.clone());
        tokio::task::spawn_blocking(move || files.commit(&temp_path, &commit_id, &ext))
            .await
            .map_err(|error| ApiError::internal("storing an upload", error))?
            .map_err(|e| write_error(&e))?;
        received.temp.kept();
        let now = now_ms();
        let video = Video {
            id,
            org_id: caller.user.org_id.clone(),
            title,
            filename: received.filename,
            ext: received.ext,
            content_type: received.content_type,
            size: received.size,
            status: VideoStatus::Queued,
            uploaded_by: caller.user.id.clone(),
            created_at: now,
            updated_at: now,
            metadata: None,
            sensitivity: None,
            has_thumbnail: false,
            has_previews: false,
            playback: None,
            progress: None,
            error: None,
        };
        // The record and its processing job are written together.
        let recorded = match self.jobs.submit(&video) {
            Ok(()) => self.store.durable().await,
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            // Not acknowledged, so not kept: undo what may have been written (best effort; a
            // record left without its file is removed at the next start).
            let _ = self.jobs.cancel(&video.id);
            let _ = self.store.take_back_upload(&video.org_id, &video.id);
            let files = self.store.files().clone();
            let _ = tokio::task::spawn_blocking(move || files.remove(&video.id)).await;
            return Err(error.into());
        }
        tracing::info!(video = video.id, org = video.org_id, size = video.size, by = caller.user.id, "video uploaded");
        self.metrics.record_upload(video.size);
        self.news.announce(events::VIDEO_CREATED, &video);
        let mut response = json_response(StatusCode::CREATED, &self.video_json(caller, &video))?;
        if let Ok(location) = HeaderValue::from_str(&format!("/api/videos/{}", video.id)) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    }

    /// Refuses when writing `incoming` more bytes would leave less than the reserve free.
    fn ensure_space(&self, incoming: u64) -> Result<(), ApiError> {
        let free =
            self.store.files().available_space().map_err(|error| ApiError::internal("checking free space", error))?;
        if free < self.config.min_free_bytes.saturating_add(incoming) {
            tracing::warn!(free, incoming, reserve = self.config.min_free_bytes, "upload refused: storage low");
            return Err(ApiError::insufficient_storage());
        }
        Ok(())
    }
}

type RequestStream = BodyStream<Incoming>;

/// Feeds the request body to the upload; hands the rest of it back if the upload stops
/// listening, so it can be drained.
async fn pump(mut body: RequestStream, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Option<RequestStream> {
    while let Some(frame) = body.next().await {
        let item = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue,
            },
            Err(error) => Err(std::io::Error::other(error)),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() {
            return Some(body);
        }
        if failed {
            return None;
        }
    }
    None
}

/// Reads and drops what is left of a refused upload, within limits.
async fn drain(mut body: RequestStream) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut seen = 0u64;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.next()).await {
        seen += frame.data_ref().map_or(0, |data| data.len() as u64);
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

fn write_error(error: &std::io::Error) -> ApiError {
    if is_disk_full(error) { ApiError::insufficient_storage() } else { ApiError::internal("writing an upload", error) }
}

/// The title a video gets from its file's name: the stem, cleaned ([`crate::text::label`]);
/// a name with nothing to show (`   .mp4`) gives "Untitled video".
fn file_stem(filename: &str) -> String {
    // Not `Path::file_stem`: to it ".mp4" is a hidden file's whole name.
    let stem = filename.rsplit_once('.').map_or(filename, |(stem, _)| stem);
    crate::text::label(stem, super::videos::MAX_TITLE_CHARS).unwrap_or_else(|| UNTITLED.to_owned())
}

const UNTITLED: &str = "Untitled video";
