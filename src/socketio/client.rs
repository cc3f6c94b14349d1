//! One engine session as Socket.IO sees it: decodes its messages, reassembles binary packets,
//! and routes packets to the sockets it holds, one per connected namespace.

use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use bytes::Bytes;
use http::Extensions;
use serde_json::Value;
use tokio::task::AbortHandle;

use super::Encoded;
use super::Shared;
use super::assembler::{Assembled, Assembler, Limits};
use super::namespace::{ConnectError, Namespace};
use super::packet::{Packet, PacketType, Payload};
use super::recovery::{Claim, Restored};
use super::rooms::Room;
use super::socket::{AckSender, DisconnectReason, Handshake, Identity, Socket};
use crate::engineio::{CloseReason, Connection, Message, Session};

/// How a CONNECT ended.
enum Admit {
    Connected(Arc<Socket>),
    /// The connection closed meanwhile.
    Closed,
    /// The middleware was skipped for a recovery that fell through: run it, then admit anew.
    Unchecked,
}

pub struct Client {
    me: Weak<Client>,
    server: Arc<Shared>,
    session: Arc<Session>,
    /// `None` once the connection has closed, so a late CONNECT cannot leak a socket.
    sockets: Mutex<Option<Vec<Arc<Socket>>>>,
    assembler: Mutex<Assembler>,
    connect_timer: Mutex<Option<AbortHandle>>,
}

impl Client {
    pub(super) fn open(server: Arc<Shared>, session: Arc<Session>) -> Arc<Client> {
        let limits = Limits {
            max_attachments: server.config.max_attachments,
            max_attachment_bytes: server.config.max_attachment_bytes,
        };
        let client = Arc::new_cyclic(|me| Client {
            me: me.clone(),
            server,
            session,
            sockets: Mutex::new(Some(Vec::new())),
            assembler: Mutex::new(Assembler::new(limits)),
            connect_timer: Mutex::new(None),
        });
        // A connection that joins no namespace in time is closed, as the reference does.
        let weak = Arc::downgrade(&client);
        let timeout = client.server.config.connect_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(client) = weak.upgrade()
                && client.socket_count() == 0
            {
                tracing::debug!(sid = %client.session.sid(), "no namespace joined in time");
                client.session.close(CloseReason::ForcedClose);
            }
        });
        if let Ok(mut slot) = client.connect_timer.lock() {
            *slot = Some(timer.abort_handle());
        }
        client
    }

    fn socket_count(&self) -> usize {
        self.sockets.lock().ok().and_then(|s| s.as_ref().map(Vec::len)).unwrap_or(0)
    }

    fn socket_for(&self, nsp: &str) -> Option<Arc<Socket>> {
        let sockets = self.sockets.lock().ok()?;
        sockets.as_ref()?.iter().find(|s| s.namespace().name() == nsp).cloned()
    }

    pub(super) fn forget(&self, socket: &Arc<Socket>) {
        if let Ok(mut sockets) = self.sockets.lock()
            && let Some(list) = sockets.as_mut()
        {
            list.retain(|s| !Arc::ptr_eq(s, socket));
        }
    }

    fn receive(&self, message: Message) -> Result<(), &'static str> {
        let assembled = self.assembler.lock().map_err(|_| "poisoned")?.push(message)?;
        match assembled {
            Assembled::Packet(packet, attachments) => self.dispatch(packet, attachments),
            Assembled::Started { sequence } => {
                self.expire_partial(sequence);
                Ok(())
            }
            Assembled::Pending => Ok(()),
        }
    }

    /// A binary packet whose attachments do not all arrive in time closes the connection.
    fn expire_partial(&self, sequence: u64) {
        let weak = self.me.clone();
        let timeout = self.server.config.binary_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(client) = weak.upgrade() else { return };
            let stale = client.assembler.lock().is_ok_and(|a| a.is_waiting_on(sequence));
            if stale {
                tracing::debug!(sid = %client.session.sid(), "binary attachments did not arrive in time");
                client.session.close(CloseReason::ParseError);
            }
        });
    }

    fn dispatch(&self, packet: Packet, attachments: Vec<Bytes>) -> Result<(), &'static str> {
        match packet.kind {
            PacketType::Connect => self.connect(packet),
            PacketType::Disconnect => {
                if let Some(socket) = self.socket_for(&packet.nsp) {
                    socket.teardown(DisconnectReason::ClientNamespaceDisconnect);
                }
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let Some(socket) = self.socket_for(&packet.nsp) else {
                    return Ok(());
                };
                let Some(Value::Array(mut args)) = packet.data else {
                    return Err("event without arguments");
                };
                let Value::String(event) = args.remove(0) else {
                    return Err("event name is not a string");
                };
                let ack = packet.id.map(|id| AckSender::new(socket.clone(), id));
                socket.namespace().clone().run_event(&socket, &event, Payload { args, attachments }, ack);
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let (Some(socket), Some(id), Some(Value::Array(args))) =
                    (self.socket_for(&packet.nsp), packet.id, packet.data)
                else {
                    return Ok(());
                };
                socket.resolve_ack(id, Payload { args, attachments });
            }
            // Only servers send CONNECT_ERROR; the reference ignores one from a client.
            PacketType::ConnectError => {}
        }
        Ok(())
    }

    fn connect(&self, packet: Packet) {
        let nsp = packet.nsp;
        let Some(namespace) = self.server.namespace(&nsp) else {
            self.refuse(&nsp, &ConnectError::new("Invalid namespace"));
            return;
        };
        // A repeated CONNECT gets the same answer again: no second socket, no second
        // middleware run.
        if let Some(existing) = self.socket_for(&nsp) {
            let _ = Encoded::connect_ack(&nsp, existing.id(), existing.pid().map(|p| &**p)).send_to(&self.session);
            return;
        }
        let handshake = Handshake {
            auth: packet.data.unwrap_or_else(|| Value::Object(Default::default())),
            request: self.session.request().clone(),
            issued: SystemTime::now(),
        };
        let claim = namespace.recovery().and_then(|_| Claim::from_auth(&handshake.auth));
        let skip_middleware = match (namespace.recovery(), &claim) {
            (Some(recovery), Some(claim)) => recovery.skip_middleware() && recovery.has(&claim.pid),
            _ => false,
        };
        let checked = if skip_middleware {
            None
        } else {
            let Some(extensions) = self.run_middleware(&namespace, &handshake) else { return };
            Some(extensions)
        };
        if let Some(claim) = &claim {
            self.take_over(&namespace, claim, checked.as_ref());
        }
        let admitted = match self.admit(&namespace, handshake.clone(), claim.as_ref(), checked) {
            Admit::Unchecked => {
                // The middleware was skipped for a recovery that then fell through (expired
                // meanwhile, or the backlog moved on): this is a new client after all.
                let Some(extensions) = self.run_middleware(&namespace, &handshake) else { return };
                self.admit(&namespace, handshake, None, Some(extensions))
            }
            admitted => admitted,
        };
        let Admit::Connected(socket) = admitted else { return };
        self.session.admit();
        if let Some(timer) = self.connect_timer.lock().ok().and_then(|mut t| t.take()) {
            timer.abort();
        }
        tracing::debug!(sid = %self.session.sid(), socket = %socket.id(), nsp, recovered = socket.recovered(), "socket connected");
        namespace.run_connect(&socket);
    }

    /// A client that comes back while its old connection still looks alive (a long-poll
    /// whose network vanished, a websocket not yet timed out) ends that connection, so its
    /// socket is kept for the recovery that follows.
    fn take_over(&self, namespace: &Namespace, claim: &Claim, checked: Option<&Extensions>) {
        let Some(old) = namespace.recovery().and_then(|recovery| recovery.live(&claim.pid)) else { return };
        if Arc::ptr_eq(old.session(), &self.session)
            || checked.is_some_and(|fresh| !namespace.recovery_allowed(old.extensions(), fresh))
        {
            return;
        }
        tracing::debug!(old = %old.session().sid(), new = %self.session.sid(), socket = %old.id(), "client came back on a new connection");
        old.session().close(CloseReason::TransportClose);
    }

    /// Runs the namespace's middleware; `None` when one refused (the client has been told).
    fn run_middleware(&self, namespace: &Namespace, handshake: &Handshake) -> Option<Extensions> {
        let mut extensions = Extensions::new();
        for middleware in namespace.middleware() {
            if let Err(error) = middleware(handshake, &mut extensions) {
                let nsp = namespace.name();
                tracing::debug!(sid = %self.session.sid(), nsp, message = error.message, "connect refused");
                self.refuse(nsp, &error);
                return None;
            }
        }
        Some(extensions)
    }

    /// Creates the socket, taking over the dropped one `claim` names when it can be
    /// recovered. `checked` holds what the middleware attached, `None` when it was skipped.
    fn admit(
        &self,
        namespace: &Arc<Namespace>,
        handshake: Handshake,
        claim: Option<&Claim>,
        checked: Option<Extensions>,
    ) -> Admit {
        let Some(recovery) = namespace.recovery() else {
            let Some(extensions) = checked else { return Admit::Unchecked };
            return self.place(namespace, Identity::fresh(false), handshake, extensions, Vec::new(), Vec::new());
        };
        recovery.restore(claim, |restored| {
            let restored = restored.filter(|restored| {
                checked.as_ref().is_none_or(|fresh| namespace.recovery_allowed(&restored.dropped.extensions, fresh))
            });
            match (restored, checked) {
                (Some(Restored { dropped, missed }), checked) => {
                    let identity = Identity { id: dropped.id, pid: Some(dropped.pid), recovered: true };
                    let extensions = checked.unwrap_or(dropped.extensions);
                    self.place(namespace, identity, handshake, extensions, dropped.rooms, missed)
                }
                (None, Some(extensions)) => {
                    self.place(namespace, Identity::fresh(true), handshake, extensions, Vec::new(), Vec::new())
                }
                (None, None) => Admit::Unchecked,
            }
        })
    }

    /// Puts a new socket in the namespace and this client, in `rooms`, then sends the
    /// CONNECT ack and the packets it `missed`.
    fn place(
        &self,
        namespace: &Arc<Namespace>,
        identity: Identity,
        handshake: Handshake,
        extensions: Extensions,
        rooms: Vec<Room>,
        missed: Vec<(u64, Encoded)>,
    ) -> Admit {
        let socket = Arc::new(Socket::new(
            identity,
            namespace.clone(),
            self.session.clone(),
            self.me.clone(),
            handshake,
            extensions,
        ));
        // Into the namespace first, then the client's list: a close that races this CONNECT
        // either finds the socket in the list or leaves `None` behind, and we tear down.
        namespace.insert(&socket);
        let listed = match self.sockets.lock().ok().as_deref_mut().and_then(Option::as_mut) {
            Some(list) => {
                list.push(socket.clone());
                true
            }
            None => false,
        };
        if !listed {
            socket.teardown(DisconnectReason::Transport(CloseReason::TransportClose));
            return Admit::Closed;
        }
        for room in rooms {
            socket.join(room);
        }
        let _ = Encoded::connect_ack(namespace.name(), socket.id(), socket.pid().map(|p| &**p)).send_to(&self.session);
        for (seq, encoded) in &missed {
            let _ = socket.send_numbered(*seq, encoded);
        }
        Admit::Connected(socket)
    }

    fn refuse(&self, nsp: &str, error: &ConnectError) {
        let packet = Packet {
            kind: PacketType::ConnectError,
            nsp: nsp.to_owned(),
            id: None,
            data: Some(error.to_json()),
            attachments: 0,
        };
        let _ = Encoded::packet(&packet, &[]).send_to(&self.session);
    }
}

impl Connection for Client {
    fn on_message(&self, message: Message) {
        if let Err(reason) = self.receive(message) {
            tracing::debug!(sid = %self.session.sid(), reason, "closing connection: parse error");
            self.session.close(CloseReason::ParseError);
        }
    }

    fn on_close(&self, reason: CloseReason) {
        if let Some(timer) = self.connect_timer.lock().ok().and_then(|mut t| t.take()) {
            timer.abort();
        }
        if let Ok(mut assembler) = self.assembler.lock() {
            assembler.reset();
        }
        let sockets = self.sockets.lock().ok().and_then(|mut s| s.take()).unwrap_or_default();
        for socket in sockets {
            socket.teardown(DisconnectReason::Transport(reason));
        }
    }
}
