//! The HTTP long-polling transport: a GET waits for queued packets, a POST carries the client's.
//!
//! One GET and one POST may be in flight per session; an overlapping second one closes the
//! session, as the reference server does. While a websocket upgrade is in flight every GET is
//! answered at once (a noop if nothing else is queued) so the client can pause polling promptly.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};

use super::packet::{Frame, Packet};
use super::session::{CloseReason, Outbound, Session, Transport};
use super::{Engine, ErrorCode};

/// Answers a long-polling GET with everything queued, waiting for the first packet if needed.
pub(super) async fn poll(engine: &Engine, session: &Arc<Session>) -> Response<Full<Bytes>> {
    let Some(mut reader) = session.outbox.try_reader() else {
        tracing::debug!(sid = %session.sid(), "overlapping polling GET");
        session.close(CloseReason::TransportError);
        return ErrorCode::BadRequest.response();
    };
    let mut frames = Vec::new();
    reader.drain(&mut frames, usize::MAX);
    let parked = {
        let now = session.state.get();
        frames.is_empty() && !now.closed && !now.upgrading && now.transport == Transport::Polling
    };
    if parked {
        tokio::select! {
            _ = reader.recv_many(&mut frames, usize::MAX) => {}
            _ = session.state.wait_for(|s| s.closed || s.upgrading || s.transport != Transport::Polling) => {}
        }
        reader.drain(&mut frames, usize::MAX);
    }
    drop(reader);
    if session.is_closed() {
        // Whatever was queued (the close packet last) is delivered now; the session is done.
        engine.remove(session.sid());
        if frames.is_empty() && !parked {
            return ErrorCode::UnknownSid.response();
        }
    }
    if frames.is_empty() {
        frames.push(Outbound::One(Frame::noop()));
    }
    let payload = Frame::encode_payload(frames.iter().flat_map(|item| item.frames()));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
        .body(Full::new(Bytes::from(payload)))
        .unwrap_or_default()
}

/// Reads a POST payload (at most `maxPayload` bytes) and hands its packets to the session.
pub(super) async fn post(engine: &Engine, session: &Arc<Session>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if session.posting.swap(true, Ordering::AcqRel) {
        tracing::debug!(sid = %session.sid(), "overlapping polling POST");
        session.close(CloseReason::TransportError);
        return ErrorCode::BadRequest.response();
    }
    let response = read_post(engine, session, request).await;
    session.posting.store(false, Ordering::Release);
    response
}

async fn read_post(engine: &Engine, session: &Arc<Session>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let max = engine.config.max_payload;
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return payload_too_large(session);
    }
    let body = match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return payload_too_large(session);
        }
        Err(error) => {
            tracing::debug!(sid = %session.sid(), %error, "polling POST body failed");
            session.close(CloseReason::TransportError);
            return ErrorCode::BadRequest.response();
        }
    };
    match Packet::decode_payload(&body) {
        Ok(packets) => {
            for packet in packets {
                session.receive(packet);
            }
            Response::builder()
                .header(header::CONTENT_TYPE, "text/html")
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap_or_default()
        }
        Err(error) => {
            tracing::debug!(sid = %session.sid(), %error, "undecodable polling payload");
            session.close(CloseReason::ParseError);
            ErrorCode::BadRequest.response()
        }
    }
}

fn payload_too_large(session: &Session) -> Response<Full<Bytes>> {
    tracing::debug!(sid = %session.sid(), "polling POST over maxPayload");
    session.close(CloseReason::TransportError);
    let mut response = Response::new(Full::new(Bytes::from_static(b"Payload Too Large")));
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    response
}
