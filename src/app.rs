//! Assembles the service from its configuration: storage, tokens, the real-time server, the
//! API and the HTTP router. Used by `tally serve` and by the integration tests alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::TokenKeys;
use crate::auth::setup::SetupCode;
use crate::config::Config;
use crate::device::Device;
use crate::engineio::CloseReason;
use crate::events::{self, VideoNews};
use crate::http::api::{Api, ApiParts};
use crate::http::ops::Ops;
use crate::http::{self, Router};
use crate::jobs::{Jobs, JobsConfig};
use crate::led::{Led, LedConfig, backend};
use crate::media::Media;

use crate::media::isolation::Isolated;
use crate::metrics::Metrics;
use crate::service;
pub use crate::shutdown::RESTART_EXIT_CODE;
use crate::shutdown::{Deadline, Exit};
use crate::socketio::SocketIo;
use crate::store::{StorageFault, Store, StoreError};

/// Of the shutdown budget, at most this much is kept back for the steps after the HTTP
/// drain: requeueing jobs and the final flush.
const SHUTDOWN_RESERVE: Duration = Duration::from_secs(3);

pub struct App {
    pub config: Config,
    pub keys: Arc<TokenKeys>,
    pub store: Store,
    pub io: SocketIo,
    pub jobs: Arc<Jobs>,
    pub device: Arc<Device>,
    pub router: Arc<Router>,
    housekeeping: tokio::task::AbortHandle,
}

impl App {
    pub fn new(config: Config) -> anyhow::Result<App> {
        let keys = Arc::new(TokenKeys::load_or_create(&config.data_dir)?);
        let store = Store::open_with(&config.data_dir, config.flush_timeout())
            .with_context(|| format!("opening the database in {}", config.data_dir.display()))?;
        let io = SocketIo::new(config.socketio());
        events::install(&io, keys.clone(), &store);
        crate::chat::install(&io, store.clone(), &config.chat);
        let media = Arc::new(Media::new(config.media.pipeline()).context("starting GStreamer")?);
        let hardware_decoder = media.hardware_available();
        let news = VideoNews::new(
            io.clone(),
            keys.clone(),
            Arc::new(store.clone()),
            Duration::from_secs(config.media_url_ttl_secs),
        );
        let metrics = Arc::new(Metrics::new());
        let program = match &config.media.worker {
            Some(program) => program.clone(),
            None => std::env::current_exe().context("locating the tally binary for media workers")?,
        };
        let isolated = Arc::new(Isolated::new(program, config.media.pipeline()));
        let jobs_config = JobsConfig { min_free_bytes: config.min_free_bytes, ..config.media.jobs() };
        let jobs = Jobs::start(store.clone(), isolated, news.clone(), metrics.clone(), jobs_config)
            .context("starting the job workers")?;
        let device = Arc::new(Device::new(
            start_led(&config.led),
            store.clone(),
            jobs.clone(),
            config.media.decoder,
            hardware_decoder,
            config.storage_low_bytes,
            config.flush_timeout(),
        ));
        let admins = io.clone();
        device.start_monitor(move |status| {
            events::announce_device(&admins, serde_json::to_value(status).unwrap_or_default());
        });
        let setup_code = first_admin_setup(&config.data_dir, &store)?;
        let parts = ApiParts {
            store: store.clone(),
            keys: keys.clone(),
            news,
            jobs: jobs.clone(),
            device: device.clone(),
            metrics: metrics.clone(),
            setup_code,
        };
        let api = Arc::new(Api::new(parts, config.api()));
        let ops = Arc::new(Ops { device: device.clone(), metrics, store: store.clone() });
        http::ui::preload();
        let engine = io.engine(config.engine());
        let router = Arc::new(Router::new().mount_engine(&config.realtime.path, engine).mount_api(api).mount_ops(ops));
        let housekeeping = crate::housekeeping::start(store.clone(), config.retention(), config.housekeeping_every());
        Ok(App { config, keys, store, io, jobs, device, router, housekeeping })
    }

    /// Whether the service stopped to be started again (its database failed a write and
    /// space is back); `tally serve` then exits with [`RESTART_EXIT_CODE`].
    pub fn restart_needed(&self) -> bool {
        self.device.restart_needed()
    }

    pub fn listen(&self) -> anyhow::Result<TcpListener> {
        let addr = SocketAddr::new(self.config.bind, self.config.port);
        http::bind(addr).with_context(|| format!("binding {addr}"))
    }

    /// Serves until `shutdown` resolves (or the box needs a restart to recover, see
    /// [`App::restart_needed`]), then stops within the configured shutdown budget: requests
    /// in flight finish (those still going at the drain deadline are dropped), clients are
    /// disconnected at the transport so they reconnect by themselves, running jobs go back to
    /// the queue and the store is made durable. Says how it went.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Exit {
        self.device.ready();
        service::ready(&self.device);
        service::follow_status(&self.device);
        service::start_watchdog(&self.device);
        let device = self.device.clone();
        let stop = async move {
            tokio::select! {
                () = shutdown => {}
                () = device.restart_requested() => {}
            }
        };
        let connections = http::serve(listener, self.router.clone(), stop).await;
        let deadline = Deadline::after(self.config.shutdown_timeout());
        let reserve = SHUTDOWN_RESERVE.min(self.config.shutdown_timeout() / 3);
        service::stopping();
        self.housekeeping.abort();
        for engine in self.router.engines() {
            engine.close_all(CloseReason::ServerShuttingDown);
        }
        let cut = connections.drain(deadline.remaining_but(reserve)).await;
        if cut > 0 {
            tracing::warn!(connections = cut, "requests still in flight at the drain deadline were dropped");
        }
        if tokio::time::timeout(deadline.remaining_but(reserve / 2), self.jobs.stop()).await.is_err() {
            tracing::warn!("the job workers did not stop in time; the next start requeues their jobs");
        }
        let flush_within = deadline.remaining().min(self.config.flush_timeout());
        match self.store.close(flush_within).await {
            Ok(()) if self.restart_needed() => Exit::Restart,
            Ok(()) => Exit::Stopped,
            // It has refused writes since it failed one (a full disk), so all it acknowledged
            // is durable; space is back, and only a fresh start lets it write again.
            Err(StoreError::Unavailable(StorageFault::Failed { .. })) if self.restart_needed() => Exit::Restart,
            Err(error) => Exit::Unfinished(format!("the database could not be made durable: {error}")),
        }
    }
}

/// The configured LED, or none when it cannot be opened: the service runs regardless.
fn start_led(config: &LedConfig) -> Led {
    let backend = backend::open(config).unwrap_or_else(|error| {
        tracing::warn!(%error, backend = ?config.backend, "the status LED is unavailable; carrying on without it");
        Box::new(backend::NoLed)
    });
    tracing::info!(led = backend.describe(), "status LED");
    Led::start(backend)
}

/// A box without accounts waits for its first admin: the setup code (made on the image's
/// first boot, or now) is what the first visitor of the web page must enter.
fn first_admin_setup(data_dir: &std::path::Path, store: &Store) -> anyhow::Result<SetupCode> {
    let setup = SetupCode::new(data_dir);
    if store.has_users() {
        setup.consume().with_context(|| format!("removing {}", setup.path().display()))?;
    } else {
        let code = setup.ensure().with_context(|| format!("writing {}", setup.path().display()))?;
        tracing::warn!(code, file = %setup.path().display(), "no admin yet: open the web page and enter this setup code to create one");
    }
    Ok(setup)
}
