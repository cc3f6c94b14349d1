//! Stages 2 and 3 share one decode pass: every frame is scaled (before colour conversion, the
//! cheap order) to the analysis width, fed to the flash analysis, and scored as a thumbnail
//! candidate. A second, tiny pipeline then seeks to the chosen frame and encodes the JPEGs.
//!
//! Nothing here blocks without a deadline: samples are pulled with a timeout, the bus is
//! drained between pulls, and a watchdog ends a pipeline that stops producing frames.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::MediaError;
use super::previews::{self, Frames};
use super::rendition::{self, Encode};
use super::sensitivity::{Analyzer, Report};

pub const ANALYSIS_WIDTH: u32 = 160;
/// A frame this dark on average (0..1, gamma-encoded luma) is not a thumbnail.
const NEAR_BLACK: f64 = 0.08;
/// Nor is one this flat (standard deviation of luma).
const FLAT: f64 = 0.02;

pub struct Pass {
    pub report: Report,
    /// Presentation time of the frame chosen for the thumbnail, in nanoseconds: whole
    /// milliseconds would seek to the frame before it.
    pub thumbnail_at: u64,
    pub decoder: Option<String>,
    /// Frames kept for the scrub previews, if asked for.
    pub previews: Frames,
}

pub struct PassOptions<'a> {
    pub duration_ms: Option<u64>,
    /// Clockwise degrees the picture is turned for display (from the metadata).
    pub rotation: u32,
    pub strict: bool,
    /// No frame for this long ends the pass as stalled.
    pub watchdog: Duration,
    /// The web rendition encoded from the same decode, if one is to be made.
    pub encode: Option<&'a Encode>,
    /// Keep a frame every few seconds for the scrub previews.
    pub previews: bool,
}

fn launch(description: &str, path: &Path) -> Result<gst::Pipeline, MediaError> {
    let pipeline = gst::parse::launch(description)
        .map_err(|e| MediaError::Internal(format!("pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Internal("not a pipeline".into()))?;
    let source = pipeline.by_name("src").ok_or_else(|| MediaError::Internal("no source".into()))?;
    source.set_property("location", path.to_string_lossy().as_ref());
    Ok(pipeline)
}

fn appsink(pipeline: &gst::Pipeline, name: &str) -> Result<gst_app::AppSink, MediaError> {
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Internal(format!("no appsink {name}")))
}

/// Stops the pipeline whatever happens to the pass.
pub(super) struct Running(pub(super) gst::Pipeline);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// The first error on the bus, if any, with the element that raised it.
pub(super) fn bus_error(bus: &gst::Bus) -> Option<MediaError> {
    drain_bus(bus, &mut false)
}

/// Like [`bus_error`], noting in `eos` whether the whole pipeline reached its end meanwhile
/// (a message popped here is gone for whoever waits for it later).
fn drain_bus(bus: &gst::Bus, eos: &mut bool) -> Option<MediaError> {
    while let Some(message) = bus.pop() {
        match message.view() {
            gst::MessageView::Error(error) => {
                let source = error.src().map(|s| s.name().to_string()).unwrap_or_default();
                return Some(MediaError::Decode(format!("{source}: {}", error.error())));
            }
            gst::MessageView::Eos(_) => *eos = true,
            _ => {}
        }
    }
    None
}

/// Remembers which video decoder decodebin picked.
fn watch_decoder(pipeline: &gst::Pipeline) -> Arc<Mutex<Option<String>>> {
    let decoder = Arc::new(Mutex::new(None));
    let slot = decoder.clone();
    pipeline.connect_deep_element_added(move |_, _, element| {
        let Some(factory) = element.factory() else { return };
        let klass = factory.metadata(gst::ELEMENT_METADATA_KLASS).unwrap_or_default();
        if klass.contains("Decoder")
            && klass.contains("Video")
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(factory.name().to_string());
        }
    });
    decoder
}

/// One decode pass: the flash analysis and the thumbnail frame. `progress` gets the stream
/// position in milliseconds; `chose` hears the thumbnail frame as soon as it is known (so the
/// thumbnail can be made while the pass goes on), unless only the fallback at the end picks it.
///
/// Frames are scaled down and converted before they are turned upright, and only turned when
/// the metadata says they must be: `videoflip` copies every frame it sees (even with nothing
/// to turn), which at 1080p cost a third as much as the decode itself, and it takes fewer
/// formats than decoders give (not 8-bit 4:2:2, say). The turn is set before the pipeline
/// starts, so caps are negotiated once (a turn learnt mid-stream cannot renegotiate a scaler
/// upstream of it).
///
/// With `options.encode` the decoded frames are also teed to the rendition's encoder, and the
/// pass ends when the rendition is written too.
pub fn analyze(
    path: &Path,
    options: &PassOptions<'_>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
    chose: &mut dyn FnMut(u64),
) -> Result<Pass, MediaError> {
    // The scaler sizes the frame as it is coded: a quarter turn makes its height the width.
    let side = if options.rotation % 180 == 90 { "height" } else { "width" };
    let turn = rendition::turn(options.rotation);
    let analysis = format!(
        "videoscale ! video/x-raw,{side}={ANALYSIS_WIDTH},pixel-aspect-ratio=1/1 \
         ! videoconvert ! video/x-raw,format=RGB ! {turn}appsink name=sink sync=false max-buffers=4"
    );
    let description = match options.encode {
        None => format!("filesrc name=src ! decodebin name=dec ! {analysis}"),
        Some(encode) => format!(
            "filesrc name=src ! decodebin name=dec dec. ! video/x-raw ! tee name=vt vt. ! queue ! {analysis}{}",
            encode.branch()
        ),
    };
    let pipeline = launch(&description, path)?;
    if let Some(encode) = options.encode {
        rendition::set_outputs(&pipeline, &encode.output, &encode.scratch)?;
    }
    let decoder = watch_decoder(&pipeline);
    let sink = appsink(&pipeline, "sink")?;
    let bus = pipeline.bus().ok_or_else(|| MediaError::Internal("no bus".into()))?;
    let running = Running(pipeline);
    running
        .0
        .set_state(gst::State::Playing)
        .map_err(|_| bus_error(&bus).unwrap_or(MediaError::Decode("the pipeline would not start".into())))?;

    let mut analyzer = Analyzer::new(options.strict);
    let target_ms = options.duration_ms.map_or(1000, |d| (d / 10).min(3000));
    let mut chosen: Option<u64> = None;
    let mut fallback: Option<(f64, u64)> = None;
    let mut last_frame = Instant::now();
    let mut ended = false;
    let mut frames_seen = 0u64;
    let mut kept = Frames::new();
    let preview_every = previews::interval_ms(options.duration_ms);
    let mut next_preview = 0u64;
    let mut last_at_ms = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        if let Some(error) = drain_bus(&bus, &mut ended) {
            return Err(error);
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            if sink.is_eos() {
                break;
            }
            if last_frame.elapsed() > options.watchdog {
                return Err(MediaError::Stalled(options.watchdog));
            }
            continue;
        };
        last_frame = Instant::now();
        frames_seen += 1;
        // A rendition that outgrows its room stops the pass (checked every 64 frames: a stat).
        if let Some(encode) = options.encode
            && frames_seen.is_multiple_of(64)
            && let Some(error) = encode.written().outgrown()
        {
            return Err(error);
        }
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else { continue };
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| MediaError::Internal(format!("caps: {e}")))?;
        let pts = buffer.pts().map_or(0, |t| t.nseconds());
        let at_ms = pts / 1_000_000;
        last_at_ms = at_ms;
        let map = buffer.map_readable().map_err(|_| MediaError::Internal("unreadable buffer".into()))?;
        let stride = info.stride()[0] as usize;
        analyzer.frame(map.as_slice(), info.width(), info.height(), stride, at_ms);
        if options.previews && at_ms >= next_preview && (kept.frames.len() as u64) < previews::MAX_FRAMES {
            kept.keep(at_ms, map.as_slice(), info.width(), info.height(), stride);
            // The next multiple of the interval after this frame (computed, not stepped to: a
            // hostile first timestamp near the end of time would take billions of steps).
            next_preview = (at_ms / preview_every).saturating_add(1).saturating_mul(preview_every);
        }
        let (mean, deviation) = luma_stats(map.as_slice(), info.width(), info.height(), stride);
        let usable = mean >= NEAR_BLACK && deviation >= FLAT;
        if chosen.is_none() && usable && at_ms >= target_ms {
            chosen = Some(pts);
            chose(pts);
        }
        if fallback.is_none_or(|(best, _)| deviation + mean > best) {
            fallback = Some((deviation + mean, pts));
        }
        progress(at_ms);
    }
    let report = analyzer.finish();
    if report.metrics.frames == 0 {
        return Err(MediaError::NotVideo("no video frame could be decoded".into()));
    }
    if let Some(encode) = options.encode
        && ended
        && let Some(error) = encode.written().outgrown()
    {
        // The whole pipeline ended inside the loop: the file as finished is checked here.
        return Err(error);
    }
    if let Some(encode) = options.encode
        && !ended
    {
        // The analysis has seen every frame; the encoder and the muxer finish the file (the
        // muxer copying it behind its index, which for a large file takes a while). The last
        // position is reported meanwhile, so the parent hears from a worker that is busy.
        let written = encode.written();
        let mut still = |_| progress(last_at_ms);
        rendition::finish(&running.0, &bus, &written, options.duration_ms, options.watchdog, cancel, &mut still)?;
    }
    let thumbnail_at = chosen.or(fallback.map(|(_, at)| at)).unwrap_or(0);
    let decoder = decoder.lock().ok().and_then(|d| d.clone());
    Ok(Pass { report, thumbnail_at, decoder, previews: kept })
}

/// Mean and standard deviation of gamma-encoded luma, 0..1.
fn luma_stats(rgb: &[u8], width: u32, height: u32, stride: usize) -> (f64, f64) {
    let (mut sum, mut squares, mut n) = (0f64, 0f64, 0f64);
    for row in 0..height as usize {
        let Some(line) = rgb.get(row * stride..row * stride + width as usize * 3) else { break };
        for px in line.chunks_exact(3) {
            let y = (0.2126 * px[0] as f64 + 0.7152 * px[1] as f64 + 0.0722 * px[2] as f64) / 255.0;
            sum += y;
            squares += y * y;
            n += 1.0;
        }
    }
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mean = sum / n;
    (mean, (squares / n - mean * mean).max(0.0).sqrt())
}

/// JPEGs of the frame shown at `at` (nanoseconds), one per requested width, rotated for
/// display.
pub fn snapshot(path: &Path, at: u64, widths: &[u32], timeout: Duration) -> Result<Vec<Vec<u8>>, MediaError> {
    let branches: String = widths
        .iter()
        .enumerate()
        .map(|(i, w)| format!(" t. ! queue ! videoscale ! video/x-raw,width={w},pixel-aspect-ratio=1/1 ! jpegenc quality=85 ! appsink name=jpeg{i} sync=false"))
        .collect();
    let description = format!(
        "filesrc name=src ! decodebin name=dec ! videoconvert ! videoflip video-direction=auto ! videoconvert ! tee name=t{branches}"
    );
    let pipeline = launch(&description, path)?;
    let bus = pipeline.bus().ok_or_else(|| MediaError::Internal("no bus".into()))?;
    let running = Running(pipeline);
    let wait = gst::ClockTime::from_mseconds(timeout.as_millis() as u64);
    let preroll = |running: &Running| -> Result<(), MediaError> {
        let (result, _, _) = running.0.state(wait);
        result
            .map(|_| ())
            .map_err(|_| bus_error(&bus).unwrap_or(MediaError::Decode("the frame could not be decoded".into())))
    };
    running
        .0
        .set_state(gst::State::Paused)
        .map_err(|_| bus_error(&bus).unwrap_or(MediaError::Decode("the pipeline would not start".into())))?;
    preroll(&running)?;
    if at > 0 {
        running
            .0
            .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, gst::ClockTime::from_nseconds(at))
            .map_err(|e| MediaError::Decode(format!("seek: {e}")))?;
        preroll(&running)?;
    }
    let mut jpegs = Vec::with_capacity(widths.len());
    for i in 0..widths.len() {
        let sink = appsink(&running.0, &format!("jpeg{i}"))?;
        let sample =
            sink.try_pull_preroll(wait).ok_or_else(|| bus_error(&bus).unwrap_or(MediaError::Stalled(timeout)))?;
        let buffer = sample.buffer().ok_or_else(|| MediaError::Internal("empty JPEG sample".into()))?;
        let map = buffer.map_readable().map_err(|_| MediaError::Internal("unreadable JPEG".into()))?;
        jpegs.push(map.as_slice().to_vec());
    }
    Ok(jpegs)
}
