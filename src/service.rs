//! Talking to systemd (`Type=notify`): READY=1 once the service listens with its storage open,
//! STATUS= with what the status LED shows, WATCHDOG=1 from the runtime only while the database
//! reads and the job workers are alive (so a wedged box is restarted; see [`Device::alive`]),
//! and STOPPING=1 on the way out.
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.
//!
//! Door: [`ready`], [`follow_status`], [`start_watchdog`], [`stopping`].

use std::sync::Arc;

use sd_notify::NotifyState;

use crate::device::Device;

fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "telling systemd failed");
    }
}

/// Listening, storage open, workers started.
pub fn ready(device: &Device) {
    notify(&[NotifyState::Ready, NotifyState::Status(&status_line(device))]);
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Keeps systemd's STATUS= (shown by `systemctl status tally`) in step with the LED.
pub fn follow_status(device: &Arc<Device>) {
    let mut shown = device.led().watch();
    // Weak: this task must not keep the device (and through it the database) alive.
    let device = Arc::downgrade(device);
    tokio::spawn(async move {
        while shown.changed().await.is_ok() {
            let Some(device) = device.upgrade() else { return };
            notify(&[NotifyState::Status(&status_line(&device))]);
        }
    });
}

fn status_line(device: &Device) -> String {
    let state = device.led().state();
    let running = device.jobs_running();
    format!("{state}; {running} video{} in work", if running == 1 { "" } else { "s" })
}

/// Pets systemd's watchdog at half its period while the box is alive. A stalled runtime or
/// a dead worker or database stops the petting and systemd restarts the service.
pub fn start_watchdog(device: &Arc<Device>) {
    let Some(period) = sd_notify::watchdog_enabled() else { return };
    tracing::info!(?period, "systemd watchdog enabled");
    let device = Arc::downgrade(device);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        let mut was_healthy = true;
        loop {
            tick.tick().await;
            let Some(device) = device.upgrade() else { return };
            let alive = device.alive();
            if alive {
                notify(&[NotifyState::Watchdog]);
            } else if was_healthy {
                let health = device.health();
                tracing::error!(
                    storage = health.storage,
                    workers = health.workers,
                    "not alive: no longer petting the watchdog"
                );
            }
            was_healthy = alive;
        }
    });
}
