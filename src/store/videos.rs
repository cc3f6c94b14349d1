//! Video records, keyed `<org id>/<video id>`: every lookup goes through the caller's
//! organization, so another organization's video is simply not there.

use super::{Store, StoreError, Video, VideoStatus, decode, encode, now_ms};

/// A page of the video list, newest first.
pub struct VideoQuery<'a> {
    pub status: Option<VideoStatus>,
    pub limit: usize,
    /// Continue after this video id (the previous page's `next`).
    pub before: Option<&'a str>,
}

pub struct VideoPage {
    pub items: Vec<Video>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next: Option<String>,
}

fn key(org_id: &str, id: &str) -> Vec<u8> {
    format!("{org_id}/{id}").into_bytes()
}

impl Store {
    pub fn insert_video(&self, video: &Video) -> Result<(), StoreError> {
        self.writable()?;
        self.videos.insert(key(&video.org_id, &video.id), encode(video)?)?;
        Ok(())
    }

    pub fn video(&self, org_id: &str, id: &str) -> Result<Option<Video>, StoreError> {
        if org_id.contains('/') || id.contains('/') {
            return Ok(None);
        }
        self.videos.get(key(org_id, id))?.map(|raw| decode(&raw)).transpose()
    }

    pub fn list_videos(&self, org_id: &str, query: &VideoQuery<'_>) -> Result<VideoPage, StoreError> {
        let prefix = format!("{org_id}/");
        let upper = match query.before {
            Some(before) => key(org_id, before),
            // '0' sorts right after '/', so this bounds the whole prefix from above.
            None => format!("{org_id}0").into_bytes(),
        };
        let mut items = Vec::new();
        let mut next = None;
        // ULIDs sort by creation time, so walking backwards is newest first.
        for entry in self.videos.range(prefix.as_bytes()..upper.as_slice()).rev() {
            let video: Video = decode(&entry?.1)?;
            if query.status.is_some_and(|status| status != video.status) {
                continue;
            }
            if items.len() == query.limit {
                next = items.last().map(|v: &Video| v.id.clone());
                break;
            }
            items.push(video);
        }
        Ok(VideoPage { items, next })
    }

    /// Applies `change` to a video atomically and returns the new record.
    pub fn update_video(&self, org_id: &str, id: &str, change: impl Fn(&mut Video)) -> Result<Video, StoreError> {
        self.writable()?;
        if self.video(org_id, id)?.is_none() {
            return Err(StoreError::NotFound);
        }
        let mut updated = None;
        let mut failure = None;
        self.videos.fetch_and_update(key(org_id, id), |current| {
            let mut video: Video = match current.map(serde_json::from_slice) {
                Some(Ok(video)) => video,
                Some(Err(error)) => {
                    failure = Some(StoreError::Corrupt(error));
                    return current.map(<[u8]>::to_vec);
                }
                None => return None,
            };
            change(&mut video);
            video.updated_at = now_ms();
            let raw = serde_json::to_vec(&video).ok();
            updated = Some(video);
            raw
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        updated.ok_or(StoreError::NotFound)
    }

    /// Removes the record, then the files. The record's removal is durable only at the next
    /// flush, so a crash can leave files without their record, or a record whose files are
    /// partly gone; the next start finishes either deletion.
    pub fn delete_video(&self, org_id: &str, id: &str) -> Result<Video, StoreError> {
        self.writable()?;
        let raw = self.videos.remove(key(org_id, id))?.ok_or(StoreError::NotFound)?;
        let video: Video = decode(&raw)?;
        self.files.remove(&video.id)?;
        Ok(video)
    }

    /// Whether `id` names a video of `org_id`.
    pub fn video_belongs_to(&self, id: &str, org_id: &str) -> bool {
        self.video(org_id, id).ok().flatten().is_some()
    }

    /// Ids of every video record (for start-up consistency checks).
    pub(super) fn all_video_ids(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut ids = std::collections::HashSet::new();
        for entry in self.videos.iter() {
            let video: Video = decode(&entry?.1)?;
            ids.insert(video.id);
        }
        Ok(ids)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A video record for store tests (the jobs tests use it too).
    pub(in crate::store) fn video(org: &str, title: &str, status: VideoStatus) -> Video {
        Video {
            id: super::super::new_id(),
            org_id: org.into(),
            title: title.into(),
            filename: "a.mp4".into(),
            ext: "mp4".into(),
            content_type: "video/mp4".into(),
            size: 1,
            status,
            uploaded_by: "u".into(),
            created_at: now_ms(),
            updated_at: now_ms(),
            metadata: None,
            sensitivity: None,
            has_thumbnail: false,
            has_previews: false,
            playback: None,
            progress: None,
            error: None,
        }
    }

    #[test]
    fn lists_newest_first_by_page_and_status_within_the_org() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let status = if i % 2 == 0 { VideoStatus::Uploaded } else { VideoStatus::Failed };
            let v = video("org1", &format!("v{i}"), status);
            store.insert_video(&v).unwrap();
            ids.push(v.id);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        store.insert_video(&video("org10", "other org", VideoStatus::Uploaded)).unwrap();
        store.insert_video(&video("org", "prefix org", VideoStatus::Uploaded)).unwrap();
        let page = store.list_videos("org1", &VideoQuery { status: None, limit: 2, before: None }).unwrap();
        let titles: Vec<_> = page.items.iter().map(|v| v.title.as_str()).collect();
        assert_eq!(titles, ["v4", "v3"]);
        let page =
            store.list_videos("org1", &VideoQuery { status: None, limit: 10, before: page.next.as_deref() }).unwrap();
        let titles: Vec<_> = page.items.iter().map(|v| v.title.as_str()).collect();
        assert_eq!(titles, ["v2", "v1", "v0"]);
        assert!(page.next.is_none());
        let failed = store
            .list_videos("org1", &VideoQuery { status: Some(VideoStatus::Failed), limit: 10, before: None })
            .unwrap();
        assert_eq!(failed.items.len(), 2);
        assert!(store.video("org10", &ids[0]).unwrap().is_none(), "another org's video is not found");
        let updated = store.update_video("org1", &ids[0], |v| v.title = "renamed".into()).unwrap();
        assert_eq!(updated.title, "renamed");
        assert!(matches!(store.update_video("org10", &ids[0], |_| {}), Err(StoreError::NotFound)));
    }
}
