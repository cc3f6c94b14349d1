//! Settings: embedded defaults, then a TOML file, then `TALLY_*` environment variables.
//!
//! Nested keys use a double underscore in the environment, e.g.
//! `TALLY_REALTIME__PING_INTERVAL_MS=300` sets `[realtime] ping_interval_ms = 300`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::chat::ChatConfig;
use crate::engineio::EngineConfig;
use crate::http::api::ApiConfig;
use crate::jobs::JobsConfig;
use crate::led::LedConfig;
use crate::media::{Acceleration, MediaConfig};
use crate::socketio::{RecoveryConfig, SocketIoConfig};
use crate::store::Retention;

/// Where the service looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tally/config.toml";

/// The longest grace window `refresh_grace_secs` may set.
pub const MAX_REFRESH_GRACE_SECS: u64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    /// The database, the token secret and the videos live here.
    pub data_dir: PathBuf,
    /// Origins (e.g. `http://tally.local:8080`) allowed to reach the API cross-origin.
    pub cors_origins: Vec<String>,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a login session (its refresh token), in seconds.
    pub refresh_token_ttl_secs: u64,
    /// A rotated refresh token gets the same successor for this long (tabs refreshing at
    /// once, a retried request); reused later, it revokes its session. At most
    /// [`MAX_REFRESH_GRACE_SECS`]: a long window would blunt theft detection.
    pub refresh_grace_secs: u64,
    /// Lifetime of the signed stream and thumbnail URLs, in seconds.
    pub media_url_ttl_secs: u64,
    /// Largest video upload, in bytes.
    pub max_upload_bytes: u64,
    /// Free space uploads never eat into, in bytes.
    pub min_free_bytes: u64,
    /// The status LED warns when free space drops below this, in bytes.
    pub storage_low_bytes: u64,
    /// Set when the box is reached over HTTPS: the refresh cookie is then `Secure`.
    pub secure_cookies: bool,
    pub login_attempts_per_minute: u32,
    pub login_attempts_per_address_per_minute: u32,
    /// A database flush that takes longer fails the writes waiting on it (503) and counts as
    /// stalled storage (health, LED, watchdog), in ms.
    pub storage_flush_timeout_ms: u64,
    /// SIGTERM ends the process within this long, in ms.
    pub shutdown_timeout_ms: u64,
    /// How often the housekeeping prunes what has outlived its retention, in seconds.
    pub housekeeping_every_secs: u64,
    pub realtime: RealtimeConfig,
    pub chat: ChatConfig,
    pub media: MediaSettings,
    pub led: LedConfig,
}

/// Video processing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// Videos processed at once (processing is decode-bound; the Pi 4 has 4 cores).
    pub workers: usize,
    /// Attempts before a job that keeps failing is marked failed.
    pub max_attempts: u32,
    pub retry_backoff_secs: u64,
    /// A pipeline that produces no frame for this long is stopped.
    pub watchdog_secs: u64,
    /// Sustained 2–3 flashes per second flag a video too.
    pub strict_sensitivity: bool,
    /// `auto`, `software` or `hardware`.
    pub decoder: Acceleration,
    /// Name prefixes of hardware decoder elements.
    pub hardware_decoders: Vec<String>,
    /// `auto`, `software` or `hardware`: which H.264 encoder makes web renditions.
    pub encoder: Acceleration,
    /// Name prefixes of hardware encoder elements.
    pub hardware_encoders: Vec<String>,
    /// A transcoded web rendition is at most this many lines (`1080`: 1080p, fitting in
    /// 1920×1080, or 1080×1920 upright).
    pub rendition_lines: u32,
    /// The `tally` binary that runs each job in a child process (`tally media-worker`);
    /// unset: this very program.
    pub worker: Option<PathBuf>,
    /// Jobs that failed for good are kept this many days, for diagnosis (the video keeps its
    /// error regardless).
    pub keep_failed_jobs_days: u64,
}

impl Default for MediaSettings {
    fn default() -> Self {
        let media = MediaConfig::default();
        let jobs = JobsConfig::default();
        MediaSettings {
            workers: jobs.workers,
            max_attempts: jobs.max_attempts,
            retry_backoff_secs: jobs.retry_backoff.as_secs(),
            watchdog_secs: media.watchdog.as_secs(),
            strict_sensitivity: media.strict,
            decoder: media.decoder,
            hardware_decoders: media.hardware_decoders,
            encoder: media.encoder,
            hardware_encoders: media.hardware_encoders,
            rendition_lines: media.rendition_lines,
            worker: None,
            keep_failed_jobs_days: 7,
        }
    }
}

impl MediaSettings {
    pub fn pipeline(&self) -> MediaConfig {
        MediaConfig {
            strict: self.strict_sensitivity,
            watchdog: Duration::from_secs(self.watchdog_secs),
            decoder: self.decoder,
            hardware_decoders: self.hardware_decoders.clone(),
            encoder: self.encoder,
            hardware_encoders: self.hardware_encoders.clone(),
            rendition_lines: self.rendition_lines.clamp(144, 4096),
        }
    }

    pub fn jobs(&self) -> JobsConfig {
        JobsConfig {
            workers: self.workers,
            max_attempts: self.max_attempts,
            retry_backoff: Duration::from_secs(self.retry_backoff_secs),
            ..JobsConfig::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            data_dir: PathBuf::from("./tally-data"),
            cors_origins: Vec::new(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_grace_secs: 10,
            media_url_ttl_secs: 2 * 3600,
            max_upload_bytes: 4 << 30,
            min_free_bytes: 100 << 20,
            storage_low_bytes: 1 << 30,
            secure_cookies: false,
            login_attempts_per_minute: 10,
            login_attempts_per_address_per_minute: 30,
            storage_flush_timeout_ms: crate::store::DEFAULT_FLUSH_TIMEOUT.as_millis() as u64,
            shutdown_timeout_ms: 10_000,
            housekeeping_every_secs: 600,
            realtime: RealtimeConfig::default(),
            chat: ChatConfig::default(),
            media: MediaSettings::default(),
            led: LedConfig::default(),
        }
    }
}

/// Engine.IO / Socket.IO settings; defaults are the reference server's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    pub path: String,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub upgrade_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_payload: usize,
    pub max_buffered_packets: usize,
    pub max_attachments: usize,
    /// Engine.IO sessions held at most (each costs a few KB); handshakes past it get 503.
    pub max_sessions: usize,
    /// Sessions per client address that have not yet passed the token check.
    pub max_pending_per_address: usize,
    /// Connection state recovery on the app namespace: a client that drops and comes back
    /// within `recovery_window_ms` gets its socket back and every event it missed.
    pub recovery: bool,
    pub recovery_window_ms: u64,
    /// Recovered clients skip the token check (off: every reconnect shows a valid token).
    pub recovery_skip_middleware: bool,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        let engine = EngineConfig::default();
        let socketio = SocketIoConfig::default();
        RealtimeConfig {
            path: "/socket.io/".into(),
            ping_interval_ms: engine.ping_interval.as_millis() as u64,
            ping_timeout_ms: engine.ping_timeout.as_millis() as u64,
            upgrade_timeout_ms: engine.upgrade_timeout.as_millis() as u64,
            connect_timeout_ms: socketio.connect_timeout.as_millis() as u64,
            max_payload: engine.max_payload,
            max_buffered_packets: engine.max_buffered_packets,
            max_attachments: socketio.max_attachments,
            max_sessions: engine.max_sessions,
            max_pending_per_address: engine.max_pending_per_address,
            recovery: true,
            recovery_window_ms: RecoveryConfig::default().max_disconnection.as_millis() as u64,
            recovery_skip_middleware: false,
        }
    }
}

impl Config {
    /// Loads the configuration. An explicit `path` must exist; without one the default path
    /// is read when present.
    pub fn load(path: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(path) if !path.exists() => {
                return Err(Box::new(figment::Error::from(format!("config file {} does not exist", path.display()))));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_PATH))
            }
            None => {}
        }
        // TALLY_CONFIG names the file itself (see the CLI); it is not a setting.
        let env = Env::prefixed("TALLY_").ignore(&["config"]).split("__");
        figment.merge(env).extract().map_err(Box::new)
    }

    pub fn flush_timeout(&self) -> Duration {
        Duration::from_millis(self.storage_flush_timeout_ms.max(1))
    }

    /// What the housekeeping keeps.
    pub fn retention(&self) -> Retention {
        let days = |n: u64| Duration::from_secs(n.saturating_mul(24 * 3600));
        Retention {
            chat_messages: self.chat.keep_messages,
            chat_age: (self.chat.keep_days > 0).then(|| days(self.chat.keep_days)),
            failed_jobs: days(self.media.keep_failed_jobs_days),
        }
    }

    pub fn housekeeping_every(&self) -> Duration {
        Duration::from_secs(self.housekeeping_every_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn engine(&self) -> EngineConfig {
        let r = &self.realtime;
        EngineConfig {
            ping_interval: Duration::from_millis(r.ping_interval_ms),
            ping_timeout: Duration::from_millis(r.ping_timeout_ms),
            max_payload: r.max_payload,
            upgrade_timeout: Duration::from_millis(r.upgrade_timeout_ms),
            max_buffered_packets: r.max_buffered_packets,
            cors_origins: self.origins(),
            same_origin_only: true,
            max_sessions: r.max_sessions,
            max_pending_per_address: r.max_pending_per_address,
        }
    }

    /// `cors_origins` as browsers write an `Origin`: without a trailing slash.
    fn origins(&self) -> Vec<String> {
        self.cors_origins.iter().map(|origin| origin.trim_end_matches('/').to_owned()).collect()
    }

    pub fn api(&self) -> ApiConfig {
        ApiConfig {
            access_ttl: Duration::from_secs(self.access_token_ttl_secs),
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
            media_url_ttl: Duration::from_secs(self.media_url_ttl_secs),
            max_upload_bytes: self.max_upload_bytes,
            min_free_bytes: self.min_free_bytes,
            secure_cookies: self.secure_cookies,
            login_attempts_per_minute: self.login_attempts_per_minute,
            login_attempts_per_address_per_minute: self.login_attempts_per_address_per_minute,
            refresh_grace: Duration::from_secs(self.refresh_grace_secs.min(MAX_REFRESH_GRACE_SECS)),
            allowed_origins: self.origins(),
        }
    }

    pub fn socketio(&self) -> SocketIoConfig {
        let r = &self.realtime;
        SocketIoConfig {
            connect_timeout: Duration::from_millis(r.connect_timeout_ms),
            max_attachments: r.max_attachments,
            max_attachment_bytes: r.max_payload,
            recovery: r.recovery.then(|| RecoveryConfig {
                max_disconnection: Duration::from_millis(r.recovery_window_ms),
                skip_middleware: r.recovery_skip_middleware,
                ..RecoveryConfig::default()
            }),
            ..SocketIoConfig::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("tally.toml", "port = 9000\n[realtime]\nping_interval_ms = 300\n")?;
            jail.set_env("TALLY_DATA_DIR", "/var/lib/tally");
            jail.set_env("TALLY_REALTIME__PING_TIMEOUT_MS", "200");
            jail.set_env("TALLY_CONFIG", "tally.toml");
            let config = Config::load(Some(Path::new("tally.toml"))).map_err(|e| *e)?;
            assert_eq!(config.port, 9000);
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/tally"));
            assert_eq!(config.realtime.ping_interval_ms, 300);
            assert_eq!(config.realtime.ping_timeout_ms, 200);
            assert_eq!(config.realtime.max_payload, 1_000_000);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "prot = 9000\n")?;
            assert!(Config::load(Some(Path::new("bad.toml"))).is_err());
            assert!(Config::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }
}
