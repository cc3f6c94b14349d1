//! Engine.IO v4 server: the transport layer under Socket.IO.
//!
//! It opens sessions over HTTP long-polling or websocket, upgrades polling sessions to
//! websocket, keeps them alive with pings and hands whole messages to the layer above through
//! [`Handler`] and [`Connection`]. It knows nothing of Socket.IO.
//!
//! Bounded by design: at most [`EngineConfig::max_sessions`] sessions, and at most
//! [`EngineConfig::max_pending_per_address`] per client address that the layer above has not
//! yet admitted ([`Session::admit`]: for Socket.IO, joined a namespace, past its token check).
//! Past either, a handshake is refused with 503 and `Retry-After`, and clients retry later.
//! A session keeps only the few request headers the layer above may need ([`KEPT_HEADERS`]).
//!
//! Door: [`Engine::new`] then [`Engine::handle`] for every HTTP request under the mount path.

mod cors;
mod outbox;
pub mod packet;
mod polling;
pub mod session;
mod websocket;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use rand::RngCore;

pub use cors::same_origin;
pub use packet::Frame;
pub use session::{CloseReason, Message, SendError, Session, Sid, Transport};

/// Engine.IO settings; the defaults are the reference server's.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest polling POST body and websocket message, in bytes.
    pub max_payload: usize,
    pub upgrade_timeout: Duration,
    /// Packets a session may have queued for its client before it is cut loose.
    pub max_buffered_packets: usize,
    /// Origins allowed to use the polling transport cross-origin (exact `scheme://host[:port]`).
    pub cors_origins: Vec<String>,
    /// Refuse (403, "Forbidden") requests a browser sends from any origin but the server's
    /// own and `cors_origins` (see [`same_origin`]). Off in the reference server.
    pub same_origin_only: bool,
    /// Sessions held at most; handshakes past it are refused.
    pub max_sessions: usize,
    /// Sessions not yet admitted by the layer above, per client address.
    pub max_pending_per_address: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_millis(10_000),
            max_buffered_packets: 1024,
            cors_origins: Vec::new(),
            same_origin_only: false,
            max_sessions: 10_000,
            max_pending_per_address: 64,
        }
    }
}

/// What the layer above is told when a session opens.
pub trait Handler: Send + Sync + 'static {
    /// Called once per new session, after its open packet is queued. Returns the object that
    /// receives the session's messages.
    fn on_open(&self, session: Arc<Session>) -> Arc<dyn Connection>;
}

/// One session as the layer above sees it.
pub trait Connection: Send + Sync + 'static {
    fn on_message(&self, message: Message);
    /// Called exactly once, when the session ends for any reason.
    fn on_close(&self, reason: CloseReason);
}

/// The request headers a session keeps (for the layer above: where the page came from, and
/// what it is). Everything else, cookies and credentials included, is dropped at the
/// handshake: a session can live for hours.
pub const KEPT_HEADERS: [header::HeaderName; 3] = [header::ORIGIN, header::HOST, header::USER_AGENT];
/// A kept header value longer than this is dropped rather than held.
pub const MAX_KEPT_HEADER_BYTES: usize = 512;

/// The parts of the opening HTTP request the layer above may want (its handshake).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Only [`KEPT_HEADERS`], each at most [`MAX_KEPT_HEADER_BYTES`].
    pub headers: HeaderMap,
    pub query: String,
    pub remote: SocketAddr,
}

impl RequestInfo {
    /// Keeps a copy of the [`KEPT_HEADERS`] that owns its bytes. hyper's header values are
    /// slices of the connection's 8 KiB read buffer; holding them for a session's life would
    /// hold that buffer too, the largest part of an idle connection's memory.
    pub fn new(headers: &HeaderMap, query: String, remote: SocketAddr) -> RequestInfo {
        let mut kept = HeaderMap::with_capacity(KEPT_HEADERS.len());
        for name in &KEPT_HEADERS {
            for value in headers.get_all(name) {
                if value.len() > MAX_KEPT_HEADER_BYTES {
                    continue;
                }
                // The bytes were a valid header value a moment ago, so this cannot fail.
                if let Ok(copy) = header::HeaderValue::from_bytes(value.as_bytes()) {
                    kept.append(name.clone(), copy);
                }
            }
        }
        RequestInfo { headers: kept, query, remote }
    }
}

/// Why a handshake was refused; the client is told to come back later (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    TooManySessions,
    TooManyPending,
}

impl Refusal {
    fn response(self) -> Response<Full<Bytes>> {
        let message = match self {
            Refusal::TooManySessions => "Too many sessions",
            Refusal::TooManyPending => "Too many sessions from this address awaiting their handshake",
        };
        let body = serde_json::json!({ "code": ErrorCode::Forbidden as u8, "message": message }).to_string();
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::RETRY_AFTER, "5")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    }
}

/// A place among an address's not-yet-admitted sessions; given back when dropped.
pub(crate) struct PendingSlot {
    engine: Weak<Engine>,
    address: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let Some(engine) = self.engine.upgrade() else { return };
        let Ok(mut pending) = engine.pending.lock() else { return };
        if let Some(count) = pending.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.address);
            }
        }
    }
}

/// Engine.IO's error responses: `400 {"code":N,"message":"..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
}

impl ErrorCode {
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::UnknownTransport => "Transport unknown",
            ErrorCode::UnknownSid => "Session ID unknown",
            ErrorCode::BadHandshakeMethod => "Bad handshake method",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    fn response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "code": self as u8, "message": self.message() }).to_string();
        let status = if self == ErrorCode::Forbidden { StatusCode::FORBIDDEN } else { StatusCode::BAD_REQUEST };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    }
}

/// What a client is counted by for limits: its IPv4 address, or its IPv6 /64, which one host
/// may hand itself addresses from at will.
pub fn client_network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

pub struct Engine {
    config: Arc<EngineConfig>,
    handler: Arc<dyn Handler>,
    sessions: RwLock<HashMap<Sid, Arc<Session>>>,
    /// Sessions not yet admitted, per client address.
    pending: Mutex<HashMap<IpAddr, usize>>,
}

impl Engine {
    pub fn new(config: EngineConfig, handler: Arc<dyn Handler>) -> Arc<Engine> {
        Arc::new(Engine {
            config: Arc::new(config),
            handler,
            sessions: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for a new session from `address`, or says why there is none. Clients
    /// count by [`client_network`].
    fn reserve(self: &Arc<Self>, address: IpAddr) -> Result<PendingSlot, Refusal> {
        let address = client_network(address);
        if self.session_count() >= self.config.max_sessions {
            return Err(Refusal::TooManySessions);
        }
        let mut pending = self.pending.lock().map_err(|_| Refusal::TooManySessions)?;
        let count = pending.entry(address).or_insert(0);
        if *count >= self.config.max_pending_per_address {
            return Err(Refusal::TooManyPending);
        }
        *count += 1;
        Ok(PendingSlot { engine: Arc::downgrade(self), address })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sessions currently held (including a closed polling session whose client has not yet
    /// collected its close packet).
    pub fn session_count(&self) -> usize {
        self.sessions.read().map(|s| s.len()).unwrap_or(0)
    }

    /// Open sessions by their current transport: (polling, websocket).
    pub fn transport_counts(&self) -> (usize, usize) {
        let Ok(sessions) = self.sessions.read() else { return (0, 0) };
        let open = sessions.values().filter(|session| !session.is_closed());
        open.fold((0, 0), |(polling, websocket), session| match session.transport() {
            Transport::Polling => (polling + 1, websocket),
            Transport::WebSocket => (polling, websocket + 1),
        })
    }

    /// Closes every session, e.g. on shutdown.
    pub fn close_all(&self, reason: CloseReason) {
        let sessions: Vec<_> = self.sessions.read().map(|s| s.values().cloned().collect()).unwrap_or_default();
        for session in sessions {
            session.close(reason);
        }
    }

    /// Serves one HTTP request addressed to the Engine.IO endpoint.
    pub async fn handle(self: &Arc<Self>, request: Request<Incoming>, remote: SocketAddr) -> Response<Full<Bytes>> {
        let origin = request.headers().get(header::ORIGIN).cloned();
        let mut response = if request.method() == Method::OPTIONS {
            cors::preflight(&self.config.cors_origins, request.headers())
        } else if self.config.same_origin_only && !same_origin(&self.config.cors_origins, request.headers()) {
            tracing::debug!(%remote, ?origin, "a request from another site was refused");
            ErrorCode::Forbidden.response()
        } else {
            self.route(request, remote).await
        };
        cors::decorate(&self.config.cors_origins, origin.as_ref(), response.headers_mut());
        response
    }

    async fn route(self: &Arc<Self>, mut request: Request<Incoming>, remote: SocketAddr) -> Response<Full<Bytes>> {
        let query = request.uri().query().unwrap_or("").to_owned();
        let params = Params::parse(&query);
        let transport = match params.transport.as_deref() {
            Some("polling") => Transport::Polling,
            Some("websocket") => Transport::WebSocket,
            _ => return ErrorCode::UnknownTransport.response(),
        };
        if params.eio.as_deref() != Some("4") {
            return ErrorCode::UnsupportedProtocolVersion.response();
        }
        let wants_upgrade = is_websocket_upgrade(request.headers());
        let Some(sid) = params.sid else {
            if request.method() != Method::GET {
                return ErrorCode::BadHandshakeMethod.response();
            }
            if transport == Transport::WebSocket && !wants_upgrade {
                return ErrorCode::BadRequest.response();
            }
            let slot = match self.reserve(remote.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    tracing::debug!(%remote, ?refusal, "handshake refused");
                    return refusal.response();
                }
            };
            let info = RequestInfo::new(request.headers(), query, remote);
            return match transport {
                Transport::Polling => self.open_polling(info, slot),
                Transport::WebSocket => self.accept_websocket(&mut request, info, Upgrade::New(slot)),
            };
        };
        let Some(session) = self.lookup(&sid) else {
            return ErrorCode::UnknownSid.response();
        };
        match transport {
            Transport::Polling if session.transport() != Transport::Polling => ErrorCode::BadRequest.response(),
            Transport::Polling if request.method() == Method::GET => polling::poll(self, &session).await,
            Transport::Polling if request.method() == Method::POST => polling::post(self, &session, request).await,
            Transport::Polling => ErrorCode::BadRequest.response(),
            Transport::WebSocket => {
                let may_upgrade = wants_upgrade
                    && session.transport() == Transport::Polling
                    && !session.is_closed()
                    && !session.upgrade_claimed.swap(true, std::sync::atomic::Ordering::AcqRel);
                if !may_upgrade {
                    return ErrorCode::BadRequest.response();
                }
                let info = RequestInfo { headers: HeaderMap::new(), query, remote };
                self.accept_websocket(&mut request, info, Upgrade::Of(session))
            }
        }
    }

    fn open_polling(self: &Arc<Self>, info: RequestInfo, slot: PendingSlot) -> Response<Full<Bytes>> {
        let session = self.create_session(Transport::Polling, info, slot);
        let open = Frame::encode_payload([&Frame::open(&self.handshake_json(&session, Transport::Polling))]);
        self.start(&session);
        Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
            .body(Full::new(Bytes::from(open)))
            .unwrap_or_default()
    }

    /// Answers the websocket handshake; the session (new or upgrading) runs once the
    /// connection is handed over.
    fn accept_websocket(
        self: &Arc<Self>,
        request: &mut Request<Incoming>,
        info: RequestInfo,
        upgrade: Upgrade,
    ) -> Response<Full<Bytes>> {
        let Some(accept_key) = request
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|key| tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
        else {
            upgrade.give_up();
            return ErrorCode::BadRequest.response();
        };
        let on_upgrade = hyper::upgrade::on(request);
        let engine = self.clone();
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "websocket upgrade failed");
                    upgrade.give_up();
                    return;
                }
            };
            let ws = websocket::accept(upgraded, engine.config.max_payload).await;
            match upgrade {
                Upgrade::Of(session) => websocket::run_upgrade(engine, ws, session).await,
                Upgrade::New(slot) => {
                    let session = engine.create_session(Transport::WebSocket, info, slot);
                    let open = Frame::open(&engine.handshake_json(&session, Transport::WebSocket));
                    let _ = session.send(open);
                    engine.start(&session);
                    websocket::serve(&session, ws).await;
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept_key)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    }

    fn create_session(self: &Arc<Self>, transport: Transport, info: RequestInfo, slot: PendingSlot) -> Arc<Session> {
        let sid: Sid = random_id().into();
        let info = Arc::new(info);
        let session = Arc::new_cyclic(|me| {
            Session::new(
                sid.clone(),
                transport,
                info,
                slot,
                self.config.max_buffered_packets,
                Arc::downgrade(self),
                me.clone(),
            )
        });
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.insert(sid, session.clone());
        }
        tracing::debug!(sid = %session.sid(), transport = transport.as_str(), "engine session opened");
        session
    }

    /// Hands the session to the layer above and starts its heartbeat.
    fn start(&self, session: &Arc<Session>) {
        let connection = self.handler.on_open(session.clone());
        session.set_connection(connection);
        tokio::spawn(session.clone().heartbeat(self.config.ping_interval, self.config.ping_timeout));
    }

    fn handshake_json(&self, session: &Session, transport: Transport) -> String {
        let upgrades: &[&str] = if transport == Transport::Polling { &["websocket"] } else { &[] };
        serde_json::json!({
            "sid": session.sid().as_ref(),
            "upgrades": upgrades,
            "pingInterval": self.config.ping_interval.as_millis() as u64,
            "pingTimeout": self.config.ping_timeout.as_millis() as u64,
            "maxPayload": self.config.max_payload,
        })
        .to_string()
    }

    fn lookup(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.read().ok()?.get(sid).cloned()
    }

    pub(crate) fn remove(&self, sid: &Sid) {
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.remove(sid);
        }
    }

    /// A closed polling session stays reachable briefly so its client can collect the close
    /// packet and anything queued before it; the next GET removes it sooner.
    fn remove_after_grace(self: Arc<Self>, sid: Sid) {
        let grace = self.config.ping_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            self.remove(&sid);
        });
    }
}

/// A websocket handshake opens a new session (holding its place among the pending ones) or
/// upgrades a polling one.
enum Upgrade {
    New(PendingSlot),
    Of(Arc<Session>),
}

impl Upgrade {
    /// The handshake failed: a polling session may be upgraded by another try (a new
    /// session's place is given back as the slot drops).
    fn give_up(self) {
        if let Upgrade::Of(session) = self {
            session.upgrade_claimed.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

/// The query parameters Engine.IO reads.
#[derive(Default)]
struct Params {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Params {
        let mut params = Params::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "EIO" => params.eio = Some(value.into_owned()),
                "transport" => params.transport = Some(value.into_owned()),
                "sid" => params.sid = Some(value.into_owned()),
                _ => {}
            }
        }
        params
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|value| value.to_str().is_ok_and(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token))))
    };
    has_token(header::UPGRADE, "websocket") && has_token(header::CONNECTION, "upgrade")
}

/// A random 120-bit id in URL-safe base64 (20 characters), as the reference `base64id` makes.
pub fn random_id() -> String {
    let mut raw = [0u8; 15];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_info_keeps_only_the_few_headers_it_needs_in_its_own_bytes() {
        // Values shaped as hyper gives them: slices of one larger read buffer.
        let buffer = Bytes::from_static(b"host: tally.local\r\ncookie: secret=1\r\n");
        let value = |text: &str| {
            let at = buffer.windows(text.len()).position(|w| w == text.as_bytes()).unwrap();
            header::HeaderValue::from_maybe_shared(buffer.slice(at..at + text.len())).unwrap()
        };
        let mut headers = HeaderMap::new();
        headers.append(header::HOST, value("tally.local"));
        headers.append(header::COOKIE, value("secret=1"));
        headers.append(header::AUTHORIZATION, header::HeaderValue::from_static("Bearer t"));
        headers.append(header::ORIGIN, header::HeaderValue::from_static("http://tally.local"));
        let long = "x".repeat(MAX_KEPT_HEADER_BYTES + 1);
        headers.append(header::USER_AGENT, header::HeaderValue::from_str(&long).unwrap());

        let info = RequestInfo::new(&headers, "EIO=4".into(), SocketAddr::from(([127, 0, 0, 1], 9)));
        let kept: Vec<_> = info.headers.iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap())).collect();
        assert_eq!(kept, [("origin", "http://tally.local"), ("host", "tally.local")]);
        // Its own bytes: nothing points into the connection's buffer.
        let host = info.headers[header::HOST].as_bytes().as_ptr_range();
        assert!(!buffer.as_ptr_range().contains(&host.start));
    }
}
