//! Socket.IO v5 packets with binary attachments, as one connection's message sequence: the
//! input is split at 0xFF bytes into messages, each text (odd first byte) or binary. The
//! assembler must return for every message, never hold more than its limits, and every packet
//! it yields must survive encoding and decoding again.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tally::engineio::Message;
use tally::socketio::Packet;
use tally::socketio::assembler::{Assembled, Assembler, Limits};

const LIMITS: Limits = Limits { max_attachments: 4, max_attachment_bytes: 4096 };

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::new(LIMITS);
    for chunk in data.split(|&b| b == 0xFF) {
        let Some((&kind, body)) = chunk.split_first() else { continue };
        let message = if kind % 2 == 1 {
            Message::Text(String::from_utf8_lossy(body).into_owned().into())
        } else {
            Message::Binary(Bytes::copy_from_slice(body))
        };
        match assembler.push(message) {
            Ok(Assembled::Packet(packet, attachments)) => {
                assert!(attachments.len() <= LIMITS.max_attachments);
                assert!(attachments.iter().map(Bytes::len).sum::<usize>() <= LIMITS.max_attachment_bytes);
                let again = Packet::decode(&packet.encode()).expect("an encoded packet decodes");
                assert_eq!(again, packet);
            }
            Ok(_) => {}
            // A protocol error closes the connection: start over as a new one would.
            Err(_) => assembler.reset(),
        }
    }
});
