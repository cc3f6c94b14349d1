//! The `tally` binary and the protocol reference example, run as the processes users run.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::node::NodeClients;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tally(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(TALLY);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TALLY_DATA_DIR", data_dir)
        .kill_on_drop(true);
    command
}

/// Waits until a polling handshake succeeds at `addr` under `mount`.
async fn wait_until_serving(addr: SocketAddr, mount: &str, child: &mut Child) {
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && get(addr, &format!("{mount}?EIO=4&transport=polling")).await.status == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server never answered at {addr}");
}

async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits after SIGTERM").unwrap()
}

#[tokio::test]
async fn version_is_printed() {
    let out = Command::new(TALLY).arg("--version").output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("tally {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn token_command_signs_with_the_box_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = tally(dir.path())
        .args(["token", "--user", "u1", "--org", "o1", "--role", "admin", "--ttl", "60"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let keys = tally::auth::TokenKeys::load_or_create(dir.path()).unwrap();
    let claims = keys.verify(token.trim()).unwrap();
    assert_eq!((claims.sub.as_str(), claims.org.as_str(), claims.role), ("u1", "o1", tally::auth::Role::Admin));
    assert_eq!(claims.exp - claims.iat, 60);
    let bad =
        tally(dir.path()).args(["token", "--user", "u1", "--org", "o1", "--role", "root"]).output().await.unwrap();
    assert!(!bad.status.success(), "unknown roles are refused");
}

#[tokio::test]
async fn serve_runs_on_env_and_file_config_logs_json_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("tally.toml");
    std::fs::write(&config, "bind = \"127.0.0.1\"\nport = 1\n[realtime]\nping_interval_ms = 300\n").unwrap();
    let mut child = tally(&dir.path().join("data"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json", "serve"])
        .env("TALLY_PORT", port.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until_serving(addr, "/socket.io/", &mut child).await;
    let open = get(addr, "/socket.io/?EIO=4&transport=polling").await.body;
    assert!(open.contains(r#""pingInterval":300"#), "file config applies: {open}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("data/jwt-secret")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the generated secret is private");
    assert_eq!(get(addr, "/nope").await.status, 404);

    let status = terminate(&mut child).await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut messages = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let entry: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        messages.push(entry["message"].as_str().unwrap_or_default().to_owned());
        if entry["message"] == "tally listening" {
            assert_eq!(entry["addr"], format!("127.0.0.1:{port}"));
        }
    }
    assert!(messages.iter().any(|m| m == "tally listening"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "tally stopped"), "{messages:?}");
}

#[tokio::test]
async fn a_missing_or_invalid_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = tally(dir.path()).args(["--config", "/nonexistent/tally.toml"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "prot = 8080\n").unwrap();
    let out = tally(dir.path()).args(["--config", bad.to_str().unwrap()]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prot"), "names the unknown key");
}

fn example_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--example", "protocol_reference"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(built.success());
    PathBuf::from(TALLY).parent().unwrap().join("examples/protocol_reference")
}

#[tokio::test]
async fn the_protocol_reference_example_serves_both_suites() {
    let port = free_port();
    let mut child =
        Command::new(example_binary()).args(["--port", &port.to_string()]).kill_on_drop(true).spawn().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until_serving(addr, "/engine.io/", &mut child).await;

    // Engine.IO suite: an echo server with the suite's timings.
    let open = get(addr, "/engine.io/?EIO=4&transport=polling").await.body;
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!((open["pingInterval"].as_u64(), open["pingTimeout"].as_u64()), (Some(300), Some(200)));
    let sid = open["sid"].as_str().unwrap();
    post(addr, &polling_url("/engine.io/", sid), "4hello\x1ebAQIDBA==").await;
    assert_eq!(get(addr, &polling_url("/engine.io/", sid)).await.body, "4hello\x1ebAQIDBA==");

    // Socket.IO suite, through the stock client.
    let mut node = NodeClients::spawn().await;
    let url = format!("http://{addr}/custom");
    node.send(json!({"op": "connect", "id": "c", "url": url, "opts": {"auth": {"token": "abc"}}})).await;
    node.expect_ev("c", "connect").await;
    assert_eq!(node.expect_event("c", "auth").await["args"], json!([{"token": "abc"}]));
    node.send(json!({"op": "emit", "id": "c", "ref": 1, "event": "message", "args": [1, "2", {"3": [true]}]})).await;
    assert_eq!(node.expect_event("c", "message-back").await["args"], json!([1, "2", {"3": [true]}]));
    node.send(json!({"op": "emit", "id": "c", "ref": 2, "event": "message-with-ack", "args": ["x"], "ack": true}))
        .await;
    assert_eq!(node.expect_ev("c", "ack").await["args"], json!(["x"]));
}

#[tokio::test]
async fn process_command_reports_a_file_as_json() {
    use common::fixtures::{Spec, alternating, make_video};
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("flash.mp4");
    make_video(
        &clip,
        &Spec { width: 320, height: 180, fps: 30, frames: 60 },
        alternating([16; 3], [235; 3], 1).as_ref(),
    );
    let out = dir.path().join("thumbs");
    // Paths as a shell user types them: relative to where the command runs.
    let run = tally(dir.path())
        .current_dir(dir.path())
        .args(["process", "flash.mp4", "--out", "thumbs"])
        .output()
        .await
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["metadata"]["width"], 320);
    assert_eq!(report["sensitivity"]["verdict"], "flagged");
    for name in ["thumbnail-card.jpg", "thumbnail-poster.jpg"] {
        assert_eq!(&std::fs::read(out.join(name)).unwrap()[..2], &[0xFF, 0xD8]);
    }
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video").unwrap();
    let failed = tally(dir.path()).args(["process", text.to_str().unwrap()]).output().await.unwrap();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("metadata stage: not a video"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

/// The `Type=notify` protocol as systemd speaks it: a datagram socket in `NOTIFY_SOCKET`.
#[tokio::test]
async fn systemd_hears_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let systemd = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let data = dir.path().join("data");
    let socket_env = socket_path.display().to_string();
    // A 300 ms watchdog: the service must pet it every 150 ms.
    let tally =
        common::process::Tally::start(&data, &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "300000")]).await;
    let mut heard: Vec<String> = Vec::new();
    let mut buffer = vec![0u8; 4096];
    let mut receive = async |heard: &mut Vec<String>| {
        let len = tokio::time::timeout(Duration::from_secs(5), systemd.recv(&mut buffer))
            .await
            .expect("a notification within 5 s")
            .unwrap();
        heard.push(String::from_utf8_lossy(&buffer[..len]).trim_end().to_owned());
    };
    let pets = |heard: &Vec<String>| heard.iter().filter(|m| *m == "WATCHDOG=1").count();
    while pets(&heard) < 3 && heard.len() < 50 {
        receive(&mut heard).await;
    }
    assert_eq!(pets(&heard), 3, "{heard:?}");
    let ready = heard.iter().position(|m| m.starts_with("READY=1\nSTATUS=")).expect("READY=1 with a status");
    assert!(heard[ready].ends_with("0 videos in work"), "{heard:?}");
    assert!(
        ready < heard.iter().position(|m| m == "WATCHDOG=1").unwrap(),
        "ready before the first watchdog: {heard:?}"
    );
    let killed = Command::new("kill").args(["-TERM", &tally.pid().to_string()]).status().await.unwrap();
    assert!(killed.success());
    while !heard.iter().any(|m| m.starts_with("STOPPING=1")) && heard.len() < 100 {
        receive(&mut heard).await;
    }
    assert!(heard.iter().any(|m| m == "STOPPING=1\nSTATUS=stopping"), "{heard:?}");
}
