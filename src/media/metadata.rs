//! Stage 1: what is in the file, from GStreamer's Discoverer. A file that is not a playable
//! video stops here with a message a person can act on; so does one without a container
//! whose bytes GStreamer is not sure of (noise can pass for a raw stream).

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
    /// What the bytes are, for deciding how a browser gets to play them.
    #[serde(default)]
    pub format: Format,
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
    /// The encoder element that made the web rendition, when one was encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
}

/// The container and streams as GStreamer's caps name them (after the parsers, so the
/// H.264 profile, chroma format and bit depth are known).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Format {
    pub container: Container,
    pub video: VideoCodec,
    /// `4:2:0`, `4:2:2`, ... where the parser says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chroma_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bit_depth: Option<u32>,
    pub interlaced: bool,
    /// Pixel aspect ratio (width, height); square when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixel_aspect: Option<(u32, u32)>,
    /// `None`: no audio stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioCodec>,
    /// The caps of the audio stream, for a pipeline that must pick it out of the demuxer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_caps: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// ISO base media (`.mp4`, `.m4v`).
    Mp4,
    /// QuickTime (`.mov`).
    Mov,
    Matroska,
    WebM,
    Avi,
    MpegTs,
    MpegPs,
    #[default]
    Other,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    H265,
    Vp8,
    Vp9,
    Av1,
    Mpeg2,
    Mpeg4Part2,
    ProRes,
    #[default]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    Aac,
    Mp3,
    Opus,
    Vorbis,
    Pcm,
    Other,
}

impl Container {
    fn of(caps: &gst::StructureRef) -> Container {
        match caps.name().as_str() {
            "video/quicktime" => match caps.get::<&str>("variant") {
                Ok("apple") => Container::Mov,
                _ => Container::Mp4,
            },
            "video/x-matroska" => Container::Matroska,
            "video/webm" | "audio/webm" => Container::WebM,
            "video/x-msvideo" => Container::Avi,
            "video/mpegts" => Container::MpegTs,
            "video/mpeg" => Container::MpegPs,
            _ => Container::Other,
        }
    }
}

impl VideoCodec {
    fn of(caps: &gst::StructureRef) -> VideoCodec {
        match caps.name().as_str() {
            "video/x-h264" => VideoCodec::H264,
            "video/x-h265" => VideoCodec::H265,
            "video/x-vp8" => VideoCodec::Vp8,
            "video/x-vp9" => VideoCodec::Vp9,
            "video/x-av1" => VideoCodec::Av1,
            "video/x-prores" => VideoCodec::ProRes,
            "video/mpeg" => match caps.get::<i32>("mpegversion") {
                Ok(1 | 2) => VideoCodec::Mpeg2,
                Ok(4) => VideoCodec::Mpeg4Part2,
                _ => VideoCodec::Other,
            },
            "video/x-divx" | "video/x-xvid" => VideoCodec::Mpeg4Part2,
            _ => VideoCodec::Other,
        }
    }
}

impl AudioCodec {
    fn of(caps: &gst::StructureRef) -> AudioCodec {
        match caps.name().as_str() {
            "audio/mpeg" => match caps.get::<i32>("mpegversion") {
                Ok(2 | 4) => AudioCodec::Aac,
                Ok(1) if caps.get::<i32>("layer").is_ok_and(|layer| layer == 3) => AudioCodec::Mp3,
                _ => AudioCodec::Other,
            },
            "audio/x-opus" => AudioCodec::Opus,
            "audio/x-vorbis" => AudioCodec::Vorbis,
            "audio/x-raw" => AudioCodec::Pcm,
            _ => AudioCodec::Other,
        }
    }
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

/// How much of a container-less file the type finder reads: more than any of its raw-stream
/// finders looks at.
const RAW_STREAM_HEAD: u64 = 1 << 20;

/// A file without a container was taken for a raw stream by its bytes alone. Random data
/// passes for raw H.263 (a 22-bit start code, about once in 512 KiB of noise, makes the type
/// finder say "possible"), and would be processed as a one-frame video. Raw H.264, H.265 and
/// MPEG-4 streams, with their parameter sets, are "likely" or better; only those are taken.
fn sure_of_raw_stream(path: &Path) -> Result<(), MediaError> {
    use gst::glib::translate::IntoGlib;
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(RAW_STREAM_HEAD).read_to_end(&mut head))
        .map_err(|e| MediaError::Internal(format!("reading the upload: {e}")))?;
    let found = gstreamer_base::functions::type_find_helper_for_data(None::<&gst::Object>, &head);
    match found {
        Ok((_, probability)) if probability.into_glib() > gst::TypeFindProbability::Possible.into_glib() => Ok(()),
        Ok((caps, _)) => {
            let what = caps.structure(0).map_or("a raw stream", |s| s.name().as_str()).to_owned();
            Err(MediaError::NotVideo(format!(
                "the file has no container and its bytes only might be {what}; upload it as MP4, MOV, MKV or WebM"
            )))
        }
        Err(_) => Err(MediaError::NotVideo("the file has no container GStreamer knows".into())),
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
    let audio_stream = info.audio_streams().into_iter().next();
    let audio = audio_stream.as_ref().map(|a| Audio {
        codec: describe(a.caps().as_ref()).unwrap_or_else(|| "unknown".into()),
        channels: a.channels(),
        sample_rate: a.sample_rate(),
    });
    let container_caps =
        info.stream_info().filter(|s| s.is::<pbutils::DiscovererContainerInfo>()).and_then(|s| s.caps());
    if container_caps.is_none() {
        sure_of_raw_stream(path)?;
    }
    let container = container_caps.as_ref().map(|caps| describe(Some(caps)).unwrap_or_default());
    let video_structure = video_caps.as_ref().and_then(|c| c.structure(0));
    let audio_caps = audio_stream.as_ref().and_then(|a| a.caps());
    let audio_structure = audio_caps.as_ref().and_then(|c| c.structure(0));
    let par = video.par();
    let format = Format {
        container: container_caps.as_ref().and_then(|c| c.structure(0)).map_or(Container::Other, Container::of),
        video: video_structure.map_or(VideoCodec::Other, VideoCodec::of),
        chroma_format: video_structure.and_then(|s| s.get::<String>("chroma-format").ok()),
        bit_depth: video_structure.and_then(|s| s.get::<u32>("bit-depth-luma").ok()),
        interlaced: video.is_interlaced()
            || video_structure
                .and_then(|s| s.get::<&str>("interlace-mode").ok())
                .is_some_and(|mode| mode != "progressive"),
        pixel_aspect: (par.numer() > 0 && par.denom() > 0 && par.numer() != par.denom())
            .then(|| (par.numer() as u32, par.denom() as u32)),
        audio: audio_structure.map(AudioCodec::of),
        // Only the stream's identity: the demuxer's pad caps carry codec data this would not.
        audio_caps: audio_structure.map(|s| s.name().to_string()),
    };
    Ok(Metadata {
        duration_ms: info.duration().map(|d| d.mseconds()),
        container,
        video_codec: describe(video_caps.as_ref()).unwrap_or_else(|| "unknown".into()),
        video_profile: video_structure.and_then(|s| s.get::<String>("profile").ok()),
        format,
        width: video.width(),
        height: video.height(),
        rotation,
        frame_rate: (frame_rate.numer() > 0 && frame_rate.denom() > 0)
            .then(|| frame_rate.numer() as f64 / frame_rate.denom() as f64),
        bitrate: Some(video.bitrate()).filter(|b| *b > 0).or(Some(video.max_bitrate()).filter(|b| *b > 0)),
        audio,
        decoder: None,
        encoder: None,
    })
}
