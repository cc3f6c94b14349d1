//! Turns a connection's messages into Socket.IO packets: decodes text packets and joins a
//! binary packet with the attachments that follow it, within the configured limits.
//!
//! Pure and synchronous, so the same code runs under the fuzzer (`fuzz/`) as in the server.
//! The caller owns the one timer: a packet whose attachments stop coming is its business.

use bytes::Bytes;

use super::packet::{Packet, placeholders_are_valid};
use crate::engineio::Message;

/// What the assembler accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most binary attachments one packet may announce.
    pub max_attachments: usize,
    /// Most bytes all attachments of one packet may total.
    pub max_attachment_bytes: usize,
}

/// A binary packet waiting for its attachments.
struct Partial {
    packet: Packet,
    attachments: Vec<Bytes>,
    bytes: usize,
    sequence: u64,
}

/// What one message completed.
#[derive(Debug)]
pub enum Assembled {
    /// A whole packet, with its attachments.
    Packet(Packet, Vec<Bytes>),
    /// A binary packet began; number `sequence` names it for [`Assembler::is_waiting_on`].
    Started { sequence: u64 },
    /// One more attachment arrived; more are due.
    Pending,
}

pub struct Assembler {
    limits: Limits,
    partial: Option<Partial>,
    next_sequence: u64,
}

impl Assembler {
    pub fn new(limits: Limits) -> Assembler {
        Assembler { limits, partial: None, next_sequence: 0 }
    }

    /// Takes the next message. An error is a protocol violation: the connection must close.
    pub fn push(&mut self, message: Message) -> Result<Assembled, &'static str> {
        match message {
            Message::Text(text) => {
                if self.partial.is_some() {
                    return Err("text packet in the middle of a binary sequence");
                }
                let packet = Packet::decode(&text).map_err(|_| "undecodable packet")?;
                if !(packet.kind.is_binary() && packet.attachments > 0) {
                    return Ok(Assembled::Packet(packet, Vec::new()));
                }
                if packet.attachments > self.limits.max_attachments {
                    return Err("too many attachments");
                }
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                let expected = packet.attachments;
                self.partial = Some(Partial { packet, attachments: Vec::with_capacity(expected), bytes: 0, sequence });
                Ok(Assembled::Started { sequence })
            }
            Message::Binary(data) => {
                let partial = self.partial.as_mut().ok_or("binary message with no binary packet to complete")?;
                partial.bytes += data.len();
                if partial.bytes > self.limits.max_attachment_bytes {
                    return Err("attachments over the size limit");
                }
                partial.attachments.push(data);
                if partial.attachments.len() < partial.packet.attachments {
                    return Ok(Assembled::Pending);
                }
                let Some(done) = self.partial.take() else {
                    return Ok(Assembled::Pending);
                };
                let valid =
                    done.packet.data.as_ref().is_some_and(|d| placeholders_are_valid(d, done.attachments.len()));
                if !valid {
                    return Err("illegal attachments");
                }
                Ok(Assembled::Packet(done.packet, done.attachments))
            }
        }
    }

    /// Whether binary packet `sequence` is still waiting for attachments.
    pub fn is_waiting_on(&self, sequence: u64) -> bool {
        self.partial.as_ref().is_some_and(|p| p.sequence == sequence)
    }

    /// Drops a half-received packet (the connection closed).
    pub fn reset(&mut self) {
        self.partial = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assembler() -> Assembler {
        Assembler::new(Limits { max_attachments: 2, max_attachment_bytes: 4 })
    }

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    fn binary(b: &[u8]) -> Message {
        Message::Binary(Bytes::copy_from_slice(b))
    }

    #[test]
    fn joins_a_binary_packet_with_its_attachments() {
        let mut a = assembler();
        assert!(matches!(
            a.push(text(r#"52-["e",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)),
            Ok(Assembled::Started { sequence: 0 })
        ));
        assert!(a.is_waiting_on(0));
        assert!(matches!(a.push(binary(b"ab")), Ok(Assembled::Pending)));
        let Ok(Assembled::Packet(packet, attachments)) = a.push(binary(b"cd")) else { panic!("complete") };
        assert_eq!((packet.attachments, attachments.len()), (2, 2));
        assert!(!a.is_waiting_on(0));
    }

    #[test]
    fn refuses_what_breaks_the_sequence_or_the_limits() {
        assert!(assembler().push(binary(b"x")).is_err(), "binary with nothing to complete");
        assert!(assembler().push(text(r#"53-["e"]"#)).is_err(), "too many attachments");
        let mut a = assembler();
        a.push(text(r#"51-["e",{"_placeholder":true,"num":0}]"#)).unwrap();
        assert!(a.push(text(r#"2["e"]"#)).is_err(), "text in the middle");
        let mut a = assembler();
        a.push(text(r#"51-["e",{"_placeholder":true,"num":0}]"#)).unwrap();
        assert!(a.push(binary(b"12345")).is_err(), "over the byte limit");
        let mut a = assembler();
        a.push(text(r#"51-["e",{"_placeholder":true,"num":1}]"#)).unwrap();
        assert!(a.push(binary(b"1")).is_err(), "a placeholder past the attachments");
    }
}
