//! Socket.IO v5 server: namespaces, rooms, acks and binary packets over [`crate::engineio`].
//!
//! Door: [`SocketIo::new`], configure namespaces with [`SocketIo::of`], then
//! [`SocketIo::engine`] gives the Engine.IO endpoint to mount on the HTTP server.

pub mod assembler;
mod client;
mod namespace;
pub mod packet;
mod recovery;
mod rooms;
mod socket;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::engineio::{self, Engine, EngineConfig, Frame, SendError, Session};
pub use namespace::{BroadcastOperator, ConnectError, Namespace};
pub use packet::{Packet, PacketType, Payload};
pub use recovery::RecoveryConfig;
pub use rooms::Room;
pub use socket::{AckError, AckSender, DisconnectReason, Handshake, Socket, SocketId};

/// Socket.IO settings; the defaults are the reference server's where it has one.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// A connection that joins no namespace within this time is closed.
    pub connect_timeout: Duration,
    /// Most binary attachments one packet may announce.
    pub max_attachments: usize,
    /// Most bytes all attachments of one packet may total.
    pub max_attachment_bytes: usize,
    /// How long a binary packet may wait for its attachments.
    pub binary_timeout: Duration,
    /// Connection state recovery for every namespace; off unless set (the reference's default).
    pub recovery: Option<RecoveryConfig>,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            connect_timeout: Duration::from_millis(45_000),
            max_attachments: 10,
            max_attachment_bytes: 1_000_000,
            binary_timeout: Duration::from_secs(10),
            recovery: None,
        }
    }
}

/// Why an emit was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("the socket is disconnected")]
    Disconnected,
    #[error("the client's outgoing buffer is full; the connection was closed")]
    BufferFull,
}

impl From<SendError> for EmitError {
    fn from(error: SendError) -> EmitError {
        match error {
            SendError::Closed => EmitError::Disconnected,
            SendError::BufferFull => EmitError::BufferFull,
        }
    }
}

pub(crate) struct Shared {
    config: SocketIoConfig,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
}

impl Shared {
    fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.read().ok()?.get(name).cloned()
    }
}

#[derive(Clone)]
pub struct SocketIo {
    shared: Arc<Shared>,
}

impl SocketIo {
    pub fn new(config: SocketIoConfig) -> SocketIo {
        SocketIo { shared: Arc::new(Shared { config, namespaces: RwLock::default() }) }
    }

    /// The namespace called `name`, created on first use. Only created namespaces accept
    /// connections.
    pub fn of(&self, name: &str) -> Arc<Namespace> {
        let mut namespaces = match self.shared.namespaces.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let recovery = self.shared.config.recovery.clone();
        namespaces.entry(name.to_owned()).or_insert_with(|| Arc::new(Namespace::new(name, recovery))).clone()
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.shared.namespace(name)
    }

    /// The Engine.IO endpoint that carries this server.
    pub fn engine(&self, config: EngineConfig) -> Arc<Engine> {
        Engine::new(config, Arc::new(Handler(self.shared.clone())))
    }
}

struct Handler(Arc<Shared>);

impl engineio::Handler for Handler {
    fn on_open(&self, session: Arc<Session>) -> Arc<dyn engineio::Connection> {
        client::Client::open(self.0.clone(), session)
    }
}

/// A packet encoded once, ready to queue for any number of sessions.
#[derive(Clone)]
pub(crate) enum Encoded {
    One(Frame),
    Group(Arc<[Frame]>),
}

impl Encoded {
    pub(crate) fn packet(packet: &Packet, attachments: &[Bytes]) -> Encoded {
        let text = Frame::message(&packet.encode());
        if attachments.is_empty() {
            return Encoded::One(text);
        }
        let frames: Vec<Frame> = std::iter::once(text).chain(attachments.iter().cloned().map(Frame::binary)).collect();
        Encoded::Group(frames.into())
    }

    /// An event; `offset` is appended as the last argument when recovery numbers it.
    pub(crate) fn event(nsp: &str, event: &str, id: Option<u64>, payload: &Payload, offset: Option<&str>) -> Encoded {
        let mut data = Vec::with_capacity(payload.args.len() + 2);
        data.push(Value::String(event.to_owned()));
        data.extend(payload.args.iter().cloned());
        data.extend(offset.map(|offset| Value::String(offset.to_owned())));
        Self::with_args(PacketType::Event, PacketType::BinaryEvent, nsp, id, data, &payload.attachments)
    }

    pub(crate) fn ack(nsp: &str, id: u64, payload: &Payload) -> Encoded {
        Self::with_args(
            PacketType::Ack,
            PacketType::BinaryAck,
            nsp,
            Some(id),
            payload.args.clone(),
            &payload.attachments,
        )
    }

    fn with_args(
        plain: PacketType,
        binary: PacketType,
        nsp: &str,
        id: Option<u64>,
        data: Vec<Value>,
        attachments: &[Bytes],
    ) -> Encoded {
        let kind = if attachments.is_empty() { plain } else { binary };
        let packet =
            Packet { kind, nsp: nsp.to_owned(), id, data: Some(Value::Array(data)), attachments: attachments.len() };
        Self::packet(&packet, attachments)
    }

    /// `{sid}`, plus the private id `pid` when the socket can be recovered.
    pub(crate) fn connect_ack(nsp: &str, sid: &str, pid: Option<&str>) -> Encoded {
        let mut data = serde_json::json!({ "sid": sid });
        if let Some(pid) = pid {
            data["pid"] = Value::String(pid.to_owned());
        }
        let packet =
            Packet { kind: PacketType::Connect, nsp: nsp.to_owned(), id: None, data: Some(data), attachments: 0 };
        Self::packet(&packet, &[])
    }

    /// Bytes held, for the recovery backlog's cap.
    pub(crate) fn len(&self) -> usize {
        match self {
            Encoded::One(frame) => frame.len(),
            Encoded::Group(frames) => frames.iter().map(Frame::len).sum(),
        }
    }

    pub(crate) fn send_to(&self, session: &Session) -> Result<(), EmitError> {
        match self {
            Encoded::One(frame) => session.send(frame.clone()),
            Encoded::Group(frames) => session.send_group(frames.clone()),
        }
        .map_err(EmitError::from)
    }
}
