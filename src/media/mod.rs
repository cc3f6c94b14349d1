//! Media processing with GStreamer: what a file holds ([`metadata`]), and one decode pass
//! that runs the photosensitivity analysis ([`sensitivity`]) and picks the thumbnail frame
//! ([`pipeline`]). All of it is blocking work: call it from a blocking thread.
//!
//! Door: [`Media::new`], then [`Media::process`]; the service runs it in a child process
//! ([`isolation`]) so a plugin that crashes or hangs costs one job, not the box.

pub mod isolation;
pub mod metadata;
pub mod pipeline;
pub mod sensitivity;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

pub use metadata::Metadata;
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
    #[error("{0}")]
    Internal(String),
}

/// Which decoders to use. On a Pi 4 the V4L2 stateful H.264 decoder (`v4l2h264dec`)
/// outranks the software ones whenever `/dev/video*` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderMode {
    /// Hardware where the board has it; after a failed pass with hardware present, software
    /// decoders from then on (that pass is retried once).
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
    pub decoder: DecoderMode,
    /// Name prefixes of the hardware decoder factories.
    pub hardware_decoders: Vec<String>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            strict: false,
            watchdog: Duration::from_secs(20),
            decoder: DecoderMode::Auto,
            hardware_decoders: vec!["v4l2".into()],
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
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Metadata => "metadata",
            Stage::Thumbnail => "thumbnail",
            Stage::Sensitivity => "sensitivity",
        }
    }
}

/// Everything processing learns about a video.
pub struct Processed {
    pub metadata: Metadata,
    pub report: Report,
    /// JPEG bytes: card, then poster.
    pub thumbnails: [Vec<u8>; 2],
}

pub struct Media {
    config: MediaConfig,
    /// A hardware decoder is registered on this board (whatever the configured mode).
    hardware: bool,
    /// Hardware decoding failed once and software decoders took over.
    demoted: AtomicBool,
}

impl Media {
    pub fn new(config: MediaConfig) -> Result<Media, MediaError> {
        gst::init().map_err(|e| MediaError::Internal(format!("GStreamer: {e}")))?;
        let hardware = hardware_present(&config.hardware_decoders);
        if config.decoder == DecoderMode::Software {
            demote(&config.hardware_decoders);
        }
        Ok(Media { config, hardware, demoted: AtomicBool::new(false) })
    }

    /// Whether hardware decoding failed in this process and software decoders took over.
    pub fn demoted(&self) -> bool {
        self.demoted.load(Ordering::Relaxed)
    }

    /// Whether the board has a hardware decoder.
    pub fn hardware_available(&self) -> bool {
        self.hardware
    }

    /// What the file holds; gives up after the watchdog's time, as a stalled pass would.
    pub fn probe(&self, path: &Path) -> Result<Metadata, MediaError> {
        metadata::probe(path, gst::ClockTime::from_nseconds(self.config.watchdog.as_nanos() as u64))
    }

    /// Runs every stage. `progress(stage, percent)` is called as work advances.
    pub fn process(
        &self,
        path: &Path,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Stage, u8),
    ) -> Result<Processed, (Stage, MediaError)> {
        progress(Stage::Metadata, 0);
        let mut metadata = self.probe(path).map_err(|e| (Stage::Metadata, e))?;
        progress(Stage::Metadata, 100);
        let duration = metadata.duration_ms;
        let hardware = self.config.hardware_decoders.clone();
        let options = pipeline::PassOptions {
            duration_ms: duration,
            rotation: metadata.rotation,
            strict: self.config.strict,
            watchdog: self.config.watchdog,
        };
        let mut on_position = |at_ms: u64| {
            let percent = duration.filter(|d| *d > 0).map_or(50, |d| (at_ms.saturating_mul(100) / d).min(99)) as u8;
            progress(Stage::Sensitivity, percent);
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
        let pass = match pipeline::analyze(path, &options, cancel, &mut on_position, &mut on_chosen) {
            Err(MediaError::Decode(_) | MediaError::Stalled(_))
                if self.config.decoder == DecoderMode::Auto && hardware_present(&hardware) =>
            {
                tracing::warn!(path = %path.display(), "hardware decoding failed; using software decoders from now on");
                demote(&hardware);
                self.demoted.store(true, Ordering::Relaxed);
                pipeline::analyze(path, &options, cancel, &mut on_position, &mut |_| {})
            }
            other => other,
        }
        .map_err(|e| (Stage::Sensitivity, e))?;
        progress(Stage::Sensitivity, 100);
        metadata.decoder = pass.decoder;
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
        Ok(Processed { metadata, report: pass.report, thumbnails: [card, poster] })
    }
}
