//! Authentication: access tokens (HS256 JWTs signed with a secret generated on the box's
//! first start), password hashing ([`password`]) and login limits ([`limiter`]).
//!
//! There is no built-in secret: [`TokenKeys::load_or_create`] writes 64 random bytes to
//! `<data dir>/jwt-secret` (mode 0600) the first time and reads them afterwards. Validation
//! pins HS256, so `alg: none` or any other algorithm is refused.

pub mod limiter;
pub mod password;
pub mod setup;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hmac::{KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Where a client puts its access token: `Authorization: Bearer <token>` on HTTP (the scheme
/// is case-insensitive, RFC 9110 §11.1), the `token` field of the Socket.IO handshake's
/// `auth` object. `None` when absent or empty.
pub fn bearer_token(authorization: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The `token` of a Socket.IO handshake's `auth` payload (see [`bearer_token`]).
pub fn handshake_token(auth: &serde_json::Value) -> Option<&str> {
    auth.get("token")?.as_str().filter(|token| !token.is_empty())
}

const SECRET_FILE: &str = "jwt-secret";
const SECRET_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Editor,
    Viewer,
}

/// What an access token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Organization id.
    pub org: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

/// A signed URL's claim: read access to one video's media for one account, for elements
/// that cannot send an `Authorization` header (`<video>`, `<img>`). Useless as an access
/// token and vice versa. Serving it checks the account still exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaClaims {
    /// The account it was issued to.
    pub sub: String,
    pub vid: String,
    pub org: String,
    pub scope: String,
    pub exp: u64,
}

const MEDIA_SCOPE: &str = "media";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub struct TokenKeys {
    /// Derives a refresh token's successor (see [`TokenKeys::refresh_successor`]).
    successor: HmacSha256,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    media_validation: Validation,
}

impl TokenKeys {
    /// Fails only on an empty secret.
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<TokenKeys> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let mut media_validation = Validation::new(Algorithm::HS256);
        media_validation.leeway = 0;
        media_validation.set_required_spec_claims(&["exp"]);
        let successor = HmacSha256::new_from_slice(secret).context("token signing secret")?;
        Ok(TokenKeys {
            successor,
            media_validation,
            encoding: EncodingKey::from_secret(secret).context("token signing secret")?,
            decoding: DecodingKey::from_secret(secret).context("token signing secret")?,
            validation,
        })
    }

    /// Reads the box's signing secret, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<TokenKeys> {
        fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let path = data_dir.join(SECRET_FILE);
        let secret = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut file) => {
                let mut secret = vec![0u8; SECRET_LEN];
                rand::rng().fill_bytes(&mut secret);
                file.write_all(&secret)
                    .and_then(|()| file.sync_all())
                    .and_then(|()| sync_dir(data_dir))
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated a new token signing secret");
                secret
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                let mode = file.metadata()?.permissions().mode();
                if mode & 0o077 != 0 {
                    anyhow::bail!("{} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777);
                }
                let mut secret = Vec::new();
                file.read_to_end(&mut secret)?;
                if secret.len() < 32 {
                    anyhow::bail!("{} holds {} bytes; a secret needs at least 32", path.display(), secret.len());
                }
                secret
            }
            Err(error) => {
                return Err(error).with_context(|| format!("creating {}", path.display()));
            }
        };
        TokenKeys::from_secret(&secret)
    }

    pub fn issue(&self, user: &str, org: &str, role: Role, ttl: Duration) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = Claims { sub: user.to_owned(), org: org.to_owned(), role, iat: now, exp: now + ttl.as_secs() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).context("signing token")
    }

    /// The refresh token that replaces `token` when it is rotated: always the same for the
    /// same token, so a second tab presenting it gets the same successor, and unknowable
    /// without the box's secret, so an old token says nothing about the live one.
    pub fn refresh_successor(&self, token: &str) -> String {
        use base64::Engine as _;
        let mut mac = self.successor.clone();
        mac.update(b"tally refresh successor\0");
        mac.update(token.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Signs a media URL token for one video, for account `user`.
    pub fn issue_media(&self, user: &str, video_id: &str, org: &str, ttl: Duration) -> anyhow::Result<String> {
        let claims = MediaClaims {
            sub: user.to_owned(),
            vid: video_id.to_owned(),
            org: org.to_owned(),
            scope: MEDIA_SCOPE.to_owned(),
            exp: unix_now() + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).context("signing media token")
    }

    pub fn verify_media(&self, token: &str) -> Result<MediaClaims, TokenError> {
        match jsonwebtoken::decode::<MediaClaims>(token, &self.decoding, &self.media_validation) {
            Ok(data) if data.claims.scope == MEDIA_SCOPE => Ok(data.claims),
            Ok(_) => Err(TokenError::Invalid),
            Err(error) if matches!(error.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(TokenError::Expired)
            }
            Err(_) => Err(TokenError::Invalid),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(error) if matches!(error.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(TokenError::Expired)
            }
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

/// Makes a new file's directory entry durable (a power cut must not forget the file).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn issues_and_verifies() {
        let keys = TokenKeys::from_secret(&[7; 64]).unwrap();
        let token = keys.issue("u1", "o1", Role::Editor, Duration::from_secs(60)).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.org.as_str(), claims.role), ("u1", "o1", Role::Editor));
    }

    #[test]
    fn refuses_other_keys_expired_and_alg_none() {
        let keys = TokenKeys::from_secret(&[7; 64]).unwrap();
        let other = TokenKeys::from_secret(&[8; 64]).unwrap();
        let token = other.issue("u1", "o1", Role::Admin, Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
        let expired = keys.issue("u1", "o1", Role::Admin, Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(keys.verify(&expired), Err(TokenError::Expired));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(r#"{{"sub":"u","org":"o","role":"admin","iat":0,"exp":{}}}"#, unix_now() + 60));
        assert_eq!(keys.verify(&format!("{header}.{body}.")), Err(TokenError::Invalid));
        assert_eq!(keys.verify("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn media_and_access_tokens_do_not_stand_in_for_each_other() {
        let keys = TokenKeys::from_secret(&[7; 64]).unwrap();
        let media = keys.issue_media("u1", "v1", "o1", Duration::from_secs(60)).unwrap();
        let access = keys.issue("u1", "o1", Role::Admin, Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify_media(&media).unwrap().vid, "v1");
        assert_eq!(keys.verify(&media), Err(TokenError::Invalid));
        assert_eq!(keys.verify_media(&access), Err(TokenError::Invalid));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
            assert_eq!(bearer_token(header.as_bytes()), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", ""] {
            assert_eq!(bearer_token(header.as_bytes()), None, "{header:?}");
        }
    }

    #[test]
    fn a_refresh_successor_is_stable_and_needs_the_secret() {
        let keys = TokenKeys::from_secret(&[7; 64]).unwrap();
        let other = TokenKeys::from_secret(&[8; 64]).unwrap();
        assert_eq!(keys.refresh_successor("t"), keys.refresh_successor("t"));
        assert_ne!(keys.refresh_successor("t"), keys.refresh_successor("u"));
        assert_ne!(keys.refresh_successor("t"), other.refresh_successor("t"));
        assert_eq!(keys.refresh_successor("t").len(), 43, "256 bits, base64url");
    }

    #[test]
    fn secret_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let token = keys.issue("u", "o", Role::Viewer, Duration::from_secs(60)).unwrap();
        let mode = fs::metadata(dir.path().join(SECRET_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = TokenKeys::load_or_create(dir.path()).unwrap();
        assert!(again.verify(&token).is_ok(), "the same secret is read back");
        fs::set_permissions(dir.path().join(SECRET_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(TokenKeys::load_or_create(dir.path()).is_err());
    }
}
