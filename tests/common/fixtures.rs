//! Test videos made at test time with GStreamer: frames painted in Rust, pushed through
//! `appsrc`, converted to I420 before the encoder (so browsers and the Pi's decoder can play
//! them) and muxed to MP4.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Paints frame `index` (packed RGB, `width × height`).
pub type Painter = dyn Fn(u64, &mut [u8]) + Send;

pub struct Spec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: u64,
}

/// How a fixture is encoded: the video encoder (after I420 frames), the muxer (named `mux`
/// in the description), and the audio encoder of a tone as long as the video, if any.
pub struct Encoding<'a> {
    pub video: &'a str,
    pub mux: &'a str,
    pub audio: Option<&'a str>,
    /// The frames' format before the encoder.
    pub format: &'a str,
}

/// H.264 (Constrained Baseline, what openh264 makes) in an MP4 with its index first: what
/// browsers play as it is.
pub const WEB_MP4: Encoding<'static> = Encoding {
    video: "openh264enc bitrate=4000000 gop-size=30 complexity=high ! h264parse",
    mux: "mp4mux name=mux faststart=true",
    audio: None,
    format: "I420",
};

/// Writes a web-ready H.264 MP4 to `path`.
pub fn make_video(path: &Path, spec: &Spec, paint: &Painter) {
    make_encoded(path, spec, paint, &WEB_MP4);
}

/// Writes a video encoded and muxed as `encoding` says.
pub fn make_encoded(path: &Path, spec: &Spec, paint: &Painter, encoding: &Encoding<'_>) {
    gst::init().unwrap();
    let Encoding { video, mux, audio, format } = encoding;
    let mut description = format!(
        "appsrc name=src format=time ! videoconvert ! video/x-raw,format={format} ! {video} ! {mux} ! filesink name=out"
    );
    if let Some(audio) = audio {
        // 1024 samples per buffer at 48 kHz, as many buffers as cover the video.
        let buffers = (spec.frames * 48_000).div_ceil(spec.fps as u64 * 1024);
        description.push_str(&format!(
            " audiotestsrc num-buffers={buffers} samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 ! audioconvert ! {audio} ! queue ! mux."
        ));
    }
    let pipeline = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
    pipeline.by_name("out").unwrap().set_property("location", path.to_str().unwrap());
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", spec.width as i32)
        .field("height", spec.height as i32)
        .field("framerate", gst::Fraction::new(spec.fps as i32, 1))
        .build();
    src.set_caps(Some(&caps));
    pipeline.set_state(gst::State::Playing).unwrap();
    let frame_len = (spec.width * spec.height * 3) as usize;
    for index in 0..spec.frames {
        let mut data = vec![0u8; frame_len];
        paint(index, &mut data);
        let mut buffer = gst::Buffer::from_mut_slice(data);
        {
            let buffer = buffer.get_mut().unwrap();
            buffer.set_pts(gst::ClockTime::from_nseconds(index * 1_000_000_000 / spec.fps as u64));
            buffer.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / spec.fps as u64));
        }
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    for message in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match message.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("fixture encoding failed: {}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// Writes an H.264 MP4 whose track says "turn me 90° clockwise for display", as a phone held
/// upright writes it. (GStreamer 1.22's muxer does not write the rotation tag, so the track
/// header's transformation matrix is set afterwards, where players and demuxers read it.)
pub fn make_rotated_video(path: &Path, spec: &Spec, paint: &Painter) {
    make_video(path, spec, paint);
    rotate_90(path);
}

/// Sets the first track's matrix of an MP4 to a quarter turn clockwise.
pub fn rotate_90(path: &Path) {
    let mut mp4 = std::fs::read(path).unwrap();
    let tkhd = mp4.windows(4).position(|w| w == b"tkhd").expect("a track header") - 4;
    // Box header (8), version and flags (4), then times and ids: 20 bytes in version 0, 32 in
    // version 1; then 8 reserved, layer, group, volume and 2 reserved before the matrix.
    let times = if mp4[tkhd + 8] == 1 { 32 } else { 20 };
    let matrix = tkhd + 12 + times + 16;
    let rotate_90: [i32; 9] = [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x4000_0000];
    for (i, value) in rotate_90.iter().enumerate() {
        mp4[matrix + 4 * i..matrix + 4 * i + 4].copy_from_slice(&value.to_be_bytes());
    }
    std::fs::write(path, mp4).unwrap();
}

/// Fills the whole frame with one colour.
pub fn fill(data: &mut [u8], rgb: [u8; 3]) {
    for px in data.chunks_exact_mut(3) {
        px.copy_from_slice(&rgb);
    }
}

/// A frame alternating between `a` and `b` every `period` frames.
pub fn alternating(a: [u8; 3], b: [u8; 3], period: u64) -> Box<Painter> {
    Box::new(move |i, data| fill(data, if (i / period).is_multiple_of(2) { a } else { b }))
}
