use super::*;

fn id() -> DeliveryId {
    DeliveryId::parse("0192a3b4c5d6e7f8").unwrap()
}

fn request(body: &[u8]) -> RelayMessage {
    RelayMessage::Request {
        id: id(),
        received_at_ms: 1_750_000_000_000,
        answer: true,
        redelivery: true,
        method: "POST".into(),
        path: "/webhooks/illumichat".into(),
        query: "a=1&b=%20".into(),
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("x-raw".into(), vec![0xff, 0xfe, 0x00, 0x80]),
            ("x-raw".into(), b"second".to_vec()),
        ],
        body: Bytes::copy_from_slice(body),
        end: true,
    }
}

#[test]
fn relay_messages_round_trip() {
    let msgs = vec![
        request(b"{\"event\":\"ticket.created\"}"),
        request(&[0xff, 0x00, 0xc3, 0x28, 0x0a]),
        RelayMessage::RequestChunk {
            id: id(),
            data: Bytes::from_static(b"\x00\x01"),
            end: false,
        },
        RelayMessage::Welcome {
            tunnel: "my-app".into(),
            public_url: "https://r/t/my-app".into(),
            queued: 3,
            expired: 1,
            dead_letters: 2,
            claim_key: "k3v9x2m4p7qa".into(),
        },
        RelayMessage::Refused {
            reason: Refusal::TunnelTaken,
            message: "taken".into(),
        },
        RelayMessage::Cancel { id: id() },
        RelayMessage::DeadLettered {
            id: id(),
            reason: "it ended the session three times in a row".into(),
        },
    ];
    for msg in msgs {
        assert_eq!(RelayMessage::decode(&msg.encode()).unwrap(), msg);
    }
}

#[test]
fn client_messages_round_trip() {
    let msgs = vec![
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            tunnel: "my-app".into(),
            claim_key: String::new(),
            observer: true,
        },
        ClientMessage::Response {
            id: id(),
            status: 418,
            headers: vec![("set-cookie".into(), vec![0xe9])],
            body: Bytes::from_static(&[0, 159, 146, 150]),
            end: false,
        },
        ClientMessage::ResponseChunk {
            id: id(),
            data: Bytes::new(),
            end: true,
        },
        ClientMessage::Failed {
            id: id(),
            message: "connection refused to 127.0.0.1:3000".into(),
        },
        ClientMessage::Recorded { id: id() },
        ClientMessage::NotRecorded {
            id: id(),
            message: "database or disk is full".into(),
        },
        ClientMessage::Rejected {
            id: id(),
            message: "request head over 128 KiB".into(),
        },
    ];
    for msg in msgs {
        assert_eq!(ClientMessage::decode(&msg.encode()).unwrap(), msg);
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let encoded = request(b"hello body").encode();
    for len in 0..encoded.len() {
        assert!(
            RelayMessage::decode(&encoded[..len]).is_err(),
            "prefix of {len} bytes decoded"
        );
    }
    let encoded = ClientMessage::Response {
        id: id(),
        status: 200,
        headers: vec![],
        body: Bytes::from_static(b"x"),
        end: true,
    }
    .encode();
    for len in 0..encoded.len() {
        assert!(ClientMessage::decode(&encoded[..len]).is_err());
    }
}

#[test]
fn unknown_type_and_wrong_direction_are_rejected() {
    assert_eq!(
        RelayMessage::decode(&[200]),
        Err(DecodeError::UnknownType(200))
    );
    let hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        tunnel: "abc".into(),
        claim_key: String::new(),
        observer: false,
    }
    .encode();
    assert_eq!(
        RelayMessage::decode(&hello),
        Err(DecodeError::UnknownType(C_HELLO))
    );
    assert_eq!(ClientMessage::decode(&[]), Err(DecodeError::Empty));
}

#[test]
fn oversize_is_rejected_before_allocating() {
    assert_eq!(
        RelayMessage::decode(&vec![R_REQUEST; MAX_MESSAGE + 1]),
        Err(DecodeError::TooLarge("message"))
    );
    // A chunk claiming 4 GiB is refused from its length alone.
    let mut msg = vec![R_REQUEST_CHUNK];
    put_str(&mut msg, id().as_str());
    msg.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        RelayMessage::decode(&msg),
        Err(DecodeError::TooLarge("body chunk"))
    );
    // A header count the buffer cannot hold.
    let mut msg = vec![C_RESPONSE];
    put_str(&mut msg, id().as_str());
    msg.extend_from_slice(&200u16.to_be_bytes());
    msg.extend_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(ClientMessage::decode(&msg), Err(DecodeError::Truncated));
}

#[test]
fn wrong_version_decodes_so_the_relay_can_refuse_it() {
    // Version 1's hello, byte for byte: tag, version, tunnel, and no claim key.
    let mut v1 = vec![C_HELLO, 0, 1];
    put_str(&mut v1, "my-app");
    assert_eq!(
        ClientMessage::decode(&v1),
        Ok(ClientMessage::Hello {
            version: 1,
            tunnel: String::new(),
            claim_key: String::new(),
            observer: false,
        })
    );
    // A future version's hello with fields this side cannot know still names its version.
    let mut future = vec![C_HELLO, 0, 99, 0xde, 0xad];
    future.extend_from_slice(&[0xff; 16]);
    assert!(matches!(
        ClientMessage::decode(&future),
        Ok(ClientMessage::Hello { version: 99, .. })
    ));
    // Version 2's hello (no observer flag) is refused by version, not as a truncated message.
    let mut v2 = vec![C_HELLO, 0, 2];
    put_str(&mut v2, "my-app");
    put_str(&mut v2, "");
    assert!(matches!(
        ClientMessage::decode(&v2),
        Ok(ClientMessage::Hello {
            version: 2,
            observer: false,
            ..
        })
    ));
}

#[test]
fn hello_carries_the_observer_flag_and_nothing_after_it() {
    let mut hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        tunnel: "my-app".into(),
        claim_key: String::new(),
        observer: true,
    }
    .encode();
    assert_eq!(hello.last(), Some(&1));
    hello.push(0);
    assert_eq!(
        ClientMessage::decode(&hello),
        Err(DecodeError::TrailingBytes)
    );
}

#[test]
fn trailing_bytes_and_bad_values_are_rejected() {
    let mut encoded = ClientMessage::Recorded { id: id() }.encode();
    encoded.push(0);
    assert_eq!(
        ClientMessage::decode(&encoded),
        Err(DecodeError::TrailingBytes)
    );
    let mut refused = RelayMessage::Refused {
        reason: Refusal::Unauthorized,
        message: "x".into(),
    }
    .encode();
    refused[1] = 9;
    assert_eq!(
        RelayMessage::decode(&refused),
        Err(DecodeError::InvalidValue("refusal"))
    );
    let mut hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        tunnel: "ab".into(),
        claim_key: String::new(),
        observer: false,
    }
    .encode();
    hello[5] = 0xff;
    assert_eq!(
        ClientMessage::decode(&hello),
        Err(DecodeError::InvalidUtf8("tunnel"))
    );
}

#[test]
fn split_body_chunks_without_loss() {
    let body = Bytes::from(
        (0..(MAX_CHUNK * 2 + 17))
            .map(|i| i as u8)
            .collect::<Vec<_>>(),
    );
    let (first, rest) = split_body(&body);
    assert_eq!(first.len(), MAX_CHUNK);
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[1].len(), 17);
    let joined: Vec<u8> = std::iter::once(first)
        .chain(rest)
        .flat_map(|b| b.to_vec())
        .collect();
    assert_eq!(joined, body.to_vec());
    let (first, rest) = split_body(&Bytes::new());
    assert!(first.is_empty() && rest.is_empty());
}
