//! Footprint: what Tally costs a Pi while nobody uses it. Idle memory, wakeups per minute,
//! time from start to serving, and the size of the stripped binary, for the product
//! (`tally serve`) and, beside the peers, for the bare Socket.IO servers.

use std::path::Path;
use std::time::Duration;

use crate::server::{Paths, Peer, Server};
use crate::table::Table;

/// Time for a fresh server to finish starting (sled, GStreamer registry, timers).
const SETTLE: Duration = Duration::from_secs(5);

pub async fn run(paths: &Paths, window: Duration, repetitions: usize, port: u16) -> anyhow::Result<Vec<Table>> {
    let mut product = Table::plain("Footprint of the product: `tally serve`, nobody connected", &["tally serve"]);
    product.row("idle RSS", "MiB", "< 20 MiB");
    product.row("start to serving (first /healthz answered)", "ms", "");
    product.row(&format!("wakeups while idle, per minute (over {} s)", window.as_secs()), "1/min", "");
    product.row("stripped binary, x86-64", "MB", "");
    product.row("stripped binary, aarch64", "MB", "");
    product.note = "A fresh data directory each run; sled, the job workers, the LED simulation and the device \
                    monitor all running. Wakeups are context switches of all its threads. The aarch64 size needs \
                    `scripts/cross aarch64 build` first."
        .into();
    let columns: Vec<&str> = Peer::ALL.iter().map(|p| p.name()).collect();
    let mut bare = Table::compare("Footprint of the bare Socket.IO servers (bench/servers)", &columns);
    bare.row("idle RSS", "MiB", "");
    bare.row("start to serving", "ms", "");
    bare.row(&format!("wakeups while idle, per minute (over {} s)", window.as_secs()), "1/min", "");
    bare.row("stripped binary", "MB", "");
    let wakeups = format!("wakeups while idle, per minute (over {} s)", window.as_secs());

    for repetition in 0..repetitions {
        eprintln!("[footprint {}/{repetitions}] start and idle memory", repetition + 1);
        let data = tempfile::Builder::new().prefix("tally-bench-footprint").tempdir_in(paths.root.join("target"))?;
        let service = Server::tally_service(paths, data.path(), port, &[]).await?;
        let mut servers = vec![("tally serve", service)];
        for (offset, peer) in Peer::order(repetition).into_iter().enumerate() {
            servers.push((peer.name(), Server::peer(peer, paths, port + 1 + offset as u16).await?));
        }
        tokio::time::sleep(SETTLE).await;
        // All idle side by side over one window, so the minute is paid once.
        let before: Vec<u64> = servers.iter().map(|(_, s)| s.stat().map(|s| s.switches)).collect::<Result<_, _>>()?;
        tokio::time::sleep(window).await;
        for ((name, server), before) in servers.iter().zip(before) {
            let stat = server.stat()?;
            let per_minute = (stat.switches - before) as f64 * 60.0 / window.as_secs_f64();
            let rss = stat.rss as f64 / 1048576.0;
            let startup = server.startup.as_secs_f64() * 1000.0;
            let table = if *name == "tally serve" { &mut product } else { &mut bare };
            table.add("idle RSS", name, rss);
            table.add(
                if *name == "tally serve" { "start to serving (first /healthz answered)" } else { "start to serving" },
                name,
                startup,
            );
            table.add(&wakeups, name, per_minute);
        }
        for (_, server) in servers {
            server.stop().await;
        }
    }

    if let Some(size) = stripped_size(&paths.tally(), "strip").await {
        product.add("stripped binary, x86-64", "tally serve", size);
    }
    let aarch64 = paths.root.join("target/aarch64-unknown-linux-gnu/release/tally");
    if let Some(size) = stripped_size(&aarch64, "aarch64-linux-gnu-strip").await {
        product.add("stripped binary, aarch64", "tally serve", size);
    }
    if let Some(size) = stripped_size(&paths.tally_bench_server(), "strip").await {
        bare.add("stripped binary", Peer::Tally.name(), size);
    }
    if let Some(size) = stripped_size(&paths.socketioxide(), "strip").await {
        bare.add("stripped binary", Peer::Socketioxide.name(), size);
    }
    Ok(vec![product, bare])
}

/// The size in MB of `binary` after `strip`, measured on a copy.
async fn stripped_size(binary: &Path, strip: &str) -> Option<f64> {
    if !binary.exists() {
        return None;
    }
    let copy = tempfile::NamedTempFile::new().ok()?;
    let status = tokio::process::Command::new(strip).arg("-o").arg(copy.path()).arg(binary).status().await.ok()?;
    if !status.success() {
        return None;
    }
    Some(std::fs::metadata(copy.path()).ok()?.len() as f64 / 1e6)
}
