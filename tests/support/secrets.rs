//! Secrets a test plants in a delivery and a client token, and every form in which one of them
//! must never show up in a log: as text, and as the hex of a frame dump.

use super::sender::Request;

/// A client token the relay accepts (put it in a tokens file).
pub const TOKEN: &str = "relay-token-planted-7c1e9-4a8f";

/// Secret headers a sender plants: (name, value).
pub const SENDER_HEADERS: &[(&str, &str)] = &[
    ("Authorization", "Bearer sender-bearer-planted-41a"),
    ("Cookie", "session=cookie-planted-9d2"),
    ("Proxy-Authorization", "Basic proxy-planted-55b"),
    ("X-Api-Key", "apikey-planted-e07"),
    ("X-IllumiChat-Signature", "sha256=sig-planted-3b8"),
    ("X-Webhook-Secret", "whsecret-planted-c44"),
];

/// A secret header the local server answers with, so the way back is covered too.
pub const RESPONSE_HEADER: (&str, &str) = ("Set-Cookie", "resp-cookie-planted-0f1");

/// `request` with every [`SENDER_HEADERS`] header.
pub fn planted(mut request: Request) -> Request {
    for (name, value) in SENDER_HEADERS {
        request = request.header(name, value);
    }
    request
}

/// Every string no log may hold: each planted secret as text and as lowercase hex.
pub fn forbidden() -> Vec<String> {
    let mut values: Vec<&str> = SENDER_HEADERS.iter().map(|(_, v)| *v).collect();
    values.extend([TOKEN, RESPONSE_HEADER.1]);
    values
        .iter()
        .flat_map(|v| {
            let planted = v.rsplit([' ', '=']).next().unwrap_or(v);
            let hex: String = planted.bytes().map(|b| format!("{b:02x}")).collect();
            [planted.to_string(), hex]
        })
        .collect()
}

/// Panics naming `what` when `text` holds any [`forbidden`] string.
pub fn assert_none_in(what: &str, text: &str) {
    for secret in forbidden() {
        assert!(!text.contains(&secret), "{what} holds {secret}:\n{text}");
    }
}
