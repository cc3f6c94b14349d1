//! Shared test support: a real server on a loopback port, a raw HTTP client and raw websocket
//! helpers that speak the wire protocol byte for byte.
#![allow(dead_code)]

pub mod fixtures;
pub mod node;
pub mod process;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tally::http::{self, Router};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A serving task that stops when told or when dropped.
struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn spawn<F: Future<Output = ()> + Send + 'static>(serve: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running {
        let (tx, rx) = oneshot::channel();
        Running { shutdown: Some(tx), task: Some(tokio::spawn(serve(rx))) }
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A server running on 127.0.0.1 until dropped.
pub struct Server {
    pub addr: SocketAddr,
    running: Running,
}

impl Server {
    pub async fn start(router: Router) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), router).await
    }

    pub async fn start_on(addr: SocketAddr, router: Router) -> Server {
        let listener = http::bind(addr).expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let running = Running::spawn(|rx| {
            let serving = http::serve(listener, Arc::new(router), async {
                let _ = rx.await;
            });
            // Stopped, the server lets its connections finish by themselves.
            async move { drop(serving.await) }
        });
        Server { addr, running }
    }

    pub async fn stop(mut self) {
        self.running.stop().await;
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    pub bytes: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One request on a fresh connection, so requests can overlap as a browser's would.
pub async fn request(addr: SocketAddr, method: Method, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let body = Full::new(Bytes::copy_from_slice(body)).map_err(|never| match never {}).boxed();
    request_with_body(addr, method, path, body, headers).await
}

pub type RequestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A request whose body may be streamed (large or deliberately slow uploads).
pub async fn request_with_body(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: RequestBody,
    headers: &[(&str, &str)],
) -> Reply {
    // The server may answer early (413, 507) and close while the body is still going.
    try_request_with_body(addr, method, path, body, headers).await.unwrap_or_else(|error| panic!("{error}"))
}

/// A request that may find no server, or lose it before the whole answer is in.
pub async fn try_request_with_body(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: RequestBody,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let mut builder = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response =
        sender.send_request(builder.body(body).unwrap()).await.map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(Reply { status, headers, body: String::from_utf8_lossy(&bytes).into_owned(), bytes })
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, Method::GET, path, b"", &[]).await
}

pub async fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    request(addr, Method::POST, path, body.as_bytes(), &[("content-type", "text/plain;charset=UTF-8")]).await
}

/// Opens a polling session under `mount` (e.g. `/engine.io/`) and returns its sid.
pub async fn open_polling(addr: SocketAddr, mount: &str) -> String {
    let reply = get(addr, &format!("{mount}?EIO=4&transport=polling")).await;
    assert_eq!(reply.status, 200, "handshake: {}", reply.body);
    let open: serde_json::Value = serde_json::from_str(reply.body.strip_prefix('0').expect("open packet")).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

pub fn polling_url(mount: &str, sid: &str) -> String {
    format!("{mount}?EIO=4&transport=polling&sid={sid}")
}

pub async fn ws_connect(addr: SocketAddr, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await.map(|(ws, _)| ws)
}

/// The next text or binary message, failing the test after 5 s.
pub async fn next_message(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("timed out waiting for a message") {
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(message)) => return Some(message),
        }
    }
}

/// The next text message that is not an Engine.IO ping (those are answered).
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match next_message(ws).await {
            Some(Message::Text(text)) if text.as_str() == "2" => {
                let _ = ws.send(Message::text("3")).await;
            }
            Some(Message::Text(text)) => return text.as_str().to_owned(),
            Some(other) => panic!("expected text, got {other:?}"),
            None => panic!("connection closed while waiting for text"),
        }
    }
}

pub async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    match next_message(ws).await {
        Some(Message::Binary(data)) => data.to_vec(),
        other => panic!("expected binary, got {other:?}"),
    }
}

/// True when the server closes the websocket within 5 s (anything it sends first is skipped).
pub async fn closed_by_server(ws: &mut Ws) -> bool {
    let wait = async {
        while let Some(message) = ws.next().await {
            if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait).await.is_ok()
}

/// An event frame of the app namespace (`42[...]`, recovery on) with its offset, the last
/// argument, checked and taken off.
pub fn without_offset(frame: &str) -> String {
    let body = frame.strip_prefix("42").unwrap_or_else(|| panic!("not an event: {frame}"));
    let mut event: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
    let offset = event.pop();
    assert!(
        offset.as_ref().and_then(|o| o.as_str()).is_some_and(|o| o.parse::<u64>().is_ok()),
        "{frame} ends with its offset"
    );
    format!("42{}", serde_json::Value::Array(event))
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

pub async fn send_binary(ws: &mut Ws, data: &[u8]) {
    ws.send(Message::binary(data.to_vec())).await.expect("send");
}

/// Polls `check` every 20 ms until it holds, failing after 5 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// The whole service (`tally serve`'s assembly) on a loopback port, with its own data dir.
pub struct TestApp {
    pub app: Arc<tally::app::App>,
    pub addr: SocketAddr,
    pub data_dir: Arc<tempfile::TempDir>,
    running: Running,
}

impl TestApp {
    pub async fn start() -> TestApp {
        let data_dir = Arc::new(tempfile::tempdir().unwrap());
        TestApp::start_with(data_dir, 0).await
    }

    /// Starts on `port` (0: any) with `data_dir`, so a restart keeps its secret and address.
    pub async fn start_with(data_dir: Arc<tempfile::TempDir>, port: u16) -> TestApp {
        let mut config = tally::config::Config {
            bind: [127, 0, 0, 1].into(),
            port,
            data_dir: data_dir.path().to_owned(),
            ..Default::default()
        };
        // Media jobs run in child processes of the real binary (this one is the test's).
        config.media.worker = Some(process::TALLY.into());
        // A restart in the same process waits for the previous instance to let go of the
        // database (its last connections are still closing).
        let mut attempts = 0;
        let app = loop {
            match tally::app::App::new(config.clone()) {
                Ok(app) => break Arc::new(app),
                Err(error) if attempts < 100 && format!("{error:#}").contains("in use") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("starting the app: {error:#}"),
            }
        };
        let listener = app.listen().unwrap();
        let addr = listener.local_addr().unwrap();
        let runner = app.clone();
        let running = Running::spawn(|rx| async move {
            let exit = runner
                .run(listener, async {
                    let _ = rx.await;
                })
                .await;
            assert_eq!(exit, tally::shutdown::Exit::Stopped, "the app stops cleanly");
        });
        TestApp { app, addr, data_dir, running }
    }

    /// An access token of account `user` (an editor) in organization `org`, creating both
    /// with those ids if they do not exist yet: sockets are let in only for stored accounts.
    pub fn token(&self, user: &str, org: &str) -> String {
        let role = self.account(user, org, tally::auth::Role::Editor);
        self.app.keys.issue(user, org, role, Duration::from_secs(600)).unwrap()
    }

    /// Makes sure account `user` of organization `org` exists (with `role` when new); its
    /// stored role.
    pub fn account(&self, user: &str, org: &str, role: tally::auth::Role) -> tally::auth::Role {
        let store = &self.app.store;
        if store.org(org).unwrap().is_none() {
            let record = tally::store::Organization { id: org.into(), name: org.into(), created_at: 0 };
            store.import_org(&record).unwrap();
        }
        if let Some(existing) = store.user(user).unwrap() {
            return existing.role;
        }
        let record = tally::store::User {
            id: user.into(),
            org_id: org.into(),
            email: format!("{user}@{org}.test"),
            role,
            password_hash: String::new(),
            created_at: 0,
        };
        store.import_user(&record).unwrap();
        role
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and closes every connection, as `tally serve` does on SIGTERM.
    pub async fn stop(mut self) {
        self.running.stop().await;
    }
}

/// Says `text` on the chat (ack number `n`) and returns the acknowledgement.
pub async fn say(ws: &mut Ws, n: u64, text: &str) -> serde_json::Value {
    send_text(ws, &format!(r#"42{n}["chat:message",{{"text":"{text}"}}]"#)).await;
    loop {
        let frame = next_text(ws).await;
        if let Some(body) = frame.strip_prefix(&format!("43{n}")) {
            return serde_json::from_str::<serde_json::Value>(body).unwrap()[0].clone();
        }
    }
}

/// Every chat message text of the socket's organization, paging back through the history
/// (`chat:history` with acks numbered from 1000).
pub async fn chat_history(ws: &mut Ws) -> std::collections::BTreeSet<String> {
    let mut texts = std::collections::BTreeSet::new();
    let mut before: Option<String> = None;
    for n in 1000u64.. {
        let options = match &before {
            Some(id) => format!(r#"{{"before":"{id}"}}"#),
            None => "{}".to_owned(),
        };
        send_text(ws, &format!(r#"42{n}["chat:history",{options}]"#)).await;
        let answer = loop {
            let frame = next_text(ws).await;
            if let Some(body) = frame.strip_prefix(&format!("43{n}")) {
                break serde_json::from_str::<serde_json::Value>(body).unwrap();
            }
        };
        let messages = answer[0]["messages"].as_array().expect("history").clone();
        let Some(oldest) = messages.first() else { return texts };
        before = oldest["id"].as_str().map(str::to_owned);
        texts.extend(messages.iter().filter_map(|m| m["text"].as_str().map(str::to_owned)));
    }
    texts
}
