use http::HeaderValue;

use super::*;

fn trusted(networks: &[&str]) -> TrustedProxies {
    TrustedProxies::new(networks.iter().map(|n| n.parse().unwrap()).collect())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn xff(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
    }
    headers
}

#[test]
fn networks_parse_plain_addresses_as_single_hosts_and_refuse_the_rest() {
    let net: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(net.contains(ip("10.255.0.1")) && !net.contains(ip("11.0.0.1")));
    assert!(
        net.contains(ip("::ffff:10.1.2.3")),
        "IPv4-mapped peers match IPv4 networks"
    );
    let host: Cidr = "127.0.0.1".parse().unwrap();
    assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
    let v6: Cidr = "fd00::/8".parse().unwrap();
    assert!(
        v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1"))
    );
    let one: Cidr = "::1".parse().unwrap();
    assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("203.0.113.9")));
    for bad in [
        "",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "example.com",
        "10.0.0/8",
        "10.0.0.0/8/8",
    ] {
        let err = bad.parse::<Cidr>().unwrap_err();
        assert!(
            err.contains("is not an address or network; use e.g. 127.0.0.1"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn an_untrusted_peer_is_the_sender_whatever_it_writes() {
    let headers = xff(&["203.0.113.66"]);
    let origin = Origin::of(&headers, ip("198.51.100.7"), &trusted(&["127.0.0.1"]));
    assert_eq!(
        origin,
        Origin {
            sender: ip("198.51.100.7"),
            via_trusted_proxy: false,
            forwarded_for: "198.51.100.7".into(),
        }
    );
    let origin = Origin::of(&headers, ip("::ffff:127.0.0.1"), &TrustedProxies::default());
    assert_eq!(origin.sender, ip("127.0.0.1"));
}

#[test]
fn the_walk_takes_the_right_most_entry_that_is_not_a_trusted_proxy() {
    let proxies = trusted(&["127.0.0.1", "10.0.0.0/8"]);
    let peer = ip("127.0.0.1");
    // A forged entry on the left is not believed, and not sent on.
    let origin = Origin::of(&xff(&["6.6.6.6, 198.51.100.7, 10.0.0.2"]), peer, &proxies);
    assert_eq!(origin.sender, ip("198.51.100.7"));
    assert!(origin.via_trusted_proxy);
    assert_eq!(origin.forwarded_for, "198.51.100.7, 10.0.0.2, 127.0.0.1");
    // Repeated header lines are one chain, in order; ports and brackets are allowed.
    let origin = Origin::of(
        &xff(&["6.6.6.6", "[2001:db8::7]:4431, 10.0.0.2:80"]),
        peer,
        &proxies,
    );
    assert_eq!(origin.sender, ip("2001:db8::7"));
    assert_eq!(origin.forwarded_for, "2001:db8::7, 10.0.0.2, 127.0.0.1");
    // No header: the proxy itself is the sender.
    let origin = Origin::of(&HeaderMap::new(), peer, &proxies);
    assert_eq!(
        (origin.sender, origin.forwarded_for.as_str()),
        (peer, "127.0.0.1")
    );
    // Every entry trusted: the left-most is as far as the walk can see.
    let origin = Origin::of(&xff(&["10.0.0.9, 10.0.0.2"]), peer, &proxies);
    assert_eq!(origin.sender, ip("10.0.0.9"));
    // Garbage stops the walk at the last trusted hop.
    let origin = Origin::of(&xff(&["198.51.100.7, unknown, 10.0.0.2"]), peer, &proxies);
    assert_eq!(origin.sender, ip("10.0.0.2"));
    assert_eq!(origin.forwarded_for, "10.0.0.2, 127.0.0.1");
    let origin = Origin::of(&xff(&["198.51.100.7, _hidden"]), peer, &proxies);
    assert_eq!(
        (origin.sender, origin.forwarded_for.as_str()),
        (peer, "127.0.0.1")
    );
    // Bytes that are not text are one bad entry, not a reason to skip the whole line.
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.7").unwrap();
    headers.append("x-forwarded-for", value);
    let origin = Origin::of(&headers, peer, &proxies);
    assert_eq!(origin.sender, ip("198.51.100.7"));
    assert_eq!(origin.forwarded_for, "198.51.100.7, 127.0.0.1");
    // IPv4-mapped entries and peers count as IPv4.
    let origin = Origin::of(
        &xff(&["::ffff:198.51.100.7"]),
        ip("::ffff:127.0.0.1"),
        &proxies,
    );
    assert_eq!(origin.sender, ip("198.51.100.7"));
    assert_eq!(origin.forwarded_for, "198.51.100.7, 127.0.0.1");
}

#[test]
fn origin_headers_are_recognised_in_any_case() {
    for name in [
        "Forwarded",
        "x-real-ip",
        "X-Forwarded-For",
        "x-forwarded-host",
        "X-FORWARDED-PROTO",
        "x-forwarded-port",
    ] {
        assert!(is_origin_header(name), "{name}");
    }
    for name in [
        "x-forwarded",
        "forwarded-for",
        "x-real",
        "content-type",
        "x-forwardedfor",
    ] {
        assert!(!is_origin_header(name), "{name}");
    }
}
