//! Engine.IO v4 packet codec.
//!
//! A packet is one type character followed by its data. Over websocket one frame carries one
//! packet and binary frames are binary messages. Over HTTP long-polling a payload is several
//! packets joined by the record separator `\x1e`, binary messages written as `b` + base64.
//! Inbound bytes are decoded into [`Packet`]; outbound packets are encoded once into a
//! [`Frame`], which is cheap to clone so a broadcast is encoded a single time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Separates packets in a polling payload.
pub const SEPARATOR: char = '\x1e';

/// An inbound packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Close,
    Ping,
    Pong,
    /// `2probe`, the first packet of a websocket upgrade.
    PingProbe,
    Message(String),
    Binary(Bytes),
    Upgrade,
    Noop,
}

/// Why a packet or payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("a client may not send packet type {0:?}")]
    NotFromClient(char),
    #[error("invalid base64 in binary packet")]
    Base64,
    #[error("payload is not valid UTF-8")]
    Utf8,
}

impl Packet {
    /// Decodes one text packet (a websocket text frame or one polling segment).
    pub fn decode_text(text: &str) -> Result<Packet, DecodeError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(DecodeError::Empty)?;
        let data = chars.as_str();
        Ok(match kind {
            '0' => return Err(DecodeError::NotFromClient(kind)),
            '1' => Packet::Close,
            '2' if data == "probe" => Packet::PingProbe,
            '2' => Packet::Ping,
            '3' => Packet::Pong,
            '4' => Packet::Message(data.to_owned()),
            '5' => Packet::Upgrade,
            '6' => Packet::Noop,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }

    /// Decodes a polling POST body: packets joined by `\x1e`, binary as `b<base64>`.
    pub fn decode_payload(body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
        let text = std::str::from_utf8(body).map_err(|_| DecodeError::Utf8)?;
        text.split(SEPARATOR)
            .map(|segment| match segment.strip_prefix('b') {
                Some(encoded) => {
                    BASE64.decode(encoded).map(|raw| Packet::Binary(Bytes::from(raw))).map_err(|_| DecodeError::Base64)
                }
                None => Packet::decode_text(segment),
            })
            .collect()
    }
}

/// An encoded outbound packet, ready for either transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text packet including its type character, e.g. `4hello` or `2`.
    Text(Utf8Bytes),
    /// A binary message (type 4 with binary data).
    Binary(Bytes),
}

impl Frame {
    pub fn open(handshake_json: &str) -> Frame {
        Frame::Text(format!("0{handshake_json}").into())
    }
    pub fn close() -> Frame {
        Frame::Text(Utf8Bytes::from_static("1"))
    }
    pub fn ping() -> Frame {
        Frame::Text(Utf8Bytes::from_static("2"))
    }
    pub fn pong_probe() -> Frame {
        Frame::Text(Utf8Bytes::from_static("3probe"))
    }
    pub fn noop() -> Frame {
        Frame::Text(Utf8Bytes::from_static("6"))
    }
    /// A text message; the `4` type character is prepended here, in the one allocation.
    pub fn message(data: &str) -> Frame {
        let mut text = String::with_capacity(data.len() + 1);
        text.push('4');
        text.push_str(data);
        Frame::Text(text.into())
    }
    pub fn binary(data: Bytes) -> Frame {
        Frame::Binary(data)
    }

    /// Bytes of payload the frame holds.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(text) => text.len(),
            Frame::Binary(data) => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_close(&self) -> bool {
        matches!(self, Frame::Text(t) if t.as_str() == "1")
    }

    /// Encodes frames as one polling payload.
    pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> String {
        let mut out = String::new();
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 {
                out.push(SEPARATOR);
            }
            match frame {
                Frame::Text(text) => out.push_str(text.as_str()),
                Frame::Binary(data) => {
                    out.push('b');
                    BASE64.encode_string(data, &mut out);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_client_packet_type() {
        assert_eq!(Packet::decode_text("1"), Ok(Packet::Close));
        assert_eq!(Packet::decode_text("2"), Ok(Packet::Ping));
        assert_eq!(Packet::decode_text("2probe"), Ok(Packet::PingProbe));
        assert_eq!(Packet::decode_text("3"), Ok(Packet::Pong));
        assert_eq!(Packet::decode_text("4héllo"), Ok(Packet::Message("héllo".into())));
        assert_eq!(Packet::decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(Packet::decode_text("6"), Ok(Packet::Noop));
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(Packet::decode_text(""), Err(DecodeError::Empty));
        assert_eq!(Packet::decode_text("abc"), Err(DecodeError::UnknownType('a')));
        assert_eq!(Packet::decode_text("7"), Err(DecodeError::UnknownType('7')));
        assert_eq!(Packet::decode_text("é"), Err(DecodeError::UnknownType('é')));
        assert!(matches!(Packet::decode_text("0{}"), Err(DecodeError::NotFromClient('0'))));
        assert_eq!(Packet::decode_payload(b"4a\x1e"), Err(DecodeError::Empty));
        assert_eq!(Packet::decode_payload(b"b!!!"), Err(DecodeError::Base64));
        assert_eq!(Packet::decode_payload(b"4\xff"), Err(DecodeError::Utf8));
        // a multibyte character cut in half never panics
        assert_eq!(Packet::decode_payload(&"4é".as_bytes()[..2]), Err(DecodeError::Utf8));
    }

    #[test]
    fn random_payloads_never_panic() {
        use rand::{Rng, SeedableRng};
        let alphabet: &[u8] = b"0123456b\x1eAQIDBA==probe\xc3\xa9\xff\x80";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xe10);
        for _ in 0..50_000 {
            let len = rng.random_range(0..32);
            let body: Vec<u8> = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            let _ = Packet::decode_payload(&body);
        }
    }

    #[test]
    fn payload_round_trip_with_binary() {
        let packets = Packet::decode_payload(b"4hello\x1ebAQIDBA==\x1e3").unwrap();
        assert_eq!(
            packets,
            vec![Packet::Message("hello".into()), Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])), Packet::Pong]
        );
        let frames = [Frame::message("hello"), Frame::binary(Bytes::from_static(&[1, 2, 3, 4])), Frame::ping()];
        assert_eq!(Frame::encode_payload(&frames), "4hello\x1ebAQIDBA==\x1e2");
    }
}
