//! What the LED says: the box's states, their priority, and the blink pattern of each.
//!
//! The patterns are chosen so a person tells them apart after reading the table once, and so
//! none looks like the Raspberry Pi firmware's own ACT codes (long flashes, then short flashes,
//! from an off LED): every state of a healthy, running box keeps the LED mostly on and speaks
//! with brief off-blips; the rest are even blinks at clearly different rates, or a single blip.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The box's states, highest priority first: when several hold, the first one shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedState {
    /// A technician asked the box to show itself (`POST /api/device/identify`).
    Identify,
    /// The service cannot do its work (storage or the job worker failed).
    Fault,
    /// The service is starting.
    Booting,
    /// Free space is below what uploads may use.
    StorageLow,
    /// No network interface other than loopback is up.
    NoNetwork,
    /// A video failed processing in the last ten minutes.
    Attention,
    /// Videos are being processed.
    Processing,
    /// Up and idle.
    Ready,
}

impl LedState {
    /// Every state, highest priority first.
    pub const ALL: [LedState; 8] = [
        LedState::Identify,
        LedState::Fault,
        LedState::Booting,
        LedState::StorageLow,
        LedState::NoNetwork,
        LedState::Attention,
        LedState::Processing,
        LedState::Ready,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LedState::Identify => "identify",
            LedState::Fault => "fault",
            LedState::Booting => "booting",
            LedState::StorageLow => "storage-low",
            LedState::NoNetwork => "no-network",
            LedState::Attention => "attention",
            LedState::Processing => "processing",
            LedState::Ready => "ready",
        }
    }

    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// How the LED shows this state.
    pub fn pattern(self) -> Pattern {
        let (steps, looks): (&'static [(bool, Duration)], &'static str) = match self {
            LedState::Identify => (IDENTIFY, "rapid flicker, 10 per second, for 30 s"),
            LedState::Fault => (FAULT, "fast even blink, 4 per second"),
            LedState::Booting => (BOOTING, "slow even blink, 1 s on, 1 s off"),
            LedState::StorageLow => (STORAGE_LOW, "on, with 3 quick off-blips every 2.5 s"),
            LedState::NoNetwork => (NO_NETWORK, "off, with 1 short flash every 2 s"),
            LedState::Attention => (ATTENTION, "on, with 2 quick off-blips every 2 s"),
            LedState::Processing => (PROCESSING, "on, with 1 brief off-blip every second"),
            LedState::Ready => (&[(true, Duration::MAX)], "steady on"),
        };
        Pattern { steps, looks }
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const IDENTIFY: &[(bool, Duration)] = &[(true, ms(50)), (false, ms(50))];
const FAULT: &[(bool, Duration)] = &[(true, ms(125)), (false, ms(125))];
const BOOTING: &[(bool, Duration)] = &[(true, ms(1000)), (false, ms(1000))];
const STORAGE_LOW: &[(bool, Duration)] =
    &[(false, ms(150)), (true, ms(150)), (false, ms(150)), (true, ms(150)), (false, ms(150)), (true, ms(1750))];
const NO_NETWORK: &[(bool, Duration)] = &[(true, ms(100)), (false, ms(1900))];
const ATTENTION: &[(bool, Duration)] = &[(false, ms(150)), (true, ms(150)), (false, ms(150)), (true, ms(1550))];
const PROCESSING: &[(bool, Duration)] = &[(false, ms(100)), (true, ms(900))];

impl fmt::Display for LedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A repeating sequence of (LED on?, for how long). A single step of `Duration::MAX` is steady.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    pub steps: &'static [(bool, Duration)],
    /// The pattern in words, for the README table and `tally led --list`.
    pub looks: &'static str,
}

impl Pattern {
    /// `Some(on)` when the LED just stays on or off.
    pub fn steady(&self) -> Option<bool> {
        match self.steps {
            [(on, duration)] if *duration == Duration::MAX => Some(*on),
            _ => None,
        }
    }
}

/// The table a technician reads: state, pattern, meaning, highest priority first.
pub fn table() -> String {
    let mut out = String::from("priority  state        pattern                                    meaning\n");
    for (rank, state) in LedState::ALL.iter().enumerate() {
        out.push_str(&format!(
            "{:<9} {:<12} {:<42} {}\n",
            rank + 1,
            state.name(),
            state.pattern().looks,
            meaning(*state)
        ));
    }
    out
}

fn meaning(state: LedState) -> &'static str {
    match state {
        LedState::Identify => "someone pressed Identify in the web UI",
        LedState::Fault => "the service cannot work: see `journalctl -u tally`",
        LedState::Booting => "starting up",
        LedState::StorageLow => "the SD card is nearly full: delete videos",
        LedState::NoNetwork => "no network link: check the cable or Wi-Fi",
        LedState::Attention => "a video failed processing in the last 10 minutes",
        LedState::Processing => "processing videos",
        LedState::Ready => "ready and idle",
    }
}
