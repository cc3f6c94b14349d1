//! The HTTP server: accepts connections and routes requests to the real-time endpoint and,
//! as the product grows, the API and the web UI.
//!
//! Door: [`bind`] a listener, then [`serve`] a [`Router`] on it until shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engineio::Engine;

pub mod api;
pub mod error;
pub mod form;
pub mod ops;
pub mod range;
pub mod ui;

/// Every response body the server sends.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Pending connections the kernel may queue; tokio's 128 overflows when hundreds of clients
/// reconnect at once after the box restarts.
const LISTEN_BACKLOG: u32 = 1024;
/// A client gets this long to send its request headers; slow-header clients would otherwise
/// hold connections (and memory) forever.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

/// Maps request paths to the endpoints that serve them.
#[derive(Default)]
pub struct Router {
    /// Engine.IO endpoints by mount path without its trailing slash, e.g. `/socket.io`.
    engines: Vec<(String, Arc<Engine>)>,
    api: Option<Arc<api::Api>>,
    ops: Option<Arc<ops::Ops>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Serves Engine.IO at `path` (with or without the trailing slash, as clients vary).
    pub fn mount_engine(mut self, path: &str, engine: Arc<Engine>) -> Router {
        self.engines.push((path.trim_end_matches('/').to_owned(), engine));
        self
    }

    /// Serves the JSON API under `/api/`.
    pub fn mount_api(mut self, api: Arc<api::Api>) -> Router {
        self.api = Some(api);
        self
    }

    /// Serves `/healthz` and `/metrics`.
    pub fn mount_ops(mut self, ops: Arc<ops::Ops>) -> Router {
        self.ops = Some(ops);
        self
    }

    pub fn engines(&self) -> impl Iterator<Item = &Arc<Engine>> {
        self.engines.iter().map(|(_, engine)| engine)
    }

    async fn route(&self, request: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let path = request.uri().path();
        let engine = self
            .engines
            .iter()
            .find(|(mount, _)| path.strip_prefix(mount.as_str()).is_some_and(|rest| rest.is_empty() || rest == "/"));
        if let Some((_, engine)) = engine {
            return engine.handle(request, remote).await.map(|body| body.map_err(|never| match never {}).boxed());
        }
        if let Some(ops) = &self.ops
            && let Some(response) = ops.handle(request.method(), path, self.engines())
        {
            return response;
        }
        if path.starts_with("/api/") {
            return match &self.api {
                Some(api) => api.handle(request, remote).await,
                None => error::ApiError::not_found("route").into_response(),
            };
        }
        ui::serve(&request)
    }
}

/// Binds with an explicit backlog and address reuse, so a restart can bind at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` resolves, then stops accepting and tells every connection to
/// finish the request it is on and close. The [`Connections`] returned are still draining.
pub async fn serve(listener: TcpListener, router: Arc<Router>, shutdown: impl Future<Output = ()>) -> Connections {
    tokio::pin!(shutdown);
    let (closing, closed) = tokio::sync::watch::channel(false);
    let connections = Connections { tasks: TaskTracker::new(), cut: CancellationToken::new() };
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut closed = closed.clone();
        let cut = connections.cut.clone();
        connections.tasks.spawn(async move {
            let service = service_fn(move |request| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.route(request, remote).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = async { let _ = closed.wait_for(|closing| *closing).await; } => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        result = connection.as_mut() => result,
                        // Past the drain deadline: dropped mid-request (an upload's temp file
                        // goes with it; nothing half-done was acknowledged).
                        () = cut.cancelled() => return,
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.tasks.close();
    let _ = closing.send(true);
    connections
}

/// The connections of a server that has stopped accepting, finishing their last requests.
/// (A websocket leaves this set once upgraded; the engine closes it.)
pub struct Connections {
    tasks: TaskTracker,
    cut: CancellationToken,
}

impl Connections {
    /// Waits for every request in flight to finish, then drops the connections still open,
    /// all within `within`. Returns how many had to be dropped.
    pub async fn drain(self, within: std::time::Duration) -> usize {
        // Dropping takes a moment too (the tasks must run to see the cut).
        let grace = (within / 10).min(std::time::Duration::from_millis(500));
        if tokio::time::timeout(within - grace, self.tasks.wait()).await.is_ok() {
            return 0;
        }
        let left = self.tasks.len();
        self.cut.cancel();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        left
    }
}
