//! One Engine.IO session: its bounded outgoing queue, its transport state and its heartbeat.
//!
//! Transports come and go (a polling GET, a websocket that takes over after an upgrade); the
//! session outlives them. Whichever transport is active drains the queue, so the upper layer
//! never needs to know which one it is talking through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::outbox::{Full, Outbox};
use super::packet::{Frame, Packet};
use super::{Connection, Engine, PendingSlot, RequestInfo};

/// The engine session id, random and unguessable.
pub type Sid = Arc<str>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Polling,
    WebSocket,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Why a session ended; the strings are the reference server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection or sent a close packet.
    TransportClose,
    /// The transport failed: overlapping requests, an oversized message, a full outgoing buffer.
    TransportError,
    PingTimeout,
    /// The client sent bytes that do not decode (at this layer or the one above).
    ParseError,
    /// The server closed the session on purpose.
    ForcedClose,
    ServerShuttingDown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::ServerShuttingDown => "server shutting down",
        }
    }

    /// A close the client did not ask for: a polling client is told with a close packet.
    fn tell_client(self) -> bool {
        self != CloseReason::TransportClose
    }

    /// A deliberate close lets a polling client collect what was queued before it (say, a
    /// Socket.IO disconnect packet). A dead or misbehaving client gets nothing more: its
    /// session goes at once, as in the reference server.
    fn drains(self) -> bool {
        matches!(self, CloseReason::ForcedClose | CloseReason::ServerShuttingDown)
    }
}

/// A message delivered to the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Bytes),
}

/// Why an outgoing packet was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the session is closed")]
    Closed,
    #[error("the session's outgoing buffer is full")]
    BufferFull,
}

/// What sits in the outgoing queue: one frame, or frames that must stay together (a Socket.IO
/// binary packet and its attachments).
#[derive(Debug, Clone)]
pub(super) enum Outbound {
    One(Frame),
    Group(Arc<[Frame]>),
}

impl Outbound {
    pub(super) fn frames(&self) -> &[Frame] {
        match self {
            Outbound::One(frame) => std::slice::from_ref(frame),
            Outbound::Group(frames) => frames,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct State {
    pub transport: Transport,
    /// The websocket answered the probe: polling requests get a noop at once.
    pub upgrading: bool,
    pub closed: bool,
}

/// The session's [`State`], and a way to wait for it to change. (tokio's `watch` would do, at
/// a few hundred bytes per session for its eight notifiers.)
pub(super) struct StateCell {
    state: Mutex<State>,
    changed: Notify,
}

impl StateCell {
    fn new(state: State) -> StateCell {
        StateCell { state: Mutex::new(state), changed: Notify::new() }
    }

    pub(super) fn get(&self) -> State {
        *self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn modify(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        self.changed.notify_waiters();
    }

    /// Resolves with the state once `condition` holds.
    pub(super) async fn wait_for(&self, condition: impl Fn(&State) -> bool) -> State {
        loop {
            // Registered before looking, so a change between the look and the wait still wakes us.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = self.get();
            if condition(&now) {
                return now;
            }
            changed.await;
        }
    }
}

pub struct Session {
    sid: Sid,
    request: Arc<RequestInfo>,
    /// Its place among its address's sessions not yet admitted, until [`Session::admit`].
    pending: Mutex<Option<PendingSlot>>,
    pub(super) outbox: Outbox,
    pub(super) state: StateCell,
    pong: Notify,
    closing: AtomicBool,
    /// A websocket has claimed the upgrade of this polling session.
    pub(super) upgrade_claimed: AtomicBool,
    /// A polling POST is being read.
    pub(super) posting: AtomicBool,
    connection: Mutex<Option<Arc<dyn Connection>>>,
    engine: Weak<Engine>,
    me: Weak<Session>,
    /// The outgoing buffer overflowed once; the close it calls for is under way.
    overflowed: AtomicBool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("sid", &self.sid).finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(
        sid: Sid,
        transport: Transport,
        request: Arc<RequestInfo>,
        slot: PendingSlot,
        max_buffered: usize,
        engine: Weak<Engine>,
        me: Weak<Session>,
    ) -> Session {
        Session {
            sid,
            request,
            pending: Mutex::new(Some(slot)),
            outbox: Outbox::new(max_buffered),
            state: StateCell::new(State { transport, upgrading: false, closed: false }),
            pong: Notify::new(),
            closing: AtomicBool::new(false),
            upgrade_claimed: AtomicBool::new(false),
            posting: AtomicBool::new(false),
            connection: Mutex::new(None),
            engine,
            me,
            overflowed: AtomicBool::new(false),
        }
    }

    pub fn sid(&self) -> &Sid {
        &self.sid
    }

    /// The HTTP request that opened the session.
    pub fn request(&self) -> &Arc<RequestInfo> {
        &self.request
    }

    pub fn transport(&self) -> Transport {
        self.state.get().transport
    }

    /// The layer above accepts this client (for Socket.IO: it joined a namespace): it no
    /// longer counts against its address's handshakes in waiting.
    pub fn admit(&self) {
        let slot = self.pending.lock().map(|mut slot| slot.take()).unwrap_or(None);
        drop(slot);
    }

    pub fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Queues one frame for the client.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.enqueue(Outbound::One(frame))
    }

    /// Queues frames that the client must receive back to back.
    pub fn send_group(&self, frames: Arc<[Frame]>) -> Result<(), SendError> {
        self.enqueue(Outbound::Group(frames))
    }

    fn enqueue(&self, item: Outbound) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        match self.outbox.push(item) {
            Ok(()) => Ok(()),
            Err(Full) => {
                // A client that does not read would make us hold its backlog forever: cut it
                // loose. It reconnects and the layer above decides what it missed. Closing
                // runs the layers above (socket teardown, disconnect handlers that may emit),
                // which must not run inside whatever lock the sender holds: a task does it.
                if !self.overflowed.swap(true, Ordering::AcqRel) {
                    tracing::warn!(sid = %self.sid, "outgoing buffer full, closing the session");
                    match (self.me.upgrade(), tokio::runtime::Handle::try_current()) {
                        (Some(me), Ok(runtime)) => {
                            runtime.spawn(async move { me.close(CloseReason::TransportError) });
                        }
                        _ => self.close(CloseReason::TransportError),
                    }
                }
                Err(SendError::BufferFull)
            }
        }
    }

    /// Ends the session. Idempotent; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let transport = self.transport();
        let tell_polling_client = transport == Transport::Polling && reason.tell_client();
        if tell_polling_client {
            // Queued before the state flips, so a parked GET drains it with the rest.
            let _ = self.outbox.push(Outbound::One(Frame::close()));
        }
        self.state.modify(|state| state.closed = true);
        self.admit(); // gives its place back
        tracing::debug!(sid = %self.sid, reason = reason.as_str(), transport = transport.as_str(), "engine session closed");
        let connection = self.connection.lock().map(|mut slot| slot.take()).unwrap_or(None);
        if let Some(connection) = connection {
            connection.on_close(reason);
        }
        if let Some(engine) = self.engine.upgrade() {
            if tell_polling_client && reason.drains() {
                engine.remove_after_grace(self.sid.clone());
            } else {
                engine.remove(&self.sid);
            }
        }
    }

    /// Resolves once the session is closed.
    pub async fn closed(&self) {
        self.state.wait_for(|s| s.closed).await;
    }

    pub(super) fn set_connection(&self, connection: Arc<dyn Connection>) {
        if let Ok(mut slot) = self.connection.lock() {
            *slot = Some(connection);
        }
    }

    /// Handles one decoded packet from the client.
    pub(super) fn receive(&self, packet: Packet) {
        if self.is_closed() {
            return;
        }
        match packet {
            Packet::Pong => self.pong.notify_waiters(),
            Packet::Message(text) => self.deliver(Message::Text(text)),
            Packet::Binary(data) => self.deliver(Message::Binary(data)),
            Packet::Close => self.close(CloseReason::TransportClose),
            // In protocol v4 only the server pings.
            Packet::Ping => {
                tracing::debug!(sid = %self.sid, "client sent a ping: invalid heartbeat direction");
                self.close(CloseReason::TransportError);
            }
            // Only meaningful inside an upgrade, which the websocket transport handles itself.
            Packet::PingProbe | Packet::Upgrade | Packet::Noop => {}
        }
    }

    fn deliver(&self, message: Message) {
        let connection = self.connection.lock().ok().and_then(|slot| slot.clone());
        if let Some(connection) = connection {
            connection.on_message(message);
        }
    }

    /// Pings every `interval`; closes the session when a pong does not come within `timeout`.
    /// The first ping goes out one interval after the open packet, and pings pause while an
    /// upgrade is in flight (they would land in the transport being retired).
    pub(super) async fn heartbeat(self: Arc<Self>, interval: Duration, timeout: Duration) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.closed() => return,
            }
            if self.state.wait_for(|s| s.closed || !s.upgrading).await.closed {
                return;
            }
            // Registered before the ping goes out, so only a pong that answers it counts;
            // early or extra pongs wake nobody and are harmless.
            let pong = self.pong.notified();
            tokio::pin!(pong);
            pong.as_mut().enable();
            if self.send(Frame::ping()).is_err() {
                return;
            }
            tokio::select! {
                _ = pong => {}
                _ = tokio::time::sleep(timeout) => {
                    self.close(CloseReason::PingTimeout);
                    return;
                }
                _ = self.closed() => return,
            }
        }
    }
}
