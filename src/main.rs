//! The `tally` command: runs the service, and small administrative tasks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tally::app::App;
use tally::auth::{Role, TokenKeys};
use tally::config::Config;
use tally::events::NoVideos;
use tally::logging::{self, LogFormat};

#[derive(Parser)]
#[command(name = "tally", version, about = "Video appliance for the edge")]
struct Cli {
    /// Config file (TOML). Default: /etc/tally/config.toml when it exists.
    #[arg(long, global = true, env = "TALLY_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Print a signed access token, for scripts and tests.
    Token {
        #[arg(long)]
        user: String,
        #[arg(long)]
        org: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Lifetime in seconds (default: the configured access-token lifetime).
        #[arg(long)]
        ttl: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Token {
            user,
            org,
            role,
            ttl,
        } => {
            let keys = TokenKeys::load_or_create(&config.data_dir)?;
            let ttl = Duration::from_secs(ttl.unwrap_or(config.access_token_ttl_secs));
            println!("{}", keys.issue(&user, &org, role, ttl)?);
            Ok(())
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let app = App::new(config, Arc::new(NoVideos))?;
        let listener = app.listen()?;
        tracing::info!(addr = %listener.local_addr()?, data_dir = %app.config.data_dir.display(), version = env!("CARGO_PKG_VERSION"), "tally listening");
        app.run(listener, shutdown_signal()).await;
        tracing::info!("tally stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
