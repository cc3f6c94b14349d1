//! Assembles the service from its configuration: storage, tokens, the real-time server and
//! the HTTP router. Used by `tally serve` and by the integration tests alike.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::TokenKeys;
use crate::config::Config;
use crate::engineio::CloseReason;
use crate::events::{self, VideoDirectory};
use crate::http::{self, Router};
use crate::socketio::SocketIo;

pub struct App {
    pub config: Config,
    pub keys: Arc<TokenKeys>,
    pub io: SocketIo,
    pub router: Arc<Router>,
}

impl App {
    pub fn new(config: Config, videos: Arc<dyn VideoDirectory>) -> anyhow::Result<App> {
        let keys = Arc::new(TokenKeys::load_or_create(&config.data_dir)?);
        let io = SocketIo::new(config.socketio());
        events::install(&io, keys.clone(), videos);
        let engine = io.engine(config.engine());
        let router = Arc::new(Router::new().mount_engine(&config.realtime.path, engine));
        Ok(App {
            config,
            keys,
            io,
            router,
        })
    }

    pub fn listen(&self) -> anyhow::Result<TcpListener> {
        let addr = SocketAddr::new(self.config.bind, self.config.port);
        http::bind(addr).with_context(|| format!("binding {addr}"))
    }

    /// Serves until `shutdown` resolves, then tells every client the server is going away.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        http::serve(listener, self.router.clone(), shutdown).await;
        for engine in self.router.engines() {
            engine.close_all(CloseReason::ServerShuttingDown);
        }
    }
}
