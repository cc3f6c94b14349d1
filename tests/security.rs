//! Accounts and sessions against the real `tally serve`: the stored account is what counts on
//! live sockets and signed URLs, nothing changes state cross-site, refresh survives two tabs
//! but not a thief, the last-admin rule holds under races, and login limits can be neither
//! sidestepped nor turned against a user. The cross-site page itself runs in Chromium
//! (`cross_site_pages_in_chromium`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::node::chromium_report;
use common::process::{PASSWORD, Tally, add_user};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const ADMIN: &str = "admin@acme.test";
const SECOND_ADMIN: &str = "second@acme.test";
const EDITOR: &str = "editor@acme.test";
const OUTSIDER: &str = "admin@globex.test";

async fn box_with_users(env: &[(&str, &str)]) -> (tempfile::TempDir, Tally) {
    let dir = tempfile::tempdir().unwrap();
    for (org, email, role) in [
        ("Acme", ADMIN, "admin"),
        ("Acme", SECOND_ADMIN, "admin"),
        ("Acme", EDITOR, "editor"),
        ("Globex", OUTSIDER, "admin"),
    ] {
        add_user(dir.path(), org, email, role).await;
    }
    let tally = Tally::start(dir.path(), env).await;
    (dir, tally)
}

/// The id of the user with `email`, as the organization's admin sees it.
async fn user_id(tally: &Tally, admin: &str, email: &str) -> String {
    let users = tally.call(Method::GET, "/api/users", admin, None).await.json();
    let user = users["items"].as_array().unwrap().iter().find(|u| u["email"] == email).cloned();
    user.unwrap_or_else(|| panic!("{email} is not listed: {users}"))["id"].as_str().unwrap().to_owned()
}

/// The next frame that is a Socket.IO packet other than an event `42` (a DISCONNECT `41`,
/// an ack), skipping events; `None` when the connection closes.
async fn next_non_event(ws: &mut Ws) -> Option<String> {
    loop {
        match next_message(ws).await? {
            tokio_tungstenite::tungstenite::Message::Text(text) if text.as_str() == "2" => {
                use futures_util::SinkExt;
                let _ = ws.send(tokio_tungstenite::tungstenite::Message::text("3")).await;
            }
            tokio_tungstenite::tungstenite::Message::Text(text) if !text.as_str().starts_with("42") => {
                return Some(text.as_str().to_owned());
            }
            _ => {}
        }
    }
}

/// The CONNECT answer a fresh socket gets with `token`.
async fn connect_reply(tally: &Tally, token: &str) -> String {
    let mut ws = ws_connect(tally.addr, "/socket.io/?EIO=4&transport=websocket").await.unwrap();
    next_text(&mut ws).await;
    send_text(&mut ws, &format!(r#"40{{"token":"{token}"}}"#)).await;
    next_text(&mut ws).await
}

/// The next `device:status` within `within`, skipping other events and answering pings.
async fn device_status_within(ws: &mut Ws, within: Duration) -> Option<Value> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(within, async {
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else { continue };
            if text.as_str() == "2" {
                let _ = ws.send(Message::text("3")).await;
            } else if let Some(event) = text.as_str().strip_prefix("42") {
                let event: Value = serde_json::from_str(event).unwrap();
                if event[0] == "device:status" {
                    return Some(event[1].clone());
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn a_deleted_user_is_disconnected_at_once_and_their_tokens_and_urls_stop_working() {
    let (_dir, tally) = box_with_users(&[]).await;
    let admin = tally.token(ADMIN).await;
    let editor = tally.token(EDITOR).await;
    let uploaded = tally.upload(&editor, Some("Clip"), "clip.mp4", b"not much of a video").await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let video = uploaded.json();
    let stream_url = video["streamUrl"].as_str().unwrap().to_owned();
    assert_eq!(get(tally.addr, &stream_url).await.status, 200, "the editor's signed URL plays");
    let mut socket = tally.socket(&editor).await;
    let mut second_tab = tally.socket(&editor).await;

    let id = user_id(&tally, &admin, EDITOR).await;
    assert_eq!(tally.call(Method::DELETE, &format!("/api/users/{id}"), &admin, None).await.status, 204);
    for ws in [&mut socket, &mut second_tab] {
        let frame = tokio::time::timeout(Duration::from_secs(5), next_non_event(ws)).await.expect("told within 5 s");
        assert_eq!(frame.as_deref(), Some("41"), "the server disconnects the namespace (no reconnection)");
    }
    assert_eq!(connect_reply(&tally, &editor).await, r#"44{"message":"Invalid token"}"#, "no new socket");
    assert_eq!(tally.call(Method::GET, "/api/me", &editor, None).await.status, 401);
    let stream = get(tally.addr, &stream_url).await;
    assert_eq!(stream.status, 401, "a URL signed for a deleted account serves nothing: {}", stream.body);
    // The organization's other members still get the video with URLs of their own.
    let listed = tally.call(Method::GET, &format!("/api/videos/{}", video["id"].as_str().unwrap()), &admin, None).await;
    assert_eq!(get(tally.addr, listed.json()["streamUrl"].as_str().unwrap()).await.status, 200);
}

#[tokio::test]
async fn a_demoted_admin_leaves_the_device_room_live_and_a_promoted_one_joins_it() {
    let (_dir, tally) = box_with_users(&[]).await;
    let admin = tally.token(ADMIN).await;
    let second = tally.token(SECOND_ADMIN).await;
    let mut admin_socket = tally.socket(&admin).await;
    let mut second_socket = tally.socket(&second).await;
    // Whatever the box announced before the change is not a leak.
    while device_status_within(&mut second_socket, Duration::from_millis(300)).await.is_some() {}
    let id = user_id(&tally, &admin, SECOND_ADMIN).await;
    let demote = tally.call(Method::PATCH, &format!("/api/users/{id}"), &admin, Some(json!({"role": "editor"}))).await;
    assert_eq!(demote.status, 200, "{}", demote.body);
    // Applied asynchronously; a generous pause before the box announces its state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tally.call(Method::POST, "/api/device/identify", &admin, None).await.status, 202);
    assert!(device_status_within(&mut admin_socket, Duration::from_secs(5)).await.is_some());
    let leaked = device_status_within(&mut second_socket, Duration::from_millis(1500)).await;
    assert!(leaked.is_none(), "a demoted admin's open socket gets no device:status: {leaked:?}");
    // The token still says admin; the store does not.
    assert_eq!(tally.call(Method::GET, "/api/device", &second, None).await.status, 403);

    let promote = tally.call(Method::PATCH, &format!("/api/users/{id}"), &admin, Some(json!({"role": "admin"}))).await;
    assert_eq!(promote.status, 200);
    // The next change the box shows is the end of the identify blink (30 s after it began).
    let pushed = device_status_within(&mut second_socket, Duration::from_secs(40)).await;
    assert!(
        pushed.is_some_and(|s| s["led"]["state"] != "identify"),
        "promoted on a live socket: device:status arrives"
    );
}

/// The refresh cookie's value in a response, if it sets one.
fn set_refresh_cookie(reply: &Reply) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("tally_refresh="))
        .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
}

async fn refresh_with(tally: &Tally, cookie: &str) -> Reply {
    request(tally.addr, Method::POST, "/api/auth/refresh", b"", &[("cookie", &format!("tally_refresh={cookie}"))]).await
}

#[tokio::test]
async fn concurrent_refreshes_share_one_successor_and_a_late_replay_still_revokes() {
    let (_dir, tally) = box_with_users(&[("TALLY_REFRESH_GRACE_SECS", "2")]).await;
    let login = tally.login(EDITOR, PASSWORD).await;
    let first = set_refresh_cookie(&login).unwrap();
    // Eight tabs (or retries) at once with the same cookie.
    let replies = futures_util::future::join_all((0..8).map(|_| refresh_with(&tally, &first))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200; 8], "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
    let successors: std::collections::BTreeSet<_> = replies.iter().map(|r| set_refresh_cookie(r).unwrap()).collect();
    assert_eq!(successors.len(), 1, "every tab got the same successor");
    let successor = successors.into_iter().next().unwrap();
    let next = refresh_with(&tally, &successor).await;
    assert_eq!(next.status, 200, "the successor works: {}", next.body);
    let newest = set_refresh_cookie(&next).unwrap();

    // After the window the first token is a stolen copy: the whole session ends.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(refresh_with(&tally, &first).await.status, 401);
    assert_eq!(refresh_with(&tally, &newest).await.status, 401, "the family is revoked");
}

#[tokio::test]
async fn fifty_rounds_of_mutual_demotion_or_deletion_always_leave_an_admin() {
    let lenient =
        [("TALLY_LOGIN_ATTEMPTS_PER_MINUTE", "1000"), ("TALLY_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE", "1000")];
    let (_dir, tally) = box_with_users(&lenient).await;
    let emails = [ADMIN, SECOND_ADMIN];
    let mut tokens = [tally.token(ADMIN).await, tally.token(SECOND_ADMIN).await];
    let mut ids = [user_id(&tally, &tokens[0], ADMIN).await, user_id(&tally, &tokens[0], SECOND_ADMIN).await];
    for round in 0..50 {
        // Each admin demotes (or, every third round, deletes) the other at the same moment.
        let delete = round % 3 == 2;
        let change = |by: usize| {
            let (path, token) = (format!("/api/users/{}", ids[1 - by]), tokens[by].clone());
            let (method, body) =
                if delete { (Method::DELETE, None) } else { (Method::PATCH, Some(json!({"role": "viewer"}))) };
            let tally = &tally;
            async move { tally.call(method, &path, &token, body).await }
        };
        let (x, y) = tokio::join!(change(0), change(1));
        let won: Vec<usize> = [&x, &y].iter().enumerate().filter(|(_, r)| r.status < 300).map(|(i, _)| i).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one wins ({} {}, {} {})", x.status, x.body, y.status, y.body);
        let (winner, loser) = (won[0], 1 - won[0]);
        let lost = if loser == 0 { &x } else { &y };
        // 409: the last admin; 403: demoted first; 401: deleted first.
        assert!([401, 403, 409].contains(&lost.status), "round {round}: {} {}", lost.status, lost.body);
        let users = tally.call(Method::GET, "/api/users", &tokens[winner], None).await.json();
        let admins: Vec<&Value> = users["items"].as_array().unwrap().iter().filter(|u| u["role"] == "admin").collect();
        assert_eq!(admins.len(), 1, "round {round}: {users}");
        assert_eq!(admins[0]["id"], ids[winner].as_str(), "round {round}");
        // Back to two admins for the next round.
        if delete {
            let body = json!({"email": emails[loser], "password": PASSWORD, "role": "admin"});
            let made = tally.call(Method::POST, "/api/users", &tokens[winner], Some(body)).await;
            assert_eq!(made.status, 201, "{}", made.body);
            ids[loser] = made.json()["id"].as_str().unwrap().to_owned();
            tokens[loser] = tally.token(emails[loser]).await;
        } else {
            let path = format!("/api/users/{}", ids[loser]);
            let back = tally.call(Method::PATCH, &path, &tokens[winner], Some(json!({"role": "admin"}))).await;
            assert_eq!(back.status, 200, "{}", back.body);
        }
    }
}

/// A login from `from` (a loopback address of its own).
async fn login_from(tally: &Tally, from: [u8; 4], email: &str, password: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let stream = socket.connect(tally.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let body = json!({"email": email, "password": password}).to_string();
    let request = hyper::Request::post("/api/auth/login")
        .header("host", tally.addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn login_limits_key_accounts_as_the_lookup_does_and_cannot_lock_the_owner_out() {
    // Three attempts a minute per (account, address): one more every 20 s, longer than this.
    let (_dir, tally) = box_with_users(&[("TALLY_LOGIN_ATTEMPTS_PER_MINUTE", "3")]).await;
    let stranger = [127, 0, 0, 1];
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(login_from(&tally, stranger, EDITOR, "wrong password").await);
    }
    // Spelling variants are the one account the lookup finds.
    for variant in [" editor@acme.test", "EDITOR@acme.test\t", "Editor@Acme.Test ", EDITOR] {
        statuses.push(login_from(&tally, stranger, variant, PASSWORD).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429], "whitespace and case variants hit the same limit");
    // The owner, from their own address, is not locked out by the stranger.
    assert_eq!(login_from(&tally, [127, 0, 0, 2], EDITOR, PASSWORD).await, 200);
    // Nor is anyone else from the stranger's address (its own limit is 30).
    assert_eq!(login_from(&tally, stranger, ADMIN, PASSWORD).await, 200);
}

#[tokio::test]
async fn logins_named_setup_do_not_lock_the_first_run_setup() {
    let dir = tempfile::tempdir().unwrap();
    let tally = Tally::start(dir.path(), &[]).await;
    for _ in 0..12 {
        let _ = tally.login("SETUP", "guess").await;
    }
    let code = std::fs::read_to_string(dir.path().join("setup-code")).unwrap();
    let body =
        json!({"code": code.trim(), "organization": "Initech", "email": "first@initech.test", "password": PASSWORD});
    let reply = request(
        tally.addr,
        Method::POST,
        "/api/setup",
        body.to_string().as_bytes(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
}

#[tokio::test]
async fn state_changing_requests_from_another_site_or_not_json_are_refused() {
    let (_dir, tally) = box_with_users(&[("TALLY_CORS_ORIGINS", "[\"http://tally.local:8080\"]")]).await;
    let own = format!("http://{}", tally.addr);
    let login = json!({"email": EDITOR, "password": PASSWORD}).to_string();
    let attempt = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let (addr, body) = (tally.addr, login.clone());
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(addr, Method::POST, path, body.as_bytes(), &headers).await
        }
    };
    let json_with = |extra: &[(&'static str, &str)]| {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        headers.extend(extra.iter().map(|(name, value)| (*name, (*value).to_owned())));
        headers
    };
    for path in ["/api/auth/login", "/api/auth/logout", "/api/auth/refresh", "/api/setup", "/api/users"] {
        for cross in [
            json_with(&[("origin", "http://evil.example")]),
            json_with(&[("origin", "null")]),
            json_with(&[("sec-fetch-site", "cross-site")]),
            json_with(&[("sec-fetch-site", "same-site"), ("origin", "http://127.0.0.2:1")]),
        ] {
            let reply = attempt(path, cross.clone()).await;
            assert_eq!(reply.status, 403, "{path} {cross:?}: {}", reply.body);
            assert_eq!(reply.json()["error"]["code"], "cross_site");
            assert!(reply.headers.get("set-cookie").is_none(), "{path}: nothing set");
        }
    }
    // A form can post text/plain that happens to be JSON; the API takes only declared JSON.
    for content_type in
        ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
    {
        let reply = attempt("/api/auth/login", vec![("content-type", content_type.to_owned())]).await;
        assert_eq!(reply.status, 415, "{content_type}: {}", reply.body);
    }
    assert_eq!(attempt("/api/auth/login", vec![]).await.status, 415, "no Content-Type at all");
    // The box's own pages, a listed origin and non-browser clients are served.
    for fine in [
        json_with(&[("origin", &own)]),
        json_with(&[("origin", "http://tally.local:8080")]),
        json_with(&[("sec-fetch-site", "same-origin"), ("origin", &own)]),
        vec![("content-type", "application/json; charset=utf-8".to_owned())],
    ] {
        let reply = attempt("/api/auth/login", fine.clone()).await;
        assert_eq!(reply.status, 200, "{fine:?}: {}", reply.body);
    }
    // The Engine.IO handshake follows the same rule.
    let handshake = "/socket.io/?EIO=4&transport=polling";
    assert_eq!(
        request(tally.addr, Method::GET, handshake, b"", &[("origin", "http://evil.example")]).await.status,
        403
    );
    assert_eq!(request(tally.addr, Method::GET, handshake, b"", &[("origin", own.as_str())]).await.status, 200);
}

#[tokio::test]
async fn logout_without_a_cookie_changes_nothing() {
    let (_dir, tally) = box_with_users(&[]).await;
    let reply = request(tally.addr, Method::POST, "/api/auth/logout", b"", &[]).await;
    assert_eq!(reply.status, 204);
    assert!(reply.headers.get("set-cookie").is_none(), "no cookie came, none is cleared");
    let login = tally.login(EDITOR, PASSWORD).await;
    let cookie = set_refresh_cookie(&login).unwrap();
    let out =
        request(tally.addr, Method::POST, "/api/auth/logout", b"", &[("cookie", &format!("tally_refresh={cookie}"))])
            .await;
    assert_eq!(out.status, 204);
    assert_eq!(set_refresh_cookie(&out).as_deref(), Some(""), "a real logout clears the cookie");
    assert_eq!(refresh_with(&tally, &cookie).await.status, 401);
}

#[tokio::test]
async fn small_things_bearer_case_titles_and_bidi_controls() {
    let (_dir, tally) = box_with_users(&[]).await;
    let editor = tally.token(EDITOR).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {editor}");
        let me = request(tally.addr, Method::GET, "/api/me", b"", &[("authorization", &auth)]).await;
        assert_eq!(me.status, 200, "{scheme}: {}", me.body);
    }
    // A name with nothing to show gets a title that PATCH would accept.
    let blank = tally.upload(&editor, None, "   .mp4", b"x").await.json();
    assert_eq!(blank["title"], "Untitled video");
    let id = blank["id"].as_str().unwrap();
    let same =
        tally.call(Method::PATCH, &format!("/api/videos/{id}"), &editor, Some(json!({"title": blank["title"]}))).await;
    assert_eq!(same.status, 200, "{}", same.body);
    // A 3,000-character name is cut to the title's and the file name's caps.
    let long = format!("{}.mp4", "a".repeat(3000));
    let video = tally.upload(&editor, None, &long, b"x").await;
    assert_eq!(video.status, 201, "{}", video.body);
    let video = video.json();
    assert_eq!(video["title"].as_str().unwrap().chars().count(), 200);
    assert!(video["filename"].as_str().unwrap().chars().count() <= 255);
    // Bidi overrides are removed from file names, titles and chat.
    let spoof = tally.upload(&editor, None, "holiday\u{202E}4pm.exe.mp4", b"x").await.json();
    assert_eq!(spoof["title"], "holiday4pm.exe");
    let renamed = tally
        .call(Method::PATCH, &format!("/api/videos/{id}"), &editor, Some(json!({"title": "\u{2067}gpj.exe\u{2069} "})))
        .await;
    assert_eq!(renamed.json()["title"], "gpj.exe");
    let mut ws = tally.socket(&editor).await;
    let said = say(&mut ws, 1, "look \u{202E}here").await;
    assert_eq!(said["message"]["text"], "look here", "{said}");
}

#[tokio::test]
async fn cross_site_pages_in_chromium() {
    let (_dir, tally) = box_with_users(&[]).await;
    let fresh = tempfile::tempdir().unwrap();
    let new_box = Tally::start(fresh.path(), &[]).await;
    let code = std::fs::read_to_string(fresh.path().join("setup-code")).unwrap().trim().to_owned();
    let config = json!({
        // The box at 127.0.0.1; the attacker's pages at localhost: another site.
        "box": format!("http://{}", tally.addr),
        "newBox": format!("http://{}", new_box.addr),
        // The real code: not a wrong code but the origin and Content-Type rules stop the form.
        "newBoxCode": code,
        "password": PASSWORD,
        "victim": EDITOR,
        "attacker": OUTSIDER,
    });
    let report = chromium_report("cross-site.mjs", &config).await;
    assert_eq!(report["before"], "editor@acme.test · Acme", "{report}");
    assert_eq!(report["afterLoginForm"], "editor@acme.test · Acme", "a cross-site login form changes no session");
    assert_eq!(report["afterLogoutForm"], "editor@acme.test · Acme", "a cross-site logout form ends no session");
    assert_eq!(report["afterRefreshForm"], "editor@acme.test · Acme", "nor does a cross-site refresh form");
    assert_eq!(report["crossSiteSocket"], "refused", "{report}");
    assert_eq!(report["setupStillNeeded"], true, "a cross-site setup form, even with the code, did nothing: {report}");
    assert_eq!(report["twoTabs"], json!(["editor@acme.test · Acme", "editor@acme.test · Acme"]), "{report}");
    assert_eq!(report["afterTwoTabs"], "editor@acme.test · Acme", "two tabs at once stay logged in: {report}");
    assert!(fresh.path().join("setup-code").exists(), "the setup code is unused");
}
