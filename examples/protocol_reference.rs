//! The reference-behaviour server of the Engine.IO and Socket.IO specification test suites,
//! built on Tally's own protocol layers (see `tally::conformance`).
//!
//! Run: `cargo run --example protocol_reference -- --port 3000`, then point a conformance
//! suite at `http://localhost:3000`.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3000)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tally::logging::init(tally::logging::LogFormat::Human);
    let listener = tally::http::bind(SocketAddr::new(args.bind, args.port))?;
    tracing::info!(addr = %listener.local_addr()?, "protocol reference server listening");
    let router = Arc::new(tally::conformance::router());
    tally::http::serve(listener, router, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
