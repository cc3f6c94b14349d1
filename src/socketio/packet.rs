//! Socket.IO v5 packet codec: `<type>[<attachments>-][<nsp>,][<ack id>][<JSON>]`.
//!
//! Validation follows the reference parser: a known type, an integer ack id, a payload of the
//! right shape for the type (an object for CONNECT, a non-empty array starting with a
//! non-reserved event name for EVENT, an array for ACK). The decoder never panics: every
//! delimiter is ASCII, so slicing at them is always on a character boundary.

use bytes::Bytes;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketType {
    fn from_byte(byte: u8) -> Option<PacketType> {
        Some(match byte {
            b'0' => PacketType::Connect,
            b'1' => PacketType::Disconnect,
            b'2' => PacketType::Event,
            b'3' => PacketType::Ack,
            b'4' => PacketType::ConnectError,
            b'5' => PacketType::BinaryEvent,
            b'6' => PacketType::BinaryAck,
            _ => return None,
        })
    }

    pub fn is_binary(self) -> bool {
        matches!(self, PacketType::BinaryEvent | PacketType::BinaryAck)
    }
}

/// Event names a client may not use: they mean something to the library itself.
pub const RESERVED_EVENTS: [&str; 6] =
    ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];

#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketType,
    pub nsp: String,
    pub id: Option<u64>,
    pub data: Option<Value>,
    /// Binary attachments that follow this packet (binary types only).
    pub attachments: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("illegal attachments")]
    IllegalAttachments,
    #[error("ack id out of range")]
    IdOutOfRange,
    #[error("invalid JSON payload")]
    Json,
    #[error("invalid payload for the packet type")]
    InvalidPayload,
}

impl Packet {
    pub fn decode(text: &str) -> Result<Packet, ParseError> {
        let bytes = text.as_bytes();
        let kind = PacketType::from_byte(*bytes.first().ok_or(ParseError::Empty)?).ok_or(ParseError::UnknownType)?;
        let mut i = 1;

        let mut attachments = 0;
        if kind.is_binary() {
            let dash = text[i..].find('-').map(|p| p + i).ok_or(ParseError::IllegalAttachments)?;
            let digits = &text[i..dash];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::IllegalAttachments);
            }
            attachments = digits.parse().map_err(|_| ParseError::IllegalAttachments)?;
            i = dash + 1;
        }

        let nsp = if bytes.get(i) == Some(&b'/') {
            match text[i..].find(',') {
                Some(comma) => {
                    let nsp = &text[i..i + comma];
                    i += comma + 1;
                    nsp
                }
                None => {
                    let nsp = &text[i..];
                    i = text.len();
                    nsp
                }
            }
        } else {
            "/"
        };

        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let id = if digits > 0 {
            let id = text[i..i + digits].parse().map_err(|_| ParseError::IdOutOfRange)?;
            i += digits;
            Some(id)
        } else {
            None
        };

        let data = if i < text.len() {
            Some(serde_json::from_str::<Value>(&text[i..]).map_err(|_| ParseError::Json)?)
        } else {
            None
        };
        if !payload_is_valid(kind, data.as_ref()) {
            return Err(ParseError::InvalidPayload);
        }
        Ok(Packet { kind, nsp: nsp.to_owned(), id, data, attachments })
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16);
        out.push(char::from(b'0' + self.kind as u8));
        if self.kind.is_binary() {
            out.push_str(&self.attachments.to_string());
            out.push('-');
        }
        if self.nsp != "/" {
            out.push_str(&self.nsp);
            out.push(',');
        }
        if let Some(id) = self.id {
            out.push_str(&id.to_string());
        }
        if let Some(data) = &self.data {
            out.push_str(&data.to_string());
        }
        out
    }

    /// The event name of a validated EVENT packet.
    pub fn event_name(&self) -> Option<&str> {
        self.data.as_ref()?.as_array()?.first()?.as_str()
    }
}

fn payload_is_valid(kind: PacketType, data: Option<&Value>) -> bool {
    match kind {
        PacketType::Connect => data.is_none_or(Value::is_object),
        PacketType::Disconnect => data.is_none(),
        PacketType::ConnectError => data.is_some_and(|d| d.is_string() || d.is_object()),
        PacketType::Event | PacketType::BinaryEvent => data
            .and_then(Value::as_array)
            .and_then(|args| args.first())
            .and_then(Value::as_str)
            .is_some_and(|name| !RESERVED_EVENTS.contains(&name)),
        PacketType::Ack | PacketType::BinaryAck => data.is_some_and(Value::is_array),
    }
}

/// True when every `{"_placeholder":true,"num":n}` in `value` names one of `count` attachments.
pub fn placeholders_are_valid(value: &Value, count: usize) -> bool {
    match value {
        Value::Array(items) => items.iter().all(|item| placeholders_are_valid(item, count)),
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                return map.get("num").and_then(Value::as_u64).is_some_and(|num| (num as usize) < count);
            }
            map.values().all(|item| placeholders_are_valid(item, count))
        }
        _ => true,
    }
}

/// The arguments of an event or ack, with the binary attachments their placeholders point at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
}

impl Payload {
    pub fn new(args: Vec<Value>) -> Payload {
        Payload { args, attachments: Vec::new() }
    }

    /// Arguments that reference `attachments` through `{"_placeholder":true,"num":n}`.
    pub fn with_binary(args: Vec<Value>, attachments: Vec<Bytes>) -> Payload {
        Payload { args, attachments }
    }

    /// A placeholder for attachment `num`, for building binary payloads.
    pub fn placeholder(num: usize) -> Value {
        serde_json::json!({ "_placeholder": true, "num": num })
    }
}

impl From<Value> for Payload {
    /// An array becomes the argument list; anything else is the single argument.
    fn from(value: Value) -> Payload {
        match value {
            Value::Array(args) => Payload::new(args),
            other => Payload::new(vec![other]),
        }
    }
}

impl From<Vec<Value>> for Payload {
    fn from(args: Vec<Value>) -> Payload {
        Payload::new(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(text: &str) -> Result<Packet, ParseError> {
        Packet::decode(text)
    }

    #[test]
    fn decodes_connect_with_and_without_namespace_comma() {
        let p = decode("0").unwrap();
        assert_eq!((p.kind, p.nsp.as_str(), p.data), (PacketType::Connect, "/", None));
        assert_eq!(decode("0/custom").unwrap().nsp, "/custom");
        assert_eq!(decode("0/custom,").unwrap().nsp, "/custom");
        let p = decode(r#"0/custom,{"token":"abc"}"#).unwrap();
        assert_eq!(p.data, Some(json!({"token": "abc"})));
    }

    #[test]
    fn decodes_events_acks_and_binary() {
        let p = decode(r#"2/chat,12["hello",1]"#).unwrap();
        assert_eq!((p.kind, p.nsp.as_str(), p.id), (PacketType::Event, "/chat", Some(12)));
        assert_eq!(p.event_name(), Some("hello"));
        let p = decode(r#"51-["up",{"num":0,"_placeholder":true}]"#).unwrap();
        assert_eq!((p.kind, p.attachments), (PacketType::BinaryEvent, 1));
        assert!(placeholders_are_valid(p.data.as_ref().unwrap(), 1));
        assert!(!placeholders_are_valid(p.data.as_ref().unwrap(), 0));
        assert_eq!(decode("3/chat,7[]").unwrap().id, Some(7));
    }

    #[test]
    fn rejects_what_the_reference_parser_rejects() {
        for bad in [
            "",
            "7",
            "abc",
            "4abc",
            "2",
            "2{}",
            r#"2[]"#,
            r#"2[1]"#,
            r#"2["connect"]"#,
            r#"2["disconnect",1]"#,
            r#"0[]"#,
            r#"1{}"#,
            "3{}",
            "5[\"a\"]",
            "5x-[\"a\"]",
            "5-[\"a\"]",
            "599999999999999999999999-[\"a\"]",
            "299999999999999999999999[\"a\"]",
            r#"2["a""#,
            "2[\"\u{e9}",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} should not decode");
        }
    }

    #[test]
    fn never_panics_on_truncations_of_valid_packets() {
        let full = r#"452-/nsp/é,123["évent",{"_placeholder":true,"num":0},"ü"]"#;
        for (cut, _) in full.char_indices() {
            let _ = decode(&full[..cut]);
        }
    }

    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        // Protocol characters, digits, JSON punctuation and multibyte characters, shuffled.
        let alphabet: Vec<char> = "0123456789-/,[]{}\":_placeholdernumtrue é€😀\\".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7a11);
        for _ in 0..50_000 {
            let len = rng.random_range(0..40);
            let text: String = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            if let Ok(packet) = decode(&text) {
                // Whatever decodes re-encodes to something that decodes the same way.
                assert_eq!(decode(&packet.encode()).as_ref(), Ok(&packet), "{text:?}");
            }
        }
    }

    #[test]
    fn numbers_survive_decoding_and_encoding_again() {
        // Found by the fuzzer (fuzz/regressions/socketio/float-roundtrip): without serde_json's
        // `float_roundtrip` a relayed number could change in its last digit.
        let text = r#"2["e",2.2222224444444442e+22,0.1,-1e-300,18446744073709551615]"#;
        assert_eq!(decode(text).unwrap().encode(), text);
    }

    #[test]
    fn encodes_like_the_reference() {
        let p = Packet {
            kind: PacketType::Connect,
            nsp: "/custom".into(),
            id: None,
            data: Some(json!({"sid": "x"})),
            attachments: 0,
        };
        assert_eq!(p.encode(), r#"0/custom,{"sid":"x"}"#);
        let p = Packet {
            kind: PacketType::BinaryAck,
            nsp: "/".into(),
            id: Some(3),
            data: Some(json!([Payload::placeholder(0)])),
            attachments: 1,
        };
        assert_eq!(p.encode(), r#"61-3[{"_placeholder":true,"num":0}]"#);
        let p = Packet { kind: PacketType::Disconnect, nsp: "/admin".into(), id: None, data: None, attachments: 0 };
        assert_eq!(p.encode(), "1/admin,");
        let round = decode(r#"2/a,5["x",{"b":1,"a":2}]"#).unwrap();
        assert_eq!(round.encode(), r#"2/a,5["x",{"b":1,"a":2}]"#);
    }
}
