//! The box's own state over HTTP and Socket.IO, against the real `tally serve` process:
//! `GET /api/device` for admins only, identify, and the LED's conditions raised by real
//! events (a failed video, low storage).

mod common;

use std::time::Duration;

use common::process::{Tally, add_user};
use common::*;
use hyper::Method;
use serde_json::Value;

async fn box_with_users(env: &[(&str, &str)]) -> (tempfile::TempDir, Tally) {
    let dir = tempfile::tempdir().unwrap();
    for (org, email, role) in [
        ("Acme", "admin@acme.test", "admin"),
        ("Acme", "editor@acme.test", "editor"),
        ("Globex", "admin@globex.test", "admin"),
    ] {
        add_user(dir.path(), org, email, role).await;
    }
    let tally = Tally::start(dir.path(), env).await;
    (dir, tally)
}

/// Polls `GET /api/device` until the LED shows `state` (the monitor looks every 2 s).
async fn led_shows(tally: &Tally, token: &str, state: &str) -> Value {
    for _ in 0..100 {
        let status = tally.call(Method::GET, "/api/device", token, None).await.json();
        if status["led"]["state"] == state {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the LED never showed {state}");
}

/// The next `device:status` event on a raw socket, skipping other events.
async fn next_device_status(ws: &mut Ws) -> Value {
    loop {
        let text = next_text(ws).await;
        if let Some(event) = text.strip_prefix("42") {
            let event: Value = serde_json::from_str(event).unwrap();
            if event[0] == "device:status" {
                return event[1].clone();
            }
        }
    }
}

#[tokio::test]
async fn admins_see_the_device_and_make_it_identify_itself() {
    let (_dir, tally) = box_with_users(&[]).await;
    let admin = tally.token("admin@acme.test").await;
    let editor = tally.token("editor@acme.test").await;
    assert_eq!(tally.call(Method::GET, "/api/device", &editor, None).await.status, 403);
    assert_eq!(tally.call(Method::POST, "/api/device/identify", &editor, None).await.status, 403);
    assert_eq!(get(tally.addr, "/api/device").await.status, 401);

    let status = tally.call(Method::GET, "/api/device", &admin, None).await.json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["disk"]["totalBytes"].as_u64().unwrap() >= status["disk"]["freeBytes"].as_u64().unwrap());
    assert!(status["disk"]["freeBytes"].as_u64().unwrap() > 0);
    assert_eq!(status["decoder"]["mode"], "auto");
    assert_eq!(status["decoder"]["hardwareAvailable"], false, "no V4L2 decoder on this machine");
    assert_eq!(status["led"]["backend"], "simulated");
    assert!(status["uptimeSeconds"].as_u64().is_some());

    let mut admin_socket = tally.socket(&admin).await;
    let mut other_admin_socket = tally.socket(&tally.token("admin@globex.test").await).await;
    let mut editor_socket = tally.socket(&editor).await;
    let identify = tally.call(Method::POST, "/api/device/identify", &admin, None).await;
    assert_eq!(identify.status, 202);
    assert_eq!(identify.json()["led"]["state"], "identify");
    assert!((29..=30).contains(&identify.json()["led"]["identifySecondsLeft"].as_u64().unwrap()));
    let pushed = next_device_status(&mut admin_socket).await;
    assert_eq!(pushed["led"]["state"], "identify");
    assert_eq!(
        next_device_status(&mut other_admin_socket).await["led"]["state"],
        "identify",
        "the box is every admin's"
    );
    let silence = tokio::time::timeout(Duration::from_millis(300), next_device_status(&mut editor_socket)).await;
    assert!(silence.is_err(), "only admins follow the device");
}

#[tokio::test]
async fn a_failed_video_and_low_storage_show_on_the_led() {
    let (dir, mut tally) = box_with_users(&[]).await;
    let admin = tally.token("admin@acme.test").await;
    led_shows(&tally, &admin, "ready").await;
    let upload = tally.upload(&admin, None, "broken.mp4", b"not a video at all").await;
    assert_eq!(upload.status, 201);
    led_shows(&tally, &admin, "attention").await;
    tally.kill().await;

    // More free space wanted than any disk has: storage is low, and that outranks attention.
    let low = Tally::start(dir.path(), &[("TALLY_STORAGE_LOW_BYTES", "18000000000000000000")]).await;
    let admin = low.token("admin@acme.test").await;
    let status = led_shows(&low, &admin, "storage-low").await;
    assert_eq!(status["led"]["pattern"], "on, with 3 quick off-blips every 2.5 s");
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text answer.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn health_and_metrics_for_fleet_monitoring() {
    let (_dir, tally) = box_with_users(&[]).await;
    let health = get(tally.addr, "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({"status": "ok", "storage": true, "workers": true}));
    assert_eq!(post(tally.addr, "/healthz", "").await.status, 405);

    let admin = tally.token("admin@acme.test").await;
    let _socket = tally.socket(&admin).await;
    let upload = tally.upload(&admin, None, "broken.mp4", b"not a video, 26 bytes long").await;
    assert_eq!(upload.status, 201);
    let mut text = String::new();
    for _ in 0..100 {
        text = get(tally.addr, "/metrics").await.body;
        if sample(&text, "tally_videos_total{outcome=\"failed\"}").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sample(&text, "tally_videos_total{outcome=\"failed\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "tally_connections{transport=\"websocket\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "tally_connections{transport=\"polling\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "tally_upload_bytes_total"), Some(26.0), "{text}");
    assert_eq!(sample(&text, "tally_jobs{state=\"queued\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "tally_processing_seconds_count"), Some(0.0), "only successes are timed");
    assert!(sample(&text, "tally_disk_free_bytes").is_some_and(|free| free > 0.0), "{text}");
    assert_eq!(sample(&text, "tally_healthy"), Some(1.0));
    // Login, upload and job outcome waited to be durable; the health probe writes too.
    let writes = sample(&text, "tally_storage_durable_writes_total").unwrap_or(0.0);
    let flushes = sample(&text, "tally_storage_flushes_total").unwrap_or(0.0);
    assert!(writes >= 3.0 && flushes >= 1.0 && flushes <= writes, "{text}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
}
