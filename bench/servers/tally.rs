//! Tally's Socket.IO layers as the benchmark server (see `bench/servers/README.md` for the
//! behaviour every benchmark server shares): namespace `/`, room `bench` joined on connect
//! unless the client says it is the emitter, `echo` acknowledged with its arguments, and
//! `fanout` re-emitted to the room as `tick`.
//!
//! Built as an example of the tally crate so it runs the product's own engine, not a copy:
//! `cargo build --release --example bench_server`, then `bench_server --port 3000`.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use tally::engineio::EngineConfig;
use tally::http::Router;
use tally::socketio::{SocketIo, SocketIoConfig};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3000)]
    port: u16,
}

const ROOM: &str = "bench";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The service's own runtime: one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args.port))
}

async fn serve(port: u16) -> anyhow::Result<()> {
    let io = SocketIo::new(SocketIoConfig::default());
    let namespace = io.of("/");
    namespace.on_connect(|socket| {
        if socket.handshake().auth.get("emitter").is_none() {
            socket.join(ROOM);
        }
    });
    namespace.on("echo", |_socket, payload, ack| {
        if let Some(ack) = ack {
            let _ = ack.send(payload);
        }
    });
    namespace.on("fanout", |socket, payload, _ack| {
        socket.namespace().to(ROOM).emit("tick", payload);
    });
    // The peers have no cap on sessions, and the load generator is one address opening
    // thousands at once: the product's caps (10,000 sessions, 64 handshakes in waiting per
    // address) are lifted here, so every server takes the same load.
    let engine =
        EngineConfig { max_sessions: usize::MAX, max_pending_per_address: usize::MAX, ..EngineConfig::default() };
    let router = Arc::new(Router::new().mount_engine("/socket.io/", io.engine(engine)));
    let listener = tally::http::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!("listening on {}", listener.local_addr()?);
    tally::http::serve(listener, router, std::future::pending()).await;
    Ok(())
}
