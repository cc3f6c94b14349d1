//! What the store keeps, bounded: chat history beyond its retention, refresh tokens once
//! expired, revoked families once no token of theirs is left, and failed jobs past their keep
//! time. [`Store::prune`] does one pass; the housekeeping runs it now and then, off the async
//! runtime (a pass walks whole trees).

use std::collections::HashSet;
use std::time::Duration;

use super::{Job, RefreshToken, Store, StoreError, decode, now_ms};

/// How much the store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Chat messages kept per organization, the newest; 0 keeps every one.
    pub chat_messages: usize,
    /// Chat messages older than this are removed.
    pub chat_age: Option<Duration>,
    /// Failed jobs are kept this long after they failed, for diagnosis.
    pub failed_jobs: Duration,
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub chat_messages: usize,
    pub refresh_tokens: usize,
    pub revoked_families: usize,
    pub failed_jobs: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.chat_messages + self.refresh_tokens + self.revoked_families + self.failed_jobs
    }
}

/// Removals are applied in batches of this many keys.
const BATCH: usize = 1000;

impl Store {
    /// One pass over everything with a retention. Blocking: walks whole trees.
    pub fn prune(&self, retention: &Retention) -> Result<Pruned, StoreError> {
        self.writable()?;
        let now = now_ms();
        let (refresh_tokens, revoked_families) = self.prune_sessions(now)?;
        Ok(Pruned {
            chat_messages: self.prune_chat(retention, now)?,
            refresh_tokens,
            revoked_families,
            failed_jobs: self.prune_failed_jobs(retention.failed_jobs, now)?,
        })
    }

    fn prune_chat(&self, retention: &Retention, now: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.orgs.iter() {
            let (org_id, _) = entry?;
            let org_id = String::from_utf8_lossy(&org_id);
            let lower = format!("{org_id}/");
            // Keys are `<org>/<ULID>`, and a ULID begins with its time: everything before the
            // ULID of the cut-off instant is older than it.
            let upper = match retention.chat_age {
                Some(age) => {
                    let cutoff = now.saturating_sub(age.as_millis() as u64);
                    format!("{org_id}/{}", ulid::Ulid::from_parts(cutoff, 0))
                }
                None => format!("{org_id}0"),
            };
            let too_old = match retention.chat_age {
                Some(_) => self.chat.range(lower.as_bytes()..upper.as_bytes()).keys().collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            removed += too_old.len();
            self.remove_all(&self.chat, too_old)?;
            if retention.chat_messages > 0 {
                let end = format!("{org_id}0");
                let beyond: Vec<_> = self
                    .chat
                    .range(lower.as_bytes()..end.as_bytes())
                    .keys()
                    .rev()
                    .skip(retention.chat_messages)
                    .collect::<Result<_, _>>()?;
                removed += beyond.len();
                self.remove_all(&self.chat, beyond)?;
            }
        }
        Ok(removed)
    }

    /// Expired refresh tokens go, but for a rotated one whose family still has a live token:
    /// presented, it must still be seen as reuse and end that family (its thief's session). A
    /// revoked family goes once none of its tokens is left, so a copy of one can never be
    /// presented again against a forgotten revocation.
    fn prune_sessions(&self, now: u64) -> Result<(usize, usize), StoreError> {
        let mut expired = Vec::new();
        let mut live_families = HashSet::new();
        for entry in self.refresh.iter() {
            let (key, raw) = entry?;
            let token: RefreshToken = decode(&raw)?;
            if token.expires_at <= now {
                expired.push((key, token));
            } else {
                live_families.insert(token.family);
            }
        }
        let expired: Vec<_> = expired
            .into_iter()
            .filter(|(_, token)| !(token.rotated && live_families.contains(&token.family)))
            .map(|(key, _)| key)
            .collect();
        let tokens = expired.len();
        self.remove_all(&self.refresh, expired)?;
        let mut forgotten = Vec::new();
        for entry in self.revoked_families.iter() {
            let (family, _) = entry?;
            if !live_families.contains(String::from_utf8_lossy(&family).as_ref()) {
                forgotten.push(family);
            }
        }
        let families = forgotten.len();
        self.remove_all(&self.revoked_families, forgotten)?;
        Ok((tokens, families))
    }

    fn prune_failed_jobs(&self, keep: Duration, now: u64) -> Result<usize, StoreError> {
        let cutoff = now.saturating_sub(keep.as_millis() as u64);
        let mut old = Vec::new();
        for entry in self.failed_jobs.iter() {
            let (key, raw) = entry?;
            if decode::<Job>(&raw)?.updated_at <= cutoff {
                old.push(key);
            }
        }
        let removed = old.len();
        self.remove_all(&self.failed_jobs, old)?;
        Ok(removed)
    }

    fn remove_all(&self, tree: &sled::Tree, keys: Vec<sled::IVec>) -> Result<(), StoreError> {
        for chunk in keys.chunks(BATCH) {
            self.writable()?;
            let mut batch = sled::Batch::default();
            for key in chunk {
                batch.remove(key.clone());
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobState, Video, VideoStatus};

    fn retention() -> Retention {
        Retention { chat_messages: 3, chat_age: None, failed_jobs: Duration::from_secs(3600) }
    }

    #[test]
    fn chat_keeps_the_newest_per_organization_and_nothing_past_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (acme, globex) = (store.create_org("Acme").unwrap(), store.create_org("Globex").unwrap());
        for n in 0..5 {
            store.add_chat_message(&acme.id, "u", "a@x", &format!("acme {n}")).unwrap();
        }
        store.add_chat_message(&globex.id, "u", "g@x", "globex 0").unwrap();
        assert_eq!(store.prune(&retention()).unwrap().chat_messages, 2);
        let texts = |org: &str| -> Vec<String> {
            store.chat_history(org, 100, None).unwrap().into_iter().map(|m| m.text).collect()
        };
        assert_eq!(texts(&acme.id), ["acme 2", "acme 3", "acme 4"]);
        assert_eq!(texts(&globex.id), ["globex 0"], "another organization's history is its own");

        let by_age = Retention { chat_age: Some(Duration::ZERO), ..retention() };
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(store.prune(&by_age).unwrap().chat_messages, 4);
        assert!(texts(&acme.id).is_empty() && texts(&globex.id).is_empty());
    }

    #[test]
    fn expired_tokens_and_revocations_nothing_refers_to_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let live = store.issue_refresh("u", "o", 60_000).unwrap();
        let _expired = store.issue_refresh("u", "o", 0).unwrap();
        // A revoked family with a token still unexpired: the revocation must stay.
        let revoked = store.issue_refresh("u", "o", 60_000).unwrap();
        store.revoke_refresh(&revoked).unwrap();
        // A revoked family whose only token has expired: both go.
        let gone = store.issue_refresh("u", "o", 0).unwrap();
        store.revoke_refresh(&gone).unwrap();
        // A rotated token, expired, whose family lives on: kept, so that it still gives the
        // family's thief away.
        let stolen = store.issue_refresh("u", "o", 60_000).unwrap();
        let (_, current) = store.rotate_for_test(&stolen, 60_000).unwrap().unwrap();
        store.expire_refresh_for_test(&stolen);
        let pruned = store.prune(&retention()).unwrap();
        assert_eq!((pruned.refresh_tokens, pruned.revoked_families), (2, 1));
        assert_eq!(store.rotate_for_test(&stolen, 60_000).unwrap().err(), Some(crate::store::RefreshRefusal::Reused));
        assert_eq!(store.rotate_for_test(&current, 60_000).unwrap().err(), Some(crate::store::RefreshRefusal::Revoked));
        assert!(store.rotate_for_test(&live, 60_000).unwrap().is_ok());
        assert_eq!(
            store.rotate_for_test(&revoked, 60_000).unwrap().err(),
            Some(crate::store::RefreshRefusal::Revoked),
            "a revocation outlives its tokens"
        );
    }

    #[test]
    fn failed_jobs_are_kept_for_a_while_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let video = Video { id: "v".into(), ..crate::store::videos::tests::video("org", "v", VideoStatus::Queued) };
        store.insert_video_with_job(&video).unwrap();
        let mut job = store.claim_job().unwrap().unwrap();
        job.state = JobState::Failed;
        job.updated_at = now_ms();
        store.finish_job(&job, &video).unwrap();
        assert_eq!(store.prune(&retention()).unwrap().failed_jobs, 0, "a fresh failure stays");
        let keep_none = Retention { failed_jobs: Duration::ZERO, ..retention() };
        assert_eq!(store.prune(&keep_none).unwrap().failed_jobs, 1);
        assert!(store.jobs_in(JobState::Failed).unwrap().is_empty());
    }
}
