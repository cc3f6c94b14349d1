//! The status LED's state machine on the simulated backend with tokio's clock paused: the
//! exact on/off timeline of every pattern, and which state wins when several hold.

use std::time::Duration;

use tally::led::backend::{Backend, Simulated, SysfsLed, Timeline};
use tally::led::{Led, LedState};
use tokio::time::{Instant, sleep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn started() -> (Led, Timeline) {
    let (backend, timeline) = Simulated::new();
    (Led::start(Box::new(backend)), timeline)
}

/// The changes recorded in `[from, to)`, with times relative to `from`.
fn window(timeline: &Timeline, from: Duration, to: Duration) -> Vec<(u64, bool)> {
    timeline
        .changes()
        .into_iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(at, on)| ((at - from).as_millis() as u64, on))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_box_boots_with_a_slow_even_blink_then_stays_on_when_ready() {
    let (led, timeline) = started();
    sleep(ms(4500)).await;
    assert_eq!(led.state(), LedState::Booting);
    assert_eq!(
        window(&timeline, ms(0), ms(4500)),
        [(0, true), (1000, false), (2000, true), (3000, false), (4000, true)]
    );
    led.set(LedState::Booting, false);
    sleep(ms(100)).await;
    led.set(LedState::Booting, false);
    sleep(ms(10_000)).await;
    assert_eq!(led.state(), LedState::Ready);
    // Ready is steady on: the LED, already on, never changes again.
    assert_eq!(window(&timeline, ms(4500), ms(14_600)), []);
}

/// Each state's timeline over its first few seconds, from the moment it takes over at t=10 s
/// (the LED is steady on before it).
async fn timeline_of(state: LedState, seconds: u64) -> Vec<(u64, bool)> {
    let (led, timeline) = started();
    led.set(LedState::Booting, false);
    sleep(ms(10_000)).await;
    if state == LedState::Identify {
        led.identify(Duration::from_secs(30));
    } else {
        led.set(state, true);
    }
    sleep(Duration::from_secs(seconds)).await;
    assert_eq!(led.state(), state);
    window(&timeline, ms(10_000), ms(10_000) + Duration::from_secs(seconds))
}

#[tokio::test(start_paused = true)]
async fn every_pattern_has_its_documented_timeline() {
    assert_eq!(timeline_of(LedState::Processing, 2).await, [(0, false), (100, true), (1000, false), (1100, true)]);
    assert_eq!(
        timeline_of(LedState::Attention, 4).await,
        [(0, false), (150, true), (300, false), (450, true), (2000, false), (2150, true), (2300, false), (2450, true)]
    );
    assert_eq!(
        timeline_of(LedState::StorageLow, 3).await,
        [
            (0, false),
            (150, true),
            (300, false),
            (450, true),
            (600, false),
            (750, true),
            (2500, false),
            (2650, true),
            (2800, false),
            (2950, true)
        ]
    );
    // Off-baseline: the LED was on, goes on-for-100 (no change), then off.
    assert_eq!(
        timeline_of(LedState::NoNetwork, 5).await,
        [(100, false), (2000, true), (2100, false), (4000, true), (4100, false)]
    );
    assert_eq!(
        timeline_of(LedState::Fault, 1).await,
        [(125, false), (250, true), (375, false), (500, true), (625, false), (750, true), (875, false)]
    );
    let identify = timeline_of(LedState::Identify, 1).await;
    assert_eq!(identify.len(), 19, "{identify:?}");
    assert_eq!(identify[..4], [(50, false), (100, true), (150, false), (200, true)]);
}

#[tokio::test(start_paused = true)]
async fn the_highest_priority_state_wins_and_identify_ends_by_itself() {
    let (led, _timeline) = started();
    let mut shown = led.watch();
    led.set(LedState::Booting, false);
    led.set(LedState::Processing, true);
    sleep(ms(10)).await;
    assert_eq!(led.state(), LedState::Processing);
    led.set(LedState::Attention, true);
    sleep(ms(10)).await;
    assert_eq!(led.state(), LedState::Attention, "a failure outranks processing");
    led.set(LedState::NoNetwork, true);
    led.set(LedState::StorageLow, true);
    sleep(ms(10)).await;
    assert_eq!(led.state(), LedState::StorageLow);
    led.set(LedState::Fault, true);
    sleep(ms(10)).await;
    assert_eq!(led.state(), LedState::Fault);
    let asked = Instant::now();
    led.identify(Duration::from_secs(30));
    sleep(ms(10)).await;
    assert_eq!(led.state(), LedState::Identify, "identify outranks everything, a fault included");
    assert!(led.identify_remaining().is_some_and(|left| left > Duration::from_secs(29)));
    shown.mark_unchanged();
    shown.changed().await.unwrap();
    assert_eq!(*shown.borrow(), LedState::Fault);
    assert_eq!(asked.elapsed(), Duration::from_secs(30), "identify lasts exactly 30 s");
    assert_eq!(led.identify_remaining(), None);
    for (cleared, then) in [
        (LedState::Fault, LedState::StorageLow),
        (LedState::StorageLow, LedState::NoNetwork),
        (LedState::NoNetwork, LedState::Attention),
        (LedState::Attention, LedState::Processing),
        (LedState::Processing, LedState::Ready),
    ] {
        led.set(cleared, false);
        sleep(ms(10)).await;
        assert_eq!(led.state(), then, "after clearing {cleared}");
    }
    led.set(LedState::Booting, true);
    sleep(ms(10)).await;
    assert_eq!(led.state(), LedState::Booting, "booting outranks the running states");
}

struct Broken;

impl Backend for Broken {
    fn set(&mut self, _on: bool) -> std::io::Result<()> {
        Err(std::io::Error::other("the LED is unplugged"))
    }

    fn describe(&self) -> String {
        "broken".into()
    }
}

#[tokio::test(start_paused = true)]
async fn a_broken_led_degrades_and_the_state_is_still_tracked() {
    let led = Led::start(Box::new(Broken));
    sleep(ms(10)).await;
    assert!(led.describe().starts_with("none (the LED is unplugged"), "{}", led.describe());
    led.set(LedState::Booting, false);
    led.set(LedState::Attention, true);
    sleep(ms(10)).await;
    assert_eq!(led.state(), LedState::Attention);
}

/// The kernel LED backend writes the files the kernel's triggers read (a directory shaped like
/// `/sys/class/leds/<name>`).
#[test]
fn a_kernel_led_gets_the_pattern_trigger() {
    let dir = tempfile::tempdir().unwrap();
    for (file, content) in
        [("max_brightness", "255\n"), ("trigger", ""), ("brightness", "0"), ("pattern", ""), ("repeat", "")]
    {
        std::fs::write(dir.path().join(file), content).unwrap();
    }
    let read = |file: &str| std::fs::read_to_string(dir.path().join(file)).unwrap();
    let mut led = SysfsLed::open_in(dir.path()).unwrap();
    assert!(led.play(&LedState::Processing.pattern()).unwrap(), "the kernel repeats the pattern by itself");
    assert_eq!(read("trigger"), "pattern");
    assert_eq!(read("pattern"), "0 100 0 0 255 900 255 0");
    assert_eq!(read("repeat"), "-1");
    assert!(led.play(&LedState::Ready.pattern()).unwrap());
    assert_eq!((read("trigger").as_str(), read("brightness").as_str()), ("none", "255"));
    assert!(SysfsLed::open_in(&dir.path().join("missing")).is_err());

    // Without a writable pattern file (no pattern trigger, or not the service's to write)
    // even blinks go to the timer trigger and the rest is stepped through the brightness.
    std::fs::remove_file(dir.path().join("pattern")).unwrap();
    std::fs::create_dir(dir.path().join("pattern")).unwrap();
    for file in ["delay_on", "delay_off"] {
        std::fs::write(dir.path().join(file), "").unwrap();
    }
    assert!(led.play(&LedState::Fault.pattern()).unwrap());
    assert_eq!((read("trigger"), read("delay_on"), read("delay_off")), ("timer".into(), "125".into(), "125".into()));
    assert!(!led.play(&LedState::Attention.pattern()).unwrap(), "the state machine steps this one");
    assert_eq!(read("trigger"), "none");
    led.set(false).unwrap();
    assert_eq!(read("brightness"), "0");
}

#[test]
fn the_table_lists_every_state_by_priority() {
    let table = tally::led::pattern::table();
    let lines: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(lines.len(), LedState::ALL.len());
    assert!(lines[0].contains("identify") && lines[7].contains("ready") && lines[7].contains("steady on"), "{table}");
}

#[test]
fn the_readme_table_matches_the_patterns() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (rank, state) in LedState::ALL.iter().enumerate() {
        let row = format!("| {} | {} | {} |", rank + 1, state.name(), state.pattern().looks);
        assert!(readme.contains(&row), "README.md lacks {row}");
    }
}
