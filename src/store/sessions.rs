//! Refresh tokens: stored as SHA-256 hashes, rotated on every use, grouped in families so
//! that presenting an already-rotated token (a stolen copy) revokes the whole family.

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
        };
        self.refresh.insert(hash(&token), encode(&record)?)?;
        Ok(token)
    }

    /// Trades a refresh token for a new one of the same family.
    pub fn rotate_refresh(
        &self,
        token: &str,
        ttl_ms: u64,
    ) -> Result<Result<(RefreshToken, String), RefreshRefusal>, StoreError> {
        self.writable()?;
        let old_key = hash(token);
        let new_token = random_token();
        let new_key = hash(&new_token);
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
                revoked.insert(record.family.as_bytes(), &now_ms().to_be_bytes())?;
                return Ok(Err(RefreshRefusal::Reused));
            }
            if record.expires_at <= now_ms() {
                return Ok(Err(RefreshRefusal::Expired));
            }
            record.rotated = true;
            let updated = encode(&record).or_else(abort)?;
            refresh.insert(old_key.as_slice(), updated)?;
            let next = RefreshToken { expires_at: now_ms() + ttl_ms, rotated: false, ..record.clone() };
            refresh.insert(new_key.as_slice(), encode(&next).or_else(abort)?)?;
            Ok(Ok(record))
        })?;
        Ok(outcome.map(|record| (record, new_token)))
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
    /// Makes a token expired, as time would.
    pub(super) fn expire_refresh_for_test(&self, token: &str) {
        let raw = self.refresh.get(hash(token)).unwrap().unwrap();
        let mut record: RefreshToken = decode(&raw).unwrap();
        record.expires_at = 0;
        self.refresh.insert(hash(token), encode(&record).unwrap()).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_and_reuse_detection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.issue_refresh("u", "o", 60_000).unwrap();
        let (record, second) = store.rotate_refresh(&first, 60_000).unwrap().unwrap();
        assert_eq!((record.user_id.as_str(), record.org_id.as_str()), ("u", "o"));
        // The thief replays the first token: refused, and the family dies with it.
        assert_eq!(store.rotate_refresh(&first, 60_000).unwrap().err(), Some(RefreshRefusal::Reused));
        assert_eq!(store.rotate_refresh(&second, 60_000).unwrap().err(), Some(RefreshRefusal::Revoked));
        assert_eq!(store.rotate_refresh("nope", 60_000).unwrap().err(), Some(RefreshRefusal::Unknown));

        let expired = store.issue_refresh("u", "o", 0).unwrap();
        assert_eq!(store.rotate_refresh(&expired, 60_000).unwrap().err(), Some(RefreshRefusal::Expired));
        let logged_out = store.issue_refresh("u", "o", 60_000).unwrap();
        store.revoke_refresh(&logged_out).unwrap();
        assert_eq!(store.rotate_refresh(&logged_out, 60_000).unwrap().err(), Some(RefreshRefusal::Revoked));
    }
}
