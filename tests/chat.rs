//! Organization chat through the stock socket.io-client: acknowledged sends, delivery to the
//! rest of the organization only, history that survives a restart.

mod common;

use common::TestApp;
use common::node::NodeClients;
use serde_json::json;
use std::time::Duration;
use tally::auth::Role;
use tally::store::NewUser;

/// Ann and Ben in Acme, Eve in Globex; returns their tokens.
fn people(app: &TestApp) -> [String; 3] {
    let store = &app.app.store;
    let acme = store.org_by_name("Acme").unwrap().unwrap_or_else(|| store.create_org("Acme").unwrap());
    let globex = store.org_by_name("Globex").unwrap().unwrap_or_else(|| store.create_org("Globex").unwrap());
    let token = |org: &tally::store::Organization, email: &str| {
        let user = match store.user_by_email(email).unwrap() {
            Some(user) => user,
            None => store
                .create_user(NewUser { org_id: &org.id, email, role: Role::Viewer, password_hash: String::new() })
                .unwrap(),
        };
        app.app.keys.issue(&user.id, &org.id, user.role, Duration::from_secs(600)).unwrap()
    };
    [token(&acme, "ann@acme.test"), token(&acme, "ben@acme.test"), token(&globex, "eve@globex.test")]
}

#[tokio::test]
async fn chat_messages_reach_the_organization_and_persist() {
    let app = TestApp::start().await;
    let [ann, ben, eve] = people(&app);
    let mut node = NodeClients::spawn().await;
    for (id, token) in [("ann", &ann), ("ben", &ben), ("eve", &eve)] {
        node.connect(id, &app.url(), Some(token), json!({"transports": ["websocket"]})).await;
        node.expect_ev(id, "connect").await;
    }
    node.send(json!({"op": "emit", "id": "ann", "ref": 1, "event": "chat:message", "args": [{"text": "  hello team  "}], "ack": true})).await;
    let ack = node.expect_ev("ann", "ack").await;
    let message = ack["args"][0]["message"].clone();
    assert_eq!((message["text"].as_str(), message["author"].as_str()), (Some("hello team"), Some("ann@acme.test")));
    assert!(message["id"].is_string() && message["createdAt"].is_u64());
    assert_eq!(node.expect_event("ben", "chat:message").await["args"], json!([message]));

    for bad in [json!({"text": ""}), json!({"text": "x".repeat(2001)}), json!(42)] {
        node.send(json!({"op": "emit", "id": "ben", "ref": 2, "event": "chat:message", "args": [bad], "ack": true}))
            .await;
        assert!(node.expect_ev("ben", "ack").await["args"][0]["error"].is_string());
    }
    node.send(json!({"op": "emit", "id": "ben", "ref": 3, "event": "chat:message", "args": ["second"], "ack": true}))
        .await;
    node.expect_ev("ben", "ack").await;
    node.expect_event("ann", "chat:message").await;

    node.send(json!({"op": "emit", "id": "eve", "ref": 4, "event": "chat:history", "args": [{}], "ack": true})).await;
    assert_eq!(node.expect_ev("eve", "ack").await["args"][0]["messages"], json!([]), "globex sees no acme history");
    let leaked: Vec<_> =
        node.drain().into_iter().filter(|v| v["id"] == "eve" && v["event"] == "chat:message").collect();
    assert!(leaked.is_empty(), "{leaked:?}");

    // History survives a restart, oldest first, capped and pageable.
    let (data_dir, port) = (app.data_dir.clone(), app.addr.port());
    app.stop().await;
    let app = TestApp::start_with(data_dir, port).await;
    let [ann, ..] = people(&app);
    node.connect("ann2", &app.url(), Some(&ann), json!({"transports": ["websocket"]})).await;
    node.expect_ev("ann2", "connect").await;
    node.send(json!({"op": "emit", "id": "ann2", "ref": 5, "event": "chat:history", "args": [{}], "ack": true})).await;
    let history = node.expect_ev("ann2", "ack").await["args"][0]["messages"].clone();
    let texts: Vec<_> = history.as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, ["hello team", "second"]);
    let before = history[1]["id"].as_str().unwrap();
    node.send(json!({"op": "emit", "id": "ann2", "ref": 6, "event": "chat:history", "args": [{"before": before, "limit": 5}], "ack": true})).await;
    let older = node.expect_ev("ann2", "ack").await["args"][0]["messages"].clone();
    assert_eq!(older.as_array().unwrap().len(), 1);
    assert_eq!(older[0]["text"], "hello team");
}
