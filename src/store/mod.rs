//! Tally's state: one sled database in the data dir plus the video files beside it.
//!
//! Door: [`Store::open`]. Typed trees hold organizations, users, videos, jobs, refresh
//! tokens and chat; multi-key changes run in sled transactions so a crash never leaves half a
//! record, and writes the API acknowledges are flushed first ([`Store::flush`]). A schema
//! version is kept from day one with a hook for migrations.

mod accounts;
mod chat;
pub mod files;
mod jobs;
pub mod model;
mod sessions;
mod videos;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError};

pub use accounts::{NewUser, normalize_email};
pub use chat::ChatMessage;
pub use files::VideoFiles;
pub use jobs::{Job, JobState};
pub use model::{Organization, Progress, RefreshToken, User, Video, VideoStatus};
pub use sessions::RefreshRefusal;
pub use videos::{VideoPage, VideoQuery};

/// The layout this build writes. Bump it with a migration in [`Store::migrate`].
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0} already exists")]
    Conflict(&'static str),
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

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    orgs: sled::Tree,
    org_names: sled::Tree,
    users: sled::Tree,
    user_emails: sled::Tree,
    /// Keyed `<org id>/<video id>`: a video is only ever found through its organization.
    videos: sled::Tree,
    refresh: sled::Tree,
    revoked_families: sled::Tree,
    jobs: sled::Tree,
    chat: sled::Tree,
    files: VideoFiles,
    /// The first write the database failed (a full disk, an I/O error). sled refuses every
    /// write after one, so the store is read-only from then until the service restarts.
    failure: Arc<Mutex<Option<String>>>,
}

impl Store {
    /// Opens (or creates) the database under `data_dir/db`, migrates it, and removes what an
    /// interrupted upload or deletion left behind.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
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
        let store = Store {
            meta: db.open_tree("meta")?,
            orgs: db.open_tree("orgs")?,
            org_names: db.open_tree("org_names")?,
            users: db.open_tree("users")?,
            user_emails: db.open_tree("user_emails")?,
            videos: db.open_tree("videos")?,
            refresh: db.open_tree("refresh_tokens")?,
            revoked_families: db.open_tree("revoked_token_families")?,
            jobs: db.open_tree("jobs")?,
            chat: db.open_tree("chat")?,
            files: VideoFiles::new(data_dir)?,
            failure: Arc::default(),
            db,
        };
        store.migrate()?;
        store.clean_up()?;
        Ok(store)
    }

    pub fn files(&self) -> &VideoFiles {
        &self.files
    }

    /// Makes every write so far durable. Call before acknowledging a change that matters.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let flushed = self.db.flush_async().await;
        if let Err(error) = &flushed {
            self.failed(error);
        }
        flushed?;
        Ok(())
    }

    /// Makes pending writes durable now, to learn whether the database can still write.
    /// Blocking; cheap when nothing is pending.
    pub fn check_writable(&self) -> Result<(), String> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        self.db.flush().map(drop).map_err(|error| {
            self.failed(&error);
            error.to_string()
        })
    }

    /// Why the database stopped taking writes, if it did (see [`Store::check_writable`]).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok()?.clone()
    }

    fn failed(&self, error: &sled::Error) {
        let Ok(mut failure) = self.failure.lock() else { return };
        if failure.is_none() {
            tracing::error!(%error, "the database failed a write; it takes no more until the service restarts");
            *failure = Some(error.to_string());
        }
    }

    pub fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        Ok(self.meta.get(SCHEMA_KEY)?.map(|raw| u32::from_be_bytes(raw.as_ref().try_into().unwrap_or([0; 4]))))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        match self.schema_version()? {
            None => {
                self.meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::TooNew { found, known: SCHEMA_VERSION });
            }
            Some(found) if found < SCHEMA_VERSION => {
                // Future migrations run here, one version at a time, each in a transaction.
                tracing::info!(from = found, to = SCHEMA_VERSION, "migrating the database");
                self.meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
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
            self.db.flush()?;
        }
        Ok(())
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
            store.db.flush().unwrap();
        }
        assert!(matches!(reopen(dir.path()), Err(StoreError::TooNew { .. })));
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
            progress: None,
            error: None,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert_video(&video).unwrap();
            std::fs::create_dir_all(store.files().dir(&video.id)).unwrap();
            std::fs::write(store.files().thumbnail(&video.id, "card"), b"jpeg").unwrap();
            store.db.flush().unwrap();
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
