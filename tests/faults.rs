//! Faults the box must survive.
//!
//! - A GStreamer decoder that crashes or hangs (a real plugin, `tests/faults/gst-fault-plugin.c`,
//!   compiled here and loaded through `GST_PLUGIN_PATH`) costs the job it was decoding, never
//!   the service.
//! - A full disk (a small tmpfs; these tests need root and skip without it): writes fail with
//!   clear errors and lose nothing acknowledged; the box says so (503, LED fault) and gets
//!   back to work once space returns. A read-only data dir stops the start with a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fixtures::{Painter, Spec, fill, make_video};
use common::process::{Tally, UNLIMITED_CHAT, add_user};
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

/// The child processes of `pid`, whichever of its threads started them.
fn children(pid: u32) -> Vec<u32> {
    let tasks =
        std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    tasks
        .iter()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<u32>>())
        .collect()
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
    assert_eq!(children(pid), Vec::<u32>::new(), "no worker is left behind");
}

/// A tmpfs of `megabytes` mounted on a fresh directory (root only; `None` otherwise),
/// unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={megabytes}m");
        let mounted =
            std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(dir.path()).status();
        mounted.is_ok_and(|s| s.success()).then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a new filler file until the filesystem refuses more.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join(format!("filler-{}", rand::random::<u32>()));
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl SmallDisk {
    /// Frees `bytes` by shortening a filler file.
    fn make_room(filler: &Path, bytes: u64) {
        let file = std::fs::OpenOptions::new().write(true).open(filler).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(bytes)).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// `tally serve` with one user on a fresh 48 MiB tmpfs, the LED's storage-low mark at 4 MiB
/// and no free-space reserve; `None` (the test skips) without root.
async fn tally_on_small_disk(email: &str, role: &str, extra: &[(&str, &str)]) -> Option<(SmallDisk, Tally)> {
    let Some(disk) = SmallDisk::mount(48) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    };
    add_user(disk.path(), "Acme", email, role).await;
    let mut env = vec![
        ("TALLY_MIN_FREE_BYTES", "0"),
        ("TALLY_STORAGE_LOW_BYTES", "4194304"),
        ("TALLY_MEDIA__RETRY_BACKOFF_SECS", "1"),
    ];
    env.extend_from_slice(&UNLIMITED_CHAT);
    env.extend_from_slice(extra);
    let tally = Tally::start(disk.path(), &env).await;
    Some((disk, tally))
}

#[tokio::test]
async fn a_full_disk_fails_writes_cleanly_and_the_box_recovers_when_space_returns() {
    let Some((disk, mut tally)) = tally_on_small_disk("admin@acme.test", "admin", &[]).await else { return };
    let token = tally.token("admin@acme.test").await;
    let mut ws = tally.socket(&token).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let clip = clip(elsewhere.path());
    let mut said = vec!["before".to_owned()];
    assert!(say(&mut ws, 0, "before").await.get("message").is_some());

    // Full: chat keeps being acknowledged while the database's log has room, then refused.
    let filler = disk.fill();
    let mut n = 1;
    let refused = loop {
        let text = format!("while full {n} {}", "x".repeat(1500));
        let answer = say(&mut ws, n, &text).await;
        n += 1;
        match answer.get("message") {
            Some(_) => said.push(text),
            None => break answer,
        }
        assert!(n < 5000, "the disk never filled");
    };
    assert_eq!(refused, serde_json::json!({"error": "the message could not be stored"}));
    let upload = tally.upload(&token, Some("full"), "clip.mp4", &clip).await;
    assert_eq!(upload.status, 507, "{}", upload.body);
    let health = get(tally.addr, "/healthz").await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert!(health.json()["storageError"].as_str().unwrap().contains("No space left"), "{}", health.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let device = tally.call(Method::GET, "/api/device", &token, None).await.json();
        if device["led"]["state"] == "fault" {
            break;
        }
        assert!(Instant::now() < deadline, "the LED never showed the fault: {device}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reads = tally.call(Method::GET, "/api/videos", &token, None).await;
    assert_eq!(reads.status, 200, "reads go on: {}", reads.body);

    // Space back: the service stops by itself to reopen the database (systemd starts it again).
    std::fs::remove_file(filler).unwrap();
    let status = tally.exited(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(tally::app::RESTART_EXIT_CODE));
    tally.restart().await;
    let token = tally.token("admin@acme.test").await;
    let mut ws = tally.socket(&token).await;
    assert!(say(&mut ws, 0, "after").await.get("message").is_some());
    let upload = tally.upload(&token, Some("after"), "clip.mp4", &clip).await;
    assert_eq!(upload.status, 201, "{}", upload.body);
    assert_eq!(get(tally.addr, "/healthz").await.status, 200);
    let history = chat_history(&mut ws).await;
    for text in &said {
        assert!(history.contains(text), "acknowledged {text:.20} is gone");
    }
}

#[tokio::test]
async fn thumbnails_that_do_not_fit_are_retried_once_space_returns() {
    let attempts = [("TALLY_MEDIA__MAX_ATTEMPTS", "20")];
    let Some((disk, mut tally)) = tally_on_small_disk("editor@acme.test", "editor", &attempts).await else { return };
    let token = tally.token("editor@acme.test").await;
    let elsewhere = tempfile::tempdir().unwrap();
    let clip = clip(elsewhere.path());
    // Full but for a little room, which the upload itself takes.
    let filler = disk.fill();
    SmallDisk::make_room(&filler, 256 * 1024);
    let uploaded = tally.upload(&token, Some("tight"), "clip.mp4", &clip).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let id = uploaded.json()["id"].as_str().unwrap().to_owned();
    let more = disk.fill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let video = tally.call(Method::GET, &format!("/api/videos/{id}"), &token, None).await.json();
    assert_ne!(video["status"], "processed", "no room for thumbnails, yet processed: {video}");
    assert_eq!(std::fs::read_dir(disk.path().join("tmp")).unwrap().count(), 0, "no scratch files left");

    std::fs::remove_file(more).unwrap();
    std::fs::remove_file(filler).unwrap();
    // The job gets through, after a restart if the database had failed a write meanwhile.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = tally.has_exited() {
            assert_eq!(status.code(), Some(tally::app::RESTART_EXIT_CODE));
            tally.restart().await;
        }
        let reply = tally.call(Method::GET, &format!("/api/videos/{id}"), &token, None).await;
        if reply.status == 200 && reply.json()["status"] == "processed" {
            break;
        }
        assert!(Instant::now() < deadline, "never processed: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut files: Vec<String> = std::fs::read_dir(disk.path().join("videos").join(&id))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let expected = ["original.mp4", "previews.jpg", "previews.vtt", "thumbnail-card.jpg", "thumbnail-poster.jpg"];
    assert_eq!(files, expected, "the original, two thumbnails and the previews, nothing half-written");
}

#[tokio::test]
async fn a_read_only_data_dir_stops_the_start_with_a_clear_error() {
    let Some(disk) = SmallDisk::mount(16) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    add_user(disk.path(), "Acme", "editor@acme.test", "editor").await;
    let remounted = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(disk.path()).status().unwrap();
    assert!(remounted.success());
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(common::process::TALLY)
            .arg("serve")
            .env("TALLY_DATA_DIR", disk.path())
            .env("TALLY_PORT", "0")
            .output(),
    )
    .await
    .expect("tally gives up at once")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(stderr.contains(&disk.path().display().to_string()), "names the data dir: {stderr}");
}

#[tokio::test]
async fn a_media_worker_dies_with_the_service() {
    let dir = tempfile::tempdir().unwrap();
    // A hanging decoder keeps the worker busy for as long as the test needs.
    let mut tally = tally_with_faulty_decoder(dir.path(), "hang").await;
    let token = tally.token("editor@acme.test").await;
    let uploaded = tally.upload(&token, Some("stuck"), "clip.mp4", &clip(dir.path())).await;
    assert_eq!(uploaded.status, 201);
    let pid = tally.pid();
    let deadline = Instant::now() + Duration::from_secs(10);
    let worker: u32 = loop {
        if let Some(&child) = children(pid).first() {
            break child;
        }
        assert!(Instant::now() < deadline, "no media worker started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tally.kill().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    // Gone, or a zombie nobody will reap (its parent is gone too): not running either way.
    while std::fs::read_to_string(format!("/proc/{worker}/stat")).is_ok_and(|stat| !stat.contains(") Z ")) {
        assert!(Instant::now() < deadline, "the media worker outlived the service");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_media_worker_killed_while_it_makes_the_rendition_leaves_the_original_playing() {
    // What the kernel's OOM killer does to a worker an encoder made too big, and what a
    // crashing encoder or muxer does to itself: the same again would end the same way on every
    // retry. A first death turns to software encoders (a hardware one cannot report its own
    // crash); a second one costs the rendition, and the video is processed without it.
    use common::fixtures::{Encoding, make_encoded};
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "Acme", "editor@acme.test", "editor").await;
    let tally = Tally::start(dir.path(), &[]).await;
    let token = tally.token("editor@acme.test").await;
    let path = dir.path().join("phone.mp4");
    let encoding = Encoding {
        video: "x265enc speed-preset=ultrafast key-int-max=30 ! h265parse",
        mux: "mp4mux name=mux faststart=true",
        audio: None,
        format: "I420",
    };
    let paint: Box<Painter> = Box::new(|i, data: &mut [u8]| fill(data, [(i * 3) as u8, 90, 160]));
    make_encoded(&path, &Spec { width: 320, height: 180, fps: 30, frames: 30 * 30 }, paint.as_ref(), &encoding);
    let mut ws = tally.socket(&token).await;
    let uploaded = tally.upload(&token, None, "phone.mp4", &std::fs::read(&path).unwrap()).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let id = uploaded.json()["id"].as_str().unwrap().to_owned();
    let mut killed = Vec::new();
    for _ in 0..2 {
        // A worker other than the ones killed, under way with the rendition (a new one starts
        // at the metadata).
        let mut started = killed.is_empty();
        let worker = loop {
            let text = next_text(&mut ws).await;
            started |= text.contains("video:progress") && text.contains("\"metadata\"");
            let making = started && text.contains("video:progress") && text.contains("\"rendition\"");
            let workers: Vec<u32> = children(tally.pid()).into_iter().filter(|w| !killed.contains(w)).collect();
            if making && !text.contains("\"progress\":0") && workers.len() == 1 {
                break workers[0];
            }
        };
        let status = std::process::Command::new("kill").args(["-KILL", &worker.to_string()]).status().unwrap();
        assert!(status.success());
        killed.push(worker);
    }
    let video = tally.settled(&token, &id, Duration::from_secs(60)).await;
    assert_eq!(video["status"], "processed", "{video:#}");
    assert_eq!(video["playback"]["kind"], "original", "{video:#}");
    let problem = video["playback"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("stopped the media worker") && problem.contains("SIGKILL"), "{problem}");
    assert_eq!(video["sensitivity"]["verdict"], "safe", "the analysis ran in full: {video:#}");
    assert!(video["previewsUrl"].is_string() && video["thumbnailUrl"].is_string(), "{video:#}");
    assert!(!dir.path().join("videos").join(&id).join("web.mp4").exists());
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "nothing half-written is left");
}

#[tokio::test]
async fn a_rendition_that_does_not_fit_leaves_the_original_playing_with_the_reason() {
    use common::fixtures::{Encoding, make_encoded};
    let Some((disk, tally)) = tally_on_small_disk("editor@acme.test", "editor", &[]).await else { return };
    let token = tally.token("editor@acme.test").await;
    let elsewhere = tempfile::tempdir().unwrap();
    let path = elsewhere.path().join("phone.mp4");
    let encoding = Encoding {
        video: "x265enc speed-preset=ultrafast ! h265parse",
        mux: "mp4mux name=mux faststart=true",
        audio: None,
        format: "I420",
    };
    let paint: Box<Painter> = Box::new(|i, data: &mut [u8]| fill(data, [(i * 5) as u8, 90, 160]));
    make_encoded(&path, &Spec { width: 640, height: 360, fps: 30, frames: 120 }, paint.as_ref(), &encoding);
    let bytes = std::fs::read(&path).unwrap();
    // Room for the upload and its thumbnails, not for a transcode of four seconds of 360p
    // (about 0.8 MB with the muxer's scratch copy).
    let filler = disk.fill();
    SmallDisk::make_room(&filler, bytes.len() as u64 + 300 * 1024);
    let uploaded = tally.upload(&token, None, "phone.mp4", &bytes).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let id = uploaded.json()["id"].as_str().unwrap().to_owned();
    let video = tally.settled(&token, &id, Duration::from_secs(40)).await;
    assert_eq!(video["status"], "processed", "a rendition that cannot be made does not fail the video: {video}");
    assert_eq!(video["playback"]["kind"], "original", "{video}");
    let problem = video["playback"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("not enough free space"), "the reason is recorded: {video}");
    assert!(!disk.path().join("videos").join(&id).join("web.mp4").exists());
    assert_eq!(std::fs::read_dir(disk.path().join("tmp")).unwrap().count(), 0, "nothing half-written is left");
    let stream = get(tally.addr, video["playback"]["url"].as_str().unwrap()).await;
    assert_eq!((stream.status, stream.bytes == bytes), (200, true), "the player gets the original");
    std::fs::remove_file(filler).unwrap();
}
