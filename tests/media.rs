//! The media pipeline on real GStreamer with videos generated at test time: metadata,
//! thumbnails, the flash analysis, and clear failures for files that are not videos.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use common::fixtures::{Painter, Spec, alternating, fill, make_rotated_video, make_video};
use tally::media::sensitivity::{FlashKind, Verdict};
use tally::media::{Media, MediaConfig, MediaError, Processed, Stage};

const BLACK: [u8; 3] = [16, 16, 16];
const WHITE: [u8; 3] = [235, 235, 235];

fn video(dir: &Path, name: &str, fps: u32, seconds: u64, paint: &Painter) -> PathBuf {
    let path = dir.join(name);
    make_video(&path, &Spec { width: 320, height: 180, fps, frames: fps as u64 * seconds }, paint);
    path
}

fn process(path: &Path) -> Result<Processed, (Stage, MediaError)> {
    let media = Media::new(MediaConfig::default()).unwrap();
    media.process(path, None, &AtomicBool::new(false), &mut |_, _| {})
}

#[test]
fn flashing_videos_are_flagged_and_calm_ones_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    // (name, fps, painter, expected verdict, expected flash kind when flagged)
    type Case = (&'static str, u32, Box<Painter>, Verdict, Option<FlashKind>);
    let cases: Vec<Case> = vec![
        ("10hz.mp4", 30, alternating(BLACK, WHITE, 1), Verdict::Flagged, Some(FlashKind::Luminance)),
        ("5hz.mp4", 30, alternating(BLACK, WHITE, 3), Verdict::Flagged, Some(FlashKind::Luminance)),
        ("red10hz.mp4", 30, alternating([230, 0, 0], [127, 127, 127], 1), Verdict::Flagged, Some(FlashKind::Red)),
        ("1hz.mp4", 30, alternating(BLACK, WHITE, 15), Verdict::Safe, None),
        ("low-contrast.mp4", 30, alternating([100, 100, 100], [118, 118, 118], 1), Verdict::Safe, None),
        (
            "small-box.mp4",
            30,
            Box::new(|i, data: &mut [u8]| {
                fill(data, BLACK);
                if i % 2 == 1 {
                    // 80×42 of 320×180: about 6 % of the frame.
                    for y in 0..42 {
                        for x in 0..80 {
                            let p = (y * 320 + x) * 3;
                            data[p..p + 3].copy_from_slice(&WHITE);
                        }
                    }
                }
            }),
            Verdict::Safe,
            None,
        ),
        (
            "ball.mp4",
            30,
            Box::new(|i, data: &mut [u8]| {
                fill(data, [30, 60, 120]);
                let (cx, cy) = ((i * 7 % 300) as i64 + 10, 90i64);
                for y in 0..180i64 {
                    for x in 0..320i64 {
                        if (x - cx).pow(2) + (y - cy).pow(2) < 400 {
                            let p = ((y * 320 + x) * 3) as usize;
                            data[p..p + 3].copy_from_slice(&[240, 200, 40]);
                        }
                    }
                }
            }),
            Verdict::Safe,
            None,
        ),
    ];
    for (name, fps, paint, verdict, kind) in cases {
        let path = video(dir.path(), name, fps, 3, paint.as_ref());
        let processed = process(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let report = &processed.report;
        assert_eq!(report.verdict, verdict, "{name}: {report:?}");
        if let Some(kind) = kind {
            assert!(report.reasons.iter().any(|r| r.kind == kind), "{name}: {report:?}");
        }
        assert_eq!(report.algorithm, "pse-flash-v1");
        assert!(report.metrics.frames >= 85, "{name}: every frame analysed: {}", report.metrics.frames);
    }
}

#[test]
fn three_flashes_a_second_is_safe_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = video(dir.path(), "3hz.mp4", 30, 4, alternating(BLACK, WHITE, 5).as_ref());
    let report = process(&path).unwrap().report;
    assert_eq!(report.verdict, Verdict::Safe, "{report:?}");
    assert!(!report.warnings.is_empty(), "{report:?}");
}

#[test]
fn metadata_and_thumbnails_of_a_real_video() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    // Two black seconds, then a bright gradient: the thumbnail must not be black.
    let paint: Box<Painter> = Box::new(|i, data: &mut [u8]| {
        if i < 60 {
            fill(data, [0, 0, 0]);
        } else {
            for (p, px) in data.chunks_exact_mut(3).enumerate() {
                let x = (p % 640) as u8 / 3;
                px.copy_from_slice(&[x, 200, 255 - x]);
            }
        }
    });
    make_video(&path, &Spec { width: 640, height: 360, fps: 30, frames: 120 }, paint.as_ref());
    let mut stages = Vec::new();
    let media = Media::new(MediaConfig::default()).unwrap();
    let processed = media
        .process(&path, None, &AtomicBool::new(false), &mut |stage, percent| stages.push((stage, percent)))
        .unwrap();
    let m = &processed.metadata;
    assert_eq!((m.width, m.height, m.rotation), (640, 360, 0));
    assert!(m.video_codec.contains("H.264"), "{m:?}");
    assert!(m.duration_ms.is_some_and(|d| (3900..=4100).contains(&d)), "{m:?}");
    assert!(m.frame_rate.is_some_and(|f| (f - 30.0).abs() < 0.1), "{m:?}");
    assert!(m.decoder.is_some(), "the decoder used is recorded");
    let [card, poster] = &processed.thumbnails;
    for (jpeg, width) in [(card, 320u32), (poster, 640)] {
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");
        let picture = decode_jpeg(jpeg);
        assert_eq!((picture.width, picture.height), (width, width * 9 / 16));
        assert!(picture.mean > 60.0, "not the black opening: mean {}", picture.mean);
    }
    let order: Vec<Stage> = stages.iter().map(|(s, _)| *s).fold(Vec::new(), |mut v, s| {
        if v.last() != Some(&s) {
            v.push(s);
        }
        v
    });
    assert_eq!(order, [Stage::Metadata, Stage::Sensitivity, Stage::Thumbnail]);
}

/// Width, height and mean sample value of a JPEG, decoded with GStreamer.
/// What a decoded JPEG looks like, in gray levels 0..255.
struct Picture {
    width: u32,
    height: u32,
    mean: f64,
    left_mean: f64,
    right_mean: f64,
}

fn decode_jpeg(jpeg: &[u8]) -> Picture {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), jpeg).unwrap();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! jpegdec ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=sink",
        file.path().display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("a decodable JPEG");
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    let gray = map.as_slice();
    let (width, height, stride) = (info.width() as usize, info.height() as usize, info.stride()[0] as usize);
    let mean_of = |columns: std::ops::Range<usize>| {
        let count = (columns.len() * height) as f64;
        let sum: f64 = (0..height).flat_map(|y| columns.clone().map(move |x| gray[y * stride + x] as f64)).sum();
        sum / count
    };
    let picture = Picture {
        width: info.width(),
        height: info.height(),
        mean: mean_of(0..width),
        left_mean: mean_of(0..width / 2),
        right_mean: mean_of(width / 2..width),
    };
    pipeline.set_state(gst::State::Null).unwrap();
    picture
}

#[test]
fn a_phone_video_is_analysed_and_pictured_upright() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portrait.mp4");
    // Coded landscape with a bright top half; the tag turns it 90° clockwise for display, so
    // upright the picture is portrait with its bright half on the right.
    let paint: Box<Painter> = Box::new(|_, data: &mut [u8]| {
        let (top, bottom) = data.split_at_mut(640 * 180 * 3);
        fill(top, [230, 230, 230]);
        fill(bottom, [20, 20, 20]);
    });
    let spec = Spec { width: 640, height: 360, fps: 30, frames: 60 };
    make_rotated_video(&path, &spec, paint.as_ref());
    let processed = process(&path).unwrap();
    let m = &processed.metadata;
    assert_eq!((m.width, m.height, m.rotation), (640, 360, 90));
    assert_eq!(m.display_size(), (360, 640));
    assert_eq!(processed.report.metrics.frames, 60, "{:?}", processed.report);
    // The poster is never wider than the picture shown upright.
    for (jpeg, width) in processed.thumbnails.iter().zip([320u32, 360]) {
        let picture = decode_jpeg(jpeg);
        assert_eq!(picture.width, width);
        let expected = width * 16 / 9;
        assert!(picture.height.abs_diff(expected) <= 2, "portrait: {}x{}", picture.width, picture.height);
        assert!(
            picture.right_mean > 180.0 && picture.left_mean < 60.0,
            "upright: left {:.0}, right {:.0}",
            picture.left_mean,
            picture.right_mean
        );
    }
}

#[test]
fn files_that_are_not_videos_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("text.mp4");
    std::fs::write(&text, "this is not a video, just text with an .mp4 name\n".repeat(100)).unwrap();
    let audio = dir.path().join("audio.mka");
    let status = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "audiotestsrc",
            "num-buffers=50",
            "!",
            "audioconvert",
            "!",
            "vorbisenc",
            "!",
            "matroskamux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", audio.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let good = video(dir.path(), "good.mp4", 30, 2, alternating(BLACK, WHITE, 15).as_ref());
    let truncated = dir.path().join("truncated.mp4");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();

    // Noise with one H.263 picture start code in it: GStreamer decodes a frame out of it.
    let noise = dir.path().join("noise.mp4");
    let mut bytes = vec![0u8; 256 << 10];
    rand::Rng::fill(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7), &mut bytes[..]);
    bytes[4096..4102].copy_from_slice(&[0x00, 0x00, 0x80, 0x02, 0x0c, 0x00]);
    std::fs::write(&noise, &bytes).unwrap();
    let raw = |name: &str, encoder: &[&str]| {
        let path = dir.path().join(name);
        let status = std::process::Command::new("gst-launch-1.0")
            .args(["-q", "videotestsrc", "num-buffers=30", "!", "video/x-raw,width=352,height=288", "!"])
            .args(encoder)
            .args(["!", "filesink"])
            .arg(format!("location={}", path.display()))
            .status()
            .unwrap();
        assert!(status.success(), "{name}");
        path
    };
    // A real raw H.263 stream is no surer than noise: it needs a container too.
    let h263 = raw("raw.h263", &["avenc_h263"]);
    for (path, expected) in [
        (&empty, "empty"),
        (&text, "not a video"),
        (&audio, "no video stream"),
        (&noise, "no container"),
        (&h263, "no container"),
    ] {
        let (stage, error) = process(path).err().unwrap_or_else(|| panic!("{path:?} must fail"));
        assert_eq!(stage, Stage::Metadata, "{path:?}");
        assert!(error.to_string().contains(expected), "{path:?}: {error}");
        assert!(matches!(error, MediaError::NotVideo(_)), "{error:?}");
    }
    // Raw H.264 and H.265, whose parameter sets make GStreamer sure, are videos.
    for (name, encoder) in [("raw.h264", "x264enc"), ("raw.h265", "x265enc")] {
        let path = raw(name, &[encoder, "!", &format!("video/x-{},stream-format=byte-stream", &name[4..])]);
        let processed = process(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!((processed.metadata.width, processed.metadata.container), (352, None), "{name}");
    }
    // A truncated MP4 (its index at the end is gone) fails clearly too, without hanging.
    let result = process(&truncated);
    assert!(result.is_err(), "a truncated file cannot be a good result");
}

#[test]
fn the_decoder_that_ran_is_recorded_and_selection_can_be_steered() {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use tally::media::Acceleration;
    let dir = tempfile::tempdir().unwrap();
    let path = video(dir.path(), "pick.mp4", 30, 1, alternating(BLACK, WHITE, 15).as_ref());
    let run = |config: MediaConfig| {
        Media::new(config)
            .unwrap()
            .process(&path, None, &AtomicBool::new(false), &mut |_, _| {})
            .unwrap()
            .metadata
            .decoder
    };
    let registry = gst::Registry::get();
    let openh264 = registry.lookup_feature("openh264dec").expect("openh264dec is installed");
    let avdec = registry.lookup_feature("avdec_h264").expect("avdec_h264 is installed");
    let (openh264_rank, avdec_rank) = (openh264.rank(), avdec.rank());
    let (first, second) =
        if avdec_rank >= openh264_rank { ("avdec_h264", "openh264dec") } else { ("openh264dec", "avdec_h264") };
    assert_eq!(run(MediaConfig::default()).as_deref(), Some(first), "the higher rank runs, and is recorded");
    // Swap the two software decoders' ranks (as GST_PLUGIN_FEATURE_RANK would): the other runs.
    openh264.set_rank(avdec_rank);
    avdec.set_rank(openh264_rank);
    let swapped = run(MediaConfig::default());
    openh264.set_rank(openh264_rank);
    avdec.set_rank(avdec_rank);
    assert_eq!(swapped.as_deref(), Some(second));
    // Software mode takes the "hardware" decoders out of selection; avdec_ stands in for V4L2
    // (which only registers on the board) so the effect is observable here.
    let software = MediaConfig {
        decoder: Acceleration::Software,
        hardware_decoders: vec!["avdec_".into()],
        ..MediaConfig::default()
    };
    let chosen = run(software);
    avdec.set_rank(avdec_rank);
    assert_eq!(chosen.as_deref(), Some("openh264dec"));
}

#[test]
fn the_thumbnail_is_the_frame_that_was_chosen_not_its_neighbour() {
    // Every other frame is black; the chosen (bright) frame must be the one encoded, which a
    // seek rounded to whole milliseconds would miss at 30 fps.
    let dir = tempfile::tempdir().unwrap();
    let path = video(dir.path(), "strobe.mp4", 30, 1, alternating(BLACK, WHITE, 1).as_ref());
    let processed = process(&path).unwrap();
    for jpeg in &processed.thumbnails {
        let mean = decode_jpeg(jpeg).mean;
        assert!(mean > 150.0, "a black neighbour was encoded: mean {mean}");
    }
}
