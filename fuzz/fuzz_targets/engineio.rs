//! Engine.IO v4: one text packet (a websocket frame) and a polling POST body. Whatever the
//! bytes, decoding returns; what decodes re-encodes to the same packets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally::engineio::Frame;
use tally::engineio::packet::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Packet::decode_text(text);
    }
    let Ok(packets) = Packet::decode_payload(data) else { return };
    assert!(!packets.is_empty(), "a payload decodes to at least one packet");
    // Messages and binary messages survive the server's own encoding unchanged.
    let carried: Vec<Packet> =
        packets.into_iter().filter(|p| matches!(p, Packet::Message(_) | Packet::Binary(_))).collect();
    if carried.is_empty() {
        return;
    }
    let frames: Vec<Frame> = carried
        .iter()
        .map(|packet| match packet {
            Packet::Message(text) => Frame::message(text),
            Packet::Binary(data) => Frame::binary(data.clone()),
            _ => unreachable!(),
        })
        .collect();
    let encoded = Frame::encode_payload(&frames);
    let decoded = Packet::decode_payload(encoded.as_bytes()).expect("our own payload decodes");
    assert_eq!(decoded, carried);
});
