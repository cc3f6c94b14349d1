//! The real-time scenarios, run against each Socket.IO server in turn: idle connections and
//! fan-out (on the same 10k clients), echo with acks, and polling-only clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use tokio::task::JoinSet;

use crate::polling::PollingClient;
use crate::server::{Paths, Peer, Server};
use crate::sio::{self, Client, Emitter, Incoming};
use crate::table::{Table, quantile};

pub struct Settings {
    /// Clients of the idle and fan-out scenarios.
    pub room: usize,
    pub fanout_rounds: usize,
    pub echo_clients: usize,
    pub echo_time: Duration,
    pub polling_clients: usize,
    pub polling_time: Duration,
    pub repetitions: usize,
    pub port: u16,
    /// The servers to run (all but when profiling one).
    pub peers: Vec<Peer>,
}

/// Connections opened at once; a crowd of browsers reconnecting after a restart.
const CONNECTING_AT_ONCE: usize = 256;
/// Time for a server to settle (allocator, timers) before and after being measured.
const SETTLE: Duration = Duration::from_secs(2);
const EMITTER_AUTH: &str = r#"{"emitter":true}"#;
/// A fan-out event about as large as a `video:progress` update.
const FANOUT_BODY: &str = r#""video":"01JBENCHVIDEO0000000000000","stage":"analysis","progress":0.42"#;

pub struct Tables {
    pub idle: Table,
    pub fanout: Table,
    pub echo: Table,
    pub polling: Table,
}

pub async fn run(paths: &Paths, settings: &Settings) -> anyhow::Result<Tables> {
    let columns: Vec<&str> = Peer::ALL.iter().map(|p| p.name()).collect();
    let mut idle =
        Table::compare(&format!("Idle connections: {} websocket clients in one room", settings.room), &columns);
    idle.row("server RSS per connection", "KB", "≤ 8 KB");
    idle.row("server CPU to accept them all", "s", "≤ 1 s for 10k");
    idle.note = "RSS after the clients connected and settled minus RSS before, divided by the clients; CPU is \
                 user + system time from /proc over the connecting."
        .into();
    let mut fanout = Table::compare(
        &format!("Fan-out: one event to a room of {}, {} times", settings.room, settings.fanout_rounds),
        &columns,
    );
    fanout.row("emit to last receipt, p50", "ms", "");
    fanout.row("emit to last receipt, p99", "ms", "≤ 0.5x socketioxide");
    fanout.row("server CPU per million deliveries", "s", "≤ 0.5x socketioxide");
    fanout.row("of which in the kernel", "s", "");
    fanout.note = "A separate emitter client sends `fanout`; the server emits `tick` to the room. Latency runs from \
                   the emitter's send to the moment the last of the room's clients has the event, measured on one \
                   clock in the load generator (which shares the machine's cores with the server)."
        .into();
    let mut echo =
        Table::compare(&format!("Echo: {} clients, emit with ack in a closed loop", settings.echo_clients), &columns);
    echo.row("acks per second", "1/s", "≥ 1.0x socketioxide");
    echo.row("server CPU per 10k acks", "s", "≤ 0.8x socketioxide");
    echo.row("of which in the kernel", "s", "");
    let mut polling = Table::compare(
        &format!("Polling: {} long-polling clients, one event per second each", settings.polling_clients),
        &columns,
    );
    polling.row("server CPU", "% of a core", "");
    polling.row("server RSS", "MB", "");
    polling.row("events delivered", "%", "100 %");

    for repetition in 0..settings.repetitions {
        for peer in Peer::order(repetition).into_iter().filter(|p| settings.peers.contains(p)) {
            let name = peer.name();
            eprintln!("[realtime {}/{}] {name}: idle + fan-out", repetition + 1, settings.repetitions);
            let server = Server::peer(peer, paths, settings.port).await?;
            let (per_connection, accept_cpu, latencies, (cpu_per_million, kernel_per_million)) =
                idle_and_fanout(&server, settings).await.with_context(|| format!("{name}: idle + fan-out"))?;
            server.stop().await;
            idle.add("server RSS per connection", name, per_connection / 1000.0);
            idle.add("server CPU to accept them all", name, accept_cpu);
            fanout.add("emit to last receipt, p50", name, quantile(&latencies, 0.5));
            fanout.add("emit to last receipt, p99", name, quantile(&latencies, 0.99));
            fanout.add("server CPU per million deliveries", name, cpu_per_million);
            fanout.add("of which in the kernel", name, kernel_per_million);

            eprintln!("[realtime {}/{}] {name}: echo", repetition + 1, settings.repetitions);
            let server = Server::peer(peer, paths, settings.port).await?;
            let (rate, cpu_per_10k, kernel_per_10k) =
                run_echo(&server, settings).await.with_context(|| format!("{name}: echo"))?;
            server.stop().await;
            echo.add("acks per second", name, rate);
            echo.add("server CPU per 10k acks", name, cpu_per_10k);
            echo.add("of which in the kernel", name, kernel_per_10k);

            eprintln!("[realtime {}/{}] {name}: polling", repetition + 1, settings.repetitions);
            let server = Server::peer(peer, paths, settings.port).await?;
            let (cpu_percent, rss, delivered) =
                run_polling(&server, settings).await.with_context(|| format!("{name}: polling"))?;
            server.stop().await;
            polling.add("server CPU", name, cpu_percent);
            polling.add("server RSS", name, rss / 1e6);
            polling.add("events delivered", name, delivered * 100.0);
        }
    }
    Ok(Tables { idle, fanout, echo, polling })
}

/// When each fan-out round reached how many clients, and when the last one got it.
struct Deliveries {
    epoch: Instant,
    counts: Vec<AtomicUsize>,
    last: Vec<AtomicU64>,
}

impl Deliveries {
    fn new(rounds: usize) -> Deliveries {
        Deliveries {
            epoch: Instant::now(),
            counts: (0..rounds).map(|_| AtomicUsize::new(0)).collect(),
            last: (0..rounds).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn record(&self, event: &str) {
        if let Some(seq) = sio::seq(event).filter(|&seq| seq < self.counts.len()) {
            self.last[seq].fetch_max(self.now(), Ordering::Relaxed);
            self.counts[seq].fetch_add(1, Ordering::Release);
        }
    }
}

/// Connects `count` websocket clients; each runs until the set is dropped, feeding `tick`
/// events to `deliveries`.
async fn connect_room(
    port: u16,
    count: usize,
    deliveries: &Arc<Deliveries>,
    clients: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let mut connecting =
        stream::iter(0..count).map(|_| Client::connect(port, None)).buffer_unordered(CONNECTING_AT_ONCE);
    while let Some(client) = connecting.next().await {
        let mut client = client?;
        let deliveries = deliveries.clone();
        clients.spawn(async move {
            while let Ok(incoming) = client.next().await {
                if let Incoming::Event(event) = incoming {
                    deliveries.record(&event);
                }
            }
        });
    }
    Ok(())
}

/// Connects `count` clients to the server on `port` and keeps them until Ctrl-C, emitting a
/// fan-out to them every `emit_every` if given.
pub async fn hold(port: u16, count: usize, emit_every: Option<Duration>) -> anyhow::Result<()> {
    let deliveries = Arc::new(Deliveries::new(0));
    let mut clients = JoinSet::new();
    connect_room(port, count, &deliveries, &mut clients).await?;
    eprintln!("holding {count} clients on port {port}; Ctrl-C ends");
    if let Some(every) = emit_every {
        let emitter = Emitter::connect(port, Some(EMITTER_AUTH)).await?;
        clients.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if emitter.send(format!(r#"42["fanout",{{"seq":0,{FANOUT_BODY}}}]"#)).await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::signal::ctrl_c().await?;
    clients.shutdown().await;
    Ok(())
}

/// Returns RSS bytes per connection, CPU seconds to accept, fan-out latencies (ms) and CPU
/// seconds (all, and the kernel's) per million deliveries.
async fn idle_and_fanout(server: &Server, settings: &Settings) -> anyhow::Result<(f64, f64, Vec<f64>, (f64, f64))> {
    let deliveries = Arc::new(Deliveries::new(settings.fanout_rounds));
    let mut clients = JoinSet::new();
    let emitter = Emitter::connect(server.port, Some(EMITTER_AUTH)).await?;
    tokio::time::sleep(SETTLE).await;
    let before = server.stat()?;
    connect_room(server.port, settings.room, &deliveries, &mut clients).await?;
    tokio::time::sleep(SETTLE).await;
    let after = server.stat()?;
    let per_connection = after.rss.saturating_sub(before.rss) as f64 / settings.room as f64;
    let accept_cpu = (after.cpu - before.cpu).as_secs_f64();

    let mut latencies = Vec::with_capacity(settings.fanout_rounds);
    let cpu_before = server.stat()?;
    for seq in 0..settings.fanout_rounds {
        let sent = deliveries.now();
        emitter.send(format!(r#"42["fanout",{{"seq":{seq},{FANOUT_BODY}}}]"#)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while deliveries.counts[seq].load(Ordering::Acquire) < settings.room {
            if Instant::now() > deadline {
                bail!(
                    "round {seq}: {} of {} clients got the event within 30 s",
                    deliveries.counts[seq].load(Ordering::Acquire),
                    settings.room
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let last = deliveries.last[seq].load(Ordering::Relaxed);
        latencies.push(last.saturating_sub(sent) as f64 / 1e6);
    }
    let cpu_after = server.stat()?;
    let per_million = (settings.fanout_rounds * settings.room) as f64 / 1e6;
    let cpu = (cpu_after.cpu - cpu_before.cpu).as_secs_f64() / per_million;
    let kernel = (cpu_after.system - cpu_before.system).as_secs_f64() / per_million;
    clients.shutdown().await;
    Ok((per_connection, accept_cpu, latencies, (cpu, kernel)))
}

/// Returns acks per second and server CPU seconds (all, and the kernel's) per 10k acks.
async fn run_echo(server: &Server, settings: &Settings) -> anyhow::Result<(f64, f64, f64)> {
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for _ in 0..settings.echo_clients {
        let mut client = Client::connect(server.port, Some(EMITTER_AUTH)).await?;
        let (acks, stop) = (acks.clone(), stop.clone());
        clients.spawn(async move {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client.send(format!(r#"42{id}["echo",{{"n":{id},"text":"hello"}}]"#)).await?;
                loop {
                    if let Incoming::Ack(answered, _) = client.next().await?
                        && answered == id
                    {
                        break;
                    }
                }
                acks.fetch_add(1, Ordering::Relaxed);
                id += 1;
            }
            anyhow::Ok(())
        });
    }
    // Warm up (connection buffers, allocator), then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acks_before, cpu_before, started) = (acks.load(Ordering::Relaxed), server.stat()?, Instant::now());
    tokio::time::sleep(settings.echo_time).await;
    let (acks_after, cpu_after, elapsed) = (acks.load(Ordering::Relaxed), server.stat()?, started.elapsed());
    stop.store(true, Ordering::Relaxed);
    clients.shutdown().await;
    let answered = (acks_after - acks_before) as f64;
    if answered == 0.0 {
        bail!("no acks in {:?}", settings.echo_time);
    }
    let per_10k = answered / 10_000.0;
    let cpu = (cpu_after.cpu - cpu_before.cpu).as_secs_f64() / per_10k;
    let kernel = (cpu_after.system - cpu_before.system).as_secs_f64() / per_10k;
    Ok((answered / elapsed.as_secs_f64(), cpu, kernel))
}

/// Returns server CPU (% of one core), server RSS (bytes) and the share of events delivered.
async fn run_polling(server: &Server, settings: &Settings) -> anyhow::Result<(f64, f64, f64)> {
    let received = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    let mut connecting = stream::iter(0..settings.polling_clients)
        .map(|_| PollingClient::connect(server.port))
        .buffer_unordered(CONNECTING_AT_ONCE);
    while let Some(client) = connecting.next().await {
        let mut client = client?;
        let received = received.clone();
        clients.spawn(async move {
            loop {
                let events = client.poll().await?;
                let ticks = events.iter().filter(|e| e.starts_with("[\"tick\"")).count();
                received.fetch_add(ticks as u64, Ordering::Relaxed);
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        });
    }
    let emitter = Emitter::connect(server.port, Some(EMITTER_AUTH)).await?;
    tokio::time::sleep(SETTLE).await;
    let seconds = settings.polling_time.as_secs().max(1);
    let (before, started) = (server.stat()?, Instant::now());
    let mut second = tokio::time::interval(Duration::from_secs(1));
    for seq in 0..seconds {
        second.tick().await;
        emitter.send(format!(r#"42["fanout",{{"seq":{seq},{FANOUT_BODY}}}]"#)).await?;
    }
    second.tick().await;
    let (after, elapsed) = (server.stat()?, started.elapsed());
    // The last event may still be on its way to a client that was posting a pong.
    let expected = seconds * settings.polling_clients as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = received.load(Ordering::Relaxed) as f64 / expected as f64;
    clients.shutdown().await;
    let cpu = (after.cpu - before.cpu).as_secs_f64() / elapsed.as_secs_f64() * 100.0;
    Ok((cpu, after.rss as f64, delivered))
}
