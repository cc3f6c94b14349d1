//! Connection state recovery with the stock `socket.io-client`: the network between client and
//! server is a proxy the test resets while events stream; the client must come back as the
//! same socket and end up with every event exactly once, in order, over every transport.
//! With recovery off (the protocol-reference mode) the client starts afresh instead.

mod common;

use std::time::Duration;

use common::node::NodeClients;
use common::proxy::Proxy;
use common::*;
use serde_json::{Value, json};
use tally::engineio::EngineConfig;
use tally::http::Router;
use tally::socketio::{RecoveryConfig, SocketIo, SocketIoConfig};

const TICKS: u64 = 120;

/// A server whose `/` sockets join room `feed`; `stream` starts `TICKS` ticks every few
/// milliseconds, alternating a room broadcast and an emit to the socket itself.
async fn server(recovery: Option<RecoveryConfig>) -> (Server, Proxy) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let io = SocketIo::new(SocketIoConfig { recovery, ..SocketIoConfig::default() });
    let main = io.of("/");
    main.on_connect(|socket| socket.join("feed"));
    main.on("stream", |socket, _, _| {
        let socket = socket.clone();
        tokio::spawn(async move {
            for i in 0..TICKS {
                if i % 2 == 0 {
                    socket.namespace().to("feed").emit("tick", json!([i]));
                } else {
                    // The socket object of the first connection, kept past any recovery.
                    let _ = socket.emit("tick", json!([i]));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    });
    let engine = io.engine(EngineConfig::default());
    let server = Server::start(Router::new().mount_engine("/socket.io/", engine)).await;
    let proxy = Proxy::start(server.addr).await;
    (server, proxy)
}

/// The tick numbers client `id` received, in order, until the last one; checks each carries
/// a string offset after it when `offsets` is set.
async fn ticks_until_last(clients: &mut NodeClients, id: &str, offsets: bool) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let event = clients.expect_event(id, "tick").await;
        let tick = event["args"][0].as_u64().unwrap();
        assert_eq!(event["offset"].is_string(), offsets, "offset argument: {event}");
        seen.push(tick);
        if tick == TICKS - 1 {
            return seen;
        }
    }
}

async fn cut_while_streaming(transports: Value) {
    let (_server, proxy) = server(Some(RecoveryConfig::default())).await;
    let mut clients = NodeClients::spawn().await;
    clients.connect("c", &proxy.url(), None, json!({ "transports": transports })).await;
    let first = clients.expect_ev("c", "connect").await;
    assert_eq!(first["recovered"], false);
    if transports.as_array().is_some_and(|t| t.len() == 2) {
        clients.expect_ev("c", "upgrade").await;
    }
    clients.send(json!({"op": "emit", "id": "c", "event": "stream", "args": []})).await;
    // Cut once some ticks are through, while the rest are still coming.
    for _ in 0..20 {
        clients.expect_event("c", "tick").await;
    }
    // The network goes away for a moment: open connections reset, new ones refused.
    proxy.refuse(true);
    proxy.cut();
    let dropped = clients.expect_ev("c", "disconnect").await;
    assert!(["transport error", "transport close"].contains(&dropped["reason"].as_str().unwrap()), "{dropped}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.refuse(false);
    let back = clients.expect_ev("c", "connect").await;
    assert_eq!(back["recovered"], true, "{back}");
    assert_eq!(back["sid"], first["sid"], "the same socket id");

    let mut clients_ticks: Vec<u64> = (0..20).collect();
    clients_ticks.extend(ticks_until_last(&mut clients, "c", true).await);
    let expected: Vec<u64> = (0..TICKS).collect();
    assert_eq!(clients_ticks, expected, "every tick exactly once, in order");
}

#[tokio::test]
async fn websocket_clients_recover_every_missed_event_once_in_order() {
    cut_while_streaming(json!(["websocket"])).await;
}

#[tokio::test]
async fn polling_clients_recover_every_missed_event_once_in_order() {
    // The server cannot see a long-poll's network vanish: the client's return takes over.
    cut_while_streaming(json!(["polling"])).await;
}

#[tokio::test]
async fn upgraded_clients_recover_every_missed_event_once_in_order() {
    cut_while_streaming(json!(["polling", "websocket"])).await;
}

#[tokio::test]
async fn without_recovery_a_dropped_client_starts_afresh() {
    let (_server, proxy) = server(None).await;
    let mut clients = NodeClients::spawn().await;
    clients.connect("c", &proxy.url(), None, json!({ "transports": ["websocket"] })).await;
    let first = clients.expect_ev("c", "connect").await;
    clients.send(json!({"op": "emit", "id": "c", "event": "stream", "args": []})).await;
    let event = clients.expect_event("c", "tick").await;
    assert_eq!(event["args"], json!([0]));
    assert!(event.get("offset").is_none(), "no offset argument: {event}");
    proxy.cut();
    let back = clients.expect_ev("c", "connect").await;
    assert_ne!(back["recovered"], true);
    assert_ne!(back["sid"], first["sid"]);
}

#[tokio::test]
async fn a_client_back_after_the_window_starts_afresh() {
    let window = RecoveryConfig { max_disconnection: Duration::from_millis(300), ..RecoveryConfig::default() };
    let (_server, proxy) = server(Some(window)).await;
    let mut clients = NodeClients::spawn().await;
    clients.connect("c", &proxy.url(), None, json!({ "transports": ["websocket"] })).await;
    let first = clients.expect_ev("c", "connect").await;
    proxy.refuse(true);
    proxy.cut();
    clients.expect_ev("c", "disconnect").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.refuse(false);
    let back = clients.expect_ev("c", "connect").await;
    assert_eq!(back["recovered"], false);
    assert_ne!(back["sid"], first["sid"]);
}

#[tokio::test]
async fn a_backlog_that_overflowed_starts_the_client_afresh_rather_than_with_a_gap() {
    let small = RecoveryConfig { max_backlog_packets: 10, ..RecoveryConfig::default() };
    let (_server, proxy) = server(Some(small)).await;
    let mut clients = NodeClients::spawn().await;
    clients.connect("c", &proxy.url(), None, json!({ "transports": ["websocket"] })).await;
    let first = clients.expect_ev("c", "connect").await;
    clients.send(json!({"op": "emit", "id": "c", "event": "stream", "args": []})).await;
    clients.expect_event("c", "tick").await;
    // Away for the rest of the stream: far more than 10 events go by.
    proxy.refuse(true);
    proxy.cut();
    clients.expect_ev("c", "disconnect").await;
    tokio::time::sleep(Duration::from_millis(5 * TICKS + 200)).await;
    proxy.refuse(false);
    let back = clients.expect_ev("c", "connect").await;
    assert_eq!(back["recovered"], false, "{back}");
    assert_ne!(back["sid"], first["sid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_handler_may_emit_when_a_broadcast_overflows_a_client() {
    // The overflow closes the slow client while the broadcast holds the backlog; the handler
    // that then runs emits itself: it must not wait on that broadcast.
    let io = SocketIo::new(SocketIoConfig { recovery: Some(RecoveryConfig::default()), ..SocketIoConfig::default() });
    let main = io.of("/");
    main.on_disconnect(|socket, _| {
        socket.namespace().emit("left", json!([socket.id().to_string()]));
    });
    let engine = io.engine(EngineConfig { max_buffered_packets: 8, ..EngineConfig::default() });
    let server = Server::start(Router::new().mount_engine("/socket.io/", engine)).await;
    let mut slow = ws_connect(server.addr, "/socket.io/?EIO=4&transport=websocket").await.unwrap();
    next_text(&mut slow).await;
    send_text(&mut slow, "40").await;
    next_text(&mut slow).await;
    let mut watcher = ws_connect(server.addr, "/socket.io/?EIO=4&transport=websocket").await.unwrap();
    next_text(&mut watcher).await;
    send_text(&mut watcher, "40").await;
    next_text(&mut watcher).await;

    // The watcher keeps reading, through the flood, to the slow client's farewell.
    let farewell = tokio::spawn(async move {
        loop {
            let frame = next_text(&mut watcher).await;
            if frame.starts_with(r#"42["left""#) {
                return frame;
            }
        }
    });
    let namespace = main.clone();
    let flood = tokio::task::spawn_blocking(move || {
        let big = "x".repeat(100_000);
        for _ in 0..300 {
            namespace.emit("big", json!([big]));
        }
    });
    tokio::time::timeout(Duration::from_secs(20), flood).await.expect("the broadcast never finished").unwrap();
    let left = tokio::time::timeout(Duration::from_secs(20), farewell).await.expect("the disconnect handler's event");
    let left = left.unwrap();
    assert!(left.contains(r#"42["left""#));
}
