//! Where the LED is: a GPIO pin (rppal), a kernel LED under `/sys/class/leds`, or a simulated
//! LED that records what it would show (development, CI, and boxes without an LED).

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::pattern::Pattern;

/// Which LED the service drives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LedConfig {
    /// `simulated`, `gpio`, `sysfs` or `none`.
    pub backend: BackendKind,
    /// BCM number of the pin, for `gpio`.
    pub gpio_pin: u8,
    /// The LED lights when the pin is low (wired from 3.3 V through the LED to the pin).
    pub active_low: bool,
    /// Name under `/sys/class/leds/`, for `sysfs` (`ACT` is the Pi's green LED).
    pub sysfs_name: String,
}

impl Default for LedConfig {
    fn default() -> Self {
        LedConfig { backend: BackendKind::Simulated, gpio_pin: 17, active_low: false, sysfs_name: "ACT".into() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Simulated,
    Gpio,
    Sysfs,
    None,
}

/// An LED the state machine can drive.
pub trait Backend: Send + 'static {
    /// Hands the whole pattern to hardware that repeats it by itself (and so keeps blinking if
    /// the process stalls). `Ok(false)`: the caller steps it with [`Backend::set`].
    fn play(&mut self, _pattern: &Pattern) -> io::Result<bool> {
        Ok(false)
    }

    fn set(&mut self, on: bool) -> io::Result<()>;

    /// What this LED is, for logs and the device panel.
    fn describe(&self) -> String;
}

/// Opens the configured LED. A missing one is an error the caller reports and survives.
pub fn open(config: &LedConfig) -> io::Result<Box<dyn Backend>> {
    Ok(match config.backend {
        BackendKind::Simulated => Box::new(Simulated::new().0),
        BackendKind::None => Box::new(NoLed),
        BackendKind::Sysfs => Box::new(SysfsLed::open(&config.sysfs_name)?),
        BackendKind::Gpio => Box::new(GpioLed::open(config.gpio_pin, config.active_low)?),
    })
}

/// No LED: the state is still tracked and reported.
pub struct NoLed;

impl Backend for NoLed {
    fn set(&mut self, _on: bool) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "none".into()
    }
}

/// Every change of the simulated LED: time since it was created, and on or off.
#[derive(Debug, Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<(Duration, bool)>>>);

impl Timeline {
    pub fn changes(&self) -> Vec<(Duration, bool)> {
        self.0.lock().map(|changes| changes.clone()).unwrap_or_default()
    }
}

/// Records transitions with timestamps (tokio's clock, so tests can pause it).
pub struct Simulated {
    started: Instant,
    timeline: Timeline,
}

impl Simulated {
    pub fn new() -> (Simulated, Timeline) {
        let timeline = Timeline::default();
        (Simulated { started: Instant::now(), timeline: timeline.clone() }, timeline)
    }
}

impl Backend for Simulated {
    fn set(&mut self, on: bool) -> io::Result<()> {
        if let Ok(mut changes) = self.timeline.0.lock()
            && changes.last().is_none_or(|&(_, last)| last != on)
        {
            changes.push((self.started.elapsed(), on));
            // A long-running service keeps the recent past only.
            if changes.len() > 4096 {
                changes.drain(..2048);
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "simulated".into()
    }
}

/// A kernel LED (`/sys/class/leds/<name>`): the ACT LED or a `gpio-led` overlay. Blinking is
/// left to the kernel's `pattern` trigger (or `timer` for even blinks) where available.
pub struct SysfsLed {
    dir: PathBuf,
    max: u32,
    stepping: bool,
}

impl SysfsLed {
    pub fn open(name: &str) -> io::Result<SysfsLed> {
        SysfsLed::open_in(&PathBuf::from("/sys/class/leds").join(name))
    }

    /// Opens the LED whose sysfs directory is `dir`.
    pub fn open_in(dir: &std::path::Path) -> io::Result<SysfsLed> {
        let max = fs::read_to_string(dir.join("max_brightness"))
            .map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", dir.display())))?
            .trim()
            .parse()
            .unwrap_or(1);
        Ok(SysfsLed { dir: dir.to_owned(), max, stepping: false })
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        fs::write(self.dir.join(file), value)
            .map_err(|error| io::Error::new(error.kind(), format!("writing {value:?} to {file}: {error}")))
    }

    fn kernel_pattern(&self, pattern: &Pattern) -> io::Result<()> {
        self.write("trigger", "pattern")?;
        // Each step holds its brightness, then jumps (a zero-length step) to the next.
        let text: Vec<String> = pattern
            .steps
            .iter()
            .map(|&(on, duration)| {
                let level = if on { self.max } else { 0 };
                format!("{level} {} {level} 0", duration.as_millis())
            })
            .collect();
        self.write("pattern", &text.join(" "))?;
        self.write("repeat", "-1")
    }
}

impl SysfsLed {
    fn kernel_timer(&self, on: Duration, off: Duration) -> io::Result<()> {
        self.write("trigger", "timer")?;
        self.write("delay_on", &on.as_millis().to_string())?;
        self.write("delay_off", &off.as_millis().to_string())
    }
}

impl Backend for SysfsLed {
    fn play(&mut self, pattern: &Pattern) -> io::Result<bool> {
        if let Some(on) = pattern.steady() {
            self.write("trigger", "none")?;
            self.stepping = false;
            self.set(on)?;
            return Ok(true);
        }
        // The pattern trigger's files appear only once it is chosen, and may not be writable
        // by the service: each way down is tried, stepping the brightness last.
        if self.kernel_pattern(pattern).is_ok() {
            self.stepping = false;
            return Ok(true);
        }
        if let [(true, on), (false, off)] = pattern.steps
            && self.kernel_timer(*on, *off).is_ok()
        {
            self.stepping = false;
            return Ok(true);
        }
        self.write("trigger", "none")?;
        self.stepping = true;
        Ok(false)
    }

    fn set(&mut self, on: bool) -> io::Result<()> {
        let level = if on { self.max } else { 0 };
        self.write("brightness", &level.to_string())
    }

    fn describe(&self) -> String {
        format!("sysfs {}{}", self.dir.display(), if self.stepping { " (stepped)" } else { "" })
    }
}

/// An LED on a GPIO pin, through rppal (needs the Raspberry Pi kernel's `/dev/gpiomem`).
pub struct GpioLed {
    pin: rppal::gpio::OutputPin,
    active_low: bool,
}

impl GpioLed {
    pub fn open(bcm: u8, active_low: bool) -> io::Result<GpioLed> {
        let gpio = rppal::gpio::Gpio::new().map_err(|error| io::Error::other(format!("GPIO unavailable: {error}")))?;
        let pin = gpio.get(bcm).map_err(|error| io::Error::other(format!("GPIO {bcm}: {error}")))?;
        let pin = if active_low { pin.into_output_high() } else { pin.into_output_low() };
        Ok(GpioLed { pin, active_low })
    }
}

impl Backend for GpioLed {
    fn set(&mut self, on: bool) -> io::Result<()> {
        if on != self.active_low {
            self.pin.set_high();
        } else {
            self.pin.set_low();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("gpio {}{}", self.pin.pin(), if self.active_low { " (active low)" } else { "" })
    }
}
