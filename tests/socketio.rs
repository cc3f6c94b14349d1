//! Socket.IO v5 at the wire: raw websocket frames (and polling) against the protocol suite's
//! reference server plus a few test-only events for rooms, server acks and limits.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tally::engineio::{Engine, EngineConfig};
use tally::http::Router;
use tally::socketio::{ConnectError, Payload, SocketIo, SocketIoConfig};
use tokio::sync::mpsc;

struct Harness {
    server: Server,
    io: SocketIo,
    engine: Arc<Engine>,
    /// What the server side observed: disconnect reasons, ack outcomes, emit errors.
    seen: mpsc::UnboundedReceiver<String>,
    middleware_runs: Arc<AtomicUsize>,
}

impl Harness {
    async fn start() -> Harness {
        Harness::with(tally::conformance::engine_config(), tally::conformance::socketio_config()).await
    }

    async fn with(engine_config: EngineConfig, config: SocketIoConfig) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let io = SocketIo::new(config);
        tally::conformance::socketio(&io);
        let (tx, seen) = mpsc::unbounded_channel();
        let main = io.of("/");
        main.on("join", |socket, payload, ack| {
            for room in payload.args.iter().filter_map(Value::as_str) {
                socket.join(room);
            }
            if let Some(ack) = ack {
                let rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
                let _ = ack.send(vec![json!(rooms)]);
            }
        });
        main.on("leave", |socket, payload, _| {
            for room in payload.args.iter().filter_map(Value::as_str) {
                socket.leave(room);
            }
        });
        // ["to-rooms", [rooms], [except rooms], data]
        main.on("to-rooms", |socket, payload, _| {
            let strings = |v: &Value| {
                v.as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let mut op = socket.namespace().broadcast();
            for room in strings(&payload.args[0]) {
                op = op.to(room);
            }
            for room in strings(&payload.args[1]) {
                op = op.except(room);
            }
            op.emit("room-event", payload.args[2].clone());
        });
        main.on("everyone", |socket, payload, _| {
            socket.namespace().emit("everyone", payload);
        });
        let ask_tx = tx.clone();
        // ["ask", timeout_ms]: the server asks the client and reports the answer.
        main.on("ask", move |socket, payload, _| {
            let timeout = Duration::from_millis(payload.args[0].as_u64().unwrap_or(1000));
            let answer = socket.emit_with_ack("question", json!(["?"]), timeout);
            let (socket, tx) = (socket.clone(), ask_tx.clone());
            tokio::spawn(async move {
                match answer.await {
                    Ok(payload) => {
                        let _ = tx.send(format!("ack:{}", Value::Array(payload.args.clone())));
                        let _ = socket.emit("answer", payload);
                    }
                    Err(error) => {
                        let _ = tx.send(format!("ack-error:{error}"));
                    }
                }
            });
        });
        let flood_tx = tx.clone();
        main.on("flood", move |socket, payload, _| {
            for i in 0..payload.args[0].as_u64().unwrap_or(0) {
                if let Err(error) = socket.emit("flood", json!([i])) {
                    let _ = flood_tx.send(format!("flood-stopped:{error}"));
                    return;
                }
            }
        });
        main.on("kick", |socket, _, _| socket.disconnect());
        let disconnect_tx = tx.clone();
        main.on_disconnect(move |_, reason| {
            let _ = disconnect_tx.send(format!("disconnect:{}", reason.as_str()));
        });
        let middleware_runs = Arc::new(AtomicUsize::new(0));
        let runs = middleware_runs.clone();
        let guarded = io.of("/guarded");
        guarded.use_middleware(move |handshake, _| {
            runs.fetch_add(1, Ordering::SeqCst);
            if handshake.auth["pass"] == "ok" {
                Ok(())
            } else {
                Err(ConnectError::new("not allowed").with_data(json!({"hint": "pass"})))
            }
        });
        let engine = io.engine(engine_config);
        let server = Server::start(Router::new().mount_engine("/socket.io/", engine.clone())).await;
        Harness { server, io, engine, seen, middleware_runs }
    }

    async fn open(&self) -> (Ws, String) {
        let mut ws = ws_connect(self.server.addr, "/socket.io/?EIO=4&transport=websocket").await.unwrap();
        let open = next_text(&mut ws).await;
        let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_owned();
        (ws, sid)
    }

    /// A websocket connected to `/`, past the CONNECT ack and the `auth` event.
    async fn connect(&self) -> Ws {
        let (mut ws, _) = self.open().await;
        send_text(&mut ws, "40").await;
        assert!(next_text(&mut ws).await.starts_with("40{"));
        assert_eq!(next_text(&mut ws).await, r#"42["auth",{}]"#);
        ws
    }

    async fn observed(&mut self, prefix: &str) -> String {
        loop {
            let seen = tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
                .await
                .expect("server observation")
                .unwrap();
            if seen.starts_with(prefix) {
                return seen;
            }
        }
    }
}

fn connect_ack_sid(packet: &str, prefix: &str) -> String {
    let json: Value =
        serde_json::from_str(packet.strip_prefix(prefix).unwrap_or_else(|| panic!("{packet:?} lacks {prefix:?}")))
            .unwrap();
    assert_eq!(json.as_object().unwrap().len(), 1, "the CONNECT ack carries only sid: {json}");
    json["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn connects_to_the_main_namespace() {
    let h = Harness::start().await;
    let (mut ws, engine_sid) = h.open().await;
    send_text(&mut ws, "40").await;
    let sid = connect_ack_sid(&next_text(&mut ws).await, "40");
    assert_ne!(sid, engine_sid, "socket ids are distinct from engine ids (protocol v5)");
    assert_eq!(next_text(&mut ws).await, r#"42["auth",{}]"#);

    let (mut ws, _) = h.open().await;
    send_text(&mut ws, r#"40{"token":"123"}"#).await;
    connect_ack_sid(&next_text(&mut ws).await, "40");
    assert_eq!(next_text(&mut ws).await, r#"42["auth",{"token":"123"}]"#);
}

#[tokio::test]
async fn connects_to_a_custom_namespace_with_or_without_the_comma() {
    let h = Harness::start().await;
    for (connect, auth) in
        [("40/custom", "{}"), ("40/custom,", "{}"), (r#"40/custom,{"token":"abc"}"#, r#"{"token":"abc"}"#)]
    {
        let (mut ws, _) = h.open().await;
        send_text(&mut ws, connect).await;
        connect_ack_sid(&next_text(&mut ws).await, "40/custom,");
        assert_eq!(next_text(&mut ws).await, format!(r#"42/custom,["auth",{auth}]"#));
    }
}

#[tokio::test]
async fn refuses_unknown_namespaces_and_invalid_handshakes() {
    let h = Harness::start().await;
    let (mut ws, _) = h.open().await;
    send_text(&mut ws, "40/random").await;
    assert_eq!(next_text(&mut ws).await, r#"44/random,{"message":"Invalid namespace"}"#);
    let (mut ws, _) = h.open().await;
    send_text(&mut ws, "4abc").await;
    assert!(closed_by_server(&mut ws).await);
}

#[tokio::test]
async fn middleware_errors_become_connect_error_with_message_and_data() {
    let h = Harness::start().await;
    let (mut ws, _) = h.open().await;
    send_text(&mut ws, r#"40/guarded,{"pass":"no"}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"44/guarded,{"message":"not allowed","data":{"hint":"pass"}}"#);
}

#[tokio::test]
async fn a_duplicate_connect_neither_reruns_middleware_nor_replaces_the_socket() {
    let h = Harness::start().await;
    let (mut ws, _) = h.open().await;
    send_text(&mut ws, r#"40/guarded,{"pass":"ok"}"#).await;
    let first = connect_ack_sid(&next_text(&mut ws).await, "40/guarded,");
    send_text(&mut ws, r#"40/guarded,{"pass":"no"}"#).await;
    let second = connect_ack_sid(&next_text(&mut ws).await, "40/guarded,");
    assert_eq!(first, second);
    assert_eq!(h.middleware_runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn namespace_disconnects_keep_the_connection() {
    let h = Harness::start().await;
    let mut ws = h.connect().await;
    send_text(&mut ws, "41").await;
    // The engine connection stays: the next thing is the server's ping.
    match next_message(&mut ws).await {
        Some(tokio_tungstenite::tungstenite::Message::Text(t)) => assert_eq!(t.as_str(), "2"),
        other => panic!("expected a ping, got {other:?}"),
    }

    let mut ws = h.connect().await;
    send_text(&mut ws, "40/custom").await;
    next_text(&mut ws).await;
    next_text(&mut ws).await;
    send_text(&mut ws, "41/custom").await;
    send_text(&mut ws, r#"42["message","message to main namespace"]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"42["message-back","message to main namespace"]"#);
}

#[tokio::test]
async fn events_and_acks_round_trip_exactly() {
    let h = Harness::start().await;
    let mut ws = h.connect().await;
    send_text(&mut ws, r#"42["message",1,"2",{"3":[true]}]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"42["message-back",1,"2",{"3":[true]}]"#);
    send_text(&mut ws, r#"42456["message-with-ack",1,"2",{"3":[true]}]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"43456[1,"2",{"3":[true]}]"#);
    // key order of objects is kept as sent
    send_text(&mut ws, r#"42["message",{"z":1,"a":2}]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"42["message-back",{"z":1,"a":2}]"#);
}

#[tokio::test]
async fn binary_events_and_acks_carry_their_attachments() {
    let h = Harness::start().await;
    let mut ws = h.connect().await;
    send_text(&mut ws, r#"452-["message",{"_placeholder":true,"num":0},{"num":1,"_placeholder":true}]"#).await;
    send_binary(&mut ws, &[1, 2, 3]).await;
    send_binary(&mut ws, &[4, 5, 6]).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"452-["message-back",{"_placeholder":true,"num":0},{"num":1,"_placeholder":true}]"#
    );
    assert_eq!(next_binary(&mut ws).await, vec![1, 2, 3]);
    assert_eq!(next_binary(&mut ws).await, vec![4, 5, 6]);

    send_text(&mut ws, r#"452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    send_binary(&mut ws, &[1, 2, 3]).await;
    send_binary(&mut ws, &[4, 5, 6]).await;
    assert_eq!(next_text(&mut ws).await, r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#);
    assert_eq!(next_binary(&mut ws).await, vec![1, 2, 3]);
    assert_eq!(next_binary(&mut ws).await, vec![4, 5, 6]);
}

#[tokio::test]
async fn server_emit_with_ack_resolves_times_out_and_is_dropped_on_disconnect() {
    let mut h = Harness::start().await;
    let mut ws = h.connect().await;
    send_text(&mut ws, r#"42["ask",2000]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"420["question","?"]"#);
    send_text(&mut ws, r#"430["yes",{"n":1}]"#).await;
    assert_eq!(h.observed("ack").await, r#"ack:["yes",{"n":1}]"#);
    assert_eq!(next_text(&mut ws).await, r#"42["answer","yes",{"n":1}]"#);
    // An ack for an id that is not pending is ignored.
    send_text(&mut ws, r#"4399["late"]"#).await;

    send_text(&mut ws, r#"42["ask",100]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"421["question","?"]"#);
    assert_eq!(h.observed("ack").await, "ack-error:the client did not acknowledge in time");

    send_text(&mut ws, r#"42["ask",5000]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"422["question","?"]"#);
    send_text(&mut ws, "41").await;
    assert_eq!(h.observed("ack").await, "ack-error:the socket disconnected before acknowledging");
}

#[tokio::test]
async fn a_connection_that_joins_no_namespace_is_closed_after_connect_timeout() {
    let h = Harness::start().await;
    let (mut ws, _) = h.open().await;
    assert!(closed_by_server(&mut ws).await);
    eventually("session freed", || h.engine.session_count() == 0).await;
}

#[tokio::test]
async fn broadcasts_reach_each_socket_once_and_respect_except() {
    let h = Harness::start().await;
    let mut a = h.connect().await;
    let mut b = h.connect().await;
    let mut c = h.connect().await;
    send_text(&mut a, r#"421["join","r1","r2"]"#).await;
    assert_eq!(next_text(&mut a).await, r#"431[["r1","r2"]]"#);
    send_text(&mut b, r#"421["join","r1"]"#).await;
    assert_eq!(next_text(&mut b).await, r#"431[["r1"]]"#);

    send_text(&mut c, r#"42["to-rooms",["r1","r2"],[],"hi"]"#).await;
    send_text(&mut c, r#"42["everyone","end"]"#).await;
    for ws in [&mut a, &mut b] {
        assert_eq!(next_text(ws).await, r#"42["room-event","hi"]"#);
        assert_eq!(next_text(ws).await, r#"42["everyone","end"]"#, "exactly once");
    }
    assert_eq!(next_text(&mut c).await, r#"42["everyone","end"]"#, "not in the rooms: nothing");

    send_text(&mut c, r#"42["to-rooms",["r1"],["r2"],"not a"]"#).await;
    send_text(&mut c, r#"42["everyone","end"]"#).await;
    assert_eq!(next_text(&mut a).await, r#"42["everyone","end"]"#);
    assert_eq!(next_text(&mut b).await, r#"42["room-event","not a"]"#);

    send_text(&mut b, r#"42["leave","r1"]"#).await;
    send_text(&mut c, r#"42["to-rooms",["r1"],[],"after leave"]"#).await;
    send_text(&mut c, r#"42["everyone","end"]"#).await;
    assert_eq!(next_text(&mut a).await, r#"42["room-event","after leave"]"#);
    assert_eq!(next_text(&mut b).await, r#"42["everyone","end"]"#);
}

#[tokio::test]
async fn server_namespace_disconnect_and_disconnect_reasons() {
    let mut h = Harness::start().await;
    let mut ws = h.connect().await;
    send_text(&mut ws, r#"42["kick"]"#).await;
    assert_eq!(next_text(&mut ws).await, "41");
    assert_eq!(h.observed("disconnect").await, "disconnect:server namespace disconnect");

    let mut ws = h.connect().await;
    send_text(&mut ws, "41").await;
    assert_eq!(h.observed("disconnect").await, "disconnect:client namespace disconnect");

    drop(h.connect().await);
    assert_eq!(h.observed("disconnect").await, "disconnect:transport close");

    let mut ws = h.connect().await;
    send_text(&mut ws, "4{").await;
    assert_eq!(h.observed("disconnect").await, "disconnect:parse error");
    drop(ws);

    // Never answering pings: pingInterval 300 + pingTimeout 200.
    let _silent = h.connect().await;
    assert_eq!(h.observed("disconnect").await, "disconnect:ping timeout");
}

#[tokio::test]
async fn malformed_packets_close_the_connection() {
    let h = Harness::start().await;
    for bad in [
        "42",
        "42[]",
        "42{}",
        r#"42["connect"]"#,
        r#"42["disconnecting",1]"#,
        r#"42[1]"#,
        r#"4299999999999999999999999["message"]"#,
        r#"42["message""#,
        r#"41{}"#,
        "47",
        r#"45-["message"]"#,
        r#"45x-["message"]"#,
    ] {
        let mut ws = h.connect().await;
        send_text(&mut ws, bad).await;
        assert!(closed_by_server(&mut ws).await, "{bad:?} must close the connection");
    }
}

#[tokio::test]
async fn binary_sequences_are_bounded() {
    let config = SocketIoConfig {
        max_attachment_bytes: 100,
        binary_timeout: Duration::from_millis(300),
        ..tally::conformance::socketio_config()
    };
    let h = Harness::with(tally::conformance::engine_config(), config).await;
    let placeholders = |n: usize| (0..n).map(|i| Payload::placeholder(i).to_string()).collect::<Vec<_>>().join(",");

    let mut ws = h.connect().await;
    send_text(&mut ws, &format!(r#"4511-["message",{}]"#, placeholders(11))).await;
    assert!(closed_by_server(&mut ws).await, "more than 10 attachments");

    let mut ws = h.connect().await;
    send_text(&mut ws, &format!(r#"452-["message",{}]"#, placeholders(2))).await;
    send_binary(&mut ws, &[0; 60]).await;
    send_binary(&mut ws, &[0; 60]).await;
    assert!(closed_by_server(&mut ws).await, "attachments over the byte limit");

    let mut ws = h.connect().await;
    send_text(&mut ws, &format!(r#"451-["message",{}]"#, placeholders(1))).await;
    send_text(&mut ws, r#"42["message","mid-sequence"]"#).await;
    assert!(closed_by_server(&mut ws).await, "a text packet in the middle of a sequence");

    let mut ws = h.connect().await;
    send_binary(&mut ws, &[1, 2, 3]).await;
    assert!(closed_by_server(&mut ws).await, "a binary message nobody announced");

    let mut ws = h.connect().await;
    send_text(&mut ws, r#"451-["message",{"_placeholder":true,"num":1}]"#).await;
    send_binary(&mut ws, &[1]).await;
    assert!(closed_by_server(&mut ws).await, "a placeholder pointing past the attachments");

    let mut ws = h.connect().await;
    send_text(&mut ws, &format!(r#"452-["message",{}]"#, placeholders(2))).await;
    send_binary(&mut ws, &[1]).await;
    assert!(closed_by_server(&mut ws).await, "attachments that never complete");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_cut_loose() {
    let engine_config = EngineConfig { max_buffered_packets: 8, ..tally::conformance::engine_config() };
    let mut h = Harness::with(engine_config, tally::conformance::socketio_config()).await;
    let sid = open_polling(h.server.addr, "/socket.io/").await;
    let url = polling_url("/socket.io/", &sid);
    post(h.server.addr, &url, "40").await;
    // Never polling: the queue holds the CONNECT ack and `auth`, then the flood overflows it.
    post(h.server.addr, &url, r#"42["flood",50]"#).await;
    // The overflow fails the emit at once; the close follows from a task of its own, so no
    // disconnect handler runs inside the emitter's locks.
    assert_eq!(h.observed("").await, "flood-stopped:the client's outgoing buffer is full; the connection was closed");
    assert_eq!(h.observed("").await, "disconnect:transport error");
    assert_eq!(get(h.server.addr, &url).await.status, 400);
}

#[tokio::test]
async fn socket_io_over_polling() {
    let h = Harness::start().await;
    let sid = open_polling(h.server.addr, "/socket.io/").await;
    let url = polling_url("/socket.io/", &sid);
    post(h.server.addr, &url, "40").await;
    let reply = get(h.server.addr, &url).await;
    let packets: Vec<&str> = reply.body.split('\x1e').collect();
    assert_eq!(packets.len(), 2, "{:?}", reply.body);
    connect_ack_sid(packets[0], "40");
    assert_eq!(packets[1], r#"42["auth",{}]"#);
    post(
        h.server.addr,
        &url,
        "42[\"message\",\"over polling\"]\x1e451-[\"message\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID",
    )
    .await;
    let reply = get(h.server.addr, &url).await;
    assert_eq!(
        reply.body,
        "42[\"message-back\",\"over polling\"]\x1e451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID"
    );
}

#[tokio::test]
async fn nothing_is_left_behind_when_clients_go() {
    let h = Harness::start().await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut ws = h.connect().await;
        send_text(&mut ws, &format!(r#"421["join","shared","room-{i}"]"#)).await;
        next_text(&mut ws).await;
        clients.push(ws);
    }
    let main = h.io.of("/");
    assert_eq!((main.socket_count(), main.room_size("shared"), h.engine.session_count()), (20, 20, 20));
    // Half leave the namespace, half drop the connection.
    for (i, mut ws) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            send_text(&mut ws, "41").await;
            send_text(&mut ws, "1").await;
        }
    }
    eventually("sockets, rooms and sessions all freed", || {
        main.socket_count() == 0
            && main.room_size("shared") == 0
            && main.room_size("room-3") == 0
            && h.engine.session_count() == 0
    })
    .await;
}

/// The status of a fresh polling handshake (200, or 503 past the caps).
async fn polling_handshake(h: &Harness) -> Reply {
    get(h.server.addr, "/socket.io/?EIO=4&transport=polling").await
}

#[tokio::test]
async fn handshakes_in_waiting_are_capped_per_address_and_sessions_overall() {
    let engine = EngineConfig { max_pending_per_address: 3, max_sessions: 5, ..tally::conformance::engine_config() };
    let h = Harness::with(engine, tally::conformance::socketio_config()).await;
    // Three sessions that never get past the token check hold this address's places.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let (mut ws, _) = h.open().await;
        send_text(&mut ws, r#"40/guarded,{"pass":"no"}"#).await;
        assert!(next_text(&mut ws).await.starts_with("44/guarded,"));
        waiting.push(ws);
    }
    let refused = polling_handshake(&h).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(refused.body.contains("awaiting their handshake"), "{}", refused.body);
    let upgrade = ws_connect(h.server.addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(
        matches!(&upgrade, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
        "{:?}",
        upgrade.map(|_| ())
    );

    // One passes the check: its place is free again, for a client that joins at once.
    send_text(&mut waiting[0], r#"40/guarded,{"pass":"ok"}"#).await;
    assert!(next_text(&mut waiting[0]).await.starts_with("40/guarded,"));
    let (mut admitted, _) = h.open().await;
    send_text(&mut admitted, "40").await;
    assert!(next_text(&mut admitted).await.starts_with("40{"));
    // One goes away: its place is free too.
    drop(waiting.pop());
    eventually("the closed session's place is given back", || h.engine.session_count() == 3).await;
    let (_fourth, _) = h.open().await;
    let (_fifth, _) = h.open().await;
    // Five sessions in all: the box is full, whatever the address.
    let full = polling_handshake(&h).await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.body.contains("Too many sessions\""), "{}", full.body);
}
