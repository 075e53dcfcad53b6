//! The MCP gateway: a Streamable HTTP endpoint per registered upstream
//! server at `/mcp/{server}`. Agents connect with their API key; every
//! `tools/call` is a Steward decision on the tool and its arguments, every
//! listing shows only what the agent may use, and every call's outcome is
//! audited. `rmcp` (the official Rust SDK) speaks MCP on both sides and stays
//! behind this module.
//!
//! - `proxy.rs`: one [`proxy::Proxy`] per downstream session, holding one
//!   upstream client session; requests and notifications are relayed.
//! - `upstream.rs`: that upstream session: starting it (a child process or
//!   an HTTP client), sending requests up, relaying what comes down.
//! - `govern.rs`: decisions for calls and listings, the outcome record and
//!   the settlement of quota reservations.
//! - `registrations.rs`: the upstreams' registrations, briefly cached.
//! - `withhold.rs`: the resources an answer holds, decided as reads.
//! - `arguments.rs`: tool arguments made into values policies can compare.

mod arguments;
mod govern;
mod proxy;
mod registrations;
mod stdio;
mod upstream;
mod withhold;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::auth::AgentCredential;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use steward_store::Store;
use steward_types::{ErrorCode, McpServer, ON_BEHALF_OF_HEADER};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub use govern::{CallOutcome, report_outcome};

/// The gateway: rmcp's Streamable HTTP service (sessions in memory), the
/// token that closes every session when the server shuts down, the HTTP
/// client upstream sessions share and the registrations recently used.
pub struct Gateway {
    service: StreamableHttpService<proxy::Proxy, LocalSessionManager>,
    shutdown: CancellationToken,
    upstream_http: rmcp_reqwest::Client,
    registrations: registrations::Registrations,
    sessions: Arc<LocalSessionManager>,
    /// Who opened each session, on which upstream: every later message
    /// (requests, notifications, the event stream, the closing DELETE) must
    /// come from that agent, to that upstream. Also when its client was
    /// last heard from.
    owners: std::sync::Mutex<HashMap<String, SessionEntry>>,
    /// How long a session may go without its client.
    idle: Duration,
    /// The largest message a client may send.
    max_body_bytes: usize,
    /// Answered calls' outcome records being written.
    outcomes: tokio_util::task::TaskTracker,
    /// When sessions' agents and registrations were last checked.
    last_checked: std::sync::Mutex<Option<Instant>>,
    /// A registration changed on this node while a session on it may have
    /// been still opening (not closed with the others): check
    /// registrations at the next tick.
    recheck_registrations: AtomicBool,
}

/// A session's owner and its client's activity.
struct SessionEntry {
    /// (agent id, upstream id).
    owner: (String, String),
    /// The agent's tenant.
    tenant: String,
    /// The registration the session was opened with (its upstream was
    /// started from its transport).
    server: Arc<McpServer>,
    /// The key (or delegated token) that opened it, the only one that may
    /// use it: once that no longer authenticates, the session closes,
    /// event stream and all.
    credential: AgentCredential,
    /// When the client last sent something, or an answer to it ended.
    last_seen: Instant,
    /// Answers (event streams included) still being sent to the client.
    open: u32,
    /// Of those, answers to messages the client posted: each ends once
    /// its message is answered.
    posted: u32,
    /// The longest upstream timeout a posted message was taken under.
    longest_timeout_secs: u32,
    /// Being closed: no further message is taken, those taken are let
    /// finish first.
    closing: bool,
}

/// An answer being sent to a session's client: while one is open the
/// session is not idle, and when it ends the client counts as just seen.
struct Answering {
    state: AppState,
    session: String,
    /// An answer to a posted message (not the event stream).
    posted: bool,
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(entry) = self.state.mcp.owners().get_mut(&self.session) {
            entry.last_seen = Instant::now();
            entry.open = entry.open.saturating_sub(1);
            if self.posted {
                entry.posted = entry.posted.saturating_sub(1);
            }
        }
    }
}

/// A response body that holds an [`Answering`] until it is dropped (sent
/// to its end, or its client went away).
struct Guarded {
    body: Body,
    _answering: Answering,
}

impl axum::body::HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The header carrying a Streamable HTTP session's id.
const SESSION_HEADER: &str = "mcp-session-id";

/// Most sessions one agent may hold open at once, across upstreams: each
/// stdio session is a process on this host.
pub const MAX_SESSIONS_PER_AGENT: usize = 16;

/// How often the background loop checks that the agents holding sessions
/// on this node are still active and their upstreams still registered as
/// they were: one agent read and one (cached) registration read per
/// distinct agent and upstream each time. A change made on this node closes
/// its sessions at once; this catches the others (expiry, automatic
/// suspensions, changes made on other nodes of a cluster).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Who opens a session, on which upstream.
struct Holder {
    /// (agent id, upstream id).
    owner: (String, String),
    tenant: String,
    server: Arc<McpServer>,
    credential: AgentCredential,
}

impl Holder {
    fn entry(&self, open: u32) -> SessionEntry {
        SessionEntry {
            owner: self.owner.clone(),
            tenant: self.tenant.clone(),
            server: self.server.clone(),
            credential: self.credential.clone(),
            last_seen: Instant::now(),
            open,
            posted: 0,
            longest_timeout_secs: 0,
            closing: false,
        }
    }
}

impl Gateway {
    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record who opened a session, forgetting sessions rmcp has closed
    /// (timed out or ended) once the record grows.
    async fn opened(&self, session: String, holder: &Holder) {
        if self.owners().len() >= 1024 {
            self.forget_closed().await;
        }
        self.owners().insert(session, holder.entry(0));
    }

    /// `owner`'s message for `session` (`posted`: a message, not the
    /// event stream or a DELETE): `None` when the session is not theirs
    /// (another agent's, or opened with another credential)
    /// (or unknown, or closing); otherwise it counts as active until the
    /// answer ends (checked and counted at once, so an idle close cannot
    /// come in between).
    fn claim(state: &AppState, session: &str, holder: &Holder, posted: bool) -> Option<Answering> {
        let mut owners = state.mcp.owners();
        // The credential that opened it, not only its agent: another key of
        // the agent, or a token acting for another person, opens its own.
        let entry = owners.get_mut(session).filter(|e| {
            e.owner == holder.owner && e.credential == holder.credential && !e.closing
        })?;
        entry.last_seen = Instant::now();
        entry.open += 1;
        if posted {
            entry.posted += 1;
            entry.longest_timeout_secs = entry.longest_timeout_secs.max(holder.server.timeout_secs);
        }
        Some(Answering {
            state: state.clone(),
            session: session.to_string(),
            posted,
        })
    }

    /// Close the sessions whose client has been silent for longer than the
    /// idle limit, with no answer streaming to it: their upstreams end
    /// (a stdio upstream's processes are killed). What an upstream sends
    /// on its own (logs, progress, list changes) does not count.
    pub async fn close_idle(&self, store: &Store) {
        let is_idle = |e: &SessionEntry| e.open == 0 && e.last_seen.elapsed() >= self.idle;
        let idle: Vec<String> = self
            .owners()
            .iter()
            .filter(|(_, e)| is_idle(e))
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            // A request may have come in since (while an earlier session
            // was being closed): the session is closed only if still idle,
            // and once removed, no request can claim it.
            {
                let mut owners = self.owners();
                if !owners.get(&id).is_some_and(is_idle) {
                    continue;
                }
                owners.remove(&id);
            }
            let id: rmcp::transport::common::server_side_http::SessionId = id.into();
            if let Err(e) = self.sessions.close_session(&id).await {
                tracing::warn!(session = %id, error = %e, "could not close an idle MCP session");
            } else {
                tracing::info!(session = %id, idle_secs = self.idle.as_secs(), "closed an idle MCP session");
            }
        }
        self.check_sessions(store).await;
    }

    /// Every [`CHECK_EVERY`] (and at the next tick after a registration
    /// changed on this node without its sessions being checked), close the
    /// sessions whose key or agent no longer authenticates, or whose
    /// upstream is no longer registered as it was.
    async fn check_sessions(&self, store: &Store) {
        let due = {
            let mut last = self
                .last_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.is_none_or(|at| at.elapsed() >= CHECK_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        let registrations = self.recheck_registrations.swap(false, Ordering::Relaxed);
        if due || registrations {
            self.close_unregistered(store, None).await;
        }
        if due {
            self.close_unauthenticated(store).await;
        }
    }

    /// Close `sessions` (known to the gateway) now, as an idle one is: the
    /// upstream ends (a stdio upstream's processes are killed), an open
    /// event stream ends, the slot is free and the id unknown.
    async fn close_now(&self, sessions: Vec<String>, why: &str) {
        for id in sessions {
            if self.owners().remove(&id).is_none() {
                continue;
            }
            let id: rmcp::transport::common::server_side_http::SessionId = id.into();
            match self.sessions.close_session(&id).await {
                Ok(()) => tracing::info!(session = %id, why, "closed an MCP session"),
                Err(e) => {
                    tracing::warn!(session = %id, why, error = %e, "could not close an MCP session")
                }
            }
        }
    }

    /// The sessions (not those still opening) for which `doomed` holds.
    fn sessions_where(&self, doomed: impl Fn(&SessionEntry) -> bool) -> Vec<String> {
        self.owners()
            .iter()
            .filter(|(id, e)| !id.starts_with(OPENING) && doomed(e))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Close the agents' sessions on this node: they were suspended,
    /// decommissioned, expired or otherwise stopped being active here.
    /// Agents are named by id alone: ids are unique across tenants.
    pub async fn close_agent_sessions(&self, agents: &[String]) {
        if agents.is_empty() {
            return;
        }
        let doomed = self.sessions_where(|e| agents.contains(&e.owner.0));
        self.close_now(doomed, "its agent is no longer active")
            .await;
    }

    /// End `agent`'s `session` on the upstream `server` (name or id), whose
    /// registration is gone: whether there was such a session.
    async fn close_removed(&self, tenant: &str, agent: &str, server: &str, session: &str) -> bool {
        let theirs = self.owners().get(session).is_some_and(|e| {
            e.tenant == tenant
                && e.owner.0 == agent
                && (e.server.name == server || e.server.id == server)
        });
        if theirs {
            self.close_now(
                vec![session.to_string()],
                "its client ended it after its upstream's registration was removed",
            )
            .await;
        }
        theirs
    }

    /// Close the sessions whose key (or delegated token) no longer
    /// authenticates: revoked or expired, or its agent no longer active,
    /// here or on another node. One read per distinct credential (which
    /// reads the agent too); one that cannot be read (the store is down)
    /// keeps its sessions.
    pub async fn close_unauthenticated(&self, store: &Store) {
        let credentials: HashSet<AgentCredential> = self
            .owners()
            .iter()
            .filter(|(id, _)| !id.starts_with(OPENING))
            .map(|(_, e)| e.credential.clone())
            .collect();
        let mut gone = HashSet::new();
        for credential in credentials {
            match credential.still_good(store).await {
                Ok(true) => {}
                Ok(false) => {
                    gone.insert(credential);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not check an MCP session's credential; will retry");
                }
            }
        }
        if gone.is_empty() {
            return;
        }
        let doomed = self.sessions_where(|e| gone.contains(&e.credential));
        self.close_now(doomed, "its key, or its agent, no longer authenticates")
            .await;
    }

    /// Close the sessions (of `tenant`, or all) whose upstream's
    /// registration was removed, or replaced with another transport: one
    /// registration read (through the cache, by name as requests read
    /// them) per distinct upstream. A registration that cannot be read (the
    /// store is down) keeps its sessions.
    async fn close_unregistered(&self, store: &Store, tenant: Option<&str>) {
        let servers: HashMap<(String, String), Arc<McpServer>> = self
            .owners()
            .iter()
            .filter(|(id, e)| !id.starts_with(OPENING) && tenant.is_none_or(|t| t == e.tenant))
            .map(|(_, e)| ((e.tenant.clone(), e.server.id.clone()), e.server.clone()))
            .collect();
        // Per upstream: its transport now, `None` when it is gone.
        let mut changed: HashMap<(String, String), Option<Arc<McpServer>>> = HashMap::new();
        for ((tenant, id), opened) in servers {
            match self.registrations.get(store, &tenant, &opened.name).await {
                Ok(now) if now.id == id && now.transport == opened.transport => {}
                // Transports differ between this upstream's sessions only if
                // it changed while they were open: each is compared below.
                Ok(now) if now.id == id => {
                    changed.insert((tenant, id), Some(now));
                }
                // Removed (and maybe registered anew under the same name).
                Ok(_) => {
                    changed.insert((tenant, id), None);
                }
                Err(e) if e.code == ErrorCode::NotFound => {
                    changed.insert((tenant, id), None);
                }
                Err(e) => {
                    tracing::warn!(server = %opened.name, error = %e, "could not check an MCP session's registration; will retry");
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        let doomed =
            self.sessions_where(
                |e| match changed.get(&(e.tenant.clone(), e.server.id.clone())) {
                    None => false,
                    Some(None) => true,
                    Some(Some(now)) => now.transport != e.server.transport,
                },
            );
        self.close_now(
            doomed,
            "its upstream's registration was removed or its transport changed",
        )
        .await;
    }

    /// Forget the owners of sessions rmcp no longer holds.
    async fn forget_closed(&self) {
        let live: std::collections::HashSet<String> = self
            .sessions
            .sessions
            .read()
            .await
            .keys()
            .map(|k| k.to_string())
            .collect();
        self.owners()
            .retain(|id, _| live.contains(id) || id.starts_with(OPENING));
    }

    /// Hold one of `owner`'s session slots while its session opens (an
    /// upstream may take a while to start): counted and held under one lock,
    /// so sessions opened at once cannot all see a free slot. `Err` with
    /// the sessions open when none is free.
    async fn reserve(state: &AppState, holder: &Holder) -> Result<Opening, usize> {
        let gateway = &state.mcp;
        let owner = &holder.owner;
        let count = |owners: &HashMap<String, SessionEntry>| {
            owners.values().filter(|e| e.owner.0 == owner.0).count()
        };
        if count(&gateway.owners()) >= MAX_SESSIONS_PER_AGENT {
            gateway.forget_closed().await;
        }
        let mut owners = gateway.owners();
        let open = count(&owners);
        if open >= MAX_SESSIONS_PER_AGENT {
            return Err(open);
        }
        let key = format!("{OPENING}{}", uuid::Uuid::now_v7().simple());
        // Open (never idle) until the session it stands for is recorded.
        owners.insert(key.clone(), holder.entry(1));
        Ok(Opening {
            state: state.clone(),
            key,
        })
    }
}

/// What a session slot held by [`Gateway::reserve`] is recorded under: no
/// session id rmcp gives starts so.
const OPENING: &str = "opening:";

/// A session slot held while its session opens; given back when dropped
/// (the session, if one opened, is recorded by then).
struct Opening {
    state: AppState,
    key: String,
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.state.mcp.owners().remove(&self.key);
    }
}

impl Gateway {
    /// A gateway accepting request bodies up to `max_body_bytes` and
    /// trusting, for `https://` upstreams, the system's certificate
    /// authorities and those in `extra_ca_file` (PEM).
    pub fn new(
        max_body_bytes: usize,
        extra_ca_file: Option<&std::path::Path>,
        idle: Duration,
        outbound: &crate::outbound::Outbound,
    ) -> Result<Gateway, String> {
        let shutdown = CancellationToken::new();
        let mut config = StreamableHttpServerConfig::default()
            .disable_allowed_hosts()
            .with_cancellation_token(shutdown.clone())
            .with_max_request_body_bytes(max_body_bytes);
        // Steward authenticates every request with a bearer key, so the
        // loopback-only Host check meant for unauthenticated local servers
        // would only get in the way of real deployments.
        config.sse_keep_alive = Some(std::time::Duration::from_secs(15));
        // rmcp closes a session after a spell without session events (5
        // minutes by default), and a call waiting on its upstream is no
        // event: such a close cut calls off before their own timeout. The
        // gateway closes idle sessions itself (`close_idle`, with `idle`);
        // rmcp's close stays as the safety net for dropped connections,
        // later than both.
        let mut manager = LocalSessionManager::default();
        manager.session_config.keep_alive = Some(
            idle + Duration::from_secs(
                u64::from(steward_store::mcp_servers::MAX_TIMEOUT_SECS) + 60,
            ),
        );
        let sessions = Arc::new(manager);
        Ok(Gateway {
            service: StreamableHttpService::new(
                || Ok(proxy::Proxy::default()),
                sessions.clone(),
                config,
            ),
            shutdown,
            upstream_http: upstream_http_client(extra_ca_file, outbound)?,
            registrations: Default::default(),
            sessions,
            owners: Default::default(),
            idle,
            max_body_bytes,
            outcomes: tokio_util::task::TaskTracker::new(),
            last_checked: Default::default(),
            recheck_registrations: AtomicBool::new(false),
        })
    }

    /// A registration of the tenant was replaced or removed on this node:
    /// forget the cached ones and close, now, this node's sessions whose
    /// upstream is no longer registered or now has another transport (an
    /// open session cannot change upstreams; one whose tools or timeout
    /// changed goes on). A session still opening is checked at the next
    /// tick of the background loop.
    pub async fn registrations_replaced(&self, store: &Store, tenant: &str) {
        self.registrations.forget(tenant);
        self.recheck_registrations.store(true, Ordering::Relaxed);
        self.close_unregistered(store, Some(tenant)).await;
    }

    /// Close every session (the server is stopping).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Once the server has stopped serving: wait (a bounded time) for the
    /// outcome records of calls already answered, which stop lingering
    /// once [`Gateway::shutdown`] is called.
    pub async fn finish_outcomes(&self) {
        self.outcomes.close();
        if tokio::time::timeout(OUTCOMES_GRACE, self.outcomes.wait())
            .await
            .is_err()
        {
            tracing::warn!("MCP call outcomes were still being recorded at shutdown");
        }
    }

    /// Record an answered call's outcome on a task the shutdown waits for.
    pub(crate) fn spawn_outcome<F>(&self, report: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.outcomes.spawn(report);
    }

    /// Resolves when the server starts stopping.
    pub(crate) async fn stopping(&self) {
        self.shutdown.cancelled().await;
    }
}

/// How long a stopping server waits for answered calls' outcome records.
const OUTCOMES_GRACE: Duration = Duration::from_secs(10);

/// Most redirects an upstream request follows.
const MAX_REDIRECTS: usize = 10;

/// How long an idle upstream connection is kept: less than the 5 s after
/// which common servers (Node.js, uvicorn) close idle connections, so a
/// call is not sent on a connection the upstream is closing.
const UPSTREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(4);

/// The client every Streamable HTTP upstream session uses. Unlike rmcp's
/// default client it keeps idle connections (rmcp reads each response
/// stream to its end, so a connection goes back to the pool clean): a tool
/// call reuses a connection instead of opening one. Redirects are followed
/// only when they keep the method and body (307, 308) and stay on the
/// registered origin, so neither the message nor the session id leaves for
/// another host. TLS is verified by the platform's verifier (the system's
/// roots) plus the certificates in `extra_ca_file`. Names resolve only to
/// the addresses `outbound` allows. Public so that the MCP benchmark's bare
/// relay reaches the upstream exactly as the gateway does.
pub fn upstream_http_client(
    extra_ca_file: Option<&std::path::Path>,
    outbound: &crate::outbound::Outbound,
) -> Result<rmcp_reqwest::Client, String> {
    use rmcp_reqwest::redirect::{Attempt, Policy};
    let same_origin = |attempt: Attempt<'_>| {
        let keeps_body = matches!(attempt.status().as_u16(), 307 | 308);
        let first = attempt.previous().first().map(|u| u.origin());
        if !keeps_body || first.as_ref() != Some(&attempt.url().origin()) {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    };
    let extra_roots = match extra_ca_file {
        None => Vec::new(),
        Some(path) => read_ca_file(path)?,
    };
    // reqwest's TLS takes the process's rustls provider; ring is the one
    // this build carries. A provider installed earlier is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    rmcp_reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(UPSTREAM_IDLE)
        .redirect(Policy::custom(same_origin))
        .dns_resolver(Arc::new(outbound.clone()))
        .tls_certs_merge(extra_roots)
        .build()
        .map_err(|e| format!("cannot build the MCP gateway's HTTP client: {e}"))
}

/// The certificates of a PEM file, or why there are none.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<rmcp_reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read mcp_upstream_ca_file {}: {e}", path.display()))?;
    let certs = rmcp_reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "mcp_upstream_ca_file {} is not a PEM certificate bundle: {e}",
            path.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "mcp_upstream_ca_file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// What the gateway learnt about a request before MCP sees it: who calls,
/// for whom, and which upstream.
pub(crate) struct GatewayCall {
    pub state: AppState,
    pub caller: Caller,
    pub server: Arc<McpServer>,
    pub on_behalf_of: Option<String>,
    /// The HTTP request's id and peer address: rmcp serves each message
    /// on a task of its own, outside the request's scope.
    pub request_id: Option<String>,
    pub source: Option<String>,
    /// On a request opening a session: cancelled when its upstream ends,
    /// so that the gateway closes the session.
    pub upstream_ended: Option<CancellationToken>,
}

impl GatewayCall {
    /// Run `work` as part of the HTTP request this call came in with, so
    /// that its audit records carry the request's id and source.
    pub(crate) async fn within<F: std::future::Future>(&self, work: F) -> F::Output {
        use crate::error::{REQUEST_ID, REQUEST_SOURCE};
        let work = REQUEST_SOURCE.scope(self.source.clone(), work);
        match &self.request_id {
            Some(id) => REQUEST_ID.scope(id.clone(), work).await,
            None => work.await,
        }
    }
}

/// How long a session whose upstream has ended stays open, so that the
/// errors its pending requests got reach its client.
const ENDED_GRACE: Duration = Duration::from_secs(1);

/// How often a closing session is checked for answers still being sent.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Close `session` once its upstream has ended (exited, or dropped its
/// side of the session): every request on it could only fail, and it
/// holds one of its agent's session slots. Its client's next request gets
/// 404, on which MCP clients start a new session. A session closed for
/// other reasons (idle, DELETE) is left as it is.
async fn close_when_ended(
    state: AppState,
    session: String,
    owner: (String, String),
    ended: CancellationToken,
) {
    tokio::select! {
        _ = ended.cancelled() => {}
        _ = state.mcp.shutdown.cancelled() => return,
    }
    tokio::time::sleep(ENDED_GRACE).await;
    let gateway = &state.mcp;
    // No further message is taken (the client gets 404); those taken are
    // answered first (an ended upstream fails them at once, a hanging one
    // within its timeout), since a session closed under a request leaves
    // it without an answer and its client waiting.
    let limit = {
        let mut owners = gateway.owners();
        let Some(entry) = owners.get_mut(&session).filter(|e| e.owner == owner) else {
            return;
        };
        entry.closing = true;
        Duration::from_secs(u64::from(entry.longest_timeout_secs)) + ENDED_GRACE
    };
    let started = Instant::now();
    loop {
        let pending = gateway.owners().get(&session).map(|e| e.posted);
        match pending {
            // Closed meanwhile (idle, DELETE, a revoked key).
            None => return,
            Some(0) => break,
            Some(_) if started.elapsed() >= limit => break,
            Some(_) => tokio::time::sleep(DRAIN_POLL).await,
        }
    }
    if gateway.owners().remove(&session).is_none() {
        return;
    }
    let id: rmcp::transport::common::server_side_http::SessionId = session.into();
    match gateway.sessions.close_session(&id).await {
        Ok(()) => tracing::info!(session = %id, "closed an MCP session whose upstream ended"),
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "could not close an MCP session whose upstream ended")
        }
    }
}

/// The `/mcp/{server}` route.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/mcp/{server}", axum::routing::any(endpoint))
        .with_state(state)
}

/// Authenticate (401 with `WWW-Authenticate: Bearer` as MCP clients expect),
/// find the upstream in the agent's tenant, then hand over to rmcp.
async fn endpoint(
    State(state): State<AppState>,
    Path(server): Path<String>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if !matches!(caller, Caller::Agent { .. }) {
        return ApiError::new(
            ErrorCode::Forbidden,
            "the MCP gateway serves agents: connect with an agent key (stw_...)",
        )
        .into_response();
    }
    let session = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let server = match state
        .mcp
        .registrations
        .get(&state.store, caller.tenant_id(), &server)
        .await
    {
        Ok(s) => s,
        // The upstream was removed (on another node, or while the session
        // was opening): its session can still be ended.
        Err(e) if e.code == ErrorCode::NotFound && parts.method == axum::http::Method::DELETE => {
            if let (Some(id), Caller::Agent { agent, .. }) = (&session, &caller)
                && state
                    .mcp
                    .close_removed(caller.tenant_id(), &agent.id, &server, id)
                    .await
            {
                return StatusCode::ACCEPTED.into_response();
            }
            return ApiError(e).into_response();
        }
        Err(e) => return ApiError(e).into_response(),
    };
    let json_post = parts.method == axum::http::Method::POST && is_json(&parts.headers);
    let mut sent = None;
    let body = if json_post {
        let bytes = match axum::body::to_bytes(body, state.mcp.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return not_one_message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    -32600,
                    format!(
                        "the message is larger than {} bytes or was cut off",
                        state.mcp.max_body_bytes
                    ),
                );
            }
        };
        if is_batch(&bytes) {
            return not_one_message(
                StatusCode::BAD_REQUEST,
                -32600,
                "JSON-RPC batches are not supported (MCP removed them in 2025-06-18): \
                 send one message per request"
                    .into(),
            );
        }
        sent = Some(bytes.clone());
        Body::from(bytes)
    } else {
        body
    };
    let on_behalf_of = match parts.headers.get(ON_BEHALF_OF_HEADER) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => {
                return ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("{ON_BEHALF_OF_HEADER}: name a human by id, e-mail or external id"),
                )
                .into_response();
            }
        },
    };
    // A delegated token's person, or the one the header names if the
    // tenant lets agent keys say so.
    let on_behalf_of =
        match crate::delegation::acting_for(&state, &caller, on_behalf_of.as_deref()).await {
            Ok(h) => h,
            Err(e) => return ApiError(e).into_response(),
        };
    let owner = match &caller {
        Caller::Agent { agent, .. } => (agent.id.clone(), server.id.clone()),
        Caller::Token { token, .. } => (token.id.clone(), server.id.clone()),
    };
    // An agent authenticated with a key or a delegated token, so the
    // request holds one.
    let Some(credential) = AgentCredential::of(&state, &parts.headers) else {
        return ApiError::new(ErrorCode::Unauthenticated, "no agent key").into_response();
    };
    let holder = Holder {
        owner: owner.clone(),
        tenant: caller.tenant_id().to_string(),
        server: server.clone(),
        credential,
    };
    // The client is active while it sends and while the answer streams.
    let answering = match &session {
        None => None,
        Some(id) => match Gateway::claim(&state, id, &holder, json_post) {
            Some(answering) => Some(answering),
            // Another agent's session, or one this server does not know
            // (or closed), is answered as rmcp answers an unknown one.
            None => {
                return (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response();
            }
        },
    };
    // Params rmcp would take but misread: an `initialize`'s, and a
    // listing's `cursor` (only a body that names one is read again).
    // Checked once the session is known to be the caller's: a message on
    // another's, or on one closed, is a 404 whatever its params.
    if let Some(bytes) = &sent
        && (session.is_none() || names_a_cursor(bytes))
        && let Some(refusal) = misfit_request(bytes, session.is_none())
    {
        return refusal;
    }
    let closing = parts.method == axum::http::Method::DELETE;
    let opening = if session.is_none() && parts.method == axum::http::Method::POST {
        match Gateway::reserve(&state, &holder).await {
            Ok(opening) => Some(opening),
            Err(open) => {
                return ApiError::new(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "this agent has {open} MCP sessions open, the most allowed \
                     ({MAX_SESSIONS_PER_AGENT}); end one (DELETE with its Mcp-Session-Id) \
                     or let one time out"
                    ),
                )
                .into_response();
            }
        }
    } else {
        None
    };
    let upstream_ended = opening.as_ref().map(|_| CancellationToken::new());
    parts.extensions.insert(Arc::new(GatewayCall {
        state: state.clone(),
        caller,
        server,
        on_behalf_of,
        request_id: crate::error::current_request_id(),
        source: crate::error::current_source(),
        upstream_ended: upstream_ended.clone(),
    }));
    let request = Request::from_parts(parts, body);
    let response = state.mcp.service.handle(request).await.map(Body::new);
    // rmcp says 415 for any body it cannot read as a message (params or a
    // `_meta` that are no object included), but the content type was
    // right: say what was wrong with the body (read again only on this
    // error path, never for a message rmcp took).
    if let Some(sent) = sent
        && response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE
    {
        if let Some(refusal) = misfit_request(&sent, session.is_none()) {
            return refusal;
        }
        return match serde_json::from_slice::<serde::de::IgnoredAny>(&sent) {
            Err(e) => not_one_message(StatusCode::BAD_REQUEST, -32700, format!("parse error: {e}")),
            Ok(_) => not_one_message(
                StatusCode::BAD_REQUEST,
                -32600,
                "the body is JSON but not a JSON-RPC request, notification or response".into(),
            ),
        };
    }
    let answering = match session {
        None => {
            let opened = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match opened {
                Some(id) => {
                    state.mcp.opened(id.clone(), &holder).await;
                    // Recorded: the slot held for it goes.
                    drop(opening);
                    if let Some(ended) = upstream_ended {
                        tokio::spawn(close_when_ended(
                            state.clone(),
                            id.clone(),
                            owner.clone(),
                            ended,
                        ));
                    }
                    Gateway::claim(&state, &id, &holder, true)
                }
                None => None,
            }
        }
        Some(id) if closing && response.status().is_success() => {
            state.mcp.owners().remove(&id);
            answering
        }
        Some(_) => answering,
    };
    match answering {
        Some(answering) => response.map(|body| {
            Body::new(Guarded {
                body,
                _answering: answering,
            })
        }),
        None => response,
    }
}

/// Whether a request says its body is JSON (`application/json`, parameters
/// aside), as a Streamable HTTP POST must.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether a body is a JSON-RPC batch (MCP dropped batching in its
/// 2025-06-18 revision), which rmcp would answer with a bare 415.
fn is_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Whether a body may have a `cursor` member: it names `"cursor"`, or it
/// holds a JSON escape (`\u0063ursor` is a cursor too). Found without
/// parsing the body; a tool call's plain arguments hold neither.
fn names_a_cursor(body: &[u8]) -> bool {
    body.windows(8).any(|w| w == b"\"cursor\"") || body.windows(2).any(|w| w == b"\\u")
}

/// A request whose params rmcp would misread, answered with invalid params
/// and the request's id, saying what does not fit. rmcp reads such params
/// in ways the gateway's own handlers never see: an `initialize` that does
/// not fit is answered as if no session id had been sent, a `_meta` that is
/// not an object fails the whole message with no id, and a listing's
/// `cursor` that is not a string is dropped, so the first page would be
/// answered. `opening` is whether the POST carries no session id (only an
/// `initialize` may then be sent). Anything else is left to rmcp, which
/// answers what does not fit a known method's schema through
/// [`proxy`]'s custom-request handler.
fn misfit_request(body: &[u8], opening: bool) -> Option<Response> {
    use serde_json::Value;
    let message: Value = serde_json::from_slice(body).ok()?;
    let method = message.get("method")?.as_str()?;
    let id = message
        .get("id")
        .filter(|id| id.is_string() || id.is_number())?;
    let params = message.get("params");
    let why = match params {
        Some(Value::Object(params)) => params_misfit(method, params, opening)?,
        None | Some(Value::Null) if method == "initialize" && opening => {
            "params are required (protocolVersion, capabilities, clientInfo)".to_string()
        }
        None | Some(Value::Null) => return None,
        Some(_) => "params must be an object".to_string(),
    };
    // An `initialize` cannot be taken, so its POST is refused (400). A
    // request in a session is answered as any request is, with its error.
    let status = if opening {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Some(rpc_error(
        status,
        id.clone(),
        -32602,
        format!("{method}: {why}"),
    ))
}

/// What in a request's params object rmcp would misread (see
/// [`misfit_request`]), if anything.
fn params_misfit(
    method: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    opening: bool,
) -> Option<String> {
    use rmcp::model::{
        ClientCapabilities, Implementation, InitializeRequestParams, ProtocolVersion,
    };
    use serde_json::Value;
    /// What is wrong with `params[field]` read as a `T`.
    fn unfit<T: serde::de::DeserializeOwned>(
        params: &serde_json::Map<String, Value>,
        field: &str,
    ) -> Option<String> {
        match params.get(field) {
            None => Some(format!("params.{field} is required")),
            Some(v) => serde_json::from_value::<T>(v.clone())
                .err()
                .map(|e| format!("params.{field}: {e}")),
        }
    }
    if params.get("_meta").is_some_and(|m| !m.is_object()) {
        return Some("params._meta must be an object".into());
    }
    match method {
        "initialize" if opening => unfit::<ProtocolVersion>(params, "protocolVersion")
            .or_else(|| unfit::<ClientCapabilities>(params, "capabilities"))
            .or_else(|| unfit::<Implementation>(params, "clientInfo"))
            .or_else(|| {
                serde_json::from_value::<InitializeRequestParams>(Value::Object(params.clone()))
                    .err()
                    .map(|e| format!("params: {e}"))
            }),
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => params
            .get("cursor")
            .filter(|c| !c.is_string() && !c.is_null())
            .map(|_| "params.cursor must be a string: the nextCursor of the page before".into()),
        _ => None,
    }
}

/// A refused POST: an HTTP error with a JSON-RPC error without an id, as the
/// Streamable HTTP transport allows for input a server cannot accept.
fn not_one_message(status: StatusCode, code: i32, message: String) -> Response {
    rpc_error(status, serde_json::Value::Null, code, message)
}

/// An HTTP error carrying a JSON-RPC error answering `id`.
fn rpc_error(status: StatusCode, id: serde_json::Value, code: i32, message: String) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answered call's outcome record lingers until the server stops;
    /// the stopping server cuts the linger short and waits for the record
    /// before it goes on to close the store.
    #[tokio::test]
    async fn a_stopping_gateway_waits_for_lingering_outcomes() {
        let gateway = Gateway::new(1 << 20, None, Duration::from_secs(60), &Default::default());
        let gateway = Arc::new(gateway.expect("a gateway"));
        let recorded = Arc::new(AtomicBool::new(false));
        let (lingering, done) = (gateway.clone(), recorded.clone());
        gateway.spawn_outcome(async move {
            lingering.stopping().await;
            // The write after the linger takes its time.
            tokio::task::yield_now().await;
            done.store(true, Ordering::SeqCst);
        });
        tokio::task::yield_now().await;
        assert!(!recorded.load(Ordering::SeqCst), "lingers until the stop");
        gateway.shutdown();
        gateway.finish_outcomes().await;
        assert!(recorded.load(Ordering::SeqCst));
    }
}
