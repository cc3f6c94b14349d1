//! Acknowledged writes under load, against the real `tally serve`: floods of chat acks and
//! PATCHes never wedge the store, health reflects whether writes complete, and SIGTERM always
//! ends the process in bounded time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::NodeClients;
use common::process::{Tally, UNLIMITED_CHAT, add_user};
use hyper::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// One burst of `count` acknowledged `chat:message`s from client `id`; the results in order.
async fn chat_burst(node: &mut NodeClients, id: &str, count: usize) -> Vec<Value> {
    node.send(json!({"op": "burst", "id": id, "event": "chat:message", "args": [{"text": format!("{id} {{n}}")}], "count": count, "timeout": 8000})).await;
    let report = node.expect_ev(id, "burst").await;
    report["results"].as_array().unwrap().clone()
}

/// Messages the server acknowledged as stored; panics on an ack that never came.
fn stored(results: &[Value]) -> Vec<String> {
    let mut texts = Vec::new();
    for (n, result) in results.iter().enumerate() {
        assert!(result["error"].is_null(), "ack {n} never arrived: {result}");
        let answer = &result["answer"];
        match answer["message"]["text"].as_str() {
            Some(text) => texts.push(text.to_owned()),
            None => assert_eq!(answer["error"], "slow down", "ack {n}: {answer}"),
        }
    }
    texts
}

async fn users(dir: &std::path::Path) {
    add_user(dir, "Acme", "admin@acme.test", "admin").await;
    add_user(dir, "Acme", "viewer@acme.test", "viewer").await;
    add_user(dir, "Acme", "editor@acme.test", "editor").await;
}

/// 200 acknowledged messages at once from one socket, then 10 sockets x 50 at once, all of
/// one viewer; then the box must still take writes of every kind, and hold every message it
/// acknowledged. Returns how many were stored and how many refused as over the rate.
async fn flood(settings: &[(&str, &str)]) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path()).await;
    let tally = Tally::start(dir.path(), settings).await;
    let viewer = tally.token("viewer@acme.test").await;
    let mut node = NodeClients::spawn().await;
    let url = format!("http://{}", tally.addr);
    let ids: Vec<String> = (0..10).map(|n| format!("s{n}")).collect();
    for id in ["one"].iter().copied().chain(ids.iter().map(String::as_str)) {
        node.connect(id, &url, Some(&viewer), json!({"transports": ["websocket"]})).await;
        node.expect_ev(id, "connect").await;
    }
    let mut all = stored(&chat_burst(&mut node, "one", 200).await);
    for id in &ids {
        node.send(json!({"op": "burst", "id": id, "event": "chat:message", "args": [{"text": format!("{id} {{n}}")}], "count": 50, "timeout": 8000})).await;
    }
    for id in &ids {
        let report = node.expect_ev(id, "burst").await;
        all.extend(stored(report["results"].as_array().unwrap()));
    }

    // The box still takes writes of every kind.
    assert_eq!(tally.login("editor@acme.test", common::process::PASSWORD).await.status, 200);
    let editor = tally.token("editor@acme.test").await;
    let upload = tally.upload(&editor, Some("after the flood"), "a.mp4", b"not really a video").await;
    assert_eq!(upload.status, 201, "{}", upload.body);
    let health = common::get(tally.addr, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);

    // Every acknowledged message is in the history.
    let mut ws = tally.socket(&viewer).await;
    let history = common::chat_history(&mut ws).await;
    let missing: Vec<_> = all.iter().filter(|text| !history.contains(*text)).collect();
    assert!(missing.is_empty(), "acknowledged but not stored: {missing:?}");
    if all.len() == 700 {
        // Group commit at work: the writes waited on far fewer flushes than there were writes.
        let metrics = common::get(tally.addr, "/metrics").await.body;
        let total = |name: &str| -> f64 {
            metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(f64::NAN)
        };
        let (writes, flushes) = (total("tally_storage_durable_writes_total "), total("tally_storage_flushes_total "));
        assert!(writes >= 700.0 && flushes * 2.0 < writes, "{writes} durable writes took {flushes} flushes");
        println!("flood: {writes} durable writes in {flushes} flushes");
    }
    (all.len(), 700 - all.len())
}

#[tokio::test]
async fn a_flood_of_acknowledged_chat_messages_never_wedges_the_store() {
    // As a new box is set up: the rate limit takes most of the flood, at once.
    let (stored, refused) = flood(&[]).await;
    assert!(stored >= 20 && refused > 0, "{stored} stored, {refused} refused");
    // The limit lifted, every one of the 700 is stored: the flusher takes the whole flood.
    assert_eq!(flood(&UNLIMITED_CHAT).await, (700, 0));
}

/// Every video of the organization, by id (one page is enough for these tests).
async fn videos(tally: &Tally, token: &str) -> BTreeMap<String, Value> {
    let reply = tally.call(Method::GET, "/api/videos?limit=100", token, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page = reply.json();
    assert!(page["next"].is_null(), "more than one page");
    page["items"].as_array().unwrap().iter().map(|v| (v["id"].as_str().unwrap().to_owned(), v.clone())).collect()
}

/// Records and files agree: a directory with its original for every video, nothing else, and
/// no upload left half-written.
fn files_agree(data: &Path, videos: &BTreeMap<String, Value>) {
    let on_disk: BTreeSet<String> = std::fs::read_dir(data.join("videos"))
        .map(|dir| dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert_eq!(on_disk, videos.keys().cloned().collect::<BTreeSet<_>>(), "video directories and records differ");
    for (id, video) in videos {
        let original = data.join("videos").join(id).join(format!("original.{}", video["ext"].as_str().unwrap()));
        assert_eq!(std::fs::metadata(&original).map(|m| m.len()).ok(), video["size"].as_u64(), "{id}'s file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_uploads_deletions_and_chat_at_once_all_answer_and_agree() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path()).await;
    let tally = Arc::new(Tally::start(dir.path(), &UNLIMITED_CHAT).await);
    let editor = tally.token("editor@acme.test").await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let upload = tally.upload(&editor, Some(&format!("v{n}")), "a.mp4", b"not really a video").await;
        assert_eq!(upload.status, 201, "{}", upload.body);
        ids.push(upload.json()["id"].as_str().unwrap().to_owned());
    }
    let mut work = tokio::task::JoinSet::new();
    // 100 PATCHes, spread over the first five videos.
    for n in 0..100 {
        let (tally, editor, path) = (tally.clone(), editor.clone(), format!("/api/videos/{}", ids[n % 5]));
        work.spawn(async move {
            let reply = tally.call(Method::PATCH, &path, &editor, Some(json!({"title": format!("title {n}")}))).await;
            (format!("patch {n}"), reply.status, 200)
        });
    }
    // 20 uploads and the deletion of the other five videos.
    for n in 0..20 {
        let (tally, editor) = (tally.clone(), editor.clone());
        work.spawn(async move {
            let content = vec![n as u8; 10_000 + n * 1000];
            let reply = tally.upload(&editor, Some(&format!("new {n}")), "b.mp4", &content).await;
            (format!("upload {n}"), reply.status, 201)
        });
    }
    for id in &ids[5..] {
        let (tally, editor, path) = (tally.clone(), editor.clone(), format!("/api/videos/{id}"));
        work.spawn(async move {
            (format!("delete {path}"), tally.call(Method::DELETE, &path, &editor, None).await.status, 204)
        });
    }
    // And 100 chat messages from one socket meanwhile.
    let mut node = NodeClients::spawn().await;
    node.connect("chat", &format!("http://{}", tally.addr), Some(&editor), json!({"transports": ["websocket"]})).await;
    node.expect_ev("chat", "connect").await;
    let chat = chat_burst(&mut node, "chat", 100);
    let (said, outcomes) = tokio::join!(chat, async {
        let mut outcomes = Vec::new();
        while let Some(done) = work.join_next().await {
            outcomes.push(done.unwrap());
        }
        outcomes
    });
    let wrong: Vec<_> = outcomes.iter().filter(|(_, got, want)| got != want).collect();
    assert!(wrong.is_empty(), "{wrong:?}");
    assert_eq!(stored(&said).len(), 100, "no rate limit here: every message is stored");

    let listed = videos(&tally, &editor).await;
    assert_eq!(listed.len(), 5 + 20);
    files_agree(dir.path(), &listed);
    assert!(ids[5..].iter().all(|id| !listed.contains_key(id)), "the deleted are gone");
    assert!(ids[..5].iter().all(|id| listed[id]["title"].as_str().unwrap().starts_with("title ")));
    // Once every job has settled (deletions raced some of them), the queue's counts say so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = common::get(tally.addr, "/metrics").await.body;
        let level = |state: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("tally_jobs{{state=\"{state}\"}} ")).map(str::to_owned))
        };
        let settled =
            videos(&tally, &editor).await.values().all(|v| v["status"] == "failed" || v["status"] == "processed");
        if settled && level("queued").as_deref() == Some("0") && level("running").as_deref() == Some("0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job counts never settled: {:?} {:?}",
            level("queued"),
            level("running")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_uploads_and_chat_finishes_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path()).await;
    let mut tally = Tally::start(dir.path(), &UNLIMITED_CHAT).await;
    let editor = tally.token("editor@acme.test").await;
    let addr = tally.addr;
    // Uploads streamed slowly enough to be in flight at SIGTERM, one after another on each
    // of four lanes; each either answers 201 (then it must survive) or fails as a whole. The
    // lanes say when their second upload starts, and which of theirs were in flight at the
    // signal and still answered 201.
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..4u8 {
        let (editor, signalled, started_tx) = (editor.clone(), signalled.clone(), started_tx.clone());
        lanes.spawn(async move {
            let (mut acknowledged, mut across) = (Vec::new(), false);
            for n in 0.. {
                if n == 1 {
                    let _ = started_tx.send(lane);
                }
                let before = signalled.load(std::sync::atomic::Ordering::SeqCst);
                let chunks = (0..10).map(move |_| bytes::Bytes::from(vec![lane; 32 * 1024]));
                let reply = match Tally::attach(addr)
                    .try_upload_stream(&editor, "slow.mp4", chunks, Duration::from_millis(40))
                    .await
                {
                    Ok(reply) => reply,
                    Err(_) => break, // the server went away mid-request, or was gone
                };
                assert!(matches!(reply.status, 201 | 503), "lane {lane} upload {n}: {}", reply.body);
                if reply.status == 201 {
                    acknowledged.push(reply.json()["id"].as_str().unwrap().to_owned());
                    across |= !before && signalled.load(std::sync::atomic::Ordering::SeqCst);
                }
            }
            (acknowledged, across)
        });
    }
    // The chat says numbered messages, each acknowledged before the next.
    let chatter = {
        let editor = editor.clone();
        tokio::spawn(async move {
            let mut said = Vec::new();
            let Ok(mut ws) = common::ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await else {
                return said;
            };
            common::next_text(&mut ws).await;
            common::send_text(&mut ws, &format!(r#"40{{"token":"{editor}"}}"#)).await;
            common::next_text(&mut ws).await;
            for n in 1u64.. {
                let text = format!("before the stop {n}");
                common::send_text(&mut ws, &format!(r#"42{n}["chat:message",{{"text":"{text}"}}]"#)).await;
                let acked = loop {
                    match common::next_message(&mut ws).await {
                        Some(Message::Text(frame)) if frame.as_str() == "2" => {
                            let _ = futures_util::SinkExt::send(&mut ws, Message::text("3")).await;
                        }
                        Some(Message::Text(frame)) if frame.starts_with(&format!("43{n}")) => {
                            break frame.contains("\"message\"");
                        }
                        Some(_) => {}
                        None => break false,
                    }
                };
                if !acked {
                    break;
                }
                said.push(text);
            }
            said
        })
    };
    // Every lane is 150 ms into its second upload (of about 400 ms): SIGTERM.
    for _ in 0..4 {
        started_rx.recv().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    signalled.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let status = tally.terminate().await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "a clean stop");
    assert!(took < Duration::from_secs(12), "stopped after {took:?} (budget 10 s)");
    let (mut uploaded, mut in_flight_and_finished) = (Vec::new(), 0);
    while let Some(lane) = lanes.join_next().await {
        let (acknowledged, across) = lane.unwrap();
        uploaded.extend(acknowledged);
        in_flight_and_finished += usize::from(across);
    }
    assert_eq!(in_flight_and_finished, 4, "the uploads in flight at the signal were let finish");
    let said = chatter.await.unwrap();
    assert!(!uploaded.is_empty() && !said.is_empty(), "work was under way");

    tally.restart().await;
    let editor = tally.token("editor@acme.test").await;
    let listed = videos(&tally, &editor).await;
    let lost: Vec<_> = uploaded.iter().filter(|id| !listed.contains_key(*id)).collect();
    assert!(lost.is_empty(), "acknowledged uploads lost: {lost:?}");
    files_agree(dir.path(), &listed);
    let temp = std::fs::read_dir(dir.path().join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(temp, 0, "no upload left half-written");
    let history = common::chat_history(&mut tally.socket(&editor).await).await;
    let missing: Vec<_> = said.iter().filter(|text| !history.contains(*text)).collect();
    assert!(missing.is_empty(), "acknowledged messages lost: {missing:?}");
    println!("sigterm: stopped in {took:?} with {} uploads and {} messages acknowledged", uploaded.len(), said.len());
}

#[tokio::test]
async fn chat_is_rate_limited_per_account_and_its_history_bounded() {
    let dir = tempfile::tempdir().unwrap();
    users(dir.path()).await;
    let settings = [
        ("TALLY_CHAT__MESSAGES_PER_SECOND", "1"),
        ("TALLY_CHAT__BURST", "5"),
        ("TALLY_CHAT__KEEP_MESSAGES", "8"),
        ("TALLY_HOUSEKEEPING_EVERY_SECS", "1"),
    ];
    let tally = Tally::start(dir.path(), &settings).await;
    let url = format!("http://{}", tally.addr);
    let mut node = NodeClients::spawn().await;
    let mut all = Vec::new();
    for email in ["viewer@acme.test", "editor@acme.test", "admin@acme.test"] {
        let token = tally.token(email).await;
        // Two sockets of one account share its bucket.
        for id in [format!("{email} a"), format!("{email} b")] {
            node.connect(&id, &url, Some(&token), json!({"transports": ["websocket"]})).await;
            node.expect_ev(&id, "connect").await;
        }
        let (a, b) = (format!("{email} a"), format!("{email} b"));
        let started = Instant::now();
        let (first, second) = (chat_burst(&mut node, &a, 10).await, chat_burst(&mut node, &b, 10).await);
        let stored_now: Vec<String> = stored(&first).into_iter().chain(stored(&second)).collect();
        // The burst, and one more for each second the bucket had to refill.
        let most = 5 + started.elapsed().as_secs() as usize + 1;
        assert!((5..=most).contains(&stored_now.len()), "{email}: {} stored of 20, at most {most}", stored_now.len());
        all.extend(stored_now);
    }
    // Three accounts, each up to its own burst: more than the 8 the history keeps.
    let viewer = tally.token("viewer@acme.test").await;
    let mut ws = tally.socket(&viewer).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let history = common::chat_history(&mut ws).await;
        if history.len() <= 8 {
            break history;
        }
        assert!(Instant::now() < deadline, "the history was never pruned: {} messages", history.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(history.len(), 8);
    let newest: BTreeSet<String> = all[all.len() - 8..].iter().cloned().collect();
    assert_eq!(history, newest, "the newest are kept");
}

/// Builds the shim whose flushes block while a flag file exists (`tests/faults/stall-sync.c`).
fn stall_shim(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/stall-sync.c");
    let shim = dir.join("libstallsync.so");
    let built =
        std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&shim).arg(&source).arg("-ldl").status();
    assert!(built.unwrap().success(), "compiling {}", source.display());
    shim
}

/// Listens as systemd would on `NOTIFY_SOCKET`; counts the watchdog pets heard.
struct Systemd {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl Systemd {
    fn bind(dir: &Path) -> Systemd {
        let path = dir.join("notify.sock");
        Systemd { socket: tokio::net::UnixDatagram::bind(&path).unwrap(), path }
    }

    /// The watchdog pets heard during `window` (what came before is dropped).
    async fn pets_during(&self, window: Duration) -> usize {
        let mut buffer = vec![0u8; 4096];
        while self.socket.try_recv(&mut buffer).is_ok() {}
        let deadline = tokio::time::Instant::now() + window;
        let mut pets = 0;
        while let Ok(Ok(len)) = tokio::time::timeout_at(deadline, self.socket.recv(&mut buffer)).await {
            pets += usize::from(buffer[..len].trim_ascii_end() == b"WATCHDOG=1");
        }
        pets
    }
}

/// Polls until `check` passes on `GET path` (10 s at most); returns the last reply.
async fn until(tally: &Tally, path: &str, token: &str, what: &str, check: impl Fn(&common::Reply) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = tally.call(Method::GET, path, token, None).await;
        if check(&reply) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: never; last {} {}", reply.status, reply.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_flush_that_never_returns_fails_writes_at_the_deadline_and_shutdown_still_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    users(&data).await;
    let shim = stall_shim(dir.path());
    let flag = dir.path().join("stall");
    let systemd = Systemd::bind(dir.path());
    let log = dir.path().join("tally.log");
    let (db, shim, flag_env, socket) = (
        data.join("db").display().to_string(),
        shim.display().to_string(),
        flag.display().to_string(),
        systemd.path.display().to_string(),
    );
    let env = [
        ("LD_PRELOAD", shim.as_str()),
        ("STALL_SYNC_DIR", db.as_str()),
        ("STALL_SYNC_FLAG", flag_env.as_str()),
        ("TALLY_STORAGE_FLUSH_TIMEOUT_MS", "1000"),
        ("TALLY_SHUTDOWN_TIMEOUT_MS", "4000"),
        ("NOTIFY_SOCKET", socket.as_str()),
        ("WATCHDOG_USEC", "400000"),
        ("RUST_LOG", "info"),
    ];
    let mut tally = Tally::start_logged(&data, &env, Some(&log)).await;
    let admin = tally.token("admin@acme.test").await;
    let mut ws = tally.socket(&admin).await;
    assert!(common::say(&mut ws, 1, "before the stall").await["message"].is_object());
    let video = tally.upload(&admin, Some("before"), "a.mp4", b"not really a video").await;
    assert_eq!(video.status, 201, "{}", video.body);
    let video = format!("/api/videos/{}", video.json()["id"].as_str().unwrap());
    assert!(
        systemd.pets_during(Duration::from_millis(600)).await > 0,
        "a healthy box pets the watchdog: {}",
        std::fs::read_to_string(&log).unwrap()
    );

    // The disk stops answering: writes fail at the deadline (1 s here), not never.
    std::fs::write(&flag, "").unwrap();
    let started = Instant::now();
    let answer = common::say(&mut ws, 2, "during the stall").await;
    assert_eq!(answer, json!({"error": "the message could not be stored"}));
    assert!(started.elapsed() < Duration::from_secs(5), "refused after {:?}", started.elapsed());
    // Health, LED and watchdog all say so; from then on writes are refused up front.
    until(&tally, "/healthz", &admin, "unhealthy", |r| r.status == 503).await;
    let health = common::get(tally.addr, "/healthz").await;
    assert!(health.json()["storageError"].as_str().unwrap().contains("stuck"), "{}", health.body);
    until(&tally, "/api/device", &admin, "LED fault", |r| r.json()["led"]["state"] == "fault").await;
    assert_eq!(systemd.pets_during(Duration::from_millis(1000)).await, 0, "a stuck box stops the watchdog");
    let patch = tally.call(Method::PATCH, &video, &admin, Some(json!({"title": "during"}))).await;
    assert_eq!(patch.status, 503, "{}", patch.body);
    assert_eq!(patch.json()["error"]["code"], "storage_unavailable");
    assert!(patch.headers.contains_key("retry-after"));
    assert_eq!(tally.login("editor@acme.test", common::process::PASSWORD).await.status, 503);
    assert_eq!(tally.call(Method::GET, &video, &admin, None).await.status, 200, "reads go on");
    let upload = tally.upload(&admin, Some("during"), "b.mp4", b"not really a video either").await;
    assert_eq!(upload.status, 503, "{}", upload.body);

    // It answers again: the store heals by itself.
    std::fs::remove_file(&flag).unwrap();
    until(&tally, "/healthz", &admin, "healthy again", |r| r.status == 200).await;
    assert!(common::say(&mut ws, 3, "after the stall").await["message"].is_object());
    assert!(systemd.pets_during(Duration::from_millis(600)).await > 0, "the watchdog is petted again");

    // Stuck again, SIGTERM: the process ends within its budget (4 s) all the same, and says why.
    std::fs::write(&flag, "").unwrap();
    assert!(common::say(&mut ws, 4, "stuck again").await["error"].is_string());
    let started = Instant::now();
    let status = tally.terminate().await;
    assert!(started.elapsed() < Duration::from_secs(7), "stopped after {:?}", started.elapsed());
    assert_eq!(status.code(), Some(tally::shutdown::UNFINISHED_EXIT_CODE));
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("could not be made durable"), "{said}");

    // Back on a disk that answers, everything acknowledged is there.
    std::fs::remove_file(&flag).unwrap();
    tally.restart().await;
    let admin = tally.token("admin@acme.test").await;
    let mut ws = tally.socket(&admin).await;
    let history = common::chat_history(&mut ws).await;
    assert!(history.contains("before the stall") && history.contains("after the stall"), "{history:?}");
    assert!(!history.contains("during the stall"), "a message refused is not kept: {history:?}");
    assert_eq!(tally.call(Method::GET, &video, &admin, None).await.json()["title"], "before");
    assert_eq!(videos(&tally, &admin).await.len(), 1, "the refused upload left nothing");
}
