//! Which client tokens the relay accepts right now: those from `--tokens-file` and the
//! environment (replaced on SIGHUP) and those stored by `token add` (read again every
//! [`POLL_EVERY`]). A token that leaves both sets loses its sessions, not only new ones.
//! Failed checks are limited per sender address ([`limit`]), so tokens cannot be guessed
//! at speed.

pub mod limit;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use illumitunnel::Token;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::limit::{FailureLimit, Limited};
use crate::auth::{Auth, Owner, Unauthorized};
use crate::session::{self, SessionContext};
use crate::tokens;

/// How often a running relay reads the stored tokens (so `token add`/`revoke` apply within 5 s).
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// The relay's current tokens and the check made on every websocket upgrade.
#[derive(Debug)]
pub struct Access {
    allow_anonymous: bool,
    /// With no token at all, accept any client (an `--allow-anonymous` relay started without
    /// tokens, or the embedded relay, which still checks its process token); otherwise an empty
    /// set accepts nobody, on loopback too.
    open_when_empty: bool,
    /// The embedded relay's per-process token (its SHA-256): when set, the only client accepted.
    process: Option<[u8; 32]>,
    state: RwLock<State>,
    /// Bumped whenever the set changes, so sessions can check whether they still belong.
    changed: watch::Sender<u64>,
    /// Failed checks per sender address.
    failures: FailureLimit,
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The token is missing or wrong (401).
    Unauthorized,
    /// The address failed too many checks lately; its token was not looked at (429).
    Limited(Limited),
}

#[derive(Debug)]
struct State {
    configured: Vec<[u8; 32]>,
    stored: Vec<[u8; 32]>,
    auth: Arc<Auth>,
}

impl Access {
    /// Starts with the configured tokens; stored ones arrive with [`set_stored`](Self::set_stored).
    pub fn new(
        tokens: &[Token],
        allow_anonymous: bool,
        open_when_empty: bool,
        process: Option<&Token>,
    ) -> Arc<Self> {
        let access = Access {
            allow_anonymous,
            open_when_empty,
            process: process.map(|t| hashes(std::slice::from_ref(t))[0]),
            state: RwLock::new(State {
                configured: Vec::new(),
                stored: Vec::new(),
                auth: Arc::new(Auth::from_hashes(Vec::new(), allow_anonymous)),
            }),
            changed: watch::Sender::new(0),
            failures: FailureLimit::default(),
        };
        access.update(|state| state.configured = hashes(tokens));
        Arc::new(access)
    }

    /// Replaces the tokens from the file and the environment (SIGHUP).
    pub fn set_configured(&self, tokens: &[Token]) {
        self.update(|state| state.configured = hashes(tokens));
    }

    /// Replaces the stored tokens; returns whether anything changed.
    pub fn set_stored(&self, mut stored: Vec<[u8; 32]>) -> bool {
        stored.sort_unstable();
        let same = self.read(|state| state.stored == stored);
        if !same {
            self.update(|state| state.stored = stored);
        }
        !same
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            f(&mut state);
            let mut all = state.configured.clone();
            all.extend_from_slice(&state.stored);
            state.auth = Arc::new(
                Auth::from_hashes(all, self.allow_anonymous).with_process_hash(self.process),
            );
        }
        self.changed.send_modify(|generation| *generation += 1);
    }

    fn is_closed_and_empty(&self, state: &State) -> bool {
        !self.open_when_empty && state.configured.is_empty() && state.stored.is_empty()
    }

    /// Checks an upgrade's `Authorization` header against the current tokens.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Owner, Unauthorized> {
        let (closed, auth) = self.read(|s| (self.is_closed_and_empty(s), s.auth.clone()));
        if closed {
            return match authorization {
                None if self.allow_anonymous => Ok(Owner::Anonymous),
                _ => Err(Unauthorized),
            };
        }
        auth.check(authorization)
    }

    /// [`check`](Self::check) for an upgrade from `addr`, unless the address failed more
    /// checks lately than [`limit`] allows: then it is refused before its token is looked at.
    pub fn check_from(&self, addr: IpAddr, authorization: Option<&[u8]>) -> Result<Owner, Refused> {
        // The embedded relay's only token is 256 random bits made for one process: guessing
        // it is hopeless, and a limit would let another local user keep that process out.
        if self.process.is_some() {
            return self.check(authorization).map_err(|_| Refused::Unauthorized);
        }
        self.failures
            .reserve(addr, Instant::now())
            .map_err(Refused::Limited)?;
        match self.check(authorization) {
            Ok(owner) => {
                self.failures.passed(addr);
                Ok(owner)
            }
            Err(Unauthorized) => {
                tracing::debug!(address = %addr, "client token refused");
                Err(Refused::Unauthorized)
            }
        }
    }

    /// Whether sessions of `owner` may go on.
    pub fn accepts(&self, owner: Owner) -> bool {
        let Owner::Token(hash) = owner else {
            return true;
        };
        self.read(|state| {
            let listed = state.configured.contains(&hash) || state.stored.contains(&hash);
            let open =
                self.open_when_empty && state.configured.is_empty() && state.stored.is_empty();
            listed || open
        })
    }

    /// Resolves once `owner`'s token is no longer accepted.
    pub async fn revoked(&self, owner: Owner) {
        let mut changes = self.changed.subscribe();
        loop {
            if !self.accepts(owner) {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

fn hashes(tokens: &[Token]) -> Vec<[u8; 32]> {
    tokens.iter().map(|t| tokens::hash(t.expose())).collect()
}

/// Runs a session like [`session::run`], closing it when its token is revoked.
pub(crate) fn run_session<S>(
    access: Arc<Access>,
    ctx: Arc<SessionContext>,
    ws: WebSocketStream<S>,
    auth: Result<Owner, Unauthorized>,
) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Every idle session holds this future for hours: a plain function (an `async fn` keeps
    // its arguments, the websocket included, beside what it moved them into) and the session
    // boxed once (polled by reference below, instead of pinned into a second copy).
    let (ctx, revocable) = match auth {
        Ok(owner @ Owner::Token(_)) => {
            let closing = ctx.closing.child_token();
            let ctx = Arc::new(SessionContext {
                closing: closing.clone(),
                ..SessionContext::clone(&ctx)
            });
            (ctx, Some((owner, closing)))
        }
        _ => (ctx, None),
    };
    let mut session = Box::pin(session::run(ctx, ws, auth));
    async move {
        let Some((owner, closing)) = revocable else {
            return session.await;
        };
        // Both branches are cancel-safe: the session is polled by reference, never dropped here.
        tokio::select! {
            () = &mut session => return,
            () = access.revoked(owner) => {
                info!("client token revoked; closing its session");
                closing.cancel();
            }
        }
        session.await;
    }
}

/// Where a running relay reads its stored tokens: `relay.db` ([`DirTokens`]) or, on a
/// cluster, NATS.
#[async_trait::async_trait]
pub trait StoredTokens: Send + Sync {
    /// Every stored token's hash; `Ok(None)` when nothing has been stored yet.
    async fn hashes(&self) -> Result<Option<Vec<[u8; 32]>>, String>;
    /// The command that adds a token there, for the warning when there is none.
    fn add_command(&self) -> &'static str;
}

/// `{dir}/relay.db`, written by `token add`; the connection is kept between reads.
pub struct DirTokens {
    dir: std::path::PathBuf,
    conn: Mutex<Option<rusqlite::Connection>>,
}

impl DirTokens {
    /// The tokens stored in `dir`.
    pub fn new(dir: std::path::PathBuf) -> Self {
        DirTokens {
            dir,
            conn: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl StoredTokens for DirTokens {
    async fn hashes(&self) -> Result<Option<Vec<[u8; 32]>>, String> {
        let kept = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        let dir = self.dir.clone();
        let read = tokio::task::spawn_blocking(move || {
            let conn = kept.or_else(|| tokens::open_existing(&dir));
            let hashes = conn.as_ref().map(tokens::load_hashes);
            (conn, hashes)
        })
        .await
        .map_err(|e| e.to_string())?;
        match read {
            (kept, Some(Ok(hashes))) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = kept;
                Ok(Some(hashes))
            }
            // Open again next time: a busy database must not stick.
            (_, Some(Err(err))) => Err(err.to_string()),
            (_, None) => Ok(None),
        }
    }

    fn add_command(&self) -> &'static str {
        "illumitunnel-relay token add NAME"
    }
}

/// The relay's access: `tokens` from its configuration, plus the `stored` ones, read now and
/// then every [`POLL_EVERY`] until `shutdown`.
pub(crate) async fn start(
    tokens: &[Token],
    allow_anonymous: bool,
    open_when_empty: bool,
    process: Option<&Token>,
    stored: Option<Arc<dyn StoredTokens>>,
    shutdown: CancellationToken,
) -> (Arc<Access>, Option<tokio::task::JoinHandle<()>>) {
    let access = Access::new(tokens, allow_anonymous, open_when_empty, process);
    let Some(stored) = stored else {
        return (access, None);
    };
    match stored.hashes().await {
        Ok(Some(hashes)) => {
            access.set_stored(hashes);
        }
        Ok(None) => {}
        Err(err) => warn!(%err, "could not read the stored tokens"),
    }
    if access.read(|s| access.is_closed_and_empty(s)) {
        // Cluster nodes read the tokens in NATS, never a node's relay.db.
        let add = stored.add_command();
        warn!("no client tokens yet: clients are refused until `{add}`");
    }
    let poll = spawn_poll(access.clone(), stored, shutdown);
    (access, Some(poll))
}

/// Reads the stored tokens every [`POLL_EVERY`] until `shutdown`, and applies changes.
fn spawn_poll(
    access: Arc<Access>,
    stored: Arc<dyn StoredTokens>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Both branches are cancel-safe: a token wait and `Interval::tick`.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match stored.hashes().await {
                Ok(Some(hashes)) => {
                    let count = hashes.len();
                    if access.set_stored(hashes) {
                        info!(stored_tokens = count, "stored client tokens changed");
                    }
                }
                Ok(None) => {}
                // Keep the last set read: a busy database or a NATS outage must not lock
                // clients out.
                Err(err) => {
                    warn!(%err, "could not read the stored tokens; keeping the previous ones")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn stored_and_configured_tokens_both_count() {
        let access = Access::new(&[Token::new("from-file")], false, false, None);
        assert!(access.check(Some(&bearer("from-file"))).is_ok());
        assert!(access.check(Some(&bearer("stored"))).is_err());
        assert!(access.set_stored(vec![tokens::hash("stored")]));
        assert!(!access.set_stored(vec![tokens::hash("stored")]));
        let owner = access.check(Some(&bearer("stored"))).unwrap();
        assert!(access.accepts(owner));
        access.set_stored(Vec::new());
        assert!(!access.accepts(owner));
        assert!(access.check(Some(&bearer("stored"))).is_err());
        access.set_configured(&[Token::new("renewed")]);
        assert!(access.check(Some(&bearer("from-file"))).is_err());
        assert!(access.check(Some(&bearer("renewed"))).is_ok());
    }

    #[test]
    fn an_empty_set_is_closed_unless_the_relay_started_open() {
        let closed = Access::new(&[], false, false, None);
        assert!(closed.check(Some(&bearer("anything"))).is_err());
        assert!(closed.check(None).is_err());
        let open = Access::new(&[], false, true, None);
        let owner = open.check(Some(&bearer("anything"))).unwrap();
        assert!(open.accepts(owner));
        // Once tokens exist, even an open relay checks them.
        open.set_stored(vec![tokens::hash("stored")]);
        assert!(open.check(Some(&bearer("anything"))).is_err());
        assert!(!open.accepts(owner));
    }

    #[test]
    fn a_limited_address_is_refused_before_its_token_is_looked_at() {
        let access = Access::new(&[Token::new("right")], false, false, None);
        let (guesser, other) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..limit::BURST as usize {
            let refused = access.check_from(guesser, Some(&bearer("wrong")));
            assert_eq!(refused, Err(Refused::Unauthorized));
        }
        // Even the right token: otherwise a guess that hits would pass at full speed.
        let refused = access.check_from(guesser, Some(&bearer("right")));
        assert!(matches!(refused, Err(Refused::Limited(_))), "{refused:?}");
        assert!(access.check_from(other, Some(&bearer("right"))).is_ok());
        // Right tokens spend nothing: a busy team behind one address is never limited.
        for _ in 0..100 {
            assert!(access.check_from(other, Some(&bearer("right"))).is_ok());
        }
    }

    #[test]
    fn the_embedded_relay_is_not_limited() {
        let process = Token::new("per-process-token-0123456789");
        let access = Access::new(&[], true, true, Some(&process));
        let addr = "127.0.0.1".parse().unwrap();
        for _ in 0..100 {
            let refused = access.check_from(addr, Some(&bearer("guess")));
            assert_eq!(refused, Err(Refused::Unauthorized));
        }
        let bearer = bearer(process.expose());
        assert_eq!(access.check_from(addr, Some(&bearer)), Ok(Owner::Anonymous));
    }

    #[tokio::test]
    async fn revocation_wakes_the_session_watcher() {
        let access = Access::new(&[], false, false, None);
        access.set_stored(vec![tokens::hash("a"), tokens::hash("b")]);
        let owner = access.check(Some(&bearer("a"))).unwrap();
        let watcher = tokio::spawn({
            let access = access.clone();
            async move { access.revoked(owner).await }
        });
        access.set_stored(vec![tokens::hash("b")]);
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("revocation noticed")
            .unwrap();
    }
}
