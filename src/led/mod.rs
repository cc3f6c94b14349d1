//! The status LED: one small state machine owns it. Parts of the service raise and clear
//! conditions ([`LedState`]); the highest-priority one that holds is shown with its pattern.
//! A broken or missing LED never stops the service: it is logged once and the state is still
//! tracked and reported (`GET /api/device`).
//!
//! Door: [`Led::start`] with a [`backend`], then [`Led::set`], [`Led::identify`] and
//! [`Led::watch`].

pub mod backend;
pub mod pattern;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

pub use backend::{Backend, LedConfig};
pub use pattern::{LedState, Pattern};

/// How long `identify` blinks unless told otherwise.
pub const IDENTIFY_FOR: Duration = Duration::from_secs(30);

/// A handle on the LED; clones share it.
#[derive(Clone)]
pub struct Led {
    shared: Arc<Shared>,
}

struct Shared {
    conditions: Mutex<Conditions>,
    changed: Notify,
    shown: watch::Sender<LedState>,
    backend: Mutex<String>,
}

#[derive(Default)]
struct Conditions {
    /// Bits of the states that hold ([`LedState::bit`]); `Ready` always does.
    active: u16,
    identify_until: Option<Instant>,
}

impl Conditions {
    fn winner(&self, now: Instant) -> LedState {
        let identifying = self.identify_until.is_some_and(|until| until > now);
        LedState::ALL
            .into_iter()
            .find(|state| match state {
                LedState::Identify => identifying,
                LedState::Ready => true,
                state => self.active & state.bit() != 0,
            })
            .unwrap_or(LedState::Ready)
    }
}

impl Led {
    /// Starts driving `backend`; the box is `booting` until [`Led::set`] clears it. Needs a
    /// tokio runtime.
    pub fn start(backend: Box<dyn Backend>) -> Led {
        let (shown, _) = watch::channel(LedState::Booting);
        let shared = Arc::new(Shared {
            conditions: Mutex::new(Conditions { active: LedState::Booting.bit(), identify_until: None }),
            changed: Notify::new(),
            shown,
            backend: Mutex::new(backend.describe()),
        });
        tokio::spawn(drive(shared.clone(), backend));
        Led { shared }
    }

    /// Raises or clears a condition.
    pub fn set(&self, state: LedState, holds: bool) {
        if let Ok(mut conditions) = self.shared.conditions.lock() {
            let before = conditions.active;
            if holds {
                conditions.active |= state.bit();
            } else {
                conditions.active &= !state.bit();
            }
            if before == conditions.active {
                return;
            }
        }
        self.shared.changed.notify_one();
    }

    /// Shows the identify pattern for `duration` (so a technician can find the box).
    pub fn identify(&self, duration: Duration) {
        if let Ok(mut conditions) = self.shared.conditions.lock() {
            conditions.identify_until = Some(Instant::now() + duration);
        }
        self.shared.changed.notify_one();
    }

    /// Seconds of identify left, if it is on.
    pub fn identify_remaining(&self) -> Option<Duration> {
        let until = self.shared.conditions.lock().ok()?.identify_until?;
        until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }

    /// What the LED shows now (or is about to: the driver follows within a moment).
    pub fn state(&self) -> LedState {
        match self.shared.conditions.lock() {
            Ok(conditions) => conditions.winner(Instant::now()),
            Err(_) => *self.shared.shown.borrow(),
        }
    }

    /// Follows what the LED shows.
    pub fn watch(&self) -> watch::Receiver<LedState> {
        self.shared.shown.subscribe()
    }

    /// Which LED this is ("simulated", "gpio 17", "none" after a failure...).
    pub fn describe(&self) -> String {
        self.shared.backend.lock().map(|name| name.clone()).unwrap_or_default()
    }
}

/// Shows the winning state's pattern until the conditions change; runs as long as the runtime.
async fn drive(shared: Arc<Shared>, mut backend: Box<dyn Backend>) {
    loop {
        let now = Instant::now();
        let (state, identify_until) = match shared.conditions.lock() {
            Ok(conditions) => (conditions.winner(now), conditions.identify_until.filter(|until| *until > now)),
            Err(_) => return,
        };
        shared.shown.send_if_modified(|shown| std::mem::replace(shown, state) != state);
        let pattern = state.pattern();
        let expires = async {
            match identify_until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expires);
        let kernel_plays = match backend.play(&pattern) {
            Ok(plays) => plays,
            Err(error) => {
                degrade(&shared, &mut backend, &error);
                true
            }
        };
        if kernel_plays {
            tokio::select! {
                () = shared.changed.notified() => {}
                () = &mut expires => {}
            }
            continue;
        }
        'pattern: loop {
            for &(on, duration) in pattern.steps {
                if let Err(error) = backend.set(on) {
                    degrade(&shared, &mut backend, &error);
                }
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    () = shared.changed.notified() => break 'pattern,
                    () = &mut expires => break 'pattern,
                }
            }
        }
    }
}

/// Logs the failure once and carries on without an LED.
fn degrade(shared: &Shared, backend: &mut Box<dyn Backend>, error: &std::io::Error) {
    tracing::warn!(led = backend.describe(), %error, "the status LED failed; carrying on without it");
    *backend = Box::new(backend::NoLed);
    if let Ok(mut name) = shared.backend.lock() {
        *name = format!("none ({error})");
    }
}
