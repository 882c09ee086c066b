//! Where the web inspector listens: `--inspect ADDR` (a loopback address, `localhost:PORT` or a
//! bare port), `--no-inspect`, or the default `127.0.0.1:4040`; a taken port moves on to the next
//! up to nine more (4040 → 4049). Port 0 takes any free port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

use crate::usage::UsageError;

/// The inspector's address unless `--inspect` says otherwise.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4040);
/// Ports tried after a taken one.
const MORE_PORTS: u16 = 9;

/// Whether and where `listen` serves the web inspector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspect {
    /// `--no-inspect`.
    Off,
    /// No flag: `127.0.0.1:4040`, or the next free port up to 4049; when all are taken, `listen`
    /// runs without it and says so.
    Default,
    /// `--inspect ADDR`: this address, or the next free port up to nine more; when all are
    /// taken, `listen` stops (the user asked for it).
    At(SocketAddr),
}

/// The variable that stands for `--inspect` when the flag is not given (`off` for
/// `--no-inspect`), e.g. for a test suite that runs many `listen`s at once.
pub const INSPECT_ENV: &str = "ILLUMITUNNEL_INSPECT";

impl Inspect {
    /// What `--inspect` / `--no-inspect` ask for, else `ILLUMITUNNEL_INSPECT` (`env`); an
    /// address off this machine is a usage error.
    pub fn from_args(
        inspect: Option<&str>,
        no_inspect: bool,
        env: Option<&str>,
    ) -> Result<Self, UsageError> {
        let env = env.map(str::trim).filter(|v| !v.is_empty());
        match (inspect, no_inspect, env) {
            (_, true, _) => Ok(Inspect::Off),
            (Some(text), false, _) => parse(text).map(Inspect::At),
            (None, false, Some("off")) => Ok(Inspect::Off),
            (None, false, Some(text)) => parse(text)
                .map(Inspect::At)
                .map_err(|e| UsageError(e.0.replacen("--inspect", INSPECT_ENV, 1))),
            (None, false, None) => Ok(Inspect::Default),
        }
    }
}

/// `127.0.0.1:4041`, `[::1]:4041`, `localhost:4041` or `4041`; loopback only.
fn parse(text: &str) -> Result<SocketAddr, UsageError> {
    let text = text.trim();
    let addr = if let Ok(port) = text.parse::<u16>() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else if let Some(port) = text
        .strip_prefix("localhost:")
        .and_then(|p| p.parse::<u16>().ok())
    {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        text.parse::<SocketAddr>().map_err(|_| {
            UsageError(format!(
                "invalid --inspect {text:?}; write a loopback address and port such as 127.0.0.1:4040"
            ))
        })?
    };
    if !addr.ip().is_loopback() {
        return Err(UsageError(format!(
            "--inspect {text} is not a loopback address and the inspector serves this machine only; pass 127.0.0.1:PORT or [::1]:PORT"
        )));
    }
    Ok(addr)
}

/// Binds the inspector's port as `choice` says: `None` for `--no-inspect`, and for the default
/// when 4040–4049 are all taken (the warning says so); an error when `--inspect`'s ports are.
pub async fn bind(choice: Inspect) -> anyhow::Result<Option<TcpListener>> {
    let first = match choice {
        Inspect::Off => return Ok(None),
        Inspect::Default => DEFAULT_ADDR,
        Inspect::At(addr) => addr,
    };
    let last = if first.port() == 0 {
        0
    } else {
        first.port().saturating_add(MORE_PORTS)
    };
    let mut last_err = None;
    for port in first.port()..=last {
        match TcpListener::bind(SocketAddr::new(first.ip(), port)).await {
            Ok(listener) => return Ok(Some(listener)),
            Err(err) => last_err = Some(err),
        }
    }
    let cause = last_err.map_or_else(String::new, |e| e.to_string());
    let ports = if last == first.port() {
        format!("{first}")
    } else {
        format!("{}:{}-{last}", bracketed(first.ip()), first.port())
    };
    match choice {
        Inspect::Default => {
            eprintln!(
                "web inspector not started: {ports} are taken ({cause}); pass --inspect 127.0.0.1:PORT for another port"
            );
            Ok(None)
        }
        _ => Err(anyhow::anyhow!(
            "could not serve the web inspector on {ports}: {cause}; pass --inspect with a free port, or --no-inspect"
        )),
    }
}

fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_forms_are_taken_and_others_refused() {
        let at = |t: &str| Inspect::from_args(Some(t), false, None).map_err(|e| e.0);
        assert_eq!(
            at("127.0.0.1:4041"),
            Ok(Inspect::At("127.0.0.1:4041".parse().unwrap()))
        );
        assert_eq!(at("[::1]:0"), Ok(Inspect::At("[::1]:0".parse().unwrap())));
        assert_eq!(
            at("localhost:4042"),
            Ok(Inspect::At("127.0.0.1:4042".parse().unwrap()))
        );
        assert_eq!(
            at("4043"),
            Ok(Inspect::At("127.0.0.1:4043".parse().unwrap()))
        );
        assert_eq!(
            at("0.0.0.0:4040").unwrap_err(),
            "--inspect 0.0.0.0:4040 is not a loopback address and the inspector serves this machine only; pass 127.0.0.1:PORT or [::1]:PORT"
        );
        assert!(at("192.168.1.2:4040").is_err());
        assert!(at("nonsense").unwrap_err().starts_with("invalid --inspect"));
        assert_eq!(
            Inspect::from_args(None, false, None).unwrap(),
            Inspect::Default
        );
        assert_eq!(Inspect::from_args(None, true, None).unwrap(), Inspect::Off);
    }

    #[test]
    fn the_variable_stands_for_the_flag_when_it_is_not_given() {
        let with =
            |flag: Option<&str>, no: bool, env: &str| Inspect::from_args(flag, no, Some(env));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(with(None, false, "127.0.0.1:0").unwrap(), Inspect::At(any));
        assert_eq!(with(None, false, "off").unwrap(), Inspect::Off);
        assert_eq!(with(None, false, " ").unwrap(), Inspect::Default);
        assert_eq!(with(None, true, "127.0.0.1:0").unwrap(), Inspect::Off);
        assert_eq!(
            with(Some("4041"), false, "off").unwrap(),
            Inspect::At("127.0.0.1:4041".parse().unwrap())
        );
        assert!(with(None, false, "0.0.0.0:1")
            .unwrap_err()
            .0
            .starts_with("ILLUMITUNNEL_INSPECT 0.0.0.0:1 is not a loopback address"));
    }

    #[tokio::test]
    async fn a_taken_port_moves_to_the_next_and_off_binds_nothing() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let choice = Inspect::At(taken.local_addr().unwrap());
        // The next port may be taken by something else on this machine: any later one will do.
        if let Ok(Some(listener)) = bind(choice).await {
            let got = listener.local_addr().unwrap().port();
            assert!(got > port && got <= port + MORE_PORTS, "{got} after {port}");
        }
        assert!(bind(Inspect::Off).await.unwrap().is_none());
    }
}
