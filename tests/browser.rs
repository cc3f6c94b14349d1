//! The page in headless Chromium (Debian's, driven by playwright-core) against the real
//! server process: login, live library, upload through processing, session kept across a
//! reload. Screenshots land in `target/screenshots/`.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::fixtures::{Painter, Spec, fill, make_video};
use common::process::{PASSWORD, Tally, add_user};

#[tokio::test]
async fn log_in_upload_and_watch_processing_in_chromium() {
    assert!(std::path::Path::new("/usr/bin/chromium").exists(), "Chromium is needed: scripts/deps test installs it");
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "Acme", "editor@acme.test", "editor").await;
    let tally = Tally::start(dir.path(), &[]).await;
    let clip = dir.path().join("beach.mp4");
    let paint: Box<Painter> = Box::new(|i, data: &mut [u8]| {
        fill(data, [40, 120, 200]);
        let x0 = (i as usize * 4) % 280;
        for y in 60..120 {
            for x in x0..x0 + 40 {
                let p = (y * 320 + x) * 3;
                data[p..p + 3].copy_from_slice(&[250, 220, 90]);
            }
        }
    });
    make_video(&clip, &Spec { width: 320, height: 180, fps: 30, frames: 90 }, paint.as_ref());
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/browser.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .args([&format!("http://{}/", tally.addr), "editor@acme.test", PASSWORD])
        .arg(&clip)
        .arg(&shots)
        .current_dir(script.parent().unwrap())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the browser run failed: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(report["title"], "beach");
    assert_eq!(report["thumbnailWidth"], 320, "the card's thumbnail loaded");
    assert_eq!(report["problems"], serde_json::json!([]), "no page, console or CSP errors");
    assert!(shots.join("library.png").exists());
}
