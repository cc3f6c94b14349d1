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
//! is recovered only by the same user of the same organization with the same stored role.
//!
//! The stored account, not the token, is what counts: the handshake (and a recovery) is
//! refused when the account is gone or has moved, the device room follows the stored role,
//! and every account change the store announces is applied to that account's open sockets at
//! once: a deleted user is disconnected, a demoted admin leaves the device room. Each socket
//! is in its user's room (`user:<id>`) for that, and video records reach each account in its
//! own room, with media URLs signed for that account.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{Claims, Role, TokenError, TokenKeys, handshake_token, unix_now};
use crate::socketio::{AckSender, ConnectError, Namespace, Payload, Socket, SocketIo};
use crate::store::{AccountChanged, Store, StoreError, Video};

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
    directory: Arc<dyn Directory>,
    media_url_ttl: Duration,
}

impl VideoNews {
    pub fn new(
        io: SocketIo,
        keys: Arc<TokenKeys>,
        directory: Arc<dyn Directory>,
        media_url_ttl: Duration,
    ) -> VideoNews {
        VideoNews { io, keys, directory, media_url_ttl }
    }

    /// The video as account `viewer` sees it: the record plus URLs signed for this video and
    /// this account only.
    pub fn view(&self, video: &Video, viewer: &str) -> Value {
        let mut value = serde_json::to_value(video).unwrap_or(Value::Null);
        match self.keys.issue_media(viewer, &video.id, &video.org_id, self.media_url_ttl) {
            Ok(token) => {
                let base = format!("/api/videos/{}", video.id);
                let stream = format!("{base}/stream?token={token}");
                if let Some(playback) = value.get_mut("playback").and_then(Value::as_object_mut) {
                    playback.insert("url".into(), json!(stream));
                }
                value["streamUrl"] = json!(stream);
                value["originalUrl"] = json!(format!("{base}/original?token={token}"));
                let thumbnail = |size: &str| json!(format!("{base}/thumbnail?size={size}&token={token}"));
                value["thumbnailUrl"] = if video.has_thumbnail { thumbnail("card") } else { Value::Null };
                value["posterUrl"] = if video.has_thumbnail { thumbnail("poster") } else { Value::Null };
                let (cues, sheet) = if video.has_previews {
                    (json!(format!("{base}/previews.vtt?token={token}")), thumbnail("previews"))
                } else {
                    (Value::Null, Value::Null)
                };
                value["previewsUrl"] = cues;
                value["previewSheetUrl"] = sheet;
            }
            Err(error) => tracing::error!(%error, video = video.id, "signing media URLs failed"),
        }
        value
    }

    /// Sends `event` with the video to each account of its organization, in the account's
    /// room with URLs signed for it (just the id, to the organization, for deletions).
    /// Following a video adds nothing here: its followers are of the organization.
    pub fn announce(&self, event: &str, video: &Video) {
        if event == VIDEO_DELETED {
            return self.send(video, event, json!({ "id": video.id }));
        }
        let members = match self.directory.members(&video.org_id) {
            Ok(members) => members,
            Err(error) => return tracing::error!(%error, video = video.id, event, "listing the organization failed"),
        };
        let main = self.io.of("/");
        for user in members {
            main.to(user_room(&user)).emit(event, vec![self.view(video, &user)]);
        }
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

/// An account as stored now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub org: String,
    pub role: Role,
}

/// Who exists, in which organization, with which role, and who may see which video: what
/// the real-time layer asks the store.
pub trait Directory: Send + Sync + 'static {
    /// The account `user_id` now; `None` once it is deleted.
    fn account(&self, user_id: &str) -> Result<Option<Account>, StoreError>;
    /// The ids of an organization's accounts.
    fn members(&self, org: &str) -> Result<Vec<String>, StoreError>;
    /// Whether `video_id` names a video of organization `org`.
    fn belongs_to(&self, video_id: &str, org: &str) -> bool;
}

impl Directory for Store {
    fn account(&self, user_id: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.user(user_id)?.map(|user| Account { org: user.org_id, role: user.role }))
    }

    fn members(&self, org: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.users_of(org)?.into_iter().map(|user| user.id).collect())
    }

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

/// Every socket of one account.
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// Wires authentication and the application events onto the `/` namespace, and applies
/// the store's account changes to open sockets.
pub fn install(io: &SocketIo, keys: Arc<TokenKeys>, store: &Store) {
    let directory: Arc<dyn Directory> = Arc::new(store.clone());
    let main = io.of("/");
    let accounts = directory.clone();
    main.use_middleware(move |handshake, extensions| {
        let Some(token) = handshake_token(&handshake.auth) else {
            return Err(ConnectError::new("Authentication required"));
        };
        let claims = keys.verify(token).map_err(|(TokenError::Expired | TokenError::Invalid)| invalid_token())?;
        // A signature says who the account was; only the store says it still is, and with
        // which role (the socket carries the stored one, kept current while it is connected).
        match accounts.account(&claims.sub) {
            Ok(Some(account)) if account.org == claims.org => {
                extensions.insert(LiveRole(Arc::new(std::sync::Mutex::new(account.role))));
            }
            Ok(_) => return Err(invalid_token()),
            Err(error) => {
                tracing::error!(%error, "reading an account failed");
                return Err(ConnectError::new("Server unavailable"));
            }
        }
        extensions.insert(claims);
        Ok(())
    });
    // A reconnecting client recovers its socket (and its rooms, and what they missed) only
    // as the same user of the same organization with the role the socket last had: an admin
    // demoted meanwhile starts afresh rather than replay what only admins get.
    main.guard_recovery(|dropped, fresh| {
        let same_account = match (dropped.get::<Claims>(), fresh.get::<Claims>()) {
            (Some(dropped), Some(fresh)) => dropped.sub == fresh.sub && dropped.org == fresh.org,
            _ => false,
        };
        let role = |extensions: &http::Extensions| extensions.get::<LiveRole>().map(LiveRole::get);
        same_account && role(dropped).is_some() && role(dropped) == role(fresh)
    });
    let reconciler = Arc::new(Reconciler { directory: directory.clone(), one_at_a_time: Default::default() });
    let connected = reconciler.clone();
    main.on_connect(move |socket| {
        let Some(claims) = socket.extensions().get::<Claims>() else {
            socket.disconnect();
            return;
        };
        socket.join(org_room(&claims.org));
        socket.join(user_room(&claims.sub));
        // In the user's room first, then read the account: a change written after this read
        // is announced after it, and finds the socket in the room.
        connected.apply(socket);
        tracing::info!(socket = %socket.id(), user = claims.sub, org = claims.org, recovered = socket.recovered(), "user connected");
        close_when_expired(socket, claims.exp);
    });
    follow_accounts(&main, store.account_changes(), Arc::downgrade(&reconciler));
    let subscribe_videos = directory.clone();
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

fn owns(socket: &Socket, videos: &dyn Directory, video_id: &str) -> bool {
    let Some(claims) = socket.extensions().get::<Claims>() else {
        return false;
    };
    videos.belongs_to(video_id, &claims.org)
}

fn invalid_token() -> ConnectError {
    ConnectError::new("Invalid token")
}

/// The role a socket's rooms were last set for: the stored role at its handshake, then each
/// one [`Reconciler`] applied (a token's claim can be stale from the start).
#[derive(Clone)]
struct LiveRole(Arc<std::sync::Mutex<Role>>);

impl LiveRole {
    fn get(&self) -> Role {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, role: Role) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = role;
    }
}

/// Brings sockets in line with their accounts as stored: one deleted (or moved to another
/// organization) is disconnected, and the device room follows the role. One socket at a
/// time: a connect reading "admin" and a demotion's pass reading "editor" must not apply
/// their results in the opposite order.
struct Reconciler {
    directory: Arc<dyn Directory>,
    one_at_a_time: std::sync::Mutex<()>,
}

impl Reconciler {
    fn apply(&self, socket: &Arc<Socket>) {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(claims) = socket.extensions().get::<Claims>() else { return socket.disconnect() };
        match self.directory.account(&claims.sub) {
            Ok(Some(account)) if account.org == claims.org => {
                if let Some(role) = socket.extensions().get::<LiveRole>() {
                    role.set(account.role);
                }
                if account.role == Role::Admin {
                    socket.join(DEVICE_ROOM);
                } else {
                    socket.leave(DEVICE_ROOM);
                }
            }
            Ok(_) => {
                tracing::info!(socket = %socket.id(), user = claims.sub, "the account is gone; disconnecting its socket");
                socket.disconnect();
            }
            // Unsure is out: the client reconnects, and the handshake reads the account again.
            Err(error) => {
                tracing::error!(%error, user = claims.sub, "re-reading an account failed; disconnecting its socket");
                socket.disconnect();
            }
        }
    }
}

/// Applies each announced account change to that account's sockets; after missing some
/// (a burst beyond the channel), every socket is checked. Ends with the store.
fn follow_accounts(
    main: &Arc<Namespace>,
    mut changes: tokio::sync::broadcast::Receiver<AccountChanged>,
    reconciler: Weak<Reconciler>,
) {
    let main = Arc::downgrade(main);
    tokio::spawn(async move {
        loop {
            let change = changes.recv().await;
            let (Some(main), Some(reconciler)) = (main.upgrade(), reconciler.upgrade()) else { return };
            let sockets = match change {
                Ok(change) => main.to(user_room(&change.user_id)).sockets(),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "account changes came faster than they were applied; checking every socket");
                    main.broadcast().sockets()
                }
                Err(RecvError::Closed) => return,
            };
            for socket in sockets {
                reconciler.apply(&socket);
            }
        }
    });
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
