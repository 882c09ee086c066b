//! `illumitunnel webhooks list | register | enable | disable | delete`: IllumiChat's webhook
//! settings from the command line, through its API (see `crate::illumichat`).

use std::io::Write;

use serde_json::{json, Value};

use super::{ignore_broken_pipe, parse_event_type};
use crate::cli::{WebhooksAction, WebhooksArgs};
use crate::illumichat::{check_id, Api, Webhook};
use crate::usage::UsageError;

/// Runs one webhooks action.
pub fn run(args: WebhooksArgs) -> anyhow::Result<()> {
    if let WebhooksAction::Register { url, events } = &args.action {
        check_url(url)?;
        crate::illumichat::check_registrable(url, args.api.allow_private_url)?;
        for e in events {
            parse_event_type(e)?;
        }
    }
    let api = Api::new(&args.api)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("could not start the async runtime: {e}"))?;
    let json = args.json;
    let text = runtime.block_on(async move {
        let text = match &args.action {
            WebhooksAction::List => {
                let hooks = api.list().await?;
                if json {
                    let all: Vec<Value> = hooks.iter().map(|h| h.raw.clone()).collect();
                    format!("{}\n", Value::Array(all))
                } else if hooks.is_empty() {
                    "no IllumiChat webhooks; create one with illumitunnel webhooks register --url URL --events TYPE,...\n".into()
                } else {
                    hooks.iter().map(|h| format!("{}\n", row(h))).collect()
                }
            }
            WebhooksAction::Register { url, events } => {
                let events: Vec<String> = events.iter().map(|e| e.trim().to_string()).collect();
                let hook = api.create(url, &events).await?;
                if json {
                    format!("{}\n", hook.raw)
                } else {
                    format!("registered IllumiChat webhook {} for {url}\n", hook.id)
                }
            }
            WebhooksAction::Enable { id } | WebhooksAction::Disable { id } => {
                let id = check_id(id)?;
                let active = matches!(args.action, WebhooksAction::Enable { .. });
                let hook = api.update(id, &json!({ "active": active })).await?;
                let word = if active { "enabled" } else { "disabled" };
                if json {
                    let raw = hook.map(|h| h.raw).unwrap_or(json!({"id": id, "active": active}));
                    format!("{raw}\n")
                } else {
                    format!("{word} IllumiChat webhook {id}\n")
                }
            }
            WebhooksAction::Delete { id } => {
                let id = check_id(id)?;
                api.delete(id).await?;
                if json {
                    format!("{}\n", json!({"id": id, "deleted": true}))
                } else {
                    format!("deleted IllumiChat webhook {id}\n")
                }
            }
        };
        anyhow::Ok(text)
    })?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    ignore_broken_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// `wh_1  active    https://…/t/my-app  ticket.created,lead.captured`
fn row(h: &Webhook) -> String {
    let state = match h.active {
        Some(true) => "active",
        Some(false) => "disabled",
        None => "-",
    };
    let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    format!(
        "{}  {state:<8}  {}  {}",
        clean(&h.id),
        clean(&h.url),
        clean(&h.events.join(","))
    )
}

/// IllumiChat only delivers to absolute http(s) URLs.
pub fn check_url(url: &str) -> Result<(), UsageError> {
    let ok = url
        .parse::<http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.authority().is_some())
        .is_some();
    if ok {
        Ok(())
    } else {
        Err(UsageError(format!(
            "invalid --url {url:?}; pass the public HTTPS URL IllumiChat should deliver to, e.g. your tunnel URL"
        )))
    }
}
