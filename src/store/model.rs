//! The records Tally stores. Serialized as JSON in sled so a dump of the database is readable.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Role;
use crate::media::Playback;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub org_id: String,
    /// Lower-cased; unique on the box.
    pub email: String,
    pub role: Role,
    /// Argon2id PHC string; never leaves the store.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub password_hash: String,
    pub created_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoStatus {
    /// Stored; not yet handed to the media pipeline.
    Uploaded,
    Queued,
    Processing,
    Processed,
    Failed,
}

impl VideoStatus {
    pub fn parse(text: &str) -> Option<VideoStatus> {
        serde_json::from_value(Value::String(text.to_owned())).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Video {
    pub id: String,
    pub org_id: String,
    pub title: String,
    /// The name the file had on the uploader's machine.
    pub filename: String,
    /// Extension of the stored original, lower-case, without the dot.
    pub ext: String,
    pub content_type: String,
    pub size: u64,
    pub status: VideoStatus,
    pub uploaded_by: String,
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<Value>,
    #[serde(default)]
    pub has_thumbnail: bool,
    /// Scrub previews were made (`previews.jpg` and `previews.vtt`).
    #[serde(default)]
    pub has_previews: bool,
    /// What the player gets (set by processing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback: Option<Playback>,
    /// Where processing is, as last announced (`None` when not processing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub stage: String,
    pub percent: u8,
}

/// A refresh token, stored under the SHA-256 of its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub user_id: String,
    pub org_id: String,
    /// Every rotation stays in the family; reusing a rotated token revokes the family.
    pub family: String,
    pub expires_at: u64,
    pub rotated: bool,
    /// When it was rotated (ms); it then gives the same successor for the grace window.
    #[serde(default)]
    pub rotated_at: u64,
}
