//! The page in headless Chromium (Debian's, driven by playwright-core) against the real
//! server process: login, live library, upload through processing, session kept across a
//! reload, drag and drop, keyboard use, a phone-sized screen, the device panel. Screenshots of
//! the main screens land in `target/screenshots/` (CI keeps that folder as its artifacts).

mod common;

use std::path::PathBuf;

use common::fixtures::{Painter, Spec, fill, make_video};
use common::node::chromium_report;
use common::process::{PASSWORD, Tally, add_user};

fn painted(path: &std::path::Path, paint: Box<Painter>) {
    make_video(path, &Spec { width: 320, height: 180, fps: 30, frames: 90 }, paint.as_ref());
}

#[tokio::test]
async fn the_page_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "Acme", "editor@acme.test", "editor").await;
    add_user(dir.path(), "Acme", "peer@acme.test", "viewer").await;
    add_user(dir.path(), "Globex", "outsider@globex.test", "admin").await;
    // Short-lived access tokens, so the page has to renew them and reconnect during the run.
    let tally = Tally::start(dir.path(), &[("TALLY_ACCESS_TOKEN_TTL_SECS", "15")]).await;
    let calm = dir.path().join("beach.mp4");
    painted(
        &calm,
        Box::new(|i, data: &mut [u8]| {
            fill(data, [40, 120, 200]);
            let x0 = (i as usize * 4) % 280;
            for y in 60..120 {
                for x in x0..x0 + 40 {
                    let p = (y * 320 + x) * 3;
                    data[p..p + 3].copy_from_slice(&[250, 220, 90]);
                }
            }
        }),
    );
    let strobe = dir.path().join("strobe.mp4");
    painted(
        &strobe,
        Box::new(|i, data: &mut [u8]| fill(data, if i % 2 == 0 { [20, 20, 20] } else { [235, 235, 235] })),
    );
    let fresh = tempfile::tempdir().unwrap();
    let new_box = Tally::start(fresh.path(), &[]).await;
    let setup_code = std::fs::read_to_string(fresh.path().join("setup-code")).unwrap().trim().to_owned();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a video").unwrap();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let config = serde_json::json!({
        "url": format!("http://{}/", tally.addr),
        "password": PASSWORD,
        "editor": "editor@acme.test",
        "peer": "peer@acme.test",
        "outsider": "outsider@globex.test",
        "calm": calm,
        "strobe": strobe,
        "notes": notes,
        "setupUrl": format!("http://{}/", new_box.addr),
        "setupCode": setup_code,
        "shots": shots,
    });
    let report = chromium_report("browser.mjs", &config).await;
    assert_eq!(report["thumbnailsLoaded"], true);
    assert!(report["calmDuration"].as_f64().is_some_and(|d| (2.9..3.1).contains(&d)), "{report}");
    assert!(report["calmVerdict"].as_str().unwrap().contains("safe"), "{report}");
    assert!(report["calmPlayback"]["played"].as_f64().is_some_and(|t| t >= 0.3), "playback advances: {report}");
    assert!(
        report["calmPlayback"]["seekedTo"].as_f64().is_some_and(|t| (t - 2.0).abs() < 0.1),
        "a seek lands where asked (range requests): {report}"
    );
    assert_eq!(report["focusBack"], "Play beach", "Escape returns to the card that opened the player");
    assert!(report["refusal"].as_str().unwrap().contains("notes.txt"), "{report}");
    assert!(report["deviceVersion"].as_str().unwrap().contains(env!("CARGO_PKG_VERSION")), "{report}");
    assert!(report["editorSockets"].as_u64().is_some_and(|n| n >= 2), "reconnected after the token expired: {report}");
    assert_eq!(report["setupWho"], "first@initech.test · Initech", "{report}");
    assert_eq!(report["setupAdmin"], true, "the first account is an admin");
    assert_eq!(report["phoneFits"], serde_json::json!({"library": true, "player": true}), "{report}");
    assert!(report["sourceBeforeAcknowledging"].is_null(), "a flagged video has no source before the acknowledgement");
    assert!(report["strobeDuration"].as_f64().is_some_and(|d| d > 2.9), "{report}");
    assert_eq!(
        (report["outsiderMessages"].as_u64(), report["outsiderVideos"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(report["peerCards"], 2);
    assert_eq!(report["editorSeesUsers"], false, "only admins get the users screen");
    assert_eq!(report["shortPasswordRefused"], true);
    assert_eq!(report["newUserRole"], "editor");
    assert_eq!(report["usersListed"], serde_json::json!(["outsider@globex.test"]), "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "no page, console or CSP errors");
    for shot in [
        "empty-library.png",
        "library.png",
        "player.png",
        "warning.png",
        "chat.png",
        "users.png",
        "device.png",
        "phone-library.png",
        "phone-player.png",
        "setup.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
}

#[tokio::test]
async fn an_hevc_phone_video_plays_in_chromium_from_its_rendition() {
    use common::fixtures::{Encoding, make_encoded};
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "Acme", "editor@acme.test", "editor").await;
    let tally = Tally::start(dir.path(), &[]).await;
    let hevc = dir.path().join("IMG_0042.mp4");
    let encoding = Encoding {
        video: "x265enc speed-preset=ultrafast key-int-max=30 ! h265parse",
        mux: "mp4mux name=mux faststart=true",
        audio: Some("avenc_aac"),
        format: "I420",
    };
    let paint: Box<Painter> = Box::new(|i, data: &mut [u8]| fill(data, [40, (i * 2 % 200) as u8 + 40, 200]));
    make_encoded(&hevc, &Spec { width: 640, height: 360, fps: 30, frames: 150 }, paint.as_ref(), &encoding);
    let config = serde_json::json!({
        "url": format!("http://{}/", tally.addr),
        "password": PASSWORD,
        "editor": "editor@acme.test",
        "hevc": hevc,
    });
    let report = chromium_report("playback.mjs", &config).await;
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(report["canPlayHevc"], "", "this Chromium has no HEVC: the test means something");
    // The original loads (its audio plays) but shows no picture, or is refused outright.
    let original = &report["original"];
    assert!(
        (original["event"] == "loadeddata" && original["videoWidth"] == 0) || original["event"] == "error",
        "the original cannot show its picture: {report}"
    );
    assert_eq!(report["sawPreparing"], true, "the card says the video is being prepared: {report}");
    let playback = &report["playback"];
    assert!(playback["src"].as_str().unwrap().contains("/stream?token="), "{report}");
    assert_eq!(playback["videoWidth"], 640, "the rendition shows its picture: {report}");
    assert!(playback["played"].as_f64().is_some_and(|t| t >= 0.3), "playback advances: {report}");
    assert!(playback["seekedTo"].as_f64().is_some_and(|t| (t - 2.0).abs() < 0.1), "a seek lands: {report}");
    assert_eq!(report["download"]["hidden"], false);
    assert!(report["download"]["href"].as_str().unwrap().contains("/original?token="), "{report}");
    assert!(report["details"].as_str().unwrap().contains("a transcoded copy"), "{report}");
    let preview = &report["preview"];
    assert!(preview["image"].as_str().unwrap().contains("size=previews"), "the preview shows the sheet: {report}");
    assert!(preview["width"].as_u64().is_some_and(|w| w >= 160), "{report}");
    assert_eq!(preview["time"], "0:04", "the time under the pointer (75 % of 5 s): {report}");
    assert_eq!(report["sheetLoads"], true);
    assert_eq!(report["previewHiddenAfter"], true, "the preview goes when the pointer leaves");
    let touch = &report["touch"];
    assert_eq!(
        (touch["shown"].as_bool(), touch["time"].as_str()),
        (Some(true), Some("0:03")),
        "dragging a finger: {report}"
    );
    assert_eq!(touch["hiddenAfter"], true, "the preview goes when the finger lifts: {report}");
    assert!(touch["seekedTo"].as_f64().is_some_and(|t| (t - 2.5).abs() < 0.3), "the drag seeks: {report}");
}
