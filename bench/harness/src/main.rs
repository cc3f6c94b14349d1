//! Tally's benchmark harness: runs every scenario against Tally and the software a user would
//! otherwise pick (socketioxide, the Node socket.io server, ffmpeg, nginx, dd), interleaved
//! and repeated, and reports medians with Tally / peer ratios. The load generator is ours:
//! one process holds tens of thousands of Socket.IO sessions.
//!
//! Run it through `bench/run`, which builds everything first.

mod http;
mod polling;
mod procstat;
mod report;
mod scenarios;
mod server;
mod sio;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use scenarios::{durability, footprint, media, realtime, rendition, soak, streaming};
use server::{Paths, Peer};

// Below Linux's ephemeral range (32768 and up), so none of the load generator's own outgoing
// connections can be holding a port a server is about to listen on.
const REALTIME_PORT: u16 = 21100;
const HTTP_PORT: u16 = 21200;
const FOOTPRINT_PORT: u16 = 21300;
const SOAK_PORT: u16 = 21400;
const DURABILITY_PORT: u16 = 21500;

#[derive(Parser)]
#[command(about = "Tally side by side with its peers; see bench/README.md")]
struct Args {
    /// Repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// A tiny run of every scenario that checks the harness works (CI); figures mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Scenario groups to run (default: all).
    #[arg(long, value_delimiter = ',', value_parser = ["realtime", "media", "rendition", "streaming", "footprint", "durability"])]
    only: Vec<String>,
    /// Where the report goes; BENCHMARKS.md keeps whatever lies outside its generated part.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The command line to print in the report (bench/run passes its own).
    #[arg(long, default_value = "bench/run")]
    command: String,
    /// The repository root.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Clients in the idle and fan-out room.
    #[arg(long, default_value_t = 10_000)]
    room: usize,
    /// The real-time servers to run (default: all); comparing needs all of them.
    #[arg(long, value_delimiter = ',', value_parser = Peer::parse)]
    peers: Vec<Peer>,
    /// Instead of benchmarking, hold `--room` websocket clients on a server already listening on
    /// this port until interrupted: load for a profiler attached to that server.
    #[arg(long)]
    hold: Option<u16>,
    /// With --hold: also emit a fan-out to the room every this many milliseconds.
    #[arg(long)]
    emit_every_ms: Option<u64>,
    /// Instead of benchmarking, soak `tally serve` for this many minutes (see
    /// scenarios/soak.rs); the report goes to --soak-out and a leak fails the run.
    #[arg(long)]
    soak: Option<f64>,
    #[arg(long, default_value = "target/soak.md")]
    soak_out: PathBuf,
    /// With --soak: sockets connected in each wave.
    #[arg(long, default_value_t = 1000)]
    wave: usize,
    /// Internal: run one round of the durability scenario's SQLite writers or disk loop in
    /// this process (so that it can be started with a slow disk's shim) and print its figures.
    #[arg(long, hide = true)]
    durable_worker: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(worker) = &args.durable_worker {
        return durability::worker(worker);
    }
    // The load generator holds a descriptor per client, and so does each server (which
    // inherits the raised limit).
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    anyhow::ensure!(limit >= args.room as u64 + 1024, "the open-file limit is {limit}; raise it (ulimit -n)");
    if let Some(port) = args.hold {
        return realtime::hold(port, args.room, args.emit_every_ms.map(Duration::from_millis)).await;
    }
    let paths = Paths { root: std::fs::canonicalize(&args.root)? };
    if let Some(minutes) = args.soak {
        let settings =
            soak::Settings { duration: Duration::from_secs_f64(minutes * 60.0), wave: args.wave, port: SOAK_PORT };
        let report = soak::run(&paths, &settings).await?;
        println!("{report}");
        std::fs::write(&args.soak_out, &report)?;
        eprintln!("soak report written to {}", args.soak_out.display());
        return Ok(());
    }
    let wants = |group: &str| args.only.is_empty() || args.only.iter().any(|g| g == group);
    let repetitions = if args.smoke { 1 } else { args.repetitions.max(1) };
    let mut tables = Vec::new();
    let peers = if args.peers.is_empty() { Peer::ALL.to_vec() } else { args.peers.clone() };

    if wants("realtime") {
        let settings = if args.smoke {
            realtime::Settings {
                room: 50,
                fanout_rounds: 5,
                echo_clients: 5,
                echo_time: Duration::from_secs(1),
                polling_clients: 10,
                polling_time: Duration::from_secs(2),
                repetitions,
                port: REALTIME_PORT,
                peers: peers.clone(),
            }
        } else {
            realtime::Settings {
                room: args.room,
                fanout_rounds: 100,
                echo_clients: 100,
                echo_time: Duration::from_secs(10),
                polling_clients: 500,
                polling_time: Duration::from_secs(20),
                repetitions,
                port: REALTIME_PORT,
                peers: peers.clone(),
            }
        };
        let realtime::Tables { idle, fanout, echo, polling } = realtime::run(&paths, &settings).await?;
        tables.extend([idle, fanout, echo, polling]);
    }
    if wants("media") {
        let seconds = if args.smoke { 1 } else { 10 };
        tables.extend(media::run(&paths, seconds, repetitions).await?);
    }
    if wants("rendition") {
        let lengths: &[u32] = if args.smoke { &[1] } else { &[10, 30] };
        tables.extend(rendition::run(&paths, lengths, repetitions).await?);
    }
    if wants("streaming") {
        let size = if args.smoke { 16 << 20 } else { 1 << 30 };
        tables.extend(streaming::run(&paths, size, repetitions, HTTP_PORT).await?);
    }
    if wants("durability") {
        let settings = durability::Settings {
            senders: vec![1, 10, 100],
            time: if args.smoke { Duration::from_secs(1) } else { Duration::from_secs(10) },
            repetitions,
            port: DURABILITY_PORT,
            slow_sync: Duration::from_millis(5),
        };
        tables.extend(durability::run(&paths, &settings).await?);
    }
    if wants("footprint") {
        let idle_window = if args.smoke { Duration::from_secs(2) } else { Duration::from_secs(60) };
        tables.extend(footprint::run(&paths, idle_window, repetitions, FOOTPRINT_PORT).await?);
    }

    let report = report::render(&tables, &args.command, repetitions, args.smoke);
    println!("{report}");
    report::write(&args.out, &report)?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}
