//! Processing jobs: workers take queued jobs from the store, run the media pipeline on a
//! blocking thread, and keep the video record and the organization's browsers up to date.
//!
//! A job is claimed (`running`) and every outcome is written together with the video record
//! before it is announced. Jobs found `running` at start were cut short by a crash or power
//! cut and go back to the queue. Failures that may pass (a stalled or failed decode) are
//! retried with backoff; a file that is not a video fails at once.
//!
//! Door: [`Jobs::start`], then [`Jobs::submit`] and [`Jobs::cancel`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::events::{self, VideoNews};
use crate::media::isolation::Isolated;
use crate::media::{MediaError, Playback, PlaybackKind, Processed, RenditionTarget, Stage};
use crate::metrics::Metrics;
use crate::store::{Job, JobState, Progress, StorageFault, Store, StoreError, TempFile, Video, VideoStatus, now_ms};

/// At most this many progress events per second per video.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// An idle worker sleeps until the next retry is due or a job is submitted; this is only the
/// longest it sleeps without looking (a safety net, not a poll: an idle box should not wake).
const IDLE_WAIT: Duration = Duration::from_secs(60);
/// After a failure to read the queue, the worker tries again this soon.
const ERROR_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub workers: usize,
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long.
    pub retry_backoff: Duration,
    /// Free space a rendition never eats into, in bytes (as for uploads).
    pub min_free_bytes: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { workers: 1, max_attempts: 3, retry_backoff: Duration::from_secs(5), min_free_bytes: 100 << 20 }
    }
}

pub struct Jobs {
    store: Store,
    media: Arc<Isolated>,
    news: VideoNews,
    metrics: Arc<Metrics>,
    config: JobsConfig,
    wake: Notify,
    /// Cancel flags of the videos being processed now.
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// When a video last failed for good (the LED's attention state).
    last_failure: Mutex<Option<Instant>>,
    stopping: AtomicBool,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Jobs {
    /// Requeues interrupted jobs and starts the workers.
    pub fn start(
        store: Store,
        media: Arc<Isolated>,
        news: VideoNews,
        metrics: Arc<Metrics>,
        config: JobsConfig,
    ) -> Result<Arc<Jobs>, StoreError> {
        let requeued = store.requeue_interrupted_jobs()?;
        if requeued > 0 {
            tracing::warn!(requeued, "jobs interrupted by the last shutdown are queued again");
        }
        let rebuilds = store.queue_rebuilds()?;
        if rebuilds > 0 {
            tracing::warn!(
                rebuilds,
                "videos without a web rendition (missing, or from before renditions) are made again"
            );
        }
        let jobs = Arc::new(Jobs {
            store,
            media,
            news,
            metrics,
            config,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            last_failure: Mutex::new(None),
            stopping: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
        });
        let handles: Vec<_> =
            (0..jobs.config.workers.max(1)).map(|worker| tokio::spawn(jobs.clone().work(worker))).collect();
        if let Ok(mut workers) = jobs.workers.lock() {
            *workers = handles;
        }
        Ok(jobs)
    }

    /// Stops the workers and puts a job cut short back in the queue, so the next start takes
    /// it up again (after a power cut the next start does the same).
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Ok(running) = self.running.lock() {
            for flag in running.values() {
                flag.store(true, Ordering::Relaxed);
            }
        }
        self.wake.notify_waiters();
        let handles = self.workers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        for handle in handles {
            let _ = handle.await;
        }
        match self.store.requeue_interrupted_jobs() {
            Ok(0) => {}
            Ok(requeued) => tracing::info!(requeued, "jobs cut short by the shutdown go back to the queue"),
            Err(error) => tracing::error!(%error, "requeueing the interrupted jobs failed; the next start will"),
        }
    }

    /// Records a new video with its queued job and wakes a worker.
    pub fn submit(&self, video: &Video) -> Result<(), StoreError> {
        self.store.insert_video_with_job(video)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Drops the video's jobs and stops its processing if it is running.
    pub fn cancel(&self, video_id: &str) -> Result<(), StoreError> {
        // The processing stops even if the store refuses to remove the job.
        if let Some(flag) = self.running.lock().ok().and_then(|running| running.get(video_id).cloned()) {
            flag.store(true, Ordering::Relaxed);
        }
        self.store.remove_jobs_of(video_id)
    }

    /// Videos being processed now.
    pub fn busy(&self) -> usize {
        self.running.lock().map(|running| running.len()).unwrap_or(0)
    }

    /// When a video last failed processing for good.
    pub fn last_failure(&self) -> Option<Instant> {
        self.last_failure.lock().ok().and_then(|last| *last)
    }

    /// Whether every worker is still running (a worker only ends when stopped, or by a bug).
    pub fn healthy(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
            || self.workers.lock().is_ok_and(|workers| workers.iter().all(|worker| !worker.is_finished()))
    }

    async fn work(self: Arc<Self>, worker: usize) {
        // A faulty store refuses every claim until it heals: say so once, not every second.
        let mut failing = false;
        while !self.stopping.load(Ordering::Acquire) {
            match self.store.claim_job() {
                Ok(Some(job)) => {
                    failing = false;
                    self.run(job).await;
                }
                Ok(None) => {
                    failing = false;
                    let due = self.store.next_retry_at().ok().flatten();
                    let wait = due.map_or(IDLE_WAIT, |due| Duration::from_millis(due.saturating_sub(now_ms())));
                    let _ = tokio::time::timeout(wait.min(IDLE_WAIT), self.wake.notified()).await;
                }
                Err(error) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::error!(%error, worker, "reading the job queue failed; trying again every second");
                    }
                    tokio::time::sleep(ERROR_WAIT).await;
                }
            }
        }
    }

    /// Records a job's outcome. A store that is faulty for now (a stalled flush) is waited
    /// out, so the job does not stay `running` until the next start; one that failed for good
    /// or a shutdown leaves it to the next start, which queues it again.
    async fn settle(&self, job: &Job, video: &Video) -> bool {
        loop {
            match self.store.finish_job(job, video) {
                Ok(()) => return true,
                // The video was deleted, or its job cancelled, meanwhile: nothing to tell anyone.
                Err(StoreError::NotFound) => return false,
                Err(StoreError::Unavailable(StorageFault::Stalled(_)) | StoreError::TimedOut(_))
                    if !self.stopping.load(Ordering::Acquire) =>
                {
                    tokio::time::sleep(ERROR_WAIT).await;
                }
                Err(error) => {
                    tracing::error!(%error, video = video.id, "recording the job outcome failed; the next start runs it again");
                    return false;
                }
            }
        }
    }

    async fn run(&self, job: Job) {
        // The rendition and the muxer's scratch file. A kept rendition was renamed away; what
        // is left (gigabytes, it may be) is removed off the async threads.
        let rendition = {
            let files = self.store.files();
            [files.temp_file(), files.temp_file()]
        };
        self.run_with(job, &rendition).await;
        let _ = tokio::task::spawn_blocking(move || drop(rendition)).await;
    }

    async fn run_with(&self, mut job: Job, rendition: &[TempFile; 2]) {
        let video = match self.store.video(&job.org_id, &job.video_id) {
            Ok(Some(video)) => video,
            _ => {
                let _ = self.store.remove_jobs_of(&job.video_id);
                return;
            }
        };
        tracing::info!(video = video.id, attempt = job.attempts, rebuild = job.rebuild, "processing");
        let cancel = Arc::new(AtomicBool::new(false));
        if let Ok(mut running) = self.running.lock() {
            running.insert(video.id.clone(), cancel.clone());
        }
        let started = Instant::now();
        let outcome = self.process(&video, job.rebuild, rendition, cancel).await;
        if let Ok(mut running) = self.running.lock() {
            running.remove(&video.id);
        }
        // Work from the latest record: the title may have changed meanwhile.
        let Ok(Some(mut video)) = self.store.video(&job.org_id, &job.video_id) else { return };
        video.progress = None;
        video.updated_at = now_ms();
        let event = match outcome {
            Ok(processed) => match self.keep_files(&video, &processed, rendition).await {
                Ok(playback) => {
                    video.playback = playback;
                    video.has_previews = processed.previews.is_some();
                    video.status = VideoStatus::Processed;
                    video.metadata = serde_json::to_value(&processed.metadata).ok();
                    video.sensitivity = serde_json::to_value(&processed.report).ok();
                    video.has_thumbnail = true;
                    video.error = None;
                    job.state = JobState::Done;
                    let playback = video.playback.as_ref().map(|p| p.kind);
                    tracing::info!(video = video.id, seconds = started.elapsed().as_secs_f64(), verdict = ?processed.report.verdict, decoder = processed.metadata.decoder, encoder = processed.metadata.encoder, ?playback, "processed");
                    Some((events::VIDEO_PROCESSED, None))
                }
                Err(error) => self.settle_failure(
                    &mut job,
                    &mut video,
                    Stage::Thumbnail,
                    MediaError::Internal(format!("saving the results: {error}")),
                ),
            },
            Err((_, MediaError::Cancelled)) => return,
            Err((stage, error)) => self.settle_failure(&mut job, &mut video, stage, error),
        };
        job.updated_at = now_ms();
        if !self.settle(&job, &video).await {
            return;
        }
        if let Err(error) = self.store.durable().await {
            tracing::error!(%error, "flushing the job outcome failed");
        }
        match &event {
            Some((events::VIDEO_PROCESSED, _)) => self.metrics.record_processing(true, started.elapsed().as_secs_f64()),
            Some((events::VIDEO_FAILED, _)) => self.metrics.record_processing(false, started.elapsed().as_secs_f64()),
            _ => {}
        }
        match event {
            Some((events::VIDEO_FAILED, Some((stage, message)))) => self.news.failed(&video, stage, &message),
            Some((name, _)) => self.news.announce(name, &video),
            None => {}
        }
    }

    /// Decides between a retry and a final failure, and says which event tells it.
    fn settle_failure(
        &self,
        job: &mut Job,
        video: &mut Video,
        stage: Stage,
        error: MediaError,
    ) -> Option<(&'static str, Option<(&'static str, String)>)> {
        let permanent = matches!(error, MediaError::NotVideo(_) | MediaError::UnsupportedCodec(_));
        let message = error.to_string();
        if !permanent && job.attempts < self.config.max_attempts {
            let wait = self.config.retry_backoff * 2u32.saturating_pow(job.attempts.saturating_sub(1));
            tracing::warn!(video = video.id, stage = stage.as_str(), error = message, retry_in = ?wait, "processing failed; will retry");
            job.state = JobState::Queued;
            job.not_before = now_ms() + wait.as_millis() as u64;
            job.error = Some(message);
            if !job.rebuild {
                video.status = VideoStatus::Queued;
            }
            return Some((events::VIDEO_UPDATED, None));
        }
        tracing::warn!(
            video = video.id,
            stage = stage.as_str(),
            error = message,
            rebuild = job.rebuild,
            "processing failed"
        );
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some(Instant::now());
        }
        job.state = JobState::Failed;
        job.error = Some(message.clone());
        if job.rebuild {
            // What it had stays: the original plays, and the record says why there is no
            // rendition (which also keeps the next start from trying again).
            video.playback = Some(Playback {
                kind: PlaybackKind::Original,
                codec: Self::codec_of(video),
                reason: "plays as uploaded where it can".into(),
                problem: Some(format!("the web rendition could not be made: {message}")),
            });
            return Some((events::VIDEO_UPDATED, None));
        }
        video.status = VideoStatus::Failed;
        video.error = Some(message.clone());
        Some((events::VIDEO_FAILED, Some((stage.as_str(), message))))
    }

    /// The original's video codec, as its stored metadata names it.
    fn codec_of(video: &Video) -> String {
        let codec = video.metadata.as_ref().and_then(|metadata| metadata["videoCodec"].as_str());
        codec.unwrap_or("unknown").to_owned()
    }

    /// Runs the pipeline in a child process, forwarding its progress as events. The web
    /// rendition is written to `rendition`'s first path, with the room free space allows.
    async fn process(
        &self,
        video: &Video,
        rebuild: bool,
        rendition: &[TempFile; 2],
        cancel: Arc<AtomicBool>,
    ) -> Result<Processed, (Stage, MediaError)> {
        let files = self.store.files();
        let path: PathBuf = files.original(&video.id, &video.ext);
        // When each stage began: its ETA is from its own pace.
        let mut began: Option<(Stage, Instant)> = None;
        let mut last: Option<(Stage, Instant)> = None;
        let mut forward = |stage: Stage, percent: u8| {
            if began.is_none_or(|(s, _)| s != stage) {
                began = Some((stage, Instant::now()));
            }
            let due = match last {
                Some((previous, at)) => previous != stage || percent == 100 || at.elapsed() >= PROGRESS_INTERVAL,
                None => true,
            };
            if due {
                last = Some((stage, Instant::now()));
                let stage_started = began.map_or_else(Instant::now, |(_, at)| at);
                self.report_progress(video, rebuild, stage, percent, stage_started);
            }
        };
        // The thumbnails and previews on their way back from the child.
        let handed: [TempFile; 4] = std::array::from_fn(|_| files.temp_file());
        // The room: what is free above the reserve (a rendition this one would replace stays
        // on the disk until the new one is renamed over it).
        let free = files.available_space().unwrap_or(0);
        let budget = free.saturating_sub(self.config.min_free_bytes);
        let [output, muxer] = rendition.each_ref().map(|file| file.path().to_owned());
        let target = RenditionTarget { output, scratch: muxer, budget, reserve: self.config.min_free_bytes };
        let scratch = handed.each_ref().map(|file| file.path().to_owned());
        self.media.process(&path, scratch, Some(target), &cancel, &mut forward).await
    }

    /// Stores then announces where processing is, so the record matches the last event.
    /// `started` is when this stage began. A rebuild's video stays `processed`, playable.
    fn report_progress(&self, video: &Video, rebuild: bool, stage: Stage, percent: u8, started: Instant) {
        let progress = Progress { stage: stage.as_str().to_owned(), percent };
        let updated = self.store.update_video(&video.org_id, &video.id, |v| {
            if !rebuild {
                v.status = VideoStatus::Processing;
            }
            v.progress = Some(progress.clone());
        });
        let Ok(updated) = updated else { return };
        let eta = (matches!(stage, Stage::Sensitivity | Stage::Rendition) && percent > 0 && percent < 100)
            .then(|| (started.elapsed().as_secs_f64() * (100 - percent) as f64 / percent as f64).round() as u64);
        self.news.progress(&updated, stage.as_str(), percent, eta);
    }

    /// Moves what processing made into the video's directory, durably: the thumbnails, and
    /// the rendition when one plays. Returns what the player gets (the original, with the
    /// reason, if the rendition could not be kept).
    async fn keep_files(
        &self,
        video: &Video,
        processed: &Processed,
        rendition: &[TempFile; 2],
    ) -> std::io::Result<Option<Playback>> {
        let files = self.store.files();
        let mut playback = processed.playback.clone();
        if let Some(wanted) = playback.as_mut().filter(|p| p.has_file()) {
            let made = rendition[0].path();
            let kept = async {
                tokio::fs::File::open(made).await?.sync_all().await?;
                tokio::fs::rename(made, files.rendition(&video.id)).await
            };
            if let Err(error) = kept.await {
                tracing::warn!(video = video.id, %error, "keeping the rendition failed; the original plays");
                wanted.kind = PlaybackKind::Original;
                wanted.codec = processed.metadata.video_codec.clone();
                wanted.problem = Some(format!("the rendition could not be kept: {error}"));
            }
        } else {
            // Reprocessed into needing none: an earlier rendition goes.
            let _ = tokio::fs::remove_file(files.rendition(&video.id)).await;
        }
        self.keep_thumbnails(video, processed).await?;
        Ok(playback)
    }

    /// Writes a small file durably in the video's directory (through a temp name, so a
    /// reader never sees half of it); the directory itself is synced by the caller.
    async fn keep_small(path: PathBuf, bytes: &[u8]) -> std::io::Result<()> {
        let temp = path.with_extension("part");
        tokio::fs::write(&temp, bytes).await?;
        tokio::fs::File::open(&temp).await?.sync_all().await?;
        tokio::fs::rename(&temp, &path).await
    }

    async fn keep_thumbnails(&self, video: &Video, processed: &Processed) -> std::io::Result<()> {
        let files = self.store.files();
        for (size, jpeg) in [("card", &processed.thumbnails[0]), ("poster", &processed.thumbnails[1])] {
            Jobs::keep_small(files.thumbnail(&video.id, size), jpeg).await?;
        }
        match &processed.previews {
            Some(previews) => {
                Jobs::keep_small(files.preview_sheet(&video.id), &previews.sheet).await?;
                Jobs::keep_small(files.preview_cues(&video.id), previews.vtt.as_bytes()).await?;
            }
            None => {
                let _ = tokio::fs::remove_file(files.preview_sheet(&video.id)).await;
                let _ = tokio::fs::remove_file(files.preview_cues(&video.id)).await;
            }
        }
        // The renames themselves must survive a power cut before the record says "processed".
        tokio::fs::File::open(files.dir(&video.id)).await?.sync_all().await?;
        Ok(())
    }
}
