//! The one door to durability: every acknowledged write waits here, and nothing else flushes.
//!
//! sled 0.34.7 deadlocks for good when flushes run concurrently (each `flush_async` parks a
//! thread of sled's small I/O pool in `make_stable`, and the writes they wait for need that
//! pool: spacejam/sled#1308, #1241). So callers never flush: they take a ticket after their
//! writes and wait. One thread runs one blocking flush at a time, and each flush covers every
//! ticket taken before it began (group commit): a hundred concurrent acks cost a flush or two,
//! not a hundred. sled's own periodic flusher stays on; it is the one concurrent flusher sled
//! is built around, and the only thing that cleans its log segments.
//!
//! sled makes its log stable with `sync_file_range`, which neither flushes the device's write
//! cache nor persists the file's size when the log grew; only its periodic flusher fsyncs,
//! every half second. A power cut could take an acknowledged write with it. So each flush
//! here ends with an `fdatasync` of the log file (through a handle of our own: on Linux the
//! call syncs the file, whichever descriptor asks), once per group, not once per write.
//!
//! Two faults are told apart, because they call for different cures:
//! - [`StorageFault::Failed`]: sled failed a write (a full disk, an I/O error). It refuses
//!   every write after one, for good; reads go on, and a restart once space is back cures it.
//! - [`StorageFault::Stalled`]: a flush has not returned within its deadline (a dying card,
//!   a deadlock). Its waiters are failed at the deadline, later writes are refused at once, and
//!   it lasts until the flush returns; the watchdog stops meanwhile, so systemd restarts a box
//!   whose disk never answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Why the store takes no writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageFault {
    /// sled failed a write and refuses all writes until the service restarts.
    #[error("the database failed a write: {message}")]
    Failed {
        message: String,
        /// ENOSPC or EDQUOT: a full disk, which space coming back cures.
        disk_full: bool,
    },
    /// A flush has been running longer than its deadline.
    #[error("a database flush has been stuck for {} s", .0.as_secs())]
    Stalled(Duration),
}

/// How far durability has got, as the flusher publishes it.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every ticket up to this one is durable.
    durable: u64,
    /// Set once a flush fails; sticky.
    failed: Option<StorageFault>,
}

struct State {
    /// The last ticket handed out. A ticket is taken after its writes, so a flush that starts
    /// after it covers them.
    issued: u64,
    /// When the flush running now began.
    in_flight: Option<Instant>,
    /// Whether the running flush's stall has been logged (once per stall).
    stall_logged: bool,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher thread: a ticket was taken, or it should close.
    work: Condvar,
    /// Wakes blocking waiters: a flush ended (the watch below is for async ones).
    done: Condvar,
    progress: watch::Sender<Progress>,
    deadline: Duration,
    /// Flushes run so far.
    flushes: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters behind: still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fault in force, if any. Logs a stall the first time it is seen.
    fn fault(&self, state: &mut State) -> Option<StorageFault> {
        if let Some(failed) = self.progress.borrow().failed.clone() {
            return Some(failed);
        }
        let started = state.in_flight?;
        let stuck = started.elapsed();
        if stuck < self.deadline {
            return None;
        }
        if !state.stall_logged {
            state.stall_logged = true;
            tracing::error!(
                stuck_ms = stuck.as_millis() as u64,
                deadline_ms = self.deadline.as_millis() as u64,
                "a database flush is stuck past its deadline; writes are refused until it returns"
            );
        }
        Some(StorageFault::Stalled(stuck))
    }
}

/// The single flusher of a database; see the module's notes.
pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What a waiter gets when its writes could not be made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NotDurable {
    Fault(StorageFault),
    /// Flushes are slow rather than stuck: this waiter's turn did not come within the deadline.
    TimedOut(Duration),
    /// The flusher is gone (the store is closing).
    Closed,
}

impl Flusher {
    /// Starts the flusher thread for `db`, whose log is the file `log`. A flush that takes
    /// longer than `deadline` fails its waiters and stalls the store until it returns.
    pub(super) fn start(db: sled::Db, log: &std::path::Path, deadline: Duration) -> std::io::Result<Flusher> {
        let log = std::fs::File::open(log)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { issued: 0, in_flight: None, stall_logged: false, closing: false }),
            work: Condvar::new(),
            done: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
            deadline,
            flushes: AtomicU64::new(0),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new().name("tally-flusher".into()).spawn(move || run(&shared, &db, &log))?
        };
        Ok(Flusher { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Refuses a write up front while the store is faulty.
    pub(super) fn writable(&self) -> Result<(), StorageFault> {
        let mut state = self.shared.lock();
        match self.shared.fault(&mut state) {
            Some(fault) => Err(fault),
            None => Ok(()),
        }
    }

    /// Writes waited for so far, and the flushes that made them durable: group commit at work.
    pub(super) fn stats(&self) -> (u64, u64) {
        (self.shared.lock().issued, self.shared.flushes.load(Ordering::Relaxed))
    }

    /// The fault in force, if any.
    pub(super) fn fault(&self) -> Option<StorageFault> {
        self.writable().err()
    }

    /// A ticket for the writes made so far, and the flusher woken for it.
    fn ticket(&self) -> Result<u64, NotDurable> {
        let ticket = {
            let mut state = self.shared.lock();
            if let Some(fault) = self.shared.fault(&mut state) {
                return Err(NotDurable::Fault(fault));
            }
            if state.closing {
                return Err(NotDurable::Closed);
            }
            state.issued += 1;
            state.issued
        };
        self.shared.work.notify_one();
        Ok(ticket)
    }

    /// [`Flusher::durable`] for a thread that may block (opening the store, the CLI).
    pub(super) fn durable_blocking(&self) -> Result<(), NotDurable> {
        let deadline = Instant::now() + self.shared.deadline;
        let ticket = self.ticket()?;
        let mut state = self.shared.lock();
        loop {
            // The flusher publishes under the state lock, so nothing is missed between the
            // look and the wait.
            let progress = self.shared.progress.borrow().clone();
            if progress.durable >= ticket {
                return Ok(());
            }
            if let Some(fault) = progress.failed {
                return Err(NotDurable::Fault(fault));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self
                    .shared
                    .fault(&mut state)
                    .map_or(NotDurable::TimedOut(self.shared.deadline), NotDurable::Fault));
            }
            state = self.shared.done.wait_timeout(state, deadline - now).map_or_else(|p| p.into_inner().0, |(s, _)| s);
        }
    }

    /// Waits until every write made before this call is durable, for at most the deadline.
    pub(super) async fn durable(&self) -> Result<(), NotDurable> {
        let ticket = self.ticket()?;
        let mut progress = self.shared.progress.subscribe();
        let waited = tokio::time::timeout(
            self.shared.deadline,
            progress.wait_for(|progress| progress.durable >= ticket || progress.failed.is_some()),
        )
        .await;
        match waited {
            Ok(Ok(progress)) if progress.durable >= ticket => Ok(()),
            Ok(Ok(progress)) => Err(progress.failed.clone().map_or(NotDurable::Closed, NotDurable::Fault)),
            Ok(Err(_)) => Err(NotDurable::Closed),
            Err(_) => {
                let mut state = self.shared.lock();
                Err(self.shared.fault(&mut state).map_or(NotDurable::TimedOut(self.shared.deadline), NotDurable::Fault))
            }
        }
    }

    /// Stops the thread after the flushes asked for so far; waits for it at most `within`
    /// (a stuck flush is left behind: the process is about to exit).
    pub(super) fn close(&self, within: Duration) -> bool {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
        let Some(thread) = self.thread.lock().ok().and_then(|mut thread| thread.take()) else { return true };
        let deadline = Instant::now() + within;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::error!(
                    within_ms = within.as_millis() as u64,
                    "the database flusher did not finish; leaving it"
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
        true
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // The last handle of the store is gone: let the thread go, and with it its handle of
        // the database, so that the database's lock is released.
        self.close(self.shared.deadline);
    }
}

/// The flusher thread: one flush at a time, each covering every ticket issued before it.
fn run(shared: &Shared, db: &sled::Db, log: &std::fs::File) {
    let mut durable = 0;
    loop {
        let target = {
            let mut state = shared.lock();
            while state.issued == durable && !state.closing {
                state = shared.work.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.issued == durable {
                return; // closing, and nothing left to flush
            }
            state.in_flight = Some(Instant::now());
            state.stall_logged = false;
            state.issued
        };
        let started = Instant::now();
        let flushed = db.flush().and_then(|_| log.sync_data().map_err(sled::Error::Io));
        let took = started.elapsed();
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        let mut state = shared.lock();
        state.in_flight = None;
        if took >= shared.deadline {
            tracing::warn!(took_ms = took.as_millis() as u64, "a stuck database flush returned");
        }
        match flushed {
            Ok(_) => {
                durable = target;
                shared.progress.send_modify(|progress| progress.durable = target);
                shared.done.notify_all();
            }
            Err(error) => {
                let disk_full = matches!(&error, sled::Error::Io(io) if crate::store::is_disk_full(io));
                tracing::error!(%error, "the database failed a write; it takes no more until the service restarts");
                let fault = StorageFault::Failed { message: error.to_string(), disk_full };
                shared.progress.send_modify(|progress| {
                    progress.failed.get_or_insert(fault);
                });
                shared.done.notify_all();
                // Every write after a failure is refused: nothing is left to flush.
                durable = state.issued;
                if state.closing {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        (dir, db)
    }

    fn start(dir: &tempfile::TempDir, db: &sled::Db) -> Flusher {
        Flusher::start(db.clone(), &dir.path().join("db/db"), Duration::from_secs(10)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundreds_of_concurrent_waiters_share_a_few_flushes() {
        let (dir, db) = db();
        let flusher = Arc::new(start(&dir, &db));
        let waiters: Vec<_> = (0..500u32)
            .map(|n| {
                let (db, flusher) = (db.clone(), flusher.clone());
                tokio::spawn(async move {
                    db.insert(n.to_be_bytes(), vec![1; 100]).unwrap();
                    flusher.durable().await
                })
            })
            .collect();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Ok(()));
        }
        let (waits, flushes) = flusher.stats();
        assert_eq!(waits, 500);
        assert!(flushes < 250, "{flushes} flushes for 500 concurrent waiters: no group commit");
        assert!(flusher.close(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn a_closed_flusher_refuses_new_waiters_and_releases_the_database() {
        let (dir, db) = db();
        let flusher = start(&dir, &db);
        db.insert(b"k", b"v").unwrap();
        assert_eq!(flusher.durable().await, Ok(()));
        assert!(flusher.close(Duration::from_secs(5)));
        assert_eq!(flusher.durable().await, Err(NotDurable::Closed));
        drop((flusher, db));
        // The thread's handle is gone with it: the database opens again.
        let mut reopened = None;
        for _ in 0..100 {
            match sled::Config::new().path(dir.path().join("db")).open() {
                Ok(db) => {
                    reopened = Some(db);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        assert_eq!(reopened.expect("reopens").get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}
