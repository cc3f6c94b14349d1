//! The application's real-time events on the `/` namespace.
//!
//! Every socket authenticates in the handshake with an access token (`auth: { token }`), then
//! joins its organization's room, which is where processing progress, chat and device state
//! are pushed. Sockets may follow one video more closely (`video:subscribe`), but only videos
//! of their own organization.
//!
//! When the token expires the server closes the transport rather than the namespace: the
//! client then reconnects by itself and its `auth` callback supplies a fresh token; a stale
//! one is refused with "Invalid token" and the client stops.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::{Claims, TokenError, TokenKeys, unix_now};
use crate::socketio::{AckSender, ConnectError, Payload, Socket, SocketIo};

pub const VIDEO_CREATED: &str = "video:created";
pub const VIDEO_UPDATED: &str = "video:updated";
pub const VIDEO_DELETED: &str = "video:deleted";

/// Who may see which video; the store implements it.
pub trait VideoDirectory: Send + Sync + 'static {
    /// Whether `video_id` names a video of organization `org`.
    fn belongs_to(&self, video_id: &str, org: &str) -> bool;
}

impl VideoDirectory for crate::store::Store {
    fn belongs_to(&self, video_id: &str, org: &str) -> bool {
        self.video_belongs_to(video_id, org)
    }
}

/// Sends `event` to every socket of organization `org`.
pub fn to_organization(io: &SocketIo, org: &str, event: &str, payload: Value) {
    io.of("/").to(org_room(org)).emit(event, vec![payload]);
}

pub fn org_room(org: &str) -> String {
    format!("org:{org}")
}

pub fn video_room(video_id: &str) -> String {
    format!("video:{video_id}")
}

/// Wires authentication and the application events onto the `/` namespace.
pub fn install(io: &SocketIo, keys: Arc<TokenKeys>, videos: Arc<dyn VideoDirectory>) {
    let main = io.of("/");
    main.use_middleware(move |handshake, extensions| {
        let token = handshake.auth.get("token").and_then(Value::as_str).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(ConnectError::new("Authentication required"));
        };
        match keys.verify(token) {
            Ok(claims) => {
                extensions.insert(claims);
                Ok(())
            }
            Err(TokenError::Expired | TokenError::Invalid) => Err(ConnectError::new("Invalid token")),
        }
    });
    main.on_connect(|socket| {
        let Some(claims) = socket.extensions().get::<Claims>() else {
            socket.disconnect();
            return;
        };
        socket.join(org_room(&claims.org));
        tracing::info!(socket = %socket.id(), user = claims.sub, org = claims.org, "user connected");
        close_when_expired(socket, claims.exp);
    });
    let subscribe_videos = videos.clone();
    main.on("video:subscribe", move |socket, payload, ack| {
        let answer = match requested_video(&payload) {
            Some(id) if owns(socket, subscribe_videos.as_ref(), id) => {
                socket.join(video_room(id));
                json!({ "ok": true })
            }
            // Another organization's video and a missing one look the same.
            Some(_) => json!({ "error": "not found" }),
            None => json!({ "error": "videoId required" }),
        };
        reply(ack, answer);
    });
    main.on("video:unsubscribe", |socket, payload, ack| {
        let answer = match requested_video(&payload) {
            Some(id) => {
                socket.leave(&video_room(id));
                json!({ "ok": true })
            }
            None => json!({ "error": "videoId required" }),
        };
        reply(ack, answer);
    });
}

/// `"id"` or `{ "videoId": "id" }`.
fn requested_video(payload: &Payload) -> Option<&str> {
    let first = payload.args.first()?;
    first.as_str().or_else(|| first.get("videoId")?.as_str()).filter(|id| !id.is_empty())
}

fn owns(socket: &Socket, videos: &dyn VideoDirectory, video_id: &str) -> bool {
    let Some(claims) = socket.extensions().get::<Claims>() else {
        return false;
    };
    videos.belongs_to(video_id, &claims.org)
}

fn reply(ack: Option<AckSender>, answer: Value) {
    if let Some(ack) = ack {
        let _ = ack.send(answer);
    }
}

fn close_when_expired(socket: &Arc<Socket>, exp: u64) {
    let weak = Arc::downgrade(socket);
    let session = socket.session().clone();
    let left = Duration::from_secs(exp.saturating_sub(unix_now()));
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            // Gone before its token expired: nothing to do.
            () = session.closed() => return,
        }
        if let Some(socket) = weak.upgrade()
            && socket.connected()
        {
            tracing::info!(socket = %socket.id(), "access token expired, closing the connection");
            socket.close_connection();
        }
    });
}
