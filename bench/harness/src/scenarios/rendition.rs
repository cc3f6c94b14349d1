//! Renditions: what an upload browsers cannot play costs. Tally's whole processing of an
//! HEVC 1080p30 file with audio (`tally process --out`: metadata, the flash analysis and the
//! H.264 + AAC rendition from one decode, thumbnails, scrub previews) against ffmpeg making
//! the same rendition (libx264 at the same preset and quality, AAC, the index first) plus its
//! thumbnail, and against GStreamer decoding and encoding alone, the floor that a shared
//! decode is measured by. Then the renditions' quality (SSIM against the source, computed by
//! ffmpeg for both) and size, and the remux of an H.264 file whose index is at the end against
//! `ffmpeg -c copy -movflags +faststart`.

use std::path::Path;

use anyhow::Context;
use tokio::process::Command;

use super::media::timed;
use crate::server::Paths;
use crate::table::Table;

const COLUMNS: [&str; 3] = ["tally process", "ffmpeg libx264 + thumbnail", "decode + encode alone"];
const REMUX: [&str; 2] = ["tally remux stage", "ffmpeg -c copy"];
/// Tally's rate ceiling for a constant-quality 1080p30 rendition, in kbit/s over a 2 s buffer
/// (`Frame::max_bitrate`: twice 0.08 bit per pixel), given to ffmpeg too so both encoders
/// work under the same cap.
const MAXRATE_KBIT: u32 = 9953;

pub async fn run(paths: &Paths, lengths: &[u32], repetitions: usize) -> anyhow::Result<Vec<Table>> {
    let work = tempfile::Builder::new().prefix("tally-bench-rendition").tempdir_in(paths.root.join("target"))?;
    let mut time = Table::compare("Renditions: wall time to make a web rendition of an HEVC 1080p30 file", &COLUMNS);
    let mut cpu = Table::compare(
        "Renditions: CPU time (user + system) to make a web rendition of an HEVC 1080p30 file",
        &COLUMNS,
    );
    let mut quality = Table::compare("Renditions: quality and size", &["tally", "ffmpeg"]);
    let mut remux = Table::compare("Renditions: remux of an H.264 1080p30 file with its index at the end", &REMUX);
    time.note = "`tally process --out` does what a job does for an HEVC upload: Discoverer metadata, one decode \
        teed to the flash analysis (160 px) and to x264enc (`veryfast`, CRF 23 under a 9.95 Mbit/s ceiling, a \
        keyframe every 2 s) with AAC from avenc_aac into an MP4 with the index first, thumbnails, scrub previews. ffmpeg: `ffmpeg -i in -c:v \
        libx264 -preset veryfast -crf 23 -g 60 -maxrate 9953k -bufsize 19906k -c:a aac -b:a 128k -movflags +faststart` \
        (the same rate ceiling as Tally's, 2 × 0.08 bit per pixel over 2 s) and today's `ffmpeg -ss 1 \
        ... -frames:v 1` thumbnail. Decode + encode alone: `gst-launch-1.0` with Tally's encoder settings and no \
        analysis. Files: `videotestsrc pattern=smpte horizontal-speed=6` at 1920×1080, 30 fps, through x265enc \
        (`superfast`, 8 Mbit/s), with a sine tone through avenc_aac; software decoding and encoding."
        .into();
    cpu.note = "Goals: CPU ≤ 1.0x ffmpeg's; the whole processing ≤ 1.15x the decode and encode alone (the \
        analysis riding on the rendition's decode)."
        .into();
    quality.note = "SSIM (`ffmpeg -i rendition -i source -lavfi ssim`, the All figure, 1 is identical) and the \
        rendition's size, for the last repetition of each length. Goal: equal or better SSIM, size within 10 %."
        .into();
    remux.note = "The H.264 file is `videotestsrc` through openh264enc at 6 Mbit/s, muxed by mp4mux without \
        faststart (the index at the end, as cameras and GStreamer write it). Tally's figure is the rendition \
        stage of `tally process` (its `stageSeconds`), the same samples moved behind a new index; ffmpeg's is \
        the whole `ffmpeg -c copy -movflags +faststart`."
        .into();
    for &seconds in lengths {
        let row = format!("{seconds} s");
        time.row(&row, "s", "");
        cpu.row(&row, "s", "≤ 1.0x ffmpeg; ≤ 1.15x decode + encode");
        let (ssim_row, size_row) = (format!("SSIM, {seconds} s"), format!("size, {seconds} s"));
        quality.row(&ssim_row, "", "≥ 1.00x");
        quality.row(&size_row, "MB", "≤ 1.10x");
        let source = work.path().join(format!("hevc-{seconds}.mp4"));
        make_hevc(&source, seconds).await?;
        for repetition in 0..repetitions {
            for offset in 0..COLUMNS.len() {
                let variant = COLUMNS[(offset + repetition) % COLUMNS.len()];
                eprintln!("[rendition {}/{repetitions}] {row}: {variant}", repetition + 1);
                let out = work.path().join(format!("out-{offset}"));
                let _ = std::fs::remove_dir_all(&out);
                std::fs::create_dir_all(&out)?;
                let (wall, used) = timed(command(paths, variant, &source, &out)).await?;
                time.add(&row, variant, wall.as_secs_f64());
                cpu.add(&row, variant, used.as_secs_f64());
                if repetition + 1 == repetitions && variant != COLUMNS[2] {
                    let made = out.join(if variant == COLUMNS[0] { "web.mp4" } else { "ffmpeg.mp4" });
                    let column = if variant == COLUMNS[0] { "tally" } else { "ffmpeg" };
                    quality.add(&ssim_row, column, ssim(&made, &source).await?);
                    quality.add(&size_row, column, std::fs::metadata(&made)?.len() as f64 / 1e6);
                }
            }
        }
    }
    let seconds = *lengths.last().unwrap_or(&10);
    let late = work.path().join("late.mp4");
    super::media::make_video_muxed(&late, 1920, 1080, seconds, false).await?;
    let row = format!("{seconds} s");
    remux.row(&row, "s", "≤ 1.2x");
    for repetition in 0..repetitions {
        eprintln!("[rendition remux {}/{repetitions}] {row}", repetition + 1);
        let out = work.path().join("remux");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)?;
        let output = Command::new(paths.tally())
            .arg("process")
            .arg(&late)
            .arg("--out")
            .arg(&out)
            .output()
            .await
            .context("running tally process")?;
        anyhow::ensure!(output.status.success(), "tally process failed: {}", String::from_utf8_lossy(&output.stderr));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).context("tally process's report")?;
        anyhow::ensure!(report["playback"]["kind"] == "remuxed", "not a remux: {}", report["playback"]);
        let stage = report["stageSeconds"]["rendition"].as_f64().context("no rendition stage time")?;
        remux.add(&row, REMUX[0], stage);
        let mut ffmpeg = Command::new("ffmpeg");
        ffmpeg.args(["-v", "error", "-y", "-i"]).arg(&late);
        ffmpeg.args(["-c", "copy", "-movflags", "+faststart"]).arg(out.join("ffmpeg.mp4"));
        let (wall, _) = timed(ffmpeg).await?;
        remux.add(&row, REMUX[1], wall.as_secs_f64());
    }
    Ok(vec![time, cpu, quality, remux])
}

fn command(paths: &Paths, variant: &str, source: &Path, out: &Path) -> Command {
    match variant {
        "tally process" => {
            let mut command = Command::new(paths.tally());
            command.arg("process").arg(source).arg("--out").arg(out);
            command
        }
        "ffmpeg libx264 + thumbnail" => {
            let script = r#"ffmpeg -v error -y -i "$1" -c:v libx264 -preset veryfast -crf 23 -g 60 \
                    -maxrate "$3"k -bufsize "$(($3 * 2))"k -c:a aac -b:a 128k -movflags +faststart "$2/ffmpeg.mp4" &&
                ffmpeg -v error -y -ss 1 -i "$1" -frames:v 1 -vf scale=320:-1 "$2/thumb.jpg""#;
            let mut command = Command::new("sh");
            command.args(["-c", script, "sh"]).arg(source).arg(out).arg(MAXRATE_KBIT.to_string());
            command
        }
        _ => {
            let pipeline = format!(
                "filesrc location={} ! decodebin name=d d. ! video/x-raw ! queue ! videoconvert ! video/x-raw,format=I420 \
                 ! x264enc speed-preset=veryfast pass=qual quantizer=23 key-int-max=60 bitrate={MAXRATE_KBIT} \
                 vbv-buf-capacity=2000 ! video/x-h264,profile=high \
                 ! h264parse ! queue ! mp4mux name=mux faststart=true faststart-file={} ! filesink location={} \
                 d. ! audio/x-raw ! queue max-size-time=20000000000 max-size-buffers=0 max-size-bytes=0 ! audioconvert \
                 ! audioresample ! avenc_aac ! aacparse ! mux.",
                source.display(),
                out.join("scratch").display(),
                out.join("alone.mp4").display()
            );
            let mut command = Command::new("gst-launch-1.0");
            command.arg("-q").args(pipeline.split_whitespace());
            command
        }
    }
}

/// SSIM of `made` against `source` (the All figure), by ffmpeg.
async fn ssim(made: &Path, source: &Path) -> anyhow::Result<f64> {
    let output = Command::new("ffmpeg")
        .args(["-v", "info", "-nostats", "-i"])
        .arg(made)
        .arg("-i")
        .arg(source)
        .args(["-lavfi", "[0:v][1:v]ssim", "-f", "null", "-"])
        .output()
        .await
        .context("running ffmpeg's ssim")?;
    let log = String::from_utf8_lossy(&output.stderr);
    let all = log
        .lines()
        .filter_map(|line| line.split_once(" All:"))
        .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .next_back();
    all.with_context(|| format!("no SSIM in ffmpeg's output: {log}"))
}

/// An HEVC 1080p30 MP4 with AAC audio, `seconds` long.
async fn make_hevc(file: &Path, seconds: u32) -> anyhow::Result<()> {
    let frames = seconds * 30;
    let buffers = (seconds * 48_000).div_ceil(1024);
    let pipeline = format!(
        "videotestsrc pattern=smpte horizontal-speed=6 num-buffers={frames} \
         ! video/x-raw,format=I420,width=1920,height=1080,framerate=30/1 ! x265enc speed-preset=superfast bitrate=8000 \
         ! h265parse ! mp4mux name=mux faststart=true ! filesink location={} \
         audiotestsrc num-buffers={buffers} samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 ! audioconvert \
         ! avenc_aac ! queue ! mux.",
        file.display()
    );
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .status()
        .await
        .context("running gst-launch-1.0")?;
    anyhow::ensure!(status.success(), "gst-launch-1.0 could not make {}", file.display());
    Ok(())
}
