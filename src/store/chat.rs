//! Organization chat messages, keyed `<org id>/<message id>` so one organization's history is
//! one ordered range.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, decode, encode, new_id, now_ms};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub id: String,
    pub org_id: String,
    pub user_id: String,
    /// The author's email when the message was written.
    pub author: String,
    pub text: String,
    pub created_at: u64,
}

impl Store {
    pub fn add_chat_message(
        &self,
        org_id: &str,
        user_id: &str,
        author: &str,
        text: &str,
    ) -> Result<ChatMessage, StoreError> {
        self.writable()?;
        let message = ChatMessage {
            id: new_id(),
            org_id: org_id.to_owned(),
            user_id: user_id.to_owned(),
            author: author.to_owned(),
            text: text.to_owned(),
            created_at: now_ms(),
        };
        self.chat.insert(format!("{org_id}/{}", message.id), encode(&message)?)?;
        Ok(message)
    }

    /// Takes back a message that could not be acknowledged (the store was faulty by the time it
    /// was to be made durable), so that a client retrying it does not leave two. Allowed while
    /// the store is faulty: it only undoes that one write. Best effort, as for uploads.
    pub fn take_back_chat_message(&self, message: &ChatMessage) -> Result<(), StoreError> {
        self.chat.remove(format!("{}/{}", message.org_id, message.id))?;
        Ok(())
    }

    /// Up to `limit` messages of the organization before the message id `before` (or the
    /// newest), oldest first.
    pub fn chat_history(
        &self,
        org_id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let lower = format!("{org_id}/");
        let upper = match before {
            Some(id) => format!("{org_id}/{id}"),
            None => format!("{org_id}0"),
        };
        let mut messages = Vec::new();
        for entry in self.chat.range(lower.as_bytes()..upper.as_bytes()).rev().take(limit) {
            messages.push(decode(&entry?.1)?);
        }
        messages.reverse();
        Ok(messages)
    }
}
