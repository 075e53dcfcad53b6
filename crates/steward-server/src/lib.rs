//! Steward's HTTP server. [`start`] opens the store, bootstraps the default
//! tenant and the admin token, and serves; [`RunningServer`] is the handle to
//! stop it gracefully.

pub mod apply;
pub mod approvals;
pub mod audit_log;
pub mod auth;
pub mod batch;
pub mod behaviour;
pub mod config;
pub mod decisions;
pub mod delegation;
pub mod engines;
pub mod error;
pub mod mcp;
pub mod metrics;
pub mod outbound;
pub mod quotas;
pub mod routes;
pub mod seed;
pub mod state;
pub mod ui;
pub mod webhooks;

pub use config::{ApprovalsConfig, ClassificationConfig, Config};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use chrono::Utc;
use steward_core::credentials::{SecretHasher, display_prefix, generate_secret};
use steward_core::lifecycle::Transition;
use steward_core::risk::{ClassificationCatalog, ClassificationTiers};
use steward_core::spawn::SpawnLimits;
use steward_core::{ChangeContext, InventoryRules};
use steward_store::Store;
use steward_store::tenants::DEFAULT_TENANT;
use steward_types::{API_TOKEN_PREFIX, ErrorCode};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// What the token list shows as the prefix of an operator-chosen admin
/// token, in place of any of its characters.
pub const CONFIGURED_TOKEN_LABEL: &str = "(configured)";
use tower_http::trace::TraceLayer;

use crate::state::{AppState, Inner};

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl From<steward_core::Error> for StartError {
    fn from(e: steward_core::Error) -> Self {
        StartError(e.message)
    }
}

/// A server that is listening.
pub struct RunningServer {
    addr: SocketAddr,
    generated_admin_token: Option<String>,
    shutdown: watch::Sender<bool>,
    serving: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
    deliverer: JoinHandle<()>,
    store: Store,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bootstrap admin token generated at first start (only then; print it once).
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// The store the server uses (tests inspect it directly).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stop accepting connections, finish in-flight requests, close the store.
    pub async fn shutdown(self) -> Result<(), StartError> {
        let _ = self.shutdown.send(true);
        self.sweeper.abort();
        self.deliverer.abort();
        let served = self
            .serving
            .await
            .map_err(|e| StartError(format!("server task failed: {e}")))?;
        self.store.close().await;
        served.map_err(|e| StartError(format!("server failed: {e}")))
    }

    /// Serve until `signal` arrives, then shut down gracefully.
    pub async fn stop_on(self, signal: ShutdownSignal) -> Result<(), StartError> {
        signal.recv().await;
        tracing::info!("shutting down: finishing requests in flight");
        self.shutdown().await
    }
}

/// Ctrl-C or SIGTERM, listened for from the moment it is made: make it
/// before telling anyone the server is up, so a signal sent at once is not
/// lost to the default action (ending the process).
pub struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Start listening.
    pub fn listen() -> Result<ShutdownSignal, StartError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind).map_err(|e| StartError(format!("cannot listen for {name}: {e}")))
            };
            Ok(ShutdownSignal {
                interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignal {})
    }

    /// Resolves at the first of them.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Build the deployment rules from configuration.
fn rules_from(config: &Config) -> InventoryRules {
    let mut classifications = ClassificationCatalog::default();
    for c in &config.classifications {
        classifications.insert(
            &c.name,
            ClassificationTiers {
                read: c.read,
                write: c.write,
            },
        );
    }
    InventoryRules {
        classifications,
        default_limits: SpawnLimits {
            max_children: config.default_max_children,
            max_depth: config.default_max_depth,
        },
        approval_chains: config.approvals.chains.clone(),
        approval_times: config.approvals.times(),
    }
}

/// Open the store (applying migrations), bootstrap the default tenant and the
/// admin token, bind and serve.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    // Settings that cannot work are refused before anything is touched.
    if config.audit_retention_days == 0 {
        return Err(StartError(
            "audit_retention_days must be at least 1 (entries younger than that keep their payload)".into(),
        ));
    }
    if config.mcp_session_idle_secs == 0 {
        return Err(StartError(
            "mcp_session_idle_secs must be at least 1".into(),
        ));
    }
    let store = Store::open(&config.effective_database_url()).await?;
    let rules = rules_from(&config);
    let now = Utc::now();
    let ctx = ChangeContext::system(DEFAULT_TENANT, "bootstrap", now);
    if store.ensure_tenant(&ctx, DEFAULT_TENANT, "Default").await? && config.seed_examples {
        seed::seed_examples(&store, &ctx, &rules).await?;
    }
    let pepper = store
        .setting_or_init("secret_pepper", || {
            hex_string(&steward_core::credentials::generate_pepper())
        })
        .await?;
    let hasher = SecretHasher::new(pepper.into_bytes());
    let generated_admin_token = match &config.admin_token {
        Some(token) if token.len() < 16 => {
            return Err(StartError(
                "the admin token must be at least 16 characters long".into(),
            ));
        }
        Some(token) => {
            // No part of a secret the operator chose is shown anywhere (a
            // generated token's prefix is random and says only its kind).
            store
                .set_bootstrap_token(&ctx, CONFIGURED_TOKEN_LABEL, &hasher.hash(token), true)
                .await?;
            None
        }
        None if store.has_bootstrap_token().await? => None,
        None => {
            // Shown only if this node's token is the one kept.
            let token = generate_secret(API_TOKEN_PREFIX);
            store
                .set_bootstrap_token(&ctx, &display_prefix(&token), &hasher.hash(&token), false)
                .await?
                .then_some(token)
        }
    };

    let sweep_every = Duration::from_secs(config.expiry_sweep_secs.max(1));
    let audit =
        audit_log::AuditLog::start(&store, config.audit_signing_key_file.as_deref()).await?;
    let outbound = outbound::Outbound::new(&config.outbound).map_err(StartError)?;
    let webhooks = webhooks::Webhooks::new(outbound.clone()).map_err(StartError)?;
    let mcp = mcp::Gateway::new(
        config.max_body_bytes,
        config.mcp_upstream_ca_file.as_deref(),
        Duration::from_secs(config.mcp_session_idle_secs),
        &outbound,
    )
    .map_err(StartError)?;
    // Bound last: once a client can connect, nothing left can fail.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    // Streamed responses (MCP's server-sent events) are written in small
    // pieces; without TCP_NODELAY each waits for the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let state = AppState(Arc::new(Inner {
        store: store.clone(),
        hasher,
        rules,
        config,
        engines: Default::default(),
        tokens: Default::default(),
        approvals: Default::default(),
        webhooks,
        outbound,
        quotas: Default::default(),
        audit,
        mcp,
    }));
    let app = router(state.clone());

    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let gateway = state.clone();
    let outcomes = state.clone();
    let serving = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
            // Open MCP streams would otherwise keep the drain waiting.
            gateway.mcp.shutdown();
        })
        .await;
        // Records of calls already answered are written before the store
        // closes.
        outcomes.mcp.finish_outcomes().await;
        served
    });
    let deliverer = tokio::spawn(state.webhooks.clone().run(store.clone()));
    let sweeper = tokio::spawn(background(state, sweep_every));
    tracing::info!(%addr, store = store.backend().as_str(), "steward listening");
    Ok(RunningServer {
        addr,
        generated_admin_token,
        shutdown,
        serving,
        sweeper,
        deliverer,
        store,
    })
}

/// The complete application: API routes, OpenAPI, metrics and middleware.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let (api, doc) = routes::api(state.clone());
    let api = api
        .merge(mcp::router(state.clone()))
        .merge(ui::router(state));
    let doc = Arc::new(doc);
    let request_id = HeaderName::from_static("x-request-id");
    api.route("/openapi.json", axum::routing::get(move || {
        let doc = doc.clone();
        async move { axum::Json(doc.as_ref().clone()) }
    }))
    .route("/metrics", axum::routing::get(metrics::render))
    .fallback(error::route_not_found)
    .method_not_allowed_fallback(error::method_not_allowed)
    .layer(DefaultBodyLimit::max(max_body))
    .layer(middleware::from_fn(metrics::track))
    .layer(middleware::from_fn(scope_request_id))
    .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let id = req.headers().get("x-request-id").and_then(request_id_text).unwrap_or_default();
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
    }))
    .layer(PropagateRequestIdLayer::new(request_id.clone()))
    .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
    .layer(middleware::from_fn(drop_unreadable_request_id))
}

/// A request id is any text (AuthZEN: "an arbitrary string", echoed as
/// sent): visible ASCII, or UTF-8 beyond it (`café`). One whose bytes are
/// not UTF-8 (RFC 9110's `obs-text` in another encoding) or that holds a
/// control character is dropped before one is generated in its place:
/// echoed as sent, it would have been missing from error bodies and audit
/// records, which hold text.
async fn drop_unreadable_request_id(mut req: Request, next: Next) -> Response {
    if let Some(id) = req.headers().get("x-request-id")
        && request_id_text(id).is_none()
    {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

/// A request id header's text, if it is text without control characters
/// other than a tab (which a header value may hold).
fn request_id_text(value: &axum::http::HeaderValue) -> Option<&str> {
    std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|text| !text.chars().any(|c| c.is_control() && c != '\t'))
}

/// Make the request id available to error bodies and audit records.
async fn scope_request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(request_id_text)
        .unwrap_or_default()
        .to_string();
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    error::REQUEST_SOURCE
        .scope(source, error::REQUEST_ID.scope(id, next.run(req)))
        .await
}

/// Background work: pick up policy changes made on other nodes, sign audit
/// checkpoints, expire approvals and close idle MCP sessions every second;
/// expire agents whose expiry time has passed, close due recertification
/// campaigns and settle unreported reservations every `sweep_every`; read
/// new audit entries into behavioural baselines every
/// `behaviour_interval_secs`.
async fn background(state: AppState, sweep_every: Duration) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_sweep = std::time::Instant::now() - sweep_every;
    // The first pruning runs a day after start, then daily.
    let mut last_prune = std::time::Instant::now();
    // The behavioural pass can read a long history at once: it runs in a
    // task of its own so the one-second work below is never held up.
    let behaviour_every = Duration::from_secs(state.config.behaviour_interval_secs);
    let _behaviour = (!behaviour_every.is_zero())
        .then(|| AbortOnDrop(tokio::spawn(behaviour_loop(state.clone(), behaviour_every))));
    loop {
        ticker.tick().await;
        state.engines.refresh(&state.store).await;
        if let Err(e) = state.audit.checkpoint(&state.store).await {
            tracing::warn!(error = %e, "could not sign an audit checkpoint; will retry");
        }
        if last_prune.elapsed() >= Duration::from_secs(24 * 3600) {
            last_prune = std::time::Instant::now();
            let now = Utc::now();
            let ctx = ChangeContext::system(DEFAULT_TENANT, "retention", now);
            match state
                .store
                .prune_audit(&ctx, routes::audit::retention_cutoff(&state, now))
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(pruned = n, "pruned audit payloads past retention")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "audit retention pruning failed; will retry tomorrow")
                }
            }
        }
        approvals::expire_due(&state, Utc::now()).await;
        state.mcp.close_idle(&state.store).await;
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = std::time::Instant::now();
            match expire_due(&state.store, Utc::now()).await {
                Ok(expired) => state.mcp.close_agent_sessions(&expired).await,
                Err(e) => tracing::warn!(error = %e, "expiry sweep failed; will retry"),
            }
            match state.store.close_due_campaigns(Utc::now()).await {
                Ok(closed) => {
                    for c in closed {
                        tracing::info!(campaign = %c.name, overdue = c.counts.overdue, "closed a recertification campaign");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "closing due recertifications failed; will retry")
                }
            }
            match state.store.settle_expired(Utc::now()).await {
                Ok(n) if n > 0 => tracing::info!(
                    settled = n,
                    "settled unreported reservations at their estimates"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "settling unreported reservations failed; will retry")
                }
            }
        }
    }
}

/// Aborts its task when dropped (with the background loop that owns it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Read new audit entries into behavioural baselines every `every`.
async fn behaviour_loop(state: AppState, every: Duration) {
    let node = format!("node_{}", uuid::Uuid::now_v7().simple());
    let lease = chrono::Duration::seconds(
        i64::try_from(every.as_secs().saturating_mul(3))
            .unwrap_or(i64::MAX)
            .clamp(30, 3600),
    );
    let mut ticker = tokio::time::interval(every);
    // A pass that outlasts the interval is followed by a full interval's
    // rest, not by passes back to back.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match behaviour::run_pass(&state.store, &node, Utc::now(), lease).await {
            Ok(pass) => {
                let suspended: Vec<String> = pass
                    .raised
                    .iter()
                    .filter(|a| a.suspended)
                    .map(|a| a.agent_id.clone())
                    .collect();
                state.mcp.close_agent_sessions(&suspended).await;
            }
            Err(e) => tracing::warn!(error = %e, "behavioural baseline pass failed; will retry"),
        }
    }
}

/// Agents one expiry sweep handles at most; the next sweep takes the rest.
const EXPIRY_SWEEP_LIMIT: u32 = 1000;

/// One expiry sweep at `now`; returns the ids that expired.
pub async fn expire_due(
    store: &Store,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<String>, steward_core::Error> {
    let mut expired = Vec::new();
    for (tenant, id) in store.agents_due_to_expire(now, EXPIRY_SWEEP_LIMIT).await? {
        let ctx = ChangeContext::system(&tenant, "expiry", now);
        match store
            .transition_agent(
                &ctx,
                &id,
                Transition::Expire,
                Some("expiry time passed".into()),
            )
            .await
        {
            Ok(_) => expired.push(id),
            Err(e) if e.code == ErrorCode::InvalidTransition => {}
            Err(e) => return Err(e),
        }
    }
    Ok(expired)
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
