//! A namespace: its connect middleware, its event handlers, its sockets and rooms, and
//! broadcasting to them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use http::Extensions;
use serde_json::Value;

use super::Encoded;
use super::packet::Payload;
use super::recovery::{Recovery, RecoveryConfig, Target};
use super::rooms::{Room, Rooms};
use super::socket::{AckSender, DisconnectReason, Handshake, Socket, SocketId};

/// Why a connect middleware refused a socket: sent to the client as CONNECT_ERROR
/// (`connect_error` with `err.message` and `err.data`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

impl ConnectError {
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError { message: message.into(), data: None }
    }

    pub fn with_data(mut self, data: Value) -> ConnectError {
        self.data = Some(data);
        self
    }

    pub(super) fn to_json(&self) -> Value {
        let mut json = serde_json::json!({ "message": self.message });
        if let Some(data) = &self.data {
            json["data"] = data.clone();
        }
        json
    }
}

/// Runs on every CONNECT before the socket exists; may attach values the socket then carries.
pub type Middleware = Arc<dyn Fn(&Handshake, &mut Extensions) -> Result<(), ConnectError> + Send + Sync>;
pub type ConnectHandler = Arc<dyn Fn(&Arc<Socket>) + Send + Sync>;
/// Handles one event; `ack` is present when the client asked for an acknowledgement.
pub type EventHandler = Arc<dyn Fn(&Arc<Socket>, Payload, Option<AckSender>) + Send + Sync>;
pub type DisconnectHandler = Arc<dyn Fn(&Arc<Socket>, DisconnectReason) + Send + Sync>;
/// Decides whether a reconnecting client may take over a dropped socket: gets the socket's
/// extensions and the ones the middleware just attached for the new connection.
pub type RecoveryGuard = Arc<dyn Fn(&Extensions, &Extensions) -> bool + Send + Sync>;

#[derive(Default)]
struct Handlers {
    middleware: Vec<Middleware>,
    connect: Option<ConnectHandler>,
    disconnect: Option<DisconnectHandler>,
    recovery_guard: Option<RecoveryGuard>,
    events: HashMap<String, EventHandler>,
}

pub struct Namespace {
    name: String,
    handlers: RwLock<Handlers>,
    sockets: RwLock<HashMap<SocketId, Arc<Socket>>>,
    rooms: RwLock<Rooms>,
    recovery: Option<Recovery>,
}

impl Namespace {
    pub(super) fn new(name: &str, recovery: Option<RecoveryConfig>) -> Namespace {
        Namespace {
            name: name.to_owned(),
            handlers: RwLock::default(),
            sockets: RwLock::default(),
            rooms: RwLock::default(),
            recovery: recovery.map(Recovery::new),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a connect middleware; they run in the order added, the first error wins.
    pub fn use_middleware(
        &self,
        middleware: impl Fn(&Handshake, &mut Extensions) -> Result<(), ConnectError> + Send + Sync + 'static,
    ) -> &Self {
        if let Ok(mut handlers) = self.handlers.write() {
            handlers.middleware.push(Arc::new(middleware));
        }
        self
    }

    pub fn on_connect(&self, handler: impl Fn(&Arc<Socket>) + Send + Sync + 'static) -> &Self {
        if let Ok(mut handlers) = self.handlers.write() {
            handlers.connect = Some(Arc::new(handler));
        }
        self
    }

    pub fn on_disconnect(&self, handler: impl Fn(&Arc<Socket>, DisconnectReason) + Send + Sync + 'static) -> &Self {
        if let Ok(mut handlers) = self.handlers.write() {
            handlers.disconnect = Some(Arc::new(handler));
        }
        self
    }

    /// Checks a recovery when the middleware ran for it (see [`RecoveryGuard`]); without a
    /// guard any client holding the private id recovers.
    pub fn guard_recovery(&self, guard: impl Fn(&Extensions, &Extensions) -> bool + Send + Sync + 'static) -> &Self {
        if let Ok(mut handlers) = self.handlers.write() {
            handlers.recovery_guard = Some(Arc::new(guard));
        }
        self
    }

    /// Handles `event` for every socket of the namespace. Handlers run on the connection's
    /// reader, in arrival order: keep them short and spawn a task for slow work.
    pub fn on(
        &self,
        event: &str,
        handler: impl Fn(&Arc<Socket>, Payload, Option<AckSender>) + Send + Sync + 'static,
    ) -> &Self {
        if let Ok(mut handlers) = self.handlers.write() {
            handlers.events.insert(event.to_owned(), Arc::new(handler));
        }
        self
    }

    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        self.sockets.read().ok()?.get(id).cloned()
    }

    pub fn socket_count(&self) -> usize {
        self.sockets.read().map(|s| s.len()).unwrap_or(0)
    }

    /// Sockets currently in `room`.
    pub fn room_size(&self, room: &str) -> usize {
        self.rooms.read().map(|r| r.len(room)).unwrap_or(0)
    }

    pub fn to(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// Everyone in the namespace, narrowed by `to` / `except`.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator { namespace: self.clone(), rooms: Vec::new(), except: Vec::new(), except_socket: None }
    }

    pub fn emit(self: &Arc<Self>, event: &str, payload: impl Into<Payload>) -> usize {
        self.broadcast().emit(event, payload)
    }

    pub(super) fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    pub(super) fn recovery_allowed(&self, dropped: &Extensions, fresh: &Extensions) -> bool {
        let guard = self.handlers.read().ok().and_then(|h| h.recovery_guard.clone());
        guard.is_none_or(|guard| guard(dropped, fresh))
    }

    pub(super) fn middleware(&self) -> Vec<Middleware> {
        self.handlers.read().map(|h| h.middleware.clone()).unwrap_or_default()
    }

    pub(super) fn insert(&self, socket: &Arc<Socket>) {
        if let Ok(mut sockets) = self.sockets.write() {
            sockets.insert(socket.id().clone(), socket.clone());
        }
        if let (Some(recovery), Some(pid)) = (&self.recovery, socket.pid()) {
            recovery.track(pid, socket);
        }
    }

    pub(super) fn remove(&self, id: &SocketId) -> Option<Arc<Socket>> {
        let socket = self.sockets.write().ok()?.remove(id)?;
        if let (Some(recovery), Some(pid)) = (&self.recovery, socket.pid()) {
            recovery.untrack(pid);
        }
        Some(socket)
    }

    pub(super) fn join(&self, room: Room, socket: &Arc<Socket>) -> bool {
        self.rooms.write().map(|mut rooms| rooms.join(room, socket)).unwrap_or(false)
    }

    pub(super) fn leave(&self, room: &str, id: &SocketId) {
        if let Ok(mut rooms) = self.rooms.write() {
            rooms.leave(room, id);
        }
    }

    pub(super) fn run_connect(&self, socket: &Arc<Socket>) {
        let handler = self.handlers.read().ok().and_then(|h| h.connect.clone());
        if let Some(handler) = handler {
            handler(socket);
        }
    }

    pub(super) fn run_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        let handler = self.handlers.read().ok().and_then(|h| h.disconnect.clone());
        if let Some(handler) = handler {
            handler(socket, reason);
        }
    }

    pub(super) fn run_event(&self, socket: &Arc<Socket>, event: &str, payload: Payload, ack: Option<AckSender>) {
        let handler = self.handlers.read().ok().and_then(|h| h.events.get(event).cloned());
        match handler {
            Some(handler) => handler(socket, payload, ack),
            None => tracing::trace!(socket = %socket.id(), event, "no handler for event"),
        }
    }
}

/// A broadcast in the making: target rooms, exclusions, then `emit`.
#[derive(Clone)]
pub struct BroadcastOperator {
    namespace: Arc<Namespace>,
    rooms: Vec<Room>,
    except: Vec<Room>,
    except_socket: Option<SocketId>,
}

impl BroadcastOperator {
    /// Adds a target room; with none, the whole namespace is targeted.
    pub fn to(mut self, room: impl Into<Room>) -> Self {
        self.rooms.push(room.into());
        self
    }

    pub fn except(mut self, room: impl Into<Room>) -> Self {
        self.except.push(room.into());
        self
    }

    /// Leaves one socket out (typically the sender).
    pub fn except_socket(mut self, id: SocketId) -> Self {
        self.except_socket = Some(id);
        self
    }

    /// Sends to every targeted socket once, encoding the packet a single time. Returns how
    /// many sockets it was queued for.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> usize {
        let payload = payload.into();
        let nsp = self.namespace.name();
        let Some(recovery) = self.namespace.recovery() else {
            let encoded = Encoded::event(nsp, event, None, &payload, None);
            return self.recipients().iter().filter(|socket| socket.send(&encoded).is_ok()).count();
        };
        let target = Target {
            rooms: self.rooms.clone(),
            except: self.except.clone(),
            except_socket: self.except_socket.clone(),
        };
        recovery.record(
            target,
            |offset| Encoded::event(nsp, event, None, &payload, Some(offset)),
            |seq, encoded| self.recipients().iter().filter(|socket| socket.send_numbered(seq, encoded).is_ok()).count(),
        )
    }

    /// The targeted sockets (the reference's `fetchSockets`), e.g. to act on each.
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.recipients()
    }

    fn recipients(&self) -> Vec<Arc<Socket>> {
        if self.rooms.is_empty() {
            let excluded = self.rooms_members(&self.except);
            let sockets =
                self.namespace.sockets.read().map(|s| s.values().cloned().collect::<Vec<_>>()).unwrap_or_default();
            return sockets
                .into_iter()
                .filter(|s| Some(s.id()) != self.except_socket.as_ref() && !excluded.contains(s.id()))
                .collect();
        }
        self.namespace
            .rooms
            .read()
            .map(|rooms| rooms.recipients(&self.rooms, &self.except, self.except_socket.as_ref()))
            .unwrap_or_default()
    }

    fn rooms_members(&self, rooms: &[Room]) -> std::collections::HashSet<SocketId> {
        if rooms.is_empty() {
            return Default::default();
        }
        self.namespace
            .rooms
            .read()
            .map(|r| r.recipients(rooms, &[], None).into_iter().map(|s| s.id().clone()).collect())
            .unwrap_or_default()
    }
}
