//! Any websocket payload through both decoders. Whatever decodes must respect the protocol's
//! limits and survive a re-encode: `decode(encode(m)) == m`, and the encoding is the input
//! byte for byte (the codec is canonical), except a `Hello` of another protocol version,
//! which is decoded only as far as the relay needs to refuse it.
#![no_main]

use illumitunnel::protocol::{
    ClientMessage, RelayMessage, MAX_CHUNK, MAX_MESSAGE, PROTOCOL_VERSION,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ClientMessage::decode(data) {
        assert!(data.len() <= MAX_MESSAGE);
        match &msg {
            ClientMessage::Response { body, .. } => assert!(body.len() <= MAX_CHUNK),
            ClientMessage::ResponseChunk { data, .. } => assert!(data.len() <= MAX_CHUNK),
            _ => {}
        }
        let again = msg.encode();
        let back = ClientMessage::decode(&again).expect("a re-encoded client message decodes");
        assert_eq!(back, msg);
        let other_version =
            matches!(msg, ClientMessage::Hello { version, .. } if version != PROTOCOL_VERSION);
        if !other_version {
            assert_eq!(again, data, "client message encoding is not canonical");
        }
    }
    if let Ok(msg) = RelayMessage::decode(data) {
        assert!(data.len() <= MAX_MESSAGE);
        match &msg {
            RelayMessage::Request { body, path, .. } => {
                assert!(body.len() <= MAX_CHUNK);
                // Path and query are opaque to the codec, but always UTF-8 text.
                let _ = path.as_str();
            }
            RelayMessage::RequestChunk { data, .. } => assert!(data.len() <= MAX_CHUNK),
            _ => {}
        }
        let again = msg.encode();
        let back = RelayMessage::decode(&again).expect("a re-encoded relay message decodes");
        assert_eq!(back, msg);
        assert_eq!(again, data, "relay message encoding is not canonical");
    }
});
