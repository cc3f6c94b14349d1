//! Media work in a child process: a GStreamer plugin that segfaults, aborts or deadlocks
//! takes one job with it, not the service.
//!
//! The service starts `tally media-worker` for each job. The child runs [`Media::process`]
//! and speaks JSON lines on its stdout: progress while it works (at least once a second while
//! frames flow), then one `done` or `failed`. Thumbnails and the scrub previews go to files
//! the parent names and reads back; the web rendition to the path the parent names. The
//! parent kills the child when the job is cancelled, or when it has said nothing for longer
//! than its own watchdog allows (a plugin stuck where no watchdog can reach it). A child that
//! dies without its last line fails the job with how it died, except while it makes the
//! rendition: an encoder or muxer that crashes (or a worker the kernel kills for memory)
//! would do so again on every retry, so the parent runs the job once more without the
//! rendition, and the original plays.
//!
//! The child holds the read end of a pipe whose write end only the parent has: when the
//! parent dies (SIGKILL, a power-cut test), the child reads end-of-file and exits at once
//! rather than finishing a job nobody waits for and writing into a data dir that a new
//! service is already tidying.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{
    Acceleration, Media, MediaConfig, MediaError, Metadata, Playback, PlaybackKind, Previews, Processed,
    RenditionTarget, Report, Stage,
};

/// The subcommand of `tally` that runs a child.
pub const SUBCOMMAND: &str = "media-worker";
/// Time the child gets beyond its own watchdog to report a stall before it is killed.
const GRACE: Duration = Duration::from_secs(5);
/// The child reports progress at least this often while frames flow.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// One line of the child's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Progress {
        stage: Stage,
        percent: u8,
    },
    Done {
        metadata: Box<Metadata>,
        report: Box<Report>,
        playback: Option<Box<Playback>>,
        /// The previews' sheet and cues were written.
        #[serde(default)]
        previews: bool,
        #[serde(flatten)]
        demoted: Demoted,
    },
    Failed {
        stage: Stage,
        error: MediaError,
        #[serde(flatten)]
        demoted: Demoted,
    },
}

/// Which hardware failed in the child, so later children do not try it again.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Demoted {
    #[serde(rename = "demoted")]
    decoders: bool,
    #[serde(default)]
    encoders: bool,
}

/// What the parent tells a child (as `--settings` JSON).
#[derive(Debug, Serialize, Deserialize)]
pub struct Settings {
    pub config: MediaConfig,
    pub card: PathBuf,
    pub poster: PathBuf,
    /// The previews' sheet and cues.
    pub sheet: PathBuf,
    pub cues: PathBuf,
    /// Where to write the web rendition, if one is wanted.
    #[serde(default)]
    pub rendition: Option<RenditionTarget>,
}

/// The child's side: processes `input` and reports on stdout. Returns the exit code.
pub fn run_child(settings: &Settings, input: &Path) -> i32 {
    exit_with_parent();
    // SIGTERM and SIGINT are the service's to act on: systemd sends them to the whole group
    // when it stops the service, and a worker dying of one would look like a crash. The
    // parent ends its child itself (SIGKILL on cancel; end-of-file on stdin if it dies).
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(error) = signal_hook::flag::register(signal, Arc::new(AtomicBool::new(false))) {
            tracing::warn!(%error, signal, "the media worker could not set its signal handling");
        }
    }
    let say = |line: &Line| match serde_json::to_string(line) {
        // One write per line; the parent reads lines.
        Ok(text) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        }
        Err(error) => tracing::error!(%error, "encoding a report line"),
    };
    let media = match Media::new(settings.config.clone()) {
        Ok(media) => media,
        Err(error) => {
            say(&Line::Failed { stage: Stage::Metadata, error, demoted: Demoted::default() });
            return 1;
        }
    };
    let cancel = AtomicBool::new(false);
    let mut last: Option<(Stage, u8, Instant)> = None;
    let result = media.process(input, settings.rendition.as_ref(), &cancel, &mut |stage, percent| {
        let due = last.is_none_or(|(s, p, at)| s != stage || p != percent || at.elapsed() >= HEARTBEAT);
        if due {
            last = Some((stage, percent, Instant::now()));
            say(&Line::Progress { stage, percent });
        }
    });
    let demoted = Demoted { decoders: media.demoted(), encoders: media.encoder_demoted() };
    match result {
        Ok(processed) => {
            let [card, poster] = &processed.thumbnails;
            let written = std::fs::write(&settings.card, card).and_then(|()| std::fs::write(&settings.poster, poster));
            if let Err(error) = written {
                let error = MediaError::Internal(format!("writing thumbnails: {error}"));
                say(&Line::Failed { stage: Stage::Thumbnail, error, demoted });
                return 1;
            }
            // Previews are a nicety: ones that cannot be handed back are dropped.
            let previews = processed.previews.as_ref().is_some_and(|previews| {
                let written = std::fs::write(&settings.sheet, &previews.sheet)
                    .and_then(|()| std::fs::write(&settings.cues, &previews.vtt));
                written.map_err(|error| tracing::warn!(%error, "writing the scrub previews")).is_ok()
            });
            let (metadata, report) = (Box::new(processed.metadata), Box::new(processed.report));
            let playback = processed.playback.map(Box::new);
            say(&Line::Done { metadata, report, playback, previews, demoted });
            0
        }
        Err((stage, error)) => {
            say(&Line::Failed { stage, error, demoted });
            1
        }
    }
}

/// Exits the process as soon as stdin reaches its end: the parent is gone.
fn exit_with_parent() {
    std::thread::spawn(|| {
        use std::io::Read;
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(2);
    });
}

/// The service's side: runs each job in a fresh child of `program` (the `tally` binary).
pub struct Isolated {
    program: PathBuf,
    /// Becomes software-only once a child reports that hardware decoding failed, so later
    /// children do not try it again.
    config: Mutex<MediaConfig>,
}

impl Isolated {
    pub fn new(program: PathBuf, config: MediaConfig) -> Isolated {
        Isolated { program, config: Mutex::new(config) }
    }

    fn config(&self) -> MediaConfig {
        self.config.lock().map(|c| c.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Processes `input` in a child; `scratch` names four files for the thumbnails (card,
    /// poster) and the previews (sheet, cues) on their way back (the caller removes them);
    /// the child writes the rendition, if asked for one, to `rendition`'s output. `progress`
    /// gets what the child reports.
    pub async fn process(
        &self,
        input: &Path,
        scratch: [PathBuf; 4],
        rendition: Option<RenditionTarget>,
        cancel: &AtomicBool,
        progress: &mut (dyn FnMut(Stage, u8) + Send),
    ) -> Result<Processed, (Stage, MediaError)> {
        let Some(target) = rendition else { return self.run(input, &scratch, None, cancel, progress).await };
        match self.run(input, &scratch, Some(target.clone()), cancel, progress).await {
            Err((Stage::Rendition, MediaError::WorkerDied(mut how))) => {
                if cancel.load(Ordering::Relaxed) {
                    return Err((Stage::Rendition, MediaError::Cancelled));
                }
                let clear = || {
                    let _ = std::fs::remove_file(&target.output);
                    let _ = std::fs::remove_file(&target.scratch);
                };
                clear();
                // A crashing hardware encoder cannot report itself: software encoders from
                // now on (as after a hardware failure it reports), and the rendition again.
                if self.demote_encoders() {
                    tracing::warn!(input = %input.display(), how, "the media worker died making the rendition; software encoders from now on");
                    match self.run(input, &scratch, Some(target.clone()), cancel, progress).await {
                        Err((Stage::Rendition, MediaError::WorkerDied(again))) => how = again,
                        other => return other,
                    }
                    clear();
                }
                tracing::warn!(input = %input.display(), how, "the media worker died making the rendition; once more without it");
                let mut processed = self.run(input, &scratch, None, cancel, progress).await?;
                processed.playback = Some(Playback {
                    kind: PlaybackKind::Original,
                    codec: processed.metadata.video_codec.clone(),
                    reason: "plays as uploaded where it can".into(),
                    problem: Some(format!("making the rendition stopped the media worker: it {how}")),
                });
                Ok(processed)
            }
            other => other,
        }
    }

    /// One child, start to end.
    async fn run(
        &self,
        input: &Path,
        scratch: &[PathBuf; 4],
        rendition: Option<RenditionTarget>,
        cancel: &AtomicBool,
        progress: &mut (dyn FnMut(Stage, u8) + Send),
    ) -> Result<Processed, (Stage, MediaError)> {
        let [card, poster, sheet, cues] = scratch.clone();
        let config = self.config();
        let stall_limit = config.watchdog + GRACE;
        let settings = Settings { config, card, poster, sheet, cues, rendition };
        let settings = serde_json::to_string(&settings)
            .map_err(|e| (Stage::Metadata, MediaError::Internal(format!("worker settings: {e}"))))?;
        let mut child = Command::new(&self.program)
            .arg(SUBCOMMAND)
            .arg("--settings")
            .arg(settings)
            .arg(input)
            // Never written: the child watches it to learn that the service died.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                let error = MediaError::Internal(format!("starting {}: {e}", self.program.display()));
                (Stage::Metadata, error)
            })?;
        let Some(stdout) = child.stdout.take() else {
            return Err((Stage::Metadata, MediaError::Internal("the media worker has no stdout".into())));
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut stage = Stage::Metadata;
        let mut last_word = None;
        let mut heard = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        heard = Instant::now();
                        match serde_json::from_str::<Line>(&line) {
                            Ok(Line::Progress { stage: now, percent }) => {
                                stage = now;
                                progress(now, percent);
                            }
                            Ok(word) => last_word = Some(word),
                            Err(error) => tracing::warn!(%error, line, "unreadable line from the media worker"),
                        }
                    }
                    // Stdout closed: the child is exiting, one way or another.
                    Ok(None) | Err(_) => break,
                },
                _ = tick.tick() => {
                    if cancel.load(Ordering::Relaxed) {
                        let _ = child.kill().await;
                        return Err((stage, MediaError::Cancelled));
                    }
                    if heard.elapsed() > stall_limit {
                        tracing::error!(input = %input.display(), stage = stage.as_str(), silent = ?heard.elapsed(), "media worker stuck; killing it");
                        let _ = child.kill().await;
                        return Err((stage, MediaError::WorkerDied(format!("hung and was killed after {stall_limit:?} without a word"))));
                    }
                }
            }
        }
        let status = child.wait().await;
        match last_word {
            Some(Line::Done { metadata, report, playback, previews, demoted }) => {
                self.note(demoted);
                let read = |path: &Path| std::fs::read(path);
                let thumbnails = read(&scratch[0]).and_then(|card| Ok([card, read(&scratch[1])?])).map_err(|e| {
                    (Stage::Thumbnail, MediaError::Internal(format!("reading the worker's thumbnails: {e}")))
                })?;
                let previews = if previews {
                    read(&scratch[2])
                        .and_then(|sheet| Ok(Previews { sheet, vtt: std::fs::read_to_string(&scratch[3])? }))
                        .map_err(|error| tracing::warn!(%error, "reading the worker's previews"))
                        .ok()
                } else {
                    None
                };
                let playback = playback.map(|p| *p);
                Ok(Processed { metadata: *metadata, report: *report, thumbnails, playback, previews })
            }
            Some(Line::Failed { stage, error, demoted }) => {
                self.note(demoted);
                Err((stage, error))
            }
            _ => {
                let how = status.map_or_else(|e| format!("could not be waited for: {e}"), describe);
                tracing::error!(input = %input.display(), stage = stage.as_str(), how, "media worker died");
                Err((stage, MediaError::WorkerDied(how)))
            }
        }
    }

    /// Software encoders from now on, if the mode let hardware ones be chosen; whether that
    /// changed anything.
    fn demote_encoders(&self) -> bool {
        let Ok(mut config) = self.config.lock() else { return false };
        let changed = config.encoder == Acceleration::Auto;
        config.encoder = if changed { Acceleration::Software } else { config.encoder };
        changed
    }

    fn note(&self, demoted: Demoted) {
        if let Ok(mut config) = self.config.lock() {
            if demoted.decoders {
                config.decoder = Acceleration::Software;
            }
            if demoted.encoders {
                config.encoder = Acceleration::Software;
            }
        }
    }
}

/// How a child that said nothing final ended.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!("crashed ({})", signal_name(signal)),
        (None, Some(code)) => format!("exited with status {code} without a result"),
        (None, None) => "ended without a result".to_owned(),
    }
}

/// Linux's numbers, the same on x86-64, arm64 and armv7.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal}, {name}")
}
