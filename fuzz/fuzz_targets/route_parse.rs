//! Any request path through the relay's router. A tunnel route must be an exact split of the
//! path: `/t/` + a non-empty tunnel segment without `/` + a rest that starts with `/`, so no
//! path can address one tunnel and be delivered as another, or reach a fixed endpoint by a
//! second spelling.
#![no_main]

use illumitunnel::protocol::CONNECT_PATH;
use illumitunnel_relay::route::{parse, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Hyper hands the router a `&str` path; non-UTF-8 bytes never reach it.
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let route = parse(path);
    let fixed = match path {
        "/healthz" => Some(Route::Healthz),
        "/metrics" => Some(Route::Metrics),
        p if p == CONNECT_PATH => Some(Route::Connect),
        _ => None,
    };
    if let Some(want) = fixed {
        assert_eq!(route, want, "{path:?}");
        return;
    }
    match route {
        Route::Healthz | Route::Metrics | Route::Connect => {
            panic!("{path:?} reached a fixed endpoint by another spelling: {route:?}")
        }
        Route::Tunnel { tunnel, rest } => {
            assert!(!tunnel.is_empty(), "{path:?}: empty tunnel");
            assert!(
                !tunnel.contains('/'),
                "{path:?}: tunnel {tunnel:?} holds a slash"
            );
            assert!(
                rest.starts_with('/'),
                "{path:?}: rest {rest:?} is not absolute"
            );
            let rebuilt = format!("/t/{tunnel}{rest}");
            let bare = format!("/t/{tunnel}");
            assert!(
                rebuilt == path || (rest == "/" && bare == path),
                "{path:?} is not /t/{tunnel:?}{rest:?}"
            );
        }
        // NotFound, and whatever refusals the router gains later.
        _ => {
            if let Some(after) = path.strip_prefix("/t/") {
                let tunnel = after.split('/').next().unwrap_or_default();
                assert!(
                    tunnel.is_empty() || !matches!(route, Route::NotFound),
                    "{path:?} names tunnel {tunnel:?} but routes nowhere"
                );
            }
        }
    }
});
