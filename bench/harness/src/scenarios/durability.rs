//! Durable acknowledged writes. `tally serve` takes `chat:message` from 1, 10 and 100
//! concurrent senders, each waiting for its ack (given only once the message is durable,
//! through the store's group-committed flush) before sending the next. Each sender is alone
//! in an organization of its own, so the chat's fan-out to the rest of the organization is not
//! part of the measure: what is measured is the durable write. Beside it, what a user
//! might pick instead, doing the same: SQLite (WAL, `synchronous=FULL`, one transaction per
//! message, as many concurrent writers, each with its own connection). And the disk's own
//! limit: one writer, a small write then `fdatasync`, in a loop. Everything on the project's
//! disk, where the service's data would be.
//!
//! Then all of it again on a slow disk, emulated: the shim of `tests/faults/stall-sync.c`,
//! preloaded into `tally serve` and into the processes running SQLite and the disk loop,
//! makes every fsync, fdatasync and sync_file_range on their files take `slow_sync` longer.
//! This VM's virtual disk syncs in a fraction of a millisecond; an SD card, where the box
//! keeps its data, is far slower, and that is where group commit matters.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::server::{Paths, Server, UNLIMITED_CHAT};
use crate::sio::{Client, Incoming};
use crate::table::{Table, median, quantile};

pub struct Settings {
    /// Concurrent senders of each round.
    pub senders: Vec<usize>,
    /// How long each round sends.
    pub time: Duration,
    pub repetitions: usize,
    pub port: u16,
    /// How much longer every sync call takes on the emulated slow disk.
    pub slow_sync: Duration,
}

/// What one round measured: acknowledged writes per second, and each one's latency (ms).
#[derive(serde::Serialize, serde::Deserialize)]
struct Round {
    rate: f64,
    latencies: Vec<f64>,
}

impl Round {
    fn of(latencies: Vec<f64>, elapsed: Duration) -> Round {
        Round { rate: latencies.len() as f64 / elapsed.as_secs_f64(), latencies }
    }
}

/// The disk the rounds write to.
#[derive(Clone)]
enum Disk {
    /// The project's disk as it is.
    AsIs,
    /// The same, but every sync takes `delay` longer (the shim at `shim`, preloaded).
    Slow { shim: PathBuf, delay: Duration },
}

impl Disk {
    fn title(&self, what: &str) -> String {
        match self {
            Disk::AsIs => what.to_owned(),
            Disk::Slow { delay, .. } => {
                format!("{what}, on a slow disk (every sync {} ms longer, emulated)", delay.as_millis())
            }
        }
    }

    /// The environment that makes a process see this disk for the files under `dir`.
    fn env(&self, dir: &Path) -> Vec<(String, String)> {
        match self {
            Disk::AsIs => Vec::new(),
            Disk::Slow { shim, delay } => vec![
                ("LD_PRELOAD".into(), shim.display().to_string()),
                ("STALL_SYNC_DIR".into(), dir.display().to_string()),
                ("STALL_SYNC_DELAY_US".into(), delay.as_micros().to_string()),
            ],
        }
    }
}

pub async fn run(paths: &Paths, settings: &Settings) -> anyhow::Result<Vec<Table>> {
    let work = tempfile::Builder::new().prefix("tally-bench-durable").tempdir_in(paths.root.join("target"))?;
    let shim = build_shim(paths, work.path()).await?;
    let data = work.path().join("tally");
    let most = settings.senders.iter().copied().max().unwrap_or(1);
    let tokens = senders(paths, &data, most).await?;
    let mut tables = Vec::new();
    for disk in [Disk::AsIs, Disk::Slow { shim, delay: settings.slow_sync }] {
        tables.extend(measure(paths, settings, &disk, work.path(), &data, &tokens).await?);
    }
    Ok(tables)
}

/// Every round on one disk: the tables of writes, of group commit, and of the disk itself.
async fn measure(
    paths: &Paths,
    settings: &Settings,
    disk: &Disk,
    work: &Path,
    data: &Path,
    tokens: &[String],
) -> anyhow::Result<Vec<Table>> {
    let most = settings.senders.iter().copied().max().unwrap_or(1);
    let least = settings.senders.iter().copied().min().unwrap_or(1);
    let mut writes = Table::compare(&disk.title("Durable acknowledged writes"), &["Tally", "SQLite"]);
    for &senders in &settings.senders {
        let goal = if senders == most { "≥ 1.0x SQLite" } else { "" };
        writes.row(&format!("acks per second, {senders} senders"), "/s", goal);
        writes.row(&format!("ack p99, {senders} senders"), "ms", "");
    }
    writes.note = "Tally: `chat:message` over the websocket to `tally serve`, one socket per sender, each sender \
                   an account alone in its organization (the chat's rate limit lifted), each sending its next \
                   message once the last is acknowledged; an ack means the message is durable (the store's one \
                   flusher: sled's flush then an fdatasync of its log, one for every write waiting). SQLite: \
                   rusqlite with SQLite bundled, WAL, `synchronous=FULL`, `BEGIN IMMEDIATE`, one INSERT of the \
                   same message, COMMIT, a connection and a thread per writer, busy timeout 10 s (SQLite's busy \
                   handler sleeps between tries; a BUSY past it is tried again)."
        .into();
    let mut own = Table::plain(&disk.title("The disk's own limit: one writer, 100-byte write + fdatasync"), &["disk"]);
    own.row("fdatasyncs per second", "/s", "");
    own.row("fdatasync latency p50", "ms", "");
    own.row("fdatasync latency p99", "ms", "");
    let mut goals = Table::plain(&disk.title("Group commit at work"), &["Tally"]);
    goals.row(&format!("acks per second, {most} senders / {least} sender"), "x", "≥ 20x");
    goals.row(&format!("ack p99 at {most} senders / the disk's fdatasync p50"), "x", "≤ 3");
    goals.note = "Both from the same runs: the rows of the two tables around this one.".into();

    let label = match disk {
        Disk::AsIs => "the disk as it is",
        Disk::Slow { .. } => "a slow disk",
    };
    let step = |name: &str, repetition: usize| {
        eprintln!("[durability {}/{}] {label}: {name}", repetition + 1, settings.repetitions);
    };
    for repetition in 0..settings.repetitions {
        step("the disk", repetition);
        let sync = worker_round(disk, work, "disk", 1, settings.time).await?;
        let sync_p50 = median(&sync.latencies).unwrap_or(f64::NAN);
        own.add("fdatasyncs per second", "disk", sync.rate);
        own.add("fdatasync latency p50", "disk", sync_p50);
        own.add("fdatasync latency p99", "disk", quantile(&sync.latencies, 0.99));

        let mut env: Vec<(String, String)> =
            UNLIMITED_CHAT.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.extend(disk.env(data));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let service = Server::tally_service(paths, data, settings.port, &env).await?;
        let mut tally = Vec::new();
        for &senders in &settings.senders {
            // Tally and SQLite take turns going first.
            for turn in 0..2 {
                let (column, round) = if (turn + repetition) % 2 == 0 {
                    step(&format!("Tally, {senders} senders"), repetition);
                    ("Tally", tally_round(settings.port, &tokens[..senders], settings.time).await?)
                } else {
                    step(&format!("SQLite, {senders} writers"), repetition);
                    ("SQLite", worker_round(disk, work, "sqlite", senders, settings.time).await?)
                };
                let p99 = quantile(&round.latencies, 0.99);
                writes.add(&format!("acks per second, {senders} senders"), column, round.rate);
                writes.add(&format!("ack p99, {senders} senders"), column, p99);
                if column == "Tally" {
                    tally.push((senders, round.rate, p99));
                }
            }
        }
        service.stop().await;
        let at = |n: usize| tally.iter().find(|(s, _, _)| *s == n).map(|&(_, rate, p99)| (rate, p99));
        if let (Some((most_rate, most_p99)), Some((least_rate, _))) = (at(most), at(least)) {
            goals.add(&format!("acks per second, {most} senders / {least} sender"), "Tally", most_rate / least_rate);
            goals.add(&format!("ack p99 at {most} senders / the disk's fdatasync p50"), "Tally", most_p99 / sync_p50);
        }
    }
    Ok(vec![writes, goals, own])
}

/// Compiles the slow disk's shim (the tests' own, `tests/faults/stall-sync.c`).
async fn build_shim(paths: &Paths, work: &Path) -> anyhow::Result<PathBuf> {
    let source = paths.root.join("tests/faults/stall-sync.c");
    let shim = work.join("libstallsync.so");
    let built =
        Command::new("cc").args(["-O2", "-shared", "-fPIC", "-o"]).arg(&shim).arg(&source).arg("-ldl").status().await?;
    anyhow::ensure!(built.success(), "compiling {}", source.display());
    Ok(shim)
}

/// `count` accounts, each alone in an organization of its own, made with `tally user add`
/// before the service starts; their access tokens (a day long, from `tally token`).
async fn senders(paths: &Paths, data: &Path, count: usize) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(count);
    for n in 0..count {
        let (org, email) = (format!("bench-{n}"), format!("sender-{n}@bench.test"));
        let mut child = Command::new(paths.tally())
            .args(["user", "add", "--org", &org, "--email", &email, "--role", "viewer"])
            .env("TALLY_DATA_DIR", data)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running tally user add")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(b"bench-password-not-secret\n").await?;
        }
        let added = child.wait_with_output().await?;
        anyhow::ensure!(added.status.success(), "tally user add failed");
        // "added EMAIL (ROLE) to organization NAME [user ID, org ID]"
        let said = String::from_utf8_lossy(&added.stdout);
        let ids = said.rsplit_once('[').map(|(_, ids)| ids.trim_end().trim_end_matches(']')).context("no ids")?;
        let (user, org_id) = ids.split_once(", ").context("no ids")?;
        let (user, org_id) = (user.trim_start_matches("user "), org_id.trim_start_matches("org "));
        let token = Command::new(paths.tally())
            .args(["token", "--user", user, "--org", org_id, "--role", "viewer", "--ttl", "86400"])
            .env("TALLY_DATA_DIR", data)
            .output()
            .await?;
        anyhow::ensure!(token.status.success(), "tally token failed");
        tokens.push(String::from_utf8(token.stdout)?.trim().to_owned());
    }
    Ok(tokens)
}

/// One socket per token, each saying numbered messages one after another for `time`.
async fn tally_round(port: u16, tokens: &[String], time: Duration) -> anyhow::Result<Round> {
    let mut clients = Vec::with_capacity(tokens.len());
    for token in tokens {
        let auth = serde_json::json!({ "token": token }).to_string();
        clients.push(Client::connect(port, Some(&auth)).await?);
    }
    let started = Instant::now();
    let deadline = started + time;
    let mut tasks = tokio::task::JoinSet::new();
    for (sender, mut client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for n in 1u64.. {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                client.send(format!(r#"42{n}["chat:message",{{"text":"bench {sender} {n}"}}]"#)).await?;
                loop {
                    if let Incoming::Ack(id, answer) = client.next().await?
                        && id == n
                    {
                        anyhow::ensure!(answer.contains("\"message\""), "message {n} refused: {answer}");
                        break;
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(sender) = tasks.join_next().await {
        latencies.extend(sender??);
    }
    Ok(Round::of(latencies, started.elapsed()))
}

/// Runs `kind` (`sqlite` with `writers` writers, or `disk`) for `time` in a child process of
/// this harness that sees `disk`, and reads back what it measured.
async fn worker_round(disk: &Disk, work: &Path, kind: &str, writers: usize, time: Duration) -> anyhow::Result<Round> {
    static ROUNDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let round = ROUNDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = work.join(format!("{kind}-{round}"));
    std::fs::create_dir_all(&dir)?;
    let output = Command::new(std::env::current_exe()?)
        .arg("--durable-worker")
        .arg(format!("{kind}:{writers}:{}:{}", time.as_millis(), dir.display()))
        .envs(disk.env(&dir))
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(output.status.success(), "the {kind} worker failed");
    std::fs::remove_dir_all(&dir)?;
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The child's side of [`worker_round`]: `KIND:WRITERS:TIME_MS:DIR`; prints the round as JSON.
pub fn worker(spec: &str) -> anyhow::Result<()> {
    let mut parts = spec.splitn(4, ':');
    let (kind, writers, time, dir) = (parts.next(), parts.next(), parts.next(), parts.next());
    let (Some(kind), Some(writers), Some(time), Some(dir)) = (kind, writers, time, dir) else {
        anyhow::bail!("a worker is KIND:WRITERS:TIME_MS:DIR, not {spec:?}");
    };
    let (writers, time, dir) = (writers.parse()?, Duration::from_millis(time.parse()?), Path::new(dir));
    let round = match kind {
        "sqlite" => sqlite_round(&dir.join("chat.db"), writers, time)?,
        "disk" => fdatasync_loop(&dir.join("fdatasync.bin"), time)?,
        other => anyhow::bail!("unknown worker {other:?}"),
    };
    println!("{}", serde_json::to_string(&round)?);
    Ok(())
}

/// `writers` threads, each with its own connection, inserting one message per transaction.
fn sqlite_round(path: &Path, writers: usize, time: Duration) -> anyhow::Result<Round> {
    let setup = rusqlite::Connection::open(path)?;
    setup.pragma_update(None, "journal_mode", "WAL")?;
    setup.execute_batch("CREATE TABLE chat (id INTEGER PRIMARY KEY, org TEXT NOT NULL, author TEXT NOT NULL, text TEXT NOT NULL, created_at INTEGER NOT NULL)")?;
    drop(setup);
    let started = Instant::now();
    let deadline = started + time;
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let path = path.to_owned();
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let mut db = rusqlite::Connection::open(&path)?;
                db.busy_timeout(Duration::from_secs(10))?;
                db.pragma_update(None, "synchronous", "FULL")?;
                let mut latencies = Vec::new();
                for n in 1u64.. {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let sent = Instant::now();
                    // What an application does with SQLITE_BUSY past the busy handler: try again.
                    while let Err(error) = insert(&mut db, writer, n) {
                        if error.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy) {
                            return Err(error.into());
                        }
                    }
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| anyhow::anyhow!("an SQLite writer panicked"))??);
    }
    Ok(Round::of(latencies, started.elapsed()))
}

/// One message in a transaction of its own.
fn insert(db: &mut rusqlite::Connection, writer: usize, n: u64) -> rusqlite::Result<()> {
    let transaction = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    transaction.execute(
        "INSERT INTO chat (org, author, text, created_at) VALUES (?1, ?2, ?3, ?4)",
        ("bench", "bench@bench.test", format!("bench {writer} {n}"), n as i64),
    )?;
    transaction.commit()
}

/// One writer appending 100 bytes and calling fdatasync, for `time`.
fn fdatasync_loop(path: &Path, time: Duration) -> anyhow::Result<Round> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
    let record = [0x5au8; 100];
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < time {
        let sent = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Round::of(latencies, started.elapsed()))
}
