//! HTTP: range streaming of a large video from `tally serve` against nginx serving the same
//! file (sendfile on), and upload ingest into `tally serve` against `dd` writing the same bytes
//! to the same disk, with the server's memory growth while it ingests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::{Request, header};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::io::ReaderStream;

use crate::http::{Conn, body};
use crate::server::{Paths, Server};
use crate::table::Table;

/// Parallel players, each reading the whole file in ranges, as video elements do.
const READERS: usize = 4;
const RANGE: u64 = 8 << 20;
const PASSWORD: &str = "bench-password-not-secret";
const EMAIL: &str = "bench@bench.test";

pub async fn run(paths: &Paths, size: u64, repetitions: usize, port: u16) -> anyhow::Result<Vec<Table>> {
    // On the project's disk (not a tmpfs), where the service's data would be.
    let work = tempfile::Builder::new().prefix("tally-bench-http").tempdir_in(paths.root.join("target"))?;
    let source = work.path().join("source.mp4");
    write_source(&source, size).await?;
    let data = work.path().join("data");
    add_user(paths, &data).await?;
    let service = Server::tally_service(paths, &data, port, &[]).await?;
    let token = login(port).await?;
    let mib = size >> 20;

    let mut upload = Table::compare(&format!("Upload: one {mib} MiB file"), &["tally serve", "dd"]);
    upload.row("ingest rate", "MB/s", "≥ 0.8x dd");
    upload.row("server RSS growth while ingesting", "MiB", "< 32 MiB");
    upload.note = "Tally receives a multipart POST /api/videos from the load generator and writes, fsyncs and \
                   commits the file; `dd bs=1M conv=fsync` copies the same file (from the page cache, as the \
                   upload's source is) to the same disk. RSS growth is the server's peak RSS, sampled every 20 ms, \
                   minus its RSS before."
        .into();
    let mut kept = None;
    for repetition in 0..repetitions {
        for step in 0..2 {
            if (step + repetition) % 2 == 0 {
                eprintln!("[http {}/{repetitions}] upload", repetition + 1);
                let (rate, growth, id) = upload_once(&service, &token, &source, size).await?;
                upload.add("ingest rate", "tally serve", rate / 1e6);
                upload.add("server RSS growth while ingesting", "tally serve", growth / 1048576.0);
                if let Some(old) = kept.replace(id) {
                    delete_video(port, &token, &old).await?;
                }
            } else {
                eprintln!("[http {}/{repetitions}] dd", repetition + 1);
                let rate = dd_once(&source, &work.path().join("dd.out"), size).await?;
                upload.add("ingest rate", "dd", rate / 1e6);
            }
        }
    }
    let id = kept.context("no upload was kept")?;
    let original = find_original(&data, &id)?;

    let mut streaming = Table::compare(
        &format!("Range streaming: {READERS} readers, each the whole {mib} MiB file in 8 MiB ranges"),
        &["tally serve", "nginx"],
    );
    streaming.row("throughput", "MB/s", "≥ 0.9x nginx");
    streaming.row("server CPU per GiB served", "s", "");
    streaming.note = "The same file on the same disk, warm in the page cache for both: Tally's authenticated \
                      `GET /api/videos/{id}/stream` and Debian's nginx (sendfile on, worker_processes auto) \
                      serving it statically."
        .into();
    let nginx = Nginx::new(work.path(), &original, port + 1)?;
    for repetition in 0..repetitions {
        for step in 0..2 {
            let (column, server, path, auth) = if (step + repetition) % 2 == 0 {
                ("tally serve", None, format!("/api/videos/{id}/stream"), Some(token.as_str()))
            } else {
                ("nginx", Some(nginx.start().await?), "/original.mp4".to_owned(), None)
            };
            eprintln!("[http {}/{repetitions}] range streaming: {column}", repetition + 1);
            let measured = server.as_ref().unwrap_or(&service);
            let before = measured.stat()?.cpu;
            let rate = stream_all(measured.port, &path, auth, size).await?;
            let cpu = (measured.stat()?.cpu - before).as_secs_f64();
            streaming.add("throughput", column, rate / 1e6);
            streaming.add(
                "server CPU per GiB served",
                column,
                cpu / (READERS as f64 * size as f64 / (1u64 << 30) as f64),
            );
            if let Some(server) = server {
                server.stop().await;
            }
        }
    }
    service.stop().await;
    Ok(vec![upload, streaming])
}

/// A file of `size` bytes that no codec would mistake for anything (the upload path never
/// looks inside; processing it fails, which leaves the file in place for streaming).
async fn write_source(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in &mut block {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let mut file = tokio::fs::File::create(path).await?;
    let mut written = 0;
    while written < size {
        let n = (size - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n]).await?;
        written += n as u64;
    }
    file.sync_all().await?;
    Ok(())
}

pub(crate) async fn add_user(paths: &Paths, data: &Path) -> anyhow::Result<()> {
    let mut child = Command::new(paths.tally())
        .args(["user", "add", "--org", "bench", "--email", EMAIL, "--role", "admin"])
        .env("TALLY_DATA_DIR", data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("running tally user add")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{PASSWORD}\n").as_bytes()).await?;
    }
    anyhow::ensure!(child.wait().await?.success(), "tally user add failed");
    Ok(())
}

pub(crate) async fn login(port: u16) -> anyhow::Result<String> {
    let request = Request::post("/api/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body(serde_json::json!({ "email": EMAIL, "password": PASSWORD }).to_string()))?;
    let (status, answer) = Conn::open(port).await?.fetch(request).await?;
    anyhow::ensure!(status == 200, "login answered {status}: {}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(answer["accessToken"].as_str().context("no accessToken")?.to_owned())
}

/// Uploads `source` as one multipart POST; returns bytes per second, the server's RSS growth
/// (bytes) and the new video's id.
async fn upload_once(service: &Server, token: &str, source: &Path, size: u64) -> anyhow::Result<(f64, f64, String)> {
    let boundary = "tally-bench-boundary-7d1b";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nbench\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"bench.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() as u64 + size + tail.len() as u64;
    let file = tokio::fs::File::open(source).await?;
    let parts = futures_util::stream::iter([Ok(Bytes::from(head))])
        .chain(ReaderStream::with_capacity(file, 256 << 10))
        .chain(futures_util::stream::iter([Ok(Bytes::from(tail))]))
        .map(|chunk| chunk.map(hyper::body::Frame::data));
    let request = Request::post("/api/videos")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .header(header::CONTENT_LENGTH, length)
        .body(BodyExt::boxed(StreamBody::new(parts)))?;

    let before = service.stat()?.rss;
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (peak, pid) = (peak.clone(), service.pid());
        tokio::spawn(async move {
            loop {
                if let Ok(stat) = crate::procstat::ProcStat::read(pid) {
                    peak.fetch_max(stat.rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let result = Conn::open(service.port).await?.fetch(request).await;
    let elapsed = started.elapsed();
    sampler.abort();
    let (status, answer) = result?;
    if status != 201 {
        bail!("upload answered {status}: {}", String::from_utf8_lossy(&answer));
    }
    let video: serde_json::Value = serde_json::from_slice(&answer)?;
    let id = video["id"].as_str().context("upload answer without id")?.to_owned();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before) as f64;
    Ok((size as f64 / elapsed.as_secs_f64(), growth, id))
}

pub(crate) async fn delete_video(port: u16, token: &str, id: &str) -> anyhow::Result<()> {
    let request = Request::delete(format!("/api/videos/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(body(Bytes::new()))?;
    let (status, _) = Conn::open(port).await?.fetch(request).await?;
    anyhow::ensure!(status == 204 || status == 200, "delete answered {status}");
    Ok(())
}

/// Copies `source` to `target` with dd (1 MiB blocks, fsync at the end); bytes per second.
async fn dd_once(source: &Path, target: &Path, size: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new("dd")
        .arg(format!("if={}", source.display()))
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", "conv=fsync", "status=none"])
        .status()
        .await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(status.success(), "dd failed");
    tokio::fs::remove_file(target).await?;
    Ok(size as f64 / elapsed.as_secs_f64())
}

fn find_original(data: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let dir = data.join("videos").join(id);
    std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("original.")))
        .with_context(|| format!("no original in {}", dir.display()))
}

/// `READERS` parallel readers each fetch the whole file in `RANGE` pieces on one keep-alive
/// connection; total bytes per second.
async fn stream_all(port: u16, path: &str, token: Option<&str>, size: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        let (path, token) = (path.to_owned(), token.map(str::to_owned));
        readers.spawn(async move {
            let mut conn = Conn::open(port).await?;
            let mut start = 0;
            while start < size {
                let end = (start + RANGE).min(size) - 1;
                let mut request = Request::get(&path).header(header::RANGE, format!("bytes={start}-{end}"));
                if let Some(token) = &token {
                    request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
                }
                let response = conn.send(request.body(body(Bytes::new()))?).await?;
                anyhow::ensure!(response.status() == 206, "range answered {}", response.status());
                let mut body = response.into_body();
                let mut received = 0;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame?.into_data() {
                        received += data.len() as u64;
                    }
                }
                anyhow::ensure!(received == end - start + 1, "range {start}-{end} gave {received} bytes");
                start = end + 1;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = readers.join_next().await {
        done??;
    }
    Ok(READERS as f64 * size as f64 / started.elapsed().as_secs_f64())
}

/// Debian's nginx serving one file, run as a foreground process of our own.
struct Nginx {
    config: PathBuf,
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    fn new(work: &Path, file: &Path, port: u16) -> anyhow::Result<Nginx> {
        let prefix = work.join("nginx");
        let root = prefix.join("root");
        std::fs::create_dir_all(&root)?;
        std::os::unix::fs::symlink(file, root.join("original.mp4"))?;
        std::fs::write(root.join("ready"), "ok\n")?;
        // As root, nginx's workers would drop to `nobody`, who cannot read our files.
        let user = if is_root() { "user root;" } else { "" };
        let config = prefix.join("nginx.conf");
        let p = prefix.display();
        std::fs::write(
            &config,
            format!(
                "{user}
worker_processes auto;
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    types {{ video/mp4 mp4; }}
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
",
                root = root.display()
            ),
        )?;
        Ok(Nginx { config, prefix, port })
    }

    async fn start(&self) -> anyhow::Result<Server> {
        let mut command = Command::new("/usr/sbin/nginx");
        command.arg("-p").arg(&self.prefix).arg("-c").arg(&self.config).args(["-e", "stderr"]);
        Server::spawn("nginx", command, self.port, "/ready").await
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
