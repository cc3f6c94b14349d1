//! Organization chat over Socket.IO on the `/` namespace.
//!
//! `chat:message` `{ text }` with an ack: the message is stored and flushed before the ack
//! (`{ message }` or `{ error }`), then sent as `chat:message` to the rest of the sender's
//! organization. `chat:history` `{ before?, limit? }` acks with up to 100 messages, oldest
//! first, so a client shows the recent past when it opens the panel.

use serde_json::{Value, json};

use crate::auth::Claims;
use crate::events::{org_room, reply};
use crate::socketio::SocketIo;
use crate::store::Store;

pub const MAX_TEXT_CHARS: usize = 2000;
pub const HISTORY_LIMIT: usize = 100;

pub fn install(io: &SocketIo, store: Store) {
    let main = io.of("/");
    let history_store = store.clone();
    main.on("chat:message", move |socket, payload, ack| {
        let Some(claims) = socket.extensions().get::<Claims>().cloned() else { return };
        let text = payload
            .args
            .first()
            .and_then(|a| a.as_str().or_else(|| a.get("text")?.as_str()))
            .map(str::trim)
            .unwrap_or("");
        if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS || text.chars().any(|c| c.is_control() && c != '\n')
        {
            reply(ack, json!({ "error": format!("a message is 1 to {MAX_TEXT_CHARS} characters") }));
            return;
        }
        let author = match store.user(&claims.sub) {
            Ok(Some(user)) => user.email,
            _ => {
                reply(ack, json!({ "error": "unknown account" }));
                return;
            }
        };
        let message = match store.add_chat_message(&claims.org, &claims.sub, &author, text) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(%error, "storing a chat message failed");
                reply(ack, json!({ "error": "the message could not be stored" }));
                return;
            }
        };
        let (store, socket) = (store.clone(), socket.clone());
        tokio::spawn(async move {
            // Acknowledged means durable: flush first.
            if let Err(error) = store.flush().await {
                tracing::error!(%error, "flushing a chat message failed");
                reply(ack, json!({ "error": "the message could not be stored" }));
                return;
            }
            let value = serde_json::to_value(&message).unwrap_or(Value::Null);
            reply(ack, json!({ "message": value }));
            socket
                .namespace()
                .to(org_room(&message.org_id))
                .except_socket(socket.id().clone())
                .emit("chat:message", vec![value]);
        });
    });
    main.on("chat:history", move |socket, payload, ack| {
        let Some(claims) = socket.extensions().get::<Claims>() else { return };
        let options = payload.args.first();
        let before = options.and_then(|o| o.get("before")?.as_str());
        let limit = options
            .and_then(|o| o.get("limit")?.as_u64())
            .map_or(HISTORY_LIMIT, |n| (n as usize).clamp(1, HISTORY_LIMIT));
        let answer = match history_store.chat_history(&claims.org, limit, before) {
            Ok(messages) => json!({ "messages": messages }),
            Err(error) => {
                tracing::error!(%error, "reading chat history failed");
                json!({ "error": "history unavailable" })
            }
        };
        reply(ack, answer);
    });
}
