//! `illumitunnel trigger TYPE`: a realistic IllumiChat delivery, made up here and sent either
//! straight to the local server (`--forward-to`, recorded by this command) or through a tunnel
//! (`--url`, or the tunnel of the `listen` running on this machine, which records it). Either
//! way the capture store holds exactly one row per delivery, marked as triggered.

use std::path::Path;

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, Source};
use illumitunnel::event::samples;
use illumitunnel::store::CaptureStore;
use illumitunnel::{now_ms, Delivery, DeliveryId};
use serde_json::Value;

use super::listen::Running;
use super::{ignore_broken_pipe, parse_event_type, Ctx, UsageError};
use crate::cli::TriggerArgs;
use crate::forward::{Forwarder, Target, TRIGGER_HEADER};
use crate::output::{self, Format};
use crate::session::tls::{self, Trust};

/// Most deliveries one `trigger` sends.
const MAX_COUNT: u32 = 1000;

/// Where the deliveries go.
enum Destination {
    /// Straight to the local server; recorded here.
    Local(Target),
    /// Through a tunnel's public URL; the receiving `listen` records it.
    Tunnel(Target, Trust),
}

/// Sends the sample(s) and prints one result each.
pub fn run(args: TriggerArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let event = parse_event_type(&args.event)?;
    if args.count == 0 || args.count > MAX_COUNT {
        return Err(UsageError(format!("--count must be between 1 and {MAX_COUNT}")).into());
    }
    let file = match &args.file {
        Some(path) => Some(read_payload(path)?),
        None => None,
    };
    // Check every --set once up front, so a typo fails before anything is sent.
    let mut probe = samples::sample(event, 0);
    for set in &args.set {
        samples::apply_set(&mut probe, set).map_err(|e| UsageError(e.to_string()))?;
    }
    let destination = destination(&args)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("could not start the async runtime: {e}"))?;
    runtime.block_on(send_all(&args, event, file, destination, ctx))
}

/// The file's bytes, checked to be JSON.
fn read_payload(path: &Path) -> anyhow::Result<(Bytes, Value)> {
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "could not read --file {}: {e}; check the path, or leave --file out to send a sample",
            path.display()
        )
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        UsageError(format!(
            "--file {} is not valid JSON: {e}; fix the file or leave --file out to send a sample",
            path.display()
        ))
    })?;
    Ok((Bytes::from(bytes), value))
}

fn destination(args: &TriggerArgs) -> anyhow::Result<Destination> {
    if let Some(url) = &args.forward_to {
        let target = Target::parse(url).map_err(|e| UsageError(e.to_string()))?;
        return Ok(Destination::Local(target));
    }
    let running = Running::find();
    let url = match (&args.url, &running) {
        (Some(url), _) => url.clone(),
        (None, Some(running)) => running.public_url.clone(),
        (None, None) => anyhow::bail!(
            "no illumitunnel listen is running on this machine; start one, or pass --forward-to URL or --url PUBLIC_URL"
        ),
    };
    let target = Target::parse(&url).map_err(|e| {
        UsageError(e.to_string().replace("--forward-to", "--url").replace(
            "http://localhost:3000/webhooks/illumichat",
            "https://relay.example.com/t/my-app",
        ))
    })?;
    let trust = if args.insecure {
        Trust::Insecure
    } else if let Some(ca) = &args.ca {
        Trust::System(tls::load_ca(ca).map_err(UsageError)?)
    } else {
        // The embedded relay's certificate is self-signed; `listen` leaves it next to its
        // record so this command trusts the same relay `listen` runs.
        let extra = running
            .filter(|r| same_origin(&r.public_url, &target))
            .and_then(|r| r.ca_pem)
            .and_then(|pem| tls::load_ca(&pem).ok())
            .unwrap_or_default();
        Trust::System(extra)
    };
    Ok(Destination::Tunnel(target, trust))
}

fn same_origin(url: &str, target: &Target) -> bool {
    Target::parse(url).is_ok_and(|t| t.origin() == target.origin())
}

async fn send_all(
    args: &TriggerArgs,
    event: illumitunnel::event::EventType,
    file: Option<(Bytes, Value)>,
    destination: Destination,
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let (forwarder, tunnel) = match destination {
        Destination::Local(target) => (Forwarder::new(target), false),
        Destination::Tunnel(target, trust) => {
            let tls = tls::client_config(trust).map_err(anyhow::Error::msg)?;
            (Forwarder::with_tls(target, (*tls).clone()), true)
        }
    };
    let mut store = if tunnel {
        None
    } else {
        Some(CaptureStore::open(&ctx.store)?)
    };
    let format = if args.json {
        Format::Json
    } else {
        Format::Lines
    };
    for _ in 0..args.count {
        let body = payload(args, event, file.as_ref())?;
        let sends = if args.duplicate { 2 } else { 1 };
        for _ in 0..sends {
            let mut headers = vec![
                ("content-type".to_string(), b"application/json".to_vec()),
                (
                    "user-agent".to_string(),
                    format!("illumitunnel-trigger/{}", env!("CARGO_PKG_VERSION")).into_bytes(),
                ),
            ];
            if tunnel {
                headers.push((TRIGGER_HEADER.to_string(), b"1".to_vec()));
            }
            let request = RequestRecord {
                method: "POST".into(),
                path: String::new(),
                query: String::new(),
                headers,
                body: body.clone(),
            };
            let received_at_ms = now_ms();
            let forwarded = forwarder.forward(&request).await;
            let mut request = request;
            request.path = forwarded.uri.path().to_string();
            request.query = forwarded.uri.query().unwrap_or_default().to_string();
            let mut d = Delivery::new(
                DeliveryId::generate(),
                received_at_ms,
                Source::Trigger,
                request,
            );
            d.target = forwarded.uri.to_string();
            d.duration_us = forwarded.duration.as_micros() as i64;
            let failure = match forwarded.result {
                Ok(response) => {
                    d.response = Some(response);
                    None
                }
                Err(error) => {
                    d.error = Some(error.clone());
                    Some(error)
                }
            };
            if let Some(store) = store.as_mut() {
                store.insert_batch(std::slice::from_mut(&mut d))?;
            }
            print(&d, format, tunnel, ctx)?;
            if let Some(error) = failure {
                let check = if tunnel {
                    "check that listen is running and the URL is right"
                } else {
                    "start your local server or check --forward-to"
                };
                anyhow::bail!("could not deliver the {event} sample: {error}; {check}");
            }
        }
    }
    Ok(())
}

/// The body of one delivery: the sample (fresh ids and timestamp) or the file, with `--set`.
fn payload(
    args: &TriggerArgs,
    event: illumitunnel::event::EventType,
    file: Option<&(Bytes, Value)>,
) -> anyhow::Result<Bytes> {
    let mut value = match file {
        Some((bytes, _)) if args.set.is_empty() => return Ok(bytes.clone()),
        Some((_, value)) => value.clone(),
        None => samples::sample(event, now_ms()),
    };
    for set in &args.set {
        samples::apply_set(&mut value, set).map_err(|e| UsageError(e.to_string()))?;
    }
    Ok(Bytes::from(serde_json::to_vec(&value)?))
}

fn print(d: &Delivery, format: Format, tunnel: bool, ctx: &Ctx) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match format {
        Format::Json => {
            let mut v = d.summary_json();
            if tunnel {
                // The id is the one the receiving listen gives it; this side never learns it.
                v["id"] = Value::Null;
            }
            use std::io::Write;
            illumitunnel::escape::write_json(&mut out, &v).and_then(|()| writeln!(out))
        }
        Format::Lines => output::write_delivery(&mut out, d, format, &ctx.clock),
    };
    ignore_broken_pipe(result)
}
