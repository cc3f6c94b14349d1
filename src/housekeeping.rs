//! Keeps what the box holds bounded over months of use: a pass of [`Store::prune`] soon after
//! start and then every `housekeeping_every_secs` (ten minutes), on a blocking thread (it walks
//! whole trees), then made durable through the store's one door like any other write. A pass
//! that fails (a faulty store) is logged and tried again at the next one.
//!
//! Door: [`start`].

use std::time::Duration;

use crate::store::{Retention, Store};

/// The first pass waits at most this long, so it does not compete with a start-up's crowd of
/// reconnecting clients.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// Runs a pass every `every` until the returned handle aborts it (at shutdown: the task holds
/// the store).
pub fn start(store: Store, retention: Retention, every: Duration) -> tokio::task::AbortHandle {
    let every = every.max(Duration::from_millis(100));
    let task = tokio::spawn(async move {
        tokio::time::sleep(FIRST_PASS_AFTER.min(every)).await;
        loop {
            pass(&store, &retention).await;
            tokio::time::sleep(every).await;
        }
    });
    task.abort_handle()
}

async fn pass(store: &Store, retention: &Retention) {
    let (pruning, rules) = (store.clone(), retention.clone());
    let pruned = match tokio::task::spawn_blocking(move || pruning.prune(&rules)).await {
        Ok(Ok(pruned)) => pruned,
        Ok(Err(error)) => {
            tracing::warn!(%error, "housekeeping could not prune the store; trying again later");
            return;
        }
        Err(error) => {
            tracing::error!(%error, "the housekeeping pass panicked");
            return;
        }
    };
    if pruned.total() == 0 {
        return;
    }
    match store.durable().await {
        Ok(()) => tracing::info!(
            chat_messages = pruned.chat_messages,
            refresh_tokens = pruned.refresh_tokens,
            revoked_families = pruned.revoked_families,
            failed_jobs = pruned.failed_jobs,
            "housekeeping pruned the store"
        ),
        Err(error) => tracing::warn!(%error, "housekeeping pruned the store but could not make it durable yet"),
    }
}
