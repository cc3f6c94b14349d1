//! The processing queue: one job per video, FIFO by id (ULIDs sort by time), persisted in
//! the `jobs` tree. The job and its video's status change together in one transaction.
//!
//! The queue holds only work still to do (queued and running jobs), so the scans that idle
//! workers make stay as short as the backlog. A job that failed for good moves to
//! `failed_jobs`, keyed by its video, kept for diagnosis until the housekeeping prunes it.
//! How many jobs are queued and running is counted as they change ([`JobCounts`]), so
//! `/metrics` never scans.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::{Store, StoreError, Video, VideoStatus, abort, decode, encode, new_id, now_ms};

/// Live counts of the queue, kept as jobs change state.
#[derive(Debug, Default)]
pub struct JobCounts {
    queued: AtomicUsize,
    running: AtomicUsize,
}

impl JobCounts {
    /// Counts what the queue holds (once, as the store opens).
    pub(super) fn scan(jobs: &sled::Tree) -> Result<JobCounts, StoreError> {
        let counts = JobCounts::default();
        for entry in jobs.iter() {
            let job: Job = decode(&entry?.1)?;
            counts.add(job.state);
        }
        Ok(counts)
    }

    /// Jobs queued and running now.
    pub fn get(&self) -> (usize, usize) {
        (self.queued.load(Ordering::Relaxed), self.running.load(Ordering::Relaxed))
    }

    fn counter(&self, state: JobState) -> Option<&AtomicUsize> {
        match state {
            JobState::Queued => Some(&self.queued),
            JobState::Running => Some(&self.running),
            JobState::Done | JobState::Failed => None,
        }
    }

    fn add(&self, state: JobState) {
        if let Some(counter) = self.counter(state) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, state: JobState) {
        if let Some(counter) = self.counter(state) {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }

    fn change(&self, from: JobState, to: JobState) {
        self.remove(from);
        self.add(to);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub video_id: String,
    pub org_id: String,
    pub state: JobState,
    pub attempts: u32,
    /// Not to be started before this time (ms since the epoch): retry backoff.
    pub not_before: u64,
    pub error: Option<String>,
    pub updated_at: u64,
    /// The video was processed before and is being made again (its web rendition is missing,
    /// or it predates renditions): it stays `processed` and playable meanwhile, keeps its
    /// results if this fails, and waits behind new uploads.
    #[serde(default)]
    pub rebuild: bool,
}

impl Job {
    fn queued(video: &Video, rebuild: bool) -> Job {
        Job {
            id: new_id(),
            video_id: video.id.clone(),
            org_id: video.org_id.clone(),
            state: JobState::Queued,
            attempts: 0,
            not_before: 0,
            error: None,
            updated_at: now_ms(),
            rebuild,
        }
    }
}

fn video_key(org_id: &str, id: &str) -> Vec<u8> {
    format!("{org_id}/{id}").into_bytes()
}

impl Store {
    /// Records a new video together with its queued job.
    pub fn insert_video_with_job(&self, video: &Video) -> Result<Job, StoreError> {
        self.writable()?;
        let job = Job::queued(video, false);
        let (video_raw, job_raw) = (encode(video)?, encode(&job)?);
        (&self.videos, &self.jobs).transaction(|(videos, jobs)| {
            videos.insert(video_key(&video.org_id, &video.id), video_raw.as_slice())?;
            jobs.insert(job.id.as_bytes(), job_raw.as_slice())?;
            Ok(())
        })?;
        self.job_counts.add(JobState::Queued);
        Ok(job)
    }

    /// Claims the oldest queued job that is due, marking it running: new uploads first, then
    /// rebuilds (a library made again after an upgrade does not hold up what is uploaded).
    pub fn claim_job(&self) -> Result<Option<Job>, StoreError> {
        self.writable()?;
        for rebuilds in [false, true] {
            if let Some(job) = self.claim_job_where(rebuilds)? {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    fn claim_job_where(&self, rebuild: bool) -> Result<Option<Job>, StoreError> {
        let now = now_ms();
        for entry in self.jobs.iter() {
            let (key, raw) = entry?;
            let mut job: Job = decode(&raw)?;
            if job.state != JobState::Queued || job.not_before > now || job.rebuild != rebuild {
                continue;
            }
            job.state = JobState::Running;
            job.attempts += 1;
            job.updated_at = now;
            // Only one worker wins a job: the swap fails if another changed it first.
            if self.jobs.compare_and_swap(&key, Some(raw), Some(encode(&job)?))?.is_ok() {
                self.job_counts.change(JobState::Queued, JobState::Running);
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    /// When the earliest queued job waiting out a retry backoff becomes claimable (ms since
    /// the epoch), if any: an idle worker sleeps until then.
    pub fn next_retry_at(&self) -> Result<Option<u64>, StoreError> {
        let mut earliest: Option<u64> = None;
        for entry in self.jobs.iter() {
            let (_, raw) = entry?;
            let job: Job = decode(&raw)?;
            if job.state == JobState::Queued {
                earliest = Some(earliest.map_or(job.not_before, |e| e.min(job.not_before)));
            }
        }
        Ok(earliest)
    }

    /// Saves the outcome of a running job and the video record in one step. A finished job
    /// leaves the queue (its outcome lives on the video); a failed one moves to the failures;
    /// one to be retried stays queued.
    pub fn finish_job(&self, job: &Job, video: &Video) -> Result<(), StoreError> {
        self.writable()?;
        let (video_raw, job_raw) = (encode(video)?, encode(job)?);
        (&self.videos, &self.jobs, &self.failed_jobs).transaction(|(videos, jobs, failed)| {
            // A video deleted while it was processed stays deleted, and its job cancelled: a
            // job no longer in the queue has nothing to record (and nothing to uncount).
            if videos.get(video_key(&video.org_id, &video.id))?.is_none() || jobs.get(job.id.as_bytes())?.is_none() {
                return abort(StoreError::NotFound);
            }
            videos.insert(video_key(&video.org_id, &video.id), video_raw.as_slice())?;
            match job.state {
                JobState::Queued | JobState::Running => {
                    jobs.insert(job.id.as_bytes(), job_raw.as_slice())?;
                }
                JobState::Done => {
                    jobs.remove(job.id.as_bytes())?;
                }
                JobState::Failed => {
                    jobs.remove(job.id.as_bytes())?;
                    failed.insert(job.video_id.as_bytes(), job_raw.as_slice())?;
                }
            }
            Ok(())
        })?;
        self.job_counts.change(JobState::Running, job.state);
        Ok(())
    }

    /// Removes every job of a video (it was deleted).
    pub fn remove_jobs_of(&self, video_id: &str) -> Result<(), StoreError> {
        self.writable()?;
        self.remove_jobs_unchecked(video_id)
    }

    /// Takes back a new video and its job whose upload could not be acknowledged (the store
    /// was faulty by the time it was to be made durable). Allowed while the store is faulty:
    /// it only undoes what that request wrote, so that a video the uploader was told failed
    /// does not appear later. Best effort: should the record already be on its way to disk,
    /// the next start removes it, its file being gone.
    pub fn take_back_upload(&self, org_id: &str, video_id: &str) -> Result<(), StoreError> {
        self.remove_jobs_unchecked(video_id)?;
        self.videos.remove(video_key(org_id, video_id))?;
        Ok(())
    }

    fn remove_jobs_unchecked(&self, video_id: &str) -> Result<(), StoreError> {
        for entry in self.jobs.iter() {
            let (key, raw) = entry?;
            let job: Job = decode(&raw)?;
            // What was removed is what is uncounted, whatever a worker did meanwhile.
            if job.video_id == video_id
                && let Some(removed) = self.jobs.remove(key)?
            {
                self.job_counts.remove(decode::<Job>(&removed)?.state);
            }
        }
        self.failed_jobs.remove(video_id.as_bytes())?;
        Ok(())
    }

    /// After a crash or power cut: jobs that were running go back to the queue, and their
    /// videos back to `queued` (a rebuild's stays `processed`).
    pub fn requeue_interrupted_jobs(&self) -> Result<usize, StoreError> {
        self.writable()?;
        let mut requeued = 0;
        for entry in self.jobs.iter() {
            let (key, raw) = entry?;
            let mut job: Job = decode(&raw)?;
            if job.state != JobState::Running {
                continue;
            }
            job.state = JobState::Queued;
            job.updated_at = now_ms();
            // Only the job still running is put back (a worker may have settled it meanwhile).
            if self.jobs.compare_and_swap(&key, Some(raw), Some(encode(&job)?))?.is_err() {
                continue;
            }
            self.job_counts.change(JobState::Running, JobState::Queued);
            let _ = self.update_video(&job.org_id, &job.video_id, |video| {
                if !job.rebuild {
                    video.status = VideoStatus::Queued;
                }
                video.progress = None;
            });
            requeued += 1;
        }
        Ok(requeued)
    }

    /// Processed videos that lack what plays in a browser are queued to be made again: those
    /// whose web rendition is missing (a disk tidied by hand, a restore without it), and those
    /// processed before there were renditions (an HEVC upload from then never played). They
    /// stay `processed` meanwhile. Returns how many.
    pub fn queue_rebuilds(&self) -> Result<usize, StoreError> {
        self.writable()?;
        let mut waiting = std::collections::HashSet::new();
        for entry in self.jobs.iter() {
            waiting.insert(decode::<Job>(&entry?.1)?.video_id);
        }
        let mut requeued = 0;
        for entry in self.videos.iter() {
            let video: Video = decode(&entry?.1)?;
            let needed = match &video.playback {
                None => true,
                Some(playback) => playback.has_file() && !self.files.rendition(&video.id).exists(),
            };
            if video.status != VideoStatus::Processed || !needed || waiting.contains(&video.id) {
                continue;
            }
            // The job alone: the record stays as it is, `processed`.
            let job = Job::queued(&video, true);
            self.jobs.insert(job.id.as_bytes(), encode(&job)?)?;
            self.job_counts.add(JobState::Queued);
            requeued += 1;
        }
        Ok(requeued)
    }

    /// Schema 1 kept failed jobs in the queue: they move to `failed_jobs`.
    pub(super) fn move_failed_jobs_out_of_the_queue(&self) -> Result<(), StoreError> {
        for entry in self.jobs.iter() {
            let (key, raw) = entry?;
            let job: Job = decode(&raw)?;
            if job.state == JobState::Failed {
                (&self.jobs, &self.failed_jobs).transaction(|(jobs, failed)| {
                    failed.insert(job.video_id.as_bytes(), raw.clone())?;
                    jobs.remove(key.clone())?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Jobs queued and running now, as counted (no scan).
    pub fn job_counts(&self) -> (usize, usize) {
        self.job_counts.get()
    }

    /// The jobs in `state` (failed ones: those still kept). Scans; not for hot paths.
    pub fn jobs_in(&self, state: JobState) -> Result<Vec<Job>, StoreError> {
        let tree = if state == JobState::Failed { &self.failed_jobs } else { &self.jobs };
        let mut found = Vec::new();
        for entry in tree.iter() {
            let job: Job = decode(&entry?.1)?;
            if job.state == state {
                found.push(job);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(id: &str) -> Video {
        Video { id: id.into(), ..crate::store::videos::tests::video("org", id, VideoStatus::Queued) }
    }

    #[test]
    fn a_job_cancelled_while_it_runs_records_nothing_and_is_counted_once() {
        // A deletion cancels the job while its worker is finishing it: the worker's outcome,
        // arriving second, finds no job and changes nothing, counts included.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.insert_video_with_job(&video("v")).unwrap();
        let mut job = store.claim_job().unwrap().unwrap();
        assert_eq!(store.job_counts(), (0, 1));
        store.remove_jobs_of("v").unwrap();
        assert_eq!(store.job_counts(), (0, 0));
        for state in [JobState::Failed, JobState::Queued, JobState::Done] {
            job.state = state;
            assert!(matches!(store.finish_job(&job, &video("v")), Err(StoreError::NotFound)), "{state:?}");
        }
        assert_eq!(store.job_counts(), (0, 0));
        assert!(
            store.jobs_in(JobState::Failed).unwrap().is_empty() && store.jobs_in(JobState::Queued).unwrap().is_empty()
        );
    }

    #[test]
    fn finished_jobs_leave_the_queue_failed_ones_stay_and_running_ones_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for id in ["done", "failed", "cut"] {
            store.insert_video_with_job(&video(id)).unwrap();
        }
        let mut done = store.claim_job().unwrap().unwrap();
        let mut failed = store.claim_job().unwrap().unwrap();
        let cut = store.claim_job().unwrap().unwrap();
        assert_eq!((done.video_id.as_str(), cut.video_id.as_str(), cut.attempts), ("done", "cut", 1), "oldest first");
        assert!(store.claim_job().unwrap().is_none(), "each job is claimed once");
        done.state = JobState::Done;
        store.finish_job(&done, &video("done")).unwrap();
        failed.state = JobState::Failed;
        store.finish_job(&failed, &video("failed")).unwrap();
        assert!(store.jobs_in(JobState::Done).unwrap().is_empty(), "the outcome lives on the video");
        assert_eq!(store.jobs_in(JobState::Failed).unwrap().len(), 1);
        assert_eq!(store.job_counts(), (0, 1), "a failure leaves the queue: only `cut` runs");
        // A crash leaves `cut` running: the next start queues it again.
        assert_eq!(store.requeue_interrupted_jobs().unwrap(), 1);
        assert_eq!(store.job_counts(), (1, 0));
        assert_eq!(store.claim_job().unwrap().map(|job| job.video_id), Some("cut".into()));
        // A job of a deleted video records nothing.
        store.delete_video("org", "cut").unwrap();
        assert!(matches!(store.finish_job(&cut, &video("cut")), Err(StoreError::NotFound)));
        store.remove_jobs_of("cut").unwrap();
        store.remove_jobs_of("failed").unwrap();
        assert_eq!(store.job_counts(), (0, 0));
        assert!(store.jobs_in(JobState::Failed).unwrap().is_empty(), "a deleted video's failure goes with it");
    }

    #[test]
    fn processed_videos_without_a_rendition_are_rebuilt_once_behind_new_uploads() {
        use crate::media::{Playback, PlaybackKind};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let playback = |kind, problem: Option<&str>| {
            Some(Playback { kind, codec: "HEVC".into(), reason: "r".into(), problem: problem.map(Into::into) })
        };
        let processed = |id: &str, playback| Video { status: VideoStatus::Processed, playback, ..video(id) };
        // From before renditions; its rendition deleted; fine as it is; given up on; not done.
        let cases = [
            processed("old", None),
            processed("missing", playback(PlaybackKind::Transcoded, None)),
            processed("plays", playback(PlaybackKind::Original, None)),
            processed("gave-up", playback(PlaybackKind::Original, Some("the web rendition could not be made"))),
            Video { status: VideoStatus::Failed, ..video("failed") },
        ];
        for video in &cases {
            store.insert_video(video).unwrap();
        }
        assert_eq!(store.queue_rebuilds().unwrap(), 2);
        assert_eq!(store.queue_rebuilds().unwrap(), 0, "a rebuild already waiting is not queued twice");
        for id in ["old", "missing"] {
            assert_eq!(store.video("org", id).unwrap().unwrap().status, VideoStatus::Processed, "{id} stays playable");
        }
        // A new upload arriving after them is taken first, then the rebuilds.
        store.insert_video_with_job(&video("new")).unwrap();
        let order: Vec<(String, bool)> =
            std::iter::from_fn(|| store.claim_job().unwrap()).map(|job| (job.video_id, job.rebuild)).collect();
        assert_eq!(order, [("new".into(), false), ("missing".into(), true), ("old".into(), true)]);
        // A rebuild cut short by a crash leaves the video processed.
        assert_eq!(store.requeue_interrupted_jobs().unwrap(), 3);
        assert_eq!(store.video("org", "old").unwrap().unwrap().status, VideoStatus::Processed);
        assert_eq!(store.video("org", "new").unwrap().unwrap().status, VideoStatus::Queued);
    }

    #[test]
    fn a_job_waiting_out_its_backoff_says_when_it_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_retry_at().unwrap(), None, "an empty queue: sleep until woken");
        store.insert_video_with_job(&video("retry")).unwrap();
        let mut job = store.claim_job().unwrap().unwrap();
        let due = now_ms() + 60_000;
        job.state = JobState::Queued;
        job.not_before = due;
        store.finish_job(&job, &video("retry")).unwrap();
        assert!(store.claim_job().unwrap().is_none(), "not before its time");
        assert_eq!(store.next_retry_at().unwrap(), Some(due));
    }
}
