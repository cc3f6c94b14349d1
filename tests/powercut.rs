//! Power cuts: `tally serve` is SIGKILLed at a random moment while a scripted client uploads
//! videos (real ones and garbage), deletes them and chats, then started again. After every
//! cut the invariants must hold:
//!
//! - every acknowledged upload is there with its size, unless its deletion was asked for;
//!   new ones (and a sample of the older) are compared byte for byte, on disk and over HTTP;
//! - every acknowledged deletion is gone, record and files;
//! - no record points at a missing file and no video directory lacks a record, no upload
//!   temp file is left;
//! - every job ends processed or failed, none stuck;
//! - the chat history holds every acknowledged message.
//!
//! `POWERCUT_ITERATIONS` sets the number of cuts (20 by default, 200 for a soak run) and
//! `POWERCUT_SEED` replays a run: the seed is printed at the start. (Not `TALLY_*`: the
//! service would take those for settings.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fixtures::{Painter, Spec, fill, make_video};
use common::process::{Tally, UNLIMITED_CHAT, add_user, multipart};
use common::*;
use hyper::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// What the client was told, and what it asked without hearing back.
#[derive(Default)]
struct Ledger {
    /// Acknowledged uploads: id → content.
    uploaded: BTreeMap<String, Arc<Vec<u8>>>,
    /// Deletions asked for (acknowledged or cut short): the video may or may not be there.
    delete_asked: BTreeSet<String>,
    /// Acknowledged deletions.
    deleted: BTreeSet<String>,
    /// Acknowledged chat messages.
    said: Vec<String>,
    /// Uploads whose bytes were compared after an earlier cut; later cuts compare a sample
    /// of them (and the size of all), so a long run does not reread everything every time.
    verified: BTreeSet<String>,
}

fn iterations() -> usize {
    std::env::var("POWERCUT_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(20)
}

fn seed() -> u64 {
    std::env::var("POWERCUT_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or_else(rand::random)
}

/// A one-second 160×90 clip, different for every `shade`.
fn clip(dir: &Path, shade: u8) -> Vec<u8> {
    let path = dir.join(format!("clip-{shade}.mp4"));
    let paint: Box<Painter> = Box::new(move |i, data: &mut [u8]| fill(data, [shade, (i * 8) as u8, 128]));
    make_video(&path, &Spec { width: 160, height: 90, fps: 10, frames: 10 }, paint.as_ref());
    std::fs::read(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_random_power_cuts() {
    let seed = seed();
    println!("power cut: {} iterations, POWERCUT_SEED={seed}", iterations());
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "Acme", "editor@acme.test", "editor").await;
    let clips: Vec<Arc<Vec<u8>>> = (0..4).map(|shade| Arc::new(clip(dir.path(), shade * 60))).collect();
    // One login for the whole run, which can outlast the default 15-minute access token.
    let settings = [
        ("TALLY_MEDIA__RETRY_BACKOFF_SECS", "1"),
        ("TALLY_STORAGE_LOW_BYTES", "0"),
        ("TALLY_ACCESS_TOKEN_TTL_SECS", "86400"),
        UNLIMITED_CHAT[0],
        UNLIMITED_CHAT[1],
    ];
    let mut tally = Tally::start(dir.path(), &settings).await;
    let token = tally.token("editor@acme.test").await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for iteration in 0..iterations() {
        let client = tokio::spawn(client(tally.addr, token.clone(), clips.clone(), ledger.clone(), rng.random()));
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..1500))).await;
        tally.kill().await;
        client.abort();
        let _ = client.await;
        let compare = to_compare(&ledger.lock().unwrap(), &mut rng);
        check_files_after_cut(dir.path(), &ledger.lock().unwrap(), &compare, iteration);
        tally.restart().await;
        check_after_restart(&tally, &token, dir.path(), &ledger, &compare, iteration).await;
        ledger.lock().unwrap().verified.extend(compare);
    }
    let ledger = ledger.lock().unwrap();
    println!(
        "power cut: {} cuts survived; {} uploads, {} deletions and {} messages acknowledged",
        iterations(),
        ledger.uploaded.len(),
        ledger.deleted.len(),
        ledger.said.len()
    );
}

/// Uploads, deletes and chats until the server goes away.
async fn client(
    addr: std::net::SocketAddr,
    token: String,
    clips: Vec<Arc<Vec<u8>>>,
    ledger: Arc<Mutex<Ledger>>,
    seed: u64,
) {
    let chat = tokio::spawn(chatter(addr, token.clone(), ledger.clone()));
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let choice = rng.random_range(0..10);
        let present: Vec<String> = {
            let ledger = ledger.lock().unwrap();
            ledger.uploaded.keys().filter(|id| !ledger.delete_asked.contains(*id)).cloned().collect()
        };
        if choice < 2 && !present.is_empty() {
            let id = present[rng.random_range(0..present.len())].clone();
            ledger.lock().unwrap().delete_asked.insert(id.clone());
            let Ok(reply) = call(addr, Method::DELETE, &format!("/api/videos/{id}"), &token, Vec::new(), None).await
            else {
                break;
            };
            assert_eq!(reply.status, 204, "delete {id}: {}", reply.body);
            ledger.lock().unwrap().deleted.insert(id);
        } else {
            // Mostly real clips; some garbage (up to 512 KiB) that processing must fail.
            let content = if choice < 8 {
                clips[rng.random_range(0..clips.len())].clone()
            } else {
                let mut junk = vec![0u8; rng.random_range(1..512 << 10)];
                rng.fill(&mut junk[..]);
                Arc::new(junk)
            };
            let (content_type, body) = multipart(None, "clip.mp4", &content);
            let Ok(reply) = call(addr, Method::POST, "/api/videos", &token, body, Some(&content_type)).await else {
                break;
            };
            assert_eq!(reply.status, 201, "upload: {}", reply.body);
            // The answer may be cut off after its status line: then the outcome is unknown.
            let Some(id) =
                serde_json::from_str::<Value>(&reply.body).ok().and_then(|v| Some(v["id"].as_str()?.to_owned()))
            else {
                break;
            };
            ledger.lock().unwrap().uploaded.insert(id, content);
        }
    }
    chat.abort();
}

/// One API call that may find the server gone (`Err`).
async fn call(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    token: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> Result<Reply, String> {
    use http_body_util::BodyExt;
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(content_type.map(|t| ("content-type", t)));
    let body = http_body_util::Full::new(bytes::Bytes::from(body)).map_err(|never| match never {}).boxed();
    try_request_with_body(addr, method, path, body, &headers).await
}

/// Says numbered messages on the organization chat, one after the other, each acknowledged.
async fn chatter(addr: std::net::SocketAddr, token: String, ledger: Arc<Mutex<Ledger>>) {
    // The server may be gone already: give up quietly rather than panic in this task.
    let Ok(Ok(mut ws)) =
        tokio::time::timeout(Duration::from_secs(5), ws_connect(addr, "/socket.io/?EIO=4&transport=websocket")).await
    else {
        return;
    };
    if next_message(&mut ws).await.is_none() {
        return;
    }
    let connect = format!(r#"40{{"token":"{token}"}}"#);
    if futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(connect)).await.is_err() {
        return;
    }
    match next_message(&mut ws).await {
        Some(tokio_tungstenite::tungstenite::Message::Text(ack)) if ack.starts_with("40{") => {}
        _ => return,
    }
    for n in 0u64.. {
        let text = format!("message {}-{n}", rand::random::<u32>());
        let message = format!(r#"42{n}["chat:message",{{"text":"{text}"}}]"#);
        if futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(message)).await.is_err() {
            return;
        }
        loop {
            let Some(tokio_tungstenite::tungstenite::Message::Text(frame)) = next_message(&mut ws).await else {
                return;
            };
            if frame.starts_with(&format!("43{n}[")) {
                assert!(frame.contains("\"message\""), "chat refused: {frame}");
                ledger.lock().unwrap().said.push(text);
                break;
            }
        }
    }
}

/// The uploads to compare byte for byte after this cut: the new ones and a sample of the
/// others (whose size is checked in any case).
fn to_compare(ledger: &Ledger, rng: &mut StdRng) -> BTreeSet<String> {
    let present = ledger.uploaded.keys().filter(|id| !ledger.delete_asked.contains(*id));
    let (new, old): (Vec<&String>, Vec<&String>) = present.partition(|id| !ledger.verified.contains(*id));
    let mut chosen: BTreeSet<String> = new.into_iter().cloned().collect();
    for _ in 0..old.len().min(8) {
        chosen.insert(old[rng.random_range(0..old.len())].clone());
    }
    chosen
}

/// Right after the cut, before anything can tidy up: acknowledged uploads are on disk whole.
fn check_files_after_cut(data_dir: &Path, ledger: &Ledger, compare: &BTreeSet<String>, iteration: usize) {
    for (id, content) in &ledger.uploaded {
        if ledger.delete_asked.contains(id) {
            continue;
        }
        let path = data_dir.join("videos").join(id).join("original.mp4");
        let size = std::fs::metadata(&path).map(|m| m.len());
        let size = size.unwrap_or_else(|e| panic!("cut {iteration}: {} lost: {e}", path.display()));
        assert_eq!(size, content.len() as u64, "cut {iteration}: {id} has the wrong size on disk");
        if compare.contains(id) {
            assert!(std::fs::read(&path).unwrap() == **content, "cut {iteration}: {id} differs on disk");
        }
    }
}

async fn check_after_restart(
    tally: &Tally,
    token: &str,
    data_dir: &Path,
    ledger: &Mutex<Ledger>,
    compare: &BTreeSet<String>,
    iteration: usize,
) {
    let listed = wait_until_settled(tally, token, iteration).await;
    let (uploaded, delete_asked, deleted, said) = {
        let ledger = ledger.lock().unwrap();
        (ledger.uploaded.clone(), ledger.delete_asked.clone(), ledger.deleted.clone(), ledger.said.clone())
    };

    for (id, content) in &uploaded {
        if delete_asked.contains(id) {
            continue;
        }
        let video = listed.get(id).unwrap_or_else(|| panic!("cut {iteration}: acknowledged upload {id} is gone"));
        assert_eq!(video["size"].as_u64(), Some(content.len() as u64), "cut {iteration}: {id}'s recorded size");
        if !compare.contains(id) {
            continue;
        }
        // The upload as it came, byte for byte; the player gets it too unless processing made a
        // web rendition (random junk can pass for a raw H.263 stream, which is transcoded).
        let original = get(tally.addr, video["originalUrl"].as_str().unwrap()).await;
        assert_eq!(original.status, 200, "cut {iteration}: downloading {id}");
        assert!(original.bytes[..] == content[..], "cut {iteration}: {id} downloads different bytes: {video}");
        let stream = get(tally.addr, video["streamUrl"].as_str().unwrap()).await;
        assert_eq!(stream.status, 200, "cut {iteration}: streaming {id}");
        let plays = match video["playback"]["kind"].as_str() {
            Some("original") | None => content.to_vec(),
            Some(_) => std::fs::read(data_dir.join("videos").join(id).join("web.mp4"))
                .unwrap_or_else(|e| panic!("cut {iteration}: {id} is processed without its rendition: {e}")),
        };
        assert!(stream.bytes[..] == plays[..], "cut {iteration}: {id} streams other bytes than it plays: {video}");
    }
    for id in &deleted {
        assert!(!listed.contains_key(id), "cut {iteration}: deleted {id} is back");
    }

    let videos = data_dir.join("videos");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&videos)
        .map(|dir| dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let recorded: BTreeSet<String> = listed.keys().cloned().collect();
    assert_eq!(on_disk, recorded, "cut {iteration}: video directories and records differ");
    for (id, video) in &listed {
        let original = videos.join(id).join(format!("original.{}", video["ext"].as_str().unwrap_or("mp4")));
        assert!(original.exists(), "cut {iteration}: {id} has no file");
    }
    let temp = std::fs::read_dir(data_dir.join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(temp, 0, "cut {iteration}: upload temp files left");

    let history = chat_history(&mut tally.socket(token).await).await;
    for text in &said {
        assert!(history.contains(text), "cut {iteration}: acknowledged message {text:?} is gone");
    }
}

/// Every video once none is waiting or in work: jobs end processed or failed. Failing means
/// 30 s without one more job settling (a slow machine is not a stuck job).
async fn wait_until_settled(tally: &Tally, token: &str, iteration: usize) -> BTreeMap<String, Value> {
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut fewest = usize::MAX;
    loop {
        let videos = list_videos(tally, token, iteration).await;
        let unsettled: Vec<&Value> =
            videos.values().filter(|v| !matches!(v["status"].as_str(), Some("processed" | "failed"))).collect();
        if unsettled.is_empty() {
            return videos;
        }
        if unsettled.len() < fewest {
            fewest = unsettled.len();
            deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cut {iteration}: jobs stuck: {:?}",
            unsettled.iter().map(|v| (&v["id"], &v["status"])).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every video of the organization, page by page.
async fn list_videos(tally: &Tally, token: &str, iteration: usize) -> BTreeMap<String, Value> {
    let mut videos = BTreeMap::new();
    let mut path = "/api/videos?limit=200".to_owned();
    loop {
        let reply = tally.call(Method::GET, &path, token, None).await;
        assert_eq!(reply.status, 200, "cut {iteration}: listing: {}", reply.body);
        let page = reply.json();
        for video in page["items"].as_array().unwrap() {
            videos.insert(video["id"].as_str().unwrap().to_owned(), video.clone());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/api/videos?limit=200&before={next}"),
            None => return videos,
        }
    }
}
