//! The web rendition: what a browser is given to play, and making it.
//!
//! [`plan`] looks at what the file holds and picks the cheapest way to something every
//! browser plays: the original as it is, a remux (the same video samples in an MP4 with its
//! index first: seconds, no re-encode), or a transcode to H.264 and AAC. A remux is its own
//! small pipeline ([`remux`]); a transcode is a branch of the analysis pass's decode
//! ([`Encode::branch`]), so a transcoded video is decoded once.
//!
//! Debian's Chromium plays H.264, VP8, VP9 and AV1 and not HEVC; Firefox has no HEVC either.
//! Neither reliably plays 10-bit or 4:2:2 H.264, interlaced video, MPEG-2, MPEG-4 Part 2 or
//! ProRes, nor H.264 in MOV, Matroska or AVI.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::{Deserialize, Serialize};

use super::metadata::{AudioCodec, Container, Format, VideoCodec};
use super::{Acceleration, MediaError, Metadata, RenditionTarget};

/// What the player gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaybackKind {
    Original,
    Remuxed,
    Transcoded,
}

/// Which source the player gets and why; `problem` says why a rendition that was wanted
/// could not be made (the original is then what plays, where the browser can).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Playback {
    pub kind: PlaybackKind,
    /// The video codec of what plays, as people read it.
    pub codec: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Playback {
    /// Whether a file of its own (the rendition) is what plays.
    pub fn has_file(&self) -> bool {
        self.kind != PlaybackKind::Original
    }
}

/// What happens to the audio of a rendition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPlan {
    Silent,
    /// Copied as it is, through this parser.
    Copy(&'static str),
    /// Decoded and encoded to AAC; the caps pick the stream out of the demuxer.
    Encode {
        caps: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Original { reason: String },
    Remux { reason: String, audio: AudioPlan },
    Transcode { reason: String, audio: bool },
}

impl Plan {
    pub fn reason(&self) -> &str {
        match self {
            Plan::Original { reason } | Plan::Remux { reason, .. } | Plan::Transcode { reason, .. } => reason,
        }
    }
}

/// Why the video itself does not play in browsers, if it does not.
fn unplayable_video(format: &Format, profile: Option<&str>) -> Option<String> {
    let name = match format.video {
        VideoCodec::H264 => "H.264",
        VideoCodec::Vp8 | VideoCodec::Vp9 | VideoCodec::Av1 => "the video",
        VideoCodec::H265 => return Some("HEVC (H.265) does not play in Chromium or Firefox".into()),
        VideoCodec::Mpeg2 => return Some("MPEG-2 video does not play in browsers".into()),
        VideoCodec::Mpeg4Part2 => return Some("MPEG-4 Part 2 video does not play in browsers".into()),
        VideoCodec::ProRes => return Some("ProRes does not play in browsers".into()),
        VideoCodec::Other => return Some("the video codec does not play in browsers".into()),
    };
    if let Some(depth) = format.bit_depth.filter(|d| *d != 8)
        && format.video != VideoCodec::Av1
    {
        return Some(format!("{depth}-bit {name} does not play reliably in browsers"));
    }
    if let Some(chroma) = format.chroma_format.as_deref().filter(|c| *c != "4:2:0") {
        return Some(format!("{name} in {chroma} does not play in browsers"));
    }
    if format.interlaced {
        return Some(format!("interlaced {name} does not play well in browsers"));
    }
    if format.video == VideoCodec::H264
        && let Some(profile) = profile
        && !matches!(
            profile,
            "constrained-baseline" | "baseline" | "main" | "high" | "constrained-high" | "progressive-high"
        )
    {
        return Some(format!("H.264 {profile} profile does not play in browsers"));
    }
    None
}

fn container_name(container: Container) -> &'static str {
    match container {
        Container::Mp4 => "MP4",
        Container::Mov => "MOV",
        Container::Matroska => "Matroska",
        Container::WebM => "WebM",
        Container::Avi => "AVI",
        Container::MpegTs => "MPEG-TS",
        Container::MpegPs => "MPEG-PS",
        Container::Other => "this container",
    }
}

/// How the browser gets to play `metadata`'s file; `index_first` is [`index_first`]'s answer
/// for an MP4.
pub fn plan(metadata: &Metadata, index_first: Option<bool>) -> Plan {
    let format = &metadata.format;
    let has_audio = format.audio.is_some();
    if let Some(reason) = unplayable_video(format, metadata.video_profile.as_deref()) {
        return Plan::Transcode { reason, audio: has_audio };
    }
    let container_plays = matches!(
        (format.container, format.video),
        (Container::Mp4, VideoCodec::H264 | VideoCodec::Vp9 | VideoCodec::Av1)
            | (Container::WebM, VideoCodec::Vp8 | VideoCodec::Vp9 | VideoCodec::Av1)
    );
    let audio_plays = matches!(
        (format.container, format.audio),
        (_, None)
            | (Container::Mp4, Some(AudioCodec::Aac | AudioCodec::Mp3 | AudioCodec::Opus))
            | (Container::WebM, Some(AudioCodec::Opus | AudioCodec::Vorbis))
    );
    let index_late = format.container == Container::Mp4 && index_first == Some(false);
    if container_plays && audio_plays && !index_late {
        return Plan::Original { reason: "plays in browsers as uploaded".into() };
    }
    if format.video != VideoCodec::H264 || format.container == Container::Other {
        // VP8/VP9/AV1 outside WebM and MP4, or a container without a demuxer of its own here
        // (FLV, say: `parsebin` would parse the stream a second time, and the remux's parser
        // after it would add the parameter sets to the first sample again): rare enough to
        // take the general road.
        let reason = format!("the video does not play in browsers from {}", container_name(format.container));
        return Plan::Transcode { reason, audio: has_audio };
    }
    let audio = match (format.audio, &format.audio_caps) {
        (None, _) => AudioPlan::Silent,
        (Some(AudioCodec::Aac), _) => AudioPlan::Copy("aacparse"),
        (Some(AudioCodec::Mp3), _) => AudioPlan::Copy("mpegaudioparse"),
        (Some(_), Some(caps)) => AudioPlan::Encode { caps: caps.clone() },
        (Some(_), None) => return Plan::Transcode { reason: "the audio cannot be told apart".into(), audio: true },
    };
    let reason = if !container_plays {
        format!("H.264 in {} is moved to MP4", container_name(format.container))
    } else if index_late {
        "the index is at the end of the file: moved to the front so playback starts at once".into()
    } else {
        "the audio does not play in browsers: encoded to AAC, the video kept as it is".into()
    };
    Plan::Remux { reason, audio }
}

/// Whether an ISO BMFF file's index (`moov`) comes before its media data (`mdat`), from the
/// top-level box headers; `None` when the file is not ISO BMFF or has neither box.
pub fn index_first(path: &Path) -> std::io::Result<Option<bool>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut at = 0u64;
    // Real files have a handful of top-level boxes; a bound keeps a hostile one cheap.
    for _ in 0..64 {
        if at.checked_add(8).is_none_or(|end| end > len) {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(at))?;
        let mut header = [0u8; 16];
        let read = file.read(&mut header)?;
        if read < 8 {
            return Ok(None);
        }
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let kind = &header[4..8];
        if !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Ok(None);
        }
        match kind {
            b"moov" => return Ok(Some(true)),
            b"mdat" => return Ok(Some(false)),
            _ => {}
        }
        let size = match size32 {
            0 => return Ok(None),
            1 if read >= 16 => u64::from_be_bytes(header[8..16].try_into().unwrap_or([0; 8])),
            1 => return Ok(None),
            n => n,
        };
        if size < 8 {
            return Ok(None);
        }
        let Some(next) = at.checked_add(size) else { return Ok(None) };
        at = next;
    }
    Ok(None)
}

/// The H.264 encoders GStreamer would pick, best first: hardware ones (named by
/// `hardware`) first unless the mode is software, then by rank. OpenMAX wrappers (libav's
/// `avenc_h264_omx`, ranked above openh264) have no OpenMAX to talk to on current systems
/// and are left out unless named as hardware.
pub fn h264_encoders(mode: Acceleration, hardware: &[String]) -> Vec<String> {
    let h264 = gst::Caps::builder("video/x-h264").build();
    let is_hardware = |name: &str| hardware.iter().any(|p| name.starts_with(p.as_str()));
    let mut found: Vec<(bool, gst::Rank, String)> =
        gst::ElementFactory::factories_with_type(gst::ElementFactoryType::VIDEO_ENCODER, gst::Rank::MARGINAL)
            .into_iter()
            .filter(|factory| factory.can_src_any_caps(&h264))
            .map(|factory| {
                let name = factory.name().to_string();
                (is_hardware(&name), factory.rank(), name)
            })
            .filter(|(hardware, _, name)| {
                (mode != Acceleration::Software || !hardware) && (*hardware || !name.contains("omx"))
            })
            .collect();
    // Hardware first where it is allowed, then the higher rank (as autoplugging does).
    found.sort_by(|a, b| {
        let later = |x: &(bool, gst::Rank, String)| !x.0;
        later(a).cmp(&later(b)).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2))
    });
    found.into_iter().map(|(_, _, name)| name).collect()
}

/// Whether `name` is one of the hardware encoders.
pub fn is_hardware(name: &str, hardware: &[String]) -> bool {
    hardware.iter().any(|p| name.starts_with(p.as_str()))
}

/// The first AAC encoder that is installed.
pub fn aac_encoder() -> Option<&'static str> {
    ["avenc_aac", "voaacenc", "fdkaacenc"].into_iter().find(|name| gst::ElementFactory::find(name).is_some())
}

/// The picture of a transcode: display orientation and size, the long side capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Size as encoded (upright).
    pub width: u32,
    pub height: u32,
}

impl Frame {
    /// Upright size of `metadata`'s picture with square pixels, at most `lines`p (the short
    /// side at most `lines`, the long one at most 16/9 of that: 1080 fits 1920×1080 or, upright,
    /// 1080×1920), both sides even (4:2:0 needs it).
    pub fn for_video(metadata: &Metadata, lines: u32) -> Frame {
        // In u128, with the pixel aspect held to 1:4..4:1: a file's header can claim anything.
        let (par_n, par_d) = metadata.format.pixel_aspect.unwrap_or((1, 1));
        let (par_n, par_d) = (u128::from(par_n.max(1)), u128::from(par_d.max(1)));
        let (par_n, par_d) = (par_n.clamp(par_d.div_ceil(4), par_d * 4), par_d);
        let coded_width = (u128::from(metadata.width) * par_n / par_d).max(2);
        let (width, height) = if metadata.rotation % 180 == 90 {
            (u128::from(metadata.height), coded_width)
        } else {
            (coded_width, u128::from(metadata.height))
        };
        let (long, short) = (width.max(height).max(1), width.min(height).max(1));
        let (max_long, max_short) = (u128::from(lines) * 16 / 9, u128::from(lines));
        // The smaller of the two scales, as a fraction `num / den` (no float rounding).
        let (num, den) = if max_long * short <= max_short * long { (max_long, long) } else { (max_short, short) };
        let scale = |side: u128| {
            let side = if num < den { side * num / den } else { side };
            (side.clamp(2, u128::from(u32::MAX)) & !1) as u32
        };
        Frame { width: scale(width), height: scale(height) }
    }

    /// Bytes a transcode of `duration_ms` is expected to take, generously (about 0.1 bit per
    /// pixel, the upper end of CRF 23 on phone footage, plus 128 kb/s of audio).
    pub fn estimate_bytes(&self, fps: Option<f64>, duration_ms: Option<u64>) -> u64 {
        let seconds = duration_ms.unwrap_or(0) as f64 / 1000.0;
        let video_bits = self.width as f64 * self.height as f64 * fps.unwrap_or(30.0).clamp(1.0, 120.0) * 0.1;
        ((video_bits + 128_000.0) * seconds / 8.0) as u64
    }

    /// Bits per second asked of encoders that take a bitrate rather than a quality.
    pub fn bitrate(&self, fps: Option<f64>) -> u32 {
        let bits = self.width as f64 * self.height as f64 * fps.unwrap_or(30.0).clamp(1.0, 120.0) * 0.08;
        bits.clamp(500_000.0, 20_000_000.0) as u32
    }

    /// The ceiling on a constant-quality encode's rate (twice `bitrate`, over a 2 s buffer):
    /// what the box's network must carry for the rendition to play without stalling, and no
    /// lower, or fast motion turns to mush (10 Mbit/s at 1080p30).
    pub fn max_bitrate(&self, fps: Option<f64>) -> u32 {
        self.bitrate(fps).saturating_mul(2)
    }
}

/// A transcode riding on the analysis pass: the encoder branch of its decode.
#[derive(Debug, Clone)]
pub struct Encode {
    pub encoder: String,
    pub frame: Frame,
    pub rotation: u32,
    pub interlaced: bool,
    pub frame_rate: Option<f64>,
    /// The AAC encoder, when the video has audio to keep.
    pub audio: Option<&'static str>,
    pub output: PathBuf,
    /// Where the muxer keeps the media data while it writes the index first.
    pub scratch: PathBuf,
    /// Bytes the output and the scratch file may take together.
    pub budget: u64,
    /// Bytes that must stay free on their disk meanwhile.
    pub reserve: u64,
}

impl Encode {
    pub fn written(&self) -> Written<'_> {
        Written { files: [&self.output, &self.scratch], budget: self.budget, reserve: self.reserve }
    }
}

/// The `videoflip` that turns a coded frame upright, if it needs turning.
pub fn turn(rotation: u32) -> &'static str {
    match rotation {
        90 => "videoflip video-direction=90r ! ",
        180 => "videoflip video-direction=180 ! ",
        270 => "videoflip video-direction=90l ! ",
        _ => "",
    }
}

/// The encoder with settings that suit it, and the caps it is to produce.
fn encoder_description(name: &str, frame: &Frame, fps: Option<f64>) -> String {
    // A keyframe every two seconds: seeking in the player lands quickly.
    let gop = (fps.unwrap_or(30.0).clamp(1.0, 120.0) * 2.0).round() as u32;
    let bitrate = frame.bitrate(fps);
    match name {
        // Constant quality (CRF 23); veryfast keeps a Pi 5 near real time at 1080p30. In this
        // mode x264enc's `bitrate` (kbit/s) is the VBV ceiling: left at its default, 2 Mbit/s,
        // it capped a 1080p rendition far below CRF 23.
        "x264enc" => format!(
            "x264enc speed-preset=veryfast pass=qual quantizer=23 key-int-max={gop} bitrate={} vbv-buf-capacity=2000 \
             ! video/x-h264,profile=high",
            frame.max_bitrate(fps) / 1000
        ),
        "openh264enc" => format!("openh264enc bitrate={bitrate} gop-size={gop} complexity=medium ! video/x-h264"),
        // The VideoCore encoder takes its settings as V4L2 controls and needs a level.
        name if name.starts_with("v4l2") => format!(
            "{name} extra-controls=\"controls,video_bitrate={bitrate},h264_i_frame_period={gop}\" ! video/x-h264,level=(string)4"
        ),
        name => format!("{name} ! video/x-h264"),
    }
}

impl Encode {
    /// The branches that hang off the pass: `vt.` is the tee after the video decoder, `dec.`
    /// the decodebin (for the audio). Frames are scaled and converted before they are turned.
    ///
    /// The file sink does not take part in prerolling (`async=false`): an encoder holds a
    /// dozen frames before its first output, while the analysis sink holds the first frame and
    /// its queue fills (at 1080p its 10 MB are three frames), so waiting for both sinks to
    /// preroll would wait for good.
    pub fn branch(&self) -> String {
        // Coded orientation: a quarter turn makes the encoded width the coded height.
        let (width, height) = if self.rotation % 180 == 90 {
            (self.frame.height, self.frame.width)
        } else {
            (self.frame.width, self.frame.height)
        };
        let deinterlace = if self.interlaced { "deinterlace ! " } else { "" };
        let encoder = encoder_description(&self.encoder, &self.frame, self.frame_rate);
        let turn = turn(self.rotation);
        // The queue holds full-size decoded frames: at most 8, and at most 64 MB of them (an
        // 8K frame is 50 MB; a header may claim larger still).
        let mut description = format!(
            " vt. ! queue max-size-buffers=8 max-size-bytes=64000000 max-size-time=0 ! {deinterlace}videoscale add-borders=false \
             ! video/x-raw,width={width},height={height},pixel-aspect-ratio=1/1 ! videoconvert ! video/x-raw,format=I420 \
             ! {turn}{encoder} ! h264parse ! queue ! mp4mux name=mux faststart=true ! filesink name=out async=false"
        );
        if let Some(aac) = self.audio {
            // The audio waits in a long queue while the encoder's lookahead holds video back.
            description.push_str(&format!(
                " dec. ! audio/x-raw ! {LONG_QUEUE} ! audioconvert ! audioresample ! {aac} ! aacparse ! mux."
            ));
        }
        description
    }
}

/// Points the rendition's sink and the muxer's scratch file at their paths.
pub fn set_outputs(pipeline: &gst::Pipeline, output: &Path, scratch: &Path) -> Result<(), MediaError> {
    let out = pipeline.by_name("out").ok_or_else(|| MediaError::Internal("no rendition sink".into()))?;
    out.set_property("location", output.to_string_lossy().as_ref());
    let mux = pipeline.by_name("mux").ok_or_else(|| MediaError::Internal("no muxer".into()))?;
    mux.set_property("faststart-file", scratch.to_string_lossy().as_ref());
    Ok(())
}

/// A queue that holds 20 s of a stream whatever its buffer count: a muxer interleaves its
/// inputs, so one stream waits while the other catches up (a late audio stream, a demuxer in
/// push mode); the default (1 s, 200 buffers) would block the demuxer for good. At most
/// 64 MB, so a stream that never interleaves cannot take the box's memory.
const LONG_QUEUE: &str = "queue max-size-time=20000000000 max-size-buffers=0 max-size-bytes=67108864";

/// The demuxer of a container. The remux parses the video once, behind the demuxer: a second
/// parser (parsebin's and ours) would add parameter sets to the first sample.
fn demuxer(container: Container) -> &'static str {
    match container {
        Container::Mp4 | Container::Mov => "qtdemux",
        Container::Matroska | Container::WebM => "matroskademux",
        Container::Avi => "avidemux",
        Container::MpegTs => "tsdemux",
        Container::MpegPs => "mpegpsdemux",
        // Not remuxed (see `plan`); a demuxer that finds its own way, should it be.
        Container::Other => "parsebin",
    }
}

/// The same video samples in an MP4 with its index first; the audio copied or encoded to
/// AAC. `progress` gets percent done.
pub fn remux(
    input: &Path,
    metadata: &Metadata,
    target: &RenditionTarget,
    audio: &AudioPlan,
    watchdog: Duration,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u8),
) -> Result<(), MediaError> {
    let audio_branch = match audio {
        AudioPlan::Silent => String::new(),
        AudioPlan::Copy(parser) => format!(" p. ! audio/mpeg ! {LONG_QUEUE} ! {parser} ! mux."),
        AudioPlan::Encode { caps } => {
            let aac = aac_encoder().ok_or_else(|| MediaError::Internal("no AAC encoder is installed".into()))?;
            format!(" p. ! {caps} ! {LONG_QUEUE} ! decodebin ! audioconvert ! audioresample ! {aac} ! aacparse ! mux.")
        }
    };
    let demuxer = demuxer(metadata.format.container);
    let description = format!(
        "filesrc name=src ! {demuxer} name=p p. ! video/x-h264 ! {LONG_QUEUE} ! h264parse ! video/x-h264,stream-format=avc,alignment=au \
         ! mp4mux name=mux faststart=true ! filesink name=out{audio_branch}"
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| MediaError::Internal(format!("remux pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Internal("not a pipeline".into()))?;
    let source = pipeline.by_name("src").ok_or_else(|| MediaError::Internal("no source".into()))?;
    source.set_property("location", input.to_string_lossy().as_ref());
    let (output, scratch) = (target.output.as_path(), target.scratch.as_path());
    set_outputs(&pipeline, output, scratch)?;
    let bus = pipeline.bus().ok_or_else(|| MediaError::Internal("no bus".into()))?;
    let running = super::pipeline::Running(pipeline);
    running.0.set_state(gst::State::Playing).map_err(|_| {
        super::pipeline::bus_error(&bus).unwrap_or(MediaError::Decode("the remux would not start".into()))
    })?;
    let written = Written { files: [output, scratch], budget: target.budget, reserve: target.reserve };
    finish(&running.0, &bus, &written, metadata.duration_ms, watchdog, cancel, progress)
}

/// What a rendition writes, and the room it was given.
pub struct Written<'a> {
    pub files: [&'a Path; 2],
    pub budget: u64,
    /// Bytes that must stay free on the files' disk.
    pub reserve: u64,
}

impl Written<'_> {
    pub fn bytes(&self) -> u64 {
        self.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
    }

    /// An error once the files take more than their room (the estimate was wrong) or the
    /// disk's free space falls below the reserve (others wrote meanwhile: an upload, another
    /// job): the space the database and uploads need is not the rendition's to take.
    pub fn outgrown(&self) -> Option<MediaError> {
        if self.bytes() > self.budget {
            let room = self.budget as f64 / 1e6;
            return Some(MediaError::NoRoom(format!("the rendition grew past the free space it had ({room:.1} MB)")));
        }
        let free = self.files[0].parent().and_then(|dir| fs4::available_space(dir).ok())?;
        (free < self.reserve).then(|| {
            MediaError::NoRoom(format!(
                "the disk is nearly full ({:.1} MB free, {:.1} MB are kept for the database and uploads)",
                free as f64 / 1e6,
                self.reserve as f64 / 1e6
            ))
        })
    }
}

/// Waits for a writing pipeline's end: done at end-of-stream, an error from the bus, stalled
/// when neither the position nor the files grow for `watchdog`, stopped when the files
/// outgrow their room. `progress` is called on every turn (with the furthest percentage, 0
/// without a duration), even with nothing new: the parent takes a silent worker for hung.
pub fn finish(
    pipeline: &gst::Pipeline,
    bus: &gst::Bus,
    written: &Written<'_>,
    duration_ms: Option<u64>,
    watchdog: Duration,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u8),
) -> Result<(), MediaError> {
    let mut last_change = Instant::now();
    let mut last_seen: (u64, u64) = (0, 0);
    let mut furthest = 0u8;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        let message = bus
            .timed_pop_filtered(gst::ClockTime::from_mseconds(100), &[gst::MessageType::Eos, gst::MessageType::Error]);
        match message.as_ref().map(|m| m.view()) {
            // Done, unless the last of it (the muxer's copy behind the index) went past the room.
            Some(gst::MessageView::Eos(_)) => return written.outgrown().map_or(Ok(()), Err),
            Some(gst::MessageView::Error(error)) => {
                let source = error.src().map(|s| s.name().to_string()).unwrap_or_default();
                return Err(MediaError::Decode(format!("{source}: {}", error.error())));
            }
            _ => {}
        }
        let position = pipeline.query_position::<gst::ClockTime>().map_or(0, |p| p.mseconds());
        if let Some(error) = written.outgrown() {
            return Err(error);
        }
        let bytes = written.bytes();
        if (position, bytes) != last_seen {
            last_seen = (position, bytes);
            last_change = Instant::now();
        } else if last_change.elapsed() > watchdog {
            return Err(MediaError::Stalled(watchdog));
        }
        if let Some(duration) = duration_ms.filter(|d| *d > 0) {
            furthest = furthest.max((position.saturating_mul(100) / duration).min(99) as u8);
        }
        progress(furthest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(format: Format, profile: Option<&str>) -> Metadata {
        Metadata {
            duration_ms: Some(1000),
            container: None,
            video_codec: String::new(),
            video_profile: profile.map(str::to_owned),
            format,
            width: 1920,
            height: 1080,
            rotation: 0,
            frame_rate: Some(30.0),
            bitrate: None,
            audio: None,
            decoder: None,
            encoder: None,
        }
    }

    fn format(container: Container, video: VideoCodec, audio: Option<AudioCodec>) -> Format {
        Format {
            container,
            video,
            chroma_format: Some("4:2:0".into()),
            bit_depth: Some(8),
            interlaced: false,
            pixel_aspect: None,
            audio,
            audio_caps: audio.map(|_| "audio/x-something".into()),
        }
    }

    #[test]
    fn web_ready_files_play_as_they_are() {
        let mp4 = metadata(format(Container::Mp4, VideoCodec::H264, Some(AudioCodec::Aac)), Some("high"));
        assert!(matches!(plan(&mp4, Some(true)), Plan::Original { .. }));
        let webm = metadata(format(Container::WebM, VideoCodec::Vp9, Some(AudioCodec::Opus)), None);
        assert!(matches!(plan(&webm, None), Plan::Original { .. }));
    }

    #[test]
    fn only_the_container_or_the_index_wrong_is_a_remux() {
        let late = metadata(format(Container::Mp4, VideoCodec::H264, Some(AudioCodec::Aac)), Some("main"));
        assert!(matches!(plan(&late, Some(false)), Plan::Remux { audio: AudioPlan::Copy("aacparse"), .. }));
        assert!(plan(&late, Some(false)).reason().contains("index is at the end"));
        for container in [Container::Mov, Container::Matroska, Container::Avi] {
            let m = metadata(format(container, VideoCodec::H264, None), Some("high"));
            assert!(matches!(plan(&m, None), Plan::Remux { audio: AudioPlan::Silent, .. }), "{container:?}");
        }
        let pcm = metadata(format(Container::Mov, VideoCodec::H264, Some(AudioCodec::Pcm)), Some("high"));
        assert!(matches!(plan(&pcm, None), Plan::Remux { audio: AudioPlan::Encode { .. }, .. }));
        let flv = metadata(format(Container::Other, VideoCodec::H264, None), Some("high"));
        assert!(matches!(plan(&flv, None), Plan::Transcode { .. }), "no demuxer of its own: the general road");
    }

    #[test]
    fn hostile_picture_sizes_give_a_bounded_even_frame() {
        let mut huge = metadata(format(Container::Mp4, VideoCodec::H265, None), None);
        (huge.width, huge.height) = (u32::MAX, u32::MAX);
        huge.format.pixel_aspect = Some((u32::MAX, 1));
        let fits = |frame: Frame| {
            let (long, short) = (frame.width.max(frame.height), frame.width.min(frame.height));
            long <= 1920
                && (2..=1080).contains(&short)
                && frame.width.is_multiple_of(2)
                && frame.height.is_multiple_of(2)
        };
        let frame = Frame::for_video(&huge, 1080);
        assert!(fits(frame), "{frame:?}");
        huge.format.pixel_aspect = Some((1, u32::MAX));
        let frame = Frame::for_video(&huge, 1080);
        assert!(fits(frame), "{frame:?}");
        (huge.width, huge.height) = (1, 1);
        assert_eq!(Frame::for_video(&huge, 1080), Frame { width: 2, height: 2 });
    }

    #[test]
    fn what_browsers_cannot_decode_is_transcoded() {
        let hevc = metadata(format(Container::Mp4, VideoCodec::H265, Some(AudioCodec::Aac)), Some("main"));
        assert!(matches!(plan(&hevc, Some(true)), Plan::Transcode { audio: true, .. }));
        assert!(plan(&hevc, Some(true)).reason().contains("HEVC"));
        let mut ten_bit = format(Container::Mp4, VideoCodec::H264, None);
        ten_bit.bit_depth = Some(10);
        assert!(matches!(plan(&metadata(ten_bit, Some("high-10")), Some(true)), Plan::Transcode { audio: false, .. }));
        let mut four_two_two = format(Container::Mp4, VideoCodec::H264, None);
        four_two_two.chroma_format = Some("4:2:2".into());
        assert!(matches!(plan(&metadata(four_two_two, Some("high")), Some(true)), Plan::Transcode { .. }));
        let mut interlaced = format(Container::Mp4, VideoCodec::H264, None);
        interlaced.interlaced = true;
        assert!(matches!(plan(&metadata(interlaced, Some("main")), Some(true)), Plan::Transcode { .. }));
        for codec in [VideoCodec::Mpeg2, VideoCodec::Mpeg4Part2, VideoCodec::ProRes, VideoCodec::Other] {
            let m = metadata(format(Container::Mov, codec, None), None);
            assert!(matches!(plan(&m, None), Plan::Transcode { .. }), "{codec:?}");
        }
    }

    #[test]
    fn frames_keep_their_shape_upright_and_even() {
        let mut m = metadata(format(Container::Mp4, VideoCodec::H265, None), None);
        (m.width, m.height) = (3840, 2160);
        assert_eq!(Frame::for_video(&m, 1080), Frame { width: 1920, height: 1080 });
        m.rotation = 90;
        assert_eq!(Frame::for_video(&m, 1080), Frame { width: 1080, height: 1920 });
        // 1080p stays as it is; a wide panorama is held by its long side.
        (m.width, m.height, m.rotation) = (1920, 1080, 0);
        assert_eq!(Frame::for_video(&m, 1080), Frame { width: 1920, height: 1080 });
        (m.width, m.height) = (7680, 1080);
        assert_eq!(Frame::for_video(&m, 1080), Frame { width: 1920, height: 270 });
        (m.width, m.height, m.rotation) = (321, 241, 0);
        assert_eq!(Frame::for_video(&m, 1080), Frame { width: 320, height: 240 });
        // Anamorphic DV: 720x480 with 8:9 pixels is 640x480 shown.
        (m.width, m.height) = (720, 480);
        m.format.pixel_aspect = Some((8, 9));
        assert_eq!(Frame::for_video(&m, 1080), Frame { width: 640, height: 480 });
    }

    #[test]
    fn the_index_position_is_read_from_box_headers() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, boxes: &[(&[u8; 4], usize)]| {
            let mut bytes = Vec::new();
            for (kind, len) in boxes {
                bytes.extend_from_slice(&(*len as u32).to_be_bytes());
                bytes.extend_from_slice(*kind);
                bytes.resize(bytes.len() + len - 8, 0);
            }
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let first = write("first.mp4", &[(b"ftyp", 24), (b"moov", 100), (b"mdat", 1000)]);
        let last = write("last.mp4", &[(b"ftyp", 24), (b"free", 8), (b"mdat", 1000), (b"moov", 100)]);
        assert_eq!(index_first(&first).unwrap(), Some(true));
        assert_eq!(index_first(&last).unwrap(), Some(false));
        let text = dir.path().join("text.mp4");
        std::fs::write(&text, "not an mp4 at all, only words").unwrap();
        assert_eq!(index_first(&text).unwrap(), None);
        // A box claiming fewer than 8 bytes ends the walk instead of looping.
        let broken = write("broken.mp4", &[(b"ftyp", 24)]);
        let mut bytes = std::fs::read(&broken).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 4, b'f', b'r', b'e', b'e']);
        std::fs::write(&broken, bytes).unwrap();
        assert_eq!(index_first(&broken).unwrap(), None);
    }
}
