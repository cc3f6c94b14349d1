//! The JSON API against the real `tally serve` process, a real sled directory and a raw HTTP
//! client: accounts and sessions, roles, uploads, range playback, tenant isolation, disk full
//! and crashes.

mod common;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::process::{PASSWORD, Tally, add_user};
use common::*;
use hyper::Method;
use serde_json::{Value, json};

/// Two organizations: acme (admin, editor, viewer) and globex (admin).
async fn two_orgs(env: &[(&str, &str)]) -> (tempfile::TempDir, Tally) {
    let dir = tempfile::tempdir().unwrap();
    for (org, email, role) in [
        ("Acme", "admin@acme.test", "admin"),
        ("Acme", "editor@acme.test", "editor"),
        ("Acme", "viewer@acme.test", "viewer"),
        ("Globex", "admin@globex.test", "admin"),
    ] {
        add_user(dir.path(), org, email, role).await;
    }
    let tally = Tally::start(dir.path(), env).await;
    (dir, tally)
}

fn set_cookie(reply: &Reply) -> String {
    reply.headers.get("set-cookie").expect("a Set-Cookie header").to_str().unwrap().to_owned()
}

/// `name=value` of a Set-Cookie header, as a browser would send it back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn refresh(tally: &Tally, cookie: &str) -> Reply {
    request(tally.addr, Method::POST, "/api/auth/refresh", b"", &[("cookie", cookie)]).await
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_in(&path));
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn login_refresh_rotation_reuse_and_logout() {
    // No grace window: a reuse counts as theft at once (tests/security.rs covers the window).
    let (_dir, tally) = two_orgs(&[("TALLY_REFRESH_GRACE_SECS", "0")]).await;
    for (email, password) in [("admin@acme.test", "wrong password"), ("nobody@acme.test", PASSWORD)] {
        let reply = tally.login(email, password).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json()["error"]["code"], "invalid_credentials", "unknown accounts look like wrong passwords");
    }
    let login = tally.login("ADMIN@acme.test", PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let session = login.json();
    assert_eq!(session["user"]["email"], "admin@acme.test");
    assert_eq!(session["user"]["orgName"], "Acme");
    assert_eq!(session["expiresIn"], 900);
    assert!(session.to_string().find("password").is_none(), "no password material in responses");
    let first = set_cookie(&login);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api/auth"] {
        assert!(first.contains(attribute), "{first} lacks {attribute}");
    }
    let me = tally.call(Method::GET, "/api/me", session["accessToken"].as_str().unwrap(), None).await;
    assert_eq!((me.status, me.json()["role"].clone()), (200, json!("admin")));

    let rotated = refresh(&tally, &cookie_pair(&first)).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert!(rotated.json()["accessToken"].is_string());
    let second = set_cookie(&rotated);
    assert_ne!(cookie_pair(&first), cookie_pair(&second), "the refresh token rotates");

    // A stolen copy of the first token comes back: refused, and the whole family is revoked.
    assert_eq!(refresh(&tally, &cookie_pair(&first)).await.status, 401);
    assert_eq!(refresh(&tally, &cookie_pair(&second)).await.status, 401, "the family died with the reuse");

    let again = tally.login("admin@acme.test", PASSWORD).await;
    let cookie = cookie_pair(&set_cookie(&again));
    let logout = request(tally.addr, Method::POST, "/api/auth/logout", b"", &[("cookie", &cookie)]).await;
    assert_eq!(logout.status, 204);
    assert!(set_cookie(&logout).contains("Max-Age=0"), "logout clears the cookie");
    assert_eq!(refresh(&tally, &cookie).await.status, 401);
    assert_eq!(refresh(&tally, "tally_refresh=forged").await.status, 401);
    assert_eq!(refresh(&tally, "").await.status, 401);
}

#[tokio::test]
async fn bad_access_tokens_are_refused() {
    let (dir, tally) = two_orgs(&[]).await;
    let good = tally.token("admin@acme.test").await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: Value = serde_json::from_slice(&b64.decode(good.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let alg_none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), b64.encode(claims.to_string()));
    let mut tampered_claims = claims.clone();
    tampered_claims["role"] = json!("admin");
    tampered_claims["org"] = json!("someone-else");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(tampered_claims.to_string()), parts[2]);
    let keys = tally::auth::TokenKeys::load_or_create(dir.path()).unwrap();
    let expired = keys
        .issue(
            claims["sub"].as_str().unwrap(),
            claims["org"].as_str().unwrap(),
            tally::auth::Role::Admin,
            Duration::ZERO,
        )
        .unwrap();
    let foreign = tally::auth::TokenKeys::from_secret(&[3; 64])
        .unwrap()
        .issue(
            claims["sub"].as_str().unwrap(),
            claims["org"].as_str().unwrap(),
            tally::auth::Role::Admin,
            Duration::from_secs(600),
        )
        .unwrap();
    let ghost = keys
        .issue("no-such-user", claims["org"].as_str().unwrap(), tally::auth::Role::Admin, Duration::from_secs(600))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (what, token) in [
        ("alg none", alg_none),
        ("tampered", tampered),
        ("expired", expired),
        ("other secret", foreign),
        ("deleted user", ghost),
        ("garbage", "x.y.z".into()),
    ] {
        let reply = tally.call(Method::GET, "/api/videos", &token, None).await;
        assert_eq!(reply.status, 401, "{what}");
        assert_eq!(reply.json()["error"]["code"], "unauthorized", "{what}");
    }
    let missing = request(tally.addr, Method::GET, "/api/videos", b"", &[]).await;
    assert_eq!(missing.status, 401);
    let basic = request(tally.addr, Method::GET, "/api/videos", b"", &[("authorization", "Basic YTpi")]).await;
    assert_eq!(basic.status, 401);
}

#[tokio::test]
async fn roles_decide_who_may_do_what() {
    let (_dir, tally) = two_orgs(&[]).await;
    let admin = tally.token("admin@acme.test").await;
    let editor = tally.token("editor@acme.test").await;
    let viewer = tally.token("viewer@acme.test").await;

    assert_eq!(tally.upload(&viewer, Some("no"), "a.mp4", b"data").await.status, 403);
    let uploaded = tally.upload(&editor, Some("clip"), "a.mp4", b"data").await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let id = uploaded.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/videos/{id}");
    assert_eq!(tally.call(Method::GET, &path, &viewer, None).await.status, 200);
    assert_eq!(tally.call(Method::PATCH, &path, &viewer, Some(json!({"title": "x"}))).await.status, 403);
    assert_eq!(tally.call(Method::DELETE, &path, &viewer, None).await.status, 403);

    assert_eq!(tally.call(Method::GET, "/api/users", &editor, None).await.status, 403);
    let new_user = json!({"email": "new@acme.test", "password": "long enough pw", "role": "viewer"});
    assert_eq!(tally.call(Method::POST, "/api/users", &editor, Some(new_user.clone())).await.status, 403);
    let created = tally.call(Method::POST, "/api/users", &admin, Some(new_user.clone())).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(tally.call(Method::POST, "/api/users", &admin, Some(new_user)).await.status, 409, "emails are unique");
    let short = json!({"email": "short@acme.test", "password": "short", "role": "viewer"});
    assert_eq!(tally.call(Method::POST, "/api/users", &admin, Some(short)).await.status, 400);
    assert_eq!(tally.login("new@acme.test", "long enough pw").await.status, 200);

    let users = tally.call(Method::GET, "/api/users", &admin, None).await.json();
    let emails: Vec<_> =
        users["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_owned()).collect();
    assert_eq!(emails.len(), 4, "{emails:?}");
    assert!(!emails.contains(&"admin@globex.test".to_owned()), "only the admin's own organization");
    let new_id = created.json()["id"].as_str().unwrap().to_owned();
    let promoted =
        tally.call(Method::PATCH, &format!("/api/users/{new_id}"), &admin, Some(json!({"role": "editor"}))).await;
    assert_eq!(promoted.json()["role"], "editor");
    assert_eq!(tally.call(Method::DELETE, &format!("/api/users/{new_id}"), &admin, None).await.status, 204);
    assert_eq!(tally.login("new@acme.test", "long enough pw").await.status, 401);

    let me = tally.call(Method::GET, "/api/me", &admin, None).await.json();
    let admin_id = me["id"].as_str().unwrap();
    let last = tally.call(Method::DELETE, &format!("/api/users/{admin_id}"), &admin, None).await;
    assert_eq!((last.status, last.json()["error"]["code"].clone()), (409, json!("last_admin")));
    let demote =
        tally.call(Method::PATCH, &format!("/api/users/{admin_id}"), &admin, Some(json!({"role": "viewer"}))).await;
    assert_eq!(demote.status, 409);
}

#[tokio::test]
async fn json_bodies_are_bounded_and_must_be_json() {
    let (_dir, tally) = two_orgs(&[]).await;
    let huge = format!(r#"{{"email":"admin@acme.test","password":"{}"}}"#, "x".repeat(70 * 1024));
    let reply =
        request(tally.addr, Method::POST, "/api/auth/login", huge.as_bytes(), &[("content-type", "application/json")])
            .await;
    assert_eq!((reply.status, reply.json()["error"]["code"].clone()), (413, json!("too_large")));
    let reply =
        request(tally.addr, Method::POST, "/api/auth/login", b"{not json", &[("content-type", "application/json")])
            .await;
    assert_eq!((reply.status, reply.json()["error"]["code"].clone()), (400, json!("bad_request")));
    let admin = tally.token("admin@acme.test").await;
    let wrong_shape = tally.call(Method::POST, "/api/users", &admin, Some(json!({"email": "x@acme.test"}))).await;
    assert_eq!(wrong_shape.status, 400, "missing fields are a clear 400");
    let bad_role = tally
        .call(
            Method::POST,
            "/api/users",
            &admin,
            Some(json!({"email": "x@acme.test", "password": "long enough pw", "role": "root"})),
        )
        .await;
    assert_eq!(bad_role.status, 400);
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let (_dir, tally) = two_orgs(&[("TALLY_LOGIN_ATTEMPTS_PER_MINUTE", "3")]).await;
    for _ in 0..3 {
        assert_eq!(tally.login("admin@acme.test", "guess").await.status, 401);
    }
    let limited = tally.login("admin@acme.test", PASSWORD).await;
    assert_eq!(limited.status, 429);
    assert!(limited.headers.get("retry-after").is_some());
    assert_eq!(tally.login("admin@globex.test", PASSWORD).await.status, 200, "other accounts are unaffected");
}

#[tokio::test]
async fn videos_are_listed_renamed_and_deleted_with_live_events() {
    let (dir, tally) = two_orgs(&[]).await;
    let token = tally.token("editor@acme.test").await;
    let other = tally.token("admin@globex.test").await;
    let mut watcher = tally.socket(&tally.token("viewer@acme.test").await).await;
    let mut outsider = tally.socket(&other).await;

    let mut ids = Vec::new();
    for i in 0..3 {
        let reply = tally
            .upload(&token, Some(&format!("clip {i}")), &format!("c{i}.MP4"), format!("video {i}").as_bytes())
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let video = reply.json();
        assert_eq!(
            (video["status"].clone(), video["size"].clone(), video["ext"].clone()),
            (json!("queued"), json!(7), json!("mp4"))
        );
        assert_eq!(reply.headers["location"], format!("/api/videos/{}", video["id"].as_str().unwrap()));
        ids.push(video["id"].as_str().unwrap().to_owned());
        let event = next_event(&mut watcher).await;
        assert_eq!((event[0].as_str(), event[1]["id"].as_str()), (Some("video:created"), Some(ids[i].as_str())));
    }
    let untitled = tally.upload(&token, None, "holiday.webm", b"webm").await.json();
    assert_eq!(untitled["title"], "holiday");
    assert_eq!(untitled["contentType"], "video/webm");
    next_event(&mut watcher).await;

    let page = tally.call(Method::GET, "/api/videos?limit=2", &token, None).await.json();
    let titles: Vec<_> =
        page["items"].as_array().unwrap().iter().map(|v| v["title"].as_str().unwrap().to_owned()).collect();
    assert_eq!(titles, ["holiday", "clip 2"], "newest first");
    let rest = tally
        .call(Method::GET, &format!("/api/videos?limit=2&before={}", page["next"].as_str().unwrap()), &token, None)
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["next"].is_null());
    let filtered = tally.call(Method::GET, "/api/videos?status=processed", &token, None).await.json();
    assert_eq!(filtered["items"], json!([]));
    assert_eq!(tally.call(Method::GET, "/api/videos?status=bogus", &token, None).await.status, 400);
    assert_eq!(tally.call(Method::GET, "/api/videos?limit=0", &token, None).await.status, 400);

    let path = format!("/api/videos/{}", ids[0]);
    let renamed = tally.call(Method::PATCH, &path, &token, Some(json!({"title": "  renamed  "}))).await;
    assert_eq!(renamed.json()["title"], "renamed");
    let event = next_event(&mut watcher).await;
    assert_eq!((event[0].as_str(), event[1]["title"].as_str()), (Some("video:updated"), Some("renamed")));
    assert_eq!(tally.call(Method::PATCH, &path, &token, Some(json!({"title": ""}))).await.status, 400);
    assert_eq!(tally.call(Method::PATCH, &path, &token, Some(json!({"title": "x".repeat(201)}))).await.status, 400);
    assert_eq!(tally.call(Method::PATCH, &path, &token, Some(json!({"status": "processed"}))).await.status, 400);

    let stored = dir.path().join("videos").join(&ids[0]);
    assert!(stored.join("original.mp4").exists());
    assert_eq!(tally.call(Method::DELETE, &path, &token, None).await.status, 204);
    assert!(!stored.exists(), "files go with the record");
    assert_eq!(tally.call(Method::GET, &path, &token, None).await.status, 404);
    let event = next_event(&mut watcher).await;
    assert_eq!(event, json!(["video:deleted", {"id": ids[0]}]));

    // The other organization heard none of it (its admin follows the box's own state, which
    // names no organization's videos).
    send_text(&mut outsider, r#"42["video:subscribe","nothing"]"#).await;
    let silence = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            let text = next_text(&mut outsider).await;
            if !text.starts_with(r#"42["device:status""#) {
                return text;
            }
        }
    })
    .await;
    assert!(silence.is_err(), "globex received {silence:?}");
}

/// The next `video:created|updated|deleted` event; processing events (these uploads are not
/// real videos, so their jobs fail) are skipped.
async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let text = next_text(ws).await;
        let event: Value = serde_json::from_str(&without_offset(&text)[2..]).unwrap();
        if !matches!(event[0].as_str(), Some("video:progress" | "video:failed")) {
            return event;
        }
    }
}

#[tokio::test]
async fn bad_uploads_get_clear_errors_and_leave_nothing() {
    let (dir, tally) = two_orgs(&[("TALLY_MAX_UPLOAD_BYTES", "1048576")]).await;
    let token = tally.token("editor@acme.test").await;
    let auth = format!("Bearer {token}");
    let plain = request(
        tally.addr,
        Method::POST,
        "/api/videos",
        b"raw bytes",
        &[("authorization", &auth), ("content-type", "video/mp4")],
    )
    .await;
    assert_eq!((plain.status, plain.json()["error"]["code"].clone()), (415, json!("unsupported_media_type")));
    let text = tally.upload(&token, None, "notes.txt", b"hello").await;
    assert_eq!((text.status, text.json()["error"]["code"].clone()), (415, json!("unsupported_type")));
    assert!(text.json()["error"]["message"].as_str().unwrap().contains("notes.txt"));
    assert_eq!(tally.upload(&token, None, "empty.mp4", b"").await.status, 400);
    assert_eq!(tally.upload(&token, Some(&"t".repeat(300)), "a.mp4", b"x").await.status, 400);
    let (content_type, _) = common::process::multipart(Some("only a title"), "x.mp4", b"");
    let boundary = content_type.split("boundary=").nth(1).unwrap().to_owned();
    let no_file =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nx\r\n--{boundary}--\r\n");
    let reply = request(
        tally.addr,
        Method::POST,
        "/api/videos",
        no_file.as_bytes(),
        &[("authorization", &auth), ("content-type", &content_type)],
    )
    .await;
    assert_eq!(reply.status, 400);
    let garbage = request(
        tally.addr,
        Method::POST,
        "/api/videos",
        b"--nonsense",
        &[("authorization", &auth), ("content-type", &content_type)],
    )
    .await;
    assert_eq!(garbage.status, 400);

    // Over the limit, declared...
    let big = random_bytes(2 << 20, 1);
    let reply = tally.upload(&token, None, "big.mp4", &big).await;
    assert_eq!((reply.status, reply.json()["error"]["code"].clone()), (413, json!("too_large")));
    // ...and undeclared (streamed, no Content-Length).
    let chunks = (0..40).map(|_| Bytes::from(vec![7u8; 64 * 1024]));
    let reply = tally.upload_stream(&token, "big.mp4", chunks, Duration::ZERO).await;
    assert_eq!(reply.status, 413);
    assert!(files_in(&dir.path().join("tmp")).is_empty(), "no partial upload left behind");
    assert!(files_in(&dir.path().join("videos")).is_empty());
    let list = tally.call(Method::GET, "/api/videos", &token, None).await.json();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn range_requests_byte_for_byte() {
    let (_dir, tally) = two_orgs(&[]).await;
    let token = tally.token("viewer@acme.test").await;
    let editor = tally.token("editor@acme.test").await;
    let content = random_bytes(1_000_003, 42);
    let video = tally.upload(&editor, Some("ranges"), "r.mp4", &content).await.json();
    let url = video["streamUrl"].as_str().unwrap().to_owned();
    let len = content.len();
    let get_range = |range: Option<String>, extra: Vec<(String, String)>| {
        let url = url.clone();
        let addr = tally.addr;
        async move {
            let mut headers: Vec<(String, String)> = extra;
            if let Some(range) = range {
                headers.push(("range".into(), range));
            }
            let borrowed: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            request(addr, Method::GET, &url, b"", &borrowed).await
        }
    };

    let whole = get_range(None, vec![]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.bytes.as_ref(), content.as_slice());
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    assert_eq!(whole.headers["content-type"], "video/mp4");
    assert_eq!(whole.headers["content-length"], len.to_string());
    let etag = whole.headers["etag"].to_str().unwrap().to_owned();
    let modified = whole.headers["last-modified"].to_str().unwrap().to_owned();

    let cases: Vec<(&str, usize, usize)> = vec![
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=500000-500099", 500_000, 500_099),
        ("bytes=999000-", 999_000, len - 1),
        ("bytes=-1000", len - 1000, len - 1),
        ("bytes=-5000000", 0, len - 1),
        ("bytes=1000000-9999999", 1_000_000, len - 1),
    ];
    for (range, start, end) in cases {
        let part = get_range(Some(range.into()), vec![]).await;
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(part.headers["content-range"], format!("bytes {start}-{end}/{len}"), "{range}");
        assert_eq!(part.headers["content-length"], (end - start + 1).to_string(), "{range}");
        assert_eq!(part.bytes.as_ref(), &content[start..=end], "{range}");
    }
    for range in [format!("bytes={len}-"), "bytes=2000000-2000010".to_owned()] {
        let refused = get_range(Some(range.clone()), vec![]).await;
        assert_eq!(refused.status, 416, "{range}");
        assert_eq!(refused.headers["content-range"], format!("bytes */{len}"));
    }
    for ignored in ["bytes=0-1,10-20", "lines=0-5", "bytes=9-1"] {
        let reply = get_range(Some(ignored.into()), vec![]).await;
        assert_eq!((reply.status, reply.bytes.len()), (200, len), "{ignored} is answered with the whole file");
    }
    let fresh = get_range(Some("bytes=10-19".into()), vec![("if-range".into(), etag.clone())]).await;
    assert_eq!((fresh.status, fresh.bytes.as_ref()), (206, &content[10..20]));
    let by_date = get_range(Some("bytes=10-19".into()), vec![("if-range".into(), modified.clone())]).await;
    assert_eq!(by_date.status, 206);
    let stale = get_range(Some("bytes=10-19".into()), vec![("if-range".into(), "\"old\"".into())]).await;
    assert_eq!((stale.status, stale.bytes.len()), (200, len), "a stale If-Range gets the whole file");
    let cached = get_range(None, vec![("if-none-match".into(), etag.clone())]).await;
    assert_eq!((cached.status, cached.bytes.len()), (304, 0));

    let head = request(tally.addr, Method::HEAD, &url, b"", &[("range", "bytes=0-9")]).await;
    assert_eq!((head.status, head.bytes.len()), (206, 0));
    assert_eq!(head.headers["content-length"], "10");
    let head = request(tally.addr, Method::HEAD, &url, b"", &[]).await;
    assert_eq!(head.headers["content-length"], len.to_string());

    // The same bytes with a Bearer token instead of the signed URL.
    let id = video["id"].as_str().unwrap();
    let bearer = format!("Bearer {token}");
    let part = request(
        tally.addr,
        Method::GET,
        &format!("/api/videos/{id}/stream"),
        b"",
        &[("authorization", &bearer), ("range", "bytes=-10")],
    )
    .await;
    assert_eq!(part.bytes.as_ref(), &content[len - 10..]);
    let anonymous = request(tally.addr, Method::GET, &format!("/api/videos/{id}/stream"), b"", &[]).await;
    assert_eq!(anonymous.status, 401);
    let forged = request(tally.addr, Method::GET, &format!("/api/videos/{id}/stream?token=forged"), b"", &[]).await;
    assert_eq!(forged.status, 401);
    assert_eq!(
        tally.call(Method::GET, &format!("/api/videos/{id}/thumbnail"), &token, None).await.status,
        404,
        "no thumbnail yet"
    );
}

#[tokio::test]
async fn another_organization_sees_only_404s() {
    let (_dir, tally) = two_orgs(&[]).await;
    let acme = tally.token("editor@acme.test").await;
    let globex = tally.token("admin@globex.test").await;
    let video = tally.upload(&acme, Some("secret"), "s.mp4", b"acme only").await.json();
    let other = tally.upload(&globex, Some("theirs"), "t.mp4", b"globex").await.json();
    let id = video["id"].as_str().unwrap();
    let missing = "01JZZZZZZZZZZZZZZZZZZZZZZZ";
    for target in [id, missing] {
        let base = format!("/api/videos/{target}");
        let replies = [
            tally.call(Method::GET, &base, &globex, None).await,
            tally.call(Method::PATCH, &base, &globex, Some(json!({"title": "mine"}))).await,
            tally.call(Method::DELETE, &base, &globex, None).await,
            tally.call(Method::GET, &format!("{base}/stream"), &globex, None).await,
            tally.call(Method::GET, &format!("{base}/thumbnail"), &globex, None).await,
        ];
        for reply in replies {
            assert_eq!(reply.status, 404, "{target}: {}", reply.body);
            assert_eq!(reply.json()["error"]["code"], "not_found");
        }
    }
    // A URL signed for globex's own video does not open acme's.
    let their_token = other["streamUrl"].as_str().unwrap().split("token=").nth(1).unwrap().to_owned();
    let swapped =
        request(tally.addr, Method::GET, &format!("/api/videos/{id}/stream?token={their_token}"), b"", &[]).await;
    assert_eq!(swapped.status, 404);
    let listed = tally.call(Method::GET, "/api/videos", &globex, None).await.json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["title"], "theirs");
    let acme_users = tally.call(Method::GET, "/api/users", &globex, None).await.json();
    assert!(acme_users.to_string().find("acme.test").is_none());
    assert_eq!(tally.call(Method::GET, &format!("/api/videos/{id}"), &acme, None).await.json()["title"], "secret");
}

#[tokio::test]
async fn a_large_upload_streams_with_flat_memory() {
    use sha2::{Digest, Sha256};
    let (dir, tally) = two_orgs(&[]).await;
    let token = tally.token("editor@acme.test").await;
    let before = tally.peak_rss_kib();
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 256;
    let chunk = |i: usize| Bytes::from(random_bytes(CHUNK, i as u64));
    let reply = tally.upload_stream(&token, "large.mkv", (0..CHUNKS).map(chunk), Duration::ZERO).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let video = reply.json();
    assert_eq!(video["size"], (CHUNK * CHUNKS) as u64);
    let peak = tally.peak_rss_kib();
    eprintln!("server peak RSS before {before} KiB, after a 256 MiB upload {peak} KiB");
    assert!(peak < before + 64 * 1024, "memory grew with the upload: {before} KiB -> {peak} KiB");
    let mut expected = Sha256::new();
    for i in 0..CHUNKS {
        expected.update(chunk(i));
    }
    let stored =
        std::fs::read(dir.path().join("videos").join(video["id"].as_str().unwrap()).join("original.mkv")).unwrap();
    assert_eq!(Sha256::digest(&stored), expected.finalize(), "stored byte for byte");
}

#[tokio::test]
async fn uploads_are_refused_with_507_below_the_free_space_reserve() {
    // Unprivileged: a reserve above what is free makes the box "full". (Other tests share the
    // disk and free space meanwhile, so only a reserve well above the free space is
    // deterministic; running out part-way is the tmpfs test's.)
    let probe = tempfile::tempdir().unwrap();
    let free = fs4::available_space(probe.path()).unwrap();
    let reserve = (free + (1 << 30)).to_string();
    let (dir, tally) = two_orgs(&[("TALLY_MIN_FREE_BYTES", &reserve)]).await;
    let token = tally.token("editor@acme.test").await;
    let chunks = (0..64).map(|i| Bytes::from(random_bytes(1 << 20, i)));
    let reply = tally.upload_stream(&token, "huge.mp4", chunks, Duration::ZERO).await;
    assert_eq!((reply.status, reply.json()["error"]["code"].clone()), (507, json!("insufficient_storage")));
    assert!(files_in(&dir.path().join("tmp")).is_empty(), "the partial file is removed");
    assert!(files_in(&dir.path().join("videos")).is_empty());
}

#[tokio::test]
async fn a_full_filesystem_gives_507_and_the_service_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mount =
        std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(dir.path()).status();
    if !mount.is_ok_and(|status| status.success()) {
        eprintln!("skipped: mounting a tmpfs needs root (the reserve test covers the unprivileged case)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.path().to_owned());
    add_user(dir.path(), "Acme", "editor@acme.test", "editor").await;
    let tally = Tally::start(dir.path(), &[("TALLY_MIN_FREE_BYTES", "0")]).await;
    let token = tally.token("editor@acme.test").await;
    let chunks = (0..40).map(|i| Bytes::from(random_bytes(1 << 20, i)));
    let reply = tally.upload_stream(&token, "fills.mp4", chunks, Duration::ZERO).await;
    assert_eq!(reply.status, 507, "{}", reply.body);
    assert!(files_in(&dir.path().join("tmp")).is_empty(), "the partial file is removed");
    let small = tally.upload(&token, Some("fits"), "small.mp4", &random_bytes(1 << 20, 99)).await;
    assert_eq!(small.status, 201, "the service recovers once space is back: {}", small.body);
}

#[tokio::test]
async fn sigkill_mid_upload_leaves_no_half_records_or_stray_files() {
    let (dir, mut tally) = two_orgs(&[]).await;
    let token = tally.token("editor@acme.test").await;
    let kept = tally.upload(&token, Some("acknowledged"), "kept.mp4", b"acknowledged bytes").await;
    assert_eq!(kept.status, 201);
    let (addr, slow_token) = (tally.addr, token.clone());
    let slow = tokio::spawn(async move {
        let server = Tally::attach(addr);
        let chunks = (0..1000).map(|_| Bytes::from(vec![1u8; 64 * 1024]));
        server.upload_stream(&slow_token, "interrupted.mp4", chunks, Duration::from_millis(5)).await
    });
    eventually_async("the upload is being written", || !files_in(&dir.path().join("tmp")).is_empty()).await;
    tally.kill().await;
    slow.abort();
    tally.restart().await;
    assert!(files_in(&dir.path().join("tmp")).is_empty(), "temp files cleaned at start");
    let token = tally.token("editor@acme.test").await;
    let list = tally.call(Method::GET, "/api/videos", &token, None).await.json();
    let titles: Vec<_> = list["items"].as_array().unwrap().iter().map(|v| v["title"].clone()).collect();
    assert_eq!(titles, [json!("acknowledged")]);
    let dirs = std::fs::read_dir(dir.path().join("videos")).unwrap().count();
    assert_eq!(dirs, 1, "only the acknowledged video's files remain");
    let url = list["items"][0]["streamUrl"].as_str().unwrap();
    assert_eq!(get(tally.addr, url).await.bytes.as_ref(), b"acknowledged bytes");
}

#[tokio::test]
async fn sigkill_mid_user_creation_leaves_whole_users_only() {
    let (_dir, mut tally) = two_orgs(&[]).await;
    let admin = tally.token("admin@acme.test").await;
    let addr = tally.addr;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let body =
                json!({"email": format!("u{i}@acme.test"), "password": "long enough pw", "role": "viewer"}).to_string();
            let auth = format!("Bearer {admin}");
            let reply = request(
                addr,
                Method::POST,
                "/api/users",
                body.as_bytes(),
                &[("authorization", &auth), ("content-type", "application/json")],
            )
            .await;
            (i, reply.status)
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    tally.kill().await;
    let mut acknowledged = Vec::new();
    for task in tasks {
        if let Ok((i, 201)) = task.await {
            acknowledged.push(i);
        }
    }
    tally.restart().await;
    let admin = tally.token("admin@acme.test").await;
    let users = tally.call(Method::GET, "/api/users", &admin, None).await.json();
    let listed: Vec<String> =
        users["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_owned()).collect();
    for i in &acknowledged {
        assert!(listed.contains(&format!("u{i}@acme.test")), "acknowledged user u{i} was lost");
    }
    for i in 0..24 {
        let email = format!("u{i}@acme.test");
        if listed.contains(&email) {
            assert_eq!(tally.login(&email, "long enough pw").await.status, 200, "{email} is whole");
        } else {
            // No dangling email index: the address is free to use.
            let body = json!({"email": email, "password": "long enough pw", "role": "viewer"});
            assert_eq!(tally.call(Method::POST, "/api/users", &admin, Some(body)).await.status, 201, "{email}");
        }
    }
    eprintln!("{} of 24 creations were acknowledged before the kill", acknowledged.len());
}

async fn eventually_async(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_new_box_makes_its_first_admin_with_the_setup_code() {
    let dir = tempfile::tempdir().unwrap();
    let tally = Tally::start(dir.path(), &[]).await;
    let code_file = dir.path().join("setup-code");
    let code = std::fs::read_to_string(&code_file).expect("a box without accounts has a setup code").trim().to_owned();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&code_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(get(tally.addr, "/api/setup").await.json(), json!({"needed": true}));
    let setup = |code: &str, password: &str| {
        json!({"code": code, "organization": " Acme ", "email": "boss@acme.test", "password": password}).to_string()
    };
    let post_setup = async |body: String| {
        request(tally.addr, Method::POST, "/api/setup", body.as_bytes(), &[("content-type", "application/json")]).await
    };
    let wrong = post_setup(setup("AAAA-BBBB-CCCC", PASSWORD)).await;
    assert_eq!((wrong.status, wrong.json()["error"]["code"].clone()), (403, json!("wrong_setup_code")));
    assert_eq!(post_setup(setup(&code, "short")).await.status, 400, "the password policy applies");
    assert_eq!(post_setup("{}".into()).await.status, 400);

    let done = post_setup(setup(&code.to_lowercase().replace('-', ""), PASSWORD)).await;
    assert_eq!(done.status, 201, "{}", done.body);
    let session = done.json();
    assert_eq!((session["user"]["role"].clone(), session["user"]["orgName"].clone()), (json!("admin"), json!("Acme")));
    assert!(done.headers["set-cookie"].to_str().unwrap().starts_with("tally_refresh="), "logged in at once");
    let token = session["accessToken"].as_str().unwrap();
    assert_eq!(tally.call(Method::GET, "/api/users", token, None).await.json()["items"].as_array().unwrap().len(), 1);
    assert!(!code_file.exists(), "the code is used up");
    assert_eq!(get(tally.addr, "/api/setup").await.json(), json!({"needed": false}));
    let again = post_setup(setup(&code, PASSWORD)).await;
    assert_eq!((again.status, again.json()["error"]["code"].clone()), (409, json!("already_set_up")));
    assert_eq!(tally.login("boss@acme.test", PASSWORD).await.status, 200);
}
