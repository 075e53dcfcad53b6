//! The dashboard at `/ui`: pages rendered on the server from the same
//! handlers the API uses, so a page shows exactly what the signed-in token
//! may read and a button does exactly what the API call would (same checks,
//! same audit entry).
//!
//! Sign-in takes an admin or auditor token, posted from the sign-in page
//! with the value that page's own short-lived cookie goes with (so another
//! site cannot sign a browser in to a session of its choosing). The browser
//! keeps no secret: its `HttpOnly`, `SameSite=Lax` cookie scoped to `/ui`
//! names the token by id with the tenant shown, when it was issued and the
//! session's random id, sealed by a MAC under the server's pepper that also
//! covers the token's current hash. The server refuses it after eight hours,
//! once the token is revoked, expired or rotated (a leaver's tokens are
//! revoked with them), or once the session is signed out: signing out
//! records the session's id in the store, which every node reads on every
//! dashboard request, so a copy of the cookie ends with it. Every form
//! carries a value derived from the session's seal, and a POST whose
//! `Origin` is another site is refused. Pages may not be framed, run no
//! script, and are never cached.

mod pages;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use steward_core::credentials::SecretHasher;
use steward_types::ErrorCode;

use crate::auth::{Caller, admit_token, authenticate};
use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie.
const SESSION_COOKIE: &str = "steward_session";
/// How long a sign-in lasts, in seconds, checked by the server (the token's
/// own expiry still counts).
const SESSION_SECS: i64 = 8 * 3600;
/// How long the store keeps a signed-out session's id, in seconds from its
/// sign-in: its lifetime, and an hour for nodes whose clocks run behind.
const ENDED_KEPT_SECS: i64 = SESSION_SECS + 3600;
/// The sign-in form's cookie, which its value goes with.
const LOGIN_COOKIE: &str = "steward_login";
/// How long a sign-in form may be used, in seconds.
const LOGIN_SECS: i64 = 3600;
/// A sign-in form shown again keeps its cookie if it lasts this much
/// longer, in seconds (so two open sign-in pages both work).
const LOGIN_REUSE_SECS: i64 = 15 * 60;

/// The dashboard's routes, with its security headers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/tenant", post(switch_tenant))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/agents/{id}", get(pages::agent))
        .route("/ui/agents/{id}/{transition}", post(pages::transition))
        .route("/ui/approvals", get(pages::approvals))
        .route("/ui/approvals/{id}", get(pages::approval))
        .route("/ui/approvals/{id}/{verdict}", post(pages::decide))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/policies", get(pages::policies))
        .route("/ui/quotas", get(pages::quotas))
        .route("/ui/mcp", get(pages::mcp_servers))
        .route("/ui/style.css", get(style))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("style.css"),
    )
        .into_response()
}

/// A signed-in person: their caller, as the API would see it, and the value
/// their forms must carry.
pub(crate) struct Session {
    pub caller: Caller,
    pub csrf: String,
    /// The cookie they came with, to re-issue for another tenant.
    cookie: SessionCookie,
    /// Their token's current hash, which the cookie's seal covers.
    token_hash: String,
}

impl Session {
    /// Whether they may look at other tenants.
    pub fn platform_admin(&self) -> bool {
        self.caller.platform_admin().is_ok()
    }

    /// What every page shows in its header.
    pub fn frame(&self, active: &'static str) -> Frame {
        let (name, role) = match &self.caller {
            Caller::Token { token, .. } => (token.name.clone(), token.role.as_str()),
            Caller::Agent { agent, .. } => (agent.name.clone(), "agent"),
        };
        Frame {
            active,
            tenant: self.caller.tenant_id().to_string(),
            who: name,
            role,
            csrf: self.csrf.clone(),
            platform_admin: self.platform_admin(),
        }
    }
}

/// The header and navigation of every signed-in page.
pub(crate) struct Frame {
    pub active: &'static str,
    pub tenant: String,
    pub who: String,
    pub role: &'static str,
    pub csrf: String,
    pub platform_admin: bool,
}

/// What the session cookie says, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionCookie {
    token_id: String,
    tenant: String,
    issued: i64,
    /// The session's random id: kept when the tenant shown changes, and
    /// recorded in the store when the session is signed out.
    id: String,
    mac: String,
}

/// A new session's random id.
fn new_session_id() -> String {
    steward_core::credentials::generate_secret("")
}

impl SessionCookie {
    /// The cookie of session `id` for a token (by id and current hash) in a
    /// tenant.
    fn issue(
        hasher: &SecretHasher,
        token_id: &str,
        token_hash: &str,
        tenant: &str,
        issued: i64,
        id: &str,
    ) -> Self {
        let mac = Self::seal(hasher, token_id, token_hash, tenant, issued, id);
        SessionCookie {
            token_id: token_id.into(),
            tenant: tenant.into(),
            issued,
            id: id.into(),
            mac,
        }
    }

    fn seal(
        hasher: &SecretHasher,
        token_id: &str,
        token_hash: &str,
        tenant: &str,
        issued: i64,
        id: &str,
    ) -> String {
        hasher.hash(&format!(
            "steward-ui-session|{token_id}|{token_hash}|{tenant}|{issued}|{id}"
        ))
    }

    /// Whether the seal holds for the token's current hash.
    fn verify(&self, hasher: &SecretHasher, token_hash: &str) -> bool {
        let expected = Self::seal(
            hasher,
            &self.token_id,
            token_hash,
            &self.tenant,
            self.issued,
            &self.id,
        );
        same_bytes(&expected, &self.mac)
    }

    fn encode(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}",
            self.token_id, self.tenant, self.issued, self.id, self.mac
        )
    }

    fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split('.');
        let mut next = || parts.next().filter(|p| cookie_safe(p));
        let cookie = SessionCookie {
            token_id: next()?.into(),
            tenant: next()?.into(),
            issued: next()?.parse().ok()?,
            id: next()?.into(),
            mac: next()?.into(),
        };
        parts.next().is_none().then_some(cookie)
    }

    /// Whether the server still honours it at `now` (seconds).
    fn fresh(&self, now: i64) -> bool {
        self.issued <= now + 60 && now - self.issued < SESSION_SECS
    }

    /// The form value of this session.
    fn form_value(&self, hasher: &SecretHasher) -> String {
        hasher.hash(&format!("steward-ui-form|{}", self.mac))
    }
}

/// What the sign-in form's cookie says, sealed: when the form was shown and
/// a nonce. The form carries a value derived from the seal, so a sign-in is
/// posted from a page this server showed to this browser, lately.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoginCookie {
    issued: i64,
    nonce: String,
    mac: String,
}

impl LoginCookie {
    fn issue(hasher: &SecretHasher, issued: i64) -> Self {
        let nonce = steward_core::credentials::generate_secret("");
        let mac = Self::seal(hasher, issued, &nonce);
        LoginCookie { issued, nonce, mac }
    }

    fn seal(hasher: &SecretHasher, issued: i64, nonce: &str) -> String {
        hasher.hash(&format!("steward-ui-login|{issued}|{nonce}"))
    }

    /// The request's one sign-in cookie, if its seal holds and it may still
    /// be used at `now` (seconds).
    fn of(headers: &HeaderMap, hasher: &SecretHasher, now: i64) -> Option<Self> {
        cookie(headers, LOGIN_COOKIE)
            .and_then(Self::decode)
            .filter(|c| c.left(now) > 0)
            .filter(|c| same_bytes(&Self::seal(hasher, c.issued, &c.nonce), &c.mac))
    }

    /// How many seconds it may still be used at `now` (none once issued in
    /// the future).
    fn left(&self, now: i64) -> i64 {
        if self.issued > now + 60 {
            return 0;
        }
        LOGIN_SECS - (now - self.issued)
    }

    fn encode(&self) -> String {
        format!("{}.{}.{}", self.issued, self.nonce, self.mac)
    }

    fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split('.');
        let mut next = || parts.next().filter(|p| cookie_safe(p));
        let cookie = LoginCookie {
            issued: next()?.parse().ok()?,
            nonce: next()?.into(),
            mac: next()?.into(),
        };
        parts.next().is_none().then_some(cookie)
    }

    /// The value the form carries.
    fn form_value(&self, hasher: &SecretHasher) -> String {
        hasher.hash(&format!("steward-ui-login-form|{}", self.mac))
    }
}

fn same_bytes(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()))
}

/// The one value of a cookie; none when absent or sent more than once (a
/// second one may have been planted by a neighbouring site).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// A cookie field: base64url and `_`, `-`, at most 256 bytes.
fn cookie_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl FromRequestParts<AppState> for Session {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        // Signed out, a page sends its reader to sign in and back.
        let sign_in = || {
            let back = (parts.method == axum::http::Method::GET)
                .then(|| parts.uri.path_and_query().map(|p| p.as_str().to_string()))
                .flatten();
            UiError::SignIn(back)
        };
        let cookie = cookie(&parts.headers, SESSION_COOKIE)
            .and_then(SessionCookie::decode)
            .filter(|c| c.fresh(Utc::now().timestamp()))
            .ok_or_else(sign_in)?;
        let (found, token_hash) = state
            .store
            .find_token_by_id(&cookie.token_id)
            .await?
            .ok_or_else(sign_in)?;
        if !cookie.verify(&state.hasher, &token_hash) {
            return Err(sign_in());
        }
        // Signed out, perhaps on another node, with this cookie copied.
        if state.store.dashboard_session_ended(&cookie.id).await? {
            return Err(sign_in());
        }
        let caller = match admit_token(state, found, Some(&cookie.tenant)).await {
            Ok(c) => c,
            // Revoked or expired, or the tenant is gone or no longer theirs
            // to see: sign in again.
            Err(e)
                if matches!(
                    e.0.code,
                    ErrorCode::Unauthenticated | ErrorCode::Forbidden | ErrorCode::NotFound
                ) =>
            {
                return Err(sign_in());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Session {
            csrf: cookie.form_value(&state.hasher),
            caller,
            cookie,
            token_hash,
        })
    }
}

/// Whether the request's `Origin`, when the browser sends one, names the
/// host it was sent to: as the request says (`Host`, or the authority of an
/// HTTP/2 request) or as a proxy in front says (`X-Forwarded-Host`).
fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin_host) = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest)
    else {
        return false;
    };
    let named = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    [
        named("host"),
        named("x-forwarded-host"),
        uri.authority().map(|a| a.as_str()),
    ]
    .into_iter()
    .flatten()
    .any(|host| host.eq_ignore_ascii_case(origin_host))
}

/// A form's protection against other sites: the session's form value, and
/// an `Origin`, when the browser sends one, naming this host.
pub(crate) fn check_form(
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    session: &Session,
    sent: &str,
) -> Result<(), UiError> {
    if same_origin(headers, uri) && same_bytes(sent, &session.csrf) {
        Ok(())
    } else {
        Err(UiError::Api(ApiError::new(
            ErrorCode::Forbidden,
            "this form did not come from this dashboard; reload the page and try again",
        )))
    }
}

/// A dashboard form: like `axum::Form`, but a body that cannot be read
/// (a missing or mistyped field, the wrong content type) is answered with
/// the dashboard's error page, not a plain-text error.
pub(crate) struct UiForm<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for UiForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = UiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, UiError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(UiForm(value)),
            Err(e) => Err(UiError::Api(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the form could not be read ({}); reload the page and try again",
                    e.body_text()
                ),
            ))),
        }
    }
}

/// What a page answers when it cannot show what was asked.
pub(crate) enum UiError {
    /// No session, or its token no longer works: to the sign-in page, and
    /// then back to this page if given.
    SignIn(Option<String>),
    /// The API's own refusal, shown as a page with its status.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        if e.0.code == ErrorCode::Unauthenticated {
            UiError::SignIn(None)
        } else {
            UiError::Api(e)
        }
    }
}

impl From<steward_core::Error> for UiError {
    fn from(e: steward_core::Error) -> Self {
        ApiError(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    code: &'static str,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn(back) => match back.filter(|b| return_path(b)) {
                Some(back) => {
                    Redirect::to(&format!("/ui/login?next={}", pages::percent_encode(&back)))
                        .into_response()
                }
                None => Redirect::to("/ui/login").into_response(),
            },
            UiError::Api(e) => {
                let code = e.0.code;
                crate::metrics::record_error(code);
                if code == ErrorCode::Internal {
                    tracing::error!(message = %e.0.message, "internal error on a dashboard page");
                }
                let status = StatusCode::from_u16(code.http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let page = ErrorPage {
                    status: status.as_u16(),
                    code: code.as_str(),
                    message: e.0.message,
                };
                (status, render(&page)).into_response()
            }
        }
    }
}

/// A template as an HTML answer (a template that fails to render is an
/// internal error, not a blank page).
pub(crate) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    message: Option<String>,
    next: String,
    /// The value that goes with the form's cookie.
    csrf: String,
}

/// Where to go after signing in: a dashboard page, nowhere else.
fn return_path(path: &str) -> bool {
    path.starts_with("/ui") && !path.contains("//") && !path.contains('\\')
}

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let next = q.next.filter(|n| return_path(n)).unwrap_or_default();
    login_page(&state, &headers, StatusCode::OK, None, next)
}

/// The sign-in page, with a message if any, and the cookie its form's value
/// goes with: the request's own while it lasts a while yet, else a new one.
fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    message: Option<String>,
    next: String,
) -> Response {
    let now = Utc::now().timestamp();
    let form = LoginCookie::of(headers, &state.hasher, now)
        .filter(|c| c.left(now) >= LOGIN_REUSE_SECS)
        .unwrap_or_else(|| LoginCookie::issue(&state.hasher, now));
    let page = LoginPage {
        message,
        next,
        csrf: form.form_value(&state.hasher),
    };
    let mut response = (status, render(&page)).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &form.encode(),
            &CookieScope::LOGIN,
            form.left(now),
            over_tls(headers),
        ),
    );
    response
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
    /// The sign-in form's value; missing is refused like a wrong one.
    #[serde(default)]
    csrf: String,
}

/// Whether the request reached us over TLS, as a proxy in front says: then
/// the cookie is marked `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Where a cookie is sent.
struct CookieScope {
    path: &'static str,
    same_site: &'static str,
}

impl CookieScope {
    /// The session: every dashboard page, also when followed from a link
    /// on another site.
    const SESSION: CookieScope = CookieScope {
        path: "/ui",
        same_site: "Lax",
    };
    /// The sign-in form: only it, only from this site.
    const LOGIN: CookieScope = CookieScope {
        path: "/ui/login",
        same_site: "Strict",
    };
}

/// An `HttpOnly` cookie for `max_age` seconds, or (empty, 0) its removal.
fn set_cookie(
    name: &str,
    value: &str,
    scope: &CookieScope,
    max_age: i64,
    secure: bool,
) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let CookieScope { path, same_site } = scope;
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Answer with a new session cookie, going to `to`.
fn signed_in(cookie: &SessionCookie, headers: &HeaderMap, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    let left = SESSION_SECS - (Utc::now().timestamp() - cookie.issued);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &cookie.encode(),
            &CookieScope::SESSION,
            left.max(0),
            over_tls(headers),
        ),
    );
    response
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    UiForm(form): UiForm<LoginForm>,
) -> Response {
    let next = if return_path(&form.next) {
        form.next.clone()
    } else {
        String::new()
    };
    let refuse = |status: StatusCode, message: &str| {
        login_page(
            &state,
            &headers,
            status,
            Some(message.to_string()),
            next.clone(),
        )
    };
    if !same_origin(&headers, &uri) {
        return refuse(
            StatusCode::FORBIDDEN,
            "sign in from this dashboard's own page",
        );
    }
    // Posted from the form this browser was shown, not another site's:
    // checked before the token is even looked at.
    let shown = LoginCookie::of(&headers, &state.hasher, Utc::now().timestamp());
    if !shown.is_some_and(|c| same_bytes(&form.csrf, &c.form_value(&state.hasher))) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this sign-in form has expired or did not come from this dashboard; nobody was signed in. Sign in again from this page",
        );
    }
    let token = form.token.trim();
    match authenticate(&state, token, None).await {
        Ok(Caller::Token { token: found, .. }) if found.role == steward_types::TokenRole::Pep => {
            refuse(
                StatusCode::FORBIDDEN,
                "pep tokens only ask for decisions; sign in with an admin or auditor token",
            )
        }
        Ok(Caller::Token {
            token: found,
            tenant_id,
            ..
        }) => {
            let cookie = SessionCookie::issue(
                &state.hasher,
                &found.id,
                &state.hasher.hash(token),
                &tenant_id,
                Utc::now().timestamp(),
                &new_session_id(),
            );
            let mut response = signed_in(
                &cookie,
                &headers,
                if next.is_empty() { "/ui" } else { &next },
            );
            // The form is used up.
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", &CookieScope::LOGIN, 0, over_tls(&headers)),
            );
            response
        }
        Ok(Caller::Agent { .. }) => refuse(
            StatusCode::FORBIDDEN,
            "agent keys cannot sign in to the dashboard; use an admin or auditor token",
        ),
        Err(e) if e.0.code == ErrorCode::Unauthenticated => {
            refuse(StatusCode::UNAUTHORIZED, &e.0.message)
        }
        Err(e) => UiError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    pub csrf: String,
}

/// Sign out: the session ends in the store, for every node and every copy
/// of its cookie, and the browser forgets the cookie.
async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    uri: axum::http::Uri,
    UiForm(form): UiForm<CsrfForm>,
) -> Result<Response, UiError> {
    check_form(&headers, &uri, &session, &form.csrf)?;
    let now = Utc::now();
    let kept_until = DateTime::from_timestamp(session.cookie.issued + ENDED_KEPT_SECS, 0)
        .unwrap_or(now + chrono::Duration::seconds(ENDED_KEPT_SECS));
    state
        .store
        .end_dashboard_session(&session.cookie.id, kept_until, now)
        .await?;
    let mut response = Redirect::to("/ui/login").into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            "",
            &CookieScope::SESSION,
            0,
            over_tls(&headers),
        ),
    );
    h.insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    Ok(response)
}

#[derive(Deserialize)]
struct TenantForm {
    csrf: String,
    tenant: String,
}

/// A platform administrator looks at another tenant (as the API's
/// `X-Steward-Tenant` header does): the session is re-issued for it, its
/// sign-in time and id unchanged (so signing out ends it for every tenant).
async fn switch_tenant(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    uri: axum::http::Uri,
    UiForm(form): UiForm<TenantForm>,
) -> Result<Response, UiError> {
    check_form(&headers, &uri, &session, &form.csrf)?;
    session.caller.platform_admin()?;
    let tenant = form.tenant.trim();
    if !cookie_safe(tenant) || !state.store.tenant_exists(tenant).await? {
        return Err(ApiError(steward_core::Error::not_found("tenant", tenant)).into());
    }
    let cookie = SessionCookie::issue(
        &state.hasher,
        &session.cookie.token_id,
        &session.token_hash,
        tenant,
        session.cookie.issued,
        &session.cookie.id,
    );
    Ok(signed_in(&cookie, &headers, "/ui"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hasher() -> SecretHasher {
        SecretHasher::new(b"a pepper for tests".to_vec())
    }

    #[test]
    fn a_session_cookie_holds_only_while_its_seal_and_time_do() {
        let h = hasher();
        let issued = 1_800_000_000;
        let c = SessionCookie::issue(&h, "tok_a", "hash-a", "default", issued, "sid-a");
        let text = c.encode();
        assert!(cookie_safe(&text.replace('.', "")), "{text}");
        let back = SessionCookie::decode(&text).unwrap();
        assert_eq!(back, c);
        assert!(back.verify(&h, "hash-a"));
        // A rotated token (new hash), another pepper, or any field changed
        // breaks the seal.
        assert!(!back.verify(&h, "hash-b"));
        assert!(!back.verify(&SecretHasher::new(b"other".to_vec()), "hash-a"));
        let moved = SessionCookie::decode(&text.replace(".default.", ".acme.")).unwrap();
        assert!(!moved.verify(&h, "hash-a"));
        let older = SessionCookie::decode(&text.replace(&issued.to_string(), "1")).unwrap();
        assert!(!older.verify(&h, "hash-a"));
        let other = SessionCookie::decode(&text.replace(".sid-a.", ".sid-b.")).unwrap();
        assert!(!other.verify(&h, "hash-a"), "the session's id is sealed");
        // The server's clock decides how long it lasts.
        assert!(c.fresh(issued) && c.fresh(issued + SESSION_SECS - 1));
        assert!(!c.fresh(issued + SESSION_SECS));
        assert!(!c.fresh(issued - 3600), "issued in the future");
        // Each sign-in has its own form value, and so has each tenant a
        // session looks at.
        let again = SessionCookie::issue(&h, "tok_a", "hash-a", "default", issued, "sid-b");
        assert_ne!(again.form_value(&h), c.form_value(&h));
        let acme = SessionCookie::issue(&h, "tok_a", "hash-a", "acme", issued, "sid-a");
        assert_ne!(acme.form_value(&h), c.form_value(&h));
        for bad in [
            "",
            "a.b.c.d",
            "a.b.c.d.e.f",
            "a.b.notanumber.d.e",
            "a.b;c.1.d.e",
        ] {
            assert!(SessionCookie::decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_sign_in_forms_cookie_holds_only_while_its_seal_and_time_do() {
        let h = hasher();
        let issued = 1_800_000_000;
        let c = LoginCookie::issue(&h, issued);
        let text = c.encode();
        let back = LoginCookie::decode(&text).unwrap();
        assert_eq!(back, c);
        let mut headers = HeaderMap::new();
        let sent = format!("{LOGIN_COOKIE}={text}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&sent).unwrap());
        assert_eq!(LoginCookie::of(&headers, &h, issued + 10), Some(c.clone()));
        // Used up after its time, or if issued in the future.
        assert_eq!(c.left(issued + LOGIN_SECS - 1), 1);
        assert!(LoginCookie::of(&headers, &h, issued + LOGIN_SECS).is_none());
        assert!(LoginCookie::of(&headers, &h, issued - 3600).is_none());
        // Another pepper, or a changed time, breaks the seal.
        assert!(LoginCookie::of(&headers, &SecretHasher::new(b"other".to_vec()), issued).is_none());
        let moved = text.replacen(&issued.to_string(), &(issued + 1).to_string(), 1);
        let sent = format!("{LOGIN_COOKIE}={moved}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&sent).unwrap());
        assert!(LoginCookie::of(&headers, &h, issued + 10).is_none());
        // Each form has its own value, not the cookie's.
        let other = LoginCookie::issue(&h, issued);
        assert_ne!(other.form_value(&h), c.form_value(&h));
        assert!(!text.contains(&c.form_value(&h)));
        for bad in ["", "1.a", "1.a.b.c", "x.a.b"] {
            assert!(LoginCookie::decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_dashboard_pages_are_places_to_return_to() {
        assert!(return_path("/ui/approvals/apr_1?x=1"));
        for bad in [
            "//evil.example",
            "https://evil.example/ui",
            "/ui//evil",
            "/api",
            "/ui\\x",
        ] {
            assert!(!return_path(bad), "{bad}");
        }
    }

    #[test]
    fn one_cookie_of_a_name_or_none() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; steward_session=x"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("x"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("steward_session=y"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), None, "a planted second cookie");
    }
}
