//! Media: Tally's whole processing of a video (`tally process`: metadata, the flash analysis
//! over every frame, thumbnails) against one pure GStreamer decode of the same file, the floor
//! for any per-frame analysis, and against what a shell-out design runs (ffprobe for the
//! metadata, ffmpeg for a thumbnail, an ffmpeg decode pass for the analysis).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::server::Paths;
use crate::table::Table;

const COLUMNS: [&str; 3] = ["tally process", "one decode", "ffprobe + ffmpeg"];

pub async fn run(paths: &Paths, seconds: u32, repetitions: usize) -> anyhow::Result<Vec<Table>> {
    let work = tempfile::Builder::new().prefix("tally-bench-media").tempdir_in(paths.root.join("target"))?;
    let mut time = Table::compare("Media: wall time to process one H.264 file", &COLUMNS);
    let mut cpu = Table::compare("Media: CPU time (user + system) to process one H.264 file", &COLUMNS);
    time.note = format!(
        "`tally process` does what a job does: Discoverer metadata, one decode of every frame scaled to 160 px for \
         the flash analysis and the thumbnail choice, a seek and two JPEGs. One decode is `gst-launch-1.0 filesrc ! \
         decodebin ! fakesink`. The ffmpeg column runs `ffprobe`, an `ffmpeg` thumbnail and an `ffmpeg -f null` \
         decode pass. Files: {seconds} s of `videotestsrc pattern=smpte horizontal-speed=6` (detail in motion, \
         unlike a still test card) at 30 fps through openh264enc at 6 Mbit/s; software decoding."
    );
    let sizes = [("720p", 1280, 720), ("1080p", 1920, 1080)];
    for (label, width, height) in sizes {
        let row = format!("{label}, {seconds} s");
        time.row(&row, "s", "≤ 1.2x one decode");
        cpu.row(&row, "s", "");
        let file = work.path().join(format!("{label}.mp4"));
        make_video(&file, width, height, seconds).await?;
        for repetition in 0..repetitions {
            // Interleaved, each repetition starting with another command.
            for offset in 0..COLUMNS.len() {
                let variant = COLUMNS[(offset + repetition) % COLUMNS.len()];
                eprintln!("[media {}/{repetitions}] {row}: {variant}", repetition + 1);
                let (wall, used) = timed(command(paths, variant, &file, work.path())).await?;
                time.add(&row, variant, wall.as_secs_f64());
                cpu.add(&row, variant, used.as_secs_f64());
            }
        }
    }
    Ok(vec![time, cpu])
}

fn command(paths: &Paths, variant: &str, file: &Path, work: &Path) -> Command {
    match variant {
        "tally process" => {
            let mut command = Command::new(paths.tally());
            command.arg("process").arg(file).arg("--out").arg(work.join("thumbs"));
            command
        }
        "one decode" => {
            let mut command = Command::new("gst-launch-1.0");
            command.args(["-q", "filesrc"]).arg(format!("location={}", file.display()));
            command.args(["!", "decodebin", "!", "fakesink"]);
            command
        }
        _ => {
            let script = r#"ffprobe -v quiet -print_format json -show_format -show_streams "$1" > /dev/null &&
                ffmpeg -v quiet -y -ss 1 -i "$1" -frames:v 1 -vf scale=320:-1 "$2/thumb.jpg" &&
                ffmpeg -v quiet -i "$1" -f null -"#;
            let mut command = Command::new("sh");
            command.args(["-c", script, "sh"]).arg(file).arg(work);
            command
        }
    }
}

/// Runs `command` to completion; its wall time and the CPU time it and its children used.
pub(crate) async fn timed(mut command: Command) -> anyhow::Result<(Duration, Duration)> {
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let cpu_before = children_cpu();
    let started = Instant::now();
    let output = command.output().await.context("running a media command")?;
    let wall = started.elapsed();
    if !output.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok((wall, children_cpu().saturating_sub(cpu_before)))
}

/// CPU time of every child this process has waited for; the commands run one at a time, so
/// the difference across one is its own.
fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

pub(crate) async fn make_video(file: &Path, width: u32, height: u32, seconds: u32) -> anyhow::Result<()> {
    make_video_muxed(file, width, height, seconds, true).await
}

/// Like [`make_video`]; `faststart` false leaves the index at the end (mp4mux's default).
pub(crate) async fn make_video_muxed(
    file: &Path,
    width: u32,
    height: u32,
    seconds: u32,
    faststart: bool,
) -> anyhow::Result<()> {
    let caps = format!("video/x-raw,format=I420,width={width},height={height},framerate=30/1");
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "pattern=smpte", "horizontal-speed=6"])
        .arg(format!("num-buffers={}", seconds * 30))
        .args([
            "!",
            &caps,
            "!",
            "openh264enc",
            "bitrate=6000000",
            "!",
            "h264parse",
            "!",
            "mp4mux",
            if faststart { "faststart=true" } else { "faststart=false" },
            "!",
            "filesink",
        ])
        .arg(format!("location={}", file.display()))
        .status()
        .await
        .context("running gst-launch-1.0")?;
    anyhow::ensure!(status.success(), "gst-launch-1.0 could not make {}", file.display());
    Ok(())
}
