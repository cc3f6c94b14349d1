//! A server that behaves as the public protocol test suites expect (the "Test suite" sections
//! of the engine.io-protocol and socket.io-protocol specifications), so Tally's Engine.IO and
//! Socket.IO layers can be checked against any external conformance suite.
//!
//! - `/engine.io/`: a bare Engine.IO server that echoes every message back.
//! - `/socket.io/`: namespaces `/` and `/custom`; on connect each socket receives `auth` with
//!   its handshake payload (`{}` when absent); `message` is answered with `message-back` and
//!   the same arguments; `message-with-ack` is acknowledged with its arguments.
//!
//! Timings are the suites': pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1e6,
//! connectTimeout 1000 ms. Connection state recovery is off, so the CONNECT ack carries only
//! `sid`.

use std::sync::Arc;
use std::time::Duration;

use crate::engineio::{self, CloseReason, Connection, Engine, EngineConfig, Frame, Message, Session};
use crate::http::Router;
use crate::socketio::{SocketIo, SocketIoConfig};

pub fn engine_config() -> EngineConfig {
    EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..EngineConfig::default()
    }
}

pub fn socketio_config() -> SocketIoConfig {
    SocketIoConfig { connect_timeout: Duration::from_millis(1000), ..SocketIoConfig::default() }
}

/// The Socket.IO server of the suite, on its own engine.
pub fn socketio(io: &SocketIo) {
    for name in ["/", "/custom"] {
        let namespace = io.of(name);
        namespace.on_connect(|socket| {
            let _ = socket.emit("auth", socket.handshake().auth.clone());
        });
        namespace.on("message", |socket, payload, _ack| {
            let _ = socket.emit("message-back", payload);
        });
        namespace.on("message-with-ack", |_socket, payload, ack| {
            if let Some(ack) = ack {
                let _ = ack.send(payload);
            }
        });
    }
}

/// The Engine.IO echo server of the suite.
pub fn echo_engine(config: EngineConfig) -> Arc<Engine> {
    Engine::new(config, Arc::new(Echo))
}

/// Both servers on one router, as the example binary serves them.
pub fn router() -> Router {
    let io = SocketIo::new(socketio_config());
    socketio(&io);
    Router::new()
        .mount_engine("/engine.io/", echo_engine(engine_config()))
        .mount_engine("/socket.io/", io.engine(engine_config()))
}

struct Echo;

struct EchoConnection(Arc<Session>);

impl engineio::Handler for Echo {
    fn on_open(&self, session: Arc<Session>) -> Arc<dyn Connection> {
        // Nothing to check above the echo: every session is admitted as it opens.
        session.admit();
        Arc::new(EchoConnection(session))
    }
}

impl Connection for EchoConnection {
    fn on_message(&self, message: Message) {
        let frame = match message {
            Message::Text(text) => Frame::message(&text),
            Message::Binary(data) => Frame::binary(data),
        };
        let _ = self.0.send(frame);
    }

    fn on_close(&self, _reason: CloseReason) {}
}
