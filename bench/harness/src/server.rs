//! The servers under test: started fresh for every measurement, waited for until they listen,
//! measured through `/proc`, and killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::procstat::ProcStat;

/// The Socket.IO servers of the real-time scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Tally,
    Socketioxide,
    Node,
}

impl Peer {
    pub const ALL: [Peer; 3] = [Peer::Tally, Peer::Socketioxide, Peer::Node];

    pub fn parse(name: &str) -> Result<Peer, String> {
        match name {
            "tally" => Ok(Peer::Tally),
            "socketioxide" => Ok(Peer::Socketioxide),
            "node" => Ok(Peer::Node),
            _ => Err(format!("unknown server {name:?}: tally, socketioxide or node")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Peer::Tally => "Tally",
            Peer::Socketioxide => "socketioxide",
            Peer::Node => "Node socket.io",
        }
    }

    /// The order of one repetition: rotated each time, so no server always goes first (A/B
    /// interleaving: slow drift of the machine spreads over all of them).
    pub fn order(repetition: usize) -> Vec<Peer> {
        let mut order = Peer::ALL.to_vec();
        order.rotate_left(repetition % Peer::ALL.len());
        order
    }
}

/// Where the built servers are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The repository root.
    pub root: PathBuf,
}

impl Paths {
    pub fn tally(&self) -> PathBuf {
        self.root.join("target/release/tally")
    }

    pub fn tally_bench_server(&self) -> PathBuf {
        self.root.join("target/release/examples/bench_server")
    }

    pub fn socketioxide(&self) -> PathBuf {
        self.root.join("bench/target/release/bench-socketioxide")
    }

    pub fn node_server(&self) -> PathBuf {
        self.root.join("bench/servers/node/server.js")
    }
}

/// Settings for `tally serve` that lift the chat's per-account rate limit: a load generator's
/// one account would otherwise be refused most of its messages.
pub const UNLIMITED_CHAT: [(&str, &str); 2] =
    [("TALLY_CHAT__MESSAGES_PER_SECOND", "10000000"), ("TALLY_CHAT__BURST", "10000000")];

pub struct Server {
    pub name: String,
    pub port: u16,
    child: Child,
    pid: u32,
    /// From spawn to the first answered request.
    pub startup: Duration,
}

impl Server {
    /// Starts one of the real-time benchmark servers on `port`.
    pub async fn peer(peer: Peer, paths: &Paths, port: u16) -> anyhow::Result<Server> {
        let port_arg = port.to_string();
        let mut command = match peer {
            Peer::Tally => Command::new(paths.tally_bench_server()),
            Peer::Socketioxide => Command::new(paths.socketioxide()),
            Peer::Node => {
                let mut node = Command::new("node");
                node.arg(paths.node_server());
                node
            }
        };
        command.args(["--port", &port_arg]);
        Server::spawn(peer.name(), command, port, "/socket.io/?EIO=4&transport=polling").await
    }

    /// Starts `tally serve` on `data`, as the product runs, with `settings` (`TALLY_*`).
    pub async fn tally_service(
        paths: &Paths,
        data: &Path,
        port: u16,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let mut command = Command::new(paths.tally());
        command
            .arg("serve")
            .env("TALLY_PORT", port.to_string())
            .env("TALLY_BIND", "127.0.0.1")
            .env("TALLY_DATA_DIR", data)
            .env("RUST_LOG", "warn")
            .envs(settings.iter().copied());
        Server::spawn("tally serve", command, port, "/healthz").await
    }

    /// Spawns `command` and waits until `probe` answers over HTTP.
    pub async fn spawn(name: &str, mut command: Command, port: u16, probe: &str) -> anyhow::Result<Server> {
        // A server left over from an earlier run would answer the probe in our place.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} is taken; is a server of an earlier run still up?");
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).process_group(0);
        let started = Instant::now();
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("the server exited at once")?;
        // Keep reading its output, so a chatty server never blocks on a full pipe.
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(_)) = lines.next_line().await {}
            });
        }
        let deadline = started + Duration::from_secs(30);
        loop {
            if crate::http::get_status(port, probe).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited while starting: {status}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not answer {probe} on port {port} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Server { name: name.to_owned(), port, child, pid, startup: started.elapsed() })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's process with its children, should it have any (nginx's workers).
    pub fn stat(&self) -> anyhow::Result<ProcStat> {
        ProcStat::read_tree(self.pid).with_context(|| format!("measuring {}", self.name))
    }

    /// Asks the server's process group to stop, and kills it after 5 s.
    pub async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait().await;
        }
    }

    /// Signals the whole process group: killing only nginx's master would orphan its workers,
    /// still listening on the port.
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: killpg has no memory-safety preconditions; the group is our child's own.
        unsafe { libc::killpg(self.pid as libc::pid_t, signal) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGKILL);
        }
    }
}
