//! `illumitunnel trigger TYPE`: a realistic IllumiChat delivery, made up here and sent either
//! straight to the local server (`--forward-to`, recorded by this command) or through a tunnel
//! (`--url`, or the tunnel of the `listen` running on this machine, which records it). Either
//! way the capture store holds exactly one row per delivery, marked as triggered.
//! `--retries illumichat` resends a delivery IllumiChat would retry (non-2xx, or no answer within
//! `event::SENDER_TIMEOUT`) on its schedule divided by `--speed`, same bytes each time; local
//! retries are recorded with `replay_of` pointing at the first attempt and read `retry of`.

use std::path::Path;

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, Source};
use illumitunnel::event::{retry_delays, samples, RETRY_DELAYS, SENDER_TIMEOUT};
use illumitunnel::store::CaptureStore;
use illumitunnel::{now_ms, Delivery, DeliveryId};
use serde_json::Value;

use super::listen::Running;
use super::{ignore_broken_pipe, parse_event_type, Ctx};
use crate::cli::TriggerArgs;
use crate::forward::{Forwarder, Target, TRIGGER_HEADER};
use crate::output::{self, Format};
use crate::session::tls::{self, Trust};
use crate::settings::Settings;
use crate::usage::UsageError;

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
    let shown = super::export::shown_source(path);
    let bytes = super::export::read_source(path).map_err(|e| {
        UsageError(format!(
            "could not read --file {shown}: {e}; check the path, or leave --file out to send a sample"
        ))
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        UsageError(format!(
            "--file {shown} is not valid JSON: {e}; fix the file or leave --file out to send a sample"
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
    } else if let Some(trust) = remembered_trust(&target)? {
        trust
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

/// What `login` remembered for the relay whose tunnel `target` is on (its `--ca` or
/// `--insecure`), so a tunnel URL on a self-signed relay works without flags; `None` for any
/// other host.
fn remembered_trust(target: &Target) -> anyhow::Result<Option<Trust>> {
    let settings = Settings::load()?;
    let Some(relay) = settings
        .relay
        .as_deref()
        .filter(|relay| same_origin(relay, target))
    else {
        return Ok(None);
    };
    if settings.insecure {
        return Ok(Some(Trust::Insecure));
    }
    match &settings.ca {
        Some(path) => {
            let certs = tls::load_ca(path).map_err(|e| {
                UsageError(format!(
                    "{e}; it is the ca in {} for {relay}: run illumitunnel login --relay {relay} --ca PEM again",
                    Settings::path().display()
                ))
            })?;
            Ok(Some(Trust::System(certs)))
        }
        None => Ok(None),
    }
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
    let mut sender = Sender {
        forwarder,
        tunnel,
        store: if tunnel {
            None
        } else {
            Some(CaptureStore::open(&ctx.store)?)
        },
        format: if args.json {
            Format::Json
        } else {
            Format::Lines
        },
    };
    if args.retries.is_some() {
        sender.forwarder = sender.forwarder.with_timeout(SENDER_TIMEOUT);
    }
    // Deliveries the handler (or relay) answered with a non-2xx: all are sent, then exit 1.
    let mut refused = 0u32;
    let mut sent = 0u32;
    for _ in 0..args.count {
        let body = payload(args, event, file.as_ref())?;
        if args.retries.is_some() {
            sender.with_retries(&body, args.speed, event, ctx).await?;
            continue;
        }
        let sends = if args.duplicate { 2 } else { 1 };
        for _ in 0..sends {
            let d = sender.attempt(&body, None, ctx).await?;
            if let Some(error) = &d.error {
                let check = if tunnel {
                    "check that listen is running and the URL is right"
                } else {
                    "start your local server or check --forward-to"
                };
                anyhow::bail!("could not deliver the {event} sample: {error}; {check}");
            }
            sent += 1;
            if !is_success(&d) {
                refused += 1;
            }
        }
    }
    if refused > 0 {
        let who = if tunnel {
            "check the relay's answer above and the handler's log"
        } else {
            "check the handler's log"
        };
        anyhow::bail!("{refused} of {sent} {event} deliveries got no 2xx answer; {who}");
    }
    Ok(())
}

/// Sends, records and prints attempts.
struct Sender {
    forwarder: Forwarder,
    /// Whether deliveries go through a tunnel (the receiving `listen` records them).
    tunnel: bool,
    /// Where local deliveries are recorded.
    store: Option<CaptureStore>,
    format: Format,
}

impl Sender {
    /// Sends `body` as IllumiChat would until the handler answers 2xx: the first attempt, then
    /// one after each of `event::RETRY_DELAYS` divided by `speed`, each the same bytes (same
    /// timestamp, so the same dedup key) and recorded as a retry of the first.
    async fn with_retries(
        &mut self,
        body: &Bytes,
        speed: u32,
        event: illumitunnel::event::EventType,
        ctx: &Ctx,
    ) -> anyhow::Result<()> {
        let first = self.attempt(body, None, ctx).await?;
        if is_success(&first) {
            return Ok(());
        }
        let delays = retry_delays(speed);
        for (i, (delay, documented)) in delays.iter().zip(RETRY_DELAYS).enumerate() {
            eprintln!(
                "retry {} of {} in {} (IllumiChat waits {}; --speed {speed})",
                i + 1,
                delays.len(),
                humantime::format_duration(*delay),
                humantime::format_duration(documented),
            );
            tokio::time::sleep(*delay).await;
            let retry = self.attempt(body, Some((i + 1, &first)), ctx).await?;
            if is_success(&retry) {
                return Ok(());
            }
        }
        anyhow::bail!(
            "the handler answered none of {} attempts of the {event} delivery with a 2xx, so IllumiChat would mark it failed; check the handler's log",
            delays.len() + 1
        )
    }

    /// One send of `body`: recorded (locally) and printed; `retry` (its number and the first
    /// attempt) marks a retry.
    async fn attempt(
        &mut self,
        body: &Bytes,
        retry: Option<(usize, &Delivery)>,
        ctx: &Ctx,
    ) -> anyhow::Result<Delivery> {
        let mut headers = vec![
            ("content-type".to_string(), b"application/json".to_vec()),
            (
                "user-agent".to_string(),
                format!("illumitunnel-trigger/{}", env!("CARGO_PKG_VERSION")).into_bytes(),
            ),
        ];
        if self.tunnel {
            headers.push((TRIGGER_HEADER.to_string(), b"1".to_vec()));
        }
        let mut request = RequestRecord {
            method: "POST".into(),
            path: String::new(),
            query: String::new(),
            headers,
            body: body.clone(),
        };
        let received_at_ms = now_ms();
        let forwarded = self.forwarder.forward(&request).await;
        request.path = forwarded.uri.path().to_string();
        request.query = forwarded.uri.query().unwrap_or_default().to_string();
        let mut d = Delivery::new(
            DeliveryId::generate(),
            received_at_ms,
            Source::Trigger,
            request,
        );
        // Through a tunnel the ids are the receiving listen's, so only the number marks a retry.
        if !self.tunnel {
            d.replay_of = retry.map(|(_, first)| first.id.clone());
        }
        d.target = forwarded.uri.to_string();
        d.duration_us = forwarded.duration.as_micros() as i64;
        match forwarded.result {
            Ok(response) => d.response = Some(response),
            Err(error) => d.error = Some(error),
        }
        if let Some(store) = self.store.as_mut() {
            store.insert_batch(std::slice::from_mut(&mut d))?;
        }
        print(&d, self.format, self.tunnel, retry.map(|(n, _)| n), ctx)?;
        Ok(d)
    }
}

/// Whether IllumiChat would count the answer as delivered.
fn is_success(d: &Delivery) -> bool {
    d.status().is_some_and(|s| (200..300).contains(&s))
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

fn print(
    d: &Delivery,
    format: Format,
    tunnel: bool,
    retry: Option<usize>,
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match format {
        Format::Json => {
            let mut v = d.summary_json();
            if tunnel {
                // The id is the one the receiving listen gives it; this side never learns it.
                v["id"] = Value::Null;
            }
            if let Some(n) = retry {
                v["retry"] = n.into();
            }
            use std::io::Write;
            illumitunnel::escape::write_json(&mut out, &v).and_then(|()| writeln!(out))
        }
        Format::Lines => match retry.filter(|_| tunnel) {
            Some(n) => {
                use std::io::Write;
                writeln!(out, "{}  retry {n}", output::line(d, &ctx.clock))
            }
            None => output::write_delivery(&mut out, d, format, &ctx.clock),
        },
    };
    ignore_broken_pipe(result)
}
