//! The `tally` command: runs the service, and small administrative tasks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tally::app::App;
use tally::auth::{Role, TokenKeys, password};
use tally::config::Config;
use tally::logging::{self, LogFormat};
use tally::media::isolation;
use tally::shutdown::{self, Exit};
use tally::store::{NewUser, Store};

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
    /// Process one video file as the service would and print what it finds (metadata, the
    /// photosensitivity report, what would play) as JSON; thumbnails, scrub previews and the
    /// web rendition (`web.mp4`, when the original does not play in browsers) go to --out
    /// when given.
    Process {
        file: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Runs one media job for the service, in a child process of its own (internal).
    #[command(name = "media-worker", hide = true)]
    MediaWorker {
        #[arg(long)]
        settings: String,
        file: PathBuf,
    },
    /// The status LED: print what each pattern means, or show one on the configured LED.
    Led {
        /// Print the table of states and patterns.
        #[arg(long)]
        list: bool,
        /// Show this state's pattern (e.g. `identify`, `fault`) on the configured LED.
        #[arg(long)]
        show: Option<String>,
        /// How long --show lasts, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Manage user accounts (with the service stopped: the database allows one process).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user, creating the organization if it is new. The password is prompted for on a
    /// terminal, or read as one line from standard input.
    Add {
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: Role,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // The worker gets its settings from the service, not from the configuration.
    if let Some(Command::MediaWorker { settings, file }) = &cli.command {
        let settings: isolation::Settings = serde_json::from_str(settings).context("worker settings")?;
        std::process::exit(isolation::run_child(&settings, file));
    }
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Token { user, org, role, ttl } => {
            let keys = TokenKeys::load_or_create(&config.data_dir)?;
            let ttl = Duration::from_secs(ttl.unwrap_or(config.access_token_ttl_secs));
            println!("{}", keys.issue(&user, &org, role, ttl)?);
            Ok(())
        }
        Command::User { action: UserAction::Add { org, email, role } } => add_user(&config, &org, &email, role),
        Command::Process { file, out } => process(&config, &file, out.as_deref()),
        Command::Led { list, show, seconds } => led(&config, list, show.as_deref(), seconds),
        Command::MediaWorker { .. } => anyhow::bail!("media-worker is handled before the configuration is read"),
    }
}

fn process(config: &Config, file: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let media = tally::media::Media::new(config.media.pipeline())?;
    let started = std::time::Instant::now();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let target = match out {
        Some(out) => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let budget = fs4::available_space(out).with_context(|| format!("free space in {}", out.display()))?;
            Some(tally::media::RenditionTarget {
                output: out.join("web.mp4"),
                scratch: out.join("web.mp4.mux"),
                budget,
                reserve: 0,
            })
        }
        None => None,
    };
    // Seconds each stage took, as the progress reports mark their starts (the benchmarks read
    // the rendition stage of a remux from here).
    let mut stages: Vec<(tally::media::Stage, std::time::Instant)> = Vec::new();
    let processed = media
        .process(file, target.as_ref(), &cancel, &mut |stage, _| {
            if stages.last().is_none_or(|(last, _)| *last != stage) {
                stages.push((stage, std::time::Instant::now()));
            }
        })
        .map_err(|(stage, error)| anyhow::anyhow!("{} stage: {error}", stage.as_str()))?;
    let ended = std::time::Instant::now();
    let mut stage_seconds = serde_json::Map::new();
    for (i, (stage, began)) in stages.iter().enumerate() {
        let until = stages.get(i + 1).map_or(ended, |(_, next)| *next);
        stage_seconds.insert(stage.as_str().into(), serde_json::json!(until.duration_since(*began).as_secs_f64()));
    }
    if let Some(out) = out {
        std::fs::write(out.join("thumbnail-card.jpg"), &processed.thumbnails[0])?;
        std::fs::write(out.join("thumbnail-poster.jpg"), &processed.thumbnails[1])?;
        if let Some(previews) = &processed.previews {
            std::fs::write(out.join("previews.jpg"), &previews.sheet)?;
            std::fs::write(out.join("previews.vtt"), &previews.vtt)?;
        }
    }
    let report = serde_json::json!({
        "metadata": processed.metadata,
        "sensitivity": processed.report,
        "playback": processed.playback,
        "seconds": started.elapsed().as_secs_f64(),
        "stageSeconds": stage_seconds,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn led(config: &Config, list: bool, show: Option<&str>, seconds: u64) -> anyhow::Result<()> {
    use tally::led::{Led, LedState, backend, pattern};
    if list || show.is_none() {
        print!("{}", pattern::table());
    }
    let Some(name) = show else { return Ok(()) };
    let state = LedState::ALL.into_iter().find(|state| state.name() == name).with_context(|| {
        let names: Vec<_> = LedState::ALL.iter().map(|state| state.name()).collect();
        format!("unknown state {name:?}; one of: {}", names.join(", "))
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    runtime.block_on(async {
        let led = Led::start(backend::open(&config.led).context("opening the configured LED")?);
        led.set(LedState::Booting, false);
        match state {
            LedState::Identify => led.identify(Duration::from_secs(seconds)),
            state => led.set(state, true),
        }
        println!("showing {state} on {} for {seconds} s: {}", led.describe(), state.pattern().looks);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        anyhow::Ok(())
    })
}

fn add_user(config: &Config, org_name: &str, email: &str, role: Role) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir)?;
    let password = read_password()?;
    let password_hash = password::hash(&password)?;
    let org = match store.org_by_name(org_name)? {
        Some(org) => org,
        None => store.create_org(org_name)?,
    };
    let user = store.create_user(NewUser { org_id: &org.id, email, role, password_hash })?;
    store.durable_blocking()?;
    println!("added {} ({:?}) to organization {} [user {}, org {}]", user.email, user.role, org.name, user.id, org.id);
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the passwords do not match");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn serve(config: Config) -> anyhow::Result<()> {
    // Signals first, on a thread of their own: a shutdown must be able to start, and end,
    // whatever the runtime is doing (see `tally::shutdown`).
    let mut stop = shutdown::on_signal(config.shutdown_timeout()).context("listening for SIGTERM")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let exit = runtime.block_on(async {
        let app = App::new(config)?;
        let listener = app.listen()?;
        tracing::info!(addr = %listener.local_addr()?, data_dir = %app.config.data_dir.display(), version = env!("CARGO_PKG_VERSION"), "tally listening");
        let exit = app
            .run(listener, async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
            .await;
        anyhow::Ok(exit)
    })?;
    match &exit {
        Exit::Stopped => tracing::info!("tally stopped"),
        Exit::Restart => tracing::warn!(code = exit.code(), "tally stopped to be started again"),
        Exit::Unfinished(reason) => tracing::error!(code = exit.code(), reason, "tally stopped without finishing"),
    }
    // Everything acknowledged is durable, or the exit code says it could not be: the process
    // ends here, without waiting on threads that may be stuck in the kernel (a flush that never
    // returns would otherwise hold the runtime's drop, and sled's, forever).
    std::process::exit(exit.code());
}
