//! Engine.IO v4 at the wire: raw HTTP long-polling and raw websocket frames against the echo
//! server of the protocol's test suite, on a real loopback port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hyper::Method;
use tally::engineio::{Engine, EngineConfig};
use tally::http::Router;
use tokio_tungstenite::tungstenite::Message;

const MOUNT: &str = "/engine.io/";

fn config() -> EngineConfig {
    tally::conformance::engine_config()
}

async fn server_with(config: EngineConfig) -> (Server, Arc<Engine>) {
    let engine = tally::conformance::echo_engine(config);
    let server = Server::start(Router::new().mount_engine(MOUNT, engine.clone())).await;
    (server, engine)
}

async fn server() -> (Server, Arc<Engine>) {
    server_with(config()).await
}

fn url(sid: &str) -> String {
    polling_url(MOUNT, sid)
}

/// A polling GET in flight, given time to park on the server.
async fn parked_get(server: &Server, sid: &str) -> tokio::task::JoinHandle<Reply> {
    let (addr, path) = (server.addr, url(sid));
    let handle = tokio::spawn(async move { get(addr, &path).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle
}

#[tokio::test]
async fn polling_handshake_announces_the_session() {
    let (server, _) = server().await;
    let reply = get(server.addr, "/engine.io/?EIO=4&transport=polling").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "text/plain; charset=UTF-8");
    let open: serde_json::Value = serde_json::from_str(reply.body.strip_prefix('0').unwrap()).unwrap();
    let keys: Vec<_> = open.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]);
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!((open["pingInterval"].as_u64(), open["pingTimeout"].as_u64()), (Some(300), Some(200)));
    assert_eq!(open["maxPayload"].as_u64(), Some(1_000_000));
    assert_eq!(open["sid"].as_str().unwrap().len(), 20);
}

#[tokio::test]
async fn bad_handshakes_get_the_engine_io_error_codes() {
    let (server, engine) = server().await;
    let cases: &[(Method, &str, u64, &str)] = &[
        (Method::GET, "/engine.io/?transport=polling", 5, "Unsupported protocol version"),
        (Method::GET, "/engine.io/?EIO=abc&transport=polling", 5, "Unsupported protocol version"),
        (Method::GET, "/engine.io/?EIO=3&transport=polling", 5, "Unsupported protocol version"),
        (Method::GET, "/engine.io/?EIO=4", 0, "Transport unknown"),
        (Method::GET, "/engine.io/?EIO=4&transport=abc", 0, "Transport unknown"),
        (Method::POST, "/engine.io/?EIO=4&transport=polling", 2, "Bad handshake method"),
        (Method::PUT, "/engine.io/?EIO=4&transport=polling", 2, "Bad handshake method"),
        (Method::GET, "/engine.io/?EIO=4&transport=polling&sid=unknown", 1, "Session ID unknown"),
        (Method::POST, "/engine.io/?EIO=4&transport=polling&sid=%00%ff..%2F", 1, "Session ID unknown"),
        (Method::GET, "/engine.io/?EIO=4&transport=websocket", 3, "Bad request"),
    ];
    for (method, path, code, message) in cases {
        let reply = request(server.addr, method.clone(), path, b"", &[]).await;
        assert_eq!(reply.status, 400, "{method} {path}");
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.json(), serde_json::json!({"code": code, "message": message}), "{method} {path}");
    }
    assert_eq!(engine.session_count(), 0, "no request above may open a session");
}

#[tokio::test]
async fn polling_round_trips_text_and_binary_packets() {
    let (server, _) = server().await;
    let sid = open_polling(server.addr, MOUNT).await;
    let push = post(server.addr, &url(&sid), "4hello\x1ebAQIDBA==\x1e4wörld").await;
    assert_eq!((push.status, push.body.as_str()), (200, "ok"));
    assert_eq!(push.headers["content-type"], "text/html");
    let poll = get(server.addr, &url(&sid)).await;
    assert_eq!(poll.body, "4hello\x1ebAQIDBA==\x1e4wörld");
}

#[tokio::test]
async fn a_parked_get_is_answered_with_the_whole_batch() {
    let (server, _) = server().await;
    let sid = open_polling(server.addr, MOUNT).await;
    let parked = parked_get(&server, &sid).await;
    assert!(!parked.is_finished(), "a GET with nothing queued waits");
    post(server.addr, &url(&sid), "4a\x1e4b\x1e4c").await;
    let poll = parked.await.unwrap();
    assert_eq!((poll.status, poll.body.as_str()), (200, "4a\x1e4b\x1e4c"));
}

#[tokio::test]
async fn invalid_packets_close_the_session() {
    let (server, engine) = server().await;
    for body in ["abc", "", "4a\x1e", "b!!notbase64", "0{}"] {
        let sid = open_polling(server.addr, MOUNT).await;
        let push = post(server.addr, &url(&sid), body).await;
        assert_eq!(push.status, 400, "{body:?}");
        assert_eq!(get(server.addr, &url(&sid)).await.status, 400, "{body:?} must end the session");
    }
    let sid = open_polling(server.addr, MOUNT).await;
    let invalid_utf8 = request(server.addr, Method::POST, &url(&sid), b"4\xc3", &[]).await;
    assert_eq!(invalid_utf8.status, 400);
    eventually("all sessions freed", || engine.session_count() == 0).await;
}

#[tokio::test]
async fn overlapping_gets_close_the_session() {
    let (server, _) = server().await;
    let sid = open_polling(server.addr, MOUNT).await;
    let first = parked_get(&server, &sid).await;
    let second = get(server.addr, &url(&sid)).await;
    assert_eq!(second.status, 400);
    let first = first.await.unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "1"), "the parked GET is told the session closed");
    assert_eq!(get(server.addr, &url(&sid)).await.status, 400);
}

#[tokio::test]
async fn overlapping_posts_close_the_session() {
    use tokio::io::AsyncWriteExt;
    let (server, _) = server().await;
    let sid = open_polling(server.addr, MOUNT).await;
    // A POST that announces 10 bytes and sends 2, so it stays in flight.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!("POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n4a", url(&sid));
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(post(server.addr, &url(&sid), "4b").await.status, 400);
    assert_eq!(get(server.addr, &url(&sid)).await.status, 400);
}

#[tokio::test]
async fn posts_over_max_payload_get_413() {
    let (server, engine) = server_with(EngineConfig { max_payload: 100, ..config() }).await;
    let sid = open_polling(server.addr, MOUNT).await;
    let big = format!("4{}", "x".repeat(200));
    let reply = post(server.addr, &url(&sid), &big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(get(server.addr, &url(&sid)).await.status, 400, "the session is over");
    // A body without a declared length is cut off at the limit too.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sid = open_polling(server.addr, MOUNT).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let chunk = "x".repeat(150);
    let raw = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n4{}\r\n0\r\n\r\n",
        url(&sid),
        chunk.len() + 1,
        chunk
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    eventually("sessions freed", || engine.session_count() == 0).await;
}

#[tokio::test]
async fn heartbeat_over_polling_pings_after_one_interval_and_times_out() {
    let (server, engine) = server().await;
    let sid = open_polling(server.addr, MOUNT).await;
    let (addr, path) = (server.addr, url(&sid));
    let poll = tokio::spawn(async move { get(addr, &path).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!poll.is_finished(), "no ping before pingInterval (300 ms)");
    assert_eq!(poll.await.unwrap().body, "2");
    for _ in 0..3 {
        assert_eq!(post(server.addr, &url(&sid), "3").await.body, "ok");
        assert_eq!(get(server.addr, &url(&sid)).await.body, "2");
    }
    // No pong now: the session is closed pingTimeout after the ping.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(server.addr, &url(&sid)).await.status, 400);
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test]
async fn early_and_extra_pongs_are_tolerated() {
    let (server, _) = server().await;
    let sid = open_polling(server.addr, MOUNT).await;
    assert_eq!(post(server.addr, &url(&sid), "3\x1e3").await.body, "ok");
    for _ in 0..2 {
        assert_eq!(get(server.addr, &url(&sid)).await.body, "2");
        assert_eq!(post(server.addr, &url(&sid), "3\x1e3\x1e3").await.body, "ok");
    }
    post(server.addr, &url(&sid), "4still here").await;
    assert_eq!(get(server.addr, &url(&sid)).await.body, "4still here");
}

#[tokio::test]
async fn client_close_over_polling_answers_the_parked_get_with_noop() {
    let (server, engine) = server().await;
    let sid = open_polling(server.addr, MOUNT).await;
    let parked = parked_get(&server, &sid).await;
    assert_eq!(post(server.addr, &url(&sid), "1").await.body, "ok");
    assert_eq!(parked.await.unwrap().body, "6");
    assert_eq!(get(server.addr, &url(&sid)).await.status, 400);
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test]
async fn websocket_handshake_and_echo() {
    let (server, _) = server().await;
    let mut ws = ws_connect(server.addr, "/engine.io/?EIO=4&transport=websocket").await.unwrap();
    let open = next_text(&mut ws).await;
    let open: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!([]));
    assert_eq!(open["maxPayload"].as_u64(), Some(1_000_000));
    send_text(&mut ws, "4hello").await;
    assert_eq!(next_text(&mut ws).await, "4hello");
    send_binary(&mut ws, &[1, 2, 3, 4]).await;
    assert_eq!(next_binary(&mut ws).await, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn websocket_handshake_errors_refuse_the_upgrade() {
    let (server, engine) = server().await;
    for path in [
        "/engine.io/?transport=websocket",
        "/engine.io/?EIO=abc&transport=websocket",
        "/engine.io/?EIO=4",
        "/engine.io/?EIO=4&transport=abc",
        "/engine.io/?EIO=4&transport=websocket&sid=nope",
    ] {
        assert!(ws_connect(server.addr, path).await.is_err(), "{path}");
    }
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test]
async fn websocket_invalid_packet_and_close_packet_end_the_session() {
    let (server, engine) = server().await;
    let mut ws = ws_connect(server.addr, "/engine.io/?EIO=4&transport=websocket").await.unwrap();
    next_text(&mut ws).await;
    send_text(&mut ws, "abc").await;
    assert!(closed_by_server(&mut ws).await);
    let mut ws = ws_connect(server.addr, "/engine.io/?EIO=4&transport=websocket").await.unwrap();
    next_text(&mut ws).await;
    send_text(&mut ws, "1").await;
    assert!(closed_by_server(&mut ws).await);
    eventually("sessions freed", || engine.session_count() == 0).await;
}

#[tokio::test]
async fn websocket_messages_over_max_payload_close_the_connection() {
    let (server, engine) = server_with(EngineConfig { max_payload: 1000, ..config() }).await;
    let mut ws = ws_connect(server.addr, "/engine.io/?EIO=4&transport=websocket").await.unwrap();
    next_text(&mut ws).await;
    send_text(&mut ws, &format!("4{}", "y".repeat(998))).await;
    assert_eq!(next_text(&mut ws).await.len(), 999, "at the limit is fine");
    send_binary(&mut ws, &vec![0u8; 1500]).await;
    assert!(closed_by_server(&mut ws).await);
    eventually("session freed", || engine.session_count() == 0).await;
}

#[tokio::test]
async fn websocket_heartbeat_pings_and_times_out() {
    let (server, engine) = server().await;
    let mut ws = ws_connect(server.addr, "/engine.io/?EIO=4&transport=websocket").await.unwrap();
    next_text(&mut ws).await;
    for _ in 0..3 {
        match next_message(&mut ws).await {
            Some(Message::Text(t)) => assert_eq!(t.as_str(), "2"),
            other => panic!("expected ping, got {other:?}"),
        }
        send_text(&mut ws, "3").await;
    }
    // Stop answering: closed after the next ping goes unanswered.
    assert!(closed_by_server(&mut ws).await);
    eventually("session freed", || engine.session_count() == 0).await;
}

#[tokio::test]
async fn sessions_are_freed_promptly_when_the_client_goes_away() {
    let (server, engine) = server_with(EngineConfig { ping_interval: Duration::from_secs(60), ..config() }).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let mut ws = ws_connect(server.addr, "/engine.io/?EIO=4&transport=websocket").await.unwrap();
        next_text(&mut ws).await;
        sockets.push(ws);
    }
    assert_eq!(engine.session_count(), 5);
    drop(sockets);
    // Long before the next ping (60 s) would notice.
    eventually("sessions freed on close", || engine.session_count() == 0).await;
}

async fn probe(ws: &mut Ws) {
    send_text(ws, "2probe").await;
    assert_eq!(next_text(ws).await, "3probe");
}

async fn begin_upgrade(server: &Server) -> (String, Ws) {
    let sid = open_polling(server.addr, MOUNT).await;
    let ws = ws_connect(server.addr, &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}")).await.unwrap();
    (sid, ws)
}

#[tokio::test]
async fn upgrade_from_polling_to_websocket() {
    let (server, engine) = server().await;
    let (sid, mut ws) = begin_upgrade(&server).await;
    // A GET parked before the probe...
    let parked = parked_get(&server, &sid).await;
    probe(&mut ws).await;
    // ...is released with a noop, and so is every GET during the upgrade.
    assert_eq!(parked.await.unwrap().body, "6");
    assert_eq!(get(server.addr, &url(&sid)).await.body, "6");
    assert_eq!(get(server.addr, &url(&sid)).await.body, "6");
    send_text(&mut ws, "5").await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(next_text(&mut ws).await, "4hello");
    // Polling is over for this sid, and a second websocket cannot take it over.
    assert_eq!(get(server.addr, &url(&sid)).await.status, 400);
    assert!(ws_connect(server.addr, &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}")).await.is_err());
    send_text(&mut ws, "4still").await;
    assert_eq!(next_text(&mut ws).await, "4still");
    assert_eq!(engine.session_count(), 1);
}

#[tokio::test]
async fn upgrade_packets_sent_back_to_back_are_processed_in_order() {
    let (server, _) = server().await;
    let (sid, mut ws) = begin_upgrade(&server).await;
    send_text(&mut ws, "2probe").await;
    send_text(&mut ws, "5").await;
    assert_eq!(next_text(&mut ws).await, "3probe");
    // A second websocket during or after the upgrade is refused.
    assert!(ws_connect(server.addr, &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}")).await.is_err());
    eventually_polling_refused(&server, &sid).await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(next_text(&mut ws).await, "4hello");
}

async fn eventually_polling_refused(server: &Server, sid: &str) {
    for _ in 0..50 {
        if get(server.addr, &url(sid)).await.status == 400 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("polling still accepted after the upgrade");
}

#[tokio::test]
async fn messages_queued_during_the_upgrade_arrive_over_websocket() {
    let (server, _) = server().await;
    let (sid, mut ws) = begin_upgrade(&server).await;
    probe(&mut ws).await;
    // The client paused polling; what it posts now is echoed into the queue...
    post(server.addr, &url(&sid), "4queued").await;
    send_text(&mut ws, "5").await;
    // ...and flushed over the websocket once it takes over.
    assert_eq!(next_text(&mut ws).await, "4queued");
}

#[tokio::test]
async fn heartbeat_pauses_during_the_upgrade() {
    let (server, _) = server_with(EngineConfig { upgrade_timeout: Duration::from_secs(3), ..config() }).await;
    let (sid, mut ws) = begin_upgrade(&server).await;
    probe(&mut ws).await;
    // Longer than pingInterval + pingTimeout with no pong: no ping timeout while upgrading.
    tokio::time::sleep(Duration::from_millis(800)).await;
    send_text(&mut ws, "5").await;
    send_text(&mut ws, "4alive").await;
    assert_eq!(next_text(&mut ws).await, "4alive");
    assert_eq!(get(server.addr, &url(&sid)).await.status, 400);
}

#[tokio::test]
async fn an_upgrade_that_never_completes_times_out_and_polling_goes_on() {
    let (server, _) = server_with(EngineConfig { upgrade_timeout: Duration::from_millis(250), ..config() }).await;
    let (sid, mut ws) = begin_upgrade(&server).await;
    probe(&mut ws).await;
    assert!(closed_by_server(&mut ws).await, "the probe websocket is closed after upgradeTimeout");
    post(server.addr, &url(&sid), "3\x1e4back on polling").await;
    let body = get(server.addr, &url(&sid)).await.body;
    assert!(body.ends_with("4back on polling"), "{body:?}");
    // And the session can try again.
    let mut again = ws_connect(server.addr, &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}")).await.unwrap();
    probe(&mut again).await;
}

#[tokio::test]
async fn a_wrong_probe_closes_only_the_websocket() {
    let (server, _) = server().await;
    let (sid, mut ws) = begin_upgrade(&server).await;
    send_text(&mut ws, "4not a probe").await;
    assert!(closed_by_server(&mut ws).await);
    post(server.addr, &url(&sid), "4polling fine").await;
    assert!(get(server.addr, &url(&sid)).await.body.ends_with("4polling fine"));
}

#[tokio::test]
async fn cors_reflects_allowed_origins_only() {
    let (server, _) = server_with(EngineConfig { cors_origins: vec!["http://tally.local".into()], ..config() }).await;
    let preflight = request(
        server.addr,
        Method::OPTIONS,
        "/engine.io/?EIO=4&transport=polling",
        b"",
        &[
            ("origin", "http://tally.local"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.headers["access-control-allow-origin"], "http://tally.local");
    assert_eq!(preflight.headers["access-control-allow-credentials"], "true");
    assert!(preflight.headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert_eq!(preflight.headers["access-control-allow-headers"], "content-type");

    let allowed = request(
        server.addr,
        Method::GET,
        "/engine.io/?EIO=4&transport=polling",
        b"",
        &[("origin", "http://tally.local")],
    )
    .await;
    assert_eq!(allowed.headers["access-control-allow-origin"], "http://tally.local");
    let error = request(
        server.addr,
        Method::GET,
        "/engine.io/?EIO=9&transport=polling",
        b"",
        &[("origin", "http://tally.local")],
    )
    .await;
    assert_eq!(error.headers["access-control-allow-origin"], "http://tally.local", "errors are readable too");

    let other = request(
        server.addr,
        Method::GET,
        "/engine.io/?EIO=4&transport=polling",
        b"",
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(other.status, 200, "the reference's default: any origin may open a session");
    assert!(other.headers.get("access-control-allow-origin").is_none());
    for reply in [&preflight, &allowed, &other] {
        assert!(reply.headers.get_all("access-control-allow-origin").iter().all(|v| v != "*"));
    }
}

#[tokio::test]
async fn same_origin_only_refuses_other_sites_but_not_the_server_or_listed_origins() {
    let config = EngineConfig { cors_origins: vec!["http://tally.local".into()], same_origin_only: true, ..config() };
    let (server, _) = server_with(config).await;
    let own = format!("http://{}", server.addr);
    let handshake = "/engine.io/?EIO=4&transport=polling";
    let try_with = |headers: Vec<(&'static str, String)>| {
        let addr = server.addr;
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
            request(addr, Method::GET, handshake, b"", &headers).await
        }
    };
    for allowed in [
        vec![],
        vec![("origin", own.clone())],
        vec![("origin", "http://tally.local".to_owned())],
        vec![("sec-fetch-site", "same-origin".to_owned())],
    ] {
        let reply = try_with(allowed.clone()).await;
        assert_eq!(reply.status, 200, "{allowed:?}: {}", reply.body);
    }
    for refused in [
        vec![("origin", "http://evil.example".to_owned())],
        vec![("origin", "null".to_owned())],
        vec![("sec-fetch-site", "cross-site".to_owned())],
    ] {
        let reply = try_with(refused.clone()).await;
        assert_eq!((reply.status, reply.body.as_str()), (403, r#"{"code":4,"message":"Forbidden"}"#), "{refused:?}");
    }
    // A websocket from another site is refused before the upgrade.
    let mut upgrade = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/engine.io/?EIO=4&transport=websocket",
        server.addr
    ))
    .unwrap();
    upgrade.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(upgrade).await.is_err(), "a cross-site websocket is refused");
}
