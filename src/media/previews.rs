//! Scrub previews: small frames every few seconds, taken from the frames the analysis pass
//! decodes anyway, laid out as one sprite sheet (JPEG) with a WebVTT track whose cues name
//! each frame's rectangle (`previews.jpg#xywh=x,y,w,h`), the form video players read.

use std::fmt::Write;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::MediaError;

/// At most this many frames: a two-hour film still gets a sheet a phone can load.
pub const MAX_FRAMES: u64 = 100;
/// Frames are at least this far apart.
pub const MIN_INTERVAL_MS: u64 = 2000;
const COLUMNS: usize = 10;
/// What the cues call the sheet; the player maps it to the sheet's URL.
pub const SHEET_NAME: &str = "previews.jpg";

/// How far apart the frames of a video of `duration_ms` are taken.
pub fn interval_ms(duration_ms: Option<u64>) -> u64 {
    let spread = duration_ms.unwrap_or(0).div_ceil(MAX_FRAMES);
    // Whole seconds read better in a cue list.
    spread.div_ceil(1000).saturating_mul(1000).max(MIN_INTERVAL_MS)
}

/// Frames as the analysis takes them: packed RGB, all of one size.
pub struct Frames {
    pub width: u32,
    pub height: u32,
    /// Presentation time in milliseconds and pixels.
    pub frames: Vec<(u64, Vec<u8>)>,
}

impl Frames {
    pub fn new() -> Frames {
        Frames { width: 0, height: 0, frames: Vec::new() }
    }

    /// Keeps a frame (`stride` bytes a row); frames of another size than the first are
    /// skipped (a stream that changes size mid-way keeps its first size's frames), and so are
    /// frames more than four times as tall as wide (a hostile aspect ratio would make the
    /// sheet huge).
    pub fn keep(&mut self, at_ms: u64, rgb: &[u8], width: u32, height: u32, stride: usize) {
        if height > width.saturating_mul(4) {
            return;
        }
        if self.frames.is_empty() {
            (self.width, self.height) = (width, height);
        } else if (width, height) != (self.width, self.height) {
            return;
        }
        let row = width as usize * 3;
        let mut pixels = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            let Some(line) = rgb.get(y * stride..y * stride + row) else { return };
            pixels.extend_from_slice(line);
        }
        self.frames.push((at_ms, pixels));
    }
}

impl Default for Frames {
    fn default() -> Self {
        Frames::new()
    }
}

/// The sheet and its cues.
#[derive(Debug, Clone, PartialEq)]
pub struct Previews {
    pub sheet: Vec<u8>,
    pub vtt: String,
}

/// Lays the frames out and writes the cues; the last cue runs to `duration_ms`.
pub fn build(frames: &Frames, duration_ms: Option<u64>) -> Result<Option<Previews>, MediaError> {
    let count = frames.frames.len();
    if count == 0 || frames.width == 0 || frames.height == 0 {
        return Ok(None);
    }
    let (w, h) = (frames.width as usize, frames.height as usize);
    let columns = count.min(COLUMNS);
    let rows = count.div_ceil(columns);
    let (sheet_w, sheet_h) = (w * columns, h * rows);
    let mut sheet = vec![0u8; sheet_w * sheet_h * 3];
    let mut vtt = String::from("WEBVTT\n");
    // Cue times are the frames' stream times, which is the player's clock for the files
    // GStreamer's demuxers time from zero; the first cue starts at zero, so the opening
    // moments (before the first frame, B-frame delays) have a frame too.
    for (i, (at, pixels)) in frames.frames.iter().enumerate() {
        let (x, y) = ((i % columns) * w, (i / columns) * h);
        for row in 0..h {
            let to = ((y + row) * sheet_w + x) * 3;
            sheet[to..to + w * 3].copy_from_slice(&pixels[row * w * 3..(row + 1) * w * 3]);
        }
        let start = if i == 0 { 0 } else { *at };
        let end = match frames.frames.get(i + 1) {
            Some((next, _)) => *next,
            None => duration_ms.unwrap_or(0).max(at + 1),
        };
        let _ = write!(vtt, "\n{} --> {}\n{SHEET_NAME}#xywh={x},{y},{w},{h}\n", timestamp(start), timestamp(end));
    }
    let sheet = jpeg(&sheet, sheet_w as u32, sheet_h as u32)?;
    Ok(Some(Previews { sheet, vtt }))
}

/// `hh:mm:ss.mmm`, as WebVTT writes times.
fn timestamp(ms: u64) -> String {
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// Encodes packed RGB as a JPEG through GStreamer's encoder.
fn jpeg(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, MediaError> {
    let internal = |what: &str| MediaError::Internal(format!("preview sheet: {what}"));
    let pipeline =
        gst::parse::launch("appsrc name=src ! videoconvert ! jpegenc quality=70 ! appsink name=sink sync=false")
            .map_err(|e| internal(&e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| internal("not a pipeline"))?;
    let running = super::pipeline::Running(pipeline);
    let src = running
        .0
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| internal("no source"))?;
    let sink = running
        .0
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| internal("no sink"))?;
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .build();
    src.set_caps(Some(&caps));
    // Rows of packed RGB are padded to 4 bytes in GStreamer's layout.
    let stride = (width as usize * 3).div_ceil(4) * 4;
    let mut padded = vec![0u8; stride * height as usize];
    for (row, line) in rgb.chunks_exact(width as usize * 3).enumerate() {
        padded[row * stride..row * stride + line.len()].copy_from_slice(line);
    }
    running.0.set_state(gst::State::Playing).map_err(|_| internal("would not start"))?;
    src.push_buffer(gst::Buffer::from_mut_slice(padded)).map_err(|e| internal(&format!("{e:?}")))?;
    src.end_of_stream().map_err(|e| internal(&format!("{e:?}")))?;
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10)).ok_or_else(|| internal("no JPEG came out"))?;
    let buffer = sample.buffer().ok_or_else(|| internal("empty JPEG"))?;
    let map = buffer.map_readable().map_err(|_| internal("unreadable JPEG"))?;
    Ok(map.as_slice().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_a_few_seconds_apart_and_bounded() {
        assert_eq!(interval_ms(None), 2000);
        assert_eq!(interval_ms(Some(10_000)), 2000);
        assert_eq!(interval_ms(Some(7_200_000)), 72_000);
        assert!(7_200_000 / interval_ms(Some(7_200_000)) <= MAX_FRAMES);
        assert_eq!(timestamp(3_723_004), "01:02:03.004");
    }
}
