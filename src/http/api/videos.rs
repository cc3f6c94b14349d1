//! `/api/videos` and `/api/videos/{id}`: list, read, rename and delete. Every change is also
//! pushed to the organization's room so open browsers stay current.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Api, Caller, EDITORS, json_response, no_content, query_params, read_json};
use crate::events;
use crate::http::Body;
use crate::http::error::ApiError;
use crate::store::{StoreError, Video, VideoQuery, VideoStatus};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 200;
pub(super) const MAX_TITLE_CHARS: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateVideo {
    title: String,
}

impl Api {
    /// A video as the API shows the caller: the record plus URLs for `<video>` and `<img>`
    /// signed for the caller.
    pub(super) fn video_json(&self, caller: &Caller, video: &Video) -> Value {
        self.news.view(video, &caller.user.id)
    }

    pub(super) fn list_videos(&self, caller: &Caller, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let params = query_params(request);
        let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
        let status = match param("status") {
            Some(text) => Some(
                VideoStatus::parse(text).ok_or_else(|| ApiError::bad_request(format!("unknown status {text:?}")))?,
            ),
            None => None,
        };
        let limit = match param("limit") {
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}")))?,
            None => DEFAULT_PAGE,
        };
        let query = VideoQuery { status, limit, before: param("before") };
        let page = self.store.list_videos(&caller.user.org_id, &query)?;
        let items: Vec<_> = page.items.iter().map(|video| self.video_json(caller, video)).collect();
        json_response(StatusCode::OK, &json!({ "items": items, "next": page.next }))
    }

    pub(super) fn get_video(&self, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
        let video = self.store.video(&caller.user.org_id, id)?.ok_or_else(|| ApiError::not_found("video"))?;
        json_response(StatusCode::OK, &self.video_json(caller, &video))
    }

    pub(super) async fn update_video(
        &self,
        caller: &Caller,
        id: &str,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        // Existence first: a viewer learns nothing about ids outside their organization.
        if self.store.video(&caller.user.org_id, id)?.is_none() {
            return Err(ApiError::not_found("video"));
        }
        caller.require(EDITORS)?;
        let update: UpdateVideo = read_json(request).await?;
        let title = valid_title(&update.title)?;
        let video = self
            .store
            .update_video(&caller.user.org_id, id, |video| video.title = title.clone())
            .map_err(not_found_as_video)?;
        self.store.durable().await?;
        self.news.announce(events::VIDEO_UPDATED, &video);
        json_response(StatusCode::OK, &self.video_json(caller, &video))
    }

    pub(super) async fn delete_video(&self, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
        if self.store.video(&caller.user.org_id, id)?.is_none() {
            return Err(ApiError::not_found("video"));
        }
        caller.require(EDITORS)?;
        self.jobs.cancel(id)?;
        // Unlinking a large file takes long (300 ms for 1 GiB here): off the runtime's threads.
        let (store, org, video_id) = (self.store.clone(), caller.user.org_id.clone(), id.to_owned());
        let video = tokio::task::spawn_blocking(move || store.delete_video(&org, &video_id))
            .await
            .map_err(|error| ApiError::internal("deleting a video", error))?
            .map_err(not_found_as_video)?;
        self.store.durable().await?;
        tracing::info!(video = video.id, org = video.org_id, by = caller.user.id, "video deleted");
        self.news.announce(events::VIDEO_DELETED, &video);
        Ok(no_content())
    }
}

/// A video gone meanwhile (deleted by another request) is a 404 like any unknown one; every
/// other store error keeps its own answer (503 on a stalled store, 507 on a full disk).
fn not_found_as_video(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::not_found("video"),
        other => other.into(),
    }
}

/// A title as given, without bidirectional controls and trimmed, if it is one.
pub(super) fn valid_title(title: &str) -> Result<String, ApiError> {
    let title = crate::text::without_bidi_controls(title);
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "a title is 1 to {MAX_TITLE_CHARS} characters, without control characters"
        )));
    }
    Ok(title)
}
