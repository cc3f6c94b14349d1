//! `tally serve` as a real process on a loopback port with its own data directory, and the
//! HTTP calls the API tests make against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::{Reply, request};

pub const TALLY: &str = env!("CARGO_BIN_EXE_tally");
pub const PASSWORD: &str = "correct horse battery";
/// Settings that lift the chat's per-account rate limit, for tests whose chat is a load for
/// something else (durability, disk space) rather than a test of the limit.
pub const UNLIMITED_CHAT: [(&str, &str); 2] =
    [("TALLY_CHAT__MESSAGES_PER_SECOND", "1000000"), ("TALLY_CHAT__BURST", "1000000")];

pub struct Tally {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    /// Where the service's log (stderr) goes; inherited when unset.
    log: Option<PathBuf>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `tally user add` (the service must not be running: the database has one writer).
pub async fn add_user(data_dir: &Path, org: &str, email: &str, role: &str) {
    let mut child = Command::new(TALLY)
        .args(["user", "add", "--org", org, "--email", email, "--role", role])
        .env("TALLY_DATA_DIR", data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "user add failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Tally {
    /// Starts `tally serve` on `data_dir` with extra `TALLY_*` settings.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Tally {
        Tally::start_logged(data_dir, env, None).await
    }

    /// Starts `tally serve` like [`Tally::start`], appending its log to `log` when given.
    pub async fn start_logged(data_dir: &Path, env: &[(&str, &str)], log: Option<&Path>) -> Tally {
        let mut tally = Tally {
            addr: ([127, 0, 0, 1], free_port()).into(),
            data_dir: data_dir.to_owned(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: log.map(Path::to_owned),
            child: None,
        };
        tally.spawn().await;
        tally
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(TALLY);
        command
            .arg("serve")
            .env("TALLY_DATA_DIR", &self.data_dir)
            .env("TALLY_BIND", "127.0.0.1")
            .env("TALLY_PORT", self.addr.port().to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(log) = &self.log {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the log");
            command.stderr(file);
        }
        self.child = Some(command.spawn().expect("start tally"));
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("tally exited at start: {status}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("tally never listened on {}", self.addr);
    }

    /// A handle for making calls to an already running server (owns no process).
    pub fn attach(addr: SocketAddr) -> Tally {
        Tally { addr, data_dir: PathBuf::new(), env: Vec::new(), log: None, child: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("running")
    }

    /// SIGKILL: no chance to flush or clean up, as in a power cut.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, as systemd stops the service; waits for the exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("running").to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("exits after SIGTERM").unwrap()
    }

    /// Waits (at most `within`) for the service to exit by itself.
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::time::timeout(within, child.wait()).await.expect("the service exits by itself").unwrap()
    }

    /// How the service ended, if it has (without waiting).
    pub fn has_exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// The server's peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        let body = json!({"email": email, "password": password}).to_string();
        request(self.addr, Method::POST, "/api/auth/login", body.as_bytes(), &[("content-type", "application/json")])
            .await
    }

    /// Logs in and returns the access token.
    pub async fn token(&self, email: &str) -> String {
        let reply = self.login(email, PASSWORD).await;
        assert_eq!(reply.status, 200, "login {email}: {}", reply.body);
        reply.json()["accessToken"].as_str().unwrap().to_owned()
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        request(
            self.addr,
            method,
            path,
            body.as_bytes(),
            &[("authorization", &auth), ("content-type", "application/json")],
        )
        .await
    }

    pub async fn upload(&self, token: &str, title: Option<&str>, filename: &str, content: &[u8]) -> Reply {
        let (content_type, body) = multipart(title, filename, content);
        let auth = format!("Bearer {token}");
        request(
            self.addr,
            Method::POST,
            "/api/videos",
            &body,
            &[("authorization", &auth), ("content-type", &content_type)],
        )
        .await
    }

    /// The video's record once its job has ended, processed or failed, within `within`.
    pub async fn settled(&self, token: &str, id: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let video = self.call(Method::GET, &format!("/api/videos/{id}"), token, None).await.json();
            if video["status"] == "processed" || video["status"] == "failed" {
                return video;
            }
            assert!(tokio::time::Instant::now() < deadline, "never processed: {video}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A raw websocket connected to the `/` namespace with `token`.
    pub async fn socket(&self, token: &str) -> super::Ws {
        let mut ws = super::ws_connect(self.addr, "/socket.io/?EIO=4&transport=websocket").await.unwrap();
        super::next_text(&mut ws).await;
        super::send_text(&mut ws, &format!(r#"40{{"token":"{token}"}}"#)).await;
        assert!(super::next_text(&mut ws).await.starts_with("40{"));
        ws
    }

    /// Uploads `total` bytes produced by `chunk(i)` without ever holding them all.
    pub async fn upload_stream(
        &self,
        token: &str,
        filename: &str,
        chunks: impl Iterator<Item = Bytes> + Send + Sync + 'static,
        pause: Duration,
    ) -> Reply {
        self.try_upload_stream(token, filename, chunks, pause).await.unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`Tally::upload_stream`] that may find no server, or lose it before the answer is in.
    pub async fn try_upload_stream(
        &self,
        token: &str,
        filename: &str,
        chunks: impl Iterator<Item = Bytes> + Send + Sync + 'static,
        pause: Duration,
    ) -> Result<Reply, String> {
        use futures_util::StreamExt;
        use http_body_util::{BodyExt, StreamBody};
        use hyper::body::Frame;
        let (content_type, head, tail) = multipart_frame(filename);
        let parts = std::iter::once(Bytes::from(head)).chain(chunks).chain(std::iter::once(Bytes::from(tail)));
        let stream = futures_util::stream::iter(parts).then(move |chunk| async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            Ok::<_, std::io::Error>(Frame::data(chunk))
        });
        let auth = format!("Bearer {token}");
        super::try_request_with_body(
            self.addr,
            Method::POST,
            "/api/videos",
            BodyExt::boxed(StreamBody::new(stream)),
            &[("authorization", &auth), ("content-type", &content_type)],
        )
        .await
    }
}

const BOUNDARY: &str = "tally-test-boundary-7d1c";

pub fn multipart(title: Option<&str>, filename: &str, content: &[u8]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    if let Some(title) = title {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n{title}\r\n").as_bytes(),
        );
    }
    let (content_type, head, tail) = multipart_frame(filename);
    body.extend_from_slice(&head);
    body.extend_from_slice(content);
    body.extend_from_slice(&tail);
    (content_type, body)
}

fn multipart_frame(filename: &str) -> (String, Vec<u8>, Vec<u8>) {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: video/mp4\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    (format!("multipart/form-data; boundary={BOUNDARY}"), head.into_bytes(), tail.into_bytes())
}

impl Drop for Tally {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
