//! Media processing with GStreamer: what a file holds ([`metadata`]), and one decode pass
//! that runs the photosensitivity analysis ([`sensitivity`]) and picks the thumbnail frame
//! ([`pipeline`]). All of it is blocking work: call it from a blocking thread.
//!
//! Door: [`Media::new`], then [`Media::process`].

pub mod metadata;
pub mod pipeline;
pub mod sensitivity;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use gstreamer as gst;

pub use metadata::Metadata;
pub use sensitivity::Report;

/// Thumbnail widths: the library card and the player's poster.
pub const CARD_WIDTH: u32 = 320;
pub const POSTER_WIDTH: u32 = 1280;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Promote sustained 2–3 flashes per second to `flagged`.
    pub strict: bool,
    pub watchdog: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig { strict: false, watchdog: Duration::from_secs(20) }
    }
}

/// A stage of processing, as reported in progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Media {
    pub fn new(config: MediaConfig) -> Result<Media, MediaError> {
        gst::init().map_err(|e| MediaError::Internal(format!("GStreamer: {e}")))?;
        Ok(Media { config })
    }

    pub fn probe(&self, path: &Path) -> Result<Metadata, MediaError> {
        metadata::probe(path, gst::ClockTime::from_seconds(15))
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
        let options =
            pipeline::PassOptions { duration_ms: duration, strict: self.config.strict, watchdog: self.config.watchdog };
        let mut on_position = |at_ms: u64| {
            let percent = duration.filter(|d| *d > 0).map_or(50, |d| (at_ms.saturating_mul(100) / d).min(99)) as u8;
            progress(Stage::Sensitivity, percent);
        };
        let pass = pipeline::analyze(path, &options, cancel, &mut on_position).map_err(|e| (Stage::Sensitivity, e))?;
        progress(Stage::Sensitivity, 100);
        metadata.decoder = pass.decoder;
        progress(Stage::Thumbnail, 0);
        let (display_width, _) = metadata.display_size();
        let widths = [CARD_WIDTH.min(display_width), POSTER_WIDTH.min(display_width)];
        let jpegs = pipeline::snapshot(path, pass.thumbnail_ms, &widths, self.config.watchdog)
            .map_err(|e| (Stage::Thumbnail, e))?;
        progress(Stage::Thumbnail, 100);
        let [card, poster]: [Vec<u8>; 2] =
            jpegs.try_into().map_err(|_| (Stage::Thumbnail, MediaError::Internal("missing thumbnail".into())))?;
        Ok(Processed { metadata, report: pass.report, thumbnails: [card, poster] })
    }
}
