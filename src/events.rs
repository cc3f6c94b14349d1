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
//!
//! With connection state recovery on (the default), a client that drops and comes back
//! within the window gets every event it missed; the token is checked again, and the socket
//! is recovered only by the same user of the same organization with the same role.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::{Claims, Role, TokenError, TokenKeys, handshake_token, unix_now};
use crate::socketio::{AckSender, ConnectError, Payload, Socket, SocketIo};
use crate::store::Video;

pub const VIDEO_CREATED: &str = "video:created";
pub const VIDEO_UPDATED: &str = "video:updated";
pub const VIDEO_DELETED: &str = "video:deleted";
pub const VIDEO_PROGRESS: &str = "video:progress";
pub const VIDEO_PROCESSED: &str = "video:processed";
pub const VIDEO_FAILED: &str = "video:failed";
pub const DEVICE_STATUS: &str = "device:status";

/// Admins of every organization follow the box's state here: the box is theirs to look after.
pub const DEVICE_ROOM: &str = "device";

/// Shows videos to clients (with their signed media URLs) and tells the organization, and
/// whoever follows a video, about its changes. The API and the job workers share it so a
/// video looks the same whichever of them speaks.
#[derive(Clone)]
pub struct VideoNews {
    io: SocketIo,
    keys: Arc<TokenKeys>,
    media_url_ttl: Duration,
}

impl VideoNews {
    pub fn new(io: SocketIo, keys: Arc<TokenKeys>, media_url_ttl: Duration) -> VideoNews {
        VideoNews { io, keys, media_url_ttl }
    }

    /// The video as clients see it: the record plus URLs signed for this video only.
    pub fn view(&self, video: &Video) -> Value {
        let mut value = serde_json::to_value(video).unwrap_or(Value::Null);
        match self.keys.issue_media(&video.id, &video.org_id, self.media_url_ttl) {
            Ok(token) => {
                let base = format!("/api/videos/{}", video.id);
                value["streamUrl"] = json!(format!("{base}/stream?token={token}"));
                let thumbnail = |size: &str| json!(format!("{base}/thumbnail?size={size}&token={token}"));
                value["thumbnailUrl"] = if video.has_thumbnail { thumbnail("card") } else { Value::Null };
                value["posterUrl"] = if video.has_thumbnail { thumbnail("poster") } else { Value::Null };
            }
            Err(error) => tracing::error!(%error, video = video.id, "signing media URLs failed"),
        }
        value
    }

    /// Sends `event` with the video (or just its id, for deletions) to its organization and
    /// to the sockets following it.
    pub fn announce(&self, event: &str, video: &Video) {
        let payload = if event == VIDEO_DELETED { json!({ "id": video.id }) } else { self.view(video) };
        self.send(video, event, payload);
    }

    pub fn progress(&self, video: &Video, stage: &str, percent: u8, eta_seconds: Option<u64>) {
        let mut payload = json!({ "videoId": video.id, "stage": stage, "progress": percent });
        if let Some(eta) = eta_seconds {
            payload["etaSeconds"] = json!(eta);
        }
        self.send(video, VIDEO_PROGRESS, payload);
    }

    pub fn failed(&self, video: &Video, stage: &str, error: &str) {
        self.send(video, VIDEO_FAILED, json!({ "videoId": video.id, "stage": stage, "error": error }));
    }

    fn send(&self, video: &Video, event: &str, payload: Value) {
        self.io.of("/").to(org_room(&video.org_id)).to(video_room(&video.id)).emit(event, vec![payload]);
    }
}

/// Tells admins what the box now shows (`GET /api/device`'s answer).
pub fn announce_device(io: &SocketIo, status: Value) {
    io.of("/").to(DEVICE_ROOM).emit(DEVICE_STATUS, vec![status]);
}

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
        let Some(token) = handshake_token(&handshake.auth) else {
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
    // A reconnecting client recovers its socket (and its rooms) only as the same user of the
    // same organization with the same role.
    main.guard_recovery(|dropped, fresh| match (dropped.get::<Claims>(), fresh.get::<Claims>()) {
        (Some(dropped), Some(fresh)) => {
            dropped.sub == fresh.sub && dropped.org == fresh.org && dropped.role == fresh.role
        }
        _ => false,
    });
    main.on_connect(|socket| {
        let Some(claims) = socket.extensions().get::<Claims>() else {
            socket.disconnect();
            return;
        };
        socket.join(org_room(&claims.org));
        if claims.role == Role::Admin {
            socket.join(DEVICE_ROOM);
        }
        tracing::info!(socket = %socket.id(), user = claims.sub, org = claims.org, recovered = socket.recovered(), "user connected");
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

/// Answers an acknowledgement, when the client asked for one.
pub(crate) fn reply(ack: Option<AckSender>, answer: Value) {
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
