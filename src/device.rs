//! The box itself: what it says about itself (`GET /api/device`, pushed to admins as
//! `device:status`), whether it is healthy (`/healthz`), and the conditions the status LED
//! shows. A monitor looks at the box every couple of seconds; nothing here blocks for long.
//!
//! Storage health is judged by writes, not reads: a prober writes a small record through the
//! store's flusher every couple of seconds ([`Store::probe`]). A flush stuck past its deadline,
//! or a probe that fails or is long overdue, makes the box unhealthy (`/healthz` 503, LED
//! fault) and stops the systemd watchdog, so a disk that never answers gets the service
//! restarted. When the database has failed a write (a full disk) the box is unhealthy too and
//! reads go on; the watchdog carries on there (a restart would only lose the reads), and once
//! space is back the monitor asks for a restart ([`Device::restart_requested`]), since only a
//! fresh start lets the database write again.
//!
//! Door: [`Device::new`], then [`Device::start_monitor`], [`Device::status`] and
//! [`Device::health`].

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::jobs::Jobs;
use crate::led::{IDENTIFY_FOR, Led, LedState};
use crate::media::Acceleration;
use crate::store::{StorageFault, Store, StoreError};

/// How often the monitor looks at the box.
const MONITOR_EVERY: Duration = Duration::from_secs(2);
/// How often the prober writes through the flusher.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A failed video keeps the LED in `attention` this long.
const ATTENTION_FOR: Duration = Duration::from_secs(10 * 60);

/// What the last health probe (a small write through the flusher) found.
#[derive(Debug, Clone)]
enum Probe {
    /// The last write got through at this instant (at start: when the database was opened
    /// and flushed).
    Passed(Instant),
    /// It failed: `stuck` when the write path hangs, rather than refuses (a full disk).
    Failed { reason: String, stuck: bool },
}

pub struct Device {
    started: Instant,
    led: Led,
    store: Store,
    jobs: Arc<Jobs>,
    decoder: Acceleration,
    hardware_decoder: bool,
    storage_low_bytes: u64,
    restart: AtomicBool,
    restart_wanted: Notify,
    probe: Mutex<Probe>,
    /// A probe that has not passed for this long is overdue: the write path is stuck.
    probe_overdue: Duration,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub version: &'static str,
    pub hostname: String,
    /// Seconds since the service started.
    pub uptime_seconds: u64,
    /// Seconds since the board booted, where the kernel says.
    pub system_uptime_seconds: Option<u64>,
    pub disk: Disk,
    /// The CPU's temperature, on boards with a thermal sensor.
    pub cpu_temperature_celsius: Option<f64>,
    pub decoder: Decoder,
    pub led: LedReport,
    pub jobs_running: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decoder {
    /// `auto`, `software` or `hardware`, as configured.
    pub mode: Acceleration,
    /// Whether a hardware (V4L2) decoder is present on this board.
    pub hardware_available: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LedReport {
    pub state: LedState,
    pub pattern: &'static str,
    pub backend: String,
    pub identify_seconds_left: Option<u64>,
}

/// Liveness and readiness, for `/healthz` and the systemd watchdog.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    pub storage: bool,
    pub workers: bool,
    /// Why storage is unhealthy, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.storage && self.workers
    }
}

impl Device {
    pub fn new(
        led: Led,
        store: Store,
        jobs: Arc<Jobs>,
        decoder: Acceleration,
        hardware_decoder: bool,
        storage_low_bytes: u64,
        flush_timeout: Duration,
    ) -> Device {
        Device {
            started: Instant::now(),
            led,
            store,
            jobs,
            decoder,
            hardware_decoder,
            storage_low_bytes,
            restart: AtomicBool::new(false),
            restart_wanted: Notify::new(),
            probe: Mutex::new(Probe::Passed(Instant::now())),
            probe_overdue: PROBE_EVERY * 2 + flush_timeout * 2,
        }
    }

    pub fn led(&self) -> &Led {
        &self.led
    }

    pub fn jobs_running(&self) -> usize {
        self.jobs.busy()
    }

    /// Blinks the identify pattern so a technician can find the box.
    pub fn identify(&self) {
        self.led.identify(IDENTIFY_FOR);
    }

    pub fn health(&self) -> Health {
        let storage_error = self.storage_problem().map(|(reason, _)| reason);
        Health { storage: storage_error.is_none(), workers: self.jobs.healthy(), storage_error }
    }

    /// What is wrong with storage, if anything, and whether it is stuck (rather than refusing
    /// writes, as on a full disk).
    fn storage_problem(&self) -> Option<(String, bool)> {
        if let Some(fault) = self.store.fault() {
            let stuck = matches!(fault, StorageFault::Stalled(_));
            return Some((fault.to_string(), stuck));
        }
        if let Err(error) = self.store.schema_version() {
            return Some((format!("the database cannot be read: {error}"), true));
        }
        let probe = self.probe.lock().map(|probe| probe.clone()).unwrap_or(Probe::Passed(Instant::now()));
        match probe {
            Probe::Failed { reason, stuck } => Some((reason, stuck)),
            Probe::Passed(at) if at.elapsed() > self.probe_overdue => {
                Some((format!("no write has got through for {} s", at.elapsed().as_secs()), true))
            }
            Probe::Passed(_) => None,
        }
    }

    /// Whether the process should keep its systemd watchdog petted: workers alive, the
    /// database readable and its writes not stuck. A database that refuses writes (a full
    /// disk) is not a reason: restarting would only lose the reads that still work, and the
    /// monitor restarts the service itself once space is back.
    pub fn alive(&self) -> bool {
        self.jobs.healthy() && !self.storage_problem().is_some_and(|(_, stuck)| stuck)
    }

    /// One probe: a small write through the flusher, at most the flush deadline (and a bit).
    async fn probe_storage(&self) {
        let outcome = match self.store.probe().await {
            Ok(()) => Probe::Passed(Instant::now()),
            Err(error) => {
                let stuck =
                    matches!(error, StoreError::TimedOut(_) | StoreError::Unavailable(StorageFault::Stalled(_)));
                Probe::Failed { reason: format!("a test write failed: {error}"), stuck }
            }
        };
        if let Ok(mut probe) = self.probe.lock() {
            *probe = outcome;
        }
    }

    /// Resolves once the service should restart to recover (see the module's notes).
    pub async fn restart_requested(&self) {
        let wanted = self.restart_wanted.notified();
        if !self.restart.load(Ordering::Acquire) {
            wanted.await;
        }
    }

    /// Whether a restart was asked for.
    pub fn restart_needed(&self) -> bool {
        self.restart.load(Ordering::Acquire)
    }

    pub fn status(&self) -> DeviceStatus {
        let files = self.store.files();
        let state = self.led.state();
        DeviceStatus {
            version: env!("CARGO_PKG_VERSION"),
            hostname: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default(),
            uptime_seconds: self.started.elapsed().as_secs(),
            system_uptime_seconds: system_uptime(),
            disk: Disk {
                free_bytes: files.available_space().unwrap_or(0),
                total_bytes: files.total_space().unwrap_or(0),
            },
            cpu_temperature_celsius: cpu_temperature(Path::new("/sys/class/thermal")),
            decoder: Decoder { mode: self.decoder, hardware_available: self.hardware_decoder },
            led: LedReport {
                state,
                pattern: state.pattern().looks,
                backend: self.led.describe(),
                identify_seconds_left: self.led.identify_remaining().map(|left| left.as_secs_f64().ceil() as u64),
            },
            jobs_running: self.jobs.busy(),
        }
    }

    /// The service is up: leaves `booting`.
    pub fn ready(&self) {
        self.led.set(LedState::Booting, false);
    }

    /// Looks at the box every couple of seconds and keeps the LED's conditions current;
    /// `on_change` hears about every change of what the LED shows. A prober of its own writes
    /// through the flusher, so a stuck write never delays the LED.
    pub fn start_monitor(self: &Arc<Self>, on_change: impl Fn(&DeviceStatus) + Send + 'static) {
        let prober = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            loop {
                tick.tick().await;
                let Some(device) = prober.upgrade() else { return };
                device.probe_storage().await;
            }
        });
        let device = Arc::downgrade(self);
        let mut shown = self.led.watch();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MONITOR_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let Some(device) = device.upgrade() else { return };
                        device.observe();
                    }
                    changed = shown.changed() => {
                        if changed.is_err() { return; }
                        let Some(device) = device.upgrade() else { return };
                        on_change(&device.status());
                    }
                }
            }
        });
    }

    /// One look at the box.
    fn observe(&self) {
        let health = self.health();
        self.led.set(LedState::Fault, !health.ok());
        let free = self.store.files().available_space().ok();
        let low = free.is_some_and(|free| free < self.storage_low_bytes);
        self.led.set(LedState::StorageLow, low);
        let failed = matches!(self.store.fault(), Some(StorageFault::Failed { .. }));
        if failed && !low && !self.restart.swap(true, Ordering::AcqRel) {
            tracing::warn!(?free, "space is back after the database failed a write: restarting to reopen it");
            self.restart_wanted.notify_waiters();
        }
        self.led.set(LedState::NoNetwork, !network_up(Path::new("/sys/class/net")).unwrap_or(true));
        let failed_recently = self.jobs.last_failure().is_some_and(|at| at.elapsed() < ATTENTION_FOR);
        self.led.set(LedState::Attention, failed_recently);
        self.led.set(LedState::Processing, self.jobs.busy() > 0);
    }
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
}

fn system_uptime() -> Option<u64> {
    let text = read_trimmed("/proc/uptime")?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(seconds as u64)
}

/// The CPU's thermal zone (`cpu-thermal` on a Pi), else the first zone, in °C.
fn cpu_temperature(thermal: &Path) -> Option<f64> {
    let mut zones: Vec<_> = fs::read_dir(thermal)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("thermal_zone")))
        .collect();
    zones.sort();
    let cpu = zones
        .iter()
        .find(|zone| read_trimmed(zone.join("type")).is_some_and(|kind| kind.contains("cpu")))
        .or(zones.first())?;
    let millidegrees: f64 = read_trimmed(cpu.join("temp"))?.parse().ok()?;
    Some((millidegrees / 100.0).round() / 10.0)
}

/// Whether an interface other than loopback has a link. `None` when the kernel does not say.
fn network_up(net: &Path) -> Option<bool> {
    let interfaces = fs::read_dir(net).ok()?;
    Some(interfaces.flatten().any(|entry| {
        let path = entry.path();
        entry.file_name() != "lo"
            && match read_trimmed(path.join("operstate")).as_deref() {
                Some("up") => true,
                // Some drivers never report an operstate; the carrier says.
                Some("unknown") => read_trimmed(path.join("carrier")).as_deref() == Some("1"),
                _ => false,
            }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_zone_and_the_links_the_kernel_reports() {
        let dir = tempfile::tempdir().unwrap();
        let thermal = dir.path().join("thermal");
        for (zone, kind, temp) in [("thermal_zone0", "gpu-thermal", "70000"), ("thermal_zone1", "cpu-thermal", "48312")]
        {
            fs::create_dir_all(thermal.join(zone)).unwrap();
            fs::write(thermal.join(zone).join("type"), kind).unwrap();
            fs::write(thermal.join(zone).join("temp"), temp).unwrap();
        }
        assert_eq!(cpu_temperature(&thermal), Some(48.3));
        assert_eq!(cpu_temperature(&dir.path().join("none")), None);

        let net = dir.path().join("net");
        for (name, state, carrier) in [("lo", "unknown", "1"), ("eth0", "down", "0"), ("wlan0", "dormant", "0")] {
            fs::create_dir_all(net.join(name)).unwrap();
            fs::write(net.join(name).join("operstate"), state).unwrap();
            fs::write(net.join(name).join("carrier"), carrier).unwrap();
        }
        assert_eq!(network_up(&net), Some(false), "loopback alone is no network");
        fs::write(net.join("wlan0").join("operstate"), "up\n").unwrap();
        assert_eq!(network_up(&net), Some(true));
    }
}
