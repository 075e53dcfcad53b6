//! The upstream half of a gateway session: the child process or Streamable
//! HTTP client it talks to, what the upstream asks of and tells the
//! downstream client ([`Relay`]), and requests sent up with their progress
//! and cancellation ([`Session::forward`]). An upstream that fails or does
//! not answer within the server's timeout gives an MCP error.

// Logging levels and resource subscriptions are deprecated in the newest
// protocol version, but the upstreams speak older ones; relay them as is.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, ClientNotification, ClientRequest,
    ClientResult, InitializeRequestParams, ProgressToken, ServerNotification, ServerRequest,
    ServerResult,
};
use rmcp::model::{ClientJsonRpcMessage, ErrorCode, PingRequest, RequestId, ServerJsonRpcMessage};
use rmcp::service::{
    ClientInitializeError, NotificationContext, Peer, PeerRequestOptions, RequestContext,
    RoleClient, RoleServer, RunningService, ServiceError,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use rmcp::{ErrorData as McpError, Service, ServiceExt};
use steward_types::{McpServer, McpTransport};

use super::GatewayCall;
use super::proxy::agent_id;
use super::stdio::{MAX_MESSAGE_BYTES, StdioUpstream};

/// How long a ping may take to tell whether an HTTP upstream that refused a
/// request still takes the session (at most the registration's timeout).
const PING_PATIENCE: Duration = Duration::from_secs(5);

/// Upstream progress tokens → the downstream's, for relaying progress. An
/// async lock: a request with a progress token holds it from before it is
/// sent until its token is mapped, so progress the upstream sends at once
/// waits for the mapping rather than being dropped as unknown.
type ProgressMap = Arc<tokio::sync::Mutex<HashMap<ProgressToken, ProgressToken>>>;

/// The upstream half of a session.
pub(super) struct Session {
    pub(super) server: Arc<McpServer>,
    pub(super) agent_id: String,
    pub(super) upstream: RunningService<RoleClient, Relay>,
    progress: ProgressMap,
    /// Set when a stdio upstream ended for a message over
    /// [`MAX_MESSAGE_BYTES`].
    overflowed: Arc<AtomicBool>,
    /// Cancelled when the upstream ends: a request waiting on it fails
    /// then, not once rmcp has wound the upstream down (which gives a
    /// stdio server seconds to exit).
    ended: tokio_util::sync::CancellationToken,
    /// Says the upstream has gone when the session goes (the gateway
    /// stops watching it then).
    _ended: tokio_util::sync::DropGuard,
}

/// An upstream transport that says when it has ended: the upstream closed
/// it (a stdio server exited, an HTTP server dropped the session) or it
/// was dropped with its session. The gateway then closes the downstream
/// session, whose every request could only fail.
struct Watched<T> {
    inner: T,
    ended: tokio_util::sync::CancellationToken,
}

impl<T: rmcp::transport::Transport<RoleClient>> rmcp::transport::Transport<RoleClient>
    for Watched<T>
{
    type Error = T::Error;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await;
        if message.is_none() {
            self.ended.cancel();
        }
        message
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.ended.cancel();
        self.inner.close().await
    }
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

/// The HTTP client of an upstream session: rmcp's, except that a JSON-RPC
/// error without an id answering a request is taken as that request's
/// answer. A server that cannot take a request (it does not know the
/// session, a header is missing) may answer so, with an HTTP error; rmcp
/// would hand the error on matched to no request, and the request would
/// wait out the whole timeout.
///
/// A broken event stream is reported too: rmcp reconnects the upstream's
/// stream on its own and, when the upstream refuses (it restarted and
/// knows the session no more, or it is down), only logs it. A session whose
/// client only listens would then never learn that nothing more can come.
/// The failure wakes [`watch_stream`], which asks the upstream.
///
/// And the upstream's session is ended by the gateway, not by rmcp: see
/// [`UpstreamSession`].
#[derive(Clone)]
struct UpstreamHttp {
    client: rmcp_reqwest::Client,
    stream_failed: Arc<tokio::sync::Notify>,
    session: Arc<UpstreamSession>,
}

/// The upstream's side of a gateway session over HTTP, as the gateway ends
/// it: the endpoint, the session id the upstream gave, and the protocol
/// version the session speaks. rmcp sends its `DELETE` once, as its
/// transport stops, and not at all if the transport failed first; an
/// upstream out of reach at that moment would keep the session. Instead
/// the gateway sends it on a task of its own ([`end_upstream_session`],
/// tried again while the upstream cannot be reached), so the client's own
/// `DELETE` never waits for it: when rmcp asks, or else when the last
/// handle on this client goes with the transport.
struct UpstreamSession {
    client: rmcp_reqwest::Client,
    known: std::sync::Mutex<Option<KnownSession>>,
}

/// What ending an upstream session takes.
struct KnownSession {
    uri: Arc<str>,
    id: Arc<str>,
    headers: HashMap<HeaderName, HeaderValue>,
}

impl UpstreamSession {
    fn known(&self) -> std::sync::MutexGuard<'_, Option<KnownSession>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Note the session `id` at `uri`, and the protocol version `headers`
    /// it is spoken with once they are sent.
    fn note(&self, uri: &Arc<str>, id: &str, headers: &HashMap<HeaderName, HeaderValue>) {
        let version = HeaderName::from_static("mcp-protocol-version");
        let mut known = self.known();
        let session = known.get_or_insert_with(|| KnownSession {
            uri: uri.clone(),
            id: id.into(),
            headers: HashMap::new(),
        });
        if let Some(value) = headers.get(&version) {
            session.headers.insert(version, value.clone());
        }
    }

    /// End the session upstream, once: on a task of its own.
    fn end(&self) {
        let Some(session) = self.known().take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(end_upstream_session(self.client.clone(), session));
    }
}

impl Drop for UpstreamSession {
    fn drop(&mut self) {
        self.end();
    }
}

/// How long the gateway waits between attempts to end a session on an
/// upstream that could not be reached (or answered with a server error):
/// about half a minute in all, as a network that drops for a while comes
/// back.
const END_RETRIES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// `DELETE` the upstream `session`, trying again (after each of
/// [`END_RETRIES`]) while the upstream cannot be reached or fails; any
/// other answer (ended, unknown there, no such method) is final.
async fn end_upstream_session(client: rmcp_reqwest::Client, session: KnownSession) {
    let mut waits = END_RETRIES.iter();
    loop {
        let sent = client.delete_session(
            session.uri.clone(),
            session.id.clone(),
            None,
            session.headers.clone(),
        );
        let why = match tokio::time::timeout(PING_PATIENCE, sent).await {
            Ok(Ok(())) => return,
            Ok(Err(StreamableHttpError::Client(e)))
                if e.status().is_some_and(|s| !s.is_server_error()) =>
            {
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", PING_PATIENCE.as_secs()),
        };
        let Some(wait) = waits.next() else {
            tracing::info!(uri = %session.uri, why, "could not end an MCP session upstream; gave up");
            return;
        };
        tracing::debug!(uri = %session.uri, why, "could not end an MCP session upstream yet");
        tokio::time::sleep(*wait).await;
    }
}

impl UpstreamHttp {
    /// `answer` to a request for the session's event stream, the failure
    /// reported. An upstream that offers no such stream has not failed.
    fn streamed(
        &self,
        session_id: Option<&Arc<str>>,
        answer: Result<SseStream, StreamableHttpError<rmcp_reqwest::Error>>,
    ) -> Result<SseStream, StreamableHttpError<rmcp_reqwest::Error>> {
        if session_id.is_some()
            && answer
                .as_ref()
                .is_err_and(|e| !matches!(e, StreamableHttpError::ServerDoesNotSupportSse))
        {
            self.stream_failed.notify_one();
        }
        answer
    }
}

type HttpPost = Result<StreamableHttpPostResponse, StreamableHttpError<rmcp_reqwest::Error>>;

/// `answer` to `message`, an error without an id given the request's id.
fn answering(message_id: Option<RequestId>, answer: HttpPost) -> HttpPost {
    match (message_id, answer) {
        (
            Some(id),
            Ok(StreamableHttpPostResponse::Json(ServerJsonRpcMessage::Error(mut error), session)),
        ) if error.id.is_none() => {
            error.id = Some(id);
            Ok(StreamableHttpPostResponse::Json(
                ServerJsonRpcMessage::Error(error),
                session,
            ))
        }
        (_, answer) => answer,
    }
}

fn request_id(message: &ClientJsonRpcMessage) -> Option<RequestId> {
    match message {
        ClientJsonRpcMessage::Request(r) => Some(r.id.clone()),
        _ => None,
    }
}

impl StreamableHttpClient for UpstreamHttp {
    type Error = rmcp_reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpPost {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> HttpPost {
        let id = request_id(&message);
        if let Some(session) = &session_id {
            self.session.note(&uri, session, &custom_headers);
        }
        let answer = self
            .client
            .post_message_with_response_limits(
                uri.clone(),
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await;
        // The session the upstream gives in answer to `initialize`.
        if let Ok(
            StreamableHttpPostResponse::Json(_, Some(session))
            | StreamableHttpPostResponse::Sse(_, Some(session)),
        ) = &answer
        {
            self.session.note(&uri, session, &HashMap::new());
        }
        answering(id, answer)
    }

    /// rmcp ends the session as its transport stops: the gateway does,
    /// without waiting (see [`UpstreamSession`]).
    async fn delete_session(
        &self,
        _uri: Arc<str>,
        _session_id: Arc<str>,
        _auth_header: Option<String>,
        _custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.session.end();
        Ok(())
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<SseStream, StreamableHttpError<Self::Error>> {
        let answer = self
            .client
            .get_stream(
                uri,
                session_id.clone(),
                last_event_id,
                auth_header,
                custom_headers,
            )
            .await;
        self.streamed(session_id.as_ref(), answer)
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<SseStream, StreamableHttpError<Self::Error>> {
        let answer = self
            .client
            .get_stream_with_max_sse_event_size(
                uri,
                session_id.clone(),
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.streamed(session_id.as_ref(), answer)
    }
}

type SseStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<sse_stream::Sse, SseError>> + Send + 'static>,
>;

/// What a request that failed upstream answers, in words a person can act
/// on (see [`Session::failed`]).
fn upstream_error(server: &McpServer, overflowed: bool, e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        ServiceError::Timeout { timeout } => McpError::internal_error(
            format!(
                "the upstream MCP server '{}' did not answer within {} s",
                server.name,
                timeout.as_secs()
            ),
            None,
        ),
        ServiceError::Cancelled { .. } => {
            McpError::internal_error("the request was cancelled", None)
        }
        ServiceError::TransportClosed if overflowed => McpError::internal_error(
            format!(
                "the upstream MCP server '{}' sent a message over {} MiB, more than the \
                 gateway reads from a stdio server: this session is being closed; start a new one",
                server.name,
                MAX_MESSAGE_BYTES >> 20
            ),
            None,
        ),
        ServiceError::TransportClosed => McpError::internal_error(
            format!(
                "the upstream MCP server '{}' has ended: this session is being closed; start a new one",
                server.name
            ),
            None,
        ),
        ServiceError::TransportSend(cause) => McpError::internal_error(
            format!(
                "the upstream MCP server '{}' has ended ({}): this session is being closed; start a new one",
                server.name,
                transport_cause(&cause)
            ),
            None,
        ),
        other => McpError::internal_error(
            format!("the upstream MCP server '{}' failed: {other}", server.name),
            None,
        ),
    }
}

/// Why an upstream session did not start, in words a person can act on.
/// rmcp wraps the HTTP client's error (a refused connection, an untrusted
/// certificate) without naming it as a source, so it is unwrapped here.
fn start_error(e: &ClientInitializeError) -> String {
    let ClientInitializeError::TransportError { error, context } = e else {
        return e.to_string();
    };
    format!("{} ({context})", transport_cause(error))
}

/// What went wrong in a transport, without the transport's type name.
fn transport_cause(error: &rmcp::transport::DynamicTransportError) -> String {
    match error
        .error
        .downcast_ref::<StreamableHttpError<rmcp_reqwest::Error>>()
    {
        Some(StreamableHttpError::Client(http)) => with_causes(http),
        _ => with_causes(error.error.as_ref()),
    }
}

/// An error and each error that caused it, as one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// The downstream client's parameters as the upstream is told them. The
/// directories an upstream may touch are the registration's, never the
/// agent's: a filesystem server takes a client's roots as its sandbox. So
/// the upstream is not told the client has roots, and asks for none
/// ([`Relay`] refuses if it does). Nor that it takes tasks: a task's result
/// comes later, in a notification, past the checks and the outcome record
/// a call's answer goes through (the gateway relays no `tasks/*`).
fn introduction(mut params: InitializeRequestParams) -> InitializeRequestParams {
    params.capabilities.roots = None;
    if let Some(extensions) = params.capabilities.extensions.as_mut() {
        extensions.remove(rmcp::model::TASKS_EXTENSION_ID);
        if extensions.is_empty() {
            params.capabilities.extensions = None;
        }
    }
    params
}

/// Start the upstream session for `call.server`, introducing ourselves with
/// the downstream client's parameters.
pub(super) async fn connect(
    call: &GatewayCall,
    params: InitializeRequestParams,
    downstream: Peer<RoleServer>,
) -> Result<Session, McpError> {
    let server = call.server.clone();
    let progress = ProgressMap::default();
    let overflowed = Arc::new(AtomicBool::new(false));
    let params = introduction(params);
    let relay = Relay {
        downstream,
        client: params,
        progress: progress.clone(),
    };
    let timeout = Duration::from_secs(u64::from(server.timeout_secs));
    // Cancelled when the upstream ends, or (the guard) when this session
    // goes or never starts.
    let ended = call.upstream_ended.clone().unwrap_or_default();
    let ended_guard = ended.clone().drop_guard();
    let unreachable = |why: String| {
        McpError::internal_error(
            format!(
                "the upstream MCP server '{}' is unavailable: {why}",
                server.name
            ),
            None,
        )
    };
    let mut stream_failed = None;
    let started = match &server.transport {
        McpTransport::Stdio { command, args, env } => {
            let transport = StdioUpstream::spawn(command, args, env, overflowed.clone())
                .map_err(|e| unreachable(format!("cannot start '{command}': {e}")))?;
            let transport = Watched {
                inner: transport,
                ended: ended.clone(),
            };
            tokio::time::timeout(timeout, relay.serve(transport)).await
        }
        McpTransport::StreamableHttp { url } => {
            // A name is checked as it resolves; an address written in the
            // URL (registered before the operator refused its range) here.
            if let Some(why) = call.state.outbound.check_url(url) {
                return Err(unreachable(why));
            }
            let http = &call.state.mcp.upstream_http;
            let client = UpstreamHttp {
                client: http.clone(),
                stream_failed: Arc::default(),
                session: Arc::new(UpstreamSession {
                    client: http.clone(),
                    known: Default::default(),
                }),
            };
            stream_failed = Some(client.stream_failed.clone());
            let transport = StreamableHttpClientTransport::with_client(
                client,
                // An upstream that drops the session ends this one: a new
                // upstream session opened behind the client's back would
                // have lost the state the client's session had there.
                StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .reinit_on_expired_session(false),
            );
            let transport = Watched {
                inner: transport,
                ended: ended.clone(),
            };
            tokio::time::timeout(timeout, relay.serve(transport)).await
        }
    };
    let upstream = match started {
        Ok(Ok(running)) => running,
        Ok(Err(e)) => return Err(unreachable(start_error(&e))),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer to initialize within {} s",
                timeout.as_secs()
            )));
        }
    };
    if let Some(failed) = stream_failed {
        tokio::spawn(watch_stream(
            server.name.clone(),
            upstream.peer().clone(),
            failed,
            ended.clone(),
            timeout.min(PING_PATIENCE),
        ));
    }
    Ok(Session {
        server,
        agent_id: agent_id(call).to_string(),
        upstream,
        progress,
        overflowed,
        ended,
        _ended: ended_guard,
    })
}

impl Session {
    /// What a request that failed upstream answers. An upstream that can
    /// no longer be sent to (an HTTP server that is down or has dropped this
    /// session, a stdio server whose stdin is gone) has ended as far as this
    /// session goes: it is closed, and the client's next request starts a
    /// new one.
    fn failed(&self, e: ServiceError) -> McpError {
        if matches!(
            e,
            ServiceError::TransportSend(_) | ServiceError::TransportClosed
        ) {
            self.ended.cancel();
        }
        upstream_error(&self.server, self.overflowed.load(Ordering::Acquire), e)
    }

    fn over_http(&self) -> bool {
        matches!(self.server.transport, McpTransport::StreamableHttp { .. })
    }

    /// What a request an HTTP upstream refused answers. The upstream may
    /// have lost this session: it restarted, say, and answers the old
    /// session id with an error rather than `404`. A ping, which any
    /// session answers, tells: refused too, the session has ended, as for
    /// an upstream that went away. Otherwise the refusal is the answer.
    ///
    /// The same holds for a request the upstream refused over HTTP (a
    /// `429`, a `503` without a JSON-RPC body) or whose answer stream
    /// broke: ended only if the ping fails too; otherwise the request
    /// failed, and the session goes on.
    async fn refused(
        &self,
        peer: &Peer<RoleClient>,
        refusal: ServiceError,
        timeout: Duration,
    ) -> McpError {
        // An unknown method or params that do not fit were read in a live
        // session: nothing to ask.
        if let ServiceError::McpError(e) = &refusal
            && matches!(
                e.code,
                ErrorCode::METHOD_NOT_FOUND | ErrorCode::INVALID_PARAMS
            )
        {
            return e.clone();
        }
        match session_lost(peer, timeout.min(PING_PATIENCE)).await {
            Some(Lost::Refused(lost)) => {
                self.ended.cancel();
                McpError::internal_error(
                    format!(
                        "the upstream MCP server '{}' has ended (it no longer takes this \
                         session: {}): this session is being closed; start a new one",
                        self.server.name, lost.message
                    ),
                    None,
                )
            }
            Some(Lost::Unreachable(e)) => self.failed(e),
            None => match refusal {
                ServiceError::McpError(e) => e,
                ServiceError::TransportSend(cause) => McpError::internal_error(
                    format!(
                        "the upstream MCP server '{}' refused the request ({}); the session goes on",
                        self.server.name,
                        transport_cause(&cause)
                    ),
                    None,
                ),
                _ => McpError::internal_error(
                    format!(
                        "the upstream MCP server '{}' broke off its answer: the request may or may \
                         not have run; the session goes on",
                        self.server.name
                    ),
                    None,
                ),
            },
        }
    }

    /// Send `request` upstream, relaying progress and cancellation.
    pub(super) async fn forward(
        &self,
        timeout_secs: u32,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        // The registration's timeout as it is now, not as it was when the
        // session opened: an admin lowering it for a hanging upstream
        // means the calls in flight on open sessions too.
        let timeout = Duration::from_secs(u64::from(timeout_secs));
        // A session whose upstream has ended sends nothing more: the
        // request could run and still be answered as failed.
        if self.ended.is_cancelled() {
            return Err(self.failed(ServiceError::TransportClosed));
        }
        let peer = self.upstream.peer().clone();
        let downstream_token = context.meta.get_progress_token();
        // rmcp picks the upstream token as it sends.
        let mut mapping = match downstream_token {
            Some(_) => Some(self.progress.lock().await),
            None => None,
        };
        let handle = match peer
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
        {
            Ok(handle) => handle,
            Err(e @ (ServiceError::TransportSend(_) | ServiceError::TransportClosed))
                if self.over_http() =>
            {
                return Err(self.refused(&peer, e, timeout).await);
            }
            Err(e) => return Err(self.failed(e)),
        };
        let id = handle.id.clone();
        let upstream_token = handle.progress_token.clone();
        if let (Some(map), Some(token)) = (mapping.as_mut(), &downstream_token) {
            map.insert(upstream_token.clone(), token.clone());
        }
        drop(mapping);
        // The upstream is told to stop on its own time: over HTTP that is a
        // request of its own, which a hung upstream holds for seconds, and
        // the answer does not wait for it.
        let cancel = |why: &str| {
            let cancel = CancelledNotification::new(CancelledNotificationParam::new(
                Some(id.clone()),
                Some(why.into()),
            ));
            let peer = peer.clone();
            tokio::spawn(async move {
                let _ = peer
                    .send_notification(ClientNotification::CancelledNotification(cancel))
                    .await;
            });
        };
        let result = tokio::select! {
            // An answer that came before the upstream ended is its answer.
            biased;
            r = tokio::time::timeout(timeout, handle.await_response()) => match r {
                Ok(Err(
                    e @ (ServiceError::McpError(_)
                    | ServiceError::TransportSend(_)
                    | ServiceError::TransportClosed),
                )) if self.over_http() => Err(self.refused(&peer, e, timeout).await),
                Ok(r) => r.map_err(|e| self.failed(e)),
                Err(_) => {
                    cancel("timed out at the gateway");
                    Err(self.failed(ServiceError::Timeout { timeout }))
                }
            },
            _ = self.ended.cancelled() => Err(self.failed(ServiceError::TransportClosed)),
            _ = context.ct.cancelled() => {
                cancel("cancelled by the client");
                Err(McpError::internal_error("the request was cancelled", None))
            }
        };
        if downstream_token.is_some() {
            self.progress.lock().await.remove(&upstream_token);
        }
        result
    }
}

/// How an upstream showed it has lost a session.
enum Lost {
    /// It answered a ping with an error: it no longer takes the session.
    Refused(McpError),
    /// It could not be sent the ping, or hung up on it.
    Unreachable(ServiceError),
}

/// Whether the upstream behind `peer` has lost the session, by a ping any
/// live session answers. `None`: it answered, or did not within
/// `patience` (a busy upstream has not lost anything), or it does not
/// know pings.
async fn session_lost(peer: &Peer<RoleClient>, patience: Duration) -> Option<Lost> {
    let ping = peer.send_request(ClientRequest::PingRequest(PingRequest::default()));
    match tokio::time::timeout(patience, ping).await {
        Ok(Err(ServiceError::McpError(lost))) if lost.code != ErrorCode::METHOD_NOT_FOUND => {
            Some(Lost::Refused(lost))
        }
        Ok(Err(e @ (ServiceError::TransportSend(_) | ServiceError::TransportClosed))) => {
            Some(Lost::Unreachable(e))
        }
        _ => None,
    }
}

/// How long an HTTP upstream whose event stream failed may stay out of
/// reach before its session ends: pings after each of these waits (7 s in
/// all), as a network that drops for a moment is not an upstream gone.
const STREAM_GRACE: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Each time the event stream of an HTTP upstream fails, ask it whether it
/// still takes the session: refused, or still out of reach after
/// [`STREAM_GRACE`], the session has ended, as if a request had found so,
/// and the gateway closes it. Ends with the session.
async fn watch_stream(
    server: String,
    peer: Peer<RoleClient>,
    stream_failed: Arc<tokio::sync::Notify>,
    ended: tokio_util::sync::CancellationToken,
    patience: Duration,
) {
    'watch: loop {
        tokio::select! {
            _ = ended.cancelled() => return,
            _ = stream_failed.notified() => {}
        }
        let mut graces = STREAM_GRACE.iter();
        let why = loop {
            match session_lost(&peer, patience).await {
                None => continue 'watch,
                Some(Lost::Refused(e)) => {
                    break format!("it no longer takes the session: {}", e.message);
                }
                Some(Lost::Unreachable(e)) => {
                    let Some(wait) = graces.next() else {
                        let waited: Duration = STREAM_GRACE.iter().sum();
                        break format!("it could not be reached for {} s: {e}", waited.as_secs());
                    };
                    tokio::select! {
                        _ = ended.cancelled() => return,
                        _ = tokio::time::sleep(*wait) => {}
                    }
                }
            }
        };
        tracing::info!(%server, why, "an MCP upstream's event stream failed; the session has ended");
        ended.cancel();
        return;
    }
}

/// The upstream client: relays what the upstream asks of and tells the
/// downstream client.
pub(super) struct Relay {
    downstream: Peer<RoleServer>,
    client: InitializeRequestParams,
    progress: ProgressMap,
}

impl Service<RoleClient> for Relay {
    async fn handle_request(
        &self,
        request: ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, McpError> {
        let _ = context;
        if matches!(request, ServerRequest::ListRootsRequest(_)) {
            return Err(McpError::invalid_request(
                "roots are not relayed: the directories an upstream works in are set where it is registered in Steward",
                None,
            ));
        }
        self.downstream
            .send_request(request)
            .await
            .map_err(|e| match e {
                ServiceError::McpError(e) => e,
                other => {
                    McpError::internal_error(format!("the client did not answer: {other}"), None)
                }
            })
    }

    async fn handle_notification(
        &self,
        notification: ServerNotification,
        context: NotificationContext<RoleClient>,
    ) -> Result<(), McpError> {
        let _ = context;
        let notification = match notification {
            ServerNotification::ProgressNotification(mut n) => {
                let mapped = self
                    .progress
                    .lock()
                    .await
                    .get(&n.params.progress_token)
                    .cloned();
                let Some(token) = mapped else {
                    return Ok(());
                };
                n.params.progress_token = token;
                ServerNotification::ProgressNotification(n)
            }
            // Upstream request ids mean nothing downstream.
            ServerNotification::CancelledNotification(_) => return Ok(()),
            // No task is relayed (see `connect`), so none reports.
            ServerNotification::TaskStatusNotification(_) => return Ok(()),
            other => other,
        };
        // A client that went away is not the upstream's problem.
        let _ = self.downstream.send_notification(notification).await;
        Ok(())
    }

    fn get_info(&self) -> InitializeRequestParams {
        self.client.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{HttpPost, answering, introduction, with_causes};

    /// The upstream hears neither of the client's roots nor of its taking
    /// tasks; the rest of what the client said passes on.
    #[test]
    fn the_upstream_is_told_no_roots_and_no_tasks() {
        let said = |capabilities: serde_json::Value| {
            let params = serde_json::json!({
                "protocolVersion": "2025-06-18",
                "capabilities": capabilities,
                "clientInfo": {"name": "c", "version": "1"},
            });
            let told = introduction(serde_json::from_value(params).unwrap());
            serde_json::to_value(told.capabilities).unwrap()
        };
        assert_eq!(
            said(serde_json::json!({
                "roots": {"listChanged": true},
                "sampling": {},
                "extensions": {"io.modelcontextprotocol/tasks": {}, "example/ui": {}},
            })),
            serde_json::json!({"sampling": {}, "extensions": {"example/ui": {}}})
        );
        assert_eq!(
            said(serde_json::json!({"extensions": {"io.modelcontextprotocol/tasks": {}}})),
            serde_json::json!({})
        );
    }
    use rmcp::model::{NumberOrString, ServerJsonRpcMessage};
    use rmcp::transport::streamable_http_client::StreamableHttpPostResponse;

    fn json_answer(message: serde_json::Value) -> HttpPost {
        let message: ServerJsonRpcMessage = serde_json::from_value(message).unwrap();
        Ok(StreamableHttpPostResponse::Json(message, None))
    }

    fn answered_id(answer: HttpPost) -> Option<serde_json::Value> {
        match answer {
            Ok(StreamableHttpPostResponse::Json(ServerJsonRpcMessage::Error(e), _)) => {
                e.id.map(|id| serde_json::to_value(id).unwrap())
            }
            _ => panic!("not a JSON error"),
        }
    }

    /// An error without an id answering a request is that request's answer;
    /// one with an id, or answering a notification, is left as it came.
    #[test]
    fn an_error_without_an_id_answers_the_request_it_came_for() {
        let anonymous = || {
            json_answer(serde_json::json!({"jsonrpc": "2.0", "error": {
                "code": -32000, "message": "Bad Request: No valid session ID provided"}}))
        };
        let request = Some(NumberOrString::Number(7));
        assert_eq!(
            answered_id(answering(request.clone(), anonymous())),
            Some(serde_json::json!(7))
        );
        assert_eq!(answered_id(answering(None, anonymous())), None);
        let addressed = json_answer(serde_json::json!({"jsonrpc": "2.0", "id": 3, "error": {
            "code": -32602, "message": "no"}}));
        assert_eq!(
            answered_id(answering(request, addressed)),
            Some(serde_json::json!(3))
        );
    }

    /// An error that says what failed and keeps why as its source.
    #[derive(Debug)]
    struct Wrapped(&'static str, std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn an_error_reads_with_its_causes_each_said_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            with_causes(&Wrapped("client error (Connect)", refused())),
            "client error (Connect): refused"
        );
        // A wrapper that already quotes its cause does not repeat it.
        assert_eq!(
            with_causes(&Wrapped("connect failed: refused", refused())),
            "connect failed: refused"
        );
        assert_eq!(with_causes(&refused()), "refused");
    }
}
