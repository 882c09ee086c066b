//! A CONNECT proxy for the tests: whatever host a client names, the tunnel goes to that port on
//! 127.0.0.1, so a relay URL with a far-away name (`http://relay.example.com:PORT`) reaches a
//! relay running here, and the test can count the tunnels opened.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A CONNECT proxy on 127.0.0.1:0 for at most `max` tunnels; counts the tunnels it opened.
pub fn connect_proxy(max: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("proxy addr").port();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&tunnels);
    std::thread::spawn(move || {
        for conn in listener.incoming().take(max) {
            let Ok(mut client) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                if client.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let Some(dest) = head
                .strip_prefix("CONNECT ")
                .and_then(|rest| rest.split_whitespace().next())
            else {
                let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
                continue;
            };
            // Loopback only, whatever the request names.
            let port: u16 = dest
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            };
            if let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) {
                pipe(c, upstream);
                pipe(u, client);
            }
        }
    });
    (port, tunnels)
}
