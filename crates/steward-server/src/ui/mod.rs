//! The dashboard at `/ui`: pages rendered on the server from the same
//! handlers the API uses, so a page shows exactly what the signed-in token
//! may read and a button does exactly what the API call would (same checks,
//! same audit entry).
//!
//! Sign-in takes an admin or auditor token and keeps it in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/ui`. Every form carries a value
//! derived from the session under the server's secret pepper, and a POST
//! whose `Origin` is another site is refused. Pages may not be framed, run no
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
use serde::Deserialize;
use steward_types::ErrorCode;

use crate::auth::{Caller, authenticate};
use crate::error::ApiError;
use crate::state::AppState;

/// The cookie holding the signed-in token.
const SESSION_COOKIE: &str = "steward_session";
/// The cookie holding the tenant a platform administrator is looking at.
const TENANT_COOKIE: &str = "steward_tenant";
/// How long a sign-in lasts, in seconds (the token's own expiry still counts).
const SESSION_SECS: u32 = 8 * 3600;

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
        .route("/ui/approvals/{id}/approve", post(pages::approve))
        .route("/ui/approvals/{id}/deny", post(pages::deny))
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
    /// The tenants a platform administrator may switch between.
    pub platform_admin: bool,
}

impl Session {
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
            platform_admin: self.platform_admin,
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

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A token or tenant id as a cookie may carry it: base64url and `_`, `-`.
fn cookie_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn csrf_for(state: &AppState, secret: &str) -> String {
    state.hasher.hash(&format!("steward-ui-form:{secret}"))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let secret = cookie(&parts.headers, SESSION_COOKIE)
            .filter(|s| cookie_safe(s))
            .ok_or(UiError::SignIn)?;
        let tenant = cookie(&parts.headers, TENANT_COOKIE).filter(|t| cookie_safe(t));
        let caller = match authenticate(state, secret, tenant).await {
            Ok(c) => c,
            Err(e) if e.0.code == ErrorCode::Unauthenticated => return Err(UiError::SignIn),
            // A tenant that went away, or one this token may not see: back
            // to the token's own.
            Err(_) if tenant.is_some() => authenticate(state, secret, None)
                .await
                .map_err(|_| UiError::SignIn)?,
            Err(e) => return Err(e.into()),
        };
        let platform_admin = matches!(
            caller,
            Caller::Token {
                platform_admin: true,
                ..
            }
        );
        if matches!(caller, Caller::Agent { .. }) {
            return Err(UiError::SignIn);
        }
        Ok(Session {
            csrf: csrf_for(state, secret),
            caller,
            platform_admin,
        })
    }
}

/// Whether the request's `Origin`, when the browser sends one, names this
/// host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    host.is_some() && origin_host == host
}

/// A form's protection against other sites: the session's form value, and
/// an `Origin`, when the browser sends one, naming this host.
pub(crate) fn check_form(
    headers: &HeaderMap,
    session: &Session,
    sent: &str,
) -> Result<(), UiError> {
    let expected = session.csrf.as_bytes();
    let matches = sent.len() == expected.len()
        && bool::from(subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), expected));
    if same_origin(headers) && matches {
        Ok(())
    } else {
        Err(UiError::Api(ApiError::new(
            ErrorCode::Forbidden,
            "this form did not come from this dashboard; reload the page and try again",
        )))
    }
}

/// What a page answers when it cannot show what was asked.
pub(crate) enum UiError {
    /// No session, or its token no longer works: to the sign-in page.
    SignIn,
    /// The API's own refusal, shown as a page with its status.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        if e.0.code == ErrorCode::Unauthenticated {
            UiError::SignIn
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
            UiError::SignIn => Redirect::to("/ui/login").into_response(),
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
}

async fn login_form() -> Response {
    render(&LoginPage { message: None })
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Whether the request reached us over TLS (directly or, as a proxy says, in
/// front of us): then the cookie is marked `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: u32, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let refuse = |status: StatusCode, message: &str| {
        (
            status,
            render(&LoginPage {
                message: Some(message.to_string()),
            }),
        )
            .into_response()
    };
    if !same_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "sign in from this dashboard's own page",
        );
    }
    let token = form.token.trim();
    if !cookie_safe(token) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "that is not a Steward token: paste an admin or auditor token (stwt_...)",
        );
    }
    match authenticate(&state, token, None).await {
        Ok(Caller::Token { .. }) => {
            let mut response = Redirect::to("/ui").into_response();
            let secure = over_tls(&headers);
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, token, SESSION_SECS, secure),
            );
            h.append(header::SET_COOKIE, set_cookie(TENANT_COOKIE, "", 0, secure));
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

async fn logout(
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, UiError> {
    check_form(&headers, &session, &form.csrf)?;
    let mut response = Redirect::to("/ui/login").into_response();
    let secure = over_tls(&headers);
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure),
    );
    h.append(header::SET_COOKIE, set_cookie(TENANT_COOKIE, "", 0, secure));
    Ok(response)
}

#[derive(Deserialize)]
struct TenantForm {
    csrf: String,
    tenant: String,
}

/// A platform administrator looks at another tenant (as the API's
/// `X-Steward-Tenant` header does).
async fn switch_tenant(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    axum::Form(form): axum::Form<TenantForm>,
) -> Result<Response, UiError> {
    check_form(&headers, &session, &form.csrf)?;
    session.caller.platform_admin()?;
    let tenant = form.tenant.trim();
    if !cookie_safe(tenant) || !state.store.tenant_exists(tenant).await? {
        return Err(ApiError(steward_core::Error::not_found("tenant", tenant)).into());
    }
    let mut response = Redirect::to("/ui").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(TENANT_COOKIE, tenant, SESSION_SECS, over_tls(&headers)),
    );
    Ok(response)
}
