//! The websocket transport: a session opened directly over websocket, or a polling session
//! upgraded to one (`2probe` / `3probe` / `5`).
//!
//! Message and frame sizes are capped at `maxPayload` (tungstenite's defaults are 64 MiB and
//! 16 MiB); a client that goes over is disconnected.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use super::Engine;
use super::packet::{Frame, Packet};
use super::session::{CloseReason, Session, Transport};

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Read buffer per websocket. tungstenite allocates and zero-fills it eagerly (128 KiB by
/// default), so it is most of what an idle client costs. Clients send small packets (events,
/// acks, pongs); a larger message still arrives whole, in more reads.
const READ_BUFFER: usize = 1024;
/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long a closing websocket may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub(super) async fn accept(upgraded: Upgraded, max_payload: usize) -> Ws {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_payload))
        .max_frame_size(Some(max_payload));
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await
}

/// Takes over a polling session once the client proves the websocket works.
pub(super) async fn run_upgrade(engine: Arc<Engine>, mut ws: Ws, session: Arc<Session>) {
    let deadline = Instant::now() + engine.config.upgrade_timeout;
    let upgraded = probe(&mut ws, &session, deadline).await;
    if !upgraded {
        session.state.modify(|s| s.upgrading = false);
        session.upgrade_claimed.store(false, Ordering::Release);
        let _ = ws.close(None).await;
        return;
    }
    session.state.modify(|s| {
        s.transport = Transport::WebSocket;
        s.upgrading = false;
    });
    tracing::debug!(sid = %session.sid(), "upgraded to websocket");
    serve(&session, ws).await;
}

/// Runs the probe exchange; true when the client sent the upgrade packet in time.
async fn probe(ws: &mut Ws, session: &Session, deadline: Instant) -> bool {
    let mut probed = false;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, ws.next()) => next,
            _ = session.closed() => return false,
        };
        let text = match next {
            Ok(Some(Ok(WsMessage::Text(text)))) => text,
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Err(_) => {
                tracing::debug!(sid = %session.sid(), "upgrade timed out");
                return false;
            }
            _ => return false,
        };
        match (Packet::decode_text(text.as_str()), probed) {
            (Ok(Packet::PingProbe), false) => {
                if ws.send(frame_to_ws(Frame::pong_probe())).await.is_err() {
                    return false;
                }
                probed = true;
                // From here every polling GET is answered at once so the client can pause.
                session.state.modify(|s| s.upgrading = true);
            }
            (Ok(Packet::Upgrade), true) => return !session.is_closed(),
            _ => return false,
        }
    }
}

/// Pumps the session's queue to the socket and the socket's messages to the session.
pub(super) async fn serve(session: &Arc<Session>, ws: Ws) {
    let (mut sink, mut stream) = ws.split();
    // Waits for a parked polling GET to hand back the queue (it is woken by the upgrade).
    let mut reader = session.outbox.reader().await;
    let writer = async {
        // Grows on first use: an idle connection should not hold room for a full batch.
        let mut batch = Vec::new();
        loop {
            let closing = tokio::select! {
                biased;
                // Never empty-handed: the outbox stays open as long as the session exists.
                _ = reader.recv_many(&mut batch, WRITE_BATCH) => false,
                _ = session.closed() => true,
            };
            if closing {
                // Whatever the layer above queued before closing still goes out.
                reader.drain(&mut batch, usize::MAX);
            }
            for item in batch.drain(..) {
                for frame in item.frames() {
                    if sink.feed(frame_to_ws(frame.clone())).await.is_err() {
                        return;
                    }
                }
            }
            if sink.flush().await.is_err() || closing {
                let _ = sink.close().await;
                return;
            }
        }
    };
    let reader = async {
        while let Some(message) = stream.next().await {
            let packet = match message {
                Ok(WsMessage::Text(text)) => Packet::decode_text(text.as_str()),
                Ok(WsMessage::Binary(data)) => Ok(Packet::Binary(data)),
                Ok(WsMessage::Close(_)) => return CloseReason::TransportClose,
                Ok(_) => continue,
                Err(tungstenite::Error::Capacity(error)) => {
                    tracing::debug!(sid = %session.sid(), %error, "websocket message over maxPayload");
                    return CloseReason::TransportError;
                }
                // A peer that vanished without a closing handshake has closed the transport, as
                // far as the reference server is concerned.
                Err(
                    tungstenite::Error::Io(_)
                    | tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake),
                ) => {
                    return CloseReason::TransportClose;
                }
                Err(error) => {
                    tracing::debug!(sid = %session.sid(), %error, "websocket read failed");
                    return CloseReason::TransportError;
                }
            };
            match packet {
                Ok(packet) => session.receive(packet),
                Err(error) => {
                    tracing::debug!(sid = %session.sid(), %error, "undecodable websocket packet");
                    return CloseReason::ParseError;
                }
            }
        }
        CloseReason::TransportClose
    };
    tokio::pin!(writer);
    tokio::select! {
        reason = reader => {
            session.close(reason);
            // Let the writer say goodbye with a close frame, but never wait on a dead peer.
            let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
        }
        () = &mut writer => session.close(CloseReason::TransportError),
    }
}

fn frame_to_ws(frame: Frame) -> WsMessage {
    match frame {
        Frame::Text(text) => WsMessage::Text(text),
        Frame::Binary(data) => WsMessage::Binary(data),
    }
}
