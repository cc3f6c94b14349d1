//! Processing end to end on the real server process: upload through the API, watch the
//! stages over the stock socket.io-client, fetch the thumbnails, survive a crash mid-job.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::fixtures::{Painter, Spec, fill, make_video};
use common::node::NodeClients;
use common::process::{Tally, add_user};
use common::*;
use hyper::Method;
use serde_json::{Value, json};

async fn acme_and_globex() -> (tempfile::TempDir, Tally) {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "Acme", "editor@acme.test", "editor").await;
    add_user(dir.path(), "Globex", "admin@globex.test", "admin").await;
    let tally = Tally::start(dir.path(), &[("TALLY_MEDIA__RETRY_BACKOFF_SECS", "1")]).await;
    (dir, tally)
}

/// `seconds` of 320×180 video: black for the first second, then a bright moving gradient.
fn clip(dir: &Path, name: &str, width: u32, seconds: u64) -> Vec<u8> {
    let path = dir.join(name);
    let paint: Box<Painter> = Box::new(move |i, data: &mut [u8]| {
        if i < 30 {
            fill(data, [0, 0, 0]);
            return;
        }
        for (p, px) in data.chunks_exact_mut(3).enumerate() {
            let x = ((p as u32 % width) + i as u32) as u8;
            px.copy_from_slice(&[x, 180, 255 - x]);
        }
    });
    make_video(&path, &Spec { width, height: width * 9 / 16, fps: 30, frames: 30 * seconds }, paint.as_ref());
    std::fs::read(&path).unwrap()
}

/// Width and height from a baseline or progressive JPEG's SOF marker.
fn jpeg_size(jpeg: &[u8]) -> (u32, u32) {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    let mut i = 2;
    while i + 9 < jpeg.len() {
        let (marker, len) = (jpeg[i + 1], u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize);
        if matches!(marker, 0xC0..=0xC2) {
            let height = u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]) as u32;
            let width = u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]) as u32;
            return (width, height);
        }
        i += 2 + len;
    }
    panic!("no frame header in the JPEG");
}

#[tokio::test]
async fn uploads_are_processed_live_for_the_organization_only() {
    let (dir, tally) = acme_and_globex().await;
    let editor = tally.token("editor@acme.test").await;
    let outsider = tally.token("admin@globex.test").await;
    let mut node = NodeClients::spawn().await;
    let url = format!("http://{}", tally.addr);
    node.connect("acme", &url, Some(&editor), json!({})).await;
    node.connect("globex", &url, Some(&outsider), json!({})).await;
    node.expect_ev("acme", "connect").await;
    node.expect_ev("globex", "connect").await;

    let bytes = clip(dir.path(), "clip.mp4", 640, 3);
    let uploaded = tally.upload(&editor, Some("processed live"), "clip.mp4", &bytes).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let id = uploaded.json()["id"].as_str().unwrap().to_owned();

    let processed = node.expect_event("acme", "video:processed").await["args"][0].clone();
    let progress: Vec<Value> = node
        .drain()
        .into_iter()
        .filter(|v| v["id"] == "acme" && v["event"] == "video:progress")
        .map(|v| v["args"][0].clone())
        .collect();
    let mut stages: Vec<String> = Vec::new();
    for event in &progress {
        assert_eq!(event["videoId"], id.as_str());
        let percent = event["progress"].as_u64().unwrap();
        assert!(percent <= 100);
        let stage = event["stage"].as_str().unwrap().to_owned();
        if stages.last() != Some(&stage) {
            stages.push(stage);
        }
    }
    assert_eq!(stages, ["metadata", "sensitivity", "thumbnail"], "{progress:#?}");
    assert!(progress.iter().any(|p| p["stage"] == "thumbnail" && p["progress"] == 100));

    assert_eq!(processed["id"], id.as_str());
    assert_eq!(processed["status"], "processed");
    assert_eq!(processed["metadata"]["width"], 640);
    assert_eq!(processed["metadata"]["height"], 360);
    assert!(processed["metadata"]["decoder"].is_string());
    assert_eq!(processed["sensitivity"]["verdict"], "safe");
    assert_eq!(processed["sensitivity"]["algorithm"], "pse-flash-v1");
    for (field, width) in [("thumbnailUrl", 320), ("posterUrl", 640)] {
        let jpeg = get(tally.addr, processed[field].as_str().unwrap()).await;
        assert_eq!((jpeg.status, jpeg.headers["content-type"].to_str().unwrap()), (200, "image/jpeg"));
        assert_eq!(jpeg_size(&jpeg.bytes), (width, width * 9 / 16), "{field}");
    }
    let record = tally.call(Method::GET, &format!("/api/videos/{id}"), &editor, None).await.json();
    for key in ["status", "metadata", "sensitivity", "hasThumbnail"] {
        assert_eq!(
            numbers_as_f64(&record[key]),
            numbers_as_f64(&processed[key]),
            "the record matches what was announced: {key}"
        );
    }
    // GStreamer names the MP4 family after QuickTime.
    assert_eq!(processed["metadata"]["container"], "Quicktime");
    assert!(record.get("progress").is_none(), "no stale progress on a processed video");
    let leaked: Vec<_> = node.drain().into_iter().filter(|v| v["id"] == "globex" && v["ev"] == "event").collect();
    assert!(leaked.is_empty(), "globex saw {leaked:?}");
}

/// JSON with every number as a float: `30.0` from Rust and `30` from JavaScript are one value.
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

async fn wait_for_status(tally: &Tally, token: &str, id: &str, status: &str) -> Value {
    wait_for(tally, token, id, |record| record["status"] == status).await
}

/// Waits for the first `video:progress` of the analysis pass.
async fn wait_for_analysis(ws: &mut Ws) {
    loop {
        let text = next_text(ws).await;
        if text.contains("video:progress") && text.contains("\"sensitivity\"") {
            return;
        }
    }
}

/// A 40 s clip uploaded and its analysis pass started; the editor's socket follows it.
async fn long_job_under_way() -> (tempfile::TempDir, Tally, Ws, String) {
    let (dir, tally) = acme_and_globex().await;
    let editor = tally.token("editor@acme.test").await;
    let bytes = clip(dir.path(), "long.mp4", 320, 40);
    let mut ws = tally.socket(&editor).await;
    let id = tally.upload(&editor, Some("long"), "long.mp4", &bytes).await.json()["id"].as_str().unwrap().to_owned();
    wait_for_analysis(&mut ws).await;
    (dir, tally, ws, id)
}

#[tokio::test]
async fn a_job_cut_short_by_a_crash_completes_after_restart() {
    let (_dir, mut tally, _ws, id) = long_job_under_way().await;
    tally.kill().await;
    tally.restart().await;
    let editor = tally.token("editor@acme.test").await;
    let record = wait_for_status(&tally, &editor, &id, "processed").await;
    assert_eq!(record["sensitivity"]["verdict"], "safe");
    assert!(record["metadata"]["durationMs"].as_u64().unwrap() >= 39_000);
}

#[tokio::test]
async fn a_graceful_stop_mid_job_disconnects_clients_and_the_job_completes_after_restart() {
    let (_dir, mut tally, mut ws, id) = long_job_under_way().await;
    let status = tally.terminate().await;
    assert!(status.success(), "a clean exit: {status}");
    assert!(closed_by_server(&mut ws).await, "clients are told the server went away");
    tally.restart().await;
    let editor = tally.token("editor@acme.test").await;
    let record = wait_for_status(&tally, &editor, &id, "processed").await;
    assert_eq!(record["sensitivity"]["verdict"], "safe");
}

#[tokio::test]
async fn deleting_a_video_stops_its_processing() {
    let (dir, tally) = acme_and_globex().await;
    let editor = tally.token("editor@acme.test").await;
    let bytes = clip(dir.path(), "doomed.mp4", 320, 40);
    let mut ws = tally.socket(&editor).await;
    let id =
        tally.upload(&editor, Some("doomed"), "doomed.mp4", &bytes).await.json()["id"].as_str().unwrap().to_owned();
    wait_for_analysis(&mut ws).await;
    assert_eq!(tally.call(Method::DELETE, &format!("/api/videos/{id}"), &editor, None).await.status, 204);
    // The deletion is announced, and no processing outcome follows it.
    loop {
        let text = next_text(&mut ws).await;
        if text.contains("video:deleted") {
            break;
        }
    }
    let after = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let text = next_text(&mut ws).await;
            if text.contains("video:processed") || text.contains("video:failed") {
                return text;
            }
        }
    })
    .await;
    assert!(after.is_err(), "an outcome was announced for a deleted video: {after:?}");
    assert!(!dir.path().join("videos").join(&id).exists());
}

#[tokio::test]
async fn a_file_that_is_not_a_video_fails_live_with_a_clear_message() {
    let (_dir, tally) = acme_and_globex().await;
    let editor = tally.token("editor@acme.test").await;
    let mut ws = tally.socket(&editor).await;
    let text = "just some text, renamed to look like a video\n".repeat(50);
    let id = tally.upload(&editor, Some("fake"), "fake.mp4", text.as_bytes()).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = loop {
        let text = next_text(&mut ws).await;
        if text.contains("video:failed") {
            break serde_json::from_str::<Value>(&text[2..]).unwrap()[1].clone();
        }
    };
    assert_eq!((failed["videoId"].as_str(), failed["stage"].as_str()), (Some(id.as_str()), Some("metadata")));
    assert!(failed["error"].as_str().unwrap().starts_with("not a video"), "{failed}");
    let record = tally.call(Method::GET, &format!("/api/videos/{id}"), &editor, None).await.json();
    assert_eq!((record["status"].as_str(), record["error"].clone()), (Some("failed"), failed["error"].clone()));
}

/// An HEVC clip with AAC audio, as phones record by default, `seconds` long at 320×180.
fn hevc_clip(dir: &Path, name: &str, seconds: u64) -> Vec<u8> {
    use common::fixtures::{Encoding, make_encoded};
    let path = dir.join(name);
    let paint: Box<Painter> = Box::new(move |i, data: &mut [u8]| {
        for (p, px) in data.chunks_exact_mut(3).enumerate() {
            let x = ((p as u32 % 320) + i as u32) as u8;
            px.copy_from_slice(&[x, 180, 255 - x]);
        }
    });
    let encoding = Encoding {
        video: "x265enc speed-preset=ultrafast key-int-max=30 ! h265parse",
        mux: "mp4mux name=mux faststart=true",
        audio: Some("avenc_aac"),
        format: "I420",
    };
    make_encoded(&path, &Spec { width: 320, height: 180, fps: 30, frames: 30 * seconds }, paint.as_ref(), &encoding);
    std::fs::read(&path).unwrap()
}

/// Whether MP4 bytes have their index before their media data.
fn index_first(dir: &Path, bytes: &[u8]) -> Option<bool> {
    let path = dir.join(format!("check-{}.mp4", bytes.len()));
    std::fs::write(&path, bytes).unwrap();
    tally::media::rendition::index_first(&path).unwrap()
}

#[tokio::test]
async fn an_hevc_upload_plays_as_a_transcoded_rendition_and_its_original_downloads() {
    let (dir, tally) = acme_and_globex().await;
    let editor = tally.token("editor@acme.test").await;
    let outsider = tally.token("admin@globex.test").await;
    let mut node = NodeClients::spawn().await;
    node.connect("acme", &format!("http://{}", tally.addr), Some(&editor), json!({})).await;
    node.expect_ev("acme", "connect").await;
    let bytes = hevc_clip(dir.path(), "phone.mp4", 3);
    let name = "Strand *Sommer* \u{202e}4pm.exe 2026.mp4";
    let uploaded = tally.upload(&editor, None, name, &bytes).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let id = uploaded.json()["id"].as_str().unwrap().to_owned();
    let processed = node.expect_event("acme", "video:processed").await["args"][0].clone();
    let progress: Vec<Value> = node
        .drain()
        .into_iter()
        .filter(|v| v["event"] == "video:progress" && v["args"][0]["stage"] == "rendition")
        .map(|v| v["args"][0].clone())
        .collect();
    assert!(progress.iter().any(|p| p["progress"] == 100), "the rendition stage is reported: {progress:?}");
    assert!(progress.iter().all(|p| p["progress"].as_u64().unwrap() <= 100));

    let playback = &processed["playback"];
    assert_eq!(playback["kind"], "transcoded", "{processed:#}");
    assert!(playback["reason"].as_str().unwrap().contains("HEVC"));
    assert_eq!(processed["metadata"]["encoder"], "x264enc");
    let record = tally.call(Method::GET, &format!("/api/videos/{id}"), &editor, None).await.json();
    assert_eq!(record["playback"]["kind"], "transcoded", "the record says what plays");

    // The player's source: H.264 in an MP4 with its index first, served with ranges.
    let url = playback["url"].as_str().unwrap();
    let web = get(tally.addr, url).await;
    assert_eq!((web.status, web.headers["content-type"].to_str().unwrap()), (200, "video/mp4"));
    assert_eq!(index_first(dir.path(), &web.bytes), Some(true));
    assert_eq!(web.bytes, std::fs::read(dir.path().join("videos").join(&id).join("web.mp4")).unwrap());
    let part = request(tally.addr, Method::GET, url, b"", &[("range", "bytes=0-99")]).await;
    assert_eq!((part.status, part.bytes.len()), (206, 100));
    assert_eq!(&part.bytes[..], &web.bytes[..100]);

    // The original downloads as it came, under a name that is safe to save.
    let original = get(tally.addr, processed["originalUrl"].as_str().unwrap()).await;
    assert_eq!(original.status, 200);
    assert_eq!(original.bytes, bytes, "the original is byte for byte what was uploaded");
    let disposition = original.headers["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename=\"Strand _Sommer_ 4pm.exe 2026.mp4\""), "{disposition}");
    assert!(!disposition.contains('\u{202e}') && !disposition.contains("%E2%80%AE"), "{disposition}");
    assert!(disposition.contains("filename*=UTF-8''Strand%20_Sommer_%20"), "{disposition}");
    // With a bearer token too; another organization sees nothing, not even with its own.
    let original_as = async |token: &str| {
        let bearer = format!("Bearer {token}");
        let path = format!("/api/videos/{id}/original");
        request(tally.addr, Method::GET, &path, b"", &[("authorization", &bearer)]).await.status
    };
    assert_eq!(original_as(&editor).await, 200);
    assert_eq!(original_as(&outsider).await, 404);
    let moved = url.replace(&id, "01JNOTAVIDEO00000000000000");
    assert_eq!(get(tally.addr, &moved).await.status, 404, "a signed URL serves its own video only");

    // Scrub previews: the cues cover the whole video and every frame they name is on the sheet.
    let sheet = get(tally.addr, processed["previewSheetUrl"].as_str().unwrap()).await;
    assert_eq!((sheet.status, sheet.headers["content-type"].to_str().unwrap()), (200, "image/jpeg"));
    let (sheet_w, sheet_h) = jpeg_size(&sheet.bytes);
    let vtt = get(tally.addr, processed["previewsUrl"].as_str().unwrap()).await;
    assert_eq!(vtt.headers["content-type"].to_str().unwrap(), "text/vtt; charset=utf-8");
    let cues = parse_cues(std::str::from_utf8(&vtt.bytes).unwrap());
    let duration = processed["metadata"]["durationMs"].as_u64().unwrap();
    assert_eq!(cues.len(), 2, "a frame every 2 s of 3 s: {cues:?}");
    assert_eq!(cues[0].0, 0, "the first cue starts at the start");
    assert_eq!(cues.last().unwrap().1, duration, "the last cue ends at the end");
    for pair in cues.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "no gap or overlap between cues: {cues:?}");
    }
    for (_, _, [x, y, w, h]) in &cues {
        assert!(x + w <= sheet_w && y + h <= sheet_h && *w == 160 && *h == 90, "{cues:?} on {sheet_w}x{sheet_h}");
    }

    // Deleted with its video.
    assert_eq!(tally.call(Method::DELETE, &format!("/api/videos/{id}"), &editor, None).await.status, 204);
    assert!(!dir.path().join("videos").join(&id).exists());
}

#[tokio::test]
async fn a_missing_rendition_is_rebuilt_at_start_and_a_transcode_cut_short_completes() {
    let (dir, mut tally) = acme_and_globex().await;
    let editor = tally.token("editor@acme.test").await;
    let bytes = hevc_clip(dir.path(), "short.mp4", 2);
    let short = tally.upload(&editor, None, "short.mp4", &bytes).await.json()["id"].as_str().unwrap().to_owned();
    wait_for_status(&tally, &editor, &short, "processed").await;
    let rendition = dir.path().join("videos").join(&short).join("web.mp4");
    let first = std::fs::read(&rendition).unwrap();

    // A long transcode under way when the box loses power.
    let long = hevc_clip(dir.path(), "long.mp4", 30);
    let mut ws = tally.socket(&editor).await;
    let id = tally.upload(&editor, None, "long.mp4", &long).await.json()["id"].as_str().unwrap().to_owned();
    loop {
        let text = next_text(&mut ws).await;
        if text.contains("video:progress") && text.contains("\"rendition\"") && !text.contains("\"progress\":0") {
            break;
        }
    }
    tally.kill().await;
    let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert!(leftovers > 0, "the transcode was writing when it was cut short");
    std::fs::remove_file(&rendition).unwrap();
    tally.restart().await;
    let editor = tally.token("editor@acme.test").await;
    let record = wait_for_status(&tally, &editor, &id, "processed").await;
    assert_eq!(record["playback"]["kind"], "transcoded");
    let web = std::fs::read(dir.path().join("videos").join(&id).join("web.mp4")).unwrap();
    assert_eq!(index_first(dir.path(), &web), Some(true), "the resumed transcode wrote a whole file");
    let path = dir.path().join("resumed.mp4");
    std::fs::write(&path, &web).unwrap();
    let metadata = tally::media::Media::new(tally::media::MediaConfig::default()).unwrap().probe(&path).unwrap();
    assert!(metadata.duration_ms.unwrap() >= 29_900, "{metadata:?}");
    // The rendition removed by hand is made again.
    let rebuilt = wait_for_status(&tally, &editor, &short, "processed").await;
    assert_eq!(rebuilt["playback"]["kind"], "transcoded");
    common::eventually("the rendition is rebuilt", || rendition.exists()).await;
    let again = std::fs::read(&rendition).unwrap();
    assert!(again.len().abs_diff(first.len()) < first.len() / 10, "{} bytes then {}", first.len(), again.len());
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "nothing half-written is left");
}

#[tokio::test]
async fn videos_from_before_renditions_are_made_again_behind_new_uploads_and_stay_playable() {
    let (dir, mut tally) = acme_and_globex().await;
    let editor = tally.token("editor@acme.test").await;
    let mut old = Vec::new();
    for n in 0..3 {
        let name = format!("old-{n}.mp4");
        // Long enough that the first rebuild is still running when the new upload comes.
        let bytes = hevc_clip(dir.path(), &name, 8);
        old.push(tally.upload(&editor, None, &name, &bytes).await.json()["id"].as_str().unwrap().to_owned());
    }
    let mut before = Vec::new();
    for id in &old {
        before.push(wait_for_status(&tally, &editor, id, "processed").await);
    }
    tally.terminate().await;
    // As a box that processed them before there were renditions left them.
    {
        let store = tally::store::Store::open(dir.path()).unwrap();
        for (id, record) in old.iter().zip(&before) {
            store
                .update_video(record["orgId"].as_str().unwrap(), id, |video| {
                    video.playback = None;
                    video.has_previews = false;
                })
                .unwrap();
            for name in ["web.mp4", "previews.jpg", "previews.vtt"] {
                std::fs::remove_file(dir.path().join("videos").join(id).join(name)).unwrap();
            }
        }
        store.durable_blocking().unwrap();
    }
    // And one of them no longer decodes: making it again fails.
    let broken = old[2].clone();
    std::fs::write(dir.path().join("videos").join(&broken).join("original.mp4"), b"no longer a video").unwrap();

    let new_clip = clip(dir.path(), "new.mp4", 320, 1);
    tally.restart().await;
    let editor = tally.token("editor@acme.test").await;
    // Watched throughout: the old videos stay processed, playable, while they are made again.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (addr, token, old, watching) = (tally.addr, editor.clone(), old.clone(), watching.clone());
        tokio::spawn(async move {
            let tally = Tally::attach(addr);
            let mut seen = std::collections::BTreeSet::new();
            while watching.load(Ordering::Relaxed) {
                for id in &old {
                    let record = tally.call(Method::GET, &format!("/api/videos/{id}"), &token, None).await.json();
                    seen.insert(record["status"].as_str().unwrap_or("gone").to_owned());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let fresh = tally.upload(&editor, None, "new.mp4", &new_clip).await;
    let fresh = fresh.json()["id"].as_str().unwrap().to_owned();
    let fresh = wait_for_status(&tally, &editor, &fresh, "processed").await;
    let failed = wait_for(&tally, &editor, &broken, |v| !v["playback"].is_null()).await;
    let mut rebuilt = Vec::new();
    for id in &old[..2] {
        rebuilt.push(wait_for(&tally, &editor, id, |v| v["playback"]["kind"] == "transcoded").await);
    }
    watching.store(false, Ordering::Relaxed);
    let seen = watcher.await.unwrap();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["processed"], "the old videos stayed processed throughout");
    // The new upload did not wait for the whole library (one worker: the first rebuild had
    // started before it came).
    let finished = |record: &Value| record["updatedAt"].as_u64().unwrap();
    let last_rebuild = rebuilt.iter().map(finished).max().unwrap();
    assert!(finished(&fresh) < last_rebuild, "the new upload went ahead of the rebuilds");

    for (id, record) in old[..2].iter().zip(&before) {
        let now = tally.call(Method::GET, &format!("/api/videos/{id}"), &editor, None).await.json();
        assert_eq!((now["status"].clone(), now["playback"]["kind"].clone()), (json!("processed"), json!("transcoded")));
        assert!(now["previewsUrl"].is_string(), "previews are made too: {now:#}");
        assert!(dir.path().join("videos").join(id).join("web.mp4").exists());
        assert_eq!(now["sensitivity"], record["sensitivity"]);
    }
    // The one that could not be made again keeps what it had, and says why it has no rendition.
    let kept = &before[2];
    assert_eq!(failed["status"], "processed", "{failed:#}");
    assert_eq!(failed["playback"]["kind"], "original");
    let problem = failed["playback"]["problem"].as_str().unwrap();
    assert!(problem.starts_with("the web rendition could not be made"), "{problem}");
    assert!(failed["error"].is_null(), "{failed:#}");
    assert_eq!((&failed["metadata"], &failed["sensitivity"]), (&kept["metadata"], &kept["sensitivity"]));
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "nothing half-written is left");
}

/// Polls a video's record until `done` holds for it.
async fn wait_for(tally: &Tally, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let record = tally.call(Method::GET, &format!("/api/videos/{id}"), token, None).await.json();
        if done(&record) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("video {id} never got there");
}

/// WebVTT thumbnail cues: start and end in ms, the `#xywh=` rectangle.
fn parse_cues(vtt: &str) -> Vec<(u64, u64, [u32; 4])> {
    assert!(vtt.starts_with("WEBVTT\n"), "{vtt}");
    let ms = |t: &str| {
        let (hms, millis) = t.trim().split_once('.').unwrap();
        let parts: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
        ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + millis.parse::<u64>().unwrap()
    };
    let lines: Vec<&str> = vtt.lines().collect();
    let mut cues = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some((start, end)) = line.split_once("-->") {
            let target = lines[i + 1];
            let (sheet, rect) = target.split_once("#xywh=").unwrap();
            assert_eq!(sheet, "previews.jpg");
            let r: Vec<u32> = rect.split(',').map(|n| n.parse().unwrap()).collect();
            cues.push((ms(start), ms(end), [r[0], r[1], r[2], r[3]]));
        }
    }
    cues
}
