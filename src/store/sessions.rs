//! Refresh tokens: stored as SHA-256 hashes, rotated on every use, grouped in families so
//! that presenting an already-rotated token (a stolen copy) revokes the whole family.
//!
//! The real web presents a token twice on its own: two tabs refreshing at once with the same
//! cookie, a retry after a lost answer. So a rotated token stays good for a short grace
//! window, in which it gets the same successor again; only a reuse after the window counts as
//! theft. The successor is derived from the token with a key the database does not hold (the
//! caller's [`crate::auth::TokenKeys::refresh_successor`]), so the store keeps hashes only.

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sled::Transactional;

use super::{RefreshToken, Store, StoreError, abort, decode, encode, new_id, now_ms};

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefusal {
    Unknown,
    Expired,
    Revoked,
    /// A rotated token came back: its family is now revoked.
    Reused,
}

/// Rotations a grace-window answer follows to find the family's live token.
const MAX_GRACE_HOPS: usize = 16;

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

impl Store {
    /// Issues a refresh token, in a new family unless `family` is given.
    pub fn issue_refresh(&self, user_id: &str, org_id: &str, ttl_ms: u64) -> Result<String, StoreError> {
        self.writable()?;
        let token = random_token();
        let record = RefreshToken {
            user_id: user_id.to_owned(),
            org_id: org_id.to_owned(),
            family: new_id(),
            expires_at: now_ms() + ttl_ms,
            rotated: false,
            rotated_at: 0,
        };
        self.refresh.insert(hash(&token), encode(&record)?)?;
        Ok(token)
    }

    /// Trades a refresh token for its successor (`successor_of(token)`), of the same family.
    /// A token rotated less than `grace_ms` ago gets the family's live token again: its
    /// successor, or that one's if another tab has rotated it meanwhile.
    pub fn rotate_refresh(
        &self,
        token: &str,
        successor_of: impl Fn(&str) -> String,
        ttl_ms: u64,
        grace_ms: u64,
    ) -> Result<Result<(RefreshToken, String), RefreshRefusal>, StoreError> {
        self.writable()?;
        let old_key = hash(token);
        let successor = successor_of(token);
        let new_key = hash(&successor);
        let outcome = (&self.refresh, &self.revoked_families).transaction(|(refresh, revoked)| {
            let Some(raw) = refresh.get(&old_key)? else {
                return Ok(Err(RefreshRefusal::Unknown));
            };
            let mut record: RefreshToken = match decode(&raw) {
                Ok(record) => record,
                Err(error) => return abort(error),
            };
            if revoked.get(record.family.as_bytes())?.is_some() {
                return Ok(Err(RefreshRefusal::Revoked));
            }
            if record.rotated {
                // Another tab (or a retry) within the window: the live token, nothing new.
                if now_ms() < record.rotated_at.saturating_add(grace_ms) {
                    let mut next = successor.clone();
                    for _ in 0..MAX_GRACE_HOPS {
                        let Some(raw) = refresh.get(hash(&next))? else { break };
                        if !decode::<RefreshToken>(&raw).or_else(abort)?.rotated {
                            return Ok(Ok((record, next)));
                        }
                        next = successor_of(&next);
                    }
                }
                revoked.insert(record.family.as_bytes(), &now_ms().to_be_bytes())?;
                return Ok(Err(RefreshRefusal::Reused));
            }
            if record.expires_at <= now_ms() {
                return Ok(Err(RefreshRefusal::Expired));
            }
            record.rotated = true;
            record.rotated_at = now_ms();
            let updated = encode(&record).or_else(abort)?;
            refresh.insert(old_key.as_slice(), updated)?;
            let next = RefreshToken { expires_at: now_ms() + ttl_ms, rotated: false, rotated_at: 0, ..record.clone() };
            refresh.insert(new_key.as_slice(), encode(&next).or_else(abort)?)?;
            Ok(Ok((record, successor.clone())))
        })?;
        Ok(outcome)
    }

    /// Revokes the family of `token` (logout). Unknown tokens are ignored.
    pub fn revoke_refresh(&self, token: &str) -> Result<(), StoreError> {
        self.writable()?;
        if let Some(raw) = self.refresh.get(hash(token))? {
            let record: RefreshToken = decode(&raw)?;
            self.revoked_families.insert(record.family.as_bytes(), &now_ms().to_be_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl Store {
    /// Rotates with a successor derived as the service does, and no grace window.
    pub(super) fn rotate_for_test(
        &self,
        token: &str,
        ttl_ms: u64,
    ) -> Result<Result<(RefreshToken, String), RefreshRefusal>, StoreError> {
        self.rotate_refresh(token, test_successor, ttl_ms, 0)
    }

    /// Makes a token expired, as time would.
    pub(super) fn expire_refresh_for_test(&self, token: &str) {
        let raw = self.refresh.get(hash(token)).unwrap().unwrap();
        let mut record: RefreshToken = decode(&raw).unwrap();
        record.expires_at = 0;
        self.refresh.insert(hash(token), encode(&record).unwrap()).unwrap();
    }
}

#[cfg(test)]
fn test_successor(token: &str) -> String {
    crate::auth::TokenKeys::from_secret(&[7; 64]).map(|keys| keys.refresh_successor(token)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_and_reuse_detection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.issue_refresh("u", "o", 60_000).unwrap();
        let (record, second) = store.rotate_for_test(&first, 60_000).unwrap().unwrap();
        assert_eq!((record.user_id.as_str(), record.org_id.as_str()), ("u", "o"));
        // The thief replays the first token: refused, and the family dies with it.
        assert_eq!(store.rotate_for_test(&first, 60_000).unwrap().err(), Some(RefreshRefusal::Reused));
        assert_eq!(store.rotate_for_test(&second, 60_000).unwrap().err(), Some(RefreshRefusal::Revoked));
        assert_eq!(store.rotate_for_test("nope", 60_000).unwrap().err(), Some(RefreshRefusal::Unknown));

        let expired = store.issue_refresh("u", "o", 0).unwrap();
        assert_eq!(store.rotate_for_test(&expired, 60_000).unwrap().err(), Some(RefreshRefusal::Expired));
        let logged_out = store.issue_refresh("u", "o", 60_000).unwrap();
        store.revoke_refresh(&logged_out).unwrap();
        assert_eq!(store.rotate_for_test(&logged_out, 60_000).unwrap().err(), Some(RefreshRefusal::Revoked));
    }

    #[test]
    fn a_rotated_token_gets_the_same_successor_within_the_grace_window_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.issue_refresh("u", "o", 60_000).unwrap();
        let next = test_successor(&first);
        let rotate = |token: &str, grace| store.rotate_refresh(token, test_successor, 60_000, grace).unwrap();
        let (_, a) = rotate(&first, 60_000).unwrap();
        let (_, b) = rotate(&first, 60_000).expect("a second tab within the window");
        assert_eq!((a.as_str(), b.as_str()), (next.as_str(), next.as_str()));
        let (_, third) = rotate(&next, 60_000).expect("the successor works");
        // A late tab after the successor was itself rotated gets the live token, not a spent one.
        let (_, late) = rotate(&first, 60_000).expect("still within the window");
        assert_eq!(late, third);
        // Past the window (none here), the old token is a stolen copy: the family dies.
        assert_eq!(rotate(&first, 0).err(), Some(RefreshRefusal::Reused));
        assert_eq!(rotate(&third, 60_000).err(), Some(RefreshRefusal::Revoked));
    }
}
