//! Media processing with GStreamer: what a file holds ([`metadata`]), one decode pass that
//! runs the photosensitivity analysis ([`sensitivity`]) and picks the thumbnail frame
//! ([`pipeline`]), and the web rendition that every browser plays ([`rendition`]), encoded
//! from that same decode when it must be transcoded. All of it is blocking work: call it
//! from a blocking thread.
//!
//! Door: [`Media::new`], then [`Media::process`]; the service runs it in a child process
//! ([`isolation`]) so a plugin that crashes or hangs costs one job, not the box.

pub mod isolation;
pub mod metadata;
pub mod pipeline;
pub mod previews;
pub mod rendition;
pub mod sensitivity;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

pub use metadata::Metadata;
pub use previews::Previews;
pub use rendition::{Playback, PlaybackKind};
pub use sensitivity::Report;

/// Thumbnail widths: the library card and the player's poster.
pub const CARD_WIDTH: u32 = 320;
pub const POSTER_WIDTH: u32 = 1280;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum MediaError {
    #[error("not a video: {0}")]
    NotVideo(String),
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("processing stalled: no frame for {0:?}")]
    Stalled(Duration),
    #[error("cancelled")]
    Cancelled,
    /// The child process doing the work died (a crashing plugin) or had to be killed.
    #[error("the media worker {0}")]
    WorkerDied(String),
    /// A rendition outgrew the room it was given, or the disk filled up under it: another
    /// encoder would not fit either.
    #[error("{0}")]
    NoRoom(String),
    #[error("{0}")]
    Internal(String),
}

/// Which decoders (or encoders) to use. On a Pi 4 the V4L2 stateful H.264 decoder
/// (`v4l2h264dec`) outranks the software ones whenever `/dev/video*` exists, and the
/// VideoCore encoder (`v4l2h264enc`) is there beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acceleration {
    /// Hardware where the board has it; after a failed pass with hardware present, software
    /// from then on (that pass is retried once).
    Auto,
    Software,
    Hardware,
}

/// The JPEGs of a thumbnail being made on a thread of its own.
type ThumbnailThread = std::thread::JoinHandle<Result<Vec<Vec<u8>>, MediaError>>;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MediaConfig {
    /// Promote sustained 2–3 flashes per second to `flagged`.
    pub strict: bool,
    pub watchdog: Duration,
    pub decoder: Acceleration,
    /// Name prefixes of the hardware decoder factories.
    pub hardware_decoders: Vec<String>,
    pub encoder: Acceleration,
    /// Name prefixes of the hardware encoder factories.
    pub hardware_encoders: Vec<String>,
    /// A transcoded rendition is at most this many lines (`1080`: 1080p; portrait alike).
    pub rendition_lines: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            strict: false,
            watchdog: Duration::from_secs(20),
            decoder: Acceleration::Auto,
            hardware_decoders: vec!["v4l2".into()],
            encoder: Acceleration::Auto,
            hardware_encoders: vec!["v4l2".into()],
            rendition_lines: 1080,
        }
    }
}

/// Takes the decoders named by the prefixes out of automatic selection, for the whole
/// process (ranks are global; on the box every pipeline should then decode in software).
fn demote(prefixes: &[String]) {
    for decoder in hardware_decoders(prefixes) {
        tracing::info!(decoder = %decoder.name(), "decoder taken out of selection");
        decoder.set_rank(gst::Rank::NONE);
    }
}

/// Whether any decoder named by the prefixes is registered and selectable (V4L2 elements
/// only register where `/dev/video*` exists).
fn hardware_present(prefixes: &[String]) -> bool {
    !hardware_decoders(prefixes).is_empty()
}

/// The selectable decoder factories whose names start with one of the prefixes (`v4l2`
/// also names sources and sinks, which are not decoders).
fn hardware_decoders(prefixes: &[String]) -> Vec<gst::ElementFactory> {
    gst::Registry::get()
        .features(gst::ElementFactory::static_type())
        .into_iter()
        .filter_map(|feature| feature.downcast::<gst::ElementFactory>().ok())
        .filter(|factory| {
            factory.rank() != gst::Rank::NONE
                && factory.has_type(gst::ElementFactoryType::DECODER)
                && prefixes.iter().any(|p| factory.name().starts_with(p.as_str()))
        })
        .collect()
}

/// A stage of processing, as reported in progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Metadata,
    Thumbnail,
    Sensitivity,
    /// Making the web rendition (a transcode runs with the analysis, a remux after it).
    Rendition,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Metadata => "metadata",
            Stage::Thumbnail => "thumbnail",
            Stage::Sensitivity => "sensitivity",
            Stage::Rendition => "rendition",
        }
    }
}

/// Where a web rendition may be written, and how much room it has.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RenditionTarget {
    pub output: std::path::PathBuf,
    /// The muxer's scratch file (the media data while the index is written first).
    pub scratch: std::path::PathBuf,
    /// Bytes the rendition and its scratch file may take together.
    pub budget: u64,
    /// Bytes that must stay free on the disk while it is written, whoever else writes there
    /// (an upload, another job): what the database and uploads are kept.
    #[serde(default)]
    pub reserve: u64,
}

/// Everything processing learns about a video.
pub struct Processed {
    pub metadata: Metadata,
    pub report: Report,
    /// JPEG bytes: card, then poster.
    pub thumbnails: [Vec<u8>; 2],
    /// What plays, when a rendition was asked for; a rendition it names is at the target's
    /// output.
    pub playback: Option<Playback>,
    /// The scrub previews (made along with a rendition).
    pub previews: Option<Previews>,
}

pub struct Media {
    config: MediaConfig,
    /// A hardware decoder is registered on this board (whatever the configured mode).
    hardware: bool,
    /// Hardware decoding failed once and software decoders took over.
    demoted: AtomicBool,
    /// A hardware encoder failed once and software encoders took over.
    encoder_demoted: AtomicBool,
}

impl Media {
    pub fn new(config: MediaConfig) -> Result<Media, MediaError> {
        gst::init().map_err(|e| MediaError::Internal(format!("GStreamer: {e}")))?;
        let hardware = hardware_present(&config.hardware_decoders);
        if config.decoder == Acceleration::Software {
            demote(&config.hardware_decoders);
        }
        Ok(Media { config, hardware, demoted: AtomicBool::new(false), encoder_demoted: AtomicBool::new(false) })
    }

    /// Whether hardware decoding failed in this process and software decoders took over.
    pub fn demoted(&self) -> bool {
        self.demoted.load(Ordering::Relaxed)
    }

    /// Whether a hardware encoder failed in this process and software encoders took over.
    pub fn encoder_demoted(&self) -> bool {
        self.encoder_demoted.load(Ordering::Relaxed)
    }

    /// Whether the board has a hardware decoder.
    pub fn hardware_available(&self) -> bool {
        self.hardware
    }

    /// What the file holds; gives up after the watchdog's time, as a stalled pass would.
    pub fn probe(&self, path: &Path) -> Result<Metadata, MediaError> {
        metadata::probe(path, gst::ClockTime::from_nseconds(self.config.watchdog.as_nanos() as u64))
    }

    /// The H.264 encoders to try, best first, as the mode and an earlier failure allow.
    pub fn encoders(&self) -> Vec<String> {
        let mode = if self.encoder_demoted() { Acceleration::Software } else { self.config.encoder };
        rendition::h264_encoders(mode, &self.config.hardware_encoders)
    }

    /// Runs every stage. `progress(stage, percent)` is called as work advances. With a
    /// `rendition` target the web rendition is made too (written to the target's output when
    /// the returned playback has a file); a rendition that cannot be made leaves the original
    /// to play and says why, it does not fail processing.
    pub fn process(
        &self,
        path: &Path,
        rendition: Option<&RenditionTarget>,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Stage, u8),
    ) -> Result<Processed, (Stage, MediaError)> {
        progress(Stage::Metadata, 0);
        let mut metadata = self.probe(path).map_err(|e| (Stage::Metadata, e))?;
        progress(Stage::Metadata, 100);
        let duration = metadata.duration_ms;
        let mut plan = rendition.map(|target| self.plan(path, &metadata, target));
        let mut encode = match (&plan, rendition) {
            (Some(Planned::Transcode { encode, .. }), Some(_)) => Some(encode.clone()),
            _ => None,
        };
        let pass_stage = if encode.is_some() { Stage::Rendition } else { Stage::Sensitivity };
        let mut on_position = |at_ms: u64| {
            let percent = duration.filter(|d| *d > 0).map_or(50, |d| (at_ms.saturating_mul(100) / d).min(99)) as u8;
            progress(pass_stage, percent);
        };
        // The thumbnail is made on its own thread as soon as the pass has chosen its frame,
        // while the pass goes on: its decode overlaps the analysis instead of following it.
        let (display_width, _) = metadata.display_size();
        let widths = [CARD_WIDTH.min(display_width), POSTER_WIDTH.min(display_width)];
        let watchdog = self.config.watchdog;
        let mut early: Option<(u64, ThumbnailThread)> = None;
        let mut on_chosen = |at: u64| {
            if early.is_none() {
                let path = path.to_owned();
                early = Some((at, std::thread::spawn(move || pipeline::snapshot(&path, at, &widths, watchdog))));
            }
        };
        let mut pass = self.pass(path, &metadata, encode.as_ref(), cancel, &mut on_position, &mut on_chosen);
        // A transcode that failed is tried with a software encoder if a hardware one failed,
        // then given up: the analysis runs alone and the original plays.
        if let (Err(error), Some(failed)) = (&pass, encode.as_mut())
            && *error != MediaError::Cancelled
        {
            let error = error.clone();
            clear(rendition);
            // Out of room, another encoder would not fit either.
            let software = match error {
                MediaError::NoRoom(_) => None,
                _ => self.encoder_failed(&failed.encoder),
            };
            let retried = match software {
                Some(software) => {
                    failed.encoder = software;
                    pass = self.pass(path, &metadata, Some(failed), cancel, &mut on_position, &mut |_| {});
                    if matches!(pass, Err(MediaError::Decode(_))) {
                        // Software failed the same way: the file, not the hardware, is at fault.
                        tracing::warn!(path = %path.display(), "software encoding failed too; hardware encoders stay in use");
                        self.encoder_demoted.store(false, Ordering::Relaxed);
                    }
                    true
                }
                None => false,
            };
            if !retried || pass.is_err() {
                let why = pass.as_ref().err().cloned().unwrap_or(error);
                if why == MediaError::Cancelled {
                    return Err((pass_stage, why));
                }
                tracing::warn!(path = %path.display(), error = %why, "the transcode failed; analysing without it");
                clear(rendition);
                plan = plan.map(|p| p.failed(format!("the transcode failed: {why}")));
                encode = None;
                pass = self.pass(path, &metadata, None, cancel, &mut on_position, &mut |_| {});
            }
        }
        let pass = pass.map_err(|e| (pass_stage, e))?;
        progress(pass_stage, 100);
        // Previews are a nicety: a sheet that cannot be made costs the previews, nothing else.
        let previews = match previews::build(&pass.previews, duration) {
            Ok(previews) => previews,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "no scrub previews");
                None
            }
        };
        metadata.decoder = pass.decoder;
        metadata.encoder = encode.as_ref().map(|e| e.encoder.clone());
        progress(Stage::Thumbnail, 0);
        // The early thumbnail counts if it is of the frame the pass ended up with and it worked;
        // otherwise (the fallback frame, a failure) it is made now, and its error is the one told.
        let made_early = early
            .take()
            .filter(|(at, _)| *at == pass.thumbnail_at)
            .and_then(|(_, thread)| thread.join().ok())
            .and_then(Result::ok);
        let jpegs = match made_early {
            Some(jpegs) => jpegs,
            None => {
                pipeline::snapshot(path, pass.thumbnail_at, &widths, watchdog).map_err(|e| (Stage::Thumbnail, e))?
            }
        };
        progress(Stage::Thumbnail, 100);
        let [card, poster]: [Vec<u8>; 2] =
            jpegs.try_into().map_err(|_| (Stage::Thumbnail, MediaError::Internal("missing thumbnail".into())))?;
        if let (Some(Planned::Remux { audio, .. }), Some(target)) = (&plan, rendition) {
            progress(Stage::Rendition, 0);
            let mut on_percent = |percent| progress(Stage::Rendition, percent);
            let remuxed = rendition::remux(path, &metadata, target, audio, watchdog, cancel, &mut on_percent);
            match remuxed {
                Ok(()) => {}
                Err(MediaError::Cancelled) => return Err((Stage::Rendition, MediaError::Cancelled)),
                Err(MediaError::NoRoom(why)) => {
                    clear(rendition);
                    let problem = format!("the remux stopped: {why}");
                    plan = Some(Planned::Original {
                        reason: "plays as uploaded where it can".into(),
                        problem: Some(problem),
                    });
                }
                Err(error) => {
                    // Samples a new index cannot hold as they are (no decode timestamps, say):
                    // the general road, one more decode.
                    tracing::warn!(path = %path.display(), %error, "the remux failed; transcoding instead");
                    clear(rendition);
                    let reason = format!("the remux failed ({error}): transcoded instead");
                    let audio = metadata.format.audio.is_some();
                    plan = match self.transcode(path, &metadata, target, reason, audio) {
                        Planned::Transcode { reason, encode } => {
                            let mut on_position = |at_ms: u64| {
                                let percent = duration.filter(|d| *d > 0).map_or(50, |d| (at_ms * 100 / d).min(99));
                                progress(Stage::Rendition, percent as u8);
                            };
                            match self.pass(path, &metadata, Some(&encode), cancel, &mut on_position, &mut |_| {}) {
                                Ok(_) => {
                                    metadata.encoder = Some(encode.encoder.clone());
                                    Some(Planned::Transcode { reason, encode })
                                }
                                Err(MediaError::Cancelled) => {
                                    return Err((Stage::Rendition, MediaError::Cancelled));
                                }
                                Err(second) => {
                                    clear(rendition);
                                    let problem = format!("the remux failed ({error}), and the transcode ({second})");
                                    Some(Planned::Original {
                                        reason: "plays as uploaded where it can".into(),
                                        problem: Some(problem),
                                    })
                                }
                            }
                        }
                        other => Some(other),
                    };
                }
            }
            progress(Stage::Rendition, 100);
        }
        let playback = plan.map(|p| p.playback(&metadata));
        Ok(Processed { metadata, report: pass.report, thumbnails: [card, poster], playback, previews })
    }

    /// What a rendition of `metadata`'s file will be, if it fits.
    fn plan(&self, path: &Path, metadata: &Metadata, target: &RenditionTarget) -> Planned {
        let index_first = match metadata.format.container {
            metadata::Container::Mp4 => rendition::index_first(path).ok().flatten(),
            _ => None,
        };
        match rendition::plan(metadata, index_first) {
            rendition::Plan::Original { reason } => Planned::Original { reason, problem: None },
            rendition::Plan::Remux { reason, audio } => {
                // The original's size, twice: the muxer's scratch copy and the file.
                let needed = std::fs::metadata(path).map_or(u64::MAX / 2, |m| m.len()).saturating_mul(2);
                if needed > target.budget {
                    return Planned::Original { reason, problem: Some(no_room(needed, target.budget)) };
                }
                Planned::Remux { reason, audio }
            }
            rendition::Plan::Transcode { reason, audio } => self.transcode(path, metadata, target, reason, audio),
        }
    }

    /// A transcode of `metadata`'s file, if it fits and the encoders are there.
    fn transcode(
        &self,
        path: &Path,
        metadata: &Metadata,
        target: &RenditionTarget,
        reason: String,
        audio: bool,
    ) -> Planned {
        if metadata.width == 0 || metadata.height == 0 {
            return Planned::Original {
                reason,
                problem: Some("the file does not say how large its picture is".into()),
            };
        }
        let frame = rendition::Frame::for_video(metadata, self.config.rendition_lines);
        let mut estimate = frame.estimate_bytes(metadata.frame_rate, metadata.duration_ms);
        if metadata.duration_ms.is_none() {
            // No duration to go by: twice the original, and the writing is watched anyway.
            estimate = estimate.max(std::fs::metadata(path).map_or(u64::MAX / 4, |m| m.len().saturating_mul(2)));
        }
        // The muxer writes the media data to its scratch file, then copies it behind the
        // index: for a moment the rendition is on disk twice.
        let needed = estimate.saturating_mul(2);
        if needed > target.budget {
            return Planned::Original { reason, problem: Some(no_room(needed, target.budget)) };
        }
        let Some(encoder) = self.encoders().into_iter().next() else {
            return Planned::Original { reason, problem: Some("no H.264 encoder is installed".into()) };
        };
        let aac = match (audio, rendition::aac_encoder()) {
            (false, _) => None,
            (true, Some(aac)) => Some(aac),
            (true, None) => return Planned::Original { reason, problem: Some("no AAC encoder is installed".into()) },
        };
        let encode = rendition::Encode {
            encoder,
            frame,
            rotation: metadata.rotation,
            interlaced: metadata.format.interlaced,
            frame_rate: metadata.frame_rate,
            audio: aac,
            output: target.output.clone(),
            scratch: target.scratch.clone(),
            budget: target.budget,
            reserve: target.reserve,
        };
        Planned::Transcode { reason, encode }
    }

    /// After `encoder` failed: the software encoder to try instead, if it was a hardware one
    /// and the mode allows falling back (from then on, software only).
    fn encoder_failed(&self, encoder: &str) -> Option<String> {
        let hardware = &self.config.hardware_encoders;
        if self.config.encoder != Acceleration::Auto || !rendition::is_hardware(encoder, hardware) {
            return None;
        }
        tracing::warn!(encoder, "hardware encoding failed; using software encoders from now on");
        self.encoder_demoted.store(true, Ordering::Relaxed);
        self.encoders().into_iter().next()
    }

    /// One decode pass; after a failure with a hardware decoder present (in auto mode),
    /// software decoders from then on and the pass once more.
    fn pass(
        &self,
        path: &Path,
        metadata: &Metadata,
        encode: Option<&rendition::Encode>,
        cancel: &AtomicBool,
        on_position: &mut dyn FnMut(u64),
        on_chosen: &mut dyn FnMut(u64),
    ) -> Result<pipeline::Pass, MediaError> {
        let options = pipeline::PassOptions {
            duration_ms: metadata.duration_ms,
            rotation: metadata.rotation,
            strict: self.config.strict,
            watchdog: self.config.watchdog,
            encode,
            previews: true,
        };
        let hardware = &self.config.hardware_decoders;
        let result = pipeline::analyze(path, &options, cancel, on_position, on_chosen);
        // With an encoder in the pass, only an error that names a hardware decoder is the
        // decoder's: a failing (hardware) encoder must not turn hardware decoding off.
        let decoder_to_blame = match &result {
            Err(MediaError::Decode(what)) => {
                encode.is_none() || hardware_decoders(hardware).iter().any(|f| what.starts_with(f.name().as_str()))
            }
            Err(MediaError::Stalled(_)) => encode.is_none(),
            _ => false,
        };
        if !decoder_to_blame || self.config.decoder != Acceleration::Auto || !hardware_present(hardware) {
            return result;
        }
        tracing::warn!(path = %path.display(), "hardware decoding failed; using software decoders from now on");
        demote(hardware);
        self.demoted.store(true, Ordering::Relaxed);
        if let Some(encode) = encode {
            let _ = std::fs::remove_file(&encode.output);
            let _ = std::fs::remove_file(&encode.scratch);
        }
        pipeline::analyze(path, &options, cancel, on_position, &mut |_| {})
    }
}

/// Why a rendition cannot be made here.
fn no_room(needed: u64, budget: u64) -> String {
    format!(
        "not enough free space for a rendition: it needs about {} MB, {} MB are free",
        needed.div_ceil(1_000_000),
        budget / 1_000_000
    )
}

/// A rendition as decided, with what it takes to make it.
enum Planned {
    Original { reason: String, problem: Option<String> },
    Remux { reason: String, audio: rendition::AudioPlan },
    Transcode { reason: String, encode: rendition::Encode },
}

impl Planned {
    /// The original plays instead, for `problem`.
    fn failed(self, problem: String) -> Planned {
        let reason = match self {
            Planned::Original { reason, .. } | Planned::Remux { reason, .. } | Planned::Transcode { reason, .. } => {
                reason
            }
        };
        Planned::Original { reason, problem: Some(problem) }
    }

    fn playback(self, metadata: &Metadata) -> Playback {
        match self {
            Planned::Original { reason, problem } => {
                Playback { kind: PlaybackKind::Original, codec: metadata.video_codec.clone(), reason, problem }
            }
            Planned::Remux { reason, .. } => {
                Playback { kind: PlaybackKind::Remuxed, codec: metadata.video_codec.clone(), reason, problem: None }
            }
            Planned::Transcode { reason, .. } => {
                // The encoder that ran, after any fallback.
                let x264 = metadata.encoder.as_deref() == Some("x264enc");
                let codec = if x264 { "H.264 (High Profile)" } else { "H.264" };
                Playback { kind: PlaybackKind::Transcoded, codec: codec.into(), reason, problem: None }
            }
        }
    }
}

/// Removes what a failed rendition left behind.
fn clear(target: Option<&RenditionTarget>) {
    if let Some(target) = target {
        let _ = std::fs::remove_file(&target.output);
        let _ = std::fs::remove_file(&target.scratch);
    }
}
