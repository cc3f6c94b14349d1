//! Web renditions on real GStreamer, with the videos phones and cameras really make, made
//! here at test time: HEVC is transcoded (decoded once, with the analysis), H.264 in the
//! wrong container or with its index at the end is remuxed sample for sample, and what
//! browsers already play is left alone.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use common::fixtures::{Encoding, Painter, Spec, WEB_MP4, fill, make_encoded, rotate_90};
use gstreamer as gst;
use gstreamer::prelude::*;
use tally::media::metadata::{AudioCodec, Container, VideoCodec};
use tally::media::rendition::{Frame, index_first};
use tally::media::{Acceleration, Media, MediaConfig, PlaybackKind, Processed, RenditionTarget, Stage};

const HEVC_MP4: Encoding<'static> = Encoding {
    video: "x265enc speed-preset=ultrafast key-int-max=30 ! h265parse",
    mux: "mp4mux name=mux faststart=true",
    audio: None,
    format: "I420",
};

/// Bright top half, dark bottom: which way up a picture is can be told from its frames.
fn halves(width: usize, height: usize) -> Box<Painter> {
    Box::new(move |_, data: &mut [u8]| {
        let (top, bottom) = data.split_at_mut(width * (height / 2) * 3);
        fill(top, [230, 230, 230]);
        fill(bottom, [20, 20, 20]);
    })
}

fn make(dir: &Path, name: &str, spec: &Spec, encoding: &Encoding<'_>) -> PathBuf {
    let path = dir.join(name);
    make_encoded(&path, spec, halves(spec.width as usize, spec.height as usize).as_ref(), encoding);
    path
}

fn spec(seconds: u64) -> Spec {
    Spec { width: 320, height: 240, fps: 30, frames: 30 * seconds }
}

/// Processes `path` with room for a rendition in `out`; returns the result and the
/// rendition's path.
fn process_with(config: MediaConfig, path: &Path, out: &Path, budget: u64) -> (Processed, PathBuf, Vec<Stage>) {
    let target = RenditionTarget { output: out.join("web.mp4"), scratch: out.join("web.mp4.mux"), budget, reserve: 0 };
    let media = Media::new(config).unwrap();
    let mut stages = Vec::new();
    let processed = media
        .process(path, Some(&target), &AtomicBool::new(false), &mut |stage, _| {
            if stages.last() != Some(&stage) {
                stages.push(stage);
            }
        })
        .unwrap_or_else(|e| panic!("{path:?}: {e:?}"));
    assert!(!target.scratch.exists(), "the muxer's scratch file is left behind");
    (processed, target.output, stages)
}

fn process(path: &Path, out: &Path) -> (Processed, PathBuf, Vec<Stage>) {
    process_with(MediaConfig::default(), path, out, u64::MAX / 4)
}

fn probe(path: &Path) -> tally::media::Metadata {
    Media::new(MediaConfig::default()).unwrap().probe(path).unwrap()
}

/// `path` read through `middle` into an appsink.
fn reading(path: &Path, middle: &str) -> (gst::Pipeline, gstreamer_app::AppSink) {
    gst::init().unwrap();
    let description = format!("filesrc name=src ! {middle} ! appsink name=sink sync=false");
    let pipeline = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
    pipeline.by_name("src").unwrap().set_property("location", path.to_str().unwrap());
    let sink = pipeline.by_name("sink").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    (pipeline, sink)
}

/// The H.264 elementary stream of a file, as one hash per access unit (through the same
/// parser for every container, so only the samples themselves are compared).
fn h264_samples(path: &Path) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    let (pipeline, sink) =
        reading(path, "parsebin ! video/x-h264 ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au");
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut hashes = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let map = sample.buffer().unwrap().map_readable().unwrap();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        map.as_slice().hash(&mut hasher);
        hashes.push(hasher.finish());
    }
    assert!(sink.is_eos(), "{path:?} did not parse to its end");
    pipeline.set_state(gst::State::Null).unwrap();
    hashes
}

/// Mean luma of the left and right halves of the frame shown at `at_ms`, upright.
fn halves_at(path: &Path, at_ms: u64) -> (u32, u32, f64, f64) {
    let (pipeline, sink) =
        reading(path, "decodebin ! videoflip video-direction=auto ! videoconvert ! video/x-raw,format=GRAY8");
    pipeline.set_state(gst::State::Paused).unwrap();
    let _ = pipeline.state(gst::ClockTime::from_seconds(10));
    pipeline
        .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, gst::ClockTime::from_mseconds(at_ms))
        .unwrap();
    let _ = pipeline.state(gst::ClockTime::from_seconds(10));
    let sample = sink.try_pull_preroll(gst::ClockTime::from_seconds(10)).expect("a frame");
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    let gray = map.as_slice();
    let (width, height, stride) = (info.width() as usize, info.height() as usize, info.stride()[0] as usize);
    let mean = |columns: std::ops::Range<usize>| {
        let n = (columns.len() * height) as f64;
        (0..height).flat_map(|y| columns.clone().map(move |x| gray[y * stride + x] as f64)).sum::<f64>() / n
    };
    let result = (info.width(), info.height(), mean(0..width / 2), mean(width / 2..width));
    drop(map);
    pipeline.set_state(gst::State::Null).unwrap();
    result
}

#[test]
fn hevc_is_transcoded_to_h264_with_its_index_first_audio_and_rotation_kept() {
    let dir = tempfile::tempdir().unwrap();
    let with_audio = Encoding { audio: Some("avenc_aac"), ..HEVC_MP4 };
    let path = make(dir.path(), "phone.mp4", &spec(2), &with_audio);
    // Held upright: coded landscape, shown portrait with the bright half on the right.
    rotate_90(&path);
    let source = probe(&path);
    assert_eq!((source.format.video, source.rotation), (VideoCodec::H265, 90));
    let (processed, rendition, stages) = process(&path, dir.path());
    let playback = processed.playback.as_ref().unwrap();
    assert_eq!(playback.kind, PlaybackKind::Transcoded, "{playback:?}");
    assert!(playback.reason.contains("HEVC"), "{playback:?}");
    // One decode: the transcode is the analysis pass, so there is no sensitivity stage of its own.
    assert_eq!(stages, [Stage::Metadata, Stage::Rendition, Stage::Thumbnail], "{stages:?}");
    assert_eq!(processed.metadata.encoder.as_deref(), Some("x264enc"));
    assert_eq!(processed.report.metrics.frames, 60, "the analysis saw every frame");

    let web = probe(&rendition);
    assert_eq!(web.format.video, VideoCodec::H264);
    assert!(matches!(web.video_profile.as_deref(), Some("high" | "main")), "{web:?}");
    assert_eq!((web.format.chroma_format.as_deref(), web.format.bit_depth), (Some("4:2:0"), Some(8)));
    assert_eq!(web.format.audio, Some(AudioCodec::Aac), "the audio is kept");
    assert_eq!(web.format.container, Container::Mp4);
    assert_eq!(index_first(&rendition).unwrap(), Some(true), "the index comes first");
    let (a, b) = (source.duration_ms.unwrap() as i64, web.duration_ms.unwrap() as i64);
    assert!((a - b).abs() <= 34, "durations {a} ms and {b} ms differ by more than a frame");
    assert_eq!(web.frame_rate.map(|f| f.round()), Some(30.0));
    // Turned upright in the pixels themselves: portrait, bright half on the right.
    assert_eq!((web.width, web.height, web.rotation), (240, 320, 0));
    let (width, height, left, right) = halves_at(&rendition, 1000);
    assert_eq!((width, height), (240, 320));
    assert!(right > 180.0 && left < 60.0, "upright: left {left:.0}, right {right:.0}");
}

#[test]
fn a_silent_video_stays_silent_and_a_large_one_is_capped_with_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), "wide.mp4", &Spec { width: 640, height: 360, fps: 25, frames: 25 }, &HEVC_MP4);
    let config = MediaConfig { rendition_lines: 180, ..MediaConfig::default() };
    let (processed, rendition, _) = process_with(config, &path, dir.path(), u64::MAX / 4);
    assert_eq!(processed.playback.unwrap().kind, PlaybackKind::Transcoded);
    let web = probe(&rendition);
    assert_eq!(web.format.audio, None, "no audio appears from nowhere");
    assert_eq!((web.width, web.height), (320, 180), "capped at 180p, the aspect kept");
    assert_eq!(web.frame_rate.map(|f| f.round()), Some(25.0), "the frame rate kept");
}

#[test]
fn h264_with_its_index_last_or_in_mov_or_matroska_is_remuxed_sample_for_sample() {
    let dir = tempfile::tempdir().unwrap();
    let video = "openh264enc bitrate=2000000 gop-size=30 ! h264parse";
    let cases = [
        (
            "late.mp4",
            Encoding { video, mux: "mp4mux name=mux faststart=false", audio: Some("avenc_aac"), format: "I420" },
        ),
        ("camera.mov", Encoding { video, mux: "qtmux name=mux", audio: None, format: "I420" }),
        ("screen.mkv", Encoding { video, mux: "matroskamux name=mux", audio: Some("vorbisenc"), format: "I420" }),
        // B-frames: samples out of presentation order, which Matroska keeps without decode times.
        (
            "b-frames.mkv",
            Encoding {
                video: "x264enc bframes=2 ! h264parse",
                mux: "matroskamux name=mux",
                audio: None,
                format: "I420",
            },
        ),
    ];
    for (name, encoding) in cases {
        let path = make(dir.path(), name, &spec(2), &encoding);
        let out = dir.path().join(format!("{name}.out"));
        std::fs::create_dir_all(&out).unwrap();
        let (processed, rendition, stages) = process(&path, &out);
        let playback = processed.playback.as_ref().unwrap();
        assert_eq!(playback.kind, PlaybackKind::Remuxed, "{name}: {playback:?}");
        assert_eq!(stages.last(), Some(&Stage::Rendition), "{name}: the remux follows the analysis");
        assert_eq!(processed.metadata.encoder, None, "{name}: nothing was encoded");
        assert_eq!(index_first(&rendition).unwrap(), Some(true), "{name}: index first");
        let (original, remuxed) = (h264_samples(&path), h264_samples(&rendition));
        assert_eq!(original.len(), 60, "{name}");
        assert_eq!(original, remuxed, "{name}: the video samples are the very same");
        let web = probe(&rendition);
        let expected_audio = encoding.audio.map(|_| AudioCodec::Aac);
        assert_eq!(web.format.audio, expected_audio, "{name}: audio copied or encoded to AAC");
    }
}

#[test]
fn what_browsers_play_already_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let webm = Encoding {
        video: "vp9enc deadline=1 cpu-used=8 ! vp9parse",
        mux: "webmmux name=mux",
        audio: Some("opusenc"),
        format: "I420",
    };
    for (name, encoding) in [("ready.mp4", WEB_MP4), ("ready.webm", webm)] {
        let path = make(dir.path(), name, &spec(1), &encoding);
        let out = dir.path().join(format!("{name}.out"));
        std::fs::create_dir_all(&out).unwrap();
        let (processed, rendition, stages) = process(&path, &out);
        let playback = processed.playback.unwrap();
        assert_eq!(playback.kind, PlaybackKind::Original, "{name}: {playback:?}");
        assert_eq!(playback.problem, None);
        assert!(!stages.contains(&Stage::Rendition), "{name}: {stages:?}");
        assert!(!rendition.exists(), "{name}: no new file");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "{name}: nothing at all written");
    }
}

#[test]
fn no_room_for_a_rendition_leaves_the_original_with_the_reason_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), "phone.mp4", &spec(2), &HEVC_MP4);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (processed, rendition, _) = process_with(MediaConfig::default(), &path, &out, 10_000);
    let playback = processed.playback.unwrap();
    assert_eq!(playback.kind, PlaybackKind::Original);
    let problem = playback.problem.expect("the reason is recorded");
    assert!(problem.contains("not enough free space"), "{problem}");
    assert!(!rendition.exists());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing half-written");
    // The analysis still ran in full.
    assert_eq!(processed.report.metrics.frames, 60);
}

#[test]
fn a_rendition_that_outgrows_its_room_while_it_is_written_is_stopped_and_the_original_plays() {
    // Noise is an encoder's worst case: it spends the whole rate ceiling, several times what
    // the up-front estimate allows, so room that passes the check runs out while the file is
    // written, and the watch on the written size is what stops it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confetti.mp4");
    let noise: Box<Painter> = Box::new(|i, data: &mut [u8]| {
        let mut state = (i as u32).wrapping_mul(2_654_435_761) | 1;
        for byte in data {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *byte = state as u8;
        }
    });
    let encoding = Encoding { video: "x265enc speed-preset=ultrafast bitrate=20000 ! h265parse", ..HEVC_MP4 };
    make_encoded(&path, &spec(8), noise.as_ref(), &encoding);
    let metadata = probe(&path);
    let estimate = Frame::for_video(&metadata, 1080).estimate_bytes(metadata.frame_rate, metadata.duration_ms);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // The check wants twice the estimate (the scratch copy and the file): a little more passes.
    let (processed, rendition, _) = process_with(MediaConfig::default(), &path, &out, estimate * 5 / 2);
    let playback = processed.playback.unwrap();
    assert_eq!(playback.kind, PlaybackKind::Original);
    let problem = playback.problem.expect("the reason is recorded");
    assert!(problem.contains("grew past the free space"), "{problem}");
    assert!(!rendition.exists());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing half-written");
    assert_eq!(processed.report.metrics.frames, 240, "the analysis still ran in full");
}

#[test]
fn the_encoder_that_ran_is_recorded_and_selection_can_be_steered() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), "phone.mp4", &spec(1), &HEVC_MP4);
    let encoder_of = |config: MediaConfig, out: &str| {
        let out = dir.path().join(out);
        std::fs::create_dir_all(&out).unwrap();
        let (processed, rendition, _) = process_with(config, &path, &out, u64::MAX / 4);
        assert_eq!(probe(&rendition).format.video, VideoCodec::H264);
        processed.metadata.encoder
    };
    gst::init().unwrap();
    let registry = gst::Registry::get();
    let x264 = registry.lookup_feature("x264enc").expect("x264enc is installed");
    let openh264 = registry.lookup_feature("openh264enc").expect("openh264enc is installed");
    let (x264_rank, openh264_rank) = (x264.rank(), openh264.rank());
    assert!(x264_rank > openh264_rank, "x264enc outranks openh264enc as installed");
    assert_eq!(encoder_of(MediaConfig::default(), "a").as_deref(), Some("x264enc"));
    // Swapped ranks (as GST_PLUGIN_FEATURE_RANK would): the other one runs.
    x264.set_rank(openh264_rank);
    openh264.set_rank(x264_rank);
    let swapped = encoder_of(MediaConfig::default(), "b");
    x264.set_rank(x264_rank);
    openh264.set_rank(openh264_rank);
    assert_eq!(swapped.as_deref(), Some("openh264enc"));
    // openh264enc stands in for the VideoCore encoder (which registers only on the board):
    // software mode never picks it, whatever its rank; auto mode prefers it.
    let pretend =
        |encoder| MediaConfig { encoder, hardware_encoders: vec!["openh264".into()], ..MediaConfig::default() };
    assert_eq!(encoder_of(pretend(Acceleration::Software), "c").as_deref(), Some("x264enc"));
    assert_eq!(encoder_of(pretend(Acceleration::Auto), "d").as_deref(), Some("openh264enc"));
}

#[test]
fn a_hardware_encoder_that_fails_gives_way_to_software() {
    // An encoder that cannot work here (libav's OpenMAX H.264 encoder has no OpenMAX to talk
    // to) is named as the hardware one and ranked first: auto mode tries it, falls back to
    // software for this video, and stays on software.
    gst::init().unwrap();
    let Some(omx) = gst::Registry::get().lookup_feature("avenc_h264_omx") else {
        panic!("avenc_h264_omx (gstreamer1.0-libav) stands in for a failing hardware encoder");
    };
    let rank = omx.rank();
    omx.set_rank(gst::Rank::PRIMARY + 100);
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), "phone.mp4", &spec(1), &HEVC_MP4);
    let config = MediaConfig { hardware_encoders: vec!["avenc_h264_omx".into()], ..MediaConfig::default() };
    let target = RenditionTarget {
        output: dir.path().join("web.mp4"),
        scratch: dir.path().join("web.mux"),
        budget: u64::MAX / 4,
        reserve: 0,
    };
    let media = Media::new(config).unwrap();
    assert_eq!(media.encoders().first().map(String::as_str), Some("avenc_h264_omx"));
    let processed = media.process(&path, Some(&target), &AtomicBool::new(false), &mut |_, _| {});
    omx.set_rank(rank);
    let processed = processed.unwrap();
    assert_eq!(processed.playback.unwrap().kind, PlaybackKind::Transcoded);
    assert_eq!(processed.metadata.encoder.as_deref(), Some("x264enc"));
    assert!(media.encoder_demoted(), "software from now on");
    assert!(!media.encoders().iter().any(|e| e == "avenc_h264_omx"));
    assert_eq!(probe(&target.output).format.video, VideoCodec::H264);
}

#[test]
fn ten_bit_and_four_two_two_h264_and_mpeg4_part2_are_transcoded() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "ten-bit.mp4",
            Encoding {
                video: "x264enc ! h264parse",
                mux: "mp4mux name=mux faststart=true",
                audio: None,
                format: "I420_10LE",
            },
            "10-bit",
        ),
        (
            "four-two-two.mp4",
            Encoding {
                video: "x264enc ! h264parse",
                mux: "mp4mux name=mux faststart=true",
                audio: None,
                format: "Y42B",
            },
            "4:2:2",
        ),
        (
            "divx.avi",
            Encoding { video: "avenc_mpeg4", mux: "avimux name=mux", audio: None, format: "I420" },
            "MPEG-4 Part 2",
        ),
    ];
    for (name, encoding, why) in cases {
        let path = make(dir.path(), name, &spec(1), &encoding);
        let out = dir.path().join(format!("{name}.out"));
        std::fs::create_dir_all(&out).unwrap();
        let (processed, rendition, _) = process(&path, &out);
        let playback = processed.playback.unwrap();
        assert_eq!(playback.kind, PlaybackKind::Transcoded, "{name}: {playback:?}");
        assert!(playback.reason.contains(why), "{name}: {playback:?}");
        let web = probe(&rendition);
        assert_eq!(
            (web.format.video, web.format.bit_depth, web.format.chroma_format.as_deref()),
            (VideoCodec::H264, Some(8), Some("4:2:0")),
            "{name}"
        );
        assert_eq!(index_first(&rendition).unwrap(), Some(true), "{name}");
    }
}

#[test]
fn a_remux_that_cannot_be_made_is_transcoded_instead() {
    // AVI keeps no decode times, so H.264 with B-frames cannot go into an MP4 as it is: the
    // remux fails and the video is transcoded rather than left unplayable.
    let dir = tempfile::tempdir().unwrap();
    let encoding =
        Encoding { video: "x264enc bframes=2 ! h264parse", mux: "avimux name=mux", audio: None, format: "I420" };
    let path = make(dir.path(), "b-frames.avi", &spec(2), &encoding);
    let (processed, rendition, stages) = process(&path, dir.path());
    let playback = processed.playback.unwrap();
    assert_eq!(playback.kind, PlaybackKind::Transcoded, "{playback:?}");
    assert!(playback.reason.contains("the remux failed"), "{playback:?}");
    assert_eq!(stages.last(), Some(&Stage::Rendition));
    assert_eq!(processed.metadata.encoder.as_deref(), Some("x264enc"));
    let web = probe(&rendition);
    assert_eq!((web.format.video, web.format.container), (VideoCodec::H264, Container::Mp4));
    assert_eq!(index_first(&rendition).unwrap(), Some(true));
    assert!(web.duration_ms.unwrap().abs_diff(2000) <= 34, "{web:?}");
}

#[test]
fn a_1080p_video_is_transcoded_from_the_same_decode_without_stalling() {
    // Full-size frames fill the tee's queues in a few frames, long before an encoder's first
    // output: the size phones record at, not just the small clips above.
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), "full-hd.mp4", &Spec { width: 1920, height: 1080, fps: 30, frames: 30 }, &HEVC_MP4);
    let (processed, rendition, _) = process(&path, dir.path());
    assert_eq!(processed.playback.unwrap().kind, PlaybackKind::Transcoded);
    let web = probe(&rendition);
    assert_eq!((web.format.video, web.width, web.height), (VideoCodec::H264, 1920, 1080));
    assert_eq!(processed.report.metrics.frames, 30);
}
