use super::*;

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
    match parse(buf) {
        Ok(Parsed::Complete(header, used)) => (header, used),
        other => panic!("{buf:?}: {other:?}"),
    }
}

fn proxied(source: &str, destination: &str) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

#[test]
fn v1_tcp4_tcp6_and_unknown_lines_parse_and_say_their_length() {
    let line = b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\nGET / HTTP/1.1\r\n";
    assert_eq!(
        complete(line),
        (proxied("198.51.100.7:40000", "10.0.0.1:443"), 44)
    );
    let line = b"PROXY TCP6 2001:db8::7 ::1 1 65535\r\n";
    assert_eq!(
        complete(line),
        (proxied("[2001:db8::7]:1", "[::1]:65535"), line.len())
    );
    assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (ProxyHeader::Local, 15));
    let unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    assert_eq!(complete(unknown), (ProxyHeader::Local, unknown.len()));
}

#[test]
fn v1_needs_more_bytes_until_its_line_ends() {
    assert_eq!(parse(b""), Ok(Parsed::Incomplete(15)));
    assert_eq!(parse(b"PROX"), Ok(Parsed::Incomplete(15)));
    let partial = b"PROXY TCP4 198.51.100.7";
    assert_eq!(parse(partial), Ok(Parsed::Incomplete(partial.len() + 1)));
}

#[test]
fn malformed_and_oversized_v1_lines_are_refused() {
    let cases: [(&[u8], HeaderError); 10] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", HeaderError::Missing),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            HeaderError::Missing,
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            HeaderError::V1("the line must end with \\r\\n"),
        ),
        (
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            HeaderError::V1("unknown protocol"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            HeaderError::V1("expected 6 fields"),
        ),
        (
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            HeaderError::V1("bad address for the protocol"),
        ),
        (
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            HeaderError::V1("bad address for the protocol"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            HeaderError::V1("bad port"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            HeaderError::V1("bad port"),
        ),
        (
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            HeaderError::V1("expected 6 fields"),
        ),
    ];
    for (buf, want) in cases {
        assert_eq!(
            parse(buf),
            Err(want.clone()),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX, b'x');
    assert_eq!(parse(&long), Err(HeaderError::TooLong));
    long.truncate(V1_MAX - 1);
    assert_eq!(parse(&long), Ok(Parsed::Incomplete(V1_MAX)));
    // A line ending just past 107 bytes is still too long.
    long.extend_from_slice(b"x\r\n");
    assert_eq!(parse(&long), Err(HeaderError::TooLong));
}

#[test]
fn v2_tcp4_tcp6_local_and_unspec_parse_with_their_tlvs() {
    let mut body = vec![198, 51, 100, 7, 10, 0, 0, 1];
    body.extend_from_slice(&40000u16.to_be_bytes());
    body.extend_from_slice(&443u16.to_be_bytes());
    body.extend_from_slice(&[0x05, 0x00, 0x03, b'v', b'p', b'c']); // a TLV, as AWS NLB sends
    let mut buf = v2(0x1, 0x11, &body);
    let len = buf.len();
    buf.extend_from_slice(b"\x16\x03\x01"); // TLS starts right after
    assert_eq!(
        complete(&buf),
        (proxied("198.51.100.7:40000", "10.0.0.1:443"), len)
    );

    let mut body = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
    body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&[0, 1, 0, 2]);
    let buf = v2(0x1, 0x21, &body);
    assert_eq!(
        complete(&buf),
        (proxied("[2001:db8::7]:1", "[::1]:2"), buf.len())
    );

    assert_eq!(complete(&v2(0x0, 0x00, &[])), (ProxyHeader::Local, 16));
    assert_eq!(complete(&v2(0x0, 0x11, &[0; 12])), (ProxyHeader::Local, 28));
    assert_eq!(complete(&v2(0x1, 0x00, &[])), (ProxyHeader::Local, 16));
    assert_eq!(
        complete(&v2(0x1, 0x31, &[0; 216])),
        (ProxyHeader::Local, 232)
    );
}

#[test]
fn v2_asks_for_its_declared_length_before_parsing() {
    let buf = v2(0x1, 0x11, &[1; 12]);
    assert_eq!(parse(&buf[..13]), Ok(Parsed::Incomplete(15)));
    assert_eq!(parse(&buf[..15]), Ok(Parsed::Incomplete(16)));
    assert_eq!(parse(&buf[..20]), Ok(Parsed::Incomplete(28)));
}

#[test]
fn malformed_and_oversized_v2_headers_are_refused() {
    let mut wrong_version = v2(0x1, 0x11, &[0; 12]);
    wrong_version[12] = 0x11;
    let mut huge = V2_SIGNATURE.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let cases = [
        (wrong_version, HeaderError::V2("version is not 2")),
        (huge, HeaderError::V2("longer than the relay accepts")),
        (
            v2(0x1, 0x11, &[0; 8]),
            HeaderError::V2("address block too short"),
        ),
        (
            v2(0x1, 0x21, &[0; 12]),
            HeaderError::V2("address block too short"),
        ),
        (
            v2(0x1, 0x12, &[0; 12]),
            HeaderError::V2("UDP, not a TCP connection"),
        ),
        (
            v2(0x1, 0x41, &[0; 12]),
            HeaderError::V2("unknown address family"),
        ),
        (v2(0x2, 0x11, &[0; 12]), HeaderError::V2("unknown command")),
    ];
    for (buf, want) in cases {
        assert_eq!(parse(&buf), Err(want));
    }
    let mut almost = V2_SIGNATURE.to_vec();
    almost[11] = b'X';
    assert_eq!(parse(&almost), Err(HeaderError::Missing));
}

#[tokio::test]
async fn read_takes_exactly_the_header_and_leaves_what_follows() {
    let mut input: &[u8] = b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\nGET / HTTP/1.1\r\n";
    let header = read(&mut input).await.unwrap();
    assert_eq!(header, proxied("198.51.100.7:40000", "10.0.0.1:443"));
    assert_eq!(input, b"GET / HTTP/1.1\r\n");

    let mut bytes = v2(0x1, 0x11, &[192, 0, 2, 1, 10, 0, 0, 1, 0, 80, 1, 187]);
    bytes.extend_from_slice(b"rest");
    let mut input: &[u8] = &bytes;
    assert_eq!(
        read(&mut input).await.unwrap(),
        proxied("192.0.2.1:80", "10.0.0.1:443")
    );
    assert_eq!(input, b"rest");

    let mut cut: &[u8] = b"PROXY TCP4 198.51.100.7 10.0";
    assert_eq!(read(&mut cut).await, Err(HeaderError::Closed));
    let mut endless: &[u8] = &[b'P'; 4096];
    assert_eq!(read(&mut endless).await, Err(HeaderError::Missing));
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(4096, b'x');
    let mut long: &[u8] = &long;
    assert_eq!(read(&mut long).await, Err(HeaderError::TooLong));
}

#[test]
fn no_prefix_corruption_or_noise_panics_or_reads_past_its_input() {
    let mut tcp4 = vec![198, 51, 100, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb];
    tcp4.extend_from_slice(&[0x05, 0x00, 0x01, 0x00]);
    let valid = [
        b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::7 ::1 1 2\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2(0x1, 0x11, &tcp4),
        v2(0x1, 0x21, &[7; 36]),
        v2(0x0, 0x00, &[]),
    ];
    let check = |buf: &[u8]| match parse(buf) {
        Ok(Parsed::Complete(_, used)) => assert!(used <= buf.len(), "{buf:?}"),
        Ok(Parsed::Incomplete(need)) => assert!(need > buf.len() && need <= V2_MAX, "{buf:?}"),
        Err(_) => {}
    };
    for header in &valid {
        for end in 0..=header.len() {
            check(&header[..end]);
        }
        for at in 0..header.len() {
            for byte in [0x00, 0x0a, 0x0d, 0x20, 0x7f, 0xff] {
                let mut corrupt = header.clone();
                corrupt[at] = byte;
                check(&corrupt);
            }
        }
    }
    // A fixed-seed generator: the same noise on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 128) as usize;
        let mut noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if next() % 2 == 0 {
            let prefix: &[u8] = if next() % 2 == 0 {
                b"PROXY "
            } else {
                &V2_SIGNATURE
            };
            noise.splice(0..0, prefix.iter().copied());
        }
        check(&noise);
    }
}
