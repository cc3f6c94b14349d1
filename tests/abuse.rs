//! Slow and abusive clients against `tally serve`: each abuse runs while a well-behaved client
//! keeps talking to the box. The service must keep answering it, shed the abuser, and keep its
//! memory bounded. The well-behaved client's latencies, before and during each abuse, are
//! printed (they are figures for RELIABILITY.md, not assertions).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{Tally, UNLIMITED_CHAT, add_user};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident memory now, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The well-behaved client: chat round trips on its own socket, and `/healthz`, for `for`.
/// Returns (p50, p99, max) of the chat round trips in milliseconds, and how many failed.
async fn victim(addr: SocketAddr, token: String, run_for: Duration) -> (f64, f64, f64, usize) {
    let mut ws = Tally::attach(addr).socket(&token).await;
    let mut times = Vec::new();
    let mut failed = 0;
    let end = Instant::now() + run_for;
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let started = Instant::now();
        send_text(&mut ws, &format!(r#"42{n}["chat:message",{{"text":"ping {n}"}}]"#)).await;
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if next_text(&mut ws).await.starts_with(&format!("43{n}[")) {
                    return;
                }
            }
        })
        .await;
        let health = tokio::time::timeout(Duration::from_secs(5), get(addr, "/healthz")).await;
        match (answered, health) {
            (Ok(()), Ok(reply)) if reply.status == 200 => times.push(started.elapsed().as_secs_f64() * 1000.0),
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1))).copied();
    (at(0.5).unwrap_or(f64::NAN), at(0.99).unwrap_or(f64::NAN), times.last().copied().unwrap_or(f64::NAN), failed)
}

/// Runs `abuse` beside the victim and checks the victim was served throughout and memory
/// stayed within `bound_kib` of where it started.
async fn survive<F: Future<Output = String>>(tally: &Tally, token: &str, name: &str, bound_kib: u64, abuse: F) {
    let before = rss_kib(tally.pid());
    let calm = victim(tally.addr, token.to_owned(), Duration::from_secs(1)).await;
    let victim = tokio::spawn(victim(tally.addr, token.to_owned(), Duration::from_secs(4)));
    let what = abuse.await;
    let (p50, p99, max, failed) = victim.await.unwrap();
    let after = rss_kib(tally.pid());
    println!(
        "abuse {name}: {what}; victim chat+health p50 {p50:.1} ms p99 {p99:.1} ms max {max:.1} ms (calm: p50 {:.1} p99 {:.1}); RSS {before} -> {after} KiB",
        calm.0, calm.1
    );
    assert_eq!(failed, 0, "{name}: the well-behaved client was not served");
    assert!(after <= before + bound_kib, "{name}: RSS grew from {before} to {after} KiB");
}

async fn started() -> (tempfile::TempDir, Tally, String) {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "Acme", "editor@acme.test", "editor").await;
    let settings = [("TALLY_LOGIN_ATTEMPTS_PER_MINUTE", "1000"), UNLIMITED_CHAT[0], UNLIMITED_CHAT[1]];
    let tally = Tally::start(dir.path(), &settings).await;
    let token = tally.token("editor@acme.test").await;
    (dir, tally, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off() {
    let (_dir, tally, token) = started().await;
    let addr = tally.addr;
    survive(&tally, &token, "slowloris", 16 * 1024, async move {
        // 300 connections that send a header byte a second and never finish.
        let mut tasks = Vec::new();
        for _ in 0..300 {
            tasks.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.ok()?;
                stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.ok()?;
                let started = Instant::now();
                for _ in 0..60 {
                    if stream.write_all(b"X").await.is_err() {
                        break;
                    }
                    let mut byte = [0u8; 1];
                    // A closed connection reads as EOF (or an error) at once.
                    match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                        Ok(Ok(_)) => return Some(started.elapsed()),
                        Err(_) => {}
                    }
                }
                None
            }));
        }
        let mut cut = Vec::new();
        for task in tasks {
            cut.push(task.await.unwrap().expect("the slow connection was never cut off"));
        }
        let longest = cut.iter().max().unwrap();
        format!("300 connections trickling headers, all cut off within {longest:.1?}")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_polls_with_bogus_sids_open_nothing() {
    let (_dir, tally, token) = started().await;
    let addr = tally.addr;
    survive(&tally, &token, "bogus sids", 8 * 1024, async move {
        let mut statuses = std::collections::BTreeMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..10_000u32 {
            tasks.spawn(async move {
                let path = match i % 3 {
                    0 => format!("/socket.io/?EIO=4&transport=polling&sid=bogus{i}"),
                    1 => "/socket.io/?EIO=4&transport=polling&sid=".to_owned(),
                    _ => format!("/socket.io/?EIO=4&transport=polling&sid={}", "A".repeat(20)),
                };
                get(addr, &path).await.status
            });
            if tasks.len() >= 64 {
                let status = tasks.join_next().await.unwrap().unwrap();
                *statuses.entry(status).or_insert(0) += 1;
            }
        }
        while let Some(status) = tasks.join_next().await {
            *statuses.entry(status.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [400], "{statuses:?}");
        let metrics = get(addr, "/metrics").await.body;
        assert!(metrics.contains("tally_connections{transport=\"polling\"} 0"), "{metrics}");
        "10,000 polls with unknown sids, all 400".to_owned()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_connect_floods_are_shed() {
    let (_dir, tally, token) = started().await;
    let addr = tally.addr;
    let flood_token = token.clone();
    survive(&tally, &token, "oversized frames and CONNECT floods", 16 * 1024, async move {
        // 50 websockets that each send a 2 MB message (maxPayload is 1 MB).
        let mut closed = 0;
        for _ in 0..50 {
            let mut ws = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await.unwrap();
            next_text(&mut ws).await;
            let huge = tokio_tungstenite::tungstenite::Message::text(format!("4{}", "x".repeat(2_000_000)));
            // The server may reset the connection before the message is all out.
            let sent = futures_util::SinkExt::send(&mut ws, huge).await;
            if sent.is_err() || closed_by_server(&mut ws).await {
                closed += 1;
            }
        }
        assert_eq!(closed, 50);
        // 200 connections each firing 100 CONNECTs with a bad token, then 200 sockets firing
        // 100 duplicate CONNECTs with a good one, without reading a byte of the answers. The
        // forged ones never pass the token check, so past the per-address cap on handshakes
        // in waiting, further connections from this address are refused (503).
        let mut floods = tokio::task::JoinSet::new();
        for i in 0..400 {
            let token = if i % 2 == 0 { "forged".to_owned() } else { flood_token.clone() };
            floods.spawn(async move {
                let Ok(mut ws) = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await else {
                    return 1;
                };
                for _ in 0..100 {
                    let connect = format!(r#"40{{"token":"{token}"}}"#);
                    if futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(connect))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                0
            });
        }
        let mut refused = 0;
        while let Some(outcome) = floods.join_next().await {
            refused += outcome.unwrap();
        }
        let sockets = eventually_sockets(addr, 1).await;
        format!(
            "50 x 2 MB frames closed; 400 x 100 CONNECTs ({refused} connections refused at the handshake cap); {sockets} socket left (the victim's)"
        )
    })
    .await;
}

/// Waits until the box counts `expected` websocket connections; returns the count.
async fn eventually_sockets(addr: SocketAddr, expected: u64) -> u64 {
    let mut count = u64::MAX;
    for _ in 0..100 {
        let metrics = get(addr, "/metrics").await.body;
        count = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tally_connections{transport=\"websocket\"} "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(u64::MAX);
        if count <= expected {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    count
}
