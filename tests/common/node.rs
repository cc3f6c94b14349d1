//! The stock `socket.io-client` from npm, driven from Rust through `tests/js/harness.mjs`:
//! commands go in as JSON lines, everything the clients see comes back as JSON lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Runs `tests/js/<script>` (a playwright-core run in Debian's Chromium) with `config` as
/// its one argument and returns the JSON report it prints last.
pub async fn chromium_report(script: &str, config: &Value) -> Value {
    assert!(std::path::Path::new("/usr/bin/chromium").exists(), "Chromium is needed: scripts/deps test installs it");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js").join(script);
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(config.to_string())
        .current_dir(script.parent().unwrap())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the browser run failed: {stdout}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    eprintln!("{} report: {report}", script.display());
    report
}

pub struct NodeClients {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Reports read but not yet matched by an `expect`.
    backlog: Vec<Value>,
}

impl NodeClients {
    pub async fn spawn() -> NodeClients {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            dir.join("node_modules/socket.io-client").exists(),
            "socket.io-client is not installed: run scripts/test (it runs npm ci --prefix tests/js)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("harness.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed (scripts/deps test)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        let _ = tx.send(value);
                    }
                    Err(_) => eprintln!("node: {line}"),
                }
            }
        });
        let mut clients = NodeClients { child, stdin, lines, backlog: Vec::new() };
        clients.expect("harness ready", |v| v["ev"] == "ready").await;
        clients
    }

    pub async fn send(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.expect("write to node");
    }

    pub async fn connect(&mut self, id: &str, url: &str, token: Option<&str>, opts: Value) {
        self.send(json!({"op": "connect", "id": id, "url": url, "token": token, "opts": opts})).await;
    }

    /// Waits (10 s at most) for the first report that satisfies `matches`.
    pub async fn expect(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(pos) = self.backlog.iter().position(&matches) {
            return self.backlog.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(value)) if matches(&value) => return value,
                Ok(Some(value)) => self.backlog.push(value),
                Ok(None) => panic!("node exited while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; seen: {:#?}", self.backlog),
            }
        }
    }

    /// The next report of client `id` with kind `ev`.
    pub async fn expect_ev(&mut self, id: &str, ev: &str) -> Value {
        self.expect(&format!("{id} {ev}"), |v| v["id"] == id && v["ev"] == ev).await
    }

    /// The next event named `event` received by client `id`.
    pub async fn expect_event(&mut self, id: &str, event: &str) -> Value {
        self.expect(&format!("{id} event {event}"), |v| v["id"] == id && v["ev"] == "event" && v["event"] == event)
            .await
    }

    /// Every report received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Value> {
        while let Ok(value) = self.lines.try_recv() {
            self.backlog.push(value);
        }
        std::mem::take(&mut self.backlog)
    }
}

impl Drop for NodeClients {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
