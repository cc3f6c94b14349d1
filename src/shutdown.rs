//! Stopping in bounded time. SIGTERM (or Ctrl-C) starts a clock: the service stops accepting,
//! lets requests in flight finish, closes sockets at the transport, requeues running jobs and
//! makes the store durable, each step within what is left of the budget ([`Deadline`]). How it
//! went is an [`Exit`], whose code `tally serve` exits with.
//!
//! Signals are taken on a thread of their own, not on the async runtime: if every runtime
//! thread were stuck (in a write that never returns, say), a handler on the runtime would
//! never run. The process also ends by itself, with an error, should the orderly shutdown
//! overrun its budget by a second, or at once on a second signal (someone pressing Ctrl-C
//! again means it).
//!
//! Door: [`on_signal`], [`Deadline`], [`Exit`].

use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use tokio::sync::watch;

/// How the service ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop, and everything acknowledged is durable.
    Stopped,
    /// Stopped by itself to be started again (its database failed a write and space is back).
    Restart,
    /// The shutdown could not finish what it had to (a stuck store): the reason.
    Unfinished(String),
}

/// `tally serve` exits with this (EX_TEMPFAIL) to be started again: systemd's
/// `Restart=on-failure` does it.
pub const RESTART_EXIT_CODE: i32 = 75;
/// A shutdown that could not finish; systemd restarts the service.
pub const UNFINISHED_EXIT_CODE: i32 = 1;

impl Exit {
    pub fn code(&self) -> i32 {
        match self {
            Exit::Stopped => 0,
            Exit::Restart => RESTART_EXIT_CODE,
            Exit::Unfinished(_) => UNFINISHED_EXIT_CODE,
        }
    }
}

/// The time a shutdown has left.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    pub fn after(budget: Duration) -> Deadline {
        Deadline { at: Instant::now() + budget }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// What is left once `reserve` is kept back for the steps after this one.
    pub fn remaining_but(&self, reserve: Duration) -> Duration {
        self.remaining().saturating_sub(reserve)
    }
}

/// Listens for SIGTERM and SIGINT on a thread of its own. The receiver turns true at the
/// first signal; from then on the process exits by itself `budget` plus a second later if it
/// is still running, or at a second signal, whatever the runtime is doing.
pub fn on_signal(budget: Duration) -> std::io::Result<watch::Receiver<bool>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let (tx, rx) = watch::channel(false);
    std::thread::Builder::new().name("tally-signals".into()).spawn(move || {
        let mut pending = signals.forever();
        let Some(signal) = pending.next() else { return };
        tracing::info!(signal, budget_ms = budget.as_millis() as u64, "shutting down");
        let _ = tx.send(true);
        let overrun = std::thread::Builder::new().name("tally-shutdown-deadline".into()).spawn(move || {
            std::thread::sleep(budget + Duration::from_secs(1));
            tracing::error!(
                budget_ms = budget.as_millis() as u64,
                "the shutdown overran its budget; exiting without finishing it"
            );
            std::process::exit(UNFINISHED_EXIT_CODE);
        });
        if overrun.is_err() {
            tracing::error!("cannot watch the shutdown's deadline");
        }
        if let Some(again) = pending.next() {
            tracing::warn!(signal = again, "a second signal: exiting without finishing the shutdown");
            std::process::exit(UNFINISHED_EXIT_CODE);
        }
    })?;
    Ok(rx)
}
