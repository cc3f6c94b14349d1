//! Faults the box must survive. A GStreamer decoder that crashes or hangs (a real plugin,
//! `tests/faults/gst-fault-plugin.c`, compiled here and loaded through `GST_PLUGIN_PATH`)
//! costs the job it was decoding, never the service.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fixtures::{Painter, Spec, fill, make_video};
use common::process::{Tally, add_user};
use common::*;
use hyper::Method;
use serde_json::Value;

/// Builds the faulty decoder plugin into `dir` and returns its folder.
fn fault_plugin(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/gst-fault-plugin.c");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let flags =
        std::process::Command::new("pkg-config").args(["--cflags", "--libs", "gstreamer-1.0"]).output().unwrap();
    assert!(flags.status.success(), "pkg-config gstreamer-1.0 (scripts/deps test installs it)");
    let flags = String::from_utf8(flags.stdout).unwrap();
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(plugins.join("libgsttallyfault.so"))
        .arg(&source)
        .args(flags.split_whitespace())
        .status()
        .unwrap();
    assert!(built.success(), "compiling {}", source.display());
    plugins
}

/// `tally serve` whose GStreamer prefers the faulty decoder, in `mode` (`crash` or `hang`).
async fn tally_with_faulty_decoder(dir: &Path, mode: &str) -> Tally {
    let plugins = fault_plugin(dir);
    add_user(dir, "Acme", "editor@acme.test", "editor").await;
    let registry = dir.join("gst-registry.bin");
    let env = [
        ("GST_PLUGIN_PATH", plugins.to_str().unwrap()),
        // A private registry: the plugin never reaches the user's GStreamer cache.
        ("GST_REGISTRY", registry.to_str().unwrap()),
        ("FAULT_PLUGIN_MODE", mode),
        ("TALLY_MEDIA__MAX_ATTEMPTS", "1"),
        ("TALLY_MEDIA__WATCHDOG_SECS", "1"),
    ];
    Tally::start(dir, &env).await
}

fn clip(dir: &Path) -> Vec<u8> {
    let path = dir.join("clip.mp4");
    let paint: Box<Painter> = Box::new(|i, data: &mut [u8]| fill(data, [(i * 20) as u8, 90, 160]));
    make_video(&path, &Spec { width: 160, height: 90, fps: 10, frames: 10 }, paint.as_ref());
    std::fs::read(&path).unwrap()
}

/// Uploads the clip and waits for its job to fail; returns the error and how long it took.
async fn upload_and_fail(tally: &Tally, dir: &Path) -> (String, Duration) {
    let token = tally.token("editor@acme.test").await;
    let started = Instant::now();
    let uploaded = tally.upload(&token, Some("doomed"), "clip.mp4", &clip(dir)).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let id = uploaded.json()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let video = tally.call(Method::GET, &format!("/api/videos/{id}"), &token, None).await.json();
        if video["status"] == "failed" {
            return (video["error"].as_str().unwrap_or_default().to_owned(), started.elapsed());
        }
        assert_ne!(video["status"], "processed", "the faulty decoder was not used");
        assert!(Instant::now() < deadline, "the job never failed: {video}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same process still serves: health, login, another upload.
async fn still_serving(tally: &Tally, pid: u32) {
    assert_eq!(tally.pid(), pid);
    let health = get(tally.addr, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let token = tally.token("editor@acme.test").await;
    let listed = tally.call(Method::GET, "/api/videos", &token, None).await;
    assert_eq!(listed.status, 200);
    let items: Vec<Value> = listed.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
}

#[tokio::test]
async fn a_decoder_that_crashes_costs_one_job_not_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let tally = tally_with_faulty_decoder(dir.path(), "crash").await;
    let pid = tally.pid();
    let (error, _) = upload_and_fail(&tally, dir.path()).await;
    assert_eq!(error, "the media worker crashed (signal 11, SIGSEGV)");
    still_serving(&tally, pid).await;
}

#[tokio::test]
async fn a_decoder_that_hangs_is_killed_and_its_job_fails() {
    let dir = tempfile::tempdir().unwrap();
    let tally = tally_with_faulty_decoder(dir.path(), "hang").await;
    let pid = tally.pid();
    let (error, took) = upload_and_fail(&tally, dir.path()).await;
    // Watchdog 1 s: the worker itself gives up, or is killed 5 s later.
    assert!(error.contains("stalled") || error.contains("hung and was killed"), "{error}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    still_serving(&tally, pid).await;
    // No worker is left behind.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert!(children.trim().is_empty(), "worker processes left: {children}");
}
