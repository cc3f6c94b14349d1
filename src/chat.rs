//! Organization chat over Socket.IO on the `/` namespace.
//!
//! `chat:message` `{ text }` with an ack: the message is stored and made durable before the
//! ack (`{ message }` or `{ error }`), then sent as `chat:message` to the rest of the sender's
//! organization. `chat:history` `{ before?, limit? }` acks with up to 100 messages, oldest
//! first, so a client shows the recent past when it opens the panel.
//!
//! Bounded by design: each account has a token bucket (`{ error: "slow down" }` past it, and
//! the message is not stored), and the store keeps a bounded history per organization
//! ([`ChatConfig::keep_messages`], [`ChatConfig::keep_days`], applied by the housekeeping).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Claims;
use crate::events::{org_room, reply};
use crate::socketio::SocketIo;
use crate::store::{Store, StoreError};

pub const MAX_TEXT_CHARS: usize = 2000;
pub const HISTORY_LIMIT: usize = 100;
/// The ack of a message over the sender's rate.
pub const SLOW_DOWN: &str = "slow down";

/// Chat settings (`[chat]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Messages an account may send per second, over time (all its sockets together).
    pub messages_per_second: u32,
    /// Messages an account may send at once before the rate applies.
    pub burst: u32,
    /// Messages kept per organization, the newest; 0 keeps every one.
    pub keep_messages: usize,
    /// Messages older than this many days are removed; 0 keeps them whatever their age.
    pub keep_days: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig { messages_per_second: 5, burst: 20, keep_messages: 10_000, keep_days: 0 }
    }
}

/// The token buckets, one per account.
struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

impl Limiter {
    fn new(config: &ChatConfig) -> Limiter {
        let rate = NonZeroU32::new(config.messages_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        Limiter {
            buckets: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether `user` may send one more message now.
    fn allow(&self, user: &str) -> bool {
        // Full buckets of accounts gone quiet are forgotten now and then, so memory is bounded.
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(1024) {
            self.buckets.retain_recent();
        }
        self.buckets.check_key(&user.to_owned()).is_ok()
    }
}

pub fn install(io: &SocketIo, store: Store, config: &ChatConfig) {
    let main = io.of("/");
    let history_store = store.clone();
    let limiter = Arc::new(Limiter::new(config));
    main.on("chat:message", move |socket, payload, ack| {
        let Some(claims) = socket.extensions().get::<Claims>().cloned() else { return };
        let text = payload
            .args
            .first()
            .and_then(|a| a.as_str().or_else(|| a.get("text")?.as_str()))
            .map(crate::text::without_bidi_controls)
            .unwrap_or_default();
        let text = text.as_str();
        if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS || text.chars().any(|c| c.is_control() && c != '\n')
        {
            reply(ack, json!({ "error": format!("a message is 1 to {MAX_TEXT_CHARS} characters") }));
            return;
        }
        if !limiter.allow(&claims.sub) {
            reply(ack, json!({ "error": SLOW_DOWN }));
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
            Err(error) => return not_stored(ack, &error),
        };
        let (store, socket) = (store.clone(), socket.clone());
        tokio::spawn(async move {
            // Acknowledged means durable.
            if let Err(error) = store.durable().await {
                let _ = store.take_back_chat_message(&message);
                return not_stored(ack, &error);
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

/// Answers a message the store did not take. A faulty store has said why once already.
fn not_stored(ack: Option<crate::socketio::AckSender>, error: &StoreError) {
    if matches!(error, StoreError::Unavailable(_) | StoreError::TimedOut(_) | StoreError::Closing) {
        tracing::debug!(%error, "a chat message was refused");
    } else {
        tracing::error!(%error, "storing a chat message failed");
    }
    reply(ack, json!({ "error": "the message could not be stored" }));
}
