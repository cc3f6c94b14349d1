//! One client's connection to one namespace: emit, acks, rooms, disconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use http::Extensions;
use serde_json::Value;
use tokio::sync::oneshot;

use super::client::Client;
use super::namespace::{BroadcastOperator, Namespace};
use super::packet::{Packet, PacketType, Payload};
use super::recovery::{Dropped, Target};
use super::rooms::Room;
use super::{EmitError, Encoded};
use crate::engineio::{CloseReason, RequestInfo, Session};

/// The Socket.IO socket id: random, and never the engine session id (protocol v5).
pub type SocketId = Arc<str>;

/// What the client presented when it connected to the namespace.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The CONNECT packet's payload (`auth` on the client), `{}` when absent.
    pub auth: Value,
    pub request: Arc<RequestInfo>,
    pub issued: SystemTime,
}

/// Why a socket left its namespace; the strings are the reference server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    ServerNamespaceDisconnect,
    ClientNamespaceDisconnect,
    Transport(CloseReason),
}

impl DisconnectReason {
    /// Whether the client may come back to the socket (connection state recovery): it lost
    /// the connection without asking to leave, and did not send garbage.
    fn recoverable(self) -> bool {
        matches!(
            self,
            DisconnectReason::Transport(
                CloseReason::TransportClose
                    | CloseReason::TransportError
                    | CloseReason::PingTimeout
                    | CloseReason::ForcedClose
                    | CloseReason::ServerShuttingDown
            )
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::Transport(reason) => reason.as_str(),
        }
    }
}

/// Why an emit-with-ack produced no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the client did not acknowledge in time")]
    Timeout,
    #[error("the socket disconnected before acknowledging")]
    Disconnected,
    #[error(transparent)]
    Emit(#[from] EmitError),
}

/// Who a socket is: its public id, and with recovery on its private id and whether it took
/// over a dropped socket.
pub(super) struct Identity {
    pub id: SocketId,
    pub pid: Option<SocketId>,
    pub recovered: bool,
}

impl Identity {
    pub fn fresh(recoverable: bool) -> Identity {
        let pid = recoverable.then(|| crate::engineio::random_id().into());
        Identity { id: crate::engineio::random_id().into(), pid, recovered: false }
    }
}

/// `first_queued` before any numbered packet was queued.
const NOTHING_QUEUED: u64 = u64::MAX;

pub struct Socket {
    id: SocketId,
    pid: Option<SocketId>,
    recovered: bool,
    /// The first numbered (recoverable) packet queued for this socket.
    first_queued: AtomicU64,
    namespace: Arc<Namespace>,
    session: Arc<Session>,
    client: Weak<Client>,
    handshake: Handshake,
    extensions: Extensions,
    rooms: Mutex<Vec<Room>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<Payload>>>,
    next_ack: AtomicU64,
    connected: AtomicBool,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.id).field("nsp", &self.namespace.name()).finish_non_exhaustive()
    }
}

impl Socket {
    pub(super) fn new(
        identity: Identity,
        namespace: Arc<Namespace>,
        session: Arc<Session>,
        client: Weak<Client>,
        handshake: Handshake,
        extensions: Extensions,
    ) -> Socket {
        Socket {
            id: identity.id,
            pid: identity.pid,
            recovered: identity.recovered,
            first_queued: AtomicU64::new(NOTHING_QUEUED),
            namespace,
            session,
            client,
            handshake,
            extensions,
            rooms: Mutex::new(Vec::new()),
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(0),
            connected: AtomicBool::new(true),
        }
    }

    pub fn id(&self) -> &SocketId {
        &self.id
    }

    /// The private id a client presents to recover this socket (recovery on only).
    pub(super) fn pid(&self) -> Option<&SocketId> {
        self.pid.as_ref()
    }

    /// Whether this socket took over a dropped one: same id, rooms and data, missed events
    /// replayed (`socket.recovered` on the client).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.namespace
    }

    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// Values the namespace middleware attached when the socket connected.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The engine session under this socket (shared by its other namespaces).
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Emits to this socket; with recovery on the event is numbered and kept, so the client
    /// gets it even if its connection drops before it arrives (and a socket object held past
    /// a recovery still reaches the client).
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<(), EmitError> {
        let payload = payload.into();
        let nsp = self.namespace.name();
        match self.namespace.recovery() {
            None => self.send(&Encoded::event(nsp, event, None, &payload, None)),
            Some(recovery) => recovery.record(
                Target::socket(&self.id),
                |offset| Encoded::event(nsp, event, None, &payload, Some(offset)),
                // To whichever socket holds this id now: a recovered one replaces this object.
                |seq, encoded| match self.namespace.socket(&self.id) {
                    Some(current) => current.send_numbered(seq, encoded),
                    None => Err(EmitError::Disconnected),
                },
            ),
        }
    }

    /// Emits and waits for the client's acknowledgement, at most `timeout`.
    pub fn emit_with_ack(
        self: &Arc<Self>,
        event: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Payload, AckError>> + Send + 'static {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut acks) = self.acks.lock() {
            acks.insert(id, tx);
        }
        let sent = self.send(&Encoded::event(self.namespace.name(), event, Some(id), &payload.into(), None));
        let socket = Arc::downgrade(self);
        async move {
            sent?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(payload)) => Ok(payload),
                Ok(Err(_)) => Err(AckError::Disconnected),
                Err(_) => {
                    if let Some(socket) = socket.upgrade() {
                        socket.forget_ack(id);
                    }
                    Err(AckError::Timeout)
                }
            }
        }
    }

    fn forget_ack(&self, id: u64) {
        if let Ok(mut acks) = self.acks.lock() {
            acks.remove(&id);
        }
    }

    pub(super) fn resolve_ack(&self, id: u64, payload: Payload) {
        let pending = self.acks.lock().ok().and_then(|mut acks| acks.remove(&id));
        if let Some(pending) = pending {
            let _ = pending.send(payload);
        }
    }

    pub(super) fn send(&self, encoded: &Encoded) -> Result<(), EmitError> {
        if !self.connected() {
            return Err(EmitError::Disconnected);
        }
        encoded.send_to(&self.session)
    }

    /// Sends a numbered packet, noting the first one: a client that reports no offset when
    /// it recovers has received none, so replay starts there.
    pub(super) fn send_numbered(&self, seq: u64, encoded: &Encoded) -> Result<(), EmitError> {
        if self.first_queued.load(Ordering::Acquire) == NOTHING_QUEUED {
            let _ = self.first_queued.compare_exchange(NOTHING_QUEUED, seq, Ordering::AcqRel, Ordering::Acquire);
        }
        self.send(encoded)
    }

    pub fn join(self: &Arc<Self>, room: impl Into<Room>) {
        let room = room.into();
        if !self.connected() || !self.namespace.join(room.clone(), self) {
            return;
        }
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.push(room.clone());
        }
        // A disconnect that raced us may have emptied our rooms before this one was listed.
        if !self.connected() {
            self.namespace.leave(&room, &self.id);
        }
    }

    pub fn leave(&self, room: &str) {
        self.namespace.leave(room, &self.id);
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.retain(|r| r.as_ref() != room);
        }
    }

    pub fn rooms(&self) -> Vec<Room> {
        self.rooms.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Everyone in `room` (optionally more rooms via the returned operator).
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.namespace.to(room)
    }

    /// Everyone in the namespace but this socket.
    pub fn broadcast(&self) -> BroadcastOperator {
        self.namespace.broadcast().except_socket(self.id.clone())
    }

    /// Disconnects this socket from its namespace (`41`); the client will not reconnect by
    /// itself. The engine connection stays up for other namespaces.
    pub fn disconnect(&self) {
        let packet = Packet {
            kind: PacketType::Disconnect,
            nsp: self.namespace.name().to_owned(),
            id: None,
            data: None,
            attachments: 0,
        };
        let _ = self.send(&Encoded::packet(&packet, &[]));
        self.teardown(DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Closes the whole underlying connection; the client reconnects on its own.
    pub fn close_connection(&self) {
        self.session.close(CloseReason::ForcedClose);
    }

    /// Leaves the namespace: rooms, pending acks, the disconnect handler. Runs once.
    pub(super) fn teardown(&self, reason: DisconnectReason) {
        if !self.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        let rooms = self.rooms.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
        for room in &rooms {
            self.namespace.leave(room, &self.id);
        }
        // Dropping the senders fails every pending emit-with-ack with `Disconnected`.
        if let Ok(mut acks) = self.acks.lock() {
            acks.clear();
        }
        if let Some(socket) = self.namespace.remove(&self.id) {
            if let Some(client) = self.client.upgrade() {
                client.forget(&socket);
            }
            if reason.recoverable()
                && let (Some(recovery), Some(pid)) = (self.namespace.recovery(), &self.pid)
            {
                recovery.keep(|| Dropped {
                    id: self.id.clone(),
                    pid: pid.clone(),
                    rooms: rooms.clone(),
                    extensions: self.extensions.clone(),
                    first_queued: Some(self.first_queued.load(Ordering::Acquire)).filter(|&s| s != NOTHING_QUEUED),
                });
            }
            tracing::debug!(socket = %self.id, nsp = self.namespace.name(), reason = reason.as_str(), "socket disconnected");
            self.namespace.run_disconnect(&socket, reason);
        }
    }
}

/// Answers a client's emit-with-ack. Consumed by sending, so a client gets one answer.
pub struct AckSender {
    socket: Arc<Socket>,
    id: u64,
}

impl AckSender {
    pub(super) fn new(socket: Arc<Socket>, id: u64) -> AckSender {
        AckSender { socket, id }
    }

    pub fn send(self, payload: impl Into<Payload>) -> Result<(), EmitError> {
        let encoded = Encoded::ack(self.socket.namespace.name(), self.id, &payload.into());
        self.socket.send(&encoded)
    }
}
