//! Tally's state: one sled database in the data dir plus the video files beside it.
//!
//! Door: [`Store::open`]. Typed trees hold organizations, users, videos, jobs, refresh
//! tokens and chat; multi-key changes run in sled transactions so a crash never leaves half a
//! record. Writes the API acknowledges wait for [`Store::durable`], the only way to a flush
//! (see [`durability`]); while the store is faulty ([`Store::fault`]) writes are refused up
//! front. A schema version is kept from day one with a hook for migrations.

mod accounts;
mod chat;
mod durability;
pub mod files;
mod jobs;
pub mod model;
mod retention;
mod sessions;
mod videos;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError};

pub use accounts::{AccountChanged, NewUser, normalize_email};
pub use chat::ChatMessage;
pub use durability::StorageFault;
pub use files::{TempFile, VideoFiles};
use jobs::JobCounts;
pub use jobs::{Job, JobState};
pub use model::{Organization, Progress, RefreshToken, User, Video, VideoStatus};
pub use retention::{Pruned, Retention};
pub use sessions::RefreshRefusal;
pub use videos::{VideoPage, VideoQuery};

/// The layout this build writes. Bump it with a migration in [`Store::migrate`].
/// 2: failed jobs live in `failed_jobs`, keyed by video, no longer in the queue.
/// 3: accounts are indexed by organization (`org_members`, `org_admins`).
pub const SCHEMA_VERSION: u32 = 3;
const SCHEMA_KEY: &[u8] = b"schema_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The change would leave an organization without an admin.
    #[error("an organization keeps at least one admin")]
    LastAdmin,
    /// Who asked for the change may not make it (no longer an admin of the organization).
    #[error("not allowed")]
    NotAllowed,
    #[error("the database at {path} is in use (is the service running? stop it first)")]
    Locked { path: PathBuf },
    #[error("the database was written by a newer Tally (schema {found}, this build knows {known})")]
    TooNew { found: u32, known: u32 },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
    /// The store takes no writes now; nothing of this one was done, or it is not durable.
    #[error(transparent)]
    Unavailable(#[from] StorageFault),
    /// The write was not made durable within the flush deadline (flushes are slow).
    #[error("the write was not made durable within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("the database is closing")]
    Closing,
}

/// ENOSPC or EDQUOT: the filesystem (or the user's quota) is full.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(28) | Some(122)) || error.kind() == std::io::ErrorKind::StorageFull
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(error: TransactionError<StoreError>) -> StoreError {
        match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => StoreError::Sled(error),
        }
    }
}

/// Aborts a transaction with a store error.
fn abort<T>(error: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(error))
}

/// sled's page cache.
const CACHE_BYTES: u64 = 16 << 20;
/// How long a flush may take before its waiters fail and the store counts as stalled.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The key the health probe writes.
const PROBE_KEY: &[u8] = b"health_probe";

/// The database. Its `sled::Db` handle is held by the flusher alone (and sled's trees): no
/// one can flush but through [`Store::durable`].
#[derive(Clone)]
pub struct Store {
    meta: sled::Tree,
    orgs: sled::Tree,
    org_names: sled::Tree,
    users: sled::Tree,
    user_emails: sled::Tree,
    org_members: sled::Tree,
    org_admins: sled::Tree,
    account_changes: tokio::sync::broadcast::Sender<AccountChanged>,
    /// Keyed `<org id>/<video id>`: a video is only ever found through its organization.
    videos: sled::Tree,
    refresh: sled::Tree,
    revoked_families: sled::Tree,
    /// Work still to do: queued and running jobs, by job id.
    jobs: sled::Tree,
    /// Jobs that failed for good, by video id, until the housekeeping prunes them.
    failed_jobs: sled::Tree,
    job_counts: Arc<JobCounts>,
    chat: sled::Tree,
    files: VideoFiles,
    /// The only flusher; it also knows whether the store is faulty.
    durability: Arc<durability::Flusher>,
}

impl Store {
    /// Opens (or creates) the database under `data_dir/db` with the default flush deadline.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, DEFAULT_FLUSH_TIMEOUT)
    }

    /// Opens (or creates) the database under `data_dir/db`, migrates it, removes what an
    /// interrupted upload or deletion left behind, and starts its flusher: a flush that takes
    /// longer than `flush_timeout` fails its waiters (see [`durability`]).
    pub fn open_with(data_dir: &Path, flush_timeout: Duration) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("db");
        // sled's periodic flush stays on although every acknowledged change is flushed anyway:
        // without its flusher thread, a dropped database lets go of its file lock only when
        // sled's I/O pool is done with it, so a reopen in the same process can find it locked.
        // sled caches up to 1 GiB of pages by default: on a Pi that is most of the memory,
        // and RSS would creep up with the chat history. The working set is small.
        let db = sled::Config::new().path(&path).cache_capacity(CACHE_BYTES).open().map_err(|error| match error {
            // sled wraps the failed flock in a custom error; its text is all there is to match.
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked { path: path.clone() }
            }
            other => StoreError::Sled(other),
        })?;
        // The directory entries of a database just created are made durable once.
        std::fs::File::open(&path)?.sync_all()?;
        std::fs::File::open(data_dir)?.sync_all()?;
        let durability = Arc::new(durability::Flusher::start(db.clone(), &path.join("db"), flush_timeout)?);
        let jobs = db.open_tree("jobs")?;
        let mut store = Store {
            meta: db.open_tree("meta")?,
            orgs: db.open_tree("orgs")?,
            org_names: db.open_tree("org_names")?,
            users: db.open_tree("users")?,
            user_emails: db.open_tree("user_emails")?,
            org_members: db.open_tree("org_members")?,
            org_admins: db.open_tree("org_admins")?,
            account_changes: tokio::sync::broadcast::Sender::new(accounts::ACCOUNT_CHANGES_KEPT),
            videos: db.open_tree("videos")?,
            refresh: db.open_tree("refresh_tokens")?,
            revoked_families: db.open_tree("revoked_token_families")?,
            job_counts: Arc::default(),
            jobs,
            failed_jobs: db.open_tree("failed_jobs")?,
            chat: db.open_tree("chat")?,
            files: VideoFiles::new(data_dir)?,
            durability,
        };
        // Nothing else uses the database yet: migrating and cleaning up go through the door.
        store.migrate()?;
        store.clean_up()?;
        store.job_counts = Arc::new(JobCounts::scan(&store.jobs)?);
        Ok(store)
    }

    pub fn files(&self) -> &VideoFiles {
        &self.files
    }

    /// Waits until every write made so far is durable: call before acknowledging a change.
    /// Many callers at once share a flush. Fails at the flush deadline, or at once while the
    /// store is faulty.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.durability.durable().await.map_err(not_durable)
    }

    /// [`Store::durable`] for a thread that may block (not on the async runtime).
    pub fn durable_blocking(&self) -> Result<(), StoreError> {
        self.durability.durable_blocking().map_err(not_durable)
    }

    /// Writes a small record and waits for it to be durable: whether a write gets through end
    /// to end right now (health).
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.writable()?;
        self.meta.insert(PROBE_KEY, &now_ms().to_be_bytes())?;
        self.durable().await
    }

    /// Durable writes waited for so far, and the flushes that served them.
    pub fn durability_stats(&self) -> (u64, u64) {
        self.durability.stats()
    }

    /// Why the store takes no writes, if it does not.
    pub fn fault(&self) -> Option<StorageFault> {
        self.durability.fault()
    }

    /// Refuses a write up front while the store is faulty; every write method starts here.
    fn writable(&self) -> Result<(), StoreError> {
        Ok(self.durability.writable()?)
    }

    /// Makes what is written durable (at most `within`) and stops the flusher, for shutdown.
    /// Whether it finished: false leaves a stuck flush behind.
    pub async fn close(&self, within: Duration) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + within;
        let flushed = tokio::time::timeout(within, self.durable()).await.unwrap_or(Err(StoreError::TimedOut(within)));
        let durability = self.durability.clone();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let stopped = tokio::task::spawn_blocking(move || durability.close(left)).await.unwrap_or(false);
        flushed?;
        if stopped { Ok(()) } else { Err(StoreError::TimedOut(within)) }
    }

    pub fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        Ok(self.meta.get(SCHEMA_KEY)?.map(|raw| u32::from_be_bytes(raw.as_ref().try_into().unwrap_or([0; 4]))))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        match self.schema_version()? {
            None => {
                self.meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.durable_blocking()?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::TooNew { found, known: SCHEMA_VERSION });
            }
            Some(found) if found < SCHEMA_VERSION => {
                // One version at a time; each step is idempotent, so a crash midway only
                // means it runs again.
                tracing::info!(from = found, to = SCHEMA_VERSION, "migrating the database");
                if found < 2 {
                    self.move_failed_jobs_out_of_the_queue()?;
                }
                if found < 3 {
                    self.index_accounts()?;
                }
                self.meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.durable_blocking()?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Upload temp files are always leftovers at start; video directories without a record
    /// and records without their file are halves of an interrupted upload or deletion.
    fn clean_up(&self) -> Result<(), StoreError> {
        let temp = self.files.clear_temp()?;
        let known = self.all_video_ids()?;
        let mut orphan_dirs = 0;
        for id in self.files.stored_ids()? {
            if !known.contains(&id) {
                self.files.remove(&id)?;
                orphan_dirs += 1;
            }
        }
        let mut orphan_records = 0;
        for entry in self.videos.iter() {
            let (key, raw) = entry?;
            let video: Video = serde_json::from_slice(&raw)?;
            if !self.files.original(&video.id, &video.ext).exists() {
                // A deletion cut short: finish it, thumbnails and directory too.
                self.videos.remove(key)?;
                self.files.remove(&video.id)?;
                orphan_records += 1;
            }
        }
        if temp + orphan_dirs + orphan_records > 0 {
            tracing::warn!(temp, orphan_dirs, orphan_records, "cleaned up after an interrupted run");
            self.durable_blocking()?;
        }
        Ok(())
    }
}

fn not_durable(not: durability::NotDurable) -> StoreError {
    match not {
        durability::NotDurable::Fault(fault) => StoreError::Unavailable(fault),
        durability::NotDurable::TimedOut(after) => StoreError::TimedOut(after),
        durability::NotDurable::Closed => StoreError::Closing,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A new ULID. One generator for the process keeps ids strictly increasing even within a
/// millisecond, so key order is creation order (the job queue, lists and chat rely on it).
pub fn new_id() -> String {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut slot = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let generator = slot.get_or_insert_with(ulid::Generator::new);
    // Overflow needs 2^80 ids in one millisecond; fall back to a fresh random one regardless.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new()).to_string()
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(value)?)
}

fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, StoreError> {
    Ok(serde_json::from_slice(raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the database again in this process: sled may let go of its lock a moment after
    /// the last handle is dropped (see `Store::open`).
    fn reopen(dir: &Path) -> Result<Store, StoreError> {
        for _ in 0..100 {
            match Store::open(dir) {
                Err(StoreError::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(50)),
                other => return other,
            }
        }
        Store::open(dir)
    }

    #[test]
    fn schema_version_is_written_and_newer_databases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
            store.meta.insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes()).unwrap();
            store.durable_blocking().unwrap();
        }
        assert!(matches!(reopen(dir.path()), Err(StoreError::TooNew { .. })));
    }

    #[test]
    fn schema_1_failed_jobs_move_out_of_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let failed = Job {
            id: new_id(),
            video_id: "v".into(),
            org_id: "org".into(),
            state: JobState::Failed,
            attempts: 3,
            not_before: 0,
            error: Some("broken".into()),
            updated_at: now_ms(),
            rebuild: false,
        };
        let queued = Job { id: new_id(), video_id: "w".into(), state: JobState::Queued, ..failed.clone() };
        {
            let store = Store::open(dir.path()).unwrap();
            for job in [&failed, &queued] {
                store.jobs.insert(job.id.as_bytes(), encode(job).unwrap()).unwrap();
            }
            store.meta.insert(SCHEMA_KEY, &1u32.to_be_bytes()).unwrap();
            store.durable_blocking().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(store.jobs_in(JobState::Failed).unwrap(), [failed]);
        assert_eq!(store.jobs_in(JobState::Queued).unwrap(), [queued]);
        assert_eq!(store.job_counts(), (1, 0));
    }

    #[test]
    fn schema_2_accounts_are_indexed_by_organization() {
        use crate::auth::Role;
        let dir = tempfile::tempdir().unwrap();
        let (admins, members) = {
            let store = Store::open(dir.path()).unwrap();
            let org = store.create_org("Acme").unwrap();
            for (email, role) in [("a@x", Role::Admin), ("b@x", Role::Viewer)] {
                let new = NewUser { org_id: &org.id, email, role, password_hash: String::new() };
                store.create_user(new).unwrap();
            }
            let members = store.users_of(&org.id).unwrap();
            // As a schema 2 database has them: records and email index only.
            store.org_members.clear().unwrap();
            store.org_admins.clear().unwrap();
            store.meta.insert(SCHEMA_KEY, &2u32.to_be_bytes()).unwrap();
            store.durable_blocking().unwrap();
            ((org.id.clone(), store.admin_count(&org.id).unwrap()), members)
        };
        assert_eq!(admins.1, 0);
        let store = reopen(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(store.users_of(&admins.0).unwrap(), members);
        assert_eq!(store.admin_count(&admins.0).unwrap(), 1);
    }

    #[test]
    fn a_deletion_cut_short_is_finished_at_the_next_start() {
        // Found by the power-cut soak: the files were gone but for a thumbnail, and the
        // record's removal had not been flushed.
        let dir = tempfile::tempdir().unwrap();
        let video = Video {
            id: new_id(),
            org_id: "org".into(),
            title: "t".into(),
            filename: "t.mp4".into(),
            ext: "mp4".into(),
            content_type: "video/mp4".into(),
            size: 1,
            status: VideoStatus::Processed,
            uploaded_by: "u".into(),
            created_at: 0,
            updated_at: 0,
            metadata: None,
            sensitivity: None,
            has_thumbnail: true,
            has_previews: false,
            playback: None,
            progress: None,
            error: None,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert_video(&video).unwrap();
            std::fs::create_dir_all(store.files().dir(&video.id)).unwrap();
            std::fs::write(store.files().thumbnail(&video.id, "card"), b"jpeg").unwrap();
            store.durable_blocking().unwrap();
        }
        let store = reopen(dir.path()).unwrap();
        assert!(store.video("org", &video.id).unwrap().is_none());
        assert!(!store.files().dir(&video.id).exists());
    }

    #[test]
    fn a_second_opener_is_told_the_database_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let second = Store::open(dir.path());
        assert!(matches!(second, Err(StoreError::Locked { .. })), "{:?}", second.err());
    }
}
