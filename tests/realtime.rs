//! The application's real-time layer: JWT in the handshake, organization rooms, video
//! subscriptions and token expiry, checked with raw frames and with the stock client.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::node::NodeClients;
use common::*;
use serde_json::{Value, json};
use tally::auth::{Role, TokenKeys};
use tally::events::{org_room, video_room};
use tally::store::{Video, VideoStatus};

/// Starts the service with one video in each of two organizations: `v-a` in `org-a` and
/// `v-b` in `org-b`.
async fn app() -> TestApp {
    let app = TestApp::start().await;
    seed(&app);
    app
}

fn seed(app: &TestApp) {
    for (id, org) in [("v-a", "org-a"), ("v-b", "org-b")] {
        let video = Video {
            id: id.into(),
            org_id: org.into(),
            title: id.into(),
            filename: format!("{id}.mp4"),
            ext: "mp4".into(),
            content_type: "video/mp4".into(),
            size: 1,
            status: VideoStatus::Uploaded,
            uploaded_by: "u".into(),
            created_at: 0,
            updated_at: 0,
            metadata: None,
            sensitivity: None,
            has_thumbnail: false,
            has_previews: false,
            playback: None,
            progress: None,
            error: None,
        };
        app.app.store.insert_video(&video).unwrap();
    }
}

async fn ws_connect_with(app: &TestApp, connect: &str) -> (Ws, String) {
    let mut ws = ws_connect(app.addr, "/socket.io/?EIO=4&transport=websocket").await.unwrap();
    next_text(&mut ws).await;
    send_text(&mut ws, connect).await;
    let reply = next_text(&mut ws).await;
    (ws, reply)
}

async fn authed(app: &TestApp, user: &str, org: &str) -> Ws {
    let (ws, reply) = ws_connect_with(app, &format!(r#"40{{"token":"{}"}}"#, app.token(user, org))).await;
    assert!(reply.starts_with(r#"40{"sid":"#), "{reply}");
    ws
}

#[tokio::test]
async fn the_handshake_requires_a_valid_token() {
    let app = app().await;
    for connect in ["40", "40{}", r#"40{"token":""}"#, r#"40{"token":42}"#] {
        let (_, reply) = ws_connect_with(&app, connect).await;
        assert_eq!(reply, r#"44{"message":"Authentication required"}"#, "{connect}");
    }
    let foreign =
        TokenKeys::from_secret(&[1; 64]).unwrap().issue("u", "org-a", Role::Admin, Duration::from_secs(60)).unwrap();
    let expired = app.app.keys.issue("u", "org-a", Role::Admin, Duration::ZERO).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims =
        format!(r#"{{"sub":"u","org":"org-a","role":"admin","iat":0,"exp":{}}}"#, tally::auth::unix_now() + 600);
    let alg_none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), b64.encode(&claims));
    let hs512 = {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
        let secret = std::fs::read(app.data_dir.path().join("jwt-secret")).unwrap();
        jsonwebtoken::encode(
            &header,
            &serde_json::from_str::<Value>(&claims).unwrap(),
            &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for token in [foreign.as_str(), expired.as_str(), alg_none.as_str(), hs512.as_str(), "not.a.jwt"] {
        let (_, reply) = ws_connect_with(&app, &format!(r#"40{{"token":"{token}"}}"#)).await;
        assert_eq!(reply, r#"44{"message":"Invalid token"}"#, "{token}");
    }
}

#[tokio::test]
async fn sockets_join_their_organization_room_and_only_see_its_events() {
    let app = app().await;
    let mut a = authed(&app, "alice", "org-a").await;
    let mut b = authed(&app, "bob", "org-b").await;
    let main = app.app.io.of("/");
    assert_eq!((main.room_size(&org_room("org-a")), main.room_size(&org_room("org-b"))), (1, 1));
    main.to(org_room("org-a")).emit("video:progress", json!({"videoId": "v-a", "progress": 50}));
    main.emit("marker", json!([]));
    assert_eq!(without_offset(&next_text(&mut a).await), r#"42["video:progress",{"videoId":"v-a","progress":50}]"#);
    assert_eq!(without_offset(&next_text(&mut a).await), r#"42["marker"]"#);
    assert_eq!(without_offset(&next_text(&mut b).await), r#"42["marker"]"#, "org-b never sees org-a's event");
}

#[tokio::test]
async fn video_subscriptions_are_checked_against_the_organization() {
    let app = app().await;
    let mut a = authed(&app, "alice", "org-a").await;
    send_text(&mut a, r#"421["video:subscribe",{"videoId":"v-a"}]"#).await;
    assert_eq!(next_text(&mut a).await, r#"431[{"ok":true}]"#);
    send_text(&mut a, r#"422["video:subscribe",{"videoId":"v-b"}]"#).await;
    assert_eq!(next_text(&mut a).await, r#"432[{"error":"not found"}]"#, "another organization's video");
    send_text(&mut a, r#"423["video:subscribe","nope"]"#).await;
    assert_eq!(next_text(&mut a).await, r#"433[{"error":"not found"}]"#, "looks like a missing one");
    send_text(&mut a, r#"424["video:subscribe",{}]"#).await;
    assert_eq!(next_text(&mut a).await, r#"434[{"error":"videoId required"}]"#);
    let main = app.app.io.of("/");
    assert_eq!((main.room_size(&video_room("v-a")), main.room_size(&video_room("v-b"))), (1, 0));
    send_text(&mut a, r#"425["video:unsubscribe",{"videoId":"v-a"}]"#).await;
    assert_eq!(next_text(&mut a).await, r#"435[{"ok":true}]"#);
    assert_eq!(main.room_size(&video_room("v-a")), 0);
}

#[tokio::test]
async fn an_expired_token_closes_the_transport_not_the_namespace() {
    let app = app().await;
    app.account("alice", "org-a", Role::Viewer);
    let token = app.app.keys.issue("alice", "org-a", Role::Viewer, Duration::from_secs(1)).unwrap();
    let (mut ws, reply) = ws_connect_with(&app, &format!(r#"40{{"token":"{token}"}}"#)).await;
    assert!(reply.starts_with("40{"));
    // No `41` first: the client must see a transport close and reconnect with a fresh token.
    let closed = async {
        loop {
            match next_message(&mut ws).await {
                None => return,
                Some(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                    assert_ne!(t.as_str(), "41")
                }
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(4), closed).await.expect("closed when the token expired");
}

/// `(sid, pid)` from a CONNECT ack of the app namespace, which has recovery on.
fn recoverable_ack(reply: &str) -> (String, String) {
    let ack: Value = serde_json::from_str(reply.strip_prefix("40").unwrap_or_else(|| panic!("{reply}"))).unwrap();
    (ack["sid"].as_str().unwrap().to_owned(), ack["pid"].as_str().expect("pid in the CONNECT ack").to_owned())
}

#[tokio::test]
async fn a_dropped_socket_is_recovered_only_with_a_valid_token_of_the_same_user() {
    let app = app().await;
    let connect =
        |token: &str, pid: &str, offset: &str| format!(r#"40{{"token":"{token}","pid":"{pid}","offset":"{offset}"}}"#);
    let (mut ws, reply) = ws_connect_with(&app, &format!(r#"40{{"token":"{}"}}"#, app.token("alice", "org-a"))).await;
    let (sid, pid) = recoverable_ack(&reply);
    // Events to the organization carry their offset as the last argument.
    app.app.io.of("/").to(org_room("org-a")).emit("news", json!(["one"]));
    let event: Value = serde_json::from_str(next_text(&mut ws).await.strip_prefix("42").unwrap()).unwrap();
    let offset = event[2].as_str().expect("offset").to_owned();
    drop(ws);
    eventually("the socket is dropped", || app.app.io.of("/").socket(&sid).is_none()).await;
    app.app.io.of("/").to(org_room("org-a")).emit("news", json!(["two"]));

    // The token is checked again: a bad one is refused and the socket stays recoverable.
    let (_, reply) = ws_connect_with(&app, &connect("forged", &pid, &offset)).await;
    assert!(reply.starts_with("44{"), "{reply}");
    // Another user holding the private id does not get the socket, nor what it missed.
    let (mut mallory, reply) = ws_connect_with(&app, &connect(&app.token("mallory", "org-b"), &pid, &offset)).await;
    assert_ne!(recoverable_ack(&reply).0, sid);
    send_text(&mut mallory, r#"421["video:subscribe","v-b"]"#).await;
    assert_eq!(next_text(&mut mallory).await, r#"431[{"ok":true}]"#, "nothing replayed first");
    // The claim was used up by mallory's attempt: alice starts afresh, without a gap.
    let (_, reply) = ws_connect_with(&app, &connect(&app.token("alice", "org-a"), &pid, &offset)).await;
    assert_ne!(recoverable_ack(&reply).0, sid);
}

#[tokio::test]
async fn a_recovered_socket_gets_its_rooms_and_missed_events() {
    let app = app().await;
    let (mut ws, reply) = ws_connect_with(&app, &format!(r#"40{{"token":"{}"}}"#, app.token("alice", "org-a"))).await;
    let (sid, pid) = recoverable_ack(&reply);
    send_text(&mut ws, r#"421["video:subscribe","v-a"]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"431[{"ok":true}]"#);
    drop(ws);
    let io = app.app.io.of("/");
    eventually("the socket is dropped", || io.socket(&sid).is_none()).await;
    io.to(video_room("v-a")).emit("missed", json!(["video room"]));
    io.to(org_room("org-b")).emit("missed", json!(["another organization"]));
    io.to(org_room("org-a")).emit("missed", json!(["organization room"]));

    let token = app.token("alice", "org-a");
    let (mut ws, reply) = ws_connect_with(&app, &format!(r#"40{{"token":"{token}","pid":"{pid}"}}"#)).await;
    assert_eq!(recoverable_ack(&reply), (sid.clone(), pid));
    let first = next_text(&mut ws).await;
    let second = next_text(&mut ws).await;
    assert!(first.starts_with(r#"42["missed","video room","#), "{first}");
    assert!(second.starts_with(r#"42["missed","organization room","#), "{second}");
    assert_eq!(io.room_size(&video_room("v-a")), 1, "the subscription came back");
}

#[tokio::test]
async fn recovery_follows_the_role_the_socket_last_had_not_the_token() {
    let app = app().await;
    app.account("boss", "org-a", Role::Admin);
    let io = app.app.io.of("/");
    let store = &app.app.store;
    let in_device_room =
        |sid: &str| io.to(tally::events::DEVICE_ROOM).sockets().iter().any(|s| s.id().to_string() == sid);
    // An editor's token, promoted while connected: the socket joins the device room live.
    let token = app.token("carol", "org-a");
    let (ws, reply) = ws_connect_with(&app, &format!(r#"40{{"token":"{token}"}}"#)).await;
    let (sid, pid) = recoverable_ack(&reply);
    store.set_role("org-a", "boss", "carol", Role::Admin).unwrap();
    eventually("the promoted socket joins the device room", || in_device_room(&sid)).await;
    // Dropped, then demoted while away: nothing can move a socket that is not connected.
    drop(ws);
    eventually("the socket is dropped", || io.socket(&sid).is_none()).await;
    store.set_role("org-a", "boss", "carol", Role::Editor).unwrap();
    tally::events::announce_device(&app.app.io, json!({"led": "for admins only"}));
    // The editor's token matches the role it was issued with, not the one the socket had.
    let (mut ws, reply) = ws_connect_with(&app, &format!(r#"40{{"token":"{token}","pid":"{pid}"}}"#)).await;
    let (fresh, _) = recoverable_ack(&reply);
    assert_ne!(fresh, sid, "not recovered: it would replay the device room");
    send_text(&mut ws, r#"421["video:subscribe","v-a"]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"431[{"ok":true}]"#, "nothing replayed first");
    assert!(!in_device_room(&fresh));

    // A role unchanged since the drop recovers, whatever the token says.
    store.set_role("org-a", "boss", "carol", Role::Admin).unwrap();
    eventually("promoted again", || in_device_room(&fresh)).await;
    let (_, pid) = recoverable_ack(&reply);
    drop(ws);
    eventually("dropped again", || io.socket(&fresh).is_none()).await;
    let (_, reply) = ws_connect_with(&app, &format!(r#"40{{"token":"{token}","pid":"{pid}"}}"#)).await;
    assert_eq!(recoverable_ack(&reply).0, fresh, "recovered");
    assert!(in_device_room(&fresh));
}

// ---- the stock socket.io-client ------------------------------------------------------

#[tokio::test]
async fn stock_client_connects_and_upgrades_to_websocket() {
    let app = app().await;
    let mut node = NodeClients::spawn().await;
    node.connect("c", &app.url(), Some(&app.token("alice", "org-a")), json!({})).await;
    node.expect_ev("c", "connect").await;
    // The default transports open on polling; the upgrade event proves the switch happened.
    assert_eq!(node.expect_ev("c", "upgrade").await["transport"], "websocket");
    node.send(json!({"op": "transport", "id": "c", "ref": 1})).await;
    assert_eq!(node.expect_ev("c", "transport").await["transport"], "websocket");
    // Works after the upgrade, both ways.
    node.send(json!({"op": "emit", "id": "c", "ref": 2, "event": "video:subscribe", "args": [{"videoId": "v-a"}], "ack": true})).await;
    assert_eq!(node.expect_ev("c", "ack").await["args"], json!([{"ok": true}]));
    app.app.io.of("/").to(org_room("org-a")).emit("hello", json!(["after upgrade"]));
    assert_eq!(node.expect_event("c", "hello").await["args"], json!(["after upgrade"]));
}

#[tokio::test]
async fn stock_client_over_websocket_only_and_polling_only() {
    let app = app().await;
    let mut node = NodeClients::spawn().await;
    node.connect("ws", &app.url(), Some(&app.token("u1", "org-a")), json!({"transports": ["websocket"]})).await;
    node.connect("poll", &app.url(), Some(&app.token("u2", "org-a")), json!({"transports": ["polling"]})).await;
    assert_eq!(node.expect_ev("ws", "connect").await["transport"], "websocket");
    assert_eq!(node.expect_ev("poll", "connect").await["transport"], "polling");
    app.app.io.of("/").to(org_room("org-a")).emit("video:processed", json!({"videoId": "v-a", "status": "done"}));
    for id in ["ws", "poll"] {
        assert_eq!(
            node.expect_event(id, "video:processed").await["args"],
            json!([{"videoId": "v-a", "status": "done"}])
        );
        node.send(json!({"op": "emit", "id": id, "ref": 1, "event": "video:subscribe", "args": ["v-b"], "ack": true}))
            .await;
        assert_eq!(node.expect_ev(id, "ack").await["args"], json!([{"error": "not found"}]));
    }
}

#[tokio::test]
async fn stock_client_acks_and_binary_both_ways() {
    let app = app().await;
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    // Test-only events: the server asks the client, and echoes binary back.
    let main = app.app.io.of("/");
    main.on("test:ask-me", move |socket, _, _| {
        let question = socket.emit_with_ack("test:question", json!(["what", {"n": 7}]), Duration::from_secs(5));
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(question.await.map(|p| p.args));
        });
    });
    main.on("test:echo", |socket, payload, ack| {
        let _ = socket.emit("test:echoed", payload.clone());
        if let Some(ack) = ack {
            let _ = ack.send(payload);
        }
    });
    let mut node = NodeClients::spawn().await;
    node.connect("c", &app.url(), Some(&app.token("alice", "org-a")), json!({"transports": ["websocket"]})).await;
    node.expect_ev("c", "connect").await;

    node.send(json!({"op": "emit", "id": "c", "ref": 1, "event": "test:ask-me", "args": []})).await;
    assert_eq!(node.expect_event("c", "test:question").await["args"], json!(["what", {"n": 7}]));
    let answer = tokio::time::timeout(Duration::from_secs(5), answers.recv()).await.unwrap().unwrap();
    assert_eq!(answer.unwrap(), vec![json!("what"), json!({"n": 7})], "the client's ack reached the server");

    let blob = json!({"$binary": base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2, 254, 255])});
    node.send(json!({"op": "emit", "id": "c", "ref": 2, "event": "test:echo", "args": [{"name": "clip", "data": blob}, blob], "ack": true})).await;
    let echoed = node.expect_event("c", "test:echoed").await;
    assert_eq!(echoed["args"], json!([{"name": "clip", "data": blob}, blob]));
    let ack = node.expect_ev("c", "ack").await;
    assert_eq!(ack["args"], json!([{"name": "clip", "data": blob}]), "emitWithAck resolves with the first argument");
}

#[tokio::test]
async fn stock_client_sees_connect_error_messages() {
    let app = app().await;
    let mut node = NodeClients::spawn().await;
    node.connect("none", &app.url(), None, json!({})).await;
    node.connect("bad", &app.url(), Some("forged.token.value"), json!({})).await;
    assert_eq!(node.expect_ev("none", "connect_error").await["message"], "Authentication required");
    assert_eq!(node.expect_ev("bad", "connect_error").await["message"], "Invalid token");
}

#[tokio::test]
async fn stock_clients_of_another_organization_see_nothing() {
    let app = app().await;
    let mut node = NodeClients::spawn().await;
    node.connect("a", &app.url(), Some(&app.token("alice", "org-a")), json!({})).await;
    node.connect("b", &app.url(), Some(&app.token("bob", "org-b")), json!({})).await;
    node.expect_ev("a", "connect").await;
    node.expect_ev("b", "connect").await;
    node.send(json!({"op": "emit", "id": "b", "ref": 1, "event": "video:subscribe", "args": [{"videoId": "v-a"}], "ack": true})).await;
    assert_eq!(node.expect_ev("b", "ack").await["args"], json!([{"error": "not found"}]));
    let main = app.app.io.of("/");
    main.to(org_room("org-a")).emit("video:progress", json!({"videoId": "v-a", "progress": 10}));
    main.to(video_room("v-a")).emit("video:progress", json!({"videoId": "v-a", "progress": 20}));
    main.emit("marker", json!([]));
    assert_eq!(node.expect_event("a", "video:progress").await["args"][0]["progress"], 10);
    node.expect_event("a", "marker").await;
    node.expect_event("b", "marker").await;
    let leaked: Vec<_> =
        node.drain().into_iter().filter(|v| v["id"] == "b" && v["event"] == "video:progress").collect();
    assert!(leaked.is_empty(), "org-b received {leaked:?}");
}

#[tokio::test]
async fn stock_client_reconnects_after_the_server_restarts() {
    let app = app().await;
    let (data_dir, port, url) = (app.data_dir.clone(), app.addr.port(), app.url());
    let mut node = NodeClients::spawn().await;
    node.connect("c", &url, Some(&app.token("alice", "org-a")), json!({})).await;
    let first = node.expect_ev("c", "connect").await;
    node.expect_ev("c", "upgrade").await;
    app.stop().await;
    assert_eq!(node.expect_ev("c", "disconnect").await["reason"], "transport close");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = TestApp::start_with(data_dir, port).await;
    let second = node.expect_ev("c", "connect").await;
    assert_ne!(first["sid"], second["sid"], "a new session after the restart");
    app.app.io.of("/").to(org_room("org-a")).emit("back", json!([true]));
    node.expect_event("c", "back").await;
}

/// Sockets connecting while their account is deleted or demoted: once the change is in,
/// none of them is left connected (deleted) or in the device room (demoted), whichever
/// order the handshakes and the change took.
#[tokio::test]
async fn account_changes_racing_handshakes_leave_no_socket_behind() {
    let app = app().await;
    let main = app.app.io.of("/");
    app.account("boss", "org-a", Role::Admin);
    for round in 0..20 {
        let user = format!("racer-{round}");
        app.account(&user, "org-a", Role::Admin);
        let token = app.app.keys.issue(&user, "org-a", Role::Admin, Duration::from_secs(600)).unwrap();
        let connect = format!(r#"40{{"token":"{token}"}}"#);
        let connects = (0..10).map(|_| ws_connect_with(&app, &connect));
        let store = app.app.store.clone();
        let (user_id, delete) = (user.clone(), round % 2 == 0);
        let change = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(round % 5));
            if delete {
                store.delete_user("org-a", "boss", &user_id).map(drop)
            } else {
                store.set_role("org-a", "boss", &user_id, Role::Viewer).map(drop)
            }
        });
        let sockets = futures_util::future::join_all(connects).await;
        change.await.unwrap().unwrap();
        let room = tally::events::user_room(&user);
        if delete {
            eventually("every socket of the deleted account is gone", || main.room_size(&room) == 0).await;
        } else {
            let ids: Vec<String> = sockets
                .iter()
                .filter_map(|(_, reply)| reply.strip_prefix("40"))
                .map(|ack| serde_json::from_str::<Value>(ack).unwrap()["sid"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(main.room_size(&room), ids.len(), "round {round}: the demoted user stays connected");
            eventually("no socket of the demoted account is in the device room", || {
                main.to(tally::events::DEVICE_ROOM).sockets().iter().all(|s| !ids.contains(&s.id().to_string()))
            })
            .await;
        }
    }
}
