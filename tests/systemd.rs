//! The systemd units as systemd itself reads them: `systemd-analyze verify` in a root that
//! holds the real `tally` binary, an exposure of at most 2.0 from `systemd-analyze security
//! --offline=true`, the settings the appliance depends on, and the sysusers.d file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn units() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

/// A filesystem root with the host's units plus ours and the binary they start.
fn root_with_units() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &str| {
        let to = root.path().join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    std::fs::create_dir_all(root.path().join("usr/lib/systemd")).unwrap();
    let copied =
        Command::new("cp").args(["-r", "/usr/lib/systemd/system"]).arg(root.path().join("usr/lib/systemd/")).status();
    assert!(copied.is_ok_and(|s| s.success()), "systemd's units are needed: scripts/deps test installs systemd");
    copy(Path::new(env!("CARGO_BIN_EXE_tally")), "usr/bin/tally");
    copy(Path::new("/bin/sh"), "bin/sh");
    for unit in ["tally.service", "tally-fault.service"] {
        copy(&units().join(unit), &format!("usr/lib/systemd/system/{unit}"));
    }
    copy(&units().join("tally.sysusers"), "usr/lib/sysusers.d/tally.conf");
    root
}

#[test]
fn the_units_verify_and_are_hardened() {
    let root = root_with_units();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(["tally.service", "tally-fault.service"])
        .output()
        .expect("systemd-analyze (scripts/deps test installs systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");

    for unit in ["tally.service", "tally-fault.service"] {
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(units().join(unit))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&security.stdout);
        let exposure: f64 = report
            .lines()
            .find_map(|line| line.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|level| level.split_whitespace().next())
            .and_then(|level| level.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in {report}"));
        assert!(exposure <= 2.0, "{unit} exposure {exposure}: {report}");
    }
}

#[test]
fn the_service_unit_keeps_what_the_appliance_needs() {
    let unit = std::fs::read_to_string(units().join("tally.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "User=tally",
        "SupplementaryGroups=gpio video",
        "StateDirectory=tally",
        "ConfigurationDirectory=tally",
        "OnFailure=tally-fault.service",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        "DeviceAllow=/dev/gpiomem rw",
        "DeviceAllow=char-video4linux rw",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "tally.service lacks {line}");
    }
    // These would hide the GPIO and decoder devices, or break access through the groups.
    for setting in ["PrivateDevices=yes", "PrivateUsers=yes", "DynamicUser=yes"] {
        assert!(!unit.lines().any(|l| l == setting), "tally.service must not set {setting}");
    }
}

#[test]
fn the_sysusers_file_creates_the_user_in_the_device_groups() {
    let root = root_with_units();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers").arg(format!("--root={}", root.path().display())).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user = passwd.lines().find(|l| l.starts_with("tally:")).expect("a tally user");
    assert!(user.ends_with(":/var/lib/tally:/usr/sbin/nologin"), "{user}");
    let groups = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    for group in ["gpio", "video"] {
        let line = groups.lines().find(|l| l.starts_with(&format!("{group}:"))).expect(group);
        assert!(line.ends_with(":tally"), "tally is a member of {group}: {line}");
    }
}

/// The fault unit's command, run as systemd would (`$$` unescaped) against a directory shaped
/// like `/sys/class/leds`: the fault pattern's 4 blinks a second through the timer trigger.
#[test]
fn the_fault_unit_sets_the_fault_blink() {
    let unit = std::fs::read_to_string(units().join("tally-fault.service")).unwrap();
    let command = unit.lines().find_map(|l| l.strip_prefix("ExecStart=/bin/sh -c ")).expect("ExecStart");
    let script = command.trim_matches('\'').replace("$$", "$");
    let leds = tempfile::tempdir().unwrap();
    std::fs::create_dir(leds.path().join("ACT")).unwrap();
    let status =
        Command::new("/bin/sh").args(["-c", &script]).env("LEDS", leds.path()).env("LED", "ACT").status().unwrap();
    assert!(status.success());
    let read = |file: &str| std::fs::read_to_string(leds.path().join("ACT").join(file)).unwrap();
    assert_eq!(
        (read("trigger"), read("delay_on"), read("delay_off")),
        ("timer\n".into(), "125\n".into(), "125\n".into())
    );
    let fault = tally::led::LedState::Fault.pattern();
    assert_eq!(
        fault.steps,
        [(true, std::time::Duration::from_millis(125)), (false, std::time::Duration::from_millis(125))]
    );
}
