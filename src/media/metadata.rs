//! Stage 1: what is in the file, from GStreamer's Discoverer. A file that is not a playable
//! video stops here with a message a person can act on.

use std::path::Path;

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use serde::{Deserialize, Serialize};

use super::MediaError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub duration_ms: Option<u64>,
    pub container: Option<String>,
    pub video_codec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_profile: Option<String>,
    /// Coded size, before rotation.
    pub width: u32,
    pub height: u32,
    /// Clockwise degrees the picture is turned for display (0, 90, 180 or 270).
    pub rotation: u32,
    /// Frames per second; `None` for variable or unknown rates.
    pub frame_rate: Option<f64>,
    pub bitrate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<Audio>,
    /// The decoder element that decoded the video (set by the decode pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Audio {
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
}

impl Metadata {
    /// Width and height as displayed, after rotation.
    pub fn display_size(&self) -> (u32, u32) {
        if self.rotation % 180 == 90 { (self.height, self.width) } else { (self.width, self.height) }
    }
}

pub fn probe(path: &Path, timeout: gst::ClockTime) -> Result<Metadata, MediaError> {
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(MediaError::NotVideo("the file is empty".into()));
    }
    // A file URI needs an absolute path (`tally process clip.mp4` gives a relative one).
    let absolute = std::path::absolute(path).map_err(|e| MediaError::Internal(format!("file path: {e}")))?;
    let uri =
        gst::glib::filename_to_uri(&absolute, None).map_err(|e| MediaError::Internal(format!("file URI: {e}")))?;
    let discoverer = pbutils::Discoverer::new(timeout).map_err(|e| MediaError::Internal(format!("discoverer: {e}")))?;
    let info = discoverer.discover_uri(&uri).map_err(|e| MediaError::NotVideo(e.message().to_owned()))?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::MissingPlugins => {
            let missing = info.missing_elements_installer_details().join(", ");
            return Err(MediaError::UnsupportedCodec(missing));
        }
        pbutils::DiscovererResult::Timeout => {
            return Err(MediaError::NotVideo("the file could not be read in time".into()));
        }
        other => return Err(MediaError::NotVideo(format!("{other:?}"))),
    }
    let video = info
        .video_streams()
        .into_iter()
        .find(|v| !v.is_image())
        .ok_or_else(|| MediaError::NotVideo("the file has no video stream".into()))?;
    let video_caps = video.caps();
    let describe = |caps: Option<&gst::Caps>| caps.map(|c| pbutils::pb_utils_get_codec_description(c).to_string());
    let frame_rate = video.framerate();
    let rotation = video
        .tags()
        .and_then(|tags| tags.get::<gst::tags::ImageOrientation>().map(|t| t.get().to_owned()))
        .and_then(|orientation| orientation.strip_prefix("rotate-").and_then(|d| d.parse().ok()))
        .unwrap_or(0);
    let audio = info.audio_streams().into_iter().next().map(|a| Audio {
        codec: describe(a.caps().as_ref()).unwrap_or_else(|| "unknown".into()),
        channels: a.channels(),
        sample_rate: a.sample_rate(),
    });
    let container = info
        .stream_info()
        .filter(|s| s.is::<pbutils::DiscovererContainerInfo>())
        .and_then(|s| s.caps())
        .map(|caps| describe(Some(&caps)).unwrap_or_default());
    Ok(Metadata {
        duration_ms: info.duration().map(|d| d.mseconds()),
        container,
        video_codec: describe(video_caps.as_ref()).unwrap_or_else(|| "unknown".into()),
        video_profile: video_caps.as_ref().and_then(|c| c.structure(0)).and_then(|s| s.get::<String>("profile").ok()),
        width: video.width(),
        height: video.height(),
        rotation,
        frame_rate: (frame_rate.numer() > 0 && frame_rate.denom() > 0)
            .then(|| frame_rate.numer() as f64 / frame_rate.denom() as f64),
        bitrate: Some(video.bitrate()).filter(|b| *b > 0).or(Some(video.max_bitrate()).filter(|b| *b > 0)),
        audio,
        decoder: None,
    })
}
