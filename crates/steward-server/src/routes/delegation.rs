//! Proven delegation: trusted identity providers, the tenant's rules, the
//! delegated tokens issued, and the token endpoint that issues them.

use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use steward_types::{
    Delegation, DelegationQuery, DelegationSettings, Issuer, OAuthError, Page, PutIssuer,
    TokenExchanged,
};

use crate::auth::Caller;
use crate::delegation::{ExchangeForm, Refusal};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// Trust an identity provider's tokens as proof of whom an agent acts for
/// (add, or replace: rotate keys by putting a new key set).
#[utoipa::path(put, path = "/v1/delegation/issuers/{name}", tag = "delegation", request_body = PutIssuer,
    params(("name" = String, Path, description = "The issuer's name in Steward")),
    responses((status = 200, body = Issuer), (status = 400, body = steward_types::ErrorBody),
        (status = 409, body = steward_types::ErrorBody)))]
pub async fn put_issuer(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutIssuer>,
) -> ApiResult<Json<Issuer>> {
    let ctx = caller.admin()?;
    crate::delegation::check_jwks(&req.jwks)?;
    Ok(Json(state.store.put_issuer(&ctx, &name, &req).await?))
}

/// The tenant's trusted identity providers.
#[utoipa::path(get, path = "/v1/delegation/issuers", tag = "delegation",
    responses((status = 200, body = Vec<Issuer>)))]
pub async fn list_issuers(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Issuer>>> {
    Ok(Json(state.store.issuers(caller.reader()?).await?))
}

/// Stop trusting an identity provider.
#[utoipa::path(delete, path = "/v1/delegation/issuers/{name}", tag = "delegation",
    params(("name" = String, Path, description = "The issuer's name in Steward")),
    responses((status = 204), (status = 404, body = steward_types::ErrorBody)))]
pub async fn delete_issuer(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let ctx = caller.admin()?;
    state.store.delete_issuer(&ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's delegation rules.
#[utoipa::path(get, path = "/v1/delegation/settings", tag = "delegation",
    responses((status = 200, body = DelegationSettings)))]
pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<DelegationSettings>> {
    Ok(Json(
        state.store.delegation_settings(caller.reader()?).await?,
    ))
}

/// Change the tenant's delegation rules.
#[utoipa::path(put, path = "/v1/delegation/settings", tag = "delegation", request_body = DelegationSettings,
    responses((status = 200, body = DelegationSettings), (status = 400, body = steward_types::ErrorBody)))]
pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DelegationSettings>,
) -> ApiResult<Json<DelegationSettings>> {
    let ctx = caller.admin()?;
    Ok(Json(state.store.set_delegation_settings(&ctx, &req).await?))
}

/// Delegated tokens issued, oldest first.
#[utoipa::path(get, path = "/v1/delegations", tag = "delegation", params(DelegationQuery),
    responses((status = 200, body = Page<Delegation>), (status = 404, body = steward_types::ErrorBody)))]
pub async fn list_delegations(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<DelegationQuery>,
) -> ApiResult<Json<Page<Delegation>>> {
    let tenant = caller.reader()?;
    Ok(Json(
        state
            .store
            .list_delegations(tenant, q, chrono::Utc::now())
            .await?,
    ))
}

/// Revoke a delegated token now.
#[utoipa::path(post, path = "/v1/delegations/{id}/revoke", tag = "delegation",
    params(("id" = String, Path, description = "Delegation id")),
    responses((status = 200, body = Delegation), (status = 404, body = steward_types::ErrorBody),
        (status = 409, body = steward_types::ErrorBody)))]
pub async fn revoke_delegation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Delegation>> {
    let ctx = caller.admin()?;
    let revoked = state.store.revoke_delegation(&ctx, &id).await?;
    // Its gateway sessions end now, event streams included.
    state.mcp.close_unauthenticated(&state.store).await;
    Ok(Json(revoked))
}

/// OAuth 2.0 Token Exchange (RFC 8693): an agent, authenticated by its key,
/// presents a person's identity-provider token and gets a delegated token
/// that acts for that person. Errors are OAuth errors (RFC 6749 §5.2).
#[utoipa::path(post, path = "/oauth/token", tag = "delegation",
    request_body(content_type = "application/x-www-form-urlencoded", description = "grant_type, subject_token, subject_token_type"),
    responses((status = 200, body = TokenExchanged), (status = 400, body = OAuthError),
        (status = 401, body = OAuthError)))]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    form: Result<Form<ExchangeForm>, FormRejection>,
) -> Response {
    let answer = async {
        let caller = caller.map_err(|e| Refusal {
            status: 401,
            error: "invalid_client",
            description: e.0.message,
        })?;
        let Form(form) = form.map_err(|e| Refusal {
            status: 400,
            error: "invalid_request",
            description: e.body_text(),
        })?;
        let key_hash = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.get(7..))
            .map(|secret| state.hasher.hash(secret.trim()))
            .unwrap_or_default();
        crate::delegation::exchange(&state, &caller, key_hash, form).await
    }
    .await;
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    match answer {
        Ok(exchanged) => (StatusCode::OK, no_store, Json(exchanged)).into_response(),
        Err(r) => {
            if r.status >= 500 {
                tracing::error!(error = %r.description, "token exchange failed");
            }
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
            let body = OAuthError {
                error: r.error.into(),
                error_description: r.description,
            };
            (status, no_store, Json(body)).into_response()
        }
    }
}
