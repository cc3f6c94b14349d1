//! The soak: `tally serve` as the product runs, under a steady mix of what a box sees for the
//! whole run: sockets joining and leaving by the thousand, chat events fanned out to them,
//! uploads that get processed, and deletions. Between two waves, once the service has seen the
//! last wave go, its resident memory and open file descriptors are sampled: the same moment
//! of the cycle each time. After a warm-up third, the middle and last thirds are compared:
//! growth beyond a small bound is a leak and fails the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::{Request, header};

use super::media::make_video;
use super::streaming::{add_user, delete_video, login};
use crate::http::{Conn, body};
use crate::procstat::ProcStat;
use crate::server::{Paths, Server, UNLIMITED_CHAT};
use crate::sio::Client;

/// Growth from the middle to the last third that counts as a leak: both bounds are crossed.
const RSS_GROWTH_BYTES: u64 = 8 << 20;
const RSS_GROWTH_FRACTION: f64 = 0.15;
const FD_GROWTH: i64 = 16;

pub struct Settings {
    pub duration: Duration,
    /// Sockets connected in each wave.
    pub wave: usize,
    pub port: u16,
}

struct Sample {
    at: Duration,
    rss: u64,
    fds: usize,
    sockets_seen: u64,
    uploads: u64,
}

/// Runs the soak and returns its report (Markdown); an error when the service leaked or died.
pub async fn run(paths: &Paths, settings: &Settings) -> anyhow::Result<String> {
    let data = tempfile::tempdir()?;
    add_user(paths, data.path()).await?;
    let clip = data.path().join("soak-clip.mp4");
    make_video(&clip, 320, 180, 2).await?;
    let clip = Bytes::from(tokio::fs::read(&clip).await?);
    // A wave is a thousand sockets from one address at once: more than the handshakes in
    // waiting one address may have (a limit for browsers, not for a load generator).
    let settings_env = [UNLIMITED_CHAT[0], UNLIMITED_CHAT[1], ("TALLY_REALTIME__MAX_PENDING_PER_ADDRESS", "100000")];
    let service = Server::tally_service(paths, data.path(), settings.port, &settings_env).await?;
    let token = login(settings.port).await?;
    let sockets_seen = Arc::new(AtomicU64::new(0));
    let uploads = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + settings.duration;

    let mut load = tokio::task::JoinSet::new();
    load.spawn(chatter(settings.port, token.clone(), end));
    load.spawn(uploader(settings.port, token.clone(), clip, end, uploads.clone()));

    let started = Instant::now();
    let mut samples = Vec::new();
    let auth = serde_json::json!({ "token": token }).to_string();
    while Instant::now() < end {
        let joined = wave(settings.port, &auth, settings.wave).await?;
        sockets_seen.fetch_add(joined, Ordering::Relaxed);
        // Let the service see the wave go, then look at it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(done) = load.try_join_next() {
            done.context("a load task panicked")?.context("the load stopped")?;
        }
        // The service alone: its media workers come and go with each job.
        let rss = ProcStat::read(service.pid())?.rss;
        let fds = std::fs::read_dir(format!("/proc/{}/fd", service.pid()))?.count();
        samples.push(Sample {
            at: started.elapsed(),
            rss,
            fds,
            sockets_seen: sockets_seen.load(Ordering::Relaxed),
            uploads: uploads.load(Ordering::Relaxed),
        });
    }
    while let Some(done) = load.join_next().await {
        done.context("a load task panicked")?.context("the load stopped")?;
    }
    service.stop().await;
    judge(&samples, settings)
}

/// One wave: `size` sockets connect, stay a few seconds reading the chat they are sent, and
/// all leave. Returns how many joined.
async fn wave(port: u16, auth: &str, size: usize) -> anyhow::Result<u64> {
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..size {
        let auth = auth.to_owned();
        held.spawn(async move {
            let mut client = Client::connect(port, Some(&auth)).await?;
            let stay = Duration::from_millis(2000 + rand_below(3000));
            let _ = tokio::time::timeout(stay, async { while client.next().await.is_ok() {} }).await;
            anyhow::Ok(())
        });
    }
    let mut joined = 0;
    while let Some(done) = held.join_next().await {
        done??;
        joined += 1;
    }
    Ok(joined)
}

/// A chat message every 100 ms, fanned out to every socket of the organization.
async fn chatter(port: u16, token: String, end: Instant) -> anyhow::Result<()> {
    let auth = serde_json::json!({ "token": token }).to_string();
    let mut client = Client::connect(port, Some(&auth)).await?;
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        client.send(format!(r#"42{n}["chat:message",{{"text":"soak {n}"}}]"#)).await?;
        loop {
            if let crate::sio::Incoming::Ack(id, _) = client.next().await?
                && id == n
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// An upload every 3 s (each one processed by the service); the oldest are deleted so the
/// library stays at five videos.
async fn uploader(port: u16, token: String, clip: Bytes, end: Instant, count: Arc<AtomicU64>) -> anyhow::Result<()> {
    let boundary = "tally-soak-boundary";
    let mut kept = std::collections::VecDeque::new();
    while Instant::now() < end {
        let mut form = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"soak.mp4\"\r\n\
             Content-Type: video/mp4\r\n\r\n"
        )
        .into_bytes();
        form.extend_from_slice(&clip);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let request = Request::post("/api/videos")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(body(form))?;
        let (status, answer) = Conn::open(port).await?.fetch(request).await?;
        if status != 201 {
            bail!("upload answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        let video: serde_json::Value = serde_json::from_slice(&answer)?;
        kept.push_back(video["id"].as_str().context("upload without id")?.to_owned());
        count.fetch_add(1, Ordering::Relaxed);
        while kept.len() > 5 {
            if let Some(old) = kept.pop_front() {
                delete_video(port, &token, &old).await?;
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(())
}

fn rand_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) % n.max(1)
}

/// The report, or an error naming the leak.
fn judge(samples: &[Sample], settings: &Settings) -> anyhow::Result<String> {
    anyhow::ensure!(samples.len() >= 6, "too few samples ({}): run longer", samples.len());
    let third = samples.len() / 3;
    let mean = |part: &[Sample], f: &dyn Fn(&Sample) -> f64| part.iter().map(f).sum::<f64>() / part.len() as f64;
    let middle = &samples[third..2 * third];
    let last = &samples[2 * third..];
    let rss_middle = mean(middle, &|s| s.rss as f64);
    let rss_last = mean(last, &|s| s.rss as f64);
    let fds_middle = mean(middle, &|s| s.fds as f64);
    let fds_last = mean(last, &|s| s.fds as f64);
    let after_warmup = &samples[third..];
    let slope = slope_per_hour(after_warmup);
    let mib = |b: f64| b / 1048576.0;
    let final_sample = samples.last().map_or((0, 0), |s| (s.sockets_seen, s.uploads));

    let mut report = format!(
        "## Soak: {:.1} min, waves of {} sockets\n\n\
         {} sockets joined and left, {} uploads processed or failing, chat every 100 ms.\n\n\
         | | middle third | last third | growth |\n| --- | --- | --- | --- |\n\
         | RSS (MiB) | {:.1} | {:.1} | {:+.1} |\n| open fds | {:.1} | {:.1} | {:+.1} |\n\n\
         RSS slope after the warm-up third: {:+.1} MiB/hour.\n\n\
         | t (s) | RSS (MiB) | fds | sockets so far | uploads |\n| --- | --- | --- | --- | --- |\n",
        settings.duration.as_secs_f64() / 60.0,
        settings.wave,
        final_sample.0,
        final_sample.1,
        mib(rss_middle),
        mib(rss_last),
        mib(rss_last - rss_middle),
        fds_middle,
        fds_last,
        fds_last - fds_middle,
        mib(slope),
    );
    for s in samples {
        report.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} |\n",
            s.at.as_secs(),
            mib(s.rss as f64),
            s.fds,
            s.sockets_seen,
            s.uploads
        ));
    }
    let rss_growth = rss_last - rss_middle;
    if rss_growth > RSS_GROWTH_BYTES as f64 && rss_growth > rss_middle * RSS_GROWTH_FRACTION {
        bail!("{report}\nRSS grew {:.1} MiB from the middle to the last third: a leak", mib(rss_growth));
    }
    if fds_last - fds_middle > FD_GROWTH as f64 {
        bail!("{report}\nopen descriptors grew by {:.0}: a leak", fds_last - fds_middle);
    }
    Ok(report)
}

/// Least-squares slope of RSS over time, in bytes per hour.
fn slope_per_hour(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    let xs: Vec<f64> = samples.iter().map(|s| s.at.as_secs_f64()).collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.rss as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 { 0.0 } else { num / den * 3600.0 }
}
